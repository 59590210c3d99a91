//! `plan-sweep`: the first state of the sweep state machine. It lists the
//! registered targets, keeps those the sweep's input selects, validates
//! each on its own, and splits them into **lanes**: sequences of targets
//! that the sweep runs one after another, while the lanes run side by side
//! (a Map with `MaxConcurrency` = the global limit). The lanes are built so
//! that, whatever the Map runs at once,
//!
//! - at most one rotation runs per database server: all targets of one
//!   server (`host:port`) are in the same lane;
//! - at most `per_cluster` rotations run per ECS cluster: no cluster
//!   appears in more than `per_cluster` lanes;
//! - at most `max_concurrency` rotations run in all (the Map's limit).
//!
//! Each lane also gets a start delay in `[0, jitter_seconds]` so that the
//! first rotations of a sweep do not all start in the same second.
//!
//! A target whose entry is bad, or whose server cannot be read, is
//! *refused* with its error name and never delays the others. It reads
//! registry entries and, for a target whose entry gives no `dbHost`, the
//! host and port of its blue user's `AWSCURRENT` secret (the password is
//! dropped unread). Nothing is written.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::guard::{now_ms, sweep_guard};
use super::registry::all_targets;
use crate::config::{SweepConfig, TargetConfig, Targets};
use crate::domain::StoreKind;
use crate::errors::RotationError;
use crate::layouts::{self, Stores};
use crate::ports::{Executions, ParameterStore, SecretStore};

/// How many targets' servers are read at once (`GetSecretValue`).
const READS_AT_ONCE: usize = 16;

/// What the sweep was started with: `{}` or `{"targets": ["*"]}` (every
/// registered target), `{"targets": ["orders", "billing-*"]}` (names, and
/// name prefixes ending in `*`); optionally `maxConcurrency`,
/// `perCluster`, `jitterSeconds` (overriding the deployment's) and `seed`
/// (the jitter's, for a reproducible plan). The state machine passes it as
/// `{"sweep": <input>, "executionId": <the sweep's execution ARN>}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRequest {
    /// The sweep's execution (the sweep guard's "me"); none: no guard.
    #[serde(skip)]
    pub execution_id: Option<String>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub per_cluster: Option<u32>,
    #[serde(default)]
    pub jitter_seconds: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl SweepRequest {
    /// Parses the sweep's input (other fields, such as `reason`, are
    /// ignored). A malformed selection is `InvalidInput`.
    pub fn parse(payload: &Value) -> Result<Self, RotationError> {
        let (input, execution_id) = match payload.get("sweep") {
            Some(input) => (
                input,
                payload
                    .get("executionId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
            None => (payload, None),
        };
        let mut request: Self = serde_json::from_value(input.clone()).map_err(|e| {
            RotationError::InvalidInput(format!(
                "the sweep's input: {e} (expected {{\"targets\": [\"name\", \"prefix*\", ...]}}, all fields optional)"
            ))
        })?;
        if let Some(targets) = &request.targets {
            if targets.iter().any(|t| t.trim().is_empty()) {
                return Err(RotationError::InvalidInput(
                    "the sweep's input: \"targets\" holds an empty name".into(),
                ));
            }
        }
        for (field, value) in [
            ("maxConcurrency", request.max_concurrency),
            ("perCluster", request.per_cluster),
        ] {
            if value == Some(0) {
                return Err(RotationError::InvalidInput(format!(
                    "the sweep's input: \"{field}\" must be at least 1"
                )));
            }
        }
        request.execution_id = execution_id;
        Ok(request)
    }

    /// Whether the selection takes target `name`.
    fn selects(&self, name: &str) -> bool {
        match &self.targets {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            }),
        }
    }
}

/// Targets that run one after another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lane {
    /// Seconds to wait before the lane's first rotation.
    pub jitter_seconds: u32,
    pub targets: Vec<String>,
}

/// A target the sweep does not start, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub target: String,
    /// The stable error name (`ConfigurationError`, `SecretNotFound`, …).
    pub error: String,
    pub cause: String,
}

/// The plan: what the sweep state machine's Map runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPlan {
    pub lanes: Vec<Lane>,
    /// The Map's `MaxConcurrencyPath`: lanes (so rotations) at once.
    pub max_concurrency: u32,
    pub per_cluster: u32,
    /// Targets in the lanes.
    pub targets: usize,
    pub refused: Vec<Refused>,
    /// Distinct database servers and ECS clusters among the lanes' targets.
    pub servers: usize,
    pub clusters: usize,
}

/// One target the plan places: its name, server and cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub name: String,
    /// `host:port`, the host in lower case.
    pub server: String,
    pub cluster: String,
}

/// Plans a sweep: every target the request selects (the registry's, see
/// [`all_targets`]), placed in lanes by [`lanes`]. A selected name no
/// source defines is refused (`InvalidInput`); one listed twice runs once.
/// Errors: another sweep running that started first (`SweepInProgress`,
/// see `guard::sweep_guard`: nothing is read or started); reading the
/// registry itself (`AwsUnavailable`, `AwsRequestFailed`) fails the plan;
/// anything about one target refuses only that target.
#[allow(clippy::too_many_arguments)]
pub async fn plan_sweep(
    request: &SweepRequest,
    config: &SweepConfig,
    targets: &Targets,
    default: &TargetConfig,
    parameters: &dyn ParameterStore,
    secrets_manager: &dyn SecretStore,
    ssm: &dyn SecretStore,
    executions: &dyn Executions,
) -> Result<SweepPlan, RotationError> {
    if let Some(me) = &request.execution_id {
        sweep_guard(executions, me, now_ms()).await?;
    }
    let registered = all_targets(targets, default, parameters).await?;
    let mut refused = Vec::new();
    let mut selected = Vec::new();
    for (name, config) in registered {
        if !request.selects(&name) {
            continue;
        }
        match config {
            Ok(config) => selected.push((name, config)),
            Err(e) => refused.push(refusal(&name, &e)),
        }
    }
    // Each unknown name once, however often it is listed.
    let patterns: BTreeSet<&String> = request.targets.iter().flatten().collect();
    for pattern in patterns {
        let known =
            |n: &str| selected.iter().any(|(s, _)| s == n) || refused.iter().any(|r| r.target == n);
        if !pattern.ends_with('*') && !known(pattern) {
            refused.push(refusal(
                pattern,
                &RotationError::InvalidInput(format!("no registered target is named {pattern:?}")),
            ));
        }
    }
    let located: Vec<(String, Result<Placed, RotationError>)> = stream::iter(selected)
        .map(|(name, config)| async move {
            let secrets = match config.password_store {
                StoreKind::SecretsManager => secrets_manager,
                StoreKind::Ssm => ssm,
            };
            let server = server_of(
                &config,
                Stores {
                    parameters,
                    secrets,
                },
            )
            .await;
            let placed = server.map(|server| Placed {
                name: name.clone(),
                server,
                cluster: cluster_name(&config.cluster),
            });
            (name, placed)
        })
        .buffered(READS_AT_ONCE)
        .collect()
        .await;
    let mut placed = Vec::new();
    for (name, located) in located {
        match located {
            Ok(p) => placed.push(p),
            Err(e) => refused.push(refusal(&name, &e)),
        }
    }
    let max_concurrency = request.max_concurrency.unwrap_or(config.max_concurrency);
    let per_cluster = request.per_cluster.unwrap_or(config.per_cluster);
    let jitter = request.jitter_seconds.unwrap_or(config.jitter_seconds);
    let seed = request.seed.unwrap_or_else(rand::random);
    let servers = placed
        .iter()
        .map(|p| &p.server)
        .collect::<BTreeSet<_>>()
        .len();
    let clusters = placed
        .iter()
        .map(|p| &p.cluster)
        .collect::<BTreeSet<_>>()
        .len();
    let count = placed.len();
    Ok(SweepPlan {
        lanes: lanes(&placed, max_concurrency, per_cluster, jitter, seed),
        max_concurrency,
        per_cluster,
        targets: count,
        refused,
        servers,
        clusters,
    })
}

fn refusal(target: &str, error: &RotationError) -> Refused {
    Refused {
        target: target.to_string(),
        error: error.name().to_string(),
        cause: error.to_string(),
    }
}

/// The database server a target rotates on, as `host:port`: `dbHost`/
/// `dbPort` of its entry when it gives the host, else the host and port of
/// its blue user's `AWSCURRENT` secret (`secretsmanager:GetSecretValue` or
/// `ssm:GetParameter`), the entry's `dbPort` winning. A transient error
/// (`AwsUnavailable`: throttling) is retried [`READ_ATTEMPTS`] times in
/// all before the target is refused.
async fn server_of(config: &TargetConfig, stores: Stores<'_>) -> Result<String, RotationError> {
    let (host, port) = match &config.connection.host {
        Some(host) => (host.clone(), config.connection.port.unwrap_or(5432)),
        None => {
            let pointer = layouts::for_target(config, stores);
            let user = &config.blue_user;
            let mut attempt = 1;
            let secret = loop {
                match pointer.template(user).await {
                    Ok(version) => break version.secret,
                    Err(RotationError::AwsUnavailable(_)) if attempt < READ_ATTEMPTS => {
                        tokio::time::sleep(READ_BACKOFF * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            let port = config.connection.port.unwrap_or(secret.port());
            (secret.host().to_string(), port)
        }
    };
    let host = server_host(&host);
    if host.is_empty() {
        return Err(RotationError::Configuration(format!(
            "the blue user's secret of target {} names no host",
            config.name.as_deref().unwrap_or("default")
        )));
    }
    Ok(format!("{host}:{port}"))
}

/// Reads of a target's server: attempts in all, and the backoff step.
const READ_ATTEMPTS: u32 = 4;
const READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);

/// A host name as one server: without blanks, in lower case (DNS names
/// compare without regard to case), without the root's trailing dot.
/// Different names of one server (a cluster and an instance endpoint, a
/// CNAME, a proxy) stay different: the plan compares names, not addresses.
fn server_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// An ECS cluster as one name: its name, whether the entry gives the name
/// or the ARN (`arn:…:cluster/<name>`).
fn cluster_name(cluster: &str) -> String {
    let cluster = cluster.trim();
    match cluster.strip_prefix("arn:") {
        Some(_) => cluster.rsplit('/').next().unwrap_or(cluster).to_string(),
        None => cluster.to_string(),
    }
}

/// Splits `targets` into lanes: each server's targets (by name) in one
/// lane; no cluster in more than `per_cluster` lanes; at most
/// `max_concurrency` lanes; the longest lanes kept as short as these allow
/// (servers placed largest first, each in the least loaded lane it may
/// join). When a server's clusters leave no lane it may join, the lanes
/// that hold its full clusters are merged into one (merging never puts a
/// cluster in more lanes). Each lane waits a random `[0, jitter_seconds]`
/// before its first rotation (random from `seed`).
pub fn lanes(
    targets: &[Placed],
    max_concurrency: u32,
    per_cluster: u32,
    jitter_seconds: u32,
    seed: u64,
) -> Vec<Lane> {
    let max_lanes = max_concurrency.max(1) as usize;
    let per_cluster = per_cluster.max(1) as usize;
    // server -> (its targets by name, its clusters)
    let mut servers: BTreeMap<&str, (Vec<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for t in targets {
        let entry = servers.entry(&t.server).or_default();
        entry.0.push(&t.name);
        entry.1.insert(&t.cluster);
    }
    let mut groups: Vec<(Vec<&str>, BTreeSet<&str>)> = servers.into_values().collect();
    for (names, _) in &mut groups {
        names.sort_unstable();
        names.dedup();
    }
    groups.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

    struct Building<'a> {
        targets: Vec<&'a str>,
        clusters: BTreeSet<&'a str>,
    }
    let mut built: Vec<Building> = Vec::new();
    let lanes_with =
        |built: &[Building], c: &str| built.iter().filter(|l| l.clusters.contains(c)).count();
    for (names, clusters) in groups {
        let may_join = |lane: &Building| {
            clusters
                .iter()
                .all(|c| lane.clusters.contains(c) || lanes_with(&built, c) < per_cluster)
        };
        let may_open =
            built.len() < max_lanes && clusters.iter().all(|c| lanes_with(&built, c) < per_cluster);
        let joinable = built
            .iter()
            .enumerate()
            .filter(|(_, l)| may_join(l))
            .min_by_key(|(i, l)| (l.targets.len(), *i))
            .map(|(i, _)| i);
        let index = match joinable {
            // A new lane while the global limit allows: lanes run side by side.
            _ if may_open => {
                built.push(Building {
                    targets: Vec::new(),
                    clusters: BTreeSet::new(),
                });
                built.len() - 1
            }
            Some(i) => i,
            None => {
                // Merge every lane holding one of this server's full clusters.
                let full: Vec<&str> = clusters
                    .iter()
                    .copied()
                    .filter(|c| lanes_with(&built, c) >= per_cluster)
                    .collect();
                let (merging, kept): (Vec<Building>, Vec<Building>) = built
                    .into_iter()
                    .partition(|l| full.iter().any(|c| l.clusters.contains(c)));
                built = kept;
                let mut merged = Building {
                    targets: Vec::new(),
                    clusters: BTreeSet::new(),
                };
                for lane in merging {
                    merged.targets.extend(lane.targets);
                    merged.clusters.extend(lane.clusters);
                }
                built.push(merged);
                built.len() - 1
            }
        };
        built[index].targets.extend(names);
        built[index].clusters.extend(clusters);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    built
        .into_iter()
        .map(|l| Lane {
            jitter_seconds: if jitter_seconds == 0 {
                0
            } else {
                rng.random_range(0..=jitter_seconds)
            },
            targets: l.targets.into_iter().map(str::to_string).collect(),
        })
        .collect()
}
