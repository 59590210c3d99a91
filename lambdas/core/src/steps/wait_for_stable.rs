//! Step 6, `wait-for-stable` (ASL states `WaitForStable`, `RollbackWaitForStable`).

use tracing::info;

use crate::domain::{Rollout, RolloutStatus, MAX_LOOKS};
use crate::errors::RotationError;
use crate::ports::Deployments;
use crate::rollout::{service_state, state_name};

/// Step 6: look at the deployments once. Completed or still in progress
/// (a normal outcome, not an error): the rollout comes back with its
/// `status` (`COMPLETED`, `IN_PROGRESS`), which the state machine's `Choice`
/// reads to wait and look again. Otherwise an error the state machine acts
/// on: `RolloutFailed` or `RolloutTimedOut` (it rolls back),
/// `ActiveUserRotatedExternally` (completed, but the execution must still
/// fail loudly). A rollout this execution did not start (mode `wait`) that
/// fails or runs out of time is `ForeignRolloutFailed` instead: the state
/// machine stops without moving the pointer. Three state transitions per
/// look: the Wait, this and the Choice; at most [`MAX_LOOKS`] looks,
/// whatever the clock.
pub async fn wait_for_stable(
    rollout: &Rollout,
    deployments: &dyn Deployments,
    now_ms: i64,
) -> Result<Rollout, RotationError> {
    let services: Vec<String> = rollout
        .deployments
        .iter()
        .map(|d| d.service.clone())
        .collect();
    let described = deployments.describe(&rollout.cluster, &services).await?;
    let mut next = rollout.clone();
    next.looks = rollout.looks.saturating_add(1);
    let mut states = Vec::with_capacity(services.len());
    for (tracked, current) in next.deployments.iter_mut().zip(&described) {
        let (state, detail) = service_state(tracked, current);
        tracked.rollout_state = Some(match detail {
            Some(detail) => format!("{}({detail})", state_name(state)),
            None => state_name(state).to_string(),
        });
        states.push(state);
    }
    next.status = if states.contains(&RolloutStatus::Failed) {
        RolloutStatus::Failed
    } else if states.iter().all(|s| *s == RolloutStatus::Completed) {
        RolloutStatus::Completed
    } else {
        RolloutStatus::InProgress
    };
    let summary = next.summary();
    info!(status = ?next.status, %summary, "looked at the rollout");
    let out_of_time = next.status == RolloutStatus::InProgress
        && (now_ms >= rollout.deadline_ms || next.looks >= MAX_LOOKS);
    if rollout.foreign && (next.status == RolloutStatus::Failed || out_of_time) {
        let what = if out_of_time {
            "not finished by the deadline"
        } else {
            "failed"
        };
        return Err(RotationError::ForeignRolloutFailed(format!(
            "{summary}: {what}"
        )));
    }
    match next.status {
        RolloutStatus::Failed => Err(RotationError::RolloutFailed(summary)),
        RolloutStatus::InProgress if out_of_time => Err(RotationError::RolloutTimedOut(format!(
            "{summary} (after {} looks)",
            next.looks
        ))),
        RolloutStatus::InProgress => Ok(next),
        RolloutStatus::Completed => match &rollout.alert {
            Some(_) => Err(RotationError::ActiveUserRotatedExternally(summary)),
            None => Ok(next),
        },
    }
}
