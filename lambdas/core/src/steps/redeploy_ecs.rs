//! Step 5, `redeploy-ecs` (ASL states `RedeployEcs`, `RollbackRedeployEcs`).

use tracing::info;

use super::guard::now_ms;
use crate::domain::{dedup, RedeployRequest, Rollout, RolloutStatus, ServiceDeployment};
use crate::errors::RotationError;
use crate::ports::Deployments;

/// Step 5: force a new deployment of every service, all at once (each
/// service once, even when named twice: a second deployment would supersede
/// the first, which would then be watched in vain).
pub async fn redeploy_ecs(
    request: &RedeployRequest,
    deployments: &dyn Deployments,
) -> Result<Rollout, RotationError> {
    let services = dedup(request.services.iter().map(String::as_str));
    if services.is_empty() {
        return Err(RotationError::InvalidInput(
            "field \"services\" is empty".into(),
        ));
    }
    let started = futures::future::join_all(
        services
            .iter()
            .map(|service| deployments.force_new_deployment(&request.cluster, service)),
    )
    .await;
    let mut out = Vec::with_capacity(started.len());
    for (service, result) in services.iter().zip(started) {
        let deployment = result?;
        info!(cluster = %request.cluster, %service, deployment_id = %deployment.id, "forced a new deployment");
        out.push(ServiceDeployment {
            service: service.clone(),
            deployment_id: deployment.id,
            // Without ECS's time, now: what is older than this is not ours.
            created_ms: deployment.created_at_ms.or_else(|| Some(now_ms())),
            rollout_state: None,
        });
    }
    Ok(Rollout {
        cluster: request.cluster.clone(),
        deployments: out,
        status: RolloutStatus::InProgress,
        poll_seconds: request.stable_poll_seconds,
        deadline_ms: now_ms().saturating_add(request.stable_timeout_seconds as i64 * 1000),
        alert: request.alert.clone(),
        foreign: false,
        looks: 0,
    })
}
