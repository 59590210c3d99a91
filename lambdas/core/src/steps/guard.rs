//! The concurrency guard of `select-user`: one rotation per target at a time.

use serde_json::Value;

use crate::errors::RotationError;
use crate::input::ExecutionInput;
use crate::ports::{Executions, RunningExecution};

/// Executions older than the state machine's own timeout cannot be running.
const GUARD_MAX_AGE_MS: i64 = 6 * 3600 * 1000;

/// A sweep's `TimeoutSeconds` (24 h).
const SWEEP_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

pub fn now_ms() -> i64 {
    // The fakes' clock runs ahead of the real one (each write a second
    // later): in unit tests, now is after everything they wrote so far.
    #[cfg(test)]
    return crate::fakes::now();
    #[cfg(not(test))]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(i64::MAX)
}

/// The running executions of `me`'s state machine that started before it
/// (then by the smaller ARN), oldest first, younger than `max_age_ms`.
/// Every execution lists itself as running before it asks, so two
/// executions always agree on which one started first; one not listed yet
/// (eventual consistency) counts every listed one as earlier.
async fn started_before(
    executions: &dyn Executions,
    me: &str,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<Vec<RunningExecution>, RotationError> {
    let running = executions.running(me).await?;
    let my_start = running
        .iter()
        .find(|e| e.arn == me)
        .map_or(i64::MAX, |e| e.started_ms);
    let mut earlier: Vec<RunningExecution> = running
        .into_iter()
        .filter(|e| e.arn != me && now_ms.saturating_sub(e.started_ms) < max_age_ms)
        .filter(|e| (e.started_ms, e.arn.as_str()) < (my_start, me))
        .collect();
    earlier.sort_by_key(|e| (e.started_ms, e.arn.clone()));
    Ok(earlier)
}

/// The concurrency guard, per target: of the running executions of the same
/// target, the one that started first (then the smaller ARN) proceeds; every
/// other fails fast. Every execution lists itself as running before it gets
/// here, so two executions always agree on which one goes on. Executions of
/// other targets, and sweeps (which only start executions), do not count.
/// Only executions that started earlier are looked at more closely
/// (`DescribeExecution` for their input): usually there are none.
pub(crate) async fn guard(
    executions: &dyn Executions,
    me: &str,
    my_target: Option<&str>,
    now_ms: i64,
) -> Result<(), RotationError> {
    for other in started_before(executions, me, now_ms, GUARD_MAX_AGE_MS).await? {
        let raw = executions.input(&other.arn).await?;
        let value: Value = match raw.as_deref().map(serde_json::from_str).transpose() {
            Ok(v) => v.unwrap_or(Value::Null),
            // Not JSON: it fails at its first step, having changed nothing.
            Err(_) => continue,
        };
        let Ok(theirs) = ExecutionInput::parse(&value) else {
            continue; // the same: its select-user refuses that input
        };
        if theirs.targets.is_some() {
            continue; // a sweep: its child executions are guarded themselves
        }
        if theirs.target.as_deref() == my_target {
            return Err(RotationError::RotationInProgress(other.arn.clone()));
        }
    }
    Ok(())
}

/// The sweep's guard (`plan-sweep`): one sweep at a time, so that the
/// limits per database server and per cluster hold across sweeps too. Of
/// the running executions of the sweep state machine
/// (`states:ListExecutions`), the one that started first (then the smaller
/// ARN) goes on; any later one fails `SweepInProgress` naming it, having
/// started nothing.
pub(crate) async fn sweep_guard(
    executions: &dyn Executions,
    me: &str,
    now_ms: i64,
) -> Result<(), RotationError> {
    match started_before(executions, me, now_ms, SWEEP_MAX_AGE_MS)
        .await?
        .first()
    {
        Some(first) => Err(RotationError::SweepInProgress(first.arn.clone())),
        None => Ok(()),
    }
}
