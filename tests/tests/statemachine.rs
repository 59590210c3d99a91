//! State-machine path tests: the real `statemachine/rotation.asl.json` in
//! aws-local-stepfunctions, every Task sent to the real Lambdas on
//! `cargo lambda watch`, which talk to moto and PostgreSQL. Scenario overrides
//! (the way Step Functions Local's mocked responses work) inject what moto
//! cannot produce: a FAILED or never-ending rollout, a transient error.
//!
//! The Lambdas are configured for one target (`Target::local()`), so these
//! tests take a lock and re-seed that target each time; nextest runs them in
//! one test group (`.config/nextest.toml`).

// Failures from the field (issue 12), in a file of their own.
#[path = "statemachine/field.rs"]
mod field;
// Consumers found in the cluster (issue 16).
#[path = "statemachine/consumers.rs"]
mod consumers;
// What report-outcome says after real executions (issue 16).
#[path = "statemachine/report.rs"]
mod report;
// The pgflip command line against the local stack (issue 16).
#[path = "statemachine/cli.rs"]
mod cli;
// The alternating-secret layout end to end (issue 13).
#[path = "statemachine/alternating.rs"]
mod alternating;

use pgflip_core::domain::AWSCURRENT;
use pgflip_tests::{rotation_succeeded_event, Execution, RunOptions, Snapshot, Stack, Target};
use serde_json::{json, Value};

// A tokio mutex: the guard is held across awaits, and each test has its own runtime.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Case {
    stack: Stack,
    target: Target,
    before: Snapshot,
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

async fn case() -> Case {
    let guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let target = Target::local();
    stack.seed(&target).await;
    let before = stack.snapshot(&target).await;
    assert_eq!(before.active_user, "blue");
    Case {
        stack,
        target,
        before,
        _guard: guard,
    }
}

/// One run with waits and retry intervals shortened to 0, as a test wants;
/// the runner's progress goes to the test's output.
fn run_quick(stack: &Stack, input: Value, mut scenario: Value, options: RunOptions) -> Execution {
    scenario["waitMs"] = json!(0);
    scenario["retryIntervalMs"] = json!(0);
    let execution = stack.run(&RunOptions {
        input: Some(input),
        scenario: Some(scenario),
        ..options
    });
    eprintln!("{}", execution.progress);
    execution
}

/// The leak search over `text`: none of these (user, stage) passwords of
/// the case's target appears in it.
async fn assert_no_password_in(c: &Case, text: &str, stages: &[(&str, &str)]) {
    for (key, stage) in stages {
        let password = c.stack.password_at(c.target.secret_of(key), stage).await;
        assert!(
            !text.contains(password.expose()),
            "{key}'s {stage} password leaked"
        );
    }
}

impl Case {
    fn run(&self, input: Value, scenario: Value) -> Execution {
        run_quick(&self.stack, input, scenario, RunOptions::default())
    }

    async fn after(&self) -> Snapshot {
        self.stack.snapshot(&self.target).await
    }

    async fn assert_invariant(&self) -> String {
        self.stack
            .invariant(&self.target)
            .await
            .unwrap_or_else(|e| panic!("invariant broken: {e}"))
    }

    /// The rotation happened: green is active with a new, working AWSCURRENT
    /// version, blue is untouched, every service has a new deployment.
    async fn assert_rotated(&self, after: &Snapshot) {
        assert_eq!(after.active_user, "green");
        assert_ne!(after.green.current, self.before.green.current);
        assert_eq!(after.green.pending, None);
        assert_eq!(
            after.blue, self.before.blue,
            "the previously active user's secret changed"
        );
        self.stack
            .login(&self.target, "green", AWSCURRENT)
            .await
            .expect("green logs in with its new AWSCURRENT password");
        self.stack
            .login(&self.target, "blue", AWSCURRENT)
            .await
            .expect("blue still logs in with its unchanged password");
        self.assert_redeployed(after, "the rotation");
        assert_eq!(self.assert_invariant().await, "green");
    }

    /// Every service has a new PRIMARY deployment since the case began.
    fn assert_redeployed(&self, after: &Snapshot, by: &str) {
        for ((service, old), (_, new)) in self.before.deployments.iter().zip(&after.deployments) {
            assert_ne!(old, new, "{service} was not redeployed by {by}");
        }
    }

    /// Nothing changed at all.
    async fn assert_untouched(&self, after: &Snapshot) {
        assert_eq!(after, &self.before);
        assert_eq!(self.assert_invariant().await, "blue");
        self.stack
            .login(&self.target, "green", AWSCURRENT)
            .await
            .expect("green still logs in with its unchanged password");
    }
}

#[tokio::test]
async fn happy_path_from_the_console_default_input() {
    let c = case().await;
    let e = c.run(json!({"Comment": "Insert your JSON here"}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(
        e.states,
        [
            "SelectUser",
            "ChooseMode",
            "GenerateAndSetPassword",
            "VerifyLogin",
            "FlipParameter",
            "RedeployEcs",
            "WaitBeforePoll",
            "WaitForStable",
            "RolloutDone",
            "RotationSucceeded"
        ]
    );
    assert_eq!(e.transitions, 10);
    assert_eq!(e.output["rollout"]["status"], "COMPLETED");
    assert_eq!(e.output["pending"]["resumed"], false);
    let after = c.after().await;
    c.assert_rotated(&after).await;
    // The output (the execution history's last word) holds no password.
    let green = c
        .stack
        .password_at(&c.target.green_secret, AWSCURRENT)
        .await;
    assert!(!e.output.to_string().contains(green.expose()));
}

#[tokio::test]
async fn an_eventbridge_scheduler_envelope_starts_a_normal_rotation() {
    let c = case().await;
    let envelope = json!({
        "version": "0", "id": "6a7e8feb", "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-11-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/pgflip"], "detail": {}
    });
    let e = c.run(envelope, json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    c.assert_rotated(&c.after().await).await;
}

#[tokio::test]
async fn a_transient_error_is_retried_then_succeeds() {
    let c = case().await;
    let transient = json!({"throw": {"error": "DatabaseUnavailable", "cause": "connection refused (injected)"}});
    let throttled =
        json!({"throw": {"error": "AwsUnavailable", "cause": "ThrottlingException (injected)"}});
    let e = c.run(
        json!({}),
        json!({"tasks": {
            "GenerateAndSetPassword": [transient.clone(), transient],
            "RedeployEcs": [throttled],
        }}),
    );
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(
        e.progress.matches("GenerateAndSetPassword retry").count(),
        2,
        "{}",
        e.progress
    );
    assert_eq!(
        e.progress.matches("RedeployEcs retry").count(),
        1,
        "{}",
        e.progress
    );
    // Retries are not new states: the path is the happy path.
    assert_eq!(e.transitions, 10);
    c.assert_rotated(&c.after().await).await;
}

#[tokio::test]
async fn a_failed_rollout_rolls_back_to_the_previous_user() {
    let c = case().await;
    let e = c.run(
        json!({}),
        // moto never fails a rollout: the real Lambda runs, then reports FAILED.
        json!({"tasks": {"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "ECS reported a FAILED deployment: cluster pgflip-local: web=FAILED (injected)"}}]}}),
    );
    assert_eq!(e.status, "FAILED");
    assert_eq!(e.error.as_deref(), Some("RotationRolledBack"));
    let cause = e.cause.clone().unwrap_or_default();
    assert!(cause.contains("RolloutFailed"), "{cause}");
    assert!(cause.contains("names blue again"), "{cause}");
    for state in [
        "RollbackFlipParameter",
        "RollbackRedeployEcs",
        "RollbackWaitForStable",
        "RotationRolledBack",
    ] {
        assert!(
            e.states.iter().any(|s| s == state),
            "{state} not entered: {:?}",
            e.states
        );
    }
    let after = c.after().await;
    assert_eq!(
        after.active_user, "blue",
        "the parameter was not flipped back"
    );
    assert_eq!(
        after.blue, c.before.blue,
        "the previous user's secret changed"
    );
    // The services were redeployed twice (rotation, then rollback).
    assert_eq!(e.invocations["redeploy-ecs"], 2);
    c.assert_redeployed(&after, "the rollback");
    assert_eq!(c.assert_invariant().await, "blue");
    // Green was rotated and verified before the flip: it works too.
    c.stack
        .login(&c.target, "green", AWSCURRENT)
        .await
        .expect("green logs in");
}

/// `tests/fixtures/ecs-service.py CLUSTER SERVICE DESIRED`, as argv.
fn ecs_service(cluster: &str, service: &str, desired: u32) -> Vec<String> {
    let root = pgflip_tests::repo_root();
    vec![
        root.join(".local/venv/bin/python").display().to_string(),
        root.join("tests/fixtures/ecs-service.py")
            .display()
            .to_string(),
        cluster.into(),
        service.into(),
        desired.to_string(),
    ]
}

#[tokio::test]
async fn a_rollout_that_never_finishes_hits_the_deadline_and_rolls_back() {
    let c = case().await;
    // A real never-ending rollout: moto keeps a service that wants more tasks
    // than it runs IN_PROGRESS. "slow" starts healthy (so select-user finds
    // nothing unfinished and rotates); right after the flip it starts wanting
    // 3 tasks, so the real wait-for-stable must give up at the deadline
    // (STABLE_TIMEOUT_SECONDS after the redeploy); before the rollback
    // redeploys, the "operator" fixes it.
    let argv = ecs_service(&c.target.cluster, "slow", 2);
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .unwrap();
    assert!(status.success());
    let timeout: u64 = std::env::var("PGFLIP_STABLE_TIMEOUT_SECONDS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(60);
    let mut scenario = json!({"tasks": {
        "FlipParameter": [{"afterCommand": ecs_service(&c.target.cluster, "slow", 3)}],
        "RollbackFlipParameter": [{"afterCommand": ecs_service(&c.target.cluster, "slow", 2)}],
    }});
    let e = c.stack.run(&RunOptions {
        input: Some(json!({"services": ["web", "slow"]})),
        scenario: Some({
            // Look every 250 ms, so the loop runs a bounded number of times.
            scenario["waitMs"] = json!(250);
            scenario["retryIntervalMs"] = json!(0);
            scenario
        }),
        ..RunOptions::default()
    });
    eprintln!("{}", e.progress);
    assert_eq!(
        e.error.as_deref(),
        Some("RotationRolledBack"),
        "{:?}",
        e.cause
    );
    let cause = e.cause.clone().unwrap_or_default();
    assert!(
        cause.contains("RolloutTimedOut") && cause.contains("slow=IN_PROGRESS"),
        "{cause}"
    );
    assert!(
        e.duration_ms >= timeout * 1000,
        "gave up after {} ms, before the deadline",
        e.duration_ms
    );
    // Each extra look costs three transitions: a Wait, a WaitForStable and
    // the Choice that found it still in progress (none after the last look,
    // which timed out).
    let main: Vec<&String> = e
        .states
        .iter()
        .take_while(|s| *s != "ChooseRollback")
        .collect();
    // The Choice that rolls back only what this execution flipped.
    let at = e.states.iter().position(|s| s == "ChooseRollback").unwrap();
    assert_eq!(e.states[at + 1], "RollbackFlipParameter");
    let looks = main.iter().filter(|s| **s == "WaitForStable").count();
    let waits = main.iter().filter(|s| **s == "WaitBeforePoll").count();
    assert!(looks >= 3, "looked only {looks} times");
    let choices = main.iter().filter(|s| **s == "RolloutDone").count();
    assert_eq!(waits, looks);
    assert_eq!(choices, looks - 1);
    assert_eq!(main.len(), 6 + 3 * looks - 1, "{main:?}");
    let after = c.after().await;
    assert_eq!(after.active_user, "blue");
    assert_eq!(after.blue, c.before.blue);
    assert_eq!(c.assert_invariant().await, "blue");
}

#[tokio::test]
async fn a_rejected_login_fails_before_the_flip_and_leaves_the_active_user_alone() {
    let c = case().await;
    // Someone changes green's password right after the step set it: the
    // real verify-login must then be rejected by the real PostgreSQL.
    let tamper = json!({"afterCommand": [
        "env", format!("PGPASSWORD={}", std::env::var("PGFLIP_PG_SUPERPASS").unwrap()),
        "psql", "-X", "-q", "-h", c.stack.pg_host, "-p", c.stack.pg_port.to_string(), "-U", "postgres", "-d", "postgres",
        "-c", "ALTER ROLE green PASSWORD 'tampered-by-the-test'"
    ]});
    let e = c.run(
        json!({}),
        json!({"tasks": {"GenerateAndSetPassword": [tamper]}}),
    );
    assert_eq!(e.status, "FAILED");
    assert_eq!(e.error.as_deref(), Some("LoginRejected"), "{:?}", e.cause);
    assert_eq!(e.states.last().map(String::as_str), Some("VerifyLogin"));
    assert!(!e.states.iter().any(|s| s == "FlipParameter"));
    let after = c.after().await;
    assert_eq!(after.active_user, "blue");
    assert_eq!(after.blue, c.before.blue);
    assert_eq!(
        after.green.current, c.before.green.current,
        "an unverified version was promoted"
    );
    assert!(
        after.green.pending.is_some(),
        "the pending version stays for inspection"
    );
    assert_eq!(
        after.deployments, c.before.deployments,
        "services were redeployed"
    );
    assert_eq!(c.assert_invariant().await, "blue");
}

#[tokio::test]
async fn a_dry_run_returns_the_plan_and_changes_nothing() {
    let c = case().await;
    let e = c.run(json!({"dryRun": true, "services": ["web"]}), json!({}));
    assert_eq!(e.status, "SUCCEEDED");
    assert_eq!(e.states, ["SelectUser", "ChooseMode", "DryRunSucceeded"]);
    assert_eq!(e.output["targetUser"], "green");
    assert_eq!(e.output["services"], json!(["web"]));
    c.assert_untouched(&c.after().await).await;
}

#[tokio::test]
async fn bad_input_fails_with_invalid_input_and_changes_nothing() {
    let c = case().await;
    for (input, field) in [
        (json!({"services": []}), "services"),
        (json!({"dryRun": "yes"}), "dryRun"),
        (json!({"services": ["web", 7]}), "services"),
    ] {
        let e = c.run(input.clone(), json!({}));
        assert_eq!(e.status, "FAILED", "{input}");
        assert_eq!(e.error.as_deref(), Some("InvalidInput"), "{input}");
        assert!(
            e.cause.as_deref().unwrap_or_default().contains(field),
            "{:?}",
            e.cause
        );
        assert_eq!(e.states, ["SelectUser"]);
    }
    c.assert_untouched(&c.after().await).await;
}

#[tokio::test]
async fn privilege_drift_stops_the_rotation_before_anything_changes() {
    let c = case().await;
    let db = c.stack.admin(&c.target.dbname).await;
    db.batch_execute("CREATE TABLE audit (id int); GRANT SELECT ON audit TO green;")
        .await
        .unwrap();
    let e = c.run(json!({}), json!({}));
    assert_eq!(e.error.as_deref(), Some("PrivilegeDrift"), "{:?}", e.cause);
    let cause = e.cause.unwrap_or_default();
    assert!(cause.contains("SELECT on table audit"), "{cause}");
    c.assert_untouched(&c.after().await).await;
}

#[tokio::test]
async fn an_unknown_active_user_is_a_named_error() {
    let c = case().await;
    c.stack.set_active_user(&c.target, "purple").await;
    let e = c.run(json!({}), json!({}));
    assert_eq!(
        e.error.as_deref(),
        Some("InvalidActiveUser"),
        "{:?}",
        e.cause
    );
    assert_eq!(c.stack.active_user(&c.target).await, "purple");
    assert_eq!(
        c.stack.secret_state(&c.target.green_secret).await,
        c.before.green
    );
}

#[tokio::test]
async fn a_crash_after_staging_is_resumed_by_the_next_execution() {
    let c = case().await;
    let e = c.run(
        json!({}),
        json!({"tasks": {"GenerateAndSetPassword": [{"throwAfter": {"error": "Lambda.Unknown", "cause": "crashed after the side effect (injected)"}}]}}),
    );
    assert_eq!(e.status, "FAILED");
    let mid = c.after().await;
    let staged = mid
        .green
        .pending
        .clone()
        .expect("a pending version was staged");
    assert_eq!(c.assert_invariant().await, "blue");

    let e = c.run(json!({}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["pending"]["resumed"], true);
    let after = c.after().await;
    assert_eq!(
        after.green.current, staged,
        "the staged version was not the one promoted"
    );
    assert_eq!(
        after.green.versions,
        c.before.green.versions + 1,
        "a second version was made"
    );
    c.assert_rotated(&after).await;
}

#[tokio::test]
async fn a_second_concurrent_execution_fails_fast_and_changes_nothing() {
    let c = case().await;
    let first = {
        let stack = c.stack.clone();
        std::thread::spawn(move || {
            // Slow the first execution down so the second starts meanwhile.
            stack.run(&RunOptions {
                input: Some(json!({})),
                name: Some(format!("first-{}", std::process::id())),
                scenario: Some(json!({"waitMs": 0, "retryIntervalMs": 0,
                    "tasks": {"GenerateAndSetPassword": [{"delayMs": 2500}]}})),
                ..RunOptions::default()
            })
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second = c.run(json!({"Comment": "scheduled"}), json!({}));
    assert_eq!(second.status, "FAILED");
    assert_eq!(
        second.error.as_deref(),
        Some("RotationInProgress"),
        "{:?}",
        second.cause
    );
    assert!(
        second
            .cause
            .as_deref()
            .unwrap_or_default()
            .contains("first-"),
        "{:?}",
        second.cause
    );
    assert_eq!(second.states, ["SelectUser"]);
    assert_eq!(
        second.invocations.len(),
        1,
        "the second execution called more than select-user"
    );

    let first = first.join().unwrap();
    assert_eq!(
        first.status, "SUCCEEDED",
        "{:?}: {:?}",
        first.error, first.cause
    );
    let after = c.after().await;
    c.assert_rotated(&after).await;
    assert_eq!(
        after.green.versions,
        c.before.green.versions + 1,
        "rotated twice"
    );

    // Neither blocks the next one: finished executions are not running.
    let third = c.run(json!({}), json!({}));
    assert_eq!(
        third.status, "SUCCEEDED",
        "{:?}: {:?}",
        third.error, third.cause
    );
    assert_eq!(c.stack.active_user(&c.target).await, "blue");
}

const STEPS: [&str; 6] = [
    "SelectUser",
    "GenerateAndSetPassword",
    "VerifyLogin",
    "FlipParameter",
    "RedeployEcs",
    "WaitForStable",
];

/// After every Task of a run, check the invariant from outside (a failing
/// check fails the run).
fn check_after_every_step(mut tasks: serde_json::Map<String, Value>) -> Value {
    let check = json!([{"afterCommand": [env!("CARGO_BIN_EXE_pgflip-stack"), "invariant"], "repeat": true}]);
    for step in STEPS {
        tasks.entry(step).or_insert_with(|| check.clone());
    }
    json!({"tasks": tasks})
}

/// The input a state had when it was entered last, from a run's history.
fn state_input(history: &std::path::Path, state: &str) -> Value {
    let events: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(history).unwrap()).unwrap();
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "StateEntered" && e["state"]["name"] == state)
        .map(|e| e["state"]["input"].clone())
        .unwrap_or_else(|| panic!("{state} was never entered"))
}

#[tokio::test]
async fn fault_matrix_crash_after_each_step_then_replay_or_redrive() {
    let mut rows = vec![];
    let mut problems = vec![];
    for step in STEPS {
        for recovery in ["replay", "redrive"] {
            let c = case().await;
            let name = format!("fault-{step}-{recovery}-{}", std::process::id());
            let history = std::env::temp_dir().join(format!("{name}.json"));
            let mut tasks = serde_json::Map::new();
            tasks.insert(step.into(), json!([{"abortAfter": true}]));
            let mut crash_scenario = check_after_every_step(tasks);
            crash_scenario["waitMs"] = json!(0);
            crash_scenario["retryIntervalMs"] = json!(0);
            let crashed = c.stack.run(&RunOptions {
                input: Some(json!({})),
                name: Some(name.clone()),
                scenario: Some(crash_scenario),
                history: Some(history.clone()),
                ..RunOptions::default()
            });
            let crashed_ok =
                crashed.status == "ABORTED" && crashed.aborted_in.as_deref() == Some(step);
            let held_after_crash = c.stack.invariant(&c.target).await.is_ok();

            let mut scenario = check_after_every_step(serde_json::Map::new());
            scenario["waitMs"] = json!(0);
            scenario["retryIntervalMs"] = json!(0);
            let recovered = match recovery {
                "replay" => c.stack.run(&RunOptions {
                    input: Some(json!({})),
                    scenario: Some(scenario),
                    ..RunOptions::default()
                }),
                _ => c.stack.run(&RunOptions {
                    input: Some(json!({})),
                    name: Some(name.clone()),
                    start_at: Some(step.into()),
                    state_input: Some(state_input(&history, step)),
                    scenario: Some(scenario),
                    ..RunOptions::default()
                }),
            };
            let after = c.after().await;
            let held = c.stack.invariant(&c.target).await;
            let green_once = after.green.versions == c.before.green.versions + 1
                && after.green.current != c.before.green.current
                && after.green.pending.is_none();
            // Once the rollout of the interrupted rotation completed (moto
            // completes at once), the rotation was done: a replay is then the
            // next rotation, of blue, which is safe (no task uses blue).
            let finished_before =
                recovery == "replay" && ["RedeployEcs", "WaitForStable"].contains(&step);
            let converged = recovered.status == "SUCCEEDED"
                && green_once
                && if finished_before {
                    after.active_user == "blue" && after.blue.versions == c.before.blue.versions + 1
                } else {
                    after.active_user == "green" && after.blue == c.before.blue
                };
            std::fs::remove_file(&history).ok();
            let mode = recovered.output["mode"].as_str().unwrap_or("-").to_string();
            rows.push(format!(
                "| {step:<22} | {recovery:<7} | {:<9} | {:<8} | {:<9} | {:<9} | {:<5} |",
                if held_after_crash { "held" } else { "BROKEN" },
                if recovery == "redrive" {
                    "-"
                } else {
                    mode.as_str()
                },
                recovered.status,
                if converged { "yes" } else { "NO" },
                if held.is_ok() { "held" } else { "BROKEN" },
            ));
            if !(crashed_ok && held_after_crash && converged && held.is_ok()) {
                problems.push(format!(
                    "{step}/{recovery}: crash {} in {:?}, recovery {} {:?} {:?}, after {after:?}, invariant {held:?}\n{}",
                    crashed.status, crashed.aborted_in, recovered.status, recovered.error, recovered.cause, recovered.progress
                ));
            }
        }
    }
    eprintln!("\n| crashed after          | then    | invariant | mode     | recovery  | converged | inv.  |");
    eprintln!("|------------------------|---------|-----------|----------|-----------|-----------|-------|");
    for row in &rows {
        eprintln!("{row}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What a bad-state case may not change: the pointer, any secret version, any deployment.
async fn fingerprint(
    c: &Case,
) -> (
    Option<String>,
    Vec<Option<SecretStateLite>>,
    Vec<(String, String)>,
) {
    let active = c
        .stack
        .ssm
        .get_parameter()
        .name(&c.target.parameter_name)
        .send()
        .await
        .ok()
        .and_then(|o| o.parameter)
        .and_then(|p| p.value);
    let mut secrets = vec![];
    for id in [&c.target.blue_secret, &c.target.green_secret] {
        let d = c
            .stack
            .secrets
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .ok();
        secrets.push(d.map(|d| {
            let mut v: Vec<String> = d
                .version_ids_to_stages
                .unwrap_or_default()
                .into_iter()
                .map(|(id, mut stages)| {
                    stages.sort();
                    format!("{id}:{}", stages.join("+"))
                })
                .collect();
            v.sort();
            v
        }));
    }
    (
        active,
        secrets,
        c.stack.primary_deployments(&c.target).await,
    )
}

type SecretStateLite = Vec<String>;

#[tokio::test]
async fn bad_state_and_bad_input_get_named_errors_and_change_nothing() {
    let mut rows = vec![];
    let mut problems = vec![];
    let cases: Vec<(&str, Value, &str)> = vec![
        ("parameter holds \"purple\"", json!({}), "InvalidActiveUser"),
        ("parameter missing", json!({}), "ParameterNotFound"),
        ("green's secret missing", json!({}), "SecretNotFound"),
        ("green's secret not JSON", json!({}), "SecretMalformed"),
        (
            "green's secret lacks username",
            json!({}),
            "SecretMalformed",
        ),
        (
            "green's password changed in the database",
            json!({}),
            "LoginRejected",
        ),
        (
            "database unreachable (retried)",
            json!({}),
            "DatabaseUnavailable",
        ),
        (
            "green has a live session (retried)",
            json!({}),
            "InactiveUserInUse",
        ),
        (
            "unknown ECS service",
            json!({"services": ["ghost"]}),
            "ServiceNotFound",
        ),
        (
            "a CODE_DEPLOY service",
            json!({"services": ["web", "legacy"]}),
            "UnsupportedDeploymentController",
        ),
        (
            "input: services empty",
            json!({"services": []}),
            "InvalidInput",
        ),
        (
            "input: dryRun not a boolean",
            json!({"dryRun": "yes"}),
            "InvalidInput",
        ),
        (
            "input: a service not a string",
            json!({"services": ["web", 7]}),
            "InvalidInput",
        ),
        (
            "input: reason not a string",
            json!({"reason": 5}),
            "InvalidInput",
        ),
        (
            "input: a list, not an object",
            json!([1, 2]),
            "InvalidInput",
        ),
        ("input: a string", json!("rotate please"), "InvalidInput"),
    ];
    for (what, input, expected) in cases {
        let c = case().await;
        let green_secret = c.target.green_secret.clone();
        let mut session = None;
        match what {
            "parameter holds \"purple\"" => c.stack.set_active_user(&c.target, "purple").await,
            "parameter missing" => {
                c.stack
                    .ssm
                    .delete_parameter()
                    .name(&c.target.parameter_name)
                    .send()
                    .await
                    .unwrap();
            }
            "green's secret missing" => {
                c.stack
                    .secrets
                    .delete_secret()
                    .secret_id(&green_secret)
                    .force_delete_without_recovery(true)
                    .send()
                    .await
                    .unwrap();
            }
            "green's secret not JSON" | "green's secret lacks username" => {
                let value = if what.contains("JSON") {
                    "host=127.0.0.1 user=green".to_string()
                } else {
                    json!({"host": "127.0.0.1", "dbname": "app", "password": "irrelevant"})
                        .to_string()
                };
                c.stack
                    .secrets
                    .put_secret_value()
                    .secret_id(&green_secret)
                    .secret_string(value)
                    .send()
                    .await
                    .unwrap();
            }
            "green's password changed in the database" => {
                c.stack
                    .admin("postgres")
                    .await
                    .batch_execute("ALTER ROLE green PASSWORD 'changed-by-someone-else'")
                    .await
                    .unwrap();
            }
            "database unreachable (retried)" => {
                // Point both secrets (the same server, as they must) at a dead port.
                let dead = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                for secret in [&c.target.blue_secret, &c.target.green_secret] {
                    c.stack
                        .edit_secret(secret, |v| v["port"] = json!(dead))
                        .await;
                }
            }
            "a CODE_DEPLOY service" => {
                let exists = c
                    .stack
                    .ecs
                    .describe_services()
                    .cluster(&c.target.cluster)
                    .services("legacy")
                    .send()
                    .await
                    .unwrap()
                    .services()
                    .iter()
                    .any(|s| s.status() == Some("ACTIVE"));
                if !exists {
                    c.stack
                        .ecs
                        .create_service()
                        .cluster(&c.target.cluster)
                        .service_name("legacy")
                        .task_definition(format!("{}-app", c.target.cluster))
                        .desired_count(1)
                        .deployment_controller(
                            aws_sdk_ecs::types::DeploymentController::builder()
                                .r#type(aws_sdk_ecs::types::DeploymentControllerType::CodeDeploy)
                                .build()
                                .unwrap(),
                        )
                        .send()
                        .await
                        .unwrap();
                }
            }
            "green has a live session (retried)" => {
                session = Some(c.stack.session(&c.target, "green", c.stack.pg_port).await);
            }
            _ => {}
        }
        let before = fingerprint(&c).await;
        let e = c.run(input.clone(), json!({}));
        let after = fingerprint(&c).await;
        let retries = e.progress.matches(" retry #").count();
        let ok = e.status == "FAILED"
            && e.error.as_deref() == Some(expected)
            && e.states == ["SelectUser"]
            && before == after;
        let cause: String = e
            .cause
            .clone()
            .unwrap_or_default()
            .chars()
            .take(90)
            .collect();
        rows.push(format!(
            "| {what:<42} | {:<20} | {retries} | {} | {cause}",
            e.error.clone().unwrap_or_default(),
            if before == after {
                "nothing changed"
            } else {
                "CHANGED"
            }
        ));
        if !ok {
            problems.push(format!(
                "{what}: expected {expected}, got {:?} {:?} after {:?}; changed: {}",
                e.error,
                e.cause,
                e.states,
                before != after
            ));
        }
        drop(session);
    }
    eprintln!("\n| bad state or input                         | error                | retries | state | cause");
    for row in &rows {
        eprintln!("{row}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `value` percent-encoded as in a URL (everything but unreserved characters).
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A full rotation with the Lambdas logging at trace level: no password, old
/// or new, nor its URL-encoded form, shows up in any Lambda log line, Lambda
/// output, the execution history, the runner's progress, the human report,
/// the PostgreSQL server log (log_statement = 'all'), or this test's output.
#[tokio::test]
async fn no_password_reaches_logs_outputs_history_or_test_output() {
    let c = case().await;
    let stack_dir = std::path::PathBuf::from(std::env::var("PGFLIP_STACK_DIR").unwrap());
    let lambda_env = std::fs::read_to_string(stack_dir.join("lambda.env")).unwrap();
    assert!(
        lambda_env.lines().any(|l| l == "RUST_LOG=trace"),
        "the local Lambdas must log at trace for this test (scripts/test starts them so)"
    );
    let green_old = c
        .stack
        .password_at(&c.target.green_secret, AWSCURRENT)
        .await;
    let blue = c.stack.password_at(&c.target.blue_secret, AWSCURRENT).await;
    let log_start = std::fs::metadata(stack_dir.join("lambda.log"))
        .unwrap()
        .len() as usize;

    let history = std::env::temp_dir().join(format!("history-{}.json", std::process::id()));
    let e = c.stack.run(&RunOptions {
        input: Some(json!({"Comment": "Insert your JSON here"})),
        history: Some(history.clone()),
        ..RunOptions::default()
    });
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    let green_new = c
        .stack
        .password_at(&c.target.green_secret, AWSCURRENT)
        .await;
    assert_ne!(green_new.expose(), green_old.expose());

    // The human report of scripts/rotate-local, on this rotation.
    let dir = std::env::temp_dir().join(format!("report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let after = c.after().await;
    std::fs::write(
        dir.join("before.json"),
        serde_json::to_string(&c.before).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("after.json"),
        serde_json::to_string(&after).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("execution.json"),
        json!({"name": e.name, "status": e.status, "transitions": e.transitions, "durationMs": e.duration_ms}).to_string(),
    )
    .unwrap();
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_pgflip-stack"))
        .arg("report")
        .args(["before.json", "after.json", "execution.json"].map(|f| dir.join(f)))
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );

    let lambda_log = std::fs::read(stack_dir.join("lambda.log")).unwrap();
    let this_rotation = String::from_utf8_lossy(&lambda_log[log_start..]).to_string();
    assert!(
        this_rotation.contains("TRACE"),
        "no trace lines were logged"
    );
    let channels = [
        ("Lambda logs (trace)", this_rotation),
        (
            "execution history",
            std::fs::read_to_string(&history).unwrap(),
        ),
        ("execution output", e.output.to_string()),
        ("runner progress", e.progress.clone()),
        (
            "rotate-local report",
            String::from_utf8_lossy(&report.stdout).to_string()
                + &String::from_utf8_lossy(&report.stderr),
        ),
        (
            "PostgreSQL server log",
            std::fs::read_to_string(&c.stack.pg_log).unwrap(),
        ),
        ("this test's output", format!("{e:?} {after:?}")),
    ];
    let mut found = vec![];
    for (secret_name, secret) in [
        ("green's old password", &green_old),
        ("green's new password", &green_new),
        ("blue's password", &blue),
    ] {
        for form in [secret.expose().to_string(), url_encoded(secret.expose())] {
            for (channel, text) in &channels {
                if text.contains(&form) {
                    found.push(format!("{secret_name} in {channel}"));
                }
            }
        }
    }
    let sizes: Vec<String> = channels
        .iter()
        .map(|(n, t)| format!("{n}: {} bytes", t.len()))
        .collect();
    eprintln!("searched {}", sizes.join(", "));
    std::fs::remove_file(&history).ok();
    std::fs::remove_dir_all(&dir).ok();
    assert!(found.is_empty(), "secrets leaked: {found:?}");
}

/// What Secrets Manager's own rotation Lambda does to a user: a new
/// AWSCURRENT version and the same password in the database. Returns the
/// secret's ARN, as the RotationSucceeded event names it.
async fn rotate_externally(c: &Case, key: &str) -> String {
    let secret = c.target.secret_of(key).to_string();
    let role = c.target.role_of(key).to_string();
    let new = pgflip_core::password::PasswordPolicy::default().generate();
    c.stack
        .rotate_like_secrets_manager(&secret, &role, &new)
        .await;
    c.stack.secret_arn(&secret).await
}

#[tokio::test]
async fn after_secrets_managers_rotation_of_the_inactive_user_the_workflow_verifies_and_flips() {
    let c = case().await;
    let arn = rotate_externally(&c, "green").await;
    let rotated = c.stack.secret_state(&c.target.green_secret).await;
    let e = c.run(rotation_succeeded_event(&arn), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "flip");
    assert!(
        !e.states.iter().any(|s| s == "GenerateAndSetPassword"),
        "{:?}",
        e.states
    );
    let after = c.after().await;
    assert_eq!(after.active_user, "green");
    assert_eq!(after.green, rotated, "pgflip made another password");
    assert_eq!(after.blue, c.before.blue);
    c.stack
        .login(&c.target, "green", AWSCURRENT)
        .await
        .expect("green logs in");
    c.assert_redeployed(&after, "the workflow");
}

#[tokio::test]
async fn after_secrets_managers_rotation_of_the_active_user_the_workflow_redeploys_and_fails_loudly(
) {
    let c = case().await;
    let arn = rotate_externally(&c, "blue").await;
    let e = c.run(rotation_succeeded_event(&arn), json!({}));
    assert_eq!(e.status, "FAILED");
    assert_eq!(
        e.error.as_deref(),
        Some("ActiveUserRotatedExternally"),
        "{:?}",
        e.cause
    );
    assert_eq!(e.output, Value::Null);
    assert!(
        e.states.iter().any(|s| s == "RedeployEcs")
            && !e.states.iter().any(|s| s == "FlipParameter")
    );
    let after = c.after().await;
    assert_eq!(after.active_user, "blue");
    assert_eq!(after.green, c.before.green, "the inactive user was touched");
    c.assert_redeployed(&after, "the workflow");
    assert_eq!(c.assert_invariant().await, "blue");
}

// ------------------------------------------- many targets, two password stores

/// Asserts that the target rotated its inactive (green) user once: the
/// parameter names green, green's current version is new and logs in, blue
/// is untouched and still logs in.
async fn assert_target_rotated(stack: &Stack, t: &Target, before: &Snapshot) -> Snapshot {
    let after = stack.snapshot(t).await;
    assert_eq!(after.active_user, t.key("green"), "{:?}", t.name);
    assert_ne!(after.green.current, before.green.current, "{:?}", t.name);
    assert_eq!(after.green.pending, None, "{:?}", t.name);
    assert_eq!(after.blue, before.blue, "{:?}: blue changed", t.name);
    assert_eq!(
        stack.invariant(t).await.as_deref(),
        Ok(t.key("green").as_str())
    );
    stack
        .login(t, &t.key("blue"), AWSCURRENT)
        .await
        .expect("the previous user still logs in");
    after
}

#[tokio::test]
async fn two_targets_from_one_deployment_one_keeping_bare_passwords_in_ssm() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let orders = Target::unique_named("tgt_sm", "orders");
    let legacy = Target::unique_in_ssm("tgt_ssm", "legacy");
    for t in [&orders, &legacy] {
        stack.seed(t).await;
        stack.register_target(t).await;
    }
    let before = (stack.snapshot(&orders).await, stack.snapshot(&legacy).await);
    let run = |t: &Target, scenario: Value| {
        let stack = stack.clone();
        let input = t.input();
        std::thread::spawn(move || run_quick(&stack, input, scenario, RunOptions::default()))
    };

    // Both targets at once: each target has its own guard.
    let (a, b) = (run(&orders, json!({})), run(&legacy, json!({})));
    for (t, e) in [(&orders, a.join().unwrap()), (&legacy, b.join().unwrap())] {
        assert_eq!(
            e.status, "SUCCEEDED",
            "{:?}: {:?} {:?}",
            t.name, e.error, e.cause
        );
        assert_eq!(e.output["target"], json!(t.name), "{}", e.output);
    }
    assert_target_rotated(&stack, &orders, &before.0).await;
    let after = assert_target_rotated(&stack, &legacy, &before.1).await;
    // The SSM store: a new version, still a bare password (what the tasks
    // read without a label), labelled current; the old one kept as previous.
    assert_eq!(after.green.versions, 2);
    let latest = stack.parameter_latest(&legacy.green_secret).await;
    assert!(!latest.expose().starts_with('{'), "written back as JSON");
    let mut written = vec![latest];

    // Two executions of the same target: the later one stops at SelectUser.
    let slow = run(
        &legacy,
        json!({"tasks": {"GenerateAndSetPassword": [{"delayMs": 2500}]}}),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second = run(&legacy, json!({})).join().unwrap();
    assert_eq!(
        second.error.as_deref(),
        Some("RotationInProgress"),
        "{:?}",
        second.cause
    );
    assert_eq!(second.states, ["SelectUser"]);
    let first = slow.join().unwrap();
    assert_eq!(
        first.status, "SUCCEEDED",
        "{:?}: {:?}",
        first.error, first.cause
    );
    // That rotation rotated blue (green is active) and flipped to it.
    assert_eq!(stack.active_user(&legacy).await, legacy.key("blue"));
    written.push(stack.parameter_latest(&legacy.blue_secret).await);
    let mut outputs = vec![first.progress.clone(), first.output.to_string()];
    assert_eq!(
        stack.invariant(&legacy).await.as_deref(),
        Ok(legacy.key("blue").as_str())
    );

    // Resume and rollback work the same on the SSM store: a crash after
    // staging is resumed (same version), a failed rollout flips back.
    let before = stack.snapshot(&legacy).await;
    let crashed = run(
        &legacy,
        json!({"tasks": {"GenerateAndSetPassword": [{"throwAfter": {"error": "Lambda.Unknown", "cause": "crashed after the side effect (injected)"}}]}}),
    )
    .join()
    .unwrap();
    assert_eq!(crashed.status, "FAILED");
    let staged = stack.snapshot(&legacy).await.green.pending.expect("staged");
    assert_eq!(
        stack.invariant(&legacy).await.as_deref(),
        Ok(legacy.key("blue").as_str()),
        "a pending version must not change what the active user's tasks read"
    );
    let rolled_back = run(
        &legacy,
        json!({"tasks": {"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "web=FAILED (injected)"}}]}}),
    )
    .join()
    .unwrap();
    assert_eq!(
        rolled_back.error.as_deref(),
        Some("RotationRolledBack"),
        "{:?}",
        rolled_back.cause
    );
    let after = stack.snapshot(&legacy).await;
    assert_eq!(
        after.green.current, staged,
        "the staged version was resumed, not replaced"
    );
    assert_eq!(after.green.versions, before.green.versions + 1);
    assert_eq!(after.active_user, legacy.key("blue"), "flipped back");
    assert_eq!(after.blue, before.blue);
    assert_eq!(
        stack.invariant(&legacy).await.as_deref(),
        Ok(legacy.key("blue").as_str())
    );
    // Green was verified before the flip: it logs in with what tasks read.
    stack
        .login(&legacy, &legacy.key("green"), AWSCURRENT)
        .await
        .expect("green logs in");
    written.push(stack.parameter_latest(&legacy.green_secret).await);

    // The SSM store's passwords, like Secrets Manager's, reach no log or output.
    let log =
        std::path::PathBuf::from(std::env::var("PGFLIP_STACK_DIR").unwrap()).join("lambda.log");
    outputs.push(String::from_utf8_lossy(&std::fs::read(log).unwrap()).to_string());
    outputs.extend([crashed.progress, rolled_back.progress]);
    for password in &written {
        assert!(
            outputs.iter().all(|o| !o.contains(password.expose())),
            "a password of the SSM store was logged or output"
        );
    }
}

#[tokio::test]
async fn a_sweep_rotates_one_servers_targets_one_after_another_and_a_failed_one_does_not_stop_the_rest(
) {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let default = Target::local();
    let a = Target::unique_named("sweep_a", "sweep-a");
    let b = Target::unique_in_ssm("sweep_b", "sweep-b");
    stack.seed(&default).await;
    for t in [&a, &b] {
        stack.seed(t).await;
        stack.register_in_registry(t).await;
    }
    let sweep = |targets: Value, scenario: Value| {
        run_quick(
            &stack,
            json!({ "targets": targets }),
            scenario,
            RunOptions {
                definition: Some(pgflip_tests::repo_root().join("statemachine/sweep.asl.json")),
                ..RunOptions::default()
            },
        )
    };

    let before = [
        stack.snapshot(&default).await,
        stack.snapshot(&a).await,
        stack.snapshot(&b).await,
    ];
    let e = sweep(json!(["default", "sweep-a", "sweep-b"]), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    let order: Vec<&str> = e.children.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(order, ["default", "sweep-a", "sweep-b"]);
    // Each rotation is an execution of its own.
    let names: std::collections::BTreeSet<&str> =
        e.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{:?}", e.children);
    for pair in e.children.windows(2) {
        assert!(
            pair[0].ended_ms <= pair[1].started_ms,
            "{} started before {} ended",
            pair[1].target,
            pair[0].target
        );
    }
    for (t, before) in [&default, &a, &b].into_iter().zip(&before) {
        assert_target_rotated(&stack, t, before).await;
    }

    // sweep-a's rotation fails (before anything changes); sweep-b still rotates.
    let before_a = stack.snapshot(&a).await;
    let e = sweep(
        json!(["sweep-a", "sweep-b"]),
        json!({"children": {"sweep-a": {"tasks": {"SelectUser": [
            {"throw": {"error": "PrivilegeDrift", "cause": "injected"}}]}}}}),
    );
    assert_eq!(e.status, "FAILED");
    assert_eq!(e.error.as_deref(), Some("SweepIncomplete"));
    let cause = e.cause.clone().unwrap_or_default();
    assert!(
        cause.starts_with("1 of 2 targets did not rotate (PrivilegeDrift 1, SUCCEEDED 1)"),
        "{cause}"
    );
    let outcomes: Vec<(&str, &str)> = e
        .children
        .iter()
        .map(|c| (c.target.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(outcomes, [("sweep-a", "FAILED"), ("sweep-b", "SUCCEEDED")]);
    assert_eq!(stack.snapshot(&a).await, before_a, "sweep-a changed");
    assert_eq!(
        stack.active_user(&b).await,
        b.key("blue"),
        "sweep-b rotated again"
    );
    assert_eq!(
        stack.invariant(&b).await.as_deref(),
        Ok(b.key("blue").as_str())
    );

    // Every registered target whose name starts "sweep-" (one registry
    // parameter each): a broken entry is refused alone, the others rotate,
    // and the summary names it.
    let broken = format!("{}/sweep-broken", pgflip_tests::TARGETS_REGISTRY);
    stack
        .ssm
        .put_parameter()
        .name(&broken)
        .value(r#"{"cluster": 5}"#)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let before = [stack.snapshot(&a).await, stack.snapshot(&b).await];
    let e = sweep(json!(["sweep-*"]), json!({}));
    stack
        .ssm
        .delete_parameter()
        .name(&broken)
        .send()
        .await
        .unwrap();
    assert_eq!(e.error.as_deref(), Some("SweepIncomplete"), "{:?}", e.cause);
    let cause = e.cause.clone().unwrap_or_default();
    assert!(
        cause.starts_with("1 of 3 targets did not rotate (ConfigurationError 1, SUCCEEDED 2)"),
        "{cause}"
    );
    for (t, before) in [&a, &b].into_iter().zip(&before) {
        let after = stack.snapshot(t).await;
        assert_ne!(after.active_user, before.active_user, "{:?}", t.name);
        let now = if after.active_user == t.key("blue") {
            "blue"
        } else {
            "green"
        };
        assert_ne!(
            after.secret(now).current,
            before.secret(now).current,
            "{:?}",
            t.name
        );
        assert_eq!(
            stack.invariant(t).await.as_deref(),
            Ok(after.active_user.as_str())
        );
    }
}

/// One sweep at a time (issue 14): a sweep started while another one runs
/// fails SweepInProgress at PlanSweep and starts no rotation; the first one
/// ends as if alone.
#[tokio::test]
async fn a_second_sweep_while_one_runs_starts_no_rotation() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = Target::unique_named("guard_c", "guarded-c");
    stack.seed(&t).await;
    stack.register_in_registry(&t).await;
    let sweep = |scenario: Value| {
        run_quick(
            &stack,
            json!({ "targets": ["guarded-c"] }),
            scenario,
            RunOptions {
                definition: Some(pgflip_tests::repo_root().join("statemachine/sweep.asl.json")),
                ..RunOptions::default()
            },
        )
    };
    let before = stack.snapshot(&t).await;
    let (first, second) = std::thread::scope(|scope| {
        // The first sweep's rotation takes 6 s longer at SelectUser.
        let first = scope.spawn(|| {
            sweep(
                json!({"children": {"guarded-c": {"tasks": {"SelectUser": [{"delayMs": 6000}]}}}}),
            )
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
        let second = sweep(json!({}));
        (first.join().unwrap(), second)
    });
    assert_eq!(second.status, "FAILED");
    assert_eq!(
        second.error.as_deref(),
        Some("SweepInProgress"),
        "{:?}",
        second.cause
    );
    assert!(
        second.children.is_empty(),
        "the second sweep started a rotation"
    );
    assert_eq!(
        first.status, "SUCCEEDED",
        "{:?}: {:?}",
        first.error, first.cause
    );
    let after = stack.snapshot(&t).await;
    assert_ne!(
        after.active_user, before.active_user,
        "the first sweep rotated once"
    );
    assert_eq!(
        stack.invariant(&t).await.as_deref(),
        Ok(after.active_user.as_str())
    );
}

/// The registry (issue 14): one parameter per target under `TARGETS_PATH`;
/// adding a target is writing its parameter. A broken entry fails only its
/// own target, with nothing changed.
#[tokio::test]
async fn targets_registered_one_parameter_each_rotate_by_name_and_fail_alone() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let fleet = Target::unique_named("reg_a", &format!("reg-a-{}", std::process::id()));
    stack.seed(&fleet).await;
    stack.register_in_registry(&fleet).await;
    let before = stack.snapshot(&fleet).await;
    let e = run_quick(&stack, fleet.input(), json!({}), RunOptions::default());
    assert_eq!(
        e.status, "SUCCEEDED",
        "{:?}: {:?}\n{}",
        e.error, e.cause, e.progress
    );
    assert_eq!(e.output["target"], json!(fleet.name));
    assert_target_rotated(&stack, &fleet, &before).await;

    // A broken entry: named, ConfigurationError, at SelectUser, nothing changed.
    let broken = format!("reg-broken-{}", std::process::id());
    stack
        .ssm
        .put_parameter()
        .name(format!("{}/{broken}", pgflip_tests::TARGETS_REGISTRY))
        .value(json!({"activeUserParameter": "/x", "cluster": "x"}).to_string())
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let e = run_quick(
        &stack,
        json!({"target": broken}),
        json!({}),
        RunOptions::default(),
    );
    assert_eq!(
        e.error.as_deref(),
        Some("ConfigurationError"),
        "{:?}",
        e.cause
    );
    assert!(e.cause.unwrap_or_default().contains(&broken));
    assert_eq!(e.states, ["SelectUser"]);
    // The good one still rotates (back to blue).
    let again = run_quick(&stack, fleet.input(), json!({}), RunOptions::default());
    assert_eq!(
        again.status, "SUCCEEDED",
        "{:?}: {:?}",
        again.error, again.cause
    );
    assert_eq!(stack.active_user(&fleet).await, fleet.key("blue"));
}
