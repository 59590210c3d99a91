//! The end of a sweep (`statemachine/sweep.asl.json`'s `ReportOutcome`
//! state): its outcome counted by kind, each failed target with its
//! execution, step and error name, and one notification when any failed.
//! Each failed rotation was already reported on its own (its execution's
//! status change); this is the sweep's summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{console_link, failed_steps, Notification};
use crate::errors::RotationError;
use crate::ports::{ExecutionHistory, Notifier};
use crate::steps::plan_sweep::Refused;

/// At most this many failed executions' histories are read for their step
/// (`states:GetExecutionHistory` refills at 5 per second by default); past
/// it, a failure is listed without its step.
pub const HISTORIES_READ: usize = 50;

/// At most this many failed targets are listed in the message (SNS takes
/// 256 KB); the sweep's output lists all.
const LISTED: usize = 100;

/// What a sweep's Map produced: one array per lane of its targets' results.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepEnded {
    /// The sweep's execution.
    pub execution_arn: String,
    /// Each lane's results: an array of [`LaneResult`], or, for a lane whose
    /// own execution failed (tolerated by the Map), its error or null.
    #[serde(default)]
    pub lanes: Vec<Value>,
    /// How many targets the plan placed in lanes (`$.plan.targets`): a lane
    /// that left no results is counted from it.
    #[serde(default)]
    pub planned: Option<usize>,
    /// The targets `plan-sweep` refused.
    #[serde(default)]
    pub refused: Vec<Refused>,
}

/// One target's result in a lane: `1` for a target that rotated (compact:
/// a state's payload is at most 256 KiB), or the failure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LaneResult {
    Rotated(u8),
    Result(TargetResult),
}

/// A target's result as an object: `{"target", "outcome": "FAILED",
/// "failure": {"Error", "Cause"}}` where the cause of a `States.TaskFailed`
/// is the child execution's description (`states:DescribeExecution` as
/// JSON: `ExecutionArn`, `Status`, `Error`, `Cause`); or `{"target",
/// "outcome": "SUCCEEDED"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetResult {
    pub target: String,
    pub outcome: String,
    #[serde(default)]
    pub execution: Option<String>,
    #[serde(default)]
    pub failure: Option<Value>,
}

/// A target that did not rotate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedTarget {
    pub target: String,
    /// Its rotation's execution (none: refused before one started).
    pub execution: Option<String>,
    /// The step it failed in (`PlanSweep` for a refused target; none when
    /// the history was not read or shows none).
    pub step: Option<String>,
    /// The stable error name: the rotation's (`RotationRolledBack`,
    /// `PrivilegeDrift`, …), or Step Functions' (`States.Timeout`, …).
    pub error: String,
}

/// The sweep's summary: its output and the input of its last Choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub targets: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// `SUCCEEDED` or the error name → how many targets.
    pub by_outcome: BTreeMap<String, usize>,
    pub failures: Vec<FailedTarget>,
    /// One line for the sweep's `Fail` cause.
    pub cause: String,
}

/// A field of the child's description, in the case AWS gives
/// (`ExecutionArn`) or the SDKs' (`executionArn`).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    let lower = format!("{}{}", name[..1].to_ascii_lowercase(), &name[1..]);
    v.get(name)
        .or_else(|| v.get(&lower))
        .and_then(Value::as_str)
}

/// The failed target's execution and error name from its Map result.
fn failure_of(result: &TargetResult) -> (Option<String>, String) {
    let failure = result.failure.as_ref();
    let outer = failure
        .and_then(|f| field(f, "Error"))
        .unwrap_or("Failed")
        .to_string();
    let cause = failure.and_then(|f| field(f, "Cause"));
    // A cause past 32,768 characters arrives cut: no longer JSON, but its
    // first fields are still there.
    let child: Option<Value> = cause.and_then(|c| {
        serde_json::from_str(c).ok().or_else(|| {
            let mut fields = serde_json::Map::new();
            for key in ["ExecutionArn", "Error", "Status"] {
                if let Some(v) = cut_field(c, key) {
                    fields.insert(key.into(), Value::String(v));
                }
            }
            (!fields.is_empty()).then_some(Value::Object(fields))
        })
    });
    let execution = result.execution.clone().or_else(|| {
        child
            .as_ref()
            .and_then(|c| field(c, "ExecutionArn"))
            .map(str::to_string)
    });
    let error = match child.as_ref() {
        Some(c) => match (field(c, "Error"), field(c, "Status")) {
            (Some(e), _) if !e.is_empty() => e.to_string(),
            (_, Some("TIMED_OUT")) => "TimedOut".into(),
            (_, Some("ABORTED")) => "Aborted".into(),
            _ => outer,
        },
        None => outer,
    };
    (execution, error)
}

/// The string value of `"key":"…"` in JSON text that may be cut short
/// (none when the value's end is cut off too).
fn cut_field(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// Counts the sweep's outcome and publishes one notification when any
/// target failed or was refused: the counts by outcome and, per failed
/// target, its execution, step and error name. The step comes from the
/// failed execution's history (`states:GetExecutionHistory`) for the first
/// [`HISTORIES_READ`] failures; a history that cannot be read leaves the
/// step out (a warning), never the summary. Errors: only publishing
/// (`AwsUnavailable`, `AwsRequestFailed`).
pub async fn report_sweep(
    ended: &SweepEnded,
    history: &dyn ExecutionHistory,
    notifier: &dyn Notifier,
) -> Result<(SweepSummary, Option<Notification>), RotationError> {
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut succeeded = 0;
    for refused in &ended.refused {
        *by_outcome.entry(refused.error.clone()).or_default() += 1;
        failures.push(FailedTarget {
            target: refused.target.clone(),
            execution: None,
            step: Some("PlanSweep".into()),
            error: refused.error.clone(),
        });
    }
    let mut histories_read = 0;
    let mut counted = 0;
    let mut lost_lanes = Vec::new();
    let mut results = Vec::new();
    for (i, lane) in ended.lanes.iter().enumerate() {
        match lane.as_array().map(|items| {
            items
                .iter()
                .map(|item| serde_json::from_value::<LaneResult>(item.clone()))
                .collect::<Result<Vec<_>, _>>()
        }) {
            Some(Ok(items)) => results.extend(items),
            _ => lost_lanes.push(lane.get("Error").and_then(Value::as_str).map_or_else(
                || format!("lane {i}: no results"),
                |e| format!("lane {i}: {e}"),
            )),
        }
    }
    for result in &results {
        counted += 1;
        let result = match result {
            LaneResult::Result(r) if r.outcome != "SUCCEEDED" => r,
            _ => {
                succeeded += 1;
                *by_outcome.entry("SUCCEEDED".into()).or_default() += 1;
                continue;
            }
        };
        let (execution, error) = failure_of(result);
        let step = match &execution {
            Some(arn) if histories_read < HISTORIES_READ => {
                histories_read += 1;
                match history.history(arn).await {
                    Ok(events) => failed_steps(&events).0,
                    Err(e) => {
                        tracing::warn!(error = e.name(), "{e}: listing {arn} without its step");
                        None
                    }
                }
            }
            _ => None,
        };
        *by_outcome.entry(error.clone()).or_default() += 1;
        failures.push(FailedTarget {
            target: result.target.clone(),
            execution,
            step,
            error,
        });
    }
    // A lane whose execution failed left no results: its targets are
    // counted from the plan, under NoResult.
    let missing = match ended.planned {
        Some(planned) => planned.saturating_sub(counted),
        None => lost_lanes.len(),
    };
    if missing > 0 {
        *by_outcome.entry("NoResult".into()).or_default() += missing;
        failures.push(FailedTarget {
            target: format!("({missing} targets without a result)"),
            execution: None,
            step: None,
            error: if lost_lanes.is_empty() {
                "NoResult".into()
            } else {
                lost_lanes.join("; ")
            },
        });
    }
    let failed = failures.len() - usize::from(missing > 0) + missing;
    let targets = succeeded + failed;
    let counts = by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cause = format!(
        "{failed} of {targets} targets did not rotate ({counts}); each rotation has its own execution history"
    );
    let notification = (failed > 0).then(|| {
        let mut message = format!(
            "pgflip: a sweep ended with {failed} of {targets} targets not rotated.\n\nOutcomes: {counts}.\n\n"
        );
        for f in failures.iter().take(LISTED) {
            message.push_str(&format!(
                "- {}: {} at {}{}\n",
                f.target,
                f.error,
                f.step.as_deref().unwrap_or("(step not read)"),
                f.execution
                    .as_deref()
                    .map(|e| format!(", {}", console_link(e)))
                    .unwrap_or_default()
            ));
        }
        if failed > LISTED {
            message.push_str(&format!("- and {} more (the sweep's output lists all)\n", failed - LISTED));
        }
        message.push_str(&format!("\nSweep: {}\n", console_link(&ended.execution_arn)));
        message.push_str(
            "Each failed rotation was also reported on its own. The README's error table says what each error means.\n",
        );
        Notification {
            subject: format!("pgflip sweep: {failed} of {targets} targets not rotated"),
            message,
        }
    });
    if let Some(n) = &notification {
        notifier.publish(&n.subject, &n.message).await?;
    }
    Ok((
        SweepSummary {
            targets,
            succeeded,
            failed,
            by_outcome,
            failures,
            cause,
        },
        notification,
    ))
}
