//! report-outcome after real executions (issue 16): the notification and
//! the metrics, from the history of a run of the real state machine, read
//! through the real SSM, Secrets Manager and SNS adapters on moto. moto's
//! `GetExecutionHistory` answers a canned history, so the run's own history
//! (the runner's events, mapped to the same events) stands in for it.

use super::*;
use async_trait::async_trait;
use pgflip_core::adapters::{
    secrets::SecretsManager, sns::SnsTopic, ssm::SsmParameters, ssm_passwords::SsmPasswordStore,
};
use pgflip_core::config::{TargetConfig, Targets};
use pgflip_core::errors::RotationError;
use pgflip_core::ports::{ExecutionHistory, HistoryEvent};
use pgflip_core::steps::report_outcome::{report_outcome, EndedExecution};

/// The history of one local run.
struct RunHistory(Vec<HistoryEvent>);

#[async_trait]
impl ExecutionHistory for RunHistory {
    async fn history(&self, _arn: &str) -> Result<Vec<HistoryEvent>, RotationError> {
        Ok(self.0.clone())
    }
}

/// The environment the local Lambdas run with (scripts/lib/stack.sh writes
/// it to lambda.env beside stack.env).
fn lambda_env() -> std::collections::HashMap<String, String> {
    let dir = std::env::var("PGFLIP_STACK_DIR").expect("PGFLIP_STACK_DIR (source stack.env)");
    std::fs::read_to_string(std::path::Path::new(&dir).join("lambda.env"))
        .expect("the stack's lambda.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

struct EnvMap(std::collections::HashMap<String, String>);

impl pgflip_core::config::Env for EnvMap {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// Runs the rotation with `scenario`, then reports it as report-outcome
/// does, publishing to a topic of moto whose messages are read back.
async fn run_and_report(
    c: &Case,
    scenario: Value,
    topic: &str,
) -> (
    Execution,
    pgflip_core::steps::report_outcome::Report,
    Vec<(String, String)>,
) {
    let path = std::env::temp_dir().join(format!("report-{}-{topic}.json", std::process::id()));
    let e = run_quick(
        &c.stack,
        json!({}),
        scenario,
        RunOptions {
            history: Some(path.clone()),
            ..RunOptions::default()
        },
    );
    let events = pgflip_tests::history_events(&path);
    std::fs::remove_file(&path).ok();
    let (topic_arn, inbox) = pgflip_tests::sns_topic_with_inbox(topic);
    let env = EnvMap(lambda_env());
    let default = TargetConfig::from_env(&env).expect("the local target");
    let targets = Targets::from_env(&env);
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ended = EndedExecution {
        execution_arn: format!(
            "arn:aws:states:{}:123456789012:execution:pgflip-rotation:{}",
            std::env::var("AWS_REGION").unwrap(),
            e.name
        ),
        name: e.name.clone(),
        status: e.status.clone(),
        start_ms: Some(0),
        stop_ms: Some(e.duration_ms as i64),
        input: Some("{}".into()),
    };
    let report = report_outcome(
        &ended,
        &targets,
        &default,
        &SsmParameters::new(aws_sdk_ssm::Client::new(&aws)),
        &SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
        &SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
        &RunHistory(events),
        &SnsTopic::new(aws_sdk_sns::Client::new(&aws), topic_arn),
        "pgflip/local",
        pgflip_core::steps::now_ms(),
    )
    .await
    .expect("report-outcome");
    (e, report, pgflip_tests::sns_read(&inbox))
}

/// A failed rollout, rolled back: the message names the target, the step,
/// the error and its cause, what pgflip did (flipped to green, redeployed,
/// flipped back to blue, redeployed, stable) and links the execution; the
/// metrics count it under `RotationRolledBack` with both users' password
/// ages. No password anywhere.
#[tokio::test]
async fn a_rolled_back_rotation_reaches_the_alert_topic_with_everything_a_person_needs() {
    let c = case().await;
    let (e, report, published) = run_and_report(
        &c,
        json!({"tasks": {"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "ECS reported a FAILED deployment: cluster pgflip-local: web=FAILED (injected)"}}]}}),
        "pgflip-report-rollback",
    )
    .await;
    assert_eq!(e.error.as_deref(), Some("RotationRolledBack"));
    assert_eq!(published.len(), 1, "{published:?}");
    let (subject, message) = &published[0];
    assert_eq!(
        subject,
        "pgflip default: RotationRolledBack at WaitForStable"
    );
    for needle in [
        "the rotation of target default ended FAILED with RotationRolledBack",
        "Step: WaitForStable\n",
        "Original error RolloutFailed: ECS reported a FAILED deployment: cluster pgflip-local: web=FAILED (injected)",
        "What pgflip already did: set a new password for green (staged, not yet current), verified green's new password and made it current, flipped /pgflip-local/app/active-user to green, redeployed web, worker, flipped back to blue, redeployed web, worker again, stable.",
        "console.aws.amazon.com/states/home",
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
    assert_eq!(report.metrics[0]["Outcome"], "RotationRolledBack");
    assert_eq!(report.metrics[0]["StateTransitions"], e.transitions as f64);
    let users: Vec<&str> = report
        .metrics
        .iter()
        .filter_map(|m| m["User"].as_str())
        .collect();
    assert_eq!(users, ["blue", "green"]);
    // The leak search: neither user's password in what was published or emitted.
    let everything = format!("{published:?} {:?}", report.metrics);
    let rotated = [
        ("blue", AWSCURRENT),
        ("green", AWSCURRENT),
        ("green", "AWSPREVIOUS"),
    ];
    assert_no_password_in(&c, &everything, &rotated).await;
}

/// A rotation that succeeds is counted, not notified.
#[tokio::test]
async fn a_successful_rotation_is_counted_and_not_notified() {
    let c = case().await;
    let (e, report, published) = run_and_report(&c, json!({}), "pgflip-report-success").await;
    assert_eq!(e.status, "SUCCEEDED");
    assert!(published.is_empty(), "{published:?}");
    assert_eq!(report.metrics[0]["Outcome"], "Succeeded");
    let since = report
        .metrics
        .iter()
        .find_map(|m| m["DaysSinceLastRotation"].as_f64())
        .expect("days since the last rotation");
    assert!(since < 0.01, "green's password just changed: {since} days");
}
