//! `report-outcome`: not a step of the rotation but what follows it. When an
//! execution of the rotation state machine ends (EventBridge's "Step
//! Functions Execution Status Change"), it emits the execution's metrics in
//! CloudWatch's embedded metric format (EMF) and, for an execution that did
//! not succeed, publishes a message a person can act on. On a schedule it
//! emits each target's password ages, so that a rotation that stopped
//! happening is noticed (the staleness alarm).
//!
//! It reads names, dates and the execution history, never a password.

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::select_user::{resolve_target, SelectRequest};
use crate::config::{TargetConfig, Targets};
use crate::errors::RotationError;
use crate::input::DEFAULT_TARGET;
use crate::ports::{ExecutionHistory, HistoryEvent, Notifier, ParameterStore, SecretStore};

mod sweep;
pub use sweep::{report_sweep, FailedTarget, LaneResult, SweepEnded, SweepSummary, TargetResult};

const DAY_MS: f64 = 86_400_000.0;

/// How many targets' password ages are read at once (the schedule's report
/// of a fleet: 10,000 targets at ~3 calls each within the function's
/// timeout, below Secrets Manager's ListSecretVersionIds rate).
const AGES_AT_ONCE: usize = 8;

/// What the function is invoked with.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportRequest {
    /// An execution of the rotation state machine ended.
    Ended(EndedExecution),
    /// The schedule: every target's password ages (`{"report": "passwordAges"}`).
    PasswordAges,
    /// A sweep's Map ended (`{"sweep": {"executionArn", "lanes", "refused"}}`).
    Sweep(SweepEnded),
}

/// The `detail` of a "Step Functions Execution Status Change" event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedExecution {
    pub execution_arn: String,
    pub name: String,
    /// `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_ms: Option<i64>,
    pub stop_ms: Option<i64>,
    /// The execution's input (a JSON string), when the event carries it.
    pub input: Option<String>,
}

impl ReportRequest {
    /// Parses the invocation payload. Anything else is `InvalidInput`.
    pub fn parse(payload: &Value) -> Result<Self, RotationError> {
        if payload.get("report").and_then(Value::as_str) == Some("passwordAges") {
            return Ok(Self::PasswordAges);
        }
        if let Some(sweep) = payload.get("sweep") {
            return serde_json::from_value(sweep.clone())
                .map(Self::Sweep)
                .map_err(|e| RotationError::InvalidInput(format!("the sweep's results: {e}")));
        }
        let detail = payload
            .get("detail")
            .filter(|_| {
                payload.get("detail-type").and_then(Value::as_str)
                    == Some("Step Functions Execution Status Change")
            })
            .ok_or_else(|| {
                RotationError::InvalidInput(
                    "expected a \"Step Functions Execution Status Change\" event, {\"report\": \"passwordAges\"} or {\"sweep\": …}".into(),
                )
            })?;
        let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_string);
        let arn = text("executionArn")
            .ok_or_else(|| RotationError::InvalidInput("the event has no executionArn".into()))?;
        Ok(Self::Ended(EndedExecution {
            name: text("name").unwrap_or_else(|| arn.rsplit(':').next().unwrap_or("").into()),
            execution_arn: arn,
            status: text("status").unwrap_or_default(),
            start_ms: detail.get("startDate").and_then(Value::as_i64),
            stop_ms: detail.get("stopDate").and_then(Value::as_i64),
            input: text("input"),
        }))
    }
}

/// A message for the alert topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub subject: String,
    pub message: String,
}

/// What `report_outcome` did: the EMF documents it printed (one JSON line
/// each) and the message it published, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub metrics: Vec<Value>,
    pub notification: Option<Notification>,
}

/// The outcome an execution is counted under: `Succeeded`, `DryRun`, the
/// error name it failed with (`RotationRolledBack`, `PrivilegeDrift`, …),
/// `TimedOut` or `Aborted`.
pub fn outcome(status: &str, history: &[HistoryEvent]) -> String {
    let error = history.iter().rev().find_map(|e| match e {
        HistoryEvent::Ended { error, .. } => error.clone(),
        _ => None,
    });
    match status {
        "SUCCEEDED" if entered(history, "DryRunSucceeded") => "DryRun".into(),
        "SUCCEEDED" => "Succeeded".into(),
        "TIMED_OUT" => "TimedOut".into(),
        "ABORTED" => "Aborted".into(),
        _ => error.unwrap_or_else(|| "Failed".into()),
    }
}

fn entered(history: &[HistoryEvent], state: &str) -> bool {
    history
        .iter()
        .any(|e| matches!(e, HistoryEvent::Entered { state: s } if s == state))
}

/// The Task states of the rotation (the steps and their rollback runs).
const TASKS: &[&str] = &[
    "SelectUser",
    "GenerateAndSetPassword",
    "VerifyLogin",
    "FlipParameter",
    "RedeployEcs",
    "WaitForStable",
    "RollbackFlipParameter",
    "RollbackRedeployEcs",
    "RollbackWaitForStable",
];

/// Where an execution went wrong: the Task it was in when it first left
/// its path (a caught error going to `ChooseRollback` or a `Fail` state, or
/// the end), counted from its last redrive; and, when the rollback failed
/// too, the Task the rollback stopped in.
pub fn failed_steps(history: &[HistoryEvent]) -> (Option<String>, Option<String>) {
    let last_task = |events: &[HistoryEvent]| {
        events.iter().rev().find_map(|e| match e {
            HistoryEvent::Entered { state } if TASKS.contains(&state.as_str()) => {
                Some(state.clone())
            }
            _ => None,
        })
    };
    let from = history
        .iter()
        .rposition(|e| matches!(e, HistoryEvent::Redriven))
        .map_or(0, |i| i + 1);
    let mut task = last_task(&history[..from]);
    let mut first = None;
    for e in &history[from..] {
        match e {
            HistoryEvent::Entered { state } if TASKS.contains(&state.as_str()) => {
                task = Some(state.clone())
            }
            HistoryEvent::Entered { state }
                if first.is_none()
                    && (state == "ChooseRollback" || FAIL_STATES.contains(&state.as_str())) =>
            {
                first = task.clone();
            }
            HistoryEvent::Ended { .. } if first.is_none() => first = task.clone(),
            _ => {}
        }
    }
    let rollback = last_task(history)
        .filter(|t| t.starts_with("Rollback") && entered(history, "RollbackFailed"));
    (first, rollback)
}

/// The `Fail` states of the rotation state machine.
const FAIL_STATES: &[&str] = &[
    "ActiveUserRotatedExternally",
    "ForeignRolloutFailed",
    "StoppedWithoutRollback",
    "RotationRolledBack",
    "RollbackFailed",
];

fn exited<'a>(history: &'a [HistoryEvent], state: &str) -> Option<&'a Option<Value>> {
    history.iter().rev().find_map(|e| match e {
        HistoryEvent::Exited { state: s, output } if s == state => Some(output),
        _ => None,
    })
}

/// What the execution changed, in order, from the states it left
/// successfully (the plan `SelectUser` returned names the users).
pub fn what_was_done(history: &[HistoryEvent]) -> Vec<String> {
    let plan = exited(history, "SelectUser")
        .and_then(|o| o.clone())
        .unwrap_or(Value::Null);
    let s = |k: &str| {
        plan.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let (target, previous, parameter) = (s("targetUser"), s("previousUser"), s("parameterName"));
    let services = plan
        .get("services")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut done = Vec::new();
    let status_of = |state: &str, key: &str| {
        exited(history, state)
            .and_then(|o| o.as_ref())
            .and_then(|o| o.get(key))
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if exited(history, "GenerateAndSetPassword").is_some() {
        done.push(format!(
            "set a new password for {target} (staged, not yet current)"
        ));
    }
    if exited(history, "VerifyLogin").is_some() {
        done.push(format!(
            "verified {target}'s new password and made it current"
        ));
    }
    if exited(history, "FlipParameter").is_some() {
        done.push(format!("flipped {parameter} to {target}"));
    }
    if exited(history, "RedeployEcs").is_some() {
        done.push(format!("redeployed {services}"));
    }
    if status_of("WaitForStable", "rollout").as_deref() == Some("COMPLETED") {
        done.push("the rollout completed".into());
    }
    if exited(history, "RollbackFlipParameter").is_some() {
        done.push(format!("flipped back to {previous}"));
    }
    if exited(history, "RollbackRedeployEcs").is_some() {
        done.push(format!("redeployed {services} again"));
    }
    if status_of("RollbackWaitForStable", "rollbackRollout").as_deref() == Some("COMPLETED") {
        done.push("stable".into());
    }
    done
}

/// The Step Functions console page of an execution.
pub fn console_link(execution_arn: &str) -> String {
    let region = execution_arn.split(':').nth(3).unwrap_or("us-east-1");
    format!(
        "https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"
    )
}

/// The message for an execution that did not succeed (`None` for one that
/// did): the target, the step, the error name and cause, what pgflip
/// already did, and a link to the execution.
pub fn notification(
    ended: &EndedExecution,
    target: &str,
    history: &[HistoryEvent],
) -> Option<Notification> {
    if ended.status == "SUCCEEDED" {
        return None;
    }
    let outcome = outcome(&ended.status, history);
    let cause = history
        .iter()
        .rev()
        .find_map(|e| match e {
            HistoryEvent::Ended { cause, .. } => cause.clone(),
            _ => None,
        })
        .unwrap_or_default();
    let (step, rollback_step) = failed_steps(history);
    let done = what_was_done(history);
    let mut message = format!(
        "pgflip: the rotation of target {target} ended {} with {outcome}.\n\n",
        ended.status
    );
    message.push_str(&format!(
        "Step: {}{}\n",
        step.as_deref()
            .unwrap_or("(none: it ended before its first step)"),
        rollback_step
            .map(|r| format!(" (then the rollback stopped in {r})"))
            .unwrap_or_default()
    ));
    message.push_str(&format!("Error: {outcome}\n"));
    let cause: String = cause.chars().take(2000).collect();
    if !cause.is_empty() {
        message.push_str(&format!("Cause: {cause}\n"));
    }
    message.push_str(&format!(
        "What pgflip already did: {}.\n",
        if done.is_empty() {
            "nothing was changed".to_string()
        } else {
            done.join(", ")
        }
    ));
    message.push_str(&format!(
        "Execution: {}\n{}\n",
        ended.name,
        console_link(&ended.execution_arn)
    ));
    message.push_str(
        "The README's error table says what each error means and what to do; a failed execution can be redriven from the console once the cause is fixed.\n",
    );
    Some(Notification {
        subject: format!(
            "pgflip {target}: {outcome} at {}",
            step.as_deref().unwrap_or(&ended.status)
        ),
        message,
    })
}

/// One EMF document: `metrics` (name, unit, value) under `namespace`, with
/// the dimension sets `dimensions` over the `properties` that name them.
pub fn emf(
    namespace: &str,
    timestamp_ms: i64,
    dimensions: &[&[&str]],
    properties: &[(&str, Value)],
    metrics: &[(&str, &str, f64)],
) -> Value {
    let mut doc = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dimensions,
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        },
    });
    for (k, v) in properties {
        doc[*k] = v.clone();
    }
    for (name, _, value) in metrics {
        doc[*name] = json!(value);
    }
    doc
}

/// The name a target is reported under.
fn target_name(config: &TargetConfig) -> String {
    config.name.clone().unwrap_or_else(|| DEFAULT_TARGET.into())
}

/// Each user's password age, from when the version holding it was created
/// (`crate::steps::password_dates`: `AWSCURRENT` of each user's secret, or
/// in the alternating layout `AWSCURRENT` and `AWSPREVIOUS` of the one): `PasswordAgeDays` per user and per
/// target (the oldest), and `DaysSinceLastRotation` (the newest password's
/// age) per target and for the whole stack, which the staleness alarm
/// watches.
pub async fn password_age_metrics(
    config: &TargetConfig,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
    namespace: &str,
    now_ms: i64,
) -> Result<Vec<Value>, RotationError> {
    let target = target_name(config);
    let mut docs = Vec::new();
    let mut ages = Vec::new();
    let dates = crate::steps::password_dates(config, parameters, secrets).await?;
    for (user, version) in &dates.passwords {
        let Some(created) = version.as_ref().and_then(|v| v.created_ms) else {
            warn!(%user, "no version holds this password: no password age to report");
            continue;
        };
        let age = (now_ms - created).max(0) as f64 / DAY_MS;
        ages.push(age);
        docs.push(emf(
            namespace,
            now_ms,
            &[&["Target", "User"], &["Target"]],
            &[("Target", json!(target)), ("User", json!(user))],
            &[("PasswordAgeDays", "None", age)],
        ));
    }
    if let Some(newest) = ages.iter().copied().reduce(f64::min) {
        docs.push(emf(
            namespace,
            now_ms,
            &[&["Target"], &[]],
            &[("Target", json!(target))],
            &[("DaysSinceLastRotation", "None", newest)],
        ));
    }
    Ok(docs)
}

/// The password store a target's passwords are in.
fn store<'a>(
    config: &TargetConfig,
    secrets_manager: &'a dyn SecretStore,
    ssm: &'a dyn SecretStore,
) -> &'a dyn SecretStore {
    match config.password_store {
        crate::domain::StoreKind::SecretsManager => secrets_manager,
        crate::domain::StoreKind::Ssm => ssm,
    }
}

/// An execution ended: its metrics (`Executions`, `DurationSeconds`,
/// `StateTransitions` by target and outcome, and the target's password
/// ages) and, unless it succeeded, the notification, published through
/// `notifier`. The history comes from `ExecutionHistory`; the target from
/// the execution's input, resolved like `select-user` does. A target that
/// no longer resolves is reported under its name without password ages.
#[allow(clippy::too_many_arguments)]
pub async fn report_outcome(
    ended: &EndedExecution,
    targets: &Targets,
    default: &TargetConfig,
    parameters: &dyn ParameterStore,
    secrets_manager: &dyn SecretStore,
    ssm: &dyn SecretStore,
    history: &dyn ExecutionHistory,
    notifier: &dyn Notifier,
    namespace: &str,
    now_ms: i64,
) -> Result<Report, RotationError> {
    let events = history.history(&ended.execution_arn).await?;
    let input: Value = ended
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(Value::Null);
    let request = SelectRequest {
        input: input.clone(),
        execution_id: ended.execution_arn.clone(),
        execution_name: ended.name.clone(),
    };
    let config = match resolve_target(targets, default, &request, parameters).await {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(
                error = e.name(),
                "{e}: reporting without the target's password ages"
            );
            None
        }
    };
    let target = match &config {
        Some(c) => target_name(c),
        None => input
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_TARGET)
            .to_string(),
    };
    let outcome = outcome(&ended.status, &events);
    let transitions = events
        .iter()
        .filter(|e| matches!(e, HistoryEvent::Entered { .. }))
        .count();
    let duration = match (ended.start_ms, ended.stop_ms) {
        (Some(a), Some(b)) => (b - a).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    let mut metrics = vec![emf(
        namespace,
        ended.stop_ms.unwrap_or(now_ms),
        &[&["Target", "Outcome"], &["Outcome"]],
        &[
            ("Target", json!(target)),
            ("Outcome", json!(outcome)),
            ("Execution", json!(ended.execution_arn)),
        ],
        &[
            ("Executions", "Count", 1.0),
            ("DurationSeconds", "Seconds", duration),
            ("StateTransitions", "Count", transitions as f64),
        ],
    )];
    if let Some(c) = &config {
        let store = store(c, secrets_manager, ssm);
        match password_age_metrics(c, parameters, store, namespace, now_ms).await {
            Ok(docs) => metrics.extend(docs),
            Err(e) => warn!(error = e.name(), "{e}: no password ages this time"),
        }
    }
    let notification = notification(ended, &target, &events);
    if let Some(n) = &notification {
        notifier.publish(&n.subject, &n.message).await?;
    }
    info!(%target, %outcome, transitions, duration_seconds = duration, notified = notification.is_some(), "reported the execution");
    Ok(Report {
        metrics,
        notification,
    })
}

/// The schedule: every target's password ages (the environment's target and
/// each of the targets document). A target that fails to resolve or read
/// is logged and skipped; the others are reported.
pub async fn report_password_ages(
    targets: &Targets,
    default: &TargetConfig,
    parameters: &dyn ParameterStore,
    secrets_manager: &dyn SecretStore,
    ssm: &dyn SecretStore,
    namespace: &str,
    now_ms: i64,
) -> Result<Vec<Value>, RotationError> {
    let mut configs = Vec::new();
    for (name, config) in super::registry::all_targets(targets, default, parameters).await? {
        match config {
            Ok(c) => configs.push(c),
            Err(e) => warn!(target = %name, error = e.name(), "{e}: skipped"),
        }
    }
    // AGES_AT_ONCE targets at a time (each ~3 calls: ListSecretVersionIds
    // per user, GetParameter), in the registry's order.
    let ages: Vec<(String, Result<Vec<Value>, RotationError>)> = stream::iter(&configs)
        .map(|c| async move {
            let docs = password_age_metrics(
                c,
                parameters,
                store(c, secrets_manager, ssm),
                namespace,
                now_ms,
            )
            .await;
            (target_name(c), docs)
        })
        .buffered(AGES_AT_ONCE)
        .collect()
        .await;
    let mut docs = Vec::new();
    for (target, result) in ages {
        match result {
            Ok(d) => docs.extend(d),
            Err(e) => warn!(%target, error = e.name(), "{e}: skipped"),
        }
    }
    Ok(docs)
}
