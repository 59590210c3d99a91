//! [`Deployments`] on Amazon ECS.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use tracing::warn;

use super::aws::{classify, classify_or};
use crate::errors::RotationError;
use crate::ports::{
    DeploymentState, Deployments, ServiceDeploymentState, ServiceState, StandaloneTask,
    StartedDeployment, Workloads,
};

/// `DescribeServices` takes at most 10 services per call.
const DESCRIBE_BATCH: usize = 10;
/// `DescribeServiceDeployments` takes at most 20 service deployments per call.
const SERVICE_DEPLOYMENT_BATCH: usize = 20;
/// `DescribeTasks` takes at most 100 tasks per call.
const DESCRIBE_TASKS_BATCH: usize = 100;

pub struct EcsDeployments {
    client: Client,
}

impl EcsDeployments {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// `DescribeServiceDeployments`, by ARN. A service deployment ECS could
    /// not describe is left out (and logged).
    async fn service_deployments(
        &self,
        arns: &[String],
    ) -> Result<HashMap<String, ServiceDeploymentState>, RotationError> {
        let mut out = HashMap::with_capacity(arns.len());
        for batch in arns.chunks(SERVICE_DEPLOYMENT_BATCH) {
            let response = self
                .client
                .describe_service_deployments()
                .set_service_deployment_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    classify_or("ecs:DescribeServiceDeployments", e, |code| {
                        NOT_FOUND.contains(&code).then(|| {
                            RotationError::ServiceNotFound(format!("{} ({code})", batch.join(", ")))
                        })
                    })
                })?;
            for failure in response.failures.unwrap_or_default() {
                warn!(
                    service_deployment = failure.arn.as_deref().unwrap_or_default(),
                    reason = failure.reason.as_deref().unwrap_or_default(),
                    detail = failure.detail.as_deref().unwrap_or_default(),
                    "ECS could not describe a service deployment"
                );
            }
            for d in response.service_deployments.unwrap_or_default() {
                let Some(arn) = d.service_deployment_arn else {
                    continue;
                };
                out.insert(
                    arn.clone(),
                    ServiceDeploymentState {
                        arn,
                        status: d.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
                        lifecycle_stage: d.lifecycle_stage.map(|s| s.as_str().to_string()),
                        target_revision_arn: d.target_service_revision.and_then(|r| r.arn),
                        created_at_ms: d.created_at.and_then(|t| t.to_millis().ok()),
                    },
                );
            }
        }
        Ok(out)
    }
}

const NOT_FOUND: &[&str] = &[
    "ServiceNotFoundException",
    "ServiceNotActiveException",
    "ClusterNotFoundException",
];

/// A call on the cluster as a whole that ECS answered with one of
/// [`NOT_FOUND`]: `ServiceNotFound` naming the cluster.
fn cluster_missing(cluster: &str, code: &str) -> Option<RotationError> {
    NOT_FOUND
        .contains(&code)
        .then(|| RotationError::ServiceNotFound(format!("{cluster} ({code})")))
}

#[async_trait]
impl Deployments for EcsDeployments {
    async fn force_new_deployment(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<StartedDeployment, RotationError> {
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .force_new_deployment(true)
            .send()
            .await
            .map_err(|e| {
                classify_or("ecs:UpdateService", e, |code| {
                    NOT_FOUND.contains(&code).then(|| {
                        RotationError::ServiceNotFound(format!("{cluster}/{service} ({code})"))
                    })
                })
            })?;
        out.service
            .and_then(|s| s.deployments)
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.status.as_deref() == Some("PRIMARY"))
            .and_then(|d| {
                Some(StartedDeployment {
                    created_at_ms: d.created_at.and_then(|t| t.to_millis().ok()),
                    id: d.id?,
                })
            })
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
                .map_err(|e| {
                    classify_or("ecs:DescribeServices", e, |code| {
                        cluster_missing(cluster, code)
                    })
                })?;
            found.extend(out.services.unwrap_or_default());
        }
        let mut states = services
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
                let state = ServiceState {
                    name: name.clone(),
                    controller: service
                        .deployment_controller
                        .as_ref()
                        .map(|c| c.r#type.as_str().to_string()),
                    strategy: service
                        .deployment_configuration
                        .as_ref()
                        .and_then(|c| c.strategy.as_ref())
                        .map(|s| s.as_str().to_string()),
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
                            task_definition: d.task_definition,
                        })
                        .collect(),
                    service_deployment: None,
                };
                // Rolling services are watched through `rolloutState` alone.
                let current = service
                    .current_service_deployment
                    .clone()
                    .filter(|_| state.shifts_traffic());
                Ok((state, current))
            })
            .collect::<Result<Vec<_>, RotationError>>()?;

        let mut arns: Vec<String> = states.iter().filter_map(|(_, arn)| arn.clone()).collect();
        arns.sort();
        arns.dedup();
        if !arns.is_empty() {
            let described = self.service_deployments(&arns).await?;
            for (state, arn) in &mut states {
                if let Some(arn) = arn {
                    state.service_deployment = described.get(arn.as_str()).cloned();
                }
            }
        }
        Ok(states.into_iter().map(|(state, _)| state).collect())
    }
}

/// The last segment of an ARN (`…:service/<cluster>/<name>` → `<name>`).
fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[async_trait]
impl Workloads for EcsDeployments {
    async fn services(&self, cluster: &str) -> Result<Vec<String>, RotationError> {
        let arns: Vec<String> = self
            .client
            .list_services()
            .cluster(cluster)
            .max_results(100)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| {
                classify_or("ecs:ListServices", e, |code| cluster_missing(cluster, code))
            })?;
        let mut names: Vec<String> = arns.iter().map(|a| last_segment(a).to_string()).collect();
        names.sort();
        Ok(names)
    }

    async fn standalone_tasks(&self, cluster: &str) -> Result<Vec<StandaloneTask>, RotationError> {
        let not_found = |code: &str| cluster_missing(cluster, code);
        let arns: Vec<String> = self
            .client
            .list_tasks()
            .cluster(cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .max_results(100)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| classify_or("ecs:ListTasks", e, not_found))?;
        let mut out = Vec::new();
        for batch in arns.chunks(DESCRIBE_TASKS_BATCH) {
            let described = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify_or("ecs:DescribeTasks", e, not_found))?;
            for task in described.tasks.unwrap_or_default() {
                // A service's tasks are its deployments' concern.
                if task
                    .group
                    .as_deref()
                    .is_some_and(|g| g.starts_with("service:"))
                {
                    continue;
                }
                let (Some(arn), Some(task_definition)) = (task.task_arn, task.task_definition_arn)
                else {
                    continue;
                };
                out.push(StandaloneTask {
                    arn,
                    task_definition,
                    created_ms: task.created_at.and_then(|t| t.to_millis().ok()),
                });
            }
        }
        Ok(out)
    }

    async fn references(&self, task_definition: &str) -> Result<Vec<String>, RotationError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| classify("ecs:DescribeTaskDefinition", e))?;
        let mut values = Vec::new();
        for container in out
            .task_definition
            .and_then(|t| t.container_definitions)
            .unwrap_or_default()
        {
            values.extend(
                container
                    .secrets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.value_from),
            );
            values.extend(
                container
                    .environment
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|e| e.value),
            );
        }
        Ok(values)
    }
}
