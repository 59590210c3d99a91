//! The alternating-secret layout end to end (issue 13): one secret whose
//! AWSCURRENT names the active role, as AWS's alternating-users rotation
//! keeps it and as ECS injects it, rotated by the same state machine and
//! Lambdas as the parameter layout, through a target of the targets document.

use pgflip_core::domain::{AWSCURRENT, AWSPENDING};
use pgflip_core::password::Password;
use pgflip_tests::{Execution, RunOptions, Stack, Target};
use serde_json::{json, Value};

use super::{run_quick, SERIAL};

const AWSPREVIOUS: &str = "AWSPREVIOUS";

struct Alt {
    stack: Stack,
    t: Target,
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

async fn alt_case(tag: &str) -> Alt {
    let guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let id = format!("{tag}_{}", std::process::id());
    let t = Target::unique(tag).alternating(&format!("pgflip-test/{id}/app"), &format!("alt-{id}"));
    stack.seed(&t).await;
    stack.register_target(&t).await;
    Alt {
        stack,
        t,
        _guard: guard,
    }
}

impl Alt {
    fn run(&self, scenario: Value) -> Execution {
        run_quick(&self.stack, self.t.input(), scenario, RunOptions::default())
    }

    async fn user_at(&self, stage: &str) -> Option<String> {
        self.stack.alternating_user(&self.t, stage).await
    }

    /// The layout's invariant, and the previous role too (old tasks hold it).
    async fn both_log_in(&self) -> (String, String) {
        let current = self
            .stack
            .invariant(&self.t)
            .await
            .unwrap_or_else(|e| panic!("invariant broken: {e}"));
        let previous = self
            .stack
            .login_stage(&self.t, AWSPREVIOUS)
            .await
            .unwrap_or_else(|e| panic!("the AWSPREVIOUS role cannot log in: {e}"));
        (current, previous)
    }

    /// Each version's labels, and the observer parameter: what a refused
    /// execution may not change.
    async fn fingerprint(&self) -> (String, String) {
        let d = self
            .stack
            .secrets
            .describe_secret()
            .secret_id(self.t.alternating.as_deref().unwrap())
            .send()
            .await
            .expect("describe the alternating secret");
        let mut stages: Vec<String> = d
            .version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .map(|(id, s)| format!("{id}:{}", s.join("+")))
                    .collect()
            })
            .unwrap_or_default();
        stages.sort();
        (stages.join(" "), self.stack.active_user(&self.t).await)
    }

    async fn passwords(&self) -> Vec<Password> {
        let secret = self.t.alternating.as_deref().unwrap();
        let mut out = vec![];
        for stage in [AWSCURRENT, AWSPREVIOUS] {
            out.push(self.stack.password_at(secret, stage).await);
        }
        out
    }
}

fn leaked(text: &str, passwords: &[Password]) -> bool {
    passwords.iter().any(|p| text.contains(p.expose()))
}

#[tokio::test]
async fn alternating_rotations_flip_by_promotion_and_leak_nothing() {
    let a = alt_case("alt_happy").await;
    let (blue, green) = (a.t.blue_role.clone(), a.t.green_role.clone());
    assert_eq!(a.user_at(AWSCURRENT).await.as_deref(), Some(blue.as_str()));
    let mut seen = a.passwords().await;

    let e = a.run(json!({}));
    assert_eq!(
        e.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        e.error, e.cause, e.progress
    );
    assert_eq!(e.transitions, 10, "the same path as the parameter layout");
    assert_eq!(e.output["pointer"]["layout"], "alternatingSecret");
    assert_eq!(a.both_log_in().await, (green.clone(), blue.clone()));
    assert_eq!(a.user_at(AWSPENDING).await, None);
    // The observer parameter follows the secret.
    assert_eq!(a.stack.active_user(&a.t).await, green);
    seen.extend(a.passwords().await);

    // The next rotation rotates the other role back, self-service.
    let e = a.run(json!({}));
    assert_eq!(
        e.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        e.error, e.cause, e.progress
    );
    assert_eq!(a.both_log_in().await, (blue.clone(), green.clone()));
    seen.extend(a.passwords().await);

    let log =
        std::path::PathBuf::from(std::env::var("PGFLIP_STACK_DIR").unwrap()).join("lambda.log");
    let lambda_log = String::from_utf8_lossy(&std::fs::read(log).unwrap()).to_string();
    for (what, text) in [
        (
            "the execution's output and progress",
            format!("{:?} {}", e.output, e.progress),
        ),
        ("the Lambda logs", lambda_log),
        (
            "the PostgreSQL log",
            std::fs::read_to_string(&a.stack.pg_log).unwrap(),
        ),
    ] {
        assert!(!leaked(&text, &seen), "a password reached {what}");
    }
}

#[tokio::test]
async fn alternating_failed_rollout_moves_awscurrent_back() {
    let a = alt_case("alt_rollback").await;
    let (blue, green) = (a.t.blue_role.clone(), a.t.green_role.clone());
    let e = a.run(json!({"tasks": {"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "web=FAILED (injected)"}}]}}));
    assert_eq!(
        e.error.as_deref(),
        Some("RotationRolledBack"),
        "{:?}\n{}",
        e.cause,
        e.progress
    );
    let cause = e.cause.unwrap_or_default();
    assert!(cause.contains(&format!("names {blue} again")), "{cause}");
    // Blue is current again with its unchanged password; green's new one is
    // AWSPREVIOUS and works: the next rotation rotates green again.
    assert_eq!(a.both_log_in().await, (blue.clone(), green.clone()));
    assert_eq!(a.stack.active_user(&a.t).await, blue);
    assert_eq!(e.invocations["redeploy-ecs"], 2);
    let next = a.run(json!({}));
    // Services redeployed after the rollback's flip: the rollback finished,
    // so the next run rotates green.
    assert_eq!(
        next.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        next.error, next.cause, next.progress
    );
    assert_eq!(next.output["mode"], "rotate");
    assert_eq!(a.both_log_in().await, (green, blue));
}

const STEPS: [&str; 5] = [
    "GenerateAndSetPassword",
    "VerifyLogin",
    "FlipParameter",
    "RedeployEcs",
    "WaitForStable",
];

#[tokio::test]
async fn alternating_crash_after_each_step_then_replay_or_redrive() {
    let mut problems = vec![];
    for step in STEPS {
        for recovery in ["replay", "redrive"] {
            let a = alt_case("alt_crash").await;
            let name = format!("alt-{step}-{recovery}-{}", std::process::id());
            let history = std::env::temp_dir().join(format!("{name}.json"));
            let crashed = a.stack.run(&RunOptions {
                input: Some(a.t.input()),
                name: Some(name.clone()),
                scenario: Some(json!({"tasks": {step: [{"abortAfter": true}]}, "waitMs": 0, "retryIntervalMs": 0})),
                history: Some(history.clone()),
                ..RunOptions::default()
            });
            let held_after_crash = a.stack.invariant(&a.t).await;
            let scenario = json!({"waitMs": 0, "retryIntervalMs": 0});
            let recovered = match recovery {
                "replay" => run_quick(&a.stack, a.t.input(), scenario, RunOptions::default()),
                _ => run_quick(
                    &a.stack,
                    a.t.input(),
                    scenario,
                    RunOptions {
                        name: Some(name.clone()),
                        start_at: Some(step.into()),
                        state_input: Some(super::state_input(&history, step)),
                        ..RunOptions::default()
                    },
                ),
            };
            std::fs::remove_file(&history).ok();
            let held = a.stack.invariant(&a.t).await;
            let previous_works = a.stack.login_stage(&a.t, AWSPREVIOUS).await;
            let pending = a.user_at(AWSPENDING).await;
            if crashed.status != "ABORTED"
                || held_after_crash.is_err()
                || recovered.status != "SUCCEEDED"
                || held.is_err()
                || previous_works.is_err()
                || pending.is_some()
            {
                problems.push(format!(
                    "{step}/{recovery}: crash {} ({held_after_crash:?}), recovery {} {:?} {:?} mode {}, invariant {held:?}, previous {previous_works:?}, pending {pending:?}\n{}",
                    crashed.status, recovered.status, recovered.error, recovered.cause, recovered.output["mode"], recovered.progress
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn alternating_bad_estates_are_named_and_change_nothing() {
    // The current version names neither configured role.
    let a = alt_case("alt_bad").await;
    let secret = a.t.alternating.clone().unwrap();
    a.stack
        .secrets
        .put_secret_value()
        .secret_id(&secret)
        .secret_string(
            json!({"engine": "postgres", "host": a.stack.pg_host, "port": a.stack.pg_port,
            "dbname": a.t.dbname, "username": "carol", "password": "carol-pass-0"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let before = a.fingerprint().await;
    let e = a.run(json!({}));
    assert_eq!(
        e.error.as_deref(),
        Some("InvalidActiveUser"),
        "{:?}",
        e.cause
    );
    assert!(e.cause.unwrap_or_default().contains("carol"));
    assert_eq!(a.fingerprint().await, before);
    drop(a);

    // No AWSPREVIOUS (adopted with one version) and no administrator.
    let a = alt_case("alt_lone").await;
    let secret = a.t.alternating.clone().unwrap();
    let current = a.stack.password_at(&secret, AWSCURRENT).await;
    a.stack
        .secrets
        .delete_secret()
        .secret_id(&secret)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let lone = |masterarn: Option<&str>| {
        let mut v = json!({"engine": "postgres", "host": a.stack.pg_host, "port": a.stack.pg_port,
            "dbname": a.t.dbname, "username": a.t.blue_role, "password": current.expose()});
        if let Some(m) = masterarn {
            v["masterarn"] = json!(m);
        }
        v.to_string()
    };
    a.stack
        .secrets
        .create_secret()
        .name(&secret)
        .secret_string(lone(None))
        .send()
        .await
        .unwrap();
    // Deployed after the adoption, as it would be.
    for service in &a.t.services {
        a.stack.redeploy(&a.t, service).await;
    }
    let before = a.fingerprint().await;
    let e = a.run(json!({}));
    assert_eq!(e.error.as_deref(), Some("SecretNotFound"), "{:?}", e.cause);
    assert!(e.cause.unwrap_or_default().contains("masterarn"));
    assert_eq!(a.fingerprint().await, before);

    // A masterarn that does not exist.
    a.stack
        .secrets
        .put_secret_value()
        .secret_id(&secret)
        .secret_string(lone(Some("pgflip-test/no-such-admin")))
        .send()
        .await
        .unwrap();
    for service in &a.t.services {
        a.stack.redeploy(&a.t, service).await;
    }
    let before = a.fingerprint().await;
    let e = a.run(json!({}));
    assert_eq!(e.error.as_deref(), Some("SecretNotFound"), "{:?}", e.cause);
    assert!(e
        .cause
        .unwrap_or_default()
        .contains("pgflip-test/no-such-admin"));
    assert_eq!(a.fingerprint().await, before);
}

#[tokio::test]
async fn secrets_managers_own_rotation_of_the_alternating_secret_is_verified_redeployed_or_rolled_back(
) {
    for rollout in ["completes", "fails"] {
        let a = alt_case("alt_smrot").await;
        let (blue, green) = (a.t.blue_role.clone(), a.t.green_role.clone());
        let secret = a.t.alternating.clone().unwrap();
        // Secrets Manager's alternating rotation: the clone gets a new
        // password (set by its master user), then becomes AWSCURRENT.
        let fresh = pgflip_core::password::PasswordPolicy::default().generate();
        a.stack
            .rotate_like_secrets_manager(&secret, &green, &fresh)
            .await;
        let arn = a.stack.secret_arn(&secret).await;
        let event = pgflip_tests::rotation_succeeded_event(&arn);
        let scenario = match rollout {
            "completes" => json!({}),
            _ => {
                json!({"tasks": {"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "web=FAILED (injected)"}}]}})
            }
        };
        let mut input = event.clone();
        input["target"] = json!(a.t.name.clone().unwrap());
        let e = run_quick(&a.stack, input, scenario, RunOptions::default());
        assert!(
            e.states.iter().any(|s| s == "RedeployEcs")
                && !e.states.iter().any(|s| s == "GenerateAndSetPassword"),
            "verify and redeploy, rotate nothing: {:?}",
            e.states
        );
        match rollout {
            "completes" => {
                assert_eq!(
                    e.status, "SUCCEEDED",
                    "{:?}: {:?}\n{}",
                    e.error, e.cause, e.progress
                );
                assert_eq!(a.both_log_in().await, (green.clone(), blue.clone()));
            }
            _ => {
                assert_eq!(
                    e.error.as_deref(),
                    Some("RotationRolledBack"),
                    "{:?}\n{}",
                    e.cause,
                    e.progress
                );
                assert_eq!(a.both_log_in().await, (blue.clone(), green.clone()));
            }
        }
    }
}

#[tokio::test]
async fn alternating_dry_run_preflights_and_guard_change_nothing() {
    let a = alt_case("alt_pre").await;
    let green = a.t.green_role.clone();
    let before = a.fingerprint().await;

    // A dry run: the plan, nothing changed.
    let mut input = a.t.input();
    input["dryRun"] = json!(true);
    let e = run_quick(&a.stack, input, json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert!(
        e.states.iter().any(|s| s == "DryRunSucceeded"),
        "{:?}",
        e.states
    );
    assert_eq!(e.output["targetUser"], green.as_str());
    assert_eq!(a.fingerprint().await, before);

    // A live session of the inactive role (old tasks): it waits, then stops.
    let port = a.stack.port_of(&a.t);
    let session = a.stack.session_at(&a.t, &green, AWSPREVIOUS, port).await;
    let e = a.run(json!({}));
    assert_eq!(
        e.error.as_deref(),
        Some("InactiveUserInUse"),
        "{:?}",
        e.cause
    );
    assert_eq!(a.fingerprint().await, before);
    drop(session);

    // Drift between the two roles.
    let db = a.stack.admin(&a.t.dbname).await;
    db.batch_execute(&format!(
        "CREATE TABLE audit (id int); GRANT SELECT ON audit TO \"{green}\";"
    ))
    .await
    .unwrap();
    let e = a.run(json!({}));
    assert_eq!(e.error.as_deref(), Some("PrivilegeDrift"), "{:?}", e.cause);
    assert_eq!(a.fingerprint().await, before);
    db.batch_execute("DROP TABLE audit").await.unwrap();

    // The concurrency guard: a second execution of the target while the
    // first runs fails at once, and the first finishes the rotation.
    let first = {
        let stack = a.stack.clone();
        let input = a.t.input();
        std::thread::spawn(move || {
            stack.run(&RunOptions {
                input: Some(input),
                name: Some(format!("alt-first-{}", std::process::id())),
                scenario: Some(json!({"waitMs": 0, "retryIntervalMs": 0,
                    "tasks": {"GenerateAndSetPassword": [{"delayMs": 2500}]}})),
                ..RunOptions::default()
            })
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second = a.run(json!({}));
    assert_eq!(
        second.error.as_deref(),
        Some("RotationInProgress"),
        "{:?}",
        second.cause
    );
    assert_eq!(second.states, ["SelectUser"]);
    let first = first.join().unwrap();
    assert_eq!(
        first.status, "SUCCEEDED",
        "{:?}: {:?}",
        first.error, first.cause
    );
    assert_eq!(a.user_at(AWSCURRENT).await.as_deref(), Some(green.as_str()));
}

#[tokio::test]
async fn alternating_old_execution_redriven_after_a_newer_rotation_is_refused() {
    let a = alt_case("alt_stale").await;
    let name = format!("alt-stale-{}", std::process::id());
    let history = std::env::temp_dir().join(format!("{name}.json"));
    // E1 planned blue -> clone and failed at GenerateAndSetPassword.
    let e1 = a.stack.run(&RunOptions {
        input: Some(a.t.input()),
        name: Some(name.clone()),
        scenario: Some(
            json!({"waitMs": 0, "retryIntervalMs": 0, "tasks": {"GenerateAndSetPassword":
            [{"throw": {"error": "LoginRejected", "cause": "injected"}, "repeat": true}]}}),
        ),
        history: Some(history.clone()),
        ..RunOptions::default()
    });
    assert_eq!(e1.status, "FAILED", "{:?}", e1.error);
    // E2 rotated the clone and made it current.
    let e2 = a.run(json!({}));
    assert_eq!(e2.status, "SUCCEEDED", "{:?}: {:?}", e2.error, e2.cause);
    let before = a.fingerprint().await;
    // A redrive of E1 must not change the password AWSCURRENT now names.
    let redrive = run_quick(
        &a.stack,
        a.t.input(),
        json!({}),
        RunOptions {
            name: Some(name.clone()),
            start_at: Some("GenerateAndSetPassword".into()),
            state_input: Some(super::state_input(&history, "GenerateAndSetPassword")),
            ..RunOptions::default()
        },
    );
    std::fs::remove_file(&history).ok();
    assert_eq!(
        redrive.error.as_deref(),
        Some("PointerMoved"),
        "{:?}\n{}",
        redrive.cause,
        redrive.progress
    );
    assert_eq!(a.fingerprint().await, before);
    assert_eq!(
        a.both_log_in().await,
        (a.t.green_role.clone(), a.t.blue_role.clone())
    );
}

#[tokio::test]
async fn alternating_operator_edit_of_the_current_version_keeps_both_roles() {
    let a = alt_case("alt_edit").await;
    let (blue, green) = (a.t.blue_role.clone(), a.t.green_role.clone());
    let e = a.run(json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    // The operator adds a field to AWSCURRENT (a new version, as the console
    // does): AWSPREVIOUS moves onto the clone's old version.
    // moto dates versions in whole seconds: edit in a later second than
    // the services' deployments, as an operator would.
    pgflip_tests::next_second().await;
    // (On AWS, PutSecretValue moves AWSCURRENT and AWSPREVIOUS itself;
    // moto 5.2.5 moves AWSPREVIOUS from the version it last *put* current,
    // not the one UpdateSecretVersionStage made current, so the edit is
    // staged and promoted here, which AWS does the same way.)
    let secret = a.t.alternating.clone().unwrap();
    let edited = a
        .stack
        .stage_pending(&secret, |v| v["dbClusterIdentifier"] = json!("moved"))
        .await;
    let current = a.stack.secret_state(&secret).await.current;
    a.stack
        .promote_staged(&secret, &current, &edited, AWSPENDING)
        .await;
    assert_eq!(
        a.user_at(AWSPREVIOUS).await.as_deref(),
        Some(green.as_str())
    );
    // The next run redeploys (the tasks must take the edit), the one after
    // rotates blue, whose password its role label still finds.
    let redeploy = a.run(json!({}));
    assert_eq!(
        redeploy.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        redeploy.error, redeploy.cause, redeploy.progress
    );
    assert_eq!(redeploy.output["mode"], "redeploy");
    let rotate = a.run(json!({}));
    assert_eq!(
        rotate.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        rotate.error, rotate.cause, rotate.progress
    );
    assert_eq!(rotate.output["mode"], "rotate");
    assert_eq!(a.both_log_in().await, (blue, green));
}

/// Seed 11, scenario 415 of the chaos soak, as a plain schedule: Secrets
/// Manager's rotation creates the clone's new version (createSecret,
/// setSecret), a release deploys the services while AWSCURRENT still names
/// the app role, then finishSecret promotes the clone. The release's tasks
/// hold the app role. A run by hand used to date the move by the version's
/// creation, take the release as newer, and rotate the app role under
/// them. It must redeploy first (and record when it saw the clone), and the
/// run after it rotates the app role. Before pgflip ever ran (no record,
/// as AWS's rotation leaves the secret), the same.
#[tokio::test]
async fn awscurrent_promoted_by_secrets_manager_after_a_release_is_redeployed_for_before_rotating()
{
    for when in ["after pgflip's flips", "before pgflip ever ran"] {
        let a = alt_case("alt_gap").await;
        let (blue, green) = (a.t.blue_role.clone(), a.t.green_role.clone());
        let secret = a.t.alternating.clone().unwrap();
        if when.starts_with("before") {
            a.stack.forget_flips(&secret).await;
        }
        let current = a.stack.secret_state(&secret).await.current;
        let fresh = pgflip_core::password::PasswordPolicy::default().generate();
        let new = a
            .stack
            .stage_pending(&secret, |v| {
                v["username"] = json!(green);
                v["password"] = json!(fresh.expose());
            })
            .await;
        a.stack.set_role_password(&green, &fresh).await;
        for service in &a.t.services {
            a.stack.redeploy(&a.t, service).await;
        }
        a.stack
            .promote_staged(&secret, &current, &new, AWSPENDING)
            .await;
        let exposed =
            |p: Vec<Password>| p.iter().map(|p| p.expose().to_string()).collect::<Vec<_>>();
        let before = exposed(a.passwords().await);

        let e = a.run(json!({}));
        assert_eq!(
            e.status, "SUCCEEDED",
            "{when}: {:?}: {:?}\n{}",
            e.error, e.cause, e.progress
        );
        assert!(
            e.states.iter().any(|s| s == "RedeployEcs")
                && !e.states.iter().any(|s| s == "GenerateAndSetPassword"),
            "{when}: the release's tasks hold {blue}: redeploy, rotate nothing: {:?}",
            e.states
        );
        assert!(
            exposed(a.passwords().await) == before,
            "{when}: a password changed"
        );
        assert_eq!(
            a.stack.recorded_flip(&secret).await.as_deref(),
            Some(new.as_str()),
            "{when}"
        );
        assert_eq!(
            a.both_log_in().await,
            (green.clone(), blue.clone()),
            "{when}"
        );

        let e = a.run(json!({}));
        assert_eq!(
            e.status, "SUCCEEDED",
            "{when}: {:?}: {:?}\n{}",
            e.error, e.cause, e.progress
        );
        assert!(
            e.states.iter().any(|s| s == "GenerateAndSetPassword"),
            "{when}: redeployed since: the next run rotates {blue}: {:?}",
            e.states
        );
        assert_eq!(
            a.both_log_in().await,
            (blue.clone(), green.clone()),
            "{when}"
        );
    }
}
