use serde_json::json;

use super::*;
use crate::config::{TargetConfig, Targets};
use crate::domain::*;
use crate::errors::RotationError;
use crate::fakes::*;
use crate::password::Password;
use crate::password::PasswordPolicy;
use crate::ports::*;

const PARAM: &str = "/app/db/active-user";
const BLUE_SECRET: &str = "app/db/blue";
const GREEN_SECRET: &str = "app/db/green";
const GRANTS: &[&str] = &["member of app_owner", "CONNECT on database app"];

struct World {
    config: TargetConfig,
    targets: Targets,
    parameters: FakeParameters,
    secrets: FakeSecrets,
    database: FakeDatabase,
    deployments: FakeDeployments,
    executions: FakeExecutions,
    proxies: FakeProxies,
    policy: PasswordPolicy,
    setter: PasswordSetter,
}

const ME: &str = "arn:aws:states:us-east-1:123456789012:execution:rotation:exec-1";

fn secret_json(user: &str, password: &str) -> String {
    json!({"engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": "app", "username": user, "password": password}).to_string()
}

fn world() -> World {
    let config = TargetConfig {
        parameter_name: PARAM.into(),
        blue_user: "blue".into(),
        green_user: "green".into(),
        blue_secret_id: BLUE_SECRET.into(),
        green_secret_id: GREEN_SECRET.into(),
        cluster: "app".into(),
        services: Services::Listed(vec!["web".into(), "worker".into()]),
        unlisted_consumers: UnlistedConsumers::Error,
        stable_poll_seconds: 10,
        stable_timeout_seconds: 95,
        name: None,
        password_store: StoreKind::SecretsManager,
        connection: Connection::default(),
        readers: vec![],
        proxy_name: None,
        allow_different_endpoints: false,
        valid_until_margin_days: 45,
        admin_secret_id: None,
        layout: PointerLayout::Parameter,
    };
    let secrets = FakeSecrets::default();
    secrets.add(BLUE_SECRET, "blue-v1", &secret_json("blue", "blue-pass-1"));
    secrets.add(
        GREEN_SECRET,
        "green-v1",
        &secret_json("green", "green-pass-1"),
    );
    let database = FakeDatabase::default();
    database.add_user("blue", "blue-pass-1", GRANTS);
    database.add_user("green", "green-pass-1", GRANTS);
    // The parameter was set, then the services deployed: they are up to date.
    let parameters = FakeParameters::with(PARAM, "blue");
    let deployments = FakeDeployments::with_services("app", &["web", "worker"]);
    let executions = FakeExecutions::default();
    executions.start(ME);
    World {
        config,
        targets: Targets::default(),
        parameters,
        secrets,
        database,
        deployments,
        executions,
        proxies: FakeProxies::default(),
        policy: PasswordPolicy::default(),
        setter: PasswordSetter::SelfService,
    }
}

/// A look that found the rollout still rolling out (a normal outcome, not
/// an error): what it saw.
fn in_progress(look: Result<Rollout, RotationError>) -> String {
    let rollout = look.expect("a rollout in progress is not an error");
    assert_eq!(rollout.status, RolloutStatus::InProgress);
    rollout.summary()
}

fn request(input: serde_json::Value) -> SelectRequest {
    SelectRequest {
        input,
        execution_id: ME.into(),
        execution_name: "exec-1".into(),
    }
}

impl World {
    /// Secrets Manager's rotation Lambda changed green: a new version
    /// `sm-rotation` with `password`, made current, and the same password
    /// set in the database.
    async fn green_rotated_by_secrets_manager(&self, password: &str) {
        let value = secret_json("green", password);
        self.secrets
            .put_pending(GREEN_SECRET, "sm-rotation", &Password::new(value))
            .await
            .unwrap();
        self.secrets
            .promote(GREEN_SECRET, "sm-rotation")
            .await
            .unwrap();
        self.database.set_password("green", password);
    }

    /// A new deployment of every service, rolled out (a release, or the
    /// redeploy of an earlier rotation).
    async fn release(&self) {
        for service in ["web", "worker"] {
            self.deployments
                .force_new_deployment("app", service)
                .await
                .unwrap();
        }
        self.deployments.set_primary_state("app", "COMPLETED");
    }

    async fn select(&self, input: serde_json::Value) -> Result<Plan, RotationError> {
        self.select_as(request(input)).await
    }

    /// Resolves the target as the select-user binary does, then selects.
    async fn select_as(&self, request: SelectRequest) -> Result<Plan, RotationError> {
        let target =
            resolve_target(&self.targets, &self.config, &request, &self.parameters).await?;
        select_user(
            &target,
            &request,
            &self.parameters,
            &self.secrets,
            &self.database,
            &self.deployments,
            &self.executions,
            &self.proxies,
            &self.deployments,
        )
        .await
    }

    async fn generate(&self, plan: &Plan) -> Result<PendingPassword, RotationError> {
        generate_and_set_password(
            plan,
            &self.policy,
            &self.setter,
            &self.parameters,
            &self.secrets,
            &self.database,
        )
        .await
    }

    async fn verify(
        &self,
        plan: &Plan,
        pending: &PendingPassword,
    ) -> Result<Verified, RotationError> {
        verify_login(
            plan,
            pending,
            &self.parameters,
            &self.secrets,
            &self.database,
        )
        .await
    }

    async fn flip(&self, to: &str) -> Result<Flipped, RotationError> {
        flip_parameter(
            &FlipRequest {
                parameter_name: PARAM.into(),
                users: self.config.users(),
                to: to.into(),
                pointer: PointerLayout::Parameter,
                version_id: None,
            },
            &self.parameters,
            &self.secrets,
        )
        .await
    }

    async fn redeploy(&self, plan: &Plan) -> Result<Rollout, RotationError> {
        let request = RedeployRequest {
            cluster: plan.cluster.clone(),
            services: plan.services.clone(),
            stable_poll_seconds: plan.stable_poll_seconds,
            stable_timeout_seconds: plan.stable_timeout_seconds,
            alert: plan.alert.clone(),
        };
        redeploy_ecs(&request, &self.deployments).await
    }

    /// The invariant: the user the parameter names logs in with its AWSCURRENT password.
    fn invariant_holds(&self) -> bool {
        let active = self.parameters.value(PARAM).unwrap();
        let secret = self.config.secret_of(&active).unwrap();
        let password = self.secrets.password_at(secret, AWSCURRENT).unwrap();
        self.database.logs_in(&active, &password)
    }
}

#[tokio::test]
async fn a_full_rotation_changes_only_the_inactive_user() {
    let w = world();
    let plan = w
        .select(json!({"Comment": "Insert your JSON here"}))
        .await
        .unwrap();
    assert_eq!(
        (plan.previous_user.as_str(), plan.target_user.as_str()),
        ("blue", "green")
    );
    assert_eq!(plan.target_secret_id, GREEN_SECRET);
    assert_eq!(plan.services, vec!["web", "worker"]);
    assert_eq!(plan.stable_timeout_seconds, 95);
    assert_eq!(plan.client_request_token.len(), 32);
    assert!(w.invariant_holds());

    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed);
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSPENDING).as_deref(),
        Some(pending.version_id.as_str())
    );
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
        Some("green-v1")
    );
    let new_password = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert_ne!(new_password, "green-pass-1");
    assert!(w.database.logs_in("green", &new_password));
    assert!(!w.database.users.lock().unwrap()["green"].saw_plaintext);
    assert!(w.invariant_holds(), "blue is still active and untouched");

    let verified = w.verify(&plan, &pending).await.unwrap();
    assert!(!verified.already_current);
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT),
        Some(pending.version_id.clone())
    );
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, "AWSPREVIOUS").as_deref(),
        Some("green-v1")
    );
    assert_eq!(w.secrets.version_at(GREEN_SECRET, AWSPENDING), None);

    let flipped = w.flip(&plan.target_user).await.unwrap();
    assert_eq!((flipped.was.as_str(), flipped.changed), ("blue", true));
    assert_eq!(w.parameters.value(PARAM).as_deref(), Some("green"));
    assert!(w.invariant_holds());

    let rollout = w.redeploy(&plan).await.unwrap();
    assert_eq!(rollout.deployments.len(), 2);
    assert_eq!(*w.deployments.forced.lock().unwrap(), vec!["web", "worker"]);
    let now = crate::steps::now_ms();
    assert!(rollout.deadline_ms >= now + 94_000 && rollout.deadline_ms <= now + 95_000);
    let err = in_progress(wait_for_stable(&rollout, &w.deployments, now).await);
    assert!(err.to_string().contains("web=IN_PROGRESS"), "{err}");
    w.deployments.set_primary_state("app", "COMPLETED");
    let polled = wait_for_stable(&rollout, &w.deployments, now)
        .await
        .unwrap();
    assert_eq!(polled.status, RolloutStatus::Completed);
    assert_eq!(
        polled.deployments[0].rollout_state.as_deref(),
        Some("COMPLETED")
    );

    // Blue was never touched.
    assert_eq!(
        w.database.password_of("blue").as_deref(),
        Some("blue-pass-1")
    );
    assert_eq!(w.secrets.version_count(BLUE_SECRET), 1);
    assert_eq!(*w.database.password_changes.lock().unwrap(), 1);
}

#[tokio::test]
async fn the_next_rotation_rotates_the_other_user() {
    let w = world();
    // An earlier rotation flipped to green and rolled out completely.
    w.parameters.put(PARAM, "green").await.unwrap();
    w.release().await;
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
    assert_eq!(
        (plan.previous_user.as_str(), plan.target_user.as_str()),
        ("green", "blue")
    );
    assert_eq!(plan.target_secret_id, BLUE_SECRET);
}

#[tokio::test]
async fn input_overrides_services_and_sets_dry_run() {
    let w = world();
    let plan = w
        .select(json!({"services": ["web"], "dryRun": true, "reason": "audit"}))
        .await
        .unwrap();
    assert_eq!(plan.services, vec!["web"]);
    assert!(plan.dry_run);
    assert_eq!(plan.reason.as_deref(), Some("audit"));
    let err = w.select(json!({"services": []})).await.unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
}

#[tokio::test]
async fn preflight_rejects_bad_state_before_anything_changes() {
    let w = world();
    w.parameters.put(PARAM, "purple").await.unwrap();
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "InvalidActiveUser"
    );

    let w = world();
    w.parameters.values.lock().unwrap().clear();
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "ParameterNotFound"
    );

    let w = world();
    w.database.users.lock().unwrap().remove("green");
    assert_eq!(
        w.select(json!({})).await.unwrap_err(),
        RotationError::UserNotFound("green".into())
    );

    let w = world();
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("green")
        .unwrap()
        .grants
        .push("SELECT on table public.extra".into());
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "PrivilegeDrift");
    assert!(
        err.to_string()
            .contains("only \"green\": SELECT on table public.extra"),
        "{err}"
    );

    let w = world();
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("green")
        .unwrap()
        .live_sessions = 2;
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(err.is_retryable());

    let w = world();
    w.secrets
        .secrets
        .lock()
        .unwrap()
        .get_mut(GREEN_SECRET)
        .unwrap()[0]
        .value = "{oops".into();
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "SecretMalformed"
    );

    let w = world();
    w.secrets.secrets.lock().unwrap().remove(GREEN_SECRET);
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "SecretNotFound"
    );

    let w = world();
    w.database.faults.push(
        "user_facts",
        RotationError::DatabaseUnavailable("refused".into()),
    );
    assert!(w.select(json!({})).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_replayed_generate_resumes_the_pending_version() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let first = w.generate(&plan).await.unwrap();
    let password = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    // Same execution replayed, and a new execution: both resume, neither makes a version.
    let again = w.generate(&plan).await.unwrap();
    let mut other = plan.clone();
    other.client_request_token = client_request_token("another-execution");
    let third = w.generate(&other).await.unwrap();
    for p in [&again, &third] {
        assert!(p.resumed);
        assert_eq!(p.version_id, first.version_id);
    }
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 2);
    assert_eq!(
        w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap(),
        password
    );
    assert!(w.database.logs_in("green", &password));
}

#[tokio::test]
async fn generate_resumes_when_the_database_change_was_lost() {
    // Crash after staging, before ALTER ROLE: the replay sets the staged password.
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    w.database.faults.push(
        "set_own_password",
        RotationError::DatabaseUnavailable("reset".into()),
    );
    assert_eq!(
        w.generate(&plan).await.unwrap_err().name(),
        "DatabaseUnavailable"
    );
    assert!(w.database.logs_in("green", "green-pass-1"));
    let p = w.generate(&plan).await.unwrap();
    assert!(p.resumed);
    let staged = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(w.database.logs_in("green", &staged));
}

#[tokio::test]
async fn preflight_rejects_an_inactive_user_whose_password_does_not_work() {
    let w = world();
    w.database.set_password("green", "changed-behind-our-back");
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
    assert!(err.to_string().contains("inactive user"), "{err}");
    assert!(!err.to_string().contains("changed-behind"), "{err}");
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 1);
}

#[tokio::test]
async fn preflight_accepts_a_pending_password_already_set() {
    // Crash after ALTER ROLE, before promotion: only AWSPENDING logs in now.
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    w.generate(&plan).await.unwrap();
    let again = w.select(json!({})).await.unwrap();
    assert_eq!(again.mode, Mode::Rotate);
    assert!(w.generate(&again).await.unwrap().resumed);
}

#[tokio::test]
async fn generate_fails_when_no_known_password_logs_in() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    w.database.set_password("green", "changed-behind-our-back");
    let err = w.generate(&plan).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
    assert!(err.to_string().contains("neither"));
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn verify_rejects_a_password_that_does_not_log_in_and_promotes_nothing() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    w.database.set_password("green", "someone-else");
    let err = w.verify(&plan, &pending).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
        Some("green-v1")
    );
    assert_eq!(w.parameters.value(PARAM).as_deref(), Some("blue"));
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn a_replayed_verify_is_a_no_op() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    w.verify(&plan, &pending).await.unwrap();
    let again = w.verify(&plan, &pending).await.unwrap();
    assert!(again.already_current);
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT),
        Some(pending.version_id)
    );
}

#[tokio::test]
async fn verify_of_an_unknown_version_fails() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let err = w
        .verify(
            &plan,
            &PendingPassword {
                version_id: "nope".into(),
                resumed: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
}

#[tokio::test]
async fn flip_is_idempotent_and_checks_the_user() {
    let w = world();
    assert!(w.flip("green").await.unwrap().changed);
    let again = w.flip("green").await.unwrap();
    assert!(!again.changed);
    assert_eq!(*w.parameters.puts.lock().unwrap(), 1);
    let back = w.flip("blue").await.unwrap();
    assert_eq!(
        (back.was.as_str(), back.active_user.as_str()),
        ("green", "blue")
    );
    assert_eq!(w.flip("purple").await.unwrap_err().name(), "InvalidInput");
    assert_eq!(w.parameters.value(PARAM).as_deref(), Some("blue"));
}

#[tokio::test]
async fn redeploy_names_a_missing_service() {
    let w = world();
    let mut plan = w.select(json!({})).await.unwrap();
    plan.services.push("ghost".into());
    let err = w.redeploy(&plan).await.unwrap_err();
    assert_eq!(err, RotationError::ServiceNotFound("app/ghost".into()));
}

#[tokio::test]
async fn redeploy_passes_throttling_on_as_retryable() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    w.deployments.faults.push(
        "force_new_deployment",
        RotationError::AwsUnavailable("ThrottlingException".into()),
    );
    assert!(w.redeploy(&plan).await.unwrap_err().is_retryable());
    assert!(w.redeploy(&plan).await.is_ok());
}

#[tokio::test]
async fn wait_reports_a_failed_rollout() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    w.deployments
        .services
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .get_mut("worker")
        .unwrap()[0]
        .rollout_state = Some("FAILED".into());
    let err = wait_for_stable(&rollout, &w.deployments, crate::steps::now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutFailed");
    assert!(err.to_string().contains("worker=FAILED"), "{err}");
}

#[tokio::test]
async fn a_newer_deployment_stands_for_ours() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    // Someone deploys again meanwhile; ours is replaced and the new one completes.
    w.deployments
        .force_new_deployment("app", "web")
        .await
        .unwrap();
    w.deployments
        .services
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .get_mut("web")
        .unwrap()
        .remove(1);
    w.deployments.set_primary_state("app", "COMPLETED");
    let polled = wait_for_stable(&rollout, &w.deployments, crate::steps::now_ms())
        .await
        .unwrap();
    assert_eq!(polled.status, RolloutStatus::Completed);
}

#[test]
fn tokens_are_stable_per_execution() {
    assert_eq!(client_request_token("a"), client_request_token("a"));
    assert_ne!(client_request_token("a"), client_request_token("b"));
    assert!(client_request_token("a")
        .chars()
        .all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn a_second_execution_fails_fast_and_reads_nothing() {
    let w = world();
    // Another execution started before ours and is still running.
    w.executions.running.lock().unwrap().clear();
    w.executions
        .start("arn:aws:states:us-east-1:123456789012:execution:rotation:scheduled");
    w.executions.start(ME);
    w.parameters.faults.push(
        "get",
        RotationError::AwsRequestFailed("must not be read".into()),
    );
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "RotationInProgress");
    assert!(err.to_string().contains("scheduled"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_first_execution_wins_and_finished_ones_do_not_count() {
    let w = world();
    // A later one is running too: we started first, we go on.
    w.executions
        .start("arn:aws:states:us-east-1:123456789012:execution:rotation:later");
    assert!(w.select(json!({})).await.is_ok());
    // One that started first has stopped (crashed, failed, aborted): not running.
    let w = world();
    w.executions.running.lock().unwrap().clear();
    w.executions
        .start("arn:aws:states:us-east-1:123456789012:execution:rotation:crashed");
    w.executions.start(ME);
    w.executions
        .stop("arn:aws:states:us-east-1:123456789012:execution:rotation:crashed");
    assert!(w.select(json!({})).await.is_ok());
    // Not listed yet ourselves: anything listed counts as earlier.
    let w = world();
    w.executions.running.lock().unwrap().clear();
    w.executions
        .start("arn:aws:states:us-east-1:123456789012:execution:rotation:other");
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "RotationInProgress"
    );
}

#[tokio::test]
async fn an_interrupted_flip_is_finished_not_rotated_again() {
    let w = world();
    // An earlier rotation promoted green and flipped, then died before redeploying.
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    w.verify(&plan, &pending).await.unwrap();
    w.flip("green").await.unwrap();
    // Old tasks still use blue: rotating blue now would break them.
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("blue")
        .unwrap()
        .live_sessions = 4;

    let finish = w.select(json!({})).await.unwrap();
    assert_eq!(finish.mode, Mode::Redeploy);
    assert_eq!(
        (finish.previous_user.as_str(), finish.target_user.as_str()),
        ("blue", "green")
    );
    assert_eq!(finish.target_secret_id, GREEN_SECRET);
    assert_eq!(finish.rollout, None);
    let blue_before = w.database.password_of("blue");

    // Once the services are redeployed and stable, the next run rotates blue.
    w.redeploy(&finish).await.unwrap();
    w.deployments.set_primary_state("app", "COMPLETED");
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("blue")
        .unwrap()
        .live_sessions = 0;
    let next = w.select(json!({})).await.unwrap();
    assert_eq!(next.mode, Mode::Rotate);
    assert_eq!(next.target_user, "blue");
    assert_eq!(w.database.password_of("blue"), blue_before);
}

#[tokio::test]
async fn a_rollout_still_running_after_the_flip_is_waited_for() {
    let w = world();
    w.flip("green").await.unwrap();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
    let rollout = w.redeploy(&plan).await.unwrap();
    // The redeploy ran, the wait did not finish: the next run waits for those deployments.
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Wait);
    let waiting = plan.rollout.expect("the deployments to wait for");
    let ids = |r: &Rollout| {
        r.deployments
            .iter()
            .map(|d| d.deployment_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&waiting), ids(&rollout));
    assert!(waiting.deadline_ms > crate::steps::now_ms());
}

#[tokio::test]
async fn a_finish_needs_the_active_user_to_log_in() {
    let w = world();
    w.flip("green").await.unwrap();
    w.database.set_password("green", "broken");
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "LoginRejected"
    );
}

#[tokio::test]
async fn a_rotation_verified_but_not_flipped_is_flipped_not_rotated_again() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    w.verify(&plan, &pending).await.unwrap();
    // Crash before the flip. Green's sessions don't matter: its password stays.
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("green")
        .unwrap()
        .live_sessions = 1;
    let again = w.select(json!({})).await.unwrap();
    assert_eq!(again.mode, Mode::Flip);
    assert_eq!(
        (again.previous_user.as_str(), again.target_user.as_str()),
        ("blue", "green")
    );
    let carried = again.pending.clone().expect("the version to verify");
    assert_eq!(carried.version_id, pending.version_id);
    let verified = w.verify(&again, &carried).await.unwrap();
    assert!(verified.already_current);
    assert_eq!(
        w.secrets.version_count(GREEN_SECRET),
        2,
        "no second password was made"
    );
    // Privilege drift still stops it.
    w.database
        .users
        .lock()
        .unwrap()
        .get_mut("green")
        .unwrap()
        .grants
        .push("CREATE on schema public".into());
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "PrivilegeDrift"
    );
}

#[tokio::test]
async fn an_administrator_can_set_the_password_instead() {
    let mut w = world();
    w.secrets.add(
        "app/db/admin",
        "admin-v1",
        &secret_json("admin", "admin-pass"),
    );
    w.database
        .add_user("admin", "admin-pass", &["attribute CREATEROLE"]);
    w.setter = PasswordSetter::Admin {
        secret_id: "app/db/admin".into(),
    };
    // Even a user that could not log in with its own password gets rotated.
    w.database.set_password("green", "unknown-to-us");
    let plan = plan_without_preflight(&w).await;
    let pending = w.generate(&plan).await.unwrap();
    let staged = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(w.database.logs_in("green", &staged));
    // A replay sets the same password again: harmless, no second version.
    let again = w.generate(&plan).await.unwrap();
    assert_eq!(again.version_id, pending.version_id);
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 2);
    w.verify(&plan, &pending).await.unwrap();
    assert!(w.invariant_holds());
}

#[tokio::test]
async fn an_administrator_without_rights_is_a_named_error() {
    let mut w = world();
    w.secrets.add(
        "app/db/admin",
        "admin-v1",
        &secret_json("admin", "admin-pass"),
    );
    w.database.add_user("admin", "admin-pass", &[]);
    w.setter = PasswordSetter::Admin {
        secret_id: "app/db/admin".into(),
    };
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(
        w.generate(&plan).await.unwrap_err().name(),
        "PasswordChangeNotAllowed"
    );
    w.setter = PasswordSetter::Admin {
        secret_id: "app/db/missing".into(),
    };
    assert_eq!(
        w.generate(&plan).await.unwrap_err().name(),
        "SecretNotFound"
    );
    assert!(w.invariant_holds());
}

/// The plan select-user would make, for cases its preflight would refuse.
async fn plan_without_preflight(w: &World) -> Plan {
    let saved = w.database.password_of("green").unwrap();
    w.database.set_password("green", "green-pass-1");
    let plan = w.select(json!({})).await.unwrap();
    w.database.set_password("green", &saved);
    plan
}

#[tokio::test]
async fn services_that_ecs_cannot_force_deploy_stop_the_rotation_first() {
    let w = world();
    w.deployments
        .controllers
        .lock()
        .unwrap()
        .insert("worker".into(), "CODE_DEPLOY".into());
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "UnsupportedDeploymentController");
    assert!(
        err.to_string().contains("app/worker (CODE_DEPLOY)"),
        "{err}"
    );
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 1);
    // Leaving it out of this execution's services works.
    let plan = w.select(json!({"services": ["web"]})).await.unwrap();
    assert_eq!(plan.services, vec!["web"]);
}

fn rotation_event(secret: &str) -> serde_json::Value {
    json!({
        "version": "0", "detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
        "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                   "additionalEventData": {"SecretId": secret}}
    })
}

#[tokio::test]
async fn secrets_managers_rotation_of_the_inactive_user_is_verified_and_flipped() {
    let w = world();
    w.green_rotated_by_secrets_manager("set-by-secrets-manager")
        .await;
    let plan = w
        .select(rotation_event(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-AbCdEf",
        ))
        .await
        .unwrap();
    assert_eq!(plan.mode, Mode::Flip);
    assert_eq!(plan.target_user, "green");
    assert_eq!(plan.alert, None);
    assert_eq!(plan.pending.as_ref().unwrap().version_id, "sm-rotation");
    assert!(
        w.verify(&plan, plan.pending.as_ref().unwrap())
            .await
            .unwrap()
            .already_current
    );
}

#[tokio::test]
async fn secrets_managers_rotation_of_the_active_user_redeploys_and_alerts() {
    let w = world();
    // No rotation since the flip to blue: a late or repeated event is no
    // alarm (the chaos soak's seed 7, scenarios 11 and 13).
    let stale = w.select(rotation_event("app/db/blue")).await.unwrap();
    assert_eq!((stale.mode, stale.alert.as_deref()), (Mode::Rotate, None));
    // Secrets Manager's rotation changed blue under the running tasks.
    let value = secret_json("blue", "blue-pass-sm");
    w.secrets
        .put_pending(BLUE_SECRET, "sm-blue", &Password::new(value))
        .await
        .unwrap();
    w.secrets.promote(BLUE_SECRET, "sm-blue").await.unwrap();
    w.database.set_password("blue", "blue-pass-sm");
    let plan = w.select(rotation_event("app/db/blue")).await.unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
    assert_eq!(plan.alert.as_deref(), Some("ActiveUserRotatedExternally"));
    // A rollback would flip to green, whose password is intact.
    assert_eq!(
        (plan.previous_user.as_str(), plan.target_user.as_str()),
        ("green", "blue")
    );
    let err = w
        .select(rotation_event(
            "arn:aws:secretsmanager:us-east-1:1:secret:someone/else-AbCdEf",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
}

#[tokio::test]
async fn a_rollout_past_its_deadline_times_out() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    let err = wait_for_stable(&rollout, &w.deployments, rollout.deadline_ms)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutTimedOut");
    // Completed beats the deadline: a rollout that made it is not timed out.
    w.deployments.set_primary_state("app", "COMPLETED");
    assert!(
        wait_for_stable(&rollout, &w.deployments, rollout.deadline_ms + 1)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_completed_rollout_with_an_alert_still_fails_loudly() {
    let w = world();
    let mut plan = w.select(rotation_event("app/db/blue")).await.unwrap();
    plan.alert = Some("ActiveUserRotatedExternally".into());
    let rollout = w.redeploy(&plan).await.unwrap();
    assert_eq!(
        rollout.alert.as_deref(),
        Some("ActiveUserRotatedExternally")
    );
    w.deployments.set_primary_state("app", "COMPLETED");
    let err = wait_for_stable(&rollout, &w.deployments, crate::steps::now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ActiveUserRotatedExternally");
}

#[tokio::test]
async fn finishing_a_rollout_needs_the_rollback_user_to_log_in_too() {
    let w = world();
    w.flip("green").await.unwrap();
    // Blue is what a failed rollout would flip back to.
    w.database.set_password("blue", "broken");
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
    assert!(err.to_string().contains("\"blue\""), "{err}");
}

// ------------------------------------------------- bare passwords (SSM store)

/// The world of setup (a): each password parameter holds just the password.
fn bare_world() -> World {
    let mut w = world();
    w.secrets.secrets.lock().unwrap().clear();
    w.secrets.add(BLUE_SECRET, "1", "blue-pass-1");
    w.secrets.add(GREEN_SECRET, "1", "green-pass-1");
    w.config.password_store = StoreKind::Ssm;
    w.config.connection = Connection {
        host: Some("127.0.0.1".into()),
        port: Some(5432),
        dbname: Some("app".into()),
    };
    w
}

#[tokio::test]
async fn bare_passwords_rotate_and_stay_bare() {
    let w = bare_world();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.password_store, StoreKind::Ssm);
    assert_eq!(plan.connection.dbname.as_deref(), Some("app"));
    let pending = w.generate(&plan).await.unwrap();
    let stored = w.secrets.value_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(
        !stored.starts_with('{') && stored != "green-pass-1",
        "written back as a bare password"
    );
    assert!(w.database.logs_in("green", &stored));
    w.verify(&plan, &pending).await.unwrap();
    w.flip(&plan.target_user).await.unwrap();
    assert!(w.invariant_holds());
    // The next one rotates blue the same way.
    let w2_plan = {
        w.redeploy(&plan).await.unwrap();
        w.deployments.set_primary_state("app", "COMPLETED");
        w.select(json!({})).await.unwrap()
    };
    assert_eq!(w2_plan.target_user, "blue");
}

#[tokio::test]
async fn a_bare_password_without_connection_settings_is_refused_before_any_change() {
    let mut w = bare_world();
    w.config.connection.host = None;
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "SecretMalformed");
    assert!(err.to_string().contains("DB_HOST"), "{err}");
    assert!(!err.to_string().contains("pass-1"), "{err}");
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 1);
}

// ------------------------------------------------------------- many targets

const TARGETS_DOC: &str = "/pgflip/targets";

fn targets_doc() -> serde_json::Value {
    json!({
        "orders": {
            "activeUserParameter": "/orders/db/active-user",
            "blueUser": "orders_blue", "greenUser": "orders_green",
            "blueSecretId": "orders/blue", "greenSecretId": "orders/green",
            "cluster": "orders", "services": ["api"],
            "passwordStore": "ssm", "dbHost": "127.0.0.1", "dbName": "orders"
        }
    })
}

/// The default target as in `world()`, plus "orders" in a targets document.
fn two_target_world() -> World {
    let mut w = world();
    w.targets.parameter_name = Some(TARGETS_DOC.into());
    w.parameters.set(TARGETS_DOC, &targets_doc().to_string());
    w.parameters.set("/orders/db/active-user", "orders_green");
    w.database.add_user("orders_blue", "orders-blue-1", GRANTS);
    w.database
        .add_user("orders_green", "orders-green-1", GRANTS);
    w.secrets.add("orders/blue", "1", "orders-blue-1");
    w.secrets.add("orders/green", "1", "orders-green-1");
    *w.deployments.services.lock().unwrap() = {
        let mut all = w.deployments.services.lock().unwrap().clone();
        let orders = FakeDeployments::with_services("orders", &["api"]);
        all.extend(orders.services.lock().unwrap().clone());
        all
    };
    w
}

#[tokio::test]
async fn an_execution_rotates_the_target_its_input_names() {
    let w = two_target_world();
    let plan = w.select(json!({"target": "orders"})).await.unwrap();
    assert_eq!(plan.target.as_deref(), Some("orders"));
    assert_eq!(plan.parameter_name, "/orders/db/active-user");
    assert_eq!(
        (plan.previous_user.as_str(), plan.target_user.as_str()),
        ("orders_green", "orders_blue")
    );
    assert_eq!(plan.target_secret_id, "orders/blue");
    assert_eq!(
        (plan.cluster.as_str(), plan.services.clone()),
        ("orders", vec!["api".to_string()])
    );
    assert_eq!(plan.password_store, StoreKind::Ssm);
    // Waits not given in the entry are the environment's.
    assert_eq!(plan.stable_timeout_seconds, 95);
    // Without a target: the environment's, as before.
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!((plan.target, plan.parameter_name.as_str()), (None, PARAM));
}

#[tokio::test]
async fn unknown_targets_and_bad_documents_are_named_and_change_nothing() {
    let w = two_target_world();
    let err = w.select(json!({"target": "billing"})).await.unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
    assert!(
        err.to_string().contains("\"billing\"") && err.to_string().contains("orders"),
        "{err}"
    );

    let mut w = two_target_world();
    w.targets.parameter_name = None;
    let err = w.select(json!({"target": "orders"})).await.unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
    assert!(err.to_string().contains("TARGETS_PARAMETER"), "{err}");

    for (doc, expect) in [
        (json!([1]).to_string(), "not a JSON object"),
        ("{not json".to_string(), "not a JSON object"),
        (
            json!({"orders": {"activeUserParameter": "/o"}}).to_string(),
            "missing field `cluster`",
        ),
        (
            {
                let mut d = targets_doc();
                d["orders"].as_object_mut().unwrap().remove("blueSecretId");
                d.to_string()
            },
            "blueSecretId is missing",
        ),
        (
            {
                let mut d = targets_doc();
                d["orders"]["alternatingSecretId"] = json!("orders/app");
                d.to_string()
            },
            "remove blueSecretId and greenSecretId",
        ),
        (
            {
                let mut d = targets_doc();
                d["orders"]["servces"] = json!(["typo"]);
                d.to_string()
            },
            "servces",
        ),
        (
            {
                let mut d = targets_doc();
                d["orders"]["activeUserParameter"] = json!(PARAM);
                d.to_string()
            },
            "its own",
        ),
    ] {
        let w = two_target_world();
        w.parameters.set(TARGETS_DOC, &doc);
        let err = w.select(json!({"target": "orders"})).await.unwrap_err();
        assert_eq!(err.name(), "ConfigurationError", "{doc}");
        assert!(
            err.to_string().contains(expect),
            "{err} should say {expect}"
        );
    }
    let w = two_target_world();
    w.parameters.values.lock().unwrap().remove(TARGETS_DOC);
    let err = w.select(json!({"target": "orders"})).await.unwrap_err();
    assert_eq!(err.name(), "ConfigurationError");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn the_guard_is_per_target() {
    let other = "arn:aws:states:us-east-1:123456789012:execution:rotation:earlier";
    let started_first = |input: serde_json::Value| {
        let w = two_target_world();
        w.executions.running.lock().unwrap().clear();
        w.executions.start_with(other, input);
        w.executions.start(ME);
        w
    };
    // An earlier execution of another target: both go on.
    let w = started_first(json!({"target": "orders"}));
    assert!(w.select(json!({})).await.is_ok());
    // Of the same target: the later one stops.
    let w = started_first(json!({"target": "orders"}));
    let err = w.select(json!({"target": "orders"})).await.unwrap_err();
    assert_eq!(err.name(), "RotationInProgress");
    let w = started_first(json!({"Comment": "from the console"}));
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "RotationInProgress"
    );
    // A sweep only starts executions; one with input its select-user refuses
    // changes nothing: neither counts.
    for input in [json!({"targets": ["orders"]}), json!({"dryRun": "yes"})] {
        let w = started_first(input);
        assert!(w.select(json!({})).await.is_ok());
    }
    // A sweep's input is not for select-user.
    let w = two_target_world();
    assert_eq!(
        w.select(json!({"targets": ["orders"]}))
            .await
            .unwrap_err()
            .name(),
        "InvalidInput"
    );
}

// ---------------------------------------------- ECS-native blue/green services

/// A world whose `web` service deploys blue/green; `worker` stays rolling.
fn blue_green_world() -> World {
    let w = world();
    w.deployments.blue_green("app", "web");
    w
}

/// One look at the rollout, now.
async fn look(w: &World, rollout: &Rollout) -> Result<Rollout, RotationError> {
    wait_for_stable(rollout, &w.deployments, crate::steps::now_ms()).await
}

/// The rolling `worker` service finishes its rollout.
fn worker_completes(w: &World) {
    w.deployments
        .services
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .get_mut("worker")
        .unwrap()[0]
        .rollout_state = Some("COMPLETED".into());
}

#[tokio::test]
async fn a_blue_green_rollout_completes_when_its_service_deployment_succeeds() {
    let w = blue_green_world();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate, "the last deployment succeeded");
    let rollout = w.redeploy(&plan).await.unwrap();
    worker_completes(&w);
    let stages = [
        "RECONCILE_SERVICE",
        "PRE_SCALE_UP",
        "SCALE_UP",
        "POST_SCALE_UP",
        "TEST_TRAFFIC_SHIFT",
        "POST_TEST_TRAFFIC_SHIFT",
        "PRODUCTION_TRAFFIC_SHIFT",
        "POST_PRODUCTION_TRAFFIC_SHIFT",
        "BAKE_TIME",
        "CLEAN_UP",
    ];
    let mut script: Vec<Step> = vec![("PENDING", None)];
    script.extend(stages.iter().map(|s| ("IN_PROGRESS", Some(*s))));
    script.push(("SUCCESSFUL", Some("CLEAN_UP")));
    w.deployments.script("web", &script);

    let err = in_progress(look(&w, &rollout).await);
    assert!(
        err.to_string().contains("web=IN_PROGRESS(PENDING)"),
        "{err}"
    );
    for stage in stages {
        // ECS's rolloutState for the blue/green deployment says COMPLETED
        // all along: only the service deployment counts.
        let err = in_progress(look(&w, &rollout).await);
        assert!(
            err.to_string()
                .contains(&format!("web=IN_PROGRESS({stage}), worker=COMPLETED")),
            "{err}"
        );
    }
    let done = look(&w, &rollout).await.unwrap();
    assert_eq!(done.status, RolloutStatus::Completed);
    assert_eq!(
        done.deployments[0].rollout_state.as_deref(),
        Some("COMPLETED")
    );
}

#[tokio::test]
async fn a_blue_green_rollout_that_ecs_rolls_back_or_stops_fails() {
    for status in [
        "ROLLBACK_REQUESTED",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_SUCCESSFUL",
        "ROLLBACK_FAILED",
        "STOP_REQUESTED",
        "STOPPED",
    ] {
        let w = blue_green_world();
        let plan = w.select(json!({})).await.unwrap();
        let rollout = w.redeploy(&plan).await.unwrap();
        worker_completes(&w);
        w.deployments.script(
            "web",
            &[
                ("IN_PROGRESS", Some("BAKE_TIME")),
                (status, Some("BAKE_TIME")),
            ],
        );
        in_progress(look(&w, &rollout).await);
        let err = look(&w, &rollout).await.unwrap_err();
        assert_eq!(err.name(), "RolloutFailed", "{status}: {err}");
        assert!(
            err.to_string().contains(&format!("web=FAILED({status})")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_blue_green_rollout_stuck_in_bake_time_times_out() {
    let w = blue_green_world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    worker_completes(&w);
    w.deployments
        .script("web", &[("IN_PROGRESS", Some("BAKE_TIME"))]);
    let before = rollout.deadline_ms - 1;
    in_progress(wait_for_stable(&rollout, &w.deployments, before).await);
    let err = wait_for_stable(&rollout, &w.deployments, rollout.deadline_ms)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutTimedOut");
    assert!(
        err.to_string().contains("web=IN_PROGRESS(BAKE_TIME)"),
        "{err}"
    );
}

#[tokio::test]
async fn rolling_and_blue_green_services_are_watched_together() {
    let w = blue_green_world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    // Blue/green done, rolling still going.
    w.deployments
        .script("web", &[("SUCCESSFUL", Some("CLEAN_UP"))]);
    let err = in_progress(look(&w, &rollout).await);
    assert!(
        err.to_string()
            .contains("web=COMPLETED, worker=IN_PROGRESS"),
        "{err}"
    );
    // Rolling done, blue/green baking.
    w.deployments
        .script("web", &[("IN_PROGRESS", Some("BAKE_TIME"))]);
    worker_completes(&w);
    let err = in_progress(look(&w, &rollout).await);
    assert!(
        err.to_string()
            .contains("web=IN_PROGRESS(BAKE_TIME), worker=COMPLETED"),
        "{err}"
    );
    // Both done.
    w.deployments
        .script("web", &[("SUCCESSFUL", Some("CLEAN_UP"))]);
    assert_eq!(
        look(&w, &rollout).await.unwrap().status,
        RolloutStatus::Completed
    );
    // A failed rolling service fails the rollout while blue/green still bakes.
    let rollout = w.redeploy(&plan).await.unwrap();
    w.deployments
        .script("web", &[("IN_PROGRESS", Some("BAKE_TIME"))]);
    w.deployments.set_primary_state("app", "FAILED");
    let err = look(&w, &rollout).await.unwrap_err();
    assert_eq!(err.name(), "RolloutFailed");
    assert!(
        err.to_string()
            .contains("web=IN_PROGRESS(BAKE_TIME), worker=FAILED"),
        "{err}"
    );
}

#[tokio::test]
async fn an_older_service_deployment_does_not_complete_ours() {
    let w = blue_green_world();
    let before = w.deployments.service_deployments.lock().unwrap()["web"].clone();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    worker_completes(&w);
    // ECS does not show ours yet: the current one is still the last, successful one.
    w.deployments
        .service_deployments
        .lock()
        .unwrap()
        .insert("web".into(), before);
    let err = in_progress(look(&w, &rollout).await);
    assert!(
        err.to_string()
            .contains("web=IN_PROGRESS(AWAITING_SERVICE_DEPLOYMENT)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_newer_blue_green_deployment_stands_for_ours() {
    let w = blue_green_world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    worker_completes(&w);
    // Someone deploys web again meanwhile; theirs succeeds.
    w.deployments
        .force_new_deployment("app", "web")
        .await
        .unwrap();
    w.deployments
        .script("web", &[("SUCCESSFUL", Some("CLEAN_UP"))]);
    assert_eq!(
        look(&w, &rollout).await.unwrap().status,
        RolloutStatus::Completed
    );
    // And when ECS rolls theirs back, ours failed too.
    w.deployments
        .script("web", &[("ROLLBACK_SUCCESSFUL", Some("BAKE_TIME"))]);
    assert_eq!(
        look(&w, &rollout).await.unwrap_err().name(),
        "RolloutFailed"
    );
}

#[tokio::test]
async fn a_replay_after_the_flip_follows_the_blue_green_service_deployment() {
    let w = blue_green_world();
    w.flip("green").await.unwrap();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
    let rollout = w.redeploy(&plan).await.unwrap();
    worker_completes(&w);

    // Still baking: wait for the same deployments.
    w.deployments
        .script("web", &[("IN_PROGRESS", Some("BAKE_TIME"))]);
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Wait);
    let waiting = plan.rollout.expect("the deployments to wait for");
    assert_eq!(waiting.deployments, rollout.deployments);

    // ECS rolled it back: the tasks serving traffic may predate the flip.
    w.deployments
        .script("web", &[("ROLLBACK_SUCCESSFUL", Some("BAKE_TIME"))]);
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
    assert_eq!(plan.target_user, "green");

    // Succeeded: caught up, the next rotation rotates blue.
    w.deployments
        .script("web", &[("SUCCESSFUL", Some("CLEAN_UP"))]);
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
    assert_eq!(plan.target_user, "blue");
}

// ------------------------------------------------ failures from the field (issue 12)

impl World {
    fn user(&self, name: &str) -> std::sync::MutexGuard<'_, HashMap<String, FakeUser>> {
        let users = self.database.users.lock().unwrap();
        assert!(users.contains_key(name));
        users
    }

    /// Adds a version of `secret` labelled `stage` only (as a crashed run
    /// or another tool would leave it).
    fn add_version(&self, secret: &str, id: &str, value: &str, stage: &str) {
        self.secrets
            .secrets
            .lock()
            .unwrap()
            .get_mut(secret)
            .unwrap()
            .push(FakeVersion {
                id: id.into(),
                value: value.into(),
                stages: vec![stage.into()],
                created_ms: tick(),
            });
    }

    /// Nothing changed: the pointer, every secret version and label, no
    /// deployment, no password set.
    fn assert_untouched(&self) {
        assert_eq!(self.parameters.value(PARAM).as_deref(), Some("blue"));
        assert_eq!(self.secrets.version_count(GREEN_SECRET), 1);
        assert_eq!(
            self.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
            Some("green-v1")
        );
        assert_eq!(*self.database.password_changes.lock().unwrap(), 0);
        assert!(self.deployments.forced.lock().unwrap().is_empty());
        assert!(self.invariant_holds());
    }
}

use std::collections::HashMap;

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn the_user_about_to_become_active_must_not_expire_within_the_margin() {
    let w = world();
    w.user("green").get_mut("green").unwrap().valid_until_ms = Some(now_ms() + 10 * DAY_MS);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "PasswordExpiresSoon", "{err}");
    assert!(err.to_string().contains("45 day"), "{err}");
    w.assert_untouched();

    // Far enough away: fine (and the margin is a setting).
    let mut w = world();
    w.user("green").get_mut("green").unwrap().valid_until_ms = Some(now_ms() + 50 * DAY_MS);
    assert!(w.select(json!({})).await.is_ok());
    w.config.valid_until_margin_days = 60;
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "PasswordExpiresSoon"
    );
}

#[tokio::test]
async fn an_expired_password_is_named_as_expired_not_as_a_bad_secret() {
    // The inactive user's VALID UNTIL has passed: the server refuses it.
    let w = world();
    w.user("green").get_mut("green").unwrap().valid_until_ms = Some(now_ms() - DAY_MS);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "PasswordExpired", "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    w.assert_untouched();

    // The active user's: its login is refused; asked as green, the server
    // says why.
    let w = world();
    w.user("blue").get_mut("blue").unwrap().valid_until_ms = Some(now_ms() - DAY_MS);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "PasswordExpired", "{err}");
    assert!(err.to_string().contains("\"blue\""), "{err}");
}

#[tokio::test]
async fn drift_is_listed_in_both_directions() {
    let w = world();
    w.user("blue")
        .get_mut("blue")
        .unwrap()
        .grants
        .push("SELECT on column note of table audit".into());
    w.user("green")
        .get_mut("green")
        .unwrap()
        .grants
        .push("SELECT on default privileges on new relations belonging to role app_owner in schema public".into());
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "PrivilegeDrift");
    let text = err.to_string();
    assert!(
        text.contains("only \"blue\": SELECT on column note of table audit"),
        "{text}"
    );
    assert!(
        text.contains("only \"green\": SELECT on default privileges"),
        "{text}"
    );
    w.assert_untouched();
}

fn secret_at(user: &str, password: &str, port: u16) -> String {
    json!({"engine": "postgres", "host": "127.0.0.1", "port": port, "dbname": "app", "username": user, "password": password}).to_string()
}

#[tokio::test]
async fn a_pending_version_for_another_server_is_discarded_not_promoted() {
    // A run stopped after staging (and setting) a password; since then the
    // database moved to another port (a new server with the same roles and
    // passwords), and both secrets got a new AWSCURRENT for it.
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let stale = w.generate(&plan).await.unwrap();
    let stale_password = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    // The new server has green's AWSCURRENT password (the fake has one
    // server: give it back the current password, as the new server has).
    w.user("green").get_mut("green").unwrap().password = "green-pass-1".into();
    w.add_version(
        GREEN_SECRET,
        "green-v2",
        &secret_at("green", "green-pass-1", 6543),
        "AWSCURRENT",
    );
    w.add_version(
        BLUE_SECRET,
        "blue-v2",
        &secret_at("blue", "blue-pass-1", 6543),
        "AWSCURRENT",
    );
    for secret in [GREEN_SECRET, BLUE_SECRET] {
        w.secrets.secrets.lock().unwrap().get_mut(secret).unwrap()[0]
            .stages
            .clear();
    }
    w.parameters.set(PARAM, "blue"); // flipped since: a plain rotation follows
    w.deployments
        .force_new_deployment("app", "web")
        .await
        .unwrap();
    w.deployments
        .force_new_deployment("app", "worker")
        .await
        .unwrap();
    w.deployments.set_primary_state("app", "COMPLETED");

    let mut plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
    plan.client_request_token = client_request_token("the re-run");
    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed, "the stale version was resumed");
    assert_ne!(pending.version_id, stale.version_id);
    let staged = w.secrets.value_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(
        staged.contains("6543"),
        "the new version is not for the new server"
    );
    w.verify(&plan, &pending).await.unwrap();
    let current = w.secrets.value_at(GREEN_SECRET, AWSCURRENT).unwrap();
    assert!(
        current.contains("6543"),
        "AWSCURRENT points at the old server"
    );
    let new_password = w.secrets.password_at(GREEN_SECRET, AWSCURRENT).unwrap();
    assert_ne!(new_password, stale_password);
    assert!(w.database.logs_in("green", &new_password));
    assert_eq!(w.secrets.version_at(GREEN_SECRET, AWSPENDING), None);
}

#[tokio::test]
async fn a_stale_pending_password_already_set_is_undone_before_it_is_discarded() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    w.generate(&plan).await.unwrap();
    let stale = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(w.database.logs_in("green", &stale));
    // The policy changed since (another length): the stale one fails it.
    let mut w = w;
    w.policy = PasswordPolicy::new(40, crate::password::DEFAULT_EXCLUDED).unwrap();
    // The same execution retried (redrive): the token is the stale version's.
    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed);
    assert_ne!(pending.version_id, plan.client_request_token);
    let fresh = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert_eq!(fresh.len(), 40);
    assert!(w.database.logs_in("green", &fresh));
    // The database went stale -> AWSCURRENT -> fresh: two more changes.
    assert_eq!(*w.database.password_changes.lock().unwrap(), 3);
    // A retry now resumes the fresh version (same derived token, no third version).
    let again = w.generate(&plan).await.unwrap();
    assert!(again.resumed);
    assert_eq!(again.version_id, pending.version_id);
    assert_eq!(w.secrets.version_count(GREEN_SECRET), 3);
    w.verify(&plan, &pending).await.unwrap();
    assert_eq!(w.secrets.version_at(GREEN_SECRET, AWSPENDING), None);
}

#[tokio::test]
async fn a_pending_password_the_policy_now_refuses_is_not_promoted() {
    // Left by an older policy: it holds characters excluded today.
    let w = world();
    w.add_version(
        GREEN_SECRET,
        "green-old-pending",
        &secret_at("green", "Ab1-percent%and?hash#xxxxxxxxxxx", 5432),
        AWSPENDING,
    );
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed);
    let password = w.secrets.password_at(GREEN_SECRET, AWSPENDING).unwrap();
    assert!(w.policy.accepts(&password));
    assert!(!password.contains(['%', '?', '#']));
    w.verify(&plan, &pending).await.unwrap();
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
        Some(pending.version_id.as_str())
    );
}

#[tokio::test]
async fn a_pending_naming_another_user_is_discarded_too() {
    let w = world();
    w.add_version(
        GREEN_SECRET,
        "green-wrong-user",
        &secret_at("blue", PasswordPolicy::default().generate().expose(), 5432),
        AWSPENDING,
    );
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed);
    assert_ne!(pending.version_id, "green-wrong-user");
    assert!(w
        .secrets
        .value_at(GREEN_SECRET, AWSPENDING)
        .unwrap()
        .contains("\"green\""));
}

#[tokio::test]
async fn a_flip_leaves_no_pending_label_behind() {
    // Another tool rotated green (new AWSCURRENT, and the same password in
    // the database), and an old AWSPENDING is still there.
    let w = world();
    w.add_version(
        GREEN_SECRET,
        "green-leftover",
        &secret_at("green", "leftover-pass", 5432),
        AWSPENDING,
    );
    w.add_version(
        GREEN_SECRET,
        "green-v2",
        &secret_json("green", "green-pass-2"),
        "AWSCURRENT",
    );
    w.secrets
        .secrets
        .lock()
        .unwrap()
        .get_mut(GREEN_SECRET)
        .unwrap()[0]
        .stages
        .clear();
    w.user("green").get_mut("green").unwrap().password = "green-pass-2".into();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Flip);
    let verified = w
        .verify(&plan, plan.pending.as_ref().unwrap())
        .await
        .unwrap();
    assert!(verified.already_current);
    assert_eq!(w.secrets.version_at(GREEN_SECRET, AWSPENDING), None);
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
        Some("green-v2")
    );
}

#[tokio::test]
async fn a_read_only_server_is_refused_before_anything_is_staged() {
    for (in_recovery, read_only, says) in [(true, true, "hot standby"), (false, true, "read-only")]
    {
        let w = world();
        *w.database.server.lock().unwrap() = ServerFacts {
            in_recovery,
            read_only,
            wal_lsn: None,
        };
        let err = w.select(json!({})).await.unwrap_err();
        assert_eq!(err.name(), "DatabaseReadOnly", "{err}");
        assert!(err.to_string().contains(says), "{err}");
        w.assert_untouched();
    }
}

#[tokio::test]
async fn both_secrets_must_name_the_same_server_and_database() {
    for (field, value) in [
        ("port", json!(6543)),
        ("dbname", json!("other")),
        ("host", json!("db2.internal")),
    ] {
        let mut w = world();
        let mut green: serde_json::Value =
            serde_json::from_str(&secret_json("green", "green-pass-1")).unwrap();
        green[field] = value;
        w.secrets
            .secrets
            .lock()
            .unwrap()
            .get_mut(GREEN_SECRET)
            .unwrap()[0]
            .value = green.to_string();
        let err = w.select(json!({})).await.unwrap_err();
        assert_eq!(err.name(), "EndpointMismatch", "{field}: {err}");
        w.assert_untouched();
        // A target may say that is intended.
        w.config.allow_different_endpoints = true;
        assert!(w.select(json!({})).await.is_ok(), "{field}");
    }
    // Host names compare without case.
    let w = world();
    let green = secret_json("green", "green-pass-1").replace("127.0.0.1", "DB.example");
    let blue = secret_json("blue", "blue-pass-1").replace("127.0.0.1", "db.EXAMPLE");
    {
        let mut secrets = w.secrets.secrets.lock().unwrap();
        secrets.get_mut(GREEN_SECRET).unwrap()[0].value = green;
        secrets.get_mut(BLUE_SECRET).unwrap()[0].value = blue;
    }
    assert!(w.select(json!({})).await.is_ok());
}

#[tokio::test]
async fn a_reader_that_lags_holds_the_flip_until_it_has_replayed_the_change() {
    let mut w = world();
    w.config.readers = vec![ReaderEndpoint::parse("reader.internal:5432").unwrap()];
    // It stalls for three logins: select-user's look at its sessions, then
    // verify-login's two (the new password, then the previous user's).
    w.database.add_reader("reader.internal", 3);
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.readers.len(), 1);
    let pending = w.generate(&plan).await.unwrap();
    // Not replayed yet: a retryable error, nothing promoted.
    let err = w.verify(&plan, &pending).await.unwrap_err();
    assert_eq!(err.name(), "ReaderLagging", "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("reader.internal:5432"), "{err}");
    assert_eq!(
        w.secrets.version_at(GREEN_SECRET, AWSCURRENT).as_deref(),
        Some("green-v1")
    );
    assert!(w.invariant_holds());
    // Caught up: promoted.
    let verified = w.verify(&plan, &pending).await.unwrap();
    assert_eq!(verified.version_id, pending.version_id);
}

#[tokio::test]
async fn a_reader_that_will_never_accept_the_password_is_a_login_error() {
    let mut w = world();
    w.config.readers = vec![ReaderEndpoint::parse("other.internal").unwrap()];
    w.database.add_reader("other.internal", 0);
    w.database
        .readers
        .lock()
        .unwrap()
        .get_mut("other.internal")
        .unwrap()
        .foreign = true;
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    // It has replayed as far as the primary and still refuses the password.
    let err = w.verify(&plan, &pending).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected", "{err}");
    assert!(err.to_string().contains("replayed past"), "{err}");
}

#[tokio::test]
async fn sessions_of_the_inactive_user_on_a_reader_count() {
    let mut w = world();
    w.config.readers = vec![ReaderEndpoint::parse("reader.internal:5433").unwrap()];
    w.database.add_reader("reader.internal", 0);
    w.database
        .readers
        .lock()
        .unwrap()
        .get_mut("reader.internal")
        .unwrap()
        .sessions
        .insert("green".into(), 3);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(
        err,
        RotationError::InactiveUserInUse {
            user: "green".into(),
            by: "3 live session(s) on reader.internal:5433/app (old tasks still draining)".into()
        }
    );
    w.assert_untouched();
}

#[tokio::test]
async fn an_rds_proxy_must_know_both_secrets() {
    let mut w = world();
    w.config.proxy_name = Some("app-proxy".into());
    w.proxies.add(
        "app-proxy",
        &["arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/blue-AbCdEf"],
    );
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "ProxyMissingSecret", "{err}");
    assert!(err.to_string().contains(GREEN_SECRET), "{err}");
    w.assert_untouched();
    w.proxies.add(
        "app-proxy",
        &[
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/blue-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-GhIjKl",
        ],
    );
    assert!(w.select(json!({})).await.is_ok());
    w.config.proxy_name = Some("no-such-proxy".into());
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "ConfigurationError"
    );
}

#[tokio::test]
async fn an_older_primary_after_ours_is_gone_is_a_rollback_not_a_success() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    // ECS rolled web back: ours is no longer listed, the one before it is
    // PRIMARY again and COMPLETED.
    {
        let mut all = w.deployments.services.lock().unwrap();
        let web = all.get_mut("app").unwrap().get_mut("web").unwrap();
        web.remove(0);
        web[0].status = "PRIMARY".into();
        web[0].rollout_state = Some("COMPLETED".into());
    }
    w.deployments
        .services
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .get_mut("worker")
        .unwrap()[0]
        .rollout_state = Some("COMPLETED".into());
    let err = wait_for_stable(&rollout, &w.deployments, now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutFailed", "{err}");
    assert!(err.to_string().contains("web=FAILED(ROLLED_BACK"), "{err}");

    // Ours still listed but no longer PRIMARY, an older one PRIMARY again.
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let rollout = w.redeploy(&plan).await.unwrap();
    {
        let mut all = w.deployments.services.lock().unwrap();
        let web = all.get_mut("app").unwrap().get_mut("web").unwrap();
        web[0].status = "ACTIVE".into();
        web[1].status = "PRIMARY".into();
        web[1].rollout_state = Some("COMPLETED".into());
    }
    let err = wait_for_stable(&rollout, &w.deployments, now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutFailed", "{err}");
}

#[tokio::test]
async fn a_rollout_found_in_progress_is_waited_for_and_never_rolled_back() {
    // A release (not pgflip's) is rolling out after the last flip.
    let w = world();
    w.deployments
        .force_new_deployment("app", "web")
        .await
        .unwrap();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Wait);
    let rollout = plan.rollout.clone().unwrap();
    assert!(rollout.foreign);
    assert_eq!(rollout.deployments[0].deployment_id, "ecs-svc/1");
    assert!(rollout.deployments[0].created_ms.is_some());
    // Still in progress at the deadline: a named error of its own, which the
    // state machine does not roll back.
    let err = wait_for_stable(&rollout, &w.deployments, rollout.deadline_ms)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ForeignRolloutFailed", "{err}");
    assert!(err.to_string().contains("not finished"), "{err}");
    // It failed: the same.
    w.deployments.set_primary_state("app", "FAILED");
    let err = wait_for_stable(&rollout, &w.deployments, now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ForeignRolloutFailed", "{err}");
    // It completed: done.
    w.deployments.set_primary_state("app", "COMPLETED");
    assert!(wait_for_stable(&rollout, &w.deployments, now_ms())
        .await
        .is_ok());
    assert_eq!(w.parameters.value(PARAM).as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_service_named_twice_is_redeployed_and_watched_once() {
    let w = world();
    let plan = w
        .select(json!({"services": ["web", "web", " worker", "worker"]}))
        .await
        .unwrap();
    assert_eq!(plan.services, vec!["web", "worker"]);
    let rollout = w.redeploy(&plan).await.unwrap();
    assert_eq!(rollout.deployments.len(), 2);
    assert_eq!(*w.deployments.forced.lock().unwrap(), vec!["web", "worker"]);
    // A payload that names one twice anyway (an older plan): still once.
    let mut twice = plan.clone();
    twice.services = vec!["web".into(), "web".into()];
    let again = w.redeploy(&twice).await.unwrap();
    assert_eq!(again.deployments.len(), 1);
}

#[tokio::test]
async fn looks_at_a_rollout_are_bounded_whatever_the_clock_says() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let mut rollout = w.redeploy(&plan).await.unwrap();
    in_progress(wait_for_stable(&rollout, &w.deployments, now_ms()).await);
    rollout.looks = crate::domain::MAX_LOOKS - 1;
    let err = wait_for_stable(&rollout, &w.deployments, now_ms())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "RolloutTimedOut", "{err}");
}

#[tokio::test]
async fn a_user_who_may_not_change_its_own_password_is_told_to_configure_an_administrator() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    *w.database.alter_role_refusal.lock().unwrap() = Some(RotationError::PasswordChangeNotAllowed(
        "must be a member of rds_password (42501); set DB_ADMIN_SECRET_ID".into(),
    ));
    let err = w.generate(&plan).await.unwrap_err();
    assert_eq!(err.name(), "PasswordChangeNotAllowed");
    assert!(err.to_string().contains("DB_ADMIN_SECRET_ID"), "{err}");
    assert!(!err.is_retryable());
    assert!(w.invariant_holds());
}

#[test]
fn the_mode_is_a_pure_function_of_what_select_user_finds() {
    let deployed = |created: i64, state: &str| ServiceState {
        name: "web".into(),
        controller: Some("ECS".into()),
        strategy: None,
        deployments: vec![DeploymentState {
            id: "ecs-svc/1".into(),
            status: "PRIMARY".into(),
            rollout_state: Some(state.into()),
            created_at_ms: Some(created),
            task_definition: None,
        }],
        service_deployment: None,
    };
    let facts = |services: &[ServiceState], inactive: i64, rotated| {
        choose_mode(&ModeFacts {
            flipped_ms: Some(1000),
            services,
            inactive_current_ms: Some(inactive),
            rotated,
        })
    };
    let up_to_date = [deployed(2000, "COMPLETED")];
    assert_eq!(facts(&up_to_date, 500, None), (Mode::Rotate, None));
    assert_eq!(facts(&up_to_date, 1500, None).0, Mode::Flip);
    assert_eq!(
        facts(&up_to_date, 500, Some(Rotated::Inactive)).0,
        Mode::Flip
    );
    let (mode, alert) = facts(&up_to_date, 500, Some(Rotated::Active));
    assert_eq!(mode, Mode::Redeploy);
    assert_eq!(alert.as_deref(), Some("ActiveUserRotatedExternally"));
    assert_eq!(
        facts(&[deployed(500, "COMPLETED")], 1500, None).0,
        Mode::Redeploy
    );
    assert_eq!(
        facts(&[deployed(2000, "IN_PROGRESS")], 1500, None).0,
        Mode::Wait
    );
}

#[test]
fn settings_that_could_overflow_the_execution_history_are_refused() {
    use crate::config::check_waits;
    assert!(check_waits("x", 30, 1800).is_ok());
    assert!(check_waits("x", 2, 1800).is_ok());
    let err = check_waits("x", 0, 1800).unwrap_err();
    assert_eq!(err.name(), "ConfigurationError");
    assert!(err.to_string().contains("at least 2 s"), "{err}");
    assert!(check_waits("x", 1, 1800).is_err());
}

// Consumers: what in the cluster takes the target's credentials.

const PARAM_ARN: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/app/db/active-user";
const GREEN_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-AbC123";

/// The pointer moves now (after every deployment so far), then `services`
/// are redeployed and finish: the others still run tasks from before.
async fn flip_then_redeploy(w: &World, services: &[&str]) {
    w.parameters.set(PARAM, "blue");
    for s in services {
        w.deployments.force_new_deployment("app", s).await.unwrap();
    }
    w.deployments.set_primary_state("app", "COMPLETED");
    w.deployments.forced.lock().unwrap().clear();
}

#[tokio::test]
async fn a_service_that_takes_the_credentials_but_is_not_listed_stops_the_rotation() {
    let w = world();
    w.deployments.add_service("app", "billing");
    w.deployments.reads(
        "app",
        "billing",
        &[&format!("{GREEN_ARN}:password::"), PARAM_ARN],
    );
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "UnlistedConsumer");
    assert!(err.to_string().contains("billing"), "{err}");
    w.assert_untouched();
    // The same for a run's own list, unless the run says it knows.
    let err = w.select(json!({"services": ["web"]})).await.unwrap_err();
    assert_eq!(err.name(), "UnlistedConsumer");
    let plan = w
        .select(json!({"services": ["web"], "unlistedConsumers": "warn"}))
        .await
        .unwrap();
    assert_eq!(plan.services, vec!["web"]);
    // Listed by ARN counts as listed.
    let plan = w
        .select(json!({"services": ["web", "worker", "arn:aws:ecs:us-east-1:123456789012:service/app/billing"]}))
        .await
        .unwrap();
    assert_eq!(plan.services.len(), 3);
}

#[tokio::test]
async fn services_auto_redeploys_every_consumer_and_only_those() {
    let mut w = world();
    w.config.services = Services::Auto;
    w.deployments.add_service("app", "reports");
    w.deployments.add_service("app", "unrelated");
    // By environment value (the parameter's name), by both secrets.
    w.deployments.reads("app", "web", &["/app/db/active-user"]);
    w.deployments
        .reads("app", "reports", &[BLUE_SECRET, GREEN_ARN]);
    w.deployments.reads(
        "app",
        "unrelated",
        &["other/db/blue", "/app/db/active-user-2"],
    );
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.services, vec!["reports", "web"]);
    assert_eq!(plan.mode, Mode::Rotate);
    // A CodeDeploy service is its pipeline's to redeploy: neither redeployed
    // nor unlisted.
    w.deployments
        .controllers
        .lock()
        .unwrap()
        .insert("reports".into(), "CODE_DEPLOY".into());
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.services, vec!["web"]);
    let plan = w.select(json!({"services": ["web"]})).await.unwrap();
    assert_eq!(plan.services, vec!["web"]);

    // Nothing takes them: a configuration error, nothing changed.
    let mut w = world();
    w.config.services = Services::Auto;
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "ConfigurationError");
    assert!(err.to_string().contains("auto"), "{err}");
    w.assert_untouched();
}

#[tokio::test]
async fn a_consumer_left_on_the_old_user_blocks_the_rotation_of_that_user() {
    let w = world();
    for s in ["web", "worker"] {
        w.deployments.reads("app", s, &[PARAM_ARN]);
    }
    // A partial run flipped and redeployed web only: worker's tasks hold
    // the user that is inactive now.
    flip_then_redeploy(&w, &["web"]).await;
    // A run that includes worker finishes the earlier rollout instead.
    left_behind_blocks(
        &w,
        json!({"services": ["web"], "unlistedConsumers": "warn"}),
        "worker",
        "web",
    )
    .await;
}

/// A run limited by `input` after a partial rollout is refused
/// `InactiveUserInUse` naming service `behind` and not `redeployed`, with
/// nothing changed; a run over every service finishes the rollout instead.
async fn left_behind_blocks(w: &World, input: serde_json::Value, behind: &str, redeployed: &str) {
    let err = w.select(input).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(
        err.to_string().contains(&format!("service {behind}")),
        "{err}"
    );
    assert!(
        !err.to_string().contains(&format!("service {redeployed}")),
        "{err}"
    );
    w.assert_untouched();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
}

/// Seed 11, scenario 410 of the chaos soak: the configured services' task
/// definitions name no credentials (the application reads the parameter and
/// the secret itself), so discovery finds no consumer. Two runs limited to
/// worker in a row: the second rotated the user web's tasks still held. A
/// configured service a run leaves out is a consumer that follows the
/// pointer.
#[tokio::test]
async fn a_configured_service_a_partial_run_left_behind_blocks_the_rotation_of_its_user() {
    let w = world();
    flip_then_redeploy(&w, &["worker"]).await;
    // A run that includes web finishes the earlier rollout instead.
    left_behind_blocks(&w, json!({"services": ["worker"]}), "web", "worker").await;

    // Configured by ARN, left out by name: the same service, still blocking.
    let mut w = world();
    w.config.services = Services::Listed(vec![
        "arn:aws:ecs:us-east-1:123456789012:service/app/web".into(),
        "worker".into(),
    ]);
    flip_then_redeploy(&w, &["worker"]).await;
    let err = w.select(json!({"services": ["worker"]})).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(
        err.to_string().contains("service/app/web still runs"),
        "{err}"
    );
    // Run by ARN after its own redeploy: nothing left behind.
    flip_then_redeploy(&w, &["web", "worker"]).await;
    let plan = w
        .select(
            json!({"services": ["arn:aws:ecs:us-east-1:123456789012:service/app/web", "worker"]}),
        )
        .await
        .unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
}

#[tokio::test]
async fn a_configured_service_still_replacing_tasks_from_before_the_flip_blocks_and_a_deleted_one_does_not(
) {
    // The flip, then worker redeployed (done) and web's rollout still
    // IN_PROGRESS: web's tasks from before the flip still run.
    let w = world();
    w.parameters.set(PARAM, "blue");
    for s in ["worker", "web"] {
        w.deployments.force_new_deployment("app", s).await.unwrap();
    }
    w.deployments.set_primary_state("app", "IN_PROGRESS");
    worker_completes(&w);
    let err = w.select(json!({"services": ["worker"]})).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(
        err.to_string().contains("service web is still replacing"),
        "{err}"
    );

    // A configured service deleted since: no consumer, and no error.
    let w = world();
    flip_then_redeploy(&w, &["worker"]).await;
    w.deployments
        .services
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .remove("web");
    let plan = w.select(json!({"services": ["worker"]})).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
}

#[tokio::test]
async fn a_standalone_task_from_before_the_flip_blocks_the_rotation() {
    let w = world();
    w.deployments.run_task(
        "app",
        "nightly-before",
        Some(now_ms() - DAY_MS),
        &[PARAM_ARN],
    );
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(err.to_string().contains("task/app/nightly-before"), "{err}");
    w.assert_untouched();

    // One created after the flip holds the active user: no obstacle.
    let w = world();
    w.deployments.run_task(
        "app",
        "nightly-after",
        Some(now_ms() + DAY_MS),
        &[PARAM_ARN],
    );
    w.select(json!({})).await.unwrap();

    // One whose creation time ECS does not give may hold either.
    let w = world();
    w.deployments.run_task("app", "unknown", None, &[PARAM_ARN]);
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "InactiveUserInUse"
    );
}

#[tokio::test]
async fn a_consumer_pinned_to_one_user_blocks_only_that_users_rotation() {
    // Takes green's secret alone: green is inactive, about to be rotated.
    let w = world();
    w.deployments
        .reads("app", "worker", &[&format!("{GREEN_ARN}:password::")]);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "InactiveUserInUse");
    assert!(err.to_string().contains("never follows"), "{err}");
    w.assert_untouched();
    // Takes blue's (the active user's) alone: green may be rotated.
    let w = world();
    w.deployments.reads("app", "worker", &[BLUE_SECRET]);
    w.select(json!({})).await.unwrap();
}

#[tokio::test]
async fn consumers_do_not_stop_a_flip_whose_password_is_already_set() {
    let w = world();
    w.deployments.run_task("app", "unknown", None, &[PARAM_ARN]);
    // Secrets Manager rotated green (the inactive user) after the flip.
    w.green_rotated_by_secrets_manager("green-pass-2").await;
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.mode, Mode::Flip);
}

#[tokio::test]
async fn discovery_failures_stop_before_anything_changes() {
    for op in ["services", "standalone_tasks", "references"] {
        let w = world();
        w.deployments.reads("app", "web", &[PARAM_ARN]);
        w.deployments
            .faults
            .push(op, RotationError::AwsUnavailable("ecs: throttled".into()));
        let err = w.select(json!({})).await.unwrap_err();
        assert_eq!(err.name(), "AwsUnavailable", "{op}");
        w.assert_untouched();
    }
}

// report-outcome: metrics and notifications after an execution.

mod report {
    use super::*;
    use crate::steps::report_outcome::{
        failed_steps, notification, outcome, report_outcome, report_password_ages, EndedExecution,
        ReportRequest,
    };

    const EXEC: &str = "arn:aws:states:eu-west-1:123456789012:execution:pgflip-rotation:run-7";

    fn entered(s: &str) -> HistoryEvent {
        HistoryEvent::Entered { state: s.into() }
    }
    fn exited(s: &str, output: Option<serde_json::Value>) -> HistoryEvent {
        HistoryEvent::Exited {
            state: s.into(),
            output,
        }
    }
    fn ran(s: &str) -> Vec<HistoryEvent> {
        vec![entered(s), exited(s, None)]
    }
    fn plan() -> serde_json::Value {
        json!({"previousUser": "blue", "targetUser": "green", "parameterName": PARAM,
               "services": ["web", "worker"], "mode": "rotate"})
    }
    fn ended(status: &str, error: Option<&str>, cause: Option<&str>) -> HistoryEvent {
        HistoryEvent::Ended {
            status: status.into(),
            error: error.map(Into::into),
            cause: cause.map(Into::into),
        }
    }

    /// A rotation whose rollout failed, then rolled back to a stable blue.
    fn rolled_back() -> Vec<HistoryEvent> {
        let mut h = vec![entered("SelectUser"), exited("SelectUser", Some(plan()))];
        h.extend(ran("ChooseMode"));
        for s in [
            "GenerateAndSetPassword",
            "VerifyLogin",
            "FlipParameter",
            "RedeployEcs",
            "WaitBeforePoll",
        ] {
            h.extend(ran(s));
        }
        h.push(entered("WaitForStable"));
        h.push(HistoryEvent::Failed {
            error: "RolloutFailed".into(),
            cause: "cluster app: web=FAILED".into(),
        });
        h.extend(ran("ChooseRollback"));
        for s in [
            "RollbackFlipParameter",
            "RollbackRedeployEcs",
            "RollbackWaitBeforePoll",
        ] {
            h.extend(ran(s));
        }
        h.push(entered("RollbackWaitForStable"));
        h.push(exited(
            "RollbackWaitForStable",
            Some(json!({"rollbackRollout": {"status": "COMPLETED"}})),
        ));
        h.extend(ran("RollbackRolloutDone"));
        h.extend(ran("DescribeRollback"));
        h.push(entered("RotationRolledBack"));
        h.push(ended(
            "FAILED",
            Some("RotationRolledBack"),
            Some("Rolled back: the pointer /app/db/active-user names blue again, whose password never changed. Original error RolloutFailed: cluster app: web=FAILED"),
        ));
        h
    }

    fn execution(status: &str, input: serde_json::Value) -> EndedExecution {
        EndedExecution {
            execution_arn: EXEC.into(),
            name: "run-7".into(),
            status: status.into(),
            start_ms: Some(1_000_000),
            stop_ms: Some(1_042_500),
            input: Some(input.to_string()),
        }
    }

    async fn report(
        w: &World,
        e: &EndedExecution,
        events: Vec<HistoryEvent>,
    ) -> (crate::steps::report_outcome::Report, Vec<(String, String)>) {
        let history = FakeHistory::default();
        history.events.lock().unwrap().insert(EXEC.into(), events);
        let notifier = FakeNotifier::default();
        let r = report_outcome(
            e,
            &w.targets,
            &w.config,
            &w.parameters,
            &w.secrets,
            &w.secrets,
            &history,
            &notifier,
            "pgflip/test",
            now_ms(),
        )
        .await
        .unwrap();
        let published = notifier.published.lock().unwrap().clone();
        (r, published)
    }

    #[tokio::test]
    async fn a_rolled_back_rotation_is_reported_with_its_step_cause_and_what_was_done() {
        let w = world();
        let (r, published) = report(&w, &execution("FAILED", json!({})), rolled_back()).await;
        assert_eq!(published.len(), 1);
        let (subject, message) = &published[0];
        assert_eq!(
            subject,
            "pgflip default: RotationRolledBack at WaitForStable"
        );
        for needle in [
            "target default ended FAILED with RotationRolledBack",
            "Step: WaitForStable\n",
            "Error: RotationRolledBack",
            "Original error RolloutFailed: cluster app: web=FAILED",
            "flipped /app/db/active-user to green, redeployed web, worker, flipped back to blue, redeployed web, worker again, stable.",
            "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1:123456789012:execution:pgflip-rotation:run-7",
        ] {
            assert!(message.contains(needle), "{needle:?} not in:\n{message}");
        }
        // Metrics: the outcome with duration and transitions, then each
        // user's password age and the days since the last rotation.
        let m = &r.metrics[0];
        assert_eq!(m["Outcome"], "RotationRolledBack");
        assert_eq!(m["Target"], "default");
        assert_eq!(m["Executions"], 1.0);
        assert_eq!(m["DurationSeconds"], 42.5);
        let entered_states = rolled_back()
            .iter()
            .filter(|e| matches!(e, HistoryEvent::Entered { .. }))
            .count();
        assert_eq!(m["StateTransitions"], entered_states as f64);
        let cw = &m["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "pgflip/test");
        assert_eq!(
            cw["Dimensions"],
            json!([["Target", "Outcome"], ["Outcome"]])
        );
        let ages: Vec<&serde_json::Value> = r.metrics[1..].iter().collect();
        assert_eq!(ages.len(), 3, "{ages:?}");
        assert_eq!(ages[0]["User"], "blue");
        assert!(ages[0]["PasswordAgeDays"].as_f64().unwrap() >= 0.0);
        assert!(ages[2]["DaysSinceLastRotation"].is_number());
        // Nothing secret anywhere.
        let all = format!("{r:?}{published:?}");
        for secret in ["blue-pass-1", "green-pass-1"] {
            assert!(!all.contains(secret));
        }
    }

    #[tokio::test]
    async fn a_failure_before_any_change_names_the_step_and_says_nothing_changed() {
        let w = world();
        let h = vec![
            entered("SelectUser"),
            HistoryEvent::Failed {
                error: "PrivilegeDrift".into(),
                cause: "privileges of \"blue\" and \"green\" differ".into(),
            },
            ended("FAILED", Some("PrivilegeDrift"), Some("privileges of \"blue\" and \"green\" differ: only \"blue\": SELECT on table audit")),
        ];
        let (_, published) = report(&w, &execution("FAILED", json!({})), h).await;
        let message = &published[0].1;
        assert!(message.contains("Step: SelectUser\n"), "{message}");
        assert!(message.contains("Error: PrivilegeDrift"), "{message}");
        assert!(
            message.contains("What pgflip already did: nothing was changed."),
            "{message}"
        );
        assert!(
            message.contains("only \"blue\": SELECT on table audit"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_success_is_counted_but_not_notified_and_a_dry_run_counts_apart() {
        let w = world();
        let mut h = vec![entered("SelectUser"), exited("SelectUser", Some(plan()))];
        h.extend(ran("RotationSucceeded"));
        h.push(ended("SUCCEEDED", None, None));
        let (r, published) = report(&w, &execution("SUCCEEDED", json!({})), h).await;
        assert!(published.is_empty());
        assert_eq!(r.metrics[0]["Outcome"], "Succeeded");
        let dry = vec![
            entered("SelectUser"),
            entered("DryRunSucceeded"),
            ended("SUCCEEDED", None, None),
        ];
        assert_eq!(outcome("SUCCEEDED", &dry), "DryRun");
        assert_eq!(outcome("TIMED_OUT", &dry), "TimedOut");
        assert_eq!(outcome("ABORTED", &[]), "Aborted");
    }

    #[tokio::test]
    async fn a_failed_rollback_names_both_steps() {
        let mut h = rolled_back();
        h.truncate(
            h.iter()
                .position(|e| *e == entered("RollbackWaitForStable"))
                .unwrap()
                + 1,
        );
        h.push(HistoryEvent::Failed {
            error: "RolloutTimedOut".into(),
            cause: "web=IN_PROGRESS".into(),
        });
        h.extend(ran("DescribeRollbackFailure"));
        h.push(entered("RollbackFailed"));
        h.push(ended(
            "FAILED",
            Some("RollbackFailed"),
            Some("Rollback failed (RolloutTimedOut: web=IN_PROGRESS) after RolloutFailed"),
        ));
        assert_eq!(
            failed_steps(&h),
            (
                Some("WaitForStable".to_string()),
                Some("RollbackWaitForStable".to_string())
            )
        );
        let n = notification(&execution("FAILED", json!({})), "default", &h).unwrap();
        assert!(
            n.message.contains(
                "Step: WaitForStable (then the rollback stopped in RollbackWaitForStable)"
            ),
            "{}",
            n.message
        );
        assert!(
            n.message
                .contains("flipped back to blue, redeployed web, worker again."),
            "{}",
            n.message
        );
    }

    #[test]
    fn after_a_redrive_the_step_is_where_it_failed_last() {
        // Failed at VerifyLogin, redriven there, failed at it again later.
        let mut h = vec![entered("SelectUser"), exited("SelectUser", Some(plan()))];
        h.extend(ran("GenerateAndSetPassword"));
        h.push(entered("VerifyLogin"));
        h.push(ended("FAILED", Some("LoginRejected"), None));
        h.push(HistoryEvent::Redriven);
        h.push(entered("VerifyLogin"));
        h.push(ended("FAILED", Some("ReaderLagging"), None));
        assert_eq!(failed_steps(&h).0.as_deref(), Some("VerifyLogin"));
        assert_eq!(outcome("FAILED", &h), "ReaderLagging");
    }

    #[test]
    fn the_payload_is_an_execution_status_change_or_the_schedule() {
        let event = json!({
            "version": "0", "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
            "detail": {"executionArn": EXEC, "stateMachineArn": "arn:aws:states:eu-west-1:123456789012:stateMachine:pgflip-rotation",
                       "name": "run-7", "status": "FAILED", "startDate": 1000, "stopDate": 2000,
                       "input": "{\"target\": \"orders\"}"}
        });
        let ReportRequest::Ended(e) = ReportRequest::parse(&event).unwrap() else {
            panic!("an ended execution")
        };
        assert_eq!(
            (e.status.as_str(), e.start_ms, e.stop_ms),
            ("FAILED", Some(1000), Some(2000))
        );
        assert_eq!(e.input.as_deref(), Some("{\"target\": \"orders\"}"));
        assert_eq!(
            ReportRequest::parse(&json!({"report": "passwordAges"})).unwrap(),
            ReportRequest::PasswordAges
        );
        for bad in [
            json!({}),
            json!({"detail-type": "Other", "detail": {}}),
            json!({"detail-type": "Step Functions Execution Status Change", "detail": {}}),
        ] {
            assert_eq!(
                ReportRequest::parse(&bad).unwrap_err().name(),
                "InvalidInput",
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_schedule_reports_every_targets_password_ages_and_skips_a_bad_one() {
        let mut w = world();
        w.targets.parameter_name = Some(TARGETS_DOC.into());
        w.parameters.set(
            TARGETS_DOC,
            &json!({
                "orders": {"activeUserParameter": "/orders/active", "blueSecretId": BLUE_SECRET,
                           "greenSecretId": GREEN_SECRET, "cluster": "orders", "services": ["api"]},
                "broken": {"activeUserParameter": "/b/active", "blueSecretId": "missing/blue",
                           "greenSecretId": "missing/green", "cluster": "b", "services": ["x"]},
            })
            .to_string(),
        );
        w.parameters.set("/orders/active", "green");
        let docs = report_password_ages(
            &w.targets,
            &w.config,
            &w.parameters,
            &w.secrets,
            &w.secrets,
            "pgflip",
            now_ms(),
        )
        .await
        .unwrap();
        let targets: Vec<&str> = docs.iter().filter_map(|d| d["Target"].as_str()).collect();
        assert_eq!(targets.iter().filter(|t| **t == "default").count(), 3);
        assert_eq!(targets.iter().filter(|t| **t == "orders").count(), 3);
        assert!(!targets.contains(&"broken"), "{targets:?}");
        let fleet = docs
            .iter()
            .find(|d| d["DaysSinceLastRotation"].is_number())
            .unwrap();
        assert_eq!(
            fleet["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Target"], []])
        );
    }
}

#[tokio::test]
async fn a_dry_run_reports_what_still_uses_the_inactive_user_at_once() {
    // Sessions and a standalone task: a rotation waits (retried error), a
    // dry run says so in its plan and does not wait.
    let w = world();
    w.user("green").get_mut("green").unwrap().live_sessions = 2;
    w.deployments
        .run_task("app", "nightly", Some(now_ms() - DAY_MS), &[PARAM_ARN]);
    assert_eq!(
        w.select(json!({})).await.unwrap_err().name(),
        "InactiveUserInUse"
    );
    let plan = w.select(json!({"dryRun": true})).await.unwrap();
    let in_use = plan.in_use.expect("what uses green");
    assert!(
        in_use.starts_with("green is still in use: 2 live session(s)")
            && in_use.contains("task/app/nightly"),
        "{in_use}"
    );
    w.assert_untouched();
    // Nothing in use: nothing said.
    let w = world();
    assert_eq!(
        w.select(json!({"dryRun": true})).await.unwrap().in_use,
        None
    );
}

#[tokio::test]
async fn a_service_deleted_after_it_was_listed_is_no_consumer_and_no_error() {
    let mut w = world();
    w.config.services = Services::Auto;
    w.deployments.reads("app", "web", &[PARAM_ARN]);
    w.deployments.gone.lock().unwrap().push("reports".into());
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(plan.services, vec!["web"]);
}

mod alternating;
mod sweep;

mod registry {
    use super::*;
    use crate::steps::registry::all_targets;

    const PATH: &str = "/pgflip/targets/";

    /// "orders" as its own parameter under the path, a broken "billing"
    /// beside it, and no document.
    fn registry_world() -> World {
        let mut w = two_target_world();
        w.parameters.values.lock().unwrap().remove(TARGETS_DOC);
        w.targets = Targets {
            parameter_name: None,
            path: Some(PATH.into()),
        };
        let entry = targets_doc()["orders"].to_string();
        w.parameters.set(&format!("{PATH}orders"), &entry);
        w.parameters.set(
            &format!("{PATH}billing"),
            r#"{"activeUserParameter": "/b"}"#,
        );
        w
    }

    #[tokio::test]
    async fn a_target_is_read_from_its_own_parameter_under_the_path() {
        let w = registry_world();
        let plan = w.select(json!({"target": "orders"})).await.unwrap();
        assert_eq!(plan.target.as_deref(), Some("orders"));
        assert_eq!(plan.parameter_name, "/orders/db/active-user");
        // A bad entry fails its own target only, naming its parameter.
        let err = w.select(json!({"target": "billing"})).await.unwrap_err();
        assert_eq!(err.name(), "ConfigurationError");
        assert!(err.to_string().contains("/pgflip/targets/billing"), "{err}");
        // An unknown name, and a name that cannot be a parameter.
        for (name, says) in [("nope", "/pgflip/targets/nope"), ("a/b", "letters, digits")] {
            let err = w.select(json!({"target": name})).await.unwrap_err();
            assert_eq!(err.name(), "InvalidInput", "{name}");
            assert!(err.to_string().contains(says), "{err}");
        }
        assert_eq!(*w.parameters.puts.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn the_path_comes_before_the_document_and_listing_sees_both() {
        let mut w = registry_world();
        // A document too, with "orders" (shadowed) and "legacy".
        w.targets.parameter_name = Some(TARGETS_DOC.into());
        let mut doc = targets_doc();
        doc["orders"]["cluster"] = json!("shadowed");
        doc["legacy"] = targets_doc()["orders"].clone();
        doc["legacy"]["activeUserParameter"] = json!("/legacy/active");
        w.parameters.set(TARGETS_DOC, &doc.to_string());
        w.parameters.set("/legacy/active", "orders_green");
        let plan = w.select(json!({"target": "orders"})).await.unwrap();
        assert_eq!(plan.cluster, "orders");
        let plan = w.select(json!({"target": "legacy"})).await.unwrap();
        assert_eq!(plan.parameter_name, "/legacy/active");

        let all = all_targets(&w.targets, &w.config, &w.parameters)
            .await
            .unwrap();
        let names: Vec<(&str, bool)> = all.iter().map(|(n, c)| (n.as_str(), c.is_ok())).collect();
        assert_eq!(
            names,
            [
                ("default", true),
                ("billing", false),
                ("orders", true),
                ("legacy", true)
            ]
        );
        assert_eq!(all[2].1.as_ref().unwrap().cluster, "orders");
    }
}

/// The chaos soak's seed 7, scenario 12: a run crashed after staging and
/// setting green's new password; a late RotationSucceeded event for green
/// (no newer version) then resumed it instead of failing LoginRejected.
#[tokio::test]
async fn a_late_event_for_the_inactive_user_resumes_what_is_pending() {
    let w = world();
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    let plan = w.select(rotation_event(GREEN_SECRET)).await.unwrap();
    assert_eq!(plan.mode, Mode::Rotate);
    let resumed = w.generate(&plan).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.version_id, pending.version_id);
    w.verify(&plan, &resumed).await.unwrap();
    w.flip("green").await.unwrap();
    assert!(w.invariant_holds());
}
mod sweep_review;
