//! The sweep: `plan-sweep`'s lanes and selection, and `report-outcome`'s
//! summary of a sweep.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::config::SweepConfig;
use crate::steps::plan_sweep::{lanes, plan_sweep, Placed, SweepRequest};
use crate::steps::report_outcome::{report_sweep, SweepEnded};

fn placed(name: &str, server: &str, cluster: &str) -> Placed {
    Placed {
        name: name.into(),
        server: server.into(),
        cluster: cluster.into(),
    }
}

/// What every plan must hold, whatever the fleet: each target exactly
/// once; a server's targets in one lane; no cluster in more than
/// `per_cluster` lanes; at most `max` lanes; jitter within bounds.
fn check_lanes(targets: &[Placed], max: u32, per_cluster: u32, jitter: u32) {
    let planned = lanes(targets, max, per_cluster, jitter, 7);
    let lane_of: BTreeMap<&str, usize> = planned
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.targets.iter().map(move |t| (t.as_str(), i)))
        .collect();
    let names: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let count: usize = planned.iter().map(|l| l.targets.len()).sum();
    assert_eq!(count, names.len(), "each target exactly once: {planned:?}");
    assert_eq!(lane_of.keys().copied().collect::<BTreeSet<_>>(), names);
    assert!(planned.len() <= max.max(1) as usize, "{planned:?}");
    assert!(planned
        .iter()
        .all(|l| !l.targets.is_empty() && l.jitter_seconds <= jitter));
    let mut server_lanes: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    let mut cluster_lanes: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for t in targets {
        server_lanes
            .entry(&t.server)
            .or_default()
            .insert(lane_of[t.name.as_str()]);
        cluster_lanes
            .entry(&t.cluster)
            .or_default()
            .insert(lane_of[t.name.as_str()]);
    }
    assert!(
        server_lanes.values().all(|l| l.len() == 1),
        "{server_lanes:?}"
    );
    assert!(
        cluster_lanes
            .values()
            .all(|l| l.len() <= per_cluster.max(1) as usize),
        "{cluster_lanes:?}"
    );
}

proptest! {
    #[test]
    fn lanes_keep_every_limit(
        fleet in prop::collection::vec((0u8..8, 0u8..6), 0..80),
        max in 1u32..12,
        per_cluster in 1u32..4,
        jitter in 0u32..90,
    ) {
        let targets: Vec<Placed> = fleet
            .iter()
            .enumerate()
            .map(|(i, (s, c))| placed(&format!("t{i:03}"), &format!("db{s}:5432"), &format!("c{c}")))
            .collect();
        check_lanes(&targets, max, per_cluster, jitter);
    }
}

#[test]
fn lanes_run_servers_side_by_side_up_to_the_limits() {
    // Ten servers, ten clusters: as many lanes as the global limit allows.
    let spread: Vec<Placed> = (0..10)
        .map(|i| placed(&format!("t{i}"), &format!("db{i}:5432"), &format!("c{i}")))
        .collect();
    assert_eq!(lanes(&spread, 4, 2, 0, 1).len(), 4);
    assert_eq!(lanes(&spread, 40, 2, 0, 1).len(), 10);
    // One cluster, K = 1: one lane, whatever the servers.
    let one_cluster: Vec<Placed> = (0..10)
        .map(|i| placed(&format!("t{i}"), &format!("db{i}:5432"), "c"))
        .collect();
    assert_eq!(lanes(&one_cluster, 40, 1, 0, 1).len(), 1);
    assert_eq!(lanes(&one_cluster, 40, 3, 0, 1).len(), 3);
    // One server: one lane, its targets by name.
    let one_server: Vec<Placed> = ["b", "a", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| placed(n, "db:5432", &format!("c{i}")))
        .collect();
    let planned = lanes(&one_server, 40, 2, 0, 1);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].targets, ["a", "b", "c"]);
    // A server spanning two clusters that other lanes fill: lanes merge.
    let crossing = vec![
        placed("x1", "dbx:5432", "c1"),
        placed("y1", "dby:5432", "c2"),
        placed("z1", "dbz:5432", "c1"),
        placed("z2", "dbz:5432", "c2"),
    ];
    check_lanes(&crossing, 10, 1, 0);
    assert_eq!(lanes(&crossing, 10, 1, 0, 1).len(), 1);
    // Jitter: within bounds, and the same for the same seed.
    let a = lanes(&spread, 10, 2, 30, 42);
    assert_eq!(a, lanes(&spread, 10, 2, 30, 42));
    assert!(a.iter().any(|l| l.jitter_seconds > 0), "{a:?}");
}

pub(super) const PATH: &str = "/pgflip/targets/";

/// world()'s default target and a registry under PATH with no entry yet
/// (no targets document).
pub(super) fn registry_world() -> World {
    let mut w = two_target_world();
    w.parameters.values.lock().unwrap().remove(TARGETS_DOC);
    w.targets = Targets {
        parameter_name: None,
        path: Some(PATH.into()),
    };
    w
}

/// The default target (world()'s, server 127.0.0.1:5432 from its secret),
/// "orders" (dbHost given: the same server), "reports" (on another server,
/// its own cluster), a broken "billing" and "ghost" whose secret is gone.
fn fleet_world() -> World {
    let w = registry_world();
    let orders = targets_doc()["orders"].clone();
    w.parameters
        .set(&format!("{PATH}orders"), &orders.to_string());
    let mut reports = orders.clone();
    reports["cluster"] = json!("reports");
    reports["dbHost"] = json!("Reports.Example.Internal");
    reports["dbPort"] = json!(6432);
    w.parameters
        .set(&format!("{PATH}reports"), &reports.to_string());
    let mut ghost = orders.clone();
    ghost["dbHost"] = serde_json::Value::Null;
    ghost["passwordStore"] = json!("secretsmanager");
    ghost["blueSecretId"] = json!("ghost/blue");
    w.parameters
        .set(&format!("{PATH}ghost"), &ghost.to_string());
    w.parameters.set(
        &format!("{PATH}billing"),
        r#"{"activeUserParameter": "/b"}"#,
    );
    w
}

/// The plan of `input` with perCluster `per_cluster` (maxConcurrency 10,
/// no jitter).
pub(super) async fn plan_with(
    w: &World,
    input: serde_json::Value,
    per_cluster: u32,
) -> Result<SweepPlan, RotationError> {
    let config = SweepConfig {
        max_concurrency: 10,
        per_cluster,
        jitter_seconds: 0,
    };
    let request = SweepRequest::parse(&input)?;
    plan_sweep(
        &request,
        &config,
        &w.targets,
        &w.config,
        &w.parameters,
        &w.secrets,
        &w.secrets,
        &w.executions,
    )
    .await
}

pub(super) async fn plan(w: &World, input: serde_json::Value) -> Result<SweepPlan, RotationError> {
    plan_with(w, input, 2).await
}

#[tokio::test]
async fn a_sweep_plans_every_registered_target_and_refuses_bad_ones_alone() {
    let w = fleet_world();
    let p = plan(&w, json!({})).await.unwrap();
    let mut laned: Vec<Vec<&str>> = p
        .lanes
        .iter()
        .map(|l| l.targets.iter().map(String::as_str).collect())
        .collect();
    laned.sort();
    // default and orders share 127.0.0.1:5432; reports is on its own server.
    assert_eq!(laned, [vec!["default", "orders"], vec!["reports"]]);
    assert_eq!((p.targets, p.servers, p.clusters), (3, 2, 3));
    let refused: Vec<(&str, &str)> = p
        .refused
        .iter()
        .map(|r| (r.target.as_str(), r.error.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("billing", "ConfigurationError"),
            ("ghost", "SecretNotFound")
        ]
    );
    assert_eq!(p.max_concurrency, 10);
    // Names and prefixes; an unknown name is refused, the rest planned.
    let p = plan(
        &w,
        json!({"targets": ["rep*", "nope", "orders", "nope"], "maxConcurrency": 3}),
    )
    .await
    .unwrap();
    let names: Vec<&str> = p
        .lanes
        .iter()
        .flat_map(|l| l.targets.iter().map(String::as_str))
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"reports") && names.contains(&"orders"),
        "{names:?}"
    );
    assert_eq!(p.refused.len(), 1);
    assert_eq!(
        (p.refused[0].target.as_str(), p.refused[0].error.as_str()),
        ("nope", "InvalidInput")
    );
    assert_eq!(p.max_concurrency, 3);
    // Nothing written, no password in the plan.
    assert_eq!(*w.parameters.puts.lock().unwrap(), 0);
    let text = serde_json::to_string(&p).unwrap();
    assert!(
        !text.contains("pass-1") && !text.contains("orders-blue-1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sweep_with_a_bad_input_is_refused_before_anything_is_read() {
    let w = fleet_world();
    for input in [
        json!({"targets": "orders"}),
        json!({"targets": [""]}),
        json!({"maxConcurrency": 0}),
        json!({"perCluster": 0}),
        json!({"jitterSeconds": -1}),
    ] {
        let err = plan(&w, input.clone()).await.unwrap_err();
        assert_eq!(err.name(), "InvalidInput", "{input}");
    }
    // The registry unreadable: the plan fails (retried by the ASL).
    w.parameters
        .faults
        .push("list", RotationError::AwsUnavailable("throttled".into()));
    assert_eq!(
        plan(&w, json!({})).await.unwrap_err().name(),
        "AwsUnavailable"
    );
}

fn child_failure(arn: &str, error: &str) -> serde_json::Value {
    json!({"Error": "States.TaskFailed", "Cause": json!({
        "ExecutionArn": arn, "Status": "FAILED", "Error": error, "Cause": "…"
    }).to_string()})
}

#[tokio::test]
async fn a_sweeps_summary_counts_outcomes_and_names_each_failure() {
    let history = FakeHistory::default();
    let notifier = FakeNotifier::default();
    let rolled_back = "arn:aws:states:us-east-1:1:execution:r:sweep-x-orders";
    history.events.lock().unwrap().insert(
        rolled_back.into(),
        vec![
            HistoryEvent::Entered {
                state: "SelectUser".into(),
            },
            HistoryEvent::Entered {
                state: "WaitForStable".into(),
            },
            HistoryEvent::Entered {
                state: "ChooseRollback".into(),
            },
            HistoryEvent::Entered {
                state: "RollbackFlipParameter".into(),
            },
            HistoryEvent::Entered {
                state: "RotationRolledBack".into(),
            },
        ],
    );
    let ended: SweepEnded = serde_json::from_value(json!({
        "executionArn": "arn:aws:states:us-east-1:1:execution:sweep:x",
        "lanes": [
            [1,
             {"target": "orders", "outcome": "FAILED", "failure": child_failure(rolled_back, "RotationRolledBack")}],
            [{"target": "b", "outcome": "SUCCEEDED"},
             {"target": "slow", "outcome": "FAILED", "failure": {"Error": "States.Timeout", "Cause": "the task timed out"}}]
        ],
        "refused": [{"target": "billing", "error": "ConfigurationError", "cause": "…"}]
    }))
    .unwrap();
    let (summary, note) = report_sweep(&ended, &history, &notifier).await.unwrap();
    assert_eq!(
        (summary.targets, summary.succeeded, summary.failed),
        (5, 2, 3)
    );
    assert_eq!(
        summary
            .by_outcome
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [
            ("ConfigurationError", 1),
            ("RotationRolledBack", 1),
            ("SUCCEEDED", 2),
            ("States.Timeout", 1)
        ]
    );
    let failures: Vec<(&str, Option<&str>, Option<&str>, &str)> = summary
        .failures
        .iter()
        .map(|f| {
            (
                f.target.as_str(),
                f.execution.as_deref(),
                f.step.as_deref(),
                f.error.as_str(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("billing", None, Some("PlanSweep"), "ConfigurationError"),
            (
                "orders",
                Some(rolled_back),
                Some("WaitForStable"),
                "RotationRolledBack"
            ),
            ("slow", None, None, "States.Timeout"),
        ]
    );
    assert!(
        summary.cause.starts_with("3 of 5 targets did not rotate"),
        "{}",
        summary.cause
    );
    let published = notifier.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(Some(&published[0].0), note.as_ref().map(|n| &n.subject));
    assert!(
        published[0]
            .1
            .contains("- orders: RotationRolledBack at WaitForStable"),
        "{}",
        published[0].1
    );

    // All succeeded: nothing published. A history that cannot be read
    // leaves the step out, never the summary.
    let quiet = FakeNotifier::default();
    let ok: SweepEnded = serde_json::from_value(json!({
        "executionArn": "arn:s", "lanes": [[1, 1]]
    }))
    .unwrap();
    let (summary, note) = report_sweep(&ok, &history, &quiet).await.unwrap();
    assert_eq!((summary.targets, summary.failed, note), (2, 0, None));
    assert!(quiet.published.lock().unwrap().is_empty());
    history
        .faults
        .push("history", RotationError::AwsUnavailable("throttled".into()));
    let (summary, _) = report_sweep(&ended, &history, &notifier).await.unwrap();
    assert_eq!(summary.failures[1].step, None);
}

/// One sweep at a time: a sweep that finds another one running that
/// started first fails SweepInProgress before reading anything; the
/// first one goes on (and its plan is unaffected by the later one).
#[tokio::test]
async fn a_second_sweep_at_once_starts_nothing() {
    let w = fleet_world();
    let first = "arn:aws:states:us-east-1:123456789012:execution:stack-sweep:first";
    let second = "arn:aws:states:us-east-1:123456789012:execution:stack-sweep:second";
    w.executions.start(first);
    w.executions.start(second);
    let err = plan(&w, json!({"sweep": {}, "executionId": second}))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "SweepInProgress");
    assert!(err.to_string().contains(first), "{err}");
    let p = plan(
        &w,
        json!({"sweep": {"targets": ["orders"]}, "executionId": first}),
    )
    .await
    .unwrap();
    assert_eq!(p.targets, 1);
    // Without an execution id (an older state machine): no guard.
    assert!(plan(&w, json!({})).await.is_ok());
}
