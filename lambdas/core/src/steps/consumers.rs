//! Consumer discovery, part of `select-user`: what in the target's ECS
//! cluster takes the target's credentials, found from the task definitions
//! ECS runs rather than from a hand-kept list.
//!
//! A workload (a service, or a task no service started) *consumes* the
//! target when a task definition it runs names, in a container's
//! `secrets[].valueFrom` or `environment[].value`, the active-user parameter
//! or either user's secret (or password parameter). A consumer that names
//! the parameter, or both users' secrets, *follows the pointer*: each task
//! holds the user that was active when it started. One that names a single
//! user's secret is *pinned* to that user.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{info, warn};

use crate::config::TargetConfig;
use crate::domain::{names_resource, Mode, Services, UnlistedConsumers};
use crate::errors::RotationError;
use crate::ports::{Deployments, ServiceState, Workloads};
use crate::rollout::{primary, rollout_mode};

/// `DescribeTaskDefinition` calls in flight at once.
const DESCRIBE_CONCURRENCY: usize = 8;

/// A service, or a running task that no service started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Service(ServiceState),
    Task {
        arn: String,
        /// `createdAt` (milliseconds since the epoch), if ECS said.
        created_ms: Option<i64>,
    },
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Service(s) => write!(f, "service {}", s.name),
            Self::Task { arn, .. } => write!(f, "task {arn}"),
        }
    }
}

/// A workload that takes the target's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub workload: Workload,
    /// It names the active-user parameter, or both users' secrets.
    pub follows_pointer: bool,
    /// The users (keys) whose secret it names, in the order blue, green.
    pub users: Vec<String>,
    /// The values of its task definitions that named them (ARNs or names:
    /// never a secret's value), for the messages.
    pub references: Vec<String>,
}

impl Consumer {
    /// The service's name, if the consumer is a service.
    pub fn service(&self) -> Option<&str> {
        match &self.workload {
            Workload::Service(s) => Some(&s.name),
            Workload::Task { .. } => None,
        }
    }

    /// The name of a service ECS itself deploys (controller `ECS`): one a
    /// forced deployment can redeploy.
    fn redeployable(&self) -> Option<&str> {
        match &self.workload {
            Workload::Service(s) if s.controller.as_deref().is_none_or(|c| c == "ECS") => {
                Some(&s.name)
            }
            _ => None,
        }
    }
}

/// `names` described through `Deployments::describe` (one call), leaving
/// out the ones that are gone: when one was deleted since it was listed or
/// configured (moto keeps listing deleted services), they are described one
/// by one. Errors: the AWS errors of those calls.
async fn describe_present(
    deployments: &dyn Deployments,
    cluster: &str,
    names: &[String],
) -> Result<Vec<ServiceState>, RotationError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    match deployments.describe(cluster, names).await {
        Err(RotationError::ServiceNotFound(_)) => {}
        other => return other,
    }
    let mut found = Vec::new();
    for name in names {
        match deployments
            .describe(cluster, std::slice::from_ref(name))
            .await
        {
            Ok(mut one) => found.append(&mut one),
            Err(RotationError::ServiceNotFound(_)) => {
                info!(cluster = %cluster, service = %name, "gone (deleted): not a consumer")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// The target's configured services (`ECS_SERVICES`, a target's `services`
/// list: the operator's own list of its consumers) that are neither among
/// the `found` consumers nor among this run's `services`, as consumers that
/// follow the pointer. Their task definitions name none of the credentials
/// (the application reads the parameter and the secret itself when it
/// starts), so discovery cannot see them; yet a run limited to some
/// services (the input's `services`) leaves them on the user their tasks
/// started with, and that user's rotation must wait for them like for any
/// consumer. Empty for `services: auto`. Described with one
/// `DescribeServices` call (gone ones left out). Errors: the AWS errors of
/// that call.
pub async fn declared(
    deployments: &dyn Deployments,
    config: &TargetConfig,
    found: &[Consumer],
    services: &[String],
) -> Result<Vec<Consumer>, RotationError> {
    let Services::Listed(listed) = &config.services else {
        return Ok(Vec::new());
    };
    let short = |name: &str| name.rsplit('/').next().unwrap_or(name).to_string();
    let known: BTreeSet<String> = found
        .iter()
        .filter_map(Consumer::service)
        .chain(services.iter().map(String::as_str))
        .map(short)
        .collect();
    let rest: Vec<String> = listed
        .iter()
        .filter(|name| !known.contains(&short(name)))
        .cloned()
        .collect();
    Ok(describe_present(deployments, &config.cluster, &rest)
        .await?
        .into_iter()
        .map(|state| Consumer {
            workload: Workload::Service(state),
            follows_pointer: true,
            users: Vec::new(),
            references: vec!["listed in the target's services".to_string()],
        })
        .collect())
}

/// Every consumer of the target in its cluster: the cluster's services
/// (`Workloads::services`, described through `Deployments::describe`) and its
/// standalone tasks, with the task definitions each runs (a service: those of
/// all its deployments) read once each (`Workloads::references`, 8 at a
/// time). Errors: `ServiceNotFound` for a missing cluster, the AWS errors of
/// those calls.
pub async fn discover(
    workloads: &dyn Workloads,
    deployments: &dyn Deployments,
    config: &TargetConfig,
) -> Result<Vec<Consumer>, RotationError> {
    let cluster = &config.cluster;
    let names = workloads.services(cluster).await?;
    let services = describe_present(deployments, cluster, &names).await?;
    let tasks = workloads.standalone_tasks(cluster).await?;

    let mut runs: Vec<(Workload, BTreeSet<String>)> = Vec::new();
    for service in services {
        let definitions = service
            .deployments
            .iter()
            .filter_map(|d| d.task_definition.clone())
            .collect();
        runs.push((Workload::Service(service), definitions));
    }
    for task in tasks {
        runs.push((
            Workload::Task {
                arn: task.arn,
                created_ms: task.created_ms,
            },
            BTreeSet::from([task.task_definition]),
        ));
    }
    let unique: BTreeSet<String> = runs.iter().flat_map(|(_, d)| d.iter().cloned()).collect();
    let read: BTreeMap<String, Vec<String>> = stream::iter(unique)
        .map(|definition| async move {
            let values = workloads.references(&definition).await?;
            Ok::<_, RotationError>((definition, values))
        })
        .buffer_unordered(DESCRIBE_CONCURRENCY)
        .try_collect()
        .await?;

    let mut consumers = Vec::new();
    for (workload, definitions) in runs {
        let values: Vec<&String> = definitions
            .iter()
            .filter_map(|d| read.get(d))
            .flatten()
            .collect();
        let names_any = |id: &str| values.iter().any(|v| names_resource(v, id));
        let mut references: Vec<String> = values
            .iter()
            .filter(|v| {
                [
                    &config.parameter_name,
                    &config.blue_secret_id,
                    &config.green_secret_id,
                ]
                .iter()
                .any(|id| names_resource(v, id))
            })
            .map(|v| v.to_string())
            .collect();
        references.sort();
        references.dedup();
        let pointer = names_any(&config.parameter_name);
        let users: Vec<String> = [
            (&config.blue_user, &config.blue_secret_id),
            (&config.green_user, &config.green_secret_id),
        ]
        .into_iter()
        .filter(|(_, secret)| names_any(secret))
        .map(|(user, _)| user.clone())
        .collect();
        if !pointer && users.is_empty() {
            continue;
        }
        consumers.push(Consumer {
            workload,
            follows_pointer: pointer || users.len() == 2,
            users,
            references,
        });
    }
    info!(
        cluster = %cluster,
        consumers = %consumers.iter().map(|c| c.workload.to_string()).collect::<Vec<_>>().join(", "),
        "found the target's consumers"
    );
    Ok(consumers)
}

/// The services an execution redeploys: the listed ones, or (`auto`) every
/// consumer service ECS deploys (not CodeDeploy's), sorted. Listed services
/// may be names or ARNs.
///
/// Errors, before anything changes: `UnlistedConsumer` when a consumer
/// service is missing from the list and `unlisted` is `Error` (with `Warn`
/// it is logged); `ConfigurationError` when `auto` finds no consumer service.
pub fn services_to_redeploy(
    selection: &Services,
    consumers: &[Consumer],
    unlisted: UnlistedConsumers,
    config: &TargetConfig,
) -> Result<Vec<String>, RotationError> {
    // A CodeDeploy (or external) service is redeployed by its pipeline,
    // never by pgflip; until it is, it blocks its old user's next rotation.
    for c in consumers {
        if let (Some(name), None) = (c.service(), c.redeployable()) {
            warn!(service = name, "a consumer service has a deployment controller pgflip cannot redeploy: redeploy it through its pipeline after the flip");
        }
    }
    let found: Vec<&str> = consumers
        .iter()
        .filter_map(Consumer::redeployable)
        .collect();
    let listed = match selection {
        Services::Auto if found.is_empty() => {
            return Err(RotationError::Configuration(format!(
                "services is auto, but no service of cluster {} takes the target's credentials (its task definitions name neither {} nor {} nor {} in secrets[].valueFrom or environment values); list the services instead",
                config.cluster, config.parameter_name, config.blue_secret_id, config.green_secret_id
            )))
        }
        Services::Auto => return Ok(found.iter().map(|s| s.to_string()).collect()),
        Services::Listed(listed) => listed,
    };
    let missing: Vec<String> = consumers
        .iter()
        .filter_map(|c| c.redeployable().map(|name| (name, c)))
        .filter(|(name, _)| {
            !listed
                .iter()
                .any(|l| l == name || l.rsplit('/').next() == Some(name))
        })
        .map(|(name, c)| format!("{name} (takes {})", c.references.join(", ")))
        .collect();
    if !missing.is_empty() {
        let what = format!(
            "service(s) {} of cluster {} take the target's credentials but are not among the services to redeploy ({}): they would keep the old user after the flip and break at the next rotation; add them, set services to auto, or (one partial run) unlistedConsumers: warn",
            missing.join("; "),
            config.cluster,
            listed.join(", ")
        );
        match unlisted {
            UnlistedConsumers::Error => return Err(RotationError::UnlistedConsumer(what)),
            UnlistedConsumers::Warn => warn!("{what} (unlistedConsumers is warn: rotating anyway)"),
        }
    }
    Ok(listed.clone())
}

/// Why the inactive user is still in use by consumers, or `None`: a consumer
/// that follows the pointer but has tasks from before the last flip (a
/// service whose deployments have not caught up with it, a task created
/// before it or at an unknown time), or one pinned to the inactive user.
/// Decided over all consumers, not only the services of this execution.
/// Consumers pinned to the active user are logged: they will block the
/// next rotation.
pub fn inactive_user_in_use(
    consumers: &[Consumer],
    inactive: &str,
    active: &str,
    flipped_ms: Option<i64>,
) -> Option<String> {
    let mut reasons = Vec::new();
    for c in consumers {
        if !c.follows_pointer {
            if c.users.iter().any(|u| u == inactive) {
                reasons.push(format!(
                    "{} takes only {inactive}'s secret: it never follows the active-user parameter (name the parameter or both secrets in its task definition)",
                    c.workload
                ));
            } else {
                warn!(consumer = %c.workload, user = active, "this consumer takes only the active user's secret and never follows the active-user parameter: it will block the next rotation");
            }
            continue;
        }
        let Some(flipped) = flipped_ms else {
            continue;
        };
        match &c.workload {
            Workload::Service(state) => match rollout_mode(Some(flipped), std::slice::from_ref(state)) {
                Mode::Redeploy => reasons.push(format!(
                    "service {} still runs tasks from before the last flip (deployment {}): redeploy it, or run with services including it (or auto)",
                    state.name,
                    primary(&state.deployments).map(|p| p.id.as_str()).unwrap_or("?")
                )),
                Mode::Wait => reasons.push(format!(
                    "service {} is still replacing tasks from before the last flip",
                    state.name
                )),
                Mode::Rotate | Mode::Flip => {}
            },
            Workload::Task { arn, created_ms } => match created_ms {
                Some(created) if *created > flipped => {}
                Some(_) => reasons.push(format!(
                    "task {arn} was created before the last flip and still runs (no redeploy replaces a standalone task: stop it)"
                )),
                None => reasons.push(format!(
                    "task {arn} still runs and ECS does not say when it was created: it may hold the old user"
                )),
            },
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}
