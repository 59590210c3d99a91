//! How ECS deployments are read: one place decides what a deployment's state
//! means (ours, one that replaced ours, an older one, rolled back), for both
//! the mode `select-user` picks and the looks of `wait-for-stable`.

use crate::domain::{Mode, RolloutStatus, ServiceDeployment};
use crate::ports::{DeploymentState, ServiceState};

pub fn primary(deployments: &[DeploymentState]) -> Option<&DeploymentState> {
    deployments.iter().find(|d| d.status == "PRIMARY")
}

/// Whether the services have caught up with the last change of the pointer.
pub fn rollout_mode(flipped_ms: Option<i64>, described: &[ServiceState]) -> Mode {
    let mut mode = Mode::Rotate;
    for service in described {
        let Some(p) = primary(&service.deployments) else {
            continue;
        };
        if let (Some(flipped), Some(created)) = (flipped_ms, p.created_at_ms) {
            if created < flipped {
                return Mode::Redeploy;
            }
        }
        if !service.shifts_traffic() {
            if p.rollout_state.as_deref() == Some("IN_PROGRESS") {
                mode = Mode::Wait;
            }
            continue;
        }
        let Some(sd) = &service.service_deployment else {
            continue;
        };
        match service_deployment_outcome(&sd.status) {
            RolloutStatus::InProgress => mode = Mode::Wait,
            // ECS rolled back (or someone stopped) a deployment made after the
            // flip: production traffic went back to tasks that may predate it.
            RolloutStatus::Failed if matches!((flipped_ms, sd.created_at_ms), (Some(f), Some(c)) if c > f) =>
            {
                return Mode::Redeploy;
            }
            _ => {}
        }
    }
    mode
}

pub fn state_name(s: RolloutStatus) -> &'static str {
    match s {
        RolloutStatus::InProgress => "IN_PROGRESS",
        RolloutStatus::Completed => "COMPLETED",
        RolloutStatus::Failed => "FAILED",
    }
}

/// The state of our deployment of one service, with what an operator should
/// see next to it (the lifecycle stage of a traffic-shifting deployment).
/// A deployment newer than ours that replaced it (someone deployed
/// meanwhile) started after the flip too: its outcome stands for ours. An
/// older one that is PRIMARY again is ECS having rolled back: failed.
pub fn service_state(
    ours: &ServiceDeployment,
    service: &ServiceState,
) -> (RolloutStatus, Option<String>) {
    if service.shifts_traffic() {
        shifted_state(ours, service)
    } else {
        rolling_state(ours, &service.deployments)
    }
}

/// Whether `d` was created after our deployment (unknown times: assume so,
/// as before creation times were recorded).
fn newer_than_ours(d: &DeploymentState, ours: &ServiceDeployment) -> bool {
    match (d.created_at_ms, ours.created_ms) {
        (Some(theirs), Some(mine)) => theirs > mine,
        _ => true,
    }
}

/// A rolling service: the `rolloutState` of our deployment, or of the newer
/// PRIMARY that replaced it.
fn rolling_state(
    ours: &ServiceDeployment,
    deployments: &[DeploymentState],
) -> (RolloutStatus, Option<String>) {
    let mine = deployments.iter().find(|d| d.id == ours.deployment_id);
    let primary = primary(deployments);
    let judged = match (mine, primary) {
        // Ours failed: whatever ECS does next (a rollback), it failed.
        (Some(d), _) if d.rollout_state.as_deref() == Some("FAILED") => d,
        (Some(d), _) if d.status == "PRIMARY" => d,
        // Ours was replaced (or is gone): by a newer deployment, whose
        // outcome stands for ours, or by an older one, ECS rolling back.
        (_, Some(p)) if newer_than_ours(p, ours) => p,
        (_, Some(p)) => {
            return (
                RolloutStatus::Failed,
                Some(format!("ROLLED_BACK to {}", p.id)),
            )
        }
        (Some(d), None) => d,
        (None, None) => return (RolloutStatus::InProgress, Some("NO_PRIMARY".into())),
    };
    let state = match judged.rollout_state.as_deref() {
        Some("FAILED") => RolloutStatus::Failed,
        Some("COMPLETED") if judged.status == "PRIMARY" => RolloutStatus::Completed,
        // Without rollout data, a PRIMARY deployment that is the only one left is done.
        None if judged.status == "PRIMARY" && deployments.len() == 1 => RolloutStatus::Completed,
        _ => RolloutStatus::InProgress,
    };
    (state, None)
}

/// A blue/green (or linear, canary) service: the status of the service
/// deployment that rolls out ours (or a newer one that replaced ours). Until
/// it is `SUCCESSFUL` both revisions may run (through `BAKE_TIME`) and ECS may
/// still roll production traffic back to the old tasks, which use the old user.
fn shifted_state(
    ours: &ServiceDeployment,
    service: &ServiceState,
) -> (RolloutStatus, Option<String>) {
    let id = ours.deployment_id.as_str();
    let primary = primary(&service.deployments)
        .filter(|p| p.id != id && newer_than_ours(p, ours))
        .map(|p| p.id.as_str());
    let ours_created = ours.created_ms.or_else(|| {
        service
            .deployments
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.created_at_ms)
    });
    let current = service.service_deployment.as_ref().filter(|sd| {
        let target = sd.target_revision_arn.as_deref();
        deploys(target, id)
            || primary.is_some_and(|p| deploys(target, p))
            // Should the revision numbering ever differ from the deployment
            // id's: a service deployment that began with ours or later is
            // ours or one that replaced it.
            || matches!((sd.created_at_ms, ours_created), (Some(c), Some(o)) if c >= o)
    });
    let Some(sd) = current else {
        // None yet, or ECS still shows the one before ours.
        return (
            RolloutStatus::InProgress,
            Some("AWAITING_SERVICE_DEPLOYMENT".into()),
        );
    };
    let state = service_deployment_outcome(&sd.status);
    let detail = match (state, sd.lifecycle_stage.as_deref()) {
        (RolloutStatus::Completed, _) => None,
        (RolloutStatus::Failed, _) => Some(sd.status.clone()),
        (RolloutStatus::InProgress, Some(stage)) if sd.status == "IN_PROGRESS" => {
            Some(stage.to_string())
        }
        (RolloutStatus::InProgress, Some(stage)) => Some(format!("{} {stage}", sd.status)),
        (RolloutStatus::InProgress, None) => Some(sd.status.clone()),
    };
    (state, detail)
}

/// What an ECS service deployment's status means for the rollout. A rollback
/// (requested, running or done) or a stop means the new tasks will not keep
/// production traffic: failed, whatever ECS does next.
fn service_deployment_outcome(status: &str) -> RolloutStatus {
    match status {
        "SUCCESSFUL" => RolloutStatus::Completed,
        "STOPPED"
        | "STOP_REQUESTED"
        | "ROLLBACK_REQUESTED"
        | "ROLLBACK_IN_PROGRESS"
        | "ROLLBACK_SUCCESSFUL"
        | "ROLLBACK_FAILED" => RolloutStatus::Failed,
        // PENDING, IN_PROGRESS, and any status newer than this code.
        _ => RolloutStatus::InProgress,
    }
}

/// Whether a service revision (`…:service-revision/<cluster>/<service>/<n>`)
/// is the one of a `DescribeServices` deployment (`ecs-svc/<n>`).
fn deploys(revision_arn: Option<&str>, deployment_id: &str) -> bool {
    let number = deployment_id.rsplit('/').next().unwrap_or_default();
    !number.is_empty() && revision_arn.and_then(|a| a.rsplit('/').next()) == Some(number)
}
