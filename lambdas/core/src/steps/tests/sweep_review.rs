//! Defects a review of the sweep found (issue 14), one regression test each.

use serde_json::json;

use super::sweep::{plan, plan_with, registry_world, PATH};
use super::*;
use crate::steps::report_outcome::{report_sweep, SweepEnded};

fn entry(cluster: &str, host: &str, port: Option<u16>) -> serde_json::Value {
    let mut e = targets_doc()["orders"].clone();
    e["cluster"] = json!(cluster);
    e["dbHost"] = json!(host);
    if let Some(p) = port {
        e["dbPort"] = json!(p);
    }
    e
}

async fn plan_of(w: &World, input: serde_json::Value) -> SweepPlan {
    plan(w, input).await.unwrap()
}

fn lane_of(p: &SweepPlan, name: &str) -> Vec<usize> {
    p.lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| l.targets.iter().any(|t| t == name))
        .map(|(i, _)| i)
        .collect()
}

/// one server, written with and without the DNS root's trailing dot
/// (and with surrounding blanks): two lanes, so two rotations at once on it.
#[tokio::test]
async fn one_server_spelled_with_a_trailing_dot_is_one_server() {
    let w = registry_world();
    w.parameters.set(
        &format!("{PATH}a"),
        &entry("ca", "db1.example.internal", None).to_string(),
    );
    w.parameters.set(
        &format!("{PATH}b"),
        &entry("cb", "DB1.example.internal.", Some(5432)).to_string(),
    );
    let p = plan_of(&w, json!({"targets": ["a", "b"]})).await;
    assert_eq!(
        lane_of(&p, "a"),
        lane_of(&p, "b"),
        "one server, two lanes: {:?}",
        p.lanes
    );
}

/// one ECS cluster named by name in one entry and by ARN in another:
/// counted as two clusters, so up to 2 x perCluster rollouts on it.
#[tokio::test]
async fn a_cluster_by_name_and_by_arn_is_one_cluster() {
    let w = registry_world();
    for (name, cluster, host) in [
        ("a", "shop", "db-a"),
        (
            "b",
            "arn:aws:ecs:us-east-1:123456789012:cluster/shop",
            "db-b",
        ),
    ] {
        w.parameters.set(
            &format!("{PATH}{name}"),
            &entry(cluster, host, None).to_string(),
        );
    }
    let p = plan_with(&w, json!({"targets": ["a", "b"]}), 1)
        .await
        .unwrap();
    assert_eq!(p.clusters, 1, "{p:?}");
    assert_eq!(p.lanes.len(), 1, "perCluster 1, one cluster: {:?}", p.lanes);
}

/// a registry parameter named `default` (the reserved name of the
/// environment's target). The document refuses that name; the registry
/// takes it: the plan holds "default" twice (the environment's and the
/// entry), in two lanes, so two rotations of the environment's target at
/// once (the second fails RotationInProgress), and the entry itself is
/// never rotated (`{"target": "default"}` is the environment's).
#[tokio::test]
async fn a_registry_entry_named_default_is_refused() {
    let w = registry_world();
    w.parameters.set(
        &format!("{PATH}default"),
        &entry("other", "db-other", None).to_string(),
    );
    let p = plan_of(&w, json!({})).await;
    let planned = p
        .lanes
        .iter()
        .flat_map(|l| &l.targets)
        .filter(|t| *t == "default")
        .count();
    assert_eq!(planned, 1, "default planned {planned} times: {:?}", p.lanes);
    assert!(
        p.refused
            .iter()
            .any(|r| r.target == "default" && r.error == "ConfigurationError"),
        "the registry's entry named default must be refused: {:?}",
        p.refused
    );
}

/// one throttled read of one target's secret (AwsUnavailable, after the
/// SDK's own retries) refuses that target for the whole sweep (counted as a
/// failure, SweepIncomplete), although a second read would have placed it:
/// a transient error is treated as a permanent one, and not retried.
#[tokio::test]
async fn one_throttled_secret_read_does_not_refuse_a_target() {
    let w = registry_world();
    let mut ghost = targets_doc()["orders"].clone();
    ghost["dbHost"] = serde_json::Value::Null;
    ghost["passwordStore"] = json!("secretsmanager");
    ghost["blueSecretId"] = json!(BLUE_SECRET);
    w.parameters
        .set(&format!("{PATH}viahost"), &ghost.to_string());
    w.secrets.faults.push(
        "get_stage",
        RotationError::AwsUnavailable("throttled".into()),
    );
    let p = plan_of(&w, json!({"targets": ["viahost"]})).await;
    assert!(
        p.refused.is_empty(),
        "refused for one throttle: {:?}",
        p.refused
    );
    assert_eq!(p.targets, 1);
}

/// a lane that did not produce an array of results (a failed, timed out
/// or aborted lane execution: Step Functions puts its error, or null, in the
/// Distributed Map's results; ToleratedFailurePercentage 100 lets the Map go
/// on) makes the whole sweep's results unreadable: ReportOutcome fails
/// InvalidInput (not retried), no summary, no notification, although the
/// other lanes' outcomes are known.
#[tokio::test]
async fn a_failed_lane_does_not_lose_the_sweeps_summary() {
    for odd in [
        serde_json::Value::Null,
        json!({"Error": "States.DataLimitExceeded", "Cause": "The state/task returned a result with a size exceeding the maximum number of bytes service limit."}),
    ] {
        let payload = json!({
            "executionArn": "arn:aws:states:us-east-1:1:execution:sweep:x",
            "lanes": [[{"target": "a", "outcome": "SUCCEEDED", "execution": "arn:a"}], odd],
            "refused": []
        });
        let ended: Result<SweepEnded, _> = serde_json::from_value(payload.clone());
        let ended = ended.unwrap_or_else(|e| panic!("{payload}: {e}"));
        let (summary, _) = report_sweep(&ended, &FakeHistory::default(), &FakeNotifier::default())
            .await
            .unwrap();
        assert!(
            summary.failed >= 1,
            "a lost lane must count as failed: {summary:?}"
        );
    }
}

/// a SUCCEEDED result without execution, and a summary that does not
/// check what was planned: a lane whose results are missing (its execution
/// failed, the Map tolerated it, and Step Functions returned fewer results)
/// is silently left out; the sweep then succeeds with fewer targets than it
/// planned. Shown here at the level report_sweep sees: it is given no plan
/// to compare against (ReportOutcome's Parameters pass only `refused`).
#[tokio::test]
async fn the_summary_counts_every_planned_target() {
    // Planned: a, b, c in two lanes; the second lane's results are absent.
    let ended: SweepEnded = serde_json::from_value(json!({
        "executionArn": "arn:s",
        "lanes": [[{"target": "a", "outcome": "SUCCEEDED"}]],
        "refused": [],
        "planned": 3
    }))
    .unwrap();
    let (summary, _) = report_sweep(&ended, &FakeHistory::default(), &FakeNotifier::default())
        .await
        .unwrap();
    assert_eq!(summary.targets, 3, "{summary:?}");
}

/// Step Functions caps a task failure's cause at 32,768 characters,
/// and a failed `.sync:2` child's cause wraps its whole description. The
/// rotation's own messages are bounded at the Lambda boundary
/// (`errors::MAX_MESSAGE_CHARS`, tested there); a description cut anyway
/// still gives the fields before the cut.
#[tokio::test]
async fn a_truncated_child_cause_keeps_the_execution_and_error() {
    let arn = "arn:aws:states:us-east-1:1:execution:stack-rotation:abc";
    let long = "x".repeat(40_000);
    // The fields before the long one survive the cut.
    let full = format!(
        r#"{{"ExecutionArn":"{arn}","Error":"PrivilegeDrift","Status":"FAILED","Cause":"{long}"}}"#
    );
    let cut: String = full.chars().take(32_768).collect();
    let ended: SweepEnded = serde_json::from_value(json!({
        "executionArn": "arn:s",
        "lanes": [[{"target": "orders", "outcome": "FAILED",
                    "failure": {"Error": "States.TaskFailed", "Cause": cut}}]]
    }))
    .unwrap();
    let (summary, _) = report_sweep(&ended, &FakeHistory::default(), &FakeNotifier::default())
        .await
        .unwrap();
    let f = &summary.failures[0];
    assert_eq!(f.execution.as_deref(), Some(arn), "{f:?}");
    assert_eq!(f.error, "PrivilegeDrift", "{f:?}");
}

/// Sanity (passes): both casings of a child's description are read.
#[tokio::test]
async fn sanity_both_casings() {
    for (e, c, a, er) in [
        ("Error", "Cause", "ExecutionArn", "Error"),
        ("error", "cause", "executionArn", "error"),
    ] {
        let mut child = serde_json::Map::new();
        child.insert(a.into(), json!("arn:x"));
        child.insert(er.into(), json!("RotationRolledBack"));
        let mut failure = serde_json::Map::new();
        failure.insert(e.into(), json!("States.TaskFailed"));
        failure.insert(
            c.into(),
            json!(serde_json::Value::Object(child).to_string()),
        );
        let ended: SweepEnded = serde_json::from_value(json!({
            "executionArn": "arn:s",
            "lanes": [[{"target": "t", "outcome": "FAILED", "failure": failure}]]
        }))
        .unwrap();
        let (s, _) = report_sweep(&ended, &FakeHistory::default(), &FakeNotifier::default())
            .await
            .unwrap();
        assert_eq!(
            (
                s.failures[0].execution.as_deref(),
                s.failures[0].error.as_str()
            ),
            (Some("arn:x"), "RotationRolledBack")
        );
    }
}
