//! [`Deployments`] on Amazon ECS.

use async_trait::async_trait;
use aws_sdk_ecs::Client;

use super::aws::{classify, error_code};
use crate::errors::RotationError;
use crate::ports::{DeploymentState, Deployments, ServiceState};

/// `DescribeServices` takes at most 10 services per call.
const DESCRIBE_BATCH: usize = 10;

pub struct EcsDeployments {
    client: Client,
}

impl EcsDeployments {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

const NOT_FOUND: &[&str] = &[
    "ServiceNotFoundException",
    "ServiceNotActiveException",
    "ClusterNotFoundException",
];

#[async_trait]
impl Deployments for EcsDeployments {
    async fn force_new_deployment(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<String, RotationError> {
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .force_new_deployment(true)
            .send()
            .await
            .map_err(|e| match error_code(&e) {
                Some(code) if NOT_FOUND.contains(&code) => {
                    RotationError::ServiceNotFound(format!("{cluster}/{service} ({code})"))
                }
                _ => classify("ecs:UpdateService", e),
            })?;
        out.service
            .and_then(|s| s.deployments)
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.status.as_deref() == Some("PRIMARY"))
            .and_then(|d| d.id)
            .ok_or_else(|| {
                RotationError::AwsRequestFailed(format!(
                    "ecs:UpdateService on {cluster}/{service} returned no PRIMARY deployment"
                ))
            })
    }

    async fn describe(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, RotationError> {
        let mut found = Vec::with_capacity(services.len());
        for batch in services.chunks(DESCRIBE_BATCH) {
            let out = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| match error_code(&e) {
                    Some(code) if NOT_FOUND.contains(&code) => {
                        RotationError::ServiceNotFound(format!("{cluster} ({code})"))
                    }
                    _ => classify("ecs:DescribeServices", e),
                })?;
            found.extend(out.services.unwrap_or_default());
        }
        services
            .iter()
            .map(|name| {
                let service = found
                    .iter()
                    .find(|s| {
                        s.service_name.as_deref() == Some(name.as_str())
                            || s.service_arn.as_deref() == Some(name.as_str())
                    })
                    .filter(|s| s.status.as_deref() != Some("INACTIVE"))
                    .ok_or_else(|| RotationError::ServiceNotFound(format!("{cluster}/{name}")))?;
                Ok(ServiceState {
                    name: name.clone(),
                    controller: service
                        .deployment_controller
                        .as_ref()
                        .map(|c| c.r#type.as_str().to_string()),
                    deployments: service
                        .deployments
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|d| DeploymentState {
                            id: d.id.unwrap_or_default(),
                            status: d.status.unwrap_or_default(),
                            rollout_state: d.rollout_state.map(|r| r.as_str().to_string()),
                            created_at_ms: d.created_at.and_then(|t| t.to_millis().ok()),
                        })
                        .collect(),
                })
            })
            .collect()
    }
}
