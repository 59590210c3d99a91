//! `pgflip-bench fleet`: a fleet on the local stack (issue 14, item 4).
//!
//! Seeds N targets (user pairs spread over the primary and the extra SCRAM
//! servers, two databases on each, C ECS clusters with one or two services
//! per target, a few targets keeping bare passwords in SSM), registers each
//! as its own parameter under the registry path, adds one broken entry, and
//! runs **one sweep** through the real `statemachine/sweep.asl.json` with
//! faults injected into some targets' child executions: crashes mid-rotation
//! (`abortAfter`), failed rollouts (`RolloutFailed` from WaitForStable, which
//! rolls back) and throttling (`AwsUnavailable` once: retried, must succeed).
//!
//! While the sweep runs, a monitor checks again and again, for every target,
//! that the user its pointer names logs in with its AWSCURRENT password.
//! After it: the concurrency reached (overall, per database server, per ECS
//! cluster) from the children's start and end times against the limits;
//! transitions, Lambda invocations and (with moto's request recorder) AWS
//! calls per target; the sweep's summary (ReportOutcome) against the faults
//! injected; every target's end state. Prints identifiers and counts, never
//! a password. Exits 1 on any violation.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgflip_core::domain::{AWSCURRENT, AWSPENDING};
use pgflip_core::password::{Password, PasswordPolicy};
use pgflip_tests::{in_ssm, RunOptions, Snapshot, Stack, Target, TARGETS_REGISTRY};
use serde_json::{json, Value};

use crate::{moto_api, say, Args};

const HELP: &str = "\
pgflip-bench fleet: one sweep over a fleet of targets on the local stack
(issue 14, item 4). Needs a running local stack with extra database servers
(PGFLIP_EXTRA_SERVERS=3 before start_stack; scripts/bench --fleet N starts
one).

usage: pgflip-bench fleet [--targets N | --sizes 10,50,100]
                          [--max-concurrency M] [--per-cluster K]
                          [--jitter-seconds J] [--seed S] [--clusters C]
                          [--faults 1|0] [--recorder 1]

  --targets N          targets of the fleet (100)
  --sizes LIST         one fleet and one sweep per size, in order, then a
                       table of the figures per size (default: --targets)
  --max-concurrency M  the sweep's maxConcurrency: rotations at once (4)
  --per-cluster K      the sweep's perCluster: rotations at once per ECS
                       cluster (2)
  --jitter-seconds J   the sweep's jitterSeconds: each lane's start delay is
                       random in [0, J] (2)
  --seed S             the plan's jitter and which targets get faults (1)
  --clusters C         ECS clusters (5, at least 5)
  --faults 0           no faults (default 1: crashes, failed rollouts,
                       throttling, one broken registry entry)
  --recorder 1         count the Lambdas' AWS calls with moto's request
                       recorder (only on a stack whose moto was started with
                       MOTO_RECORDER_FILEPATH, as scripts/bench does)

Layout: target i is on server i mod S (the primary and the extra servers),
in database fleet_a or fleet_b there, in cluster 2s or 2s+1 (mod C: some
clusters serve two servers, so perCluster shapes the lanes); one
target in three has two services; one in ten keeps bare passwords in SSM.
Faults (--faults 1): max(1, N/40) crashes (abortAfter on
GenerateAndSetPassword, then FlipParameter, alternately), max(1, N/40)
failed rollouts (RolloutFailed, rolled back), max(1, N/25) throttled steps
(AwsUnavailable once, retried) and one broken registry entry (refused by
PlanSweep with ConfigurationError). Children run with waits shortened to 0;
the sweep's jitter waits are real.

Checked (any violation exits 1):
  - during the sweep, again and again for every target: the user the
    pointer names logs in with its AWSCURRENT password;
  - concurrency reached: at most maxConcurrency overall, one per database
    server, perCluster per ECS cluster;
  - exactly the injected targets fail, each with the expected error name;
    the summary's byOutcome and failures (execution, error) say so;
  - after it: every target without a fault rotated (the pointer names the
    other user, whose password changed; the previous user still logs in);
    a crashed one left as its crash step leaves it, a rolled-back one
    pointing at its unchanged user; every pointer's user logs in; one
    AWSCURRENT and at most one AWSPENDING per secret;
  - no password of the fleet in the runner's output.
";

/// A fault injected into one target's child execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// `AwsUnavailable` once at this step, retried: must succeed.
    Throttle(&'static str),
    /// `abortAfter` at this step: the real Lambda ran, the execution is gone.
    Crash(&'static str),
    /// WaitForStable fails `RolloutFailed`: rolled back.
    RolloutFailed,
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Throttle(_) => "throttled",
            Fault::Crash(_) => "crash",
            Fault::RolloutFailed => "failed rollout",
        }
    }

    /// The child's status and the summary's error name it must end with.
    fn expected(self) -> (&'static str, &'static str) {
        match self {
            Fault::None | Fault::Throttle(_) => ("SUCCEEDED", "SUCCEEDED"),
            Fault::Crash(_) => ("ABORTED", "Aborted"),
            Fault::RolloutFailed => ("FAILED", "RotationRolledBack"),
        }
    }

    fn scenario(self) -> Value {
        let tasks = match self {
            Fault::None => json!({}),
            Fault::Throttle(step) => json!({ step: [{"throw": {
                "error": "AwsUnavailable",
                "cause": "Rate exceeded (throttling injected by pgflip-bench fleet)"}}]}),
            Fault::Crash(step) => json!({ step: [{"abortAfter": true}] }),
            Fault::RolloutFailed => json!({"WaitForStable": [{"throwAfter": {
                "error": "RolloutFailed",
                "cause": "ECS reported a FAILED deployment (injected by pgflip-bench fleet)"}}]}),
        };
        json!({"waitMs": 0, "retryIntervalMs": 0, "tasks": tasks})
    }
}

/// One target of the fleet.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    target: Target,
    port: u16,
    fault: Fault,
}

/// A target after the sweep: its snapshot, the invariant (the pointer's
/// user), whether the blue user logs in, label problems of its secrets.
type EndState = (
    Member,
    Snapshot,
    Result<String, String>,
    Result<(), String>,
    Vec<String>,
);

/// The registry entry PlanSweep must refuse (no secrets, no services).
const BROKEN: &str = "fleet-broken";

/// A small seeded generator (splitmix64): which targets get faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs `f` on every item, at most `limit` at once, results in order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut handles = Vec::with_capacity(items.len());
    for item in items {
        let permit = gate.clone().acquire_owned().await.expect("the semaphore");
        let fut = f(item);
        handles.push(tokio::spawn(async move {
            let out = fut.await;
            drop(permit);
            out
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a fleet task panicked"));
    }
    out
}

struct Settings {
    max_concurrency: u64,
    per_cluster: u64,
    jitter: u64,
    seed: u64,
    clusters: usize,
    faults: bool,
    recorder: bool,
}

/// The figures of one sweep.
#[derive(Debug, Default, Clone)]
struct Figures {
    targets: usize,
    servers: usize,
    clusters: usize,
    lanes: usize,
    seed_s: f64,
    sweep_s: f64,
    overall: usize,
    per_server: usize,
    per_cluster: usize,
    transitions: Vec<u32>,
    invocations: Vec<u32>,
    /// Each child's time, start to end (ms), and the gaps between one
    /// lane's consecutive children (ms).
    child_ms: Vec<f64>,
    gap_ms: Vec<f64>,
    /// Each child execution's own time (ms).
    execution_ms: Vec<f64>,
    faulted_transitions: BTreeMap<String, Vec<u32>>,
    sweep_transitions: u32,
    sweep_invocations: BTreeMap<String, u32>,
    aws_per_target: Vec<u64>,
    aws_shared: u64,
    aws_by_operation: BTreeMap<String, u64>,
    by_outcome: BTreeMap<String, u64>,
    checks: u64,
    passes: u64,
    violations: u64,
}

pub async fn command(args: &Args) -> bool {
    if args.flag("help") {
        print!("{HELP}");
        return true;
    }
    let sizes: Vec<usize> = match args.text("sizes") {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| crate::usage("--sizes takes whole numbers"))
            })
            .collect(),
        None => vec![args.number("targets", 100) as usize],
    };
    if sizes.iter().any(|&n| n == 0 || n > 999) {
        crate::usage("fleet sizes must be 1 to 999");
    }
    let settings = Settings {
        max_concurrency: args.number("max-concurrency", 4).max(1),
        per_cluster: args.number("per-cluster", 2).max(1),
        jitter: args.number("jitter-seconds", 2),
        seed: args.number("seed", 1),
        clusters: args.number("clusters", 5).max(5) as usize,
        faults: args.number("faults", 1) != 0,
        recorder: args.number("recorder", 0) != 0,
    };
    // The tool's own AWS calls carry app/pgflip-fleet: left out of the count.
    let stack = Arc::new(Stack::from_env_as("pgflip-fleet").await);
    let mut ports = vec![stack.pg_port];
    ports.extend(stack.extra_ports());
    if ports.len() < 3 {
        say("pgflip-bench fleet: needs at least 2 extra database servers (PGFLIP_EXTRA_SERVERS=3 before start_stack; scripts/bench --fleet N starts such a stack)");
        return false;
    }
    let mut rows = vec![];
    let mut ok = true;
    for (k, &n) in sizes.iter().enumerate() {
        let (figures, problems) = one_fleet(&stack, &ports, n, k, &settings).await;
        print_figures(&figures, &settings);
        if problems.is_empty() {
            println!("OK: {n} targets, 0 violations\n");
        } else {
            ok = false;
            for p in &problems {
                println!("FAIL: {p}");
            }
            println!();
        }
        rows.push(figures);
    }
    if rows.len() > 1 {
        print_table(&rows, &settings);
    }
    ok
}

/// Seeds a fleet of `n`, sweeps it once, checks it.
async fn one_fleet(
    stack: &Arc<Stack>,
    ports: &[u16],
    n: usize,
    round: usize,
    settings: &Settings,
) -> (Figures, Vec<String>) {
    let mut problems = vec![];
    let mut figures = Figures {
        targets: n,
        servers: ports.len(),
        ..Figures::default()
    };
    say(format!(
        "== fleet of {n}: {} servers, {} clusters",
        ports.len(),
        settings.clusters
    ));
    let seeding = Instant::now();
    let run = format!("r{}n{n}x{round}", std::process::id());
    let members = layout(stack, ports, n, &run, settings);
    seed_fleet(stack, ports, &members, &run, settings).await;
    figures.seed_s = seeding.elapsed().as_secs_f64();
    figures.clusters = members
        .iter()
        .map(|m| m.target.cluster.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    say(format!(
        "  seeded in {:.1} s: {} user pairs, {} services",
        figures.seed_s,
        n,
        members
            .iter()
            .map(|m| m.target.services.len())
            .sum::<usize>()
    ));
    for kind in ["throttled", "crash", "failed rollout"] {
        let names: Vec<String> = members
            .iter()
            .filter(|m| m.fault.kind() == kind)
            .map(|m| match m.fault {
                Fault::Throttle(s) | Fault::Crash(s) => format!("{} at {s}", m.name),
                _ => m.name.clone(),
            })
            .collect();
        if !names.is_empty() {
            say(format!("  {kind}: {}", names.join(", ")));
        }
    }
    if settings.faults {
        say(format!("  broken registry entry: {BROKEN}"));
    }

    let before: Vec<Snapshot> = bounded(members.clone(), 16, {
        let stack = stack.clone();
        move |m: Member| {
            let stack = stack.clone();
            async move { stack.snapshot(&m.target).await }
        }
    })
    .await;

    // ---- the sweep, watched
    let monitor = Monitor::start(stack.clone(), members.clone());
    if settings.recorder {
        let _ = moto_api("POST", "/moto-api/recorder/reset-recording");
        let _ = moto_api("POST", "/moto-api/recorder/start-recording");
    }
    let mut children = serde_json::Map::new();
    for m in &members {
        children.insert(m.name.clone(), m.fault.scenario());
    }
    let work = std::env::var_os("PGFLIP_STACK_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let history = work.join(format!("fleet-sweep-{run}.json"));
    let input = json!({
        "targets": ["fleet-*"],
        "maxConcurrency": settings.max_concurrency,
        "perCluster": settings.per_cluster,
        "jitterSeconds": settings.jitter,
        "seed": settings.seed,
    });
    say(format!("  sweep: {input}"));
    let options = RunOptions {
        input: Some(input),
        name: Some(format!("fleet-{run}")),
        scenario: Some(json!({"retryIntervalMs": 0, "children": children})),
        history: Some(history.clone()),
        definition: Some(pgflip_tests::repo_root().join("statemachine/sweep.asl.json")),
        ..RunOptions::default()
    };
    let sweeping = Instant::now();
    let runner = stack.clone();
    let e = tokio::task::spawn_blocking(move || runner.run(&options))
        .await
        .expect("the runner thread");
    figures.sweep_s = sweeping.elapsed().as_secs_f64();
    let calls = if settings.recorder {
        let _ = moto_api("POST", "/moto-api/recorder/stop-recording");
        let recording = moto_api("GET", "/moto-api/recorder/download-recording");
        // The recording holds request bodies (new passwords): dropped now.
        let _ = moto_api("POST", "/moto-api/recorder/reset-recording");
        match recording {
            Ok(r) => Some(count_calls(&r)),
            Err(e) => {
                problems.push(format!("moto recorder: {e}"));
                None
            }
        }
    } else {
        None
    };
    let watched = monitor.stop().await;
    figures.checks = watched.checks;
    figures.passes = watched.passes;
    figures.violations = watched.violations.len() as u64;
    for v in watched.violations.iter().take(10) {
        problems.push(format!("during the sweep: {v}"));
    }
    say(format!(
        "  sweep {} ({}) in {:.1} s: {} children; monitor {} passes, {} checks, {} violations",
        e.status,
        e.error.as_deref().unwrap_or("-"),
        figures.sweep_s,
        e.children.len(),
        watched.passes,
        watched.checks,
        watched.violations.len()
    ));
    let events: Vec<Value> = std::fs::read_to_string(&history)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&history);

    // ---- no password in the runner's output
    let passwords = known_passwords(stack, &members).await;
    let printed = format!(
        "{}{}",
        e.progress,
        serde_json::to_string(&e.output).unwrap_or_default()
    );
    let leaked = passwords
        .iter()
        .filter(|p| printed.contains(p.expose()))
        .count();
    if leaked > 0 {
        problems.push(format!(
            "{leaked} password(s) of the fleet in the runner's output"
        ));
    }

    // ---- the plan and the summary (from the sweep's history)
    let exited = |state: &str| {
        events
            .iter()
            .rev()
            .find(|ev| ev["type"] == "StateExited" && ev["state"]["name"] == state)
            .map(|ev| ev["state"]["output"].clone())
    };
    let plan = exited("PlanSweep").map(|o| o["plan"].clone());
    let summary = exited("ReportOutcome").map(|o| o["summary"].clone());
    let lanes: Vec<Vec<String>> = plan
        .as_ref()
        .and_then(|p| p["lanes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            l["targets"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    figures.lanes = lanes.len();
    if plan.is_none() {
        problems.push("no PlanSweep output in the sweep's history".into());
    }
    say(format!(
        "  plan: {} lanes of {} targets",
        lanes.len(),
        lanes
            .iter()
            .map(|l| l.len().to_string())
            .collect::<Vec<_>>()
            .join("/")
    ));

    // ---- outcomes against the faults
    let expected_failures = members
        .iter()
        .filter(|m| m.fault.expected().0 != "SUCCEEDED");
    let mut expected_failed: BTreeMap<String, String> = expected_failures
        .map(|m| (m.name.clone(), m.fault.expected().1.to_string()))
        .collect();
    if settings.faults {
        expected_failed.insert(BROKEN.into(), "ConfigurationError".into());
    }
    let want_status = if expected_failed.is_empty() {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    if e.status != want_status {
        problems.push(format!(
            "the sweep ended {} ({:?}), expected {want_status}",
            e.status, e.error
        ));
    }
    if want_status == "FAILED" && e.error.as_deref() != Some("SweepIncomplete") {
        problems.push(format!(
            "the sweep failed {:?}, expected SweepIncomplete",
            e.error
        ));
    }
    let by_name: BTreeMap<&str, &Member> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut seen = BTreeSet::new();
    for c in &e.children {
        let Some(m) = by_name.get(c.target.as_str()) else {
            problems.push(format!("a child rotated {}, not of this fleet", c.target));
            continue;
        };
        if !seen.insert(c.target.clone()) {
            problems.push(format!("{} rotated twice", c.target));
        }
        let (status, _) = m.fault.expected();
        if c.status != status {
            problems.push(format!(
                "{} ({}): child ended {} {:?}, expected {status}",
                m.name,
                m.fault.kind(),
                c.status,
                c.error
            ));
        }
        if let Fault::Crash(step) = m.fault {
            if c.aborted_in.as_deref() != Some(step) {
                problems.push(format!(
                    "{}: aborted in {:?}, expected {step}",
                    m.name, c.aborted_in
                ));
            }
        }
        let invocations: u32 = c.invocations.values().sum();
        match m.fault {
            Fault::None => {
                figures.transitions.push(c.transitions);
                figures.invocations.push(invocations);
            }
            other => figures
                .faulted_transitions
                .entry(format!("{} ({} inv.)", other.kind(), invocations))
                .or_default()
                .push(c.transitions),
        }
    }
    if seen.len() != members.len() {
        problems.push(format!(
            "{} of {} targets ran a child execution",
            seen.len(),
            members.len()
        ));
    }
    figures.sweep_transitions = e.transitions;
    figures.sweep_invocations = e.invocations.clone();
    match &summary {
        None => problems.push("no ReportOutcome output in the sweep's history".into()),
        Some(s) => {
            let child_names: BTreeMap<String, String> = e
                .children
                .iter()
                .map(|c| (c.target.clone(), c.name.clone()))
                .collect();
            check_summary(
                s,
                n,
                &expected_failed,
                &child_names,
                &mut figures,
                &mut problems,
            )
        }
    }

    // ---- concurrency reached
    let spans: Vec<(u64, u64, &Member)> = e
        .children
        .iter()
        .filter_map(|c| {
            by_name
                .get(c.target.as_str())
                .map(|m| (c.started_ms, c.ended_ms, *m))
        })
        .collect();
    figures.overall = max_overlap(spans.iter().map(|(s, e, _)| (*s, *e)));
    figures.child_ms = spans.iter().map(|(s, e, _)| (e - s) as f64).collect();
    figures.execution_ms = e.children.iter().map(|c| c.duration_ms as f64).collect();
    for lane in &lanes {
        let times: Vec<(u64, u64)> = lane
            .iter()
            .filter_map(|t| e.children.iter().find(|c| &c.target == t))
            .map(|c| (c.started_ms, c.ended_ms))
            .collect();
        for pair in times.windows(2) {
            figures
                .gap_ms
                .push(pair[1].0.saturating_sub(pair[0].1) as f64);
        }
    }
    let grouped = |key: &dyn Fn(&Member) -> String| {
        let mut groups: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for (s, e, m) in &spans {
            groups.entry(key(m)).or_default().push((*s, *e));
        }
        groups
            .into_iter()
            .map(|(k, v)| (k, max_overlap(v.into_iter())))
            .collect::<BTreeMap<_, _>>()
    };
    let per_server = grouped(&|m| m.port.to_string());
    let per_cluster = grouped(&|m| m.target.cluster.clone());
    figures.per_server = per_server.values().copied().max().unwrap_or(0);
    figures.per_cluster = per_cluster.values().copied().max().unwrap_or(0);
    say(format!(
        "  concurrency reached: overall {} (limit {}), per server {:?} (limit 1), per cluster {:?} (limit {})",
        figures.overall,
        settings.max_concurrency,
        per_server.values().collect::<Vec<_>>(),
        per_cluster.values().collect::<Vec<_>>(),
        settings.per_cluster
    ));
    if figures.overall as u64 > settings.max_concurrency {
        problems.push(format!(
            "{} rotations at once, maxConcurrency {}",
            figures.overall, settings.max_concurrency
        ));
    }
    for (server, c) in &per_server {
        if *c > 1 {
            problems.push(format!(
                "{c} rotations at once on the server at port {server}"
            ));
        }
    }
    for (cluster, c) in &per_cluster {
        if *c as u64 > settings.per_cluster {
            problems.push(format!(
                "{c} rotations at once in cluster {cluster}, perCluster {}",
                settings.per_cluster
            ));
        }
    }

    // ---- AWS calls per target
    if let Some((per_target, shared, by_operation)) = calls {
        for m in &members {
            if m.fault == Fault::None {
                figures
                    .aws_per_target
                    .push(per_target.get(&m.name).copied().unwrap_or(0));
            }
        }
        figures.aws_shared = shared;
        figures.aws_by_operation = by_operation;
    }

    // ---- end states
    let after: Vec<EndState> = bounded(members.clone(), 16, {
        let stack = stack.clone();
        move |m: Member| {
            let stack = stack.clone();
            async move {
                let snap = stack.snapshot(&m.target).await;
                let invariant = stack.invariant(&m.target).await;
                let previous = stack
                    .login(&m.target, &m.target.key("blue"), AWSCURRENT)
                    .await;
                let mut labels = vec![];
                for id in [&m.target.blue_secret, &m.target.green_secret] {
                    let (current, pending) = label_counts(&stack, id).await;
                    if current != 1 || pending > 1 {
                        labels.push(format!("{id}: {current} AWSCURRENT, {pending} AWSPENDING"));
                    }
                }
                (m, snap, invariant, previous, labels)
            }
        }
    })
    .await;
    for ((m, after, invariant, previous, labels), before) in after.iter().zip(&before) {
        let (blue, green) = (m.target.key("blue"), m.target.key("green"));
        let mut bad = |p: String| problems.push(format!("{} ({}): {p}", m.name, m.fault.kind()));
        for l in labels {
            bad(l.clone());
        }
        if let Err(err) = invariant {
            bad(format!("after the sweep: {err}"));
        }
        match m.fault {
            Fault::None | Fault::Throttle(_) => {
                if after.active_user != green {
                    bad(format!(
                        "the pointer names {:?}, not the other user",
                        after.active_user
                    ));
                }
                if after.green.current == before.green.current {
                    bad("the new user's password did not change".into());
                }
                if after.green.pending.is_some() {
                    bad("an AWSPENDING version is left".into());
                }
                if after.blue != before.blue {
                    bad("the previous user's secret changed".into());
                }
                if let Err(err) = previous {
                    bad(format!("the previous user no longer logs in: {err}"));
                }
                if after.deployments == before.deployments {
                    bad("no service was redeployed".into());
                }
            }
            Fault::Crash(step) => {
                // Before the flip: nothing the tasks read moved. After it
                // (the flip ran, its result lost): the pointer names the
                // verified new user; the redeploy never ran.
                let flipped = step == "FlipParameter";
                let want = if flipped { &green } else { &blue };
                if &after.active_user != want {
                    bad(format!(
                        "crashed after {step}: the pointer names {:?}, expected {want}",
                        after.active_user
                    ));
                }
                if after.blue != before.blue {
                    bad("the unrotated user's secret changed".into());
                }
                if after.deployments != before.deployments {
                    bad("a service was redeployed by a crashed run".into());
                }
            }
            Fault::RolloutFailed => {
                if after.active_user != blue {
                    bad(format!(
                        "rolled back: the pointer names {:?}, expected {blue}",
                        after.active_user
                    ));
                }
                if after.blue != before.blue {
                    bad("the user rolled back to changed".into());
                }
                if after.green.pending.is_some() {
                    bad("an AWSPENDING version is left".into());
                }
            }
        }
    }
    let tail: String = e
        .progress
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    if !problems.is_empty() && !tail.is_empty() {
        say(format!("  the runner's last lines:\n{tail}"));
    }
    (figures, problems)
}

/// The summary's counts and failures against what was injected.
/// `child_names`: each target's child execution name, as the runner ran it.
fn check_summary(
    s: &Value,
    n: usize,
    expected_failed: &BTreeMap<String, String>,
    child_names: &BTreeMap<String, String>,
    figures: &mut Figures,
    problems: &mut Vec<String>,
) {
    let by_outcome: BTreeMap<String, u64> = s["byOutcome"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    figures.by_outcome = by_outcome.clone();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for error in expected_failed.values() {
        *want.entry(error.clone()).or_default() += 1;
    }
    let refused = u64::from(expected_failed.contains_key(BROKEN));
    let succeeded = n as u64 - (expected_failed.len() as u64 - refused);
    if succeeded > 0 {
        want.insert("SUCCEEDED".into(), succeeded);
    }
    if by_outcome != want {
        problems.push(format!(
            "the summary's byOutcome is {by_outcome:?}, expected {want:?}"
        ));
    }
    if s["targets"].as_u64() != Some(n as u64 + refused) {
        problems.push(format!(
            "the summary counts {} targets, expected {}",
            s["targets"],
            n as u64 + refused
        ));
    }
    let failures = s["failures"].as_array().cloned().unwrap_or_default();
    let listed: BTreeMap<String, &Value> = failures
        .iter()
        .filter_map(|f| f["target"].as_str().map(|t| (t.to_string(), f)))
        .collect();
    if listed.len() != failures.len()
        || listed.keys().collect::<BTreeSet<_>>() != expected_failed.keys().collect()
    {
        problems.push(format!(
            "the summary lists failures {:?}, expected {:?}",
            listed.keys().collect::<Vec<_>>(),
            expected_failed.keys().collect::<Vec<_>>()
        ));
    }
    for (target, f) in &listed {
        let Some(error) = expected_failed.get(target) else {
            continue;
        };
        if f["error"].as_str() != Some(error.as_str()) {
            problems.push(format!(
                "the summary lists {target} failing {}, expected {error}",
                f["error"]
            ));
        }
        if target == BROKEN {
            if f["step"].as_str() != Some("PlanSweep") || !f["execution"].is_null() {
                problems.push(format!(
                    "{target}: refused, expected step PlanSweep and no execution, got {} / {}",
                    f["step"], f["execution"]
                ));
            }
        } else {
            // Its own execution: the ARN ends with the name its child ran as.
            let own = child_names.get(target.as_str());
            if !f["execution"]
                .as_str()
                .zip(own)
                .is_some_and(|(x, name)| x.ends_with(&format!(":{name}")))
            {
                problems.push(format!(
                    "the summary lists {target} with execution {}, but its child ran as {own:?}",
                    f["execution"]
                ));
            }
        }
    }
    let executions: Vec<&str> = listed
        .values()
        .filter_map(|f| f["execution"].as_str())
        .collect();
    if executions.iter().collect::<BTreeSet<_>>().len() != executions.len() {
        problems.push(format!(
            "failed targets share an execution: {} failures, {} distinct executions",
            executions.len(),
            executions.iter().collect::<BTreeSet<_>>().len()
        ));
    }
    let steps: BTreeMap<String, String> = listed
        .iter()
        .map(|(t, f)| {
            (
                t.clone(),
                format!(
                    "{} at {}",
                    f["error"].as_str().unwrap_or("?"),
                    f["step"].as_str().unwrap_or("(no step)")
                ),
            )
        })
        .collect();
    say(format!(
        "  summary: byOutcome {by_outcome:?}; failures {steps:?}"
    ));
}

/// Most spans open at once (an end at the same ms as a start does not overlap).
fn max_overlap(spans: impl Iterator<Item = (u64, u64)>) -> usize {
    let mut edges: Vec<(u64, i32)> = vec![];
    for (s, e) in spans {
        edges.push((s, 1));
        edges.push((e, -1));
    }
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    most as usize
}

/// Where each target goes. Target i (0-based) is on server s = i mod S, in
/// database fleet_a or fleet_b, in cluster 2s or 2s + 1 (mod C): with 5
/// clusters and 3 or 4 servers, every cluster is used and some serve two
/// servers, so perCluster shapes the lanes.
fn layout(stack: &Stack, ports: &[u16], n: usize, run: &str, s: &Settings) -> Vec<Member> {
    let servers = ports.len();
    let mut members = vec![];
    for i in 0..n {
        let name = format!("fleet-{:03}", i + 1);
        let server = i % servers;
        let round = i / servers;
        let cluster = (2 * server + round % 2) % s.clusters;
        let services = if i % 3 == 2 {
            vec![format!("{name}-web"), format!("{name}-worker")]
        } else {
            vec![format!("{name}-web")]
        };
        let id = format!("{run}_{:03}", i + 1);
        let ssm = i % 10 == 4;
        let mut target = Target {
            parameter_name: format!("/pgflip-fleet/{run}/{name}/active-user"),
            blue_secret: format!("pgflip-fleet/{run}/{name}/blue"),
            green_secret: format!("pgflip-fleet/{run}/{name}/green"),
            dbname: if round.is_multiple_of(2) {
                "fleet_a"
            } else {
                "fleet_b"
            }
            .into(),
            blue_role: format!("{id}_blue"),
            green_role: format!("{id}_green"),
            owner_role: "fleet_owner".into(),
            cluster: format!("pgflip-{run}-cluster-{}", cluster + 1),
            services,
            name: Some(name.clone()),
            keys: None,
            port: (ports[server] != stack.pg_port).then_some(ports[server]),
            document: Value::Null,
            alternating: None,
        };
        if ssm {
            target.blue_secret = format!("/pgflip-fleet/{run}/{name}/blue-password");
            target.green_secret = format!("/pgflip-fleet/{run}/{name}/green-password");
            target.keys = Some((target.blue_role.clone(), target.green_role.clone()));
        }
        members.push(Member {
            name,
            target,
            port: ports[server],
            fault: Fault::None,
        });
    }
    if s.faults {
        let crashes = (n / 40).max(1);
        let rollbacks = (n / 40).max(1);
        let throttles = (n / 25).max(1);
        let mut rng = Rng(s.seed ^ (n as u64).wrapping_mul(0x5851_F42D_4C95_7F2D));
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let throttle_steps = [
            "SelectUser",
            "GenerateAndSetPassword",
            "FlipParameter",
            "RedeployEcs",
            "WaitForStable",
        ];
        let mut picks = order.into_iter();
        for k in 0..crashes {
            if let Some(i) = picks.next() {
                members[i].fault = Fault::Crash(if k % 2 == 0 {
                    "GenerateAndSetPassword"
                } else {
                    "FlipParameter"
                });
            }
        }
        for _ in 0..rollbacks {
            if let Some(i) = picks.next() {
                members[i].fault = Fault::RolloutFailed;
            }
        }
        for k in 0..throttles {
            if let Some(i) = picks.next() {
                members[i].fault = Fault::Throttle(throttle_steps[k % throttle_steps.len()]);
            }
        }
    }
    members
}

/// The fleet's databases, roles, secrets, parameters, services and registry
/// entries. Earlier fleets' registry entries are removed first (their
/// resources stay, under their own run's names).
async fn seed_fleet(
    stack: &Arc<Stack>,
    ports: &[u16],
    members: &[Member],
    run: &str,
    settings: &Settings,
) {
    remove_fleet_entries(stack).await;
    let policy = PasswordPolicy::default();
    let passwords: Vec<(Password, Password)> = members
        .iter()
        .map(|_| (policy.generate(), policy.generate()))
        .collect();
    // PostgreSQL: per server, the owner role and the two databases once,
    // then every pair's roles in one batch.
    for &port in ports {
        let admin = stack.admin_at(port, "postgres").await;
        admin
            .batch_execute(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_owner') THEN
                     CREATE ROLE fleet_owner NOLOGIN;
                   END IF; END $$",
            )
            .await
            .unwrap_or_else(|e| panic!("seed the fleet's owner role on port {port}: {e}"));
        for db in ["fleet_a", "fleet_b"] {
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
                .await
                .expect("look for the fleet's database")
                .is_some();
            if !exists {
                admin
                    .batch_execute(&format!("CREATE DATABASE {db} OWNER fleet_owner"))
                    .await
                    .unwrap_or_else(|e| panic!("create {db} on port {port}: {e}"));
                stack
                    .admin_at(port, db)
                    .await
                    .batch_execute(
                        "SET ROLE fleet_owner;
                         CREATE TABLE orders (id bigserial PRIMARY KEY, item text NOT NULL, created timestamptz DEFAULT now());
                         INSERT INTO orders (item) VALUES ('first'), ('second');",
                    )
                    .await
                    .unwrap_or_else(|e| panic!("create {db}'s sample table on port {port}: {e}"));
            }
        }
        let mut batch = String::new();
        for (m, (blue, green)) in members.iter().zip(&passwords) {
            if m.port != port {
                continue;
            }
            for (role, pw) in [(&m.target.blue_role, blue), (&m.target.green_role, green)] {
                batch.push_str(&format!(
                    "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN IN ROLE fleet_owner PASSWORD '{}';\n",
                    pw.scram_verifier()
                ));
            }
        }
        if !batch.is_empty() {
            // The error is the server's (a code and a message), never the batch.
            if let Err(e) = admin.batch_execute(&batch).await {
                panic!(
                    "create the fleet's roles on port {port}: {:?}",
                    e.as_db_error().map(|d| (d.code().code(), d.message()))
                );
            }
        }
    }

    // Passwords, then pointers (`blue`), as a finished rotation leaves them.
    let items: Vec<(Member, Password, Password)> = members
        .iter()
        .cloned()
        .zip(passwords)
        .map(|(m, (b, g))| (m, b, g))
        .collect();
    bounded(items, 16, {
        let stack = stack.clone();
        move |(m, blue, green): (Member, Password, Password)| {
            let stack = stack.clone();
            async move {
                let t = &m.target;
                for (secret, role, pw) in [
                    (&t.blue_secret, &t.blue_role, &blue),
                    (&t.green_secret, &t.green_role, &green),
                ] {
                    if in_ssm(secret) {
                        stack
                            .ssm
                            .put_parameter()
                            .name(secret.as_str())
                            .value(pw.expose())
                            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                            .overwrite(true)
                            .send()
                            .await
                            .expect("create a password parameter");
                    } else {
                        let value = json!({
                            "engine": "postgres", "host": stack.pg_host, "port": m.port,
                            "dbname": t.dbname, "username": role, "password": pw.expose(),
                        });
                        stack
                            .secrets
                            .create_secret()
                            .name(secret.as_str())
                            .secret_string(value.to_string())
                            .send()
                            .await
                            .expect("create a user's secret");
                    }
                }
                stack
                    .ssm
                    .put_parameter()
                    .name(&t.parameter_name)
                    .value(t.key("blue"))
                    .r#type(aws_sdk_ssm::types::ParameterType::String)
                    .overwrite(true)
                    .send()
                    .await
                    .expect("put the active-user parameter");
            }
        }
    })
    .await;
    // A version made from now on compares as newer than the parameters.
    pgflip_tests::next_second().await;

    // ECS: the clusters (one task definition each), then the services.
    let clusters: BTreeSet<String> = members.iter().map(|m| m.target.cluster.clone()).collect();
    for cluster in &clusters {
        stack.create_cluster(cluster).await;
    }
    let services: Vec<(String, String)> = members
        .iter()
        .flat_map(|m| {
            m.target
                .services
                .iter()
                .map(|s| (m.target.cluster.clone(), s.clone()))
        })
        .collect();
    bounded(services, 16, {
        let stack = stack.clone();
        move |(cluster, service): (String, String)| {
            let stack = stack.clone();
            async move {
                stack
                    .ecs
                    .create_service()
                    .cluster(&cluster)
                    .service_name(&service)
                    .task_definition(format!("{cluster}-app"))
                    .desired_count(2)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("create service {service}: {e}"));
            }
        }
    })
    .await;

    // The registry: one parameter per target, and the broken entry.
    bounded(members.to_vec(), 16, {
        let stack = stack.clone();
        move |m: Member| {
            let stack = stack.clone();
            async move { stack.register_in_registry(&m.target).await }
        }
    })
    .await;
    if settings.faults {
        stack
            .ssm
            .put_parameter()
            .name(format!("{TARGETS_REGISTRY}/{BROKEN}"))
            .value(json!({"activeUserParameter": format!("/pgflip-fleet/{run}/broken"), "cluster": "nowhere"}).to_string())
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("write the broken registry entry");
    }
}

/// Deletes the registry entries named `fleet-*` (an earlier fleet's).
async fn remove_fleet_entries(stack: &Stack) {
    let mut names = vec![];
    let mut token = None;
    loop {
        let out = stack
            .ssm
            .get_parameters_by_path()
            .path(TARGETS_REGISTRY)
            .recursive(true)
            .set_next_token(token)
            .send()
            .await
            .expect("list the registry");
        for p in out.parameters() {
            if let Some(name) = p.name() {
                if name
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("fleet-"))
                {
                    names.push(name.to_string());
                }
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for chunk in names.chunks(10) {
        stack
            .ssm
            .delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .expect("delete an earlier fleet's registry entries");
    }
}

/// How many versions carry AWSCURRENT and AWSPENDING (in SSM: the
/// pgflip-current and pgflip-pending labels; none labelled current is the
/// latest, one).
async fn label_counts(stack: &Stack, id: &str) -> (usize, usize) {
    if in_ssm(id) {
        let history = stack
            .ssm
            .get_parameter_history()
            .name(id)
            .send()
            .await
            .expect("get parameter history");
        let count = |label: &str| {
            history
                .parameters()
                .iter()
                .filter(|p| p.labels().iter().any(|l| l == label))
                .count()
        };
        let current = count("pgflip-current");
        return (
            if current == 0 { 1 } else { current },
            count("pgflip-pending"),
        );
    }
    let stages = stack
        .secrets
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("describe a secret")
        .version_ids_to_stages
        .unwrap_or_default();
    let count = |label: &str| {
        stages
            .values()
            .filter(|s| s.iter().any(|x| x == label))
            .count()
    };
    (count(AWSCURRENT), count(AWSPENDING))
}

/// Every password the fleet holds now (both users, AWSCURRENT), to search
/// the runner's output for. Kept in memory only.
async fn known_passwords(stack: &Arc<Stack>, members: &[Member]) -> Vec<Password> {
    let ids: Vec<String> = members
        .iter()
        .flat_map(|m| [m.target.blue_secret.clone(), m.target.green_secret.clone()])
        .collect();
    bounded(ids, 16, {
        let stack = stack.clone();
        move |id: String| {
            let stack = stack.clone();
            async move {
                let t = tokio::spawn(async move { stack.password_at(&id, AWSCURRENT).await });
                t.await.ok()
            }
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect()
}

// ---------------------------------------------------------------- monitor

struct Watched {
    passes: u64,
    checks: u64,
    violations: Vec<String>,
}

/// Checks every target's invariant again and again until stopped.
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Watched>,
}

impl Monitor {
    fn start(stack: Arc<Stack>, members: Vec<Member>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let checks = Arc::new(AtomicU64::new(0));
            let violations = Arc::new(Mutex::new(vec![]));
            let mut passes = 0;
            // At least one full pass, then until stopped.
            loop {
                bounded(members.clone(), 8, {
                    let (stack, checks, violations) =
                        (stack.clone(), checks.clone(), violations.clone());
                    move |m: Member| {
                        let (stack, checks, violations) =
                            (stack.clone(), checks.clone(), violations.clone());
                        async move {
                            let t = m.target.clone();
                            // A panic in a read (a label missing) is a violation too.
                            let outcome = tokio::spawn(async move { stack.invariant(&t).await })
                                .await
                                .unwrap_or_else(|_| Err("the check panicked".into()));
                            checks.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = outcome {
                                violations.lock().unwrap().push(format!("{}: {e}", m.name));
                            }
                        }
                    }
                })
                .await;
                passes += 1;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // Leave the two cores to the sweep between passes.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let violations = violations.lock().unwrap().clone();
            Watched {
                passes,
                checks: checks.load(Ordering::Relaxed),
                violations,
            }
        });
        Self { stop, handle }
    }

    async fn stop(self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("the monitor")
    }
}

// ---------------------------------------------------------------- AWS calls

/// The Lambdas' AWS calls in moto's recording: per target (a request
/// naming exactly one `fleet-NNN`), shared (naming none or several, and
/// every Step Functions call: the guard's ListExecutions/DescribeExecution
/// and report-outcome's history reads), and by operation. The tool's own
/// calls (app/pgflip-fleet), the load harness's and the runner's (Node)
/// are left out. Request bodies are read in memory and dropped.
fn count_calls(recording: &str) -> (BTreeMap<String, u64>, u64, BTreeMap<String, u64>) {
    let (mut per_target, mut shared, mut by_operation) = (BTreeMap::new(), 0, BTreeMap::new());
    for line in recording.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let header = |name: &str| {
            entry["headers"]
                .as_object()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.as_str())
                })
                .unwrap_or_default()
                .to_string()
        };
        let agent = format!("{} {}", header("user-agent"), header("x-amz-user-agent"));
        if agent.contains("pgflip-fleet")
            || agent.contains("pgflip-load")
            || !agent.contains("aws-sdk-rust")
        {
            continue;
        }
        let raw = entry["body"].as_str().unwrap_or_default();
        let body = if entry["body_encoded"].as_bool() == Some(true) {
            String::from_utf8_lossy(&base64_decode(raw)).to_string()
        } else {
            raw.to_string()
        };
        let target = header("x-amz-target");
        let operation = if target.is_empty() {
            // Query protocol (SNS): Action=Publish&...
            let action = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .unwrap_or("?");
            format!("sns:{action}")
        } else {
            let service = match target.split('.').next().unwrap_or_default() {
                t if t.starts_with("AmazonEC2ContainerService") => "ecs",
                t if t.starts_with("AmazonSSM") => "ssm",
                t if t.starts_with("secretsmanager") => "secretsmanager",
                t if t.starts_with("AWSStepFunctions") => "states",
                _ => "other",
            };
            format!(
                "{service}:{}",
                target.rsplit('.').next().unwrap_or_default()
            )
        };
        *by_operation.entry(operation.clone()).or_default() += 1;
        let named = fleet_names(&body);
        if operation.starts_with("states:") || named.len() != 1 {
            shared += 1;
        } else if let Some(name) = named.into_iter().next() {
            *per_target.entry(name).or_default() += 1;
        }
    }
    (per_target, shared, by_operation)
}

/// The `fleet-NNN` names a request body mentions.
fn fleet_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = body.as_bytes();
    let mut from = 0;
    while let Some(at) = body[from..].find("fleet-") {
        let start = from + at;
        let digits = bytes[start + 6..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if digits >= 3 && before_ok {
            names.insert(body[start..start + 6 + digits].to_string());
        }
        from = start + 6;
    }
    names
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let (mut out, mut acc, mut bits) = (vec![], 0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------- output

fn range<T: Ord + Copy + std::fmt::Display>(v: &[T]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "–".into(),
    }
}

fn outcomes(f: &Figures) -> String {
    f.by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn aws(f: &Figures) -> String {
    if f.aws_by_operation.is_empty() {
        return "– (recorder off)".into();
    }
    format!(
        "{} + {:.1} shared",
        range(&f.aws_per_target),
        f.aws_shared as f64 / f.targets as f64
    )
}

fn print_figures(f: &Figures, s: &Settings) {
    println!();
    println!(
        "### Fleet of {} targets: one sweep ({} servers, {} clusters, {} lanes)",
        f.targets, f.servers, f.clusters, f.lanes
    );
    println!();
    println!(
        "- wall time: sweep {:.1} s (seeding {:.1} s); each rotation p50 {:.0} ms, max {:.0} ms (its child runner process, start to end; the execution alone p50 {:.0} ms); between a lane's rotations p50 {:.0} ms",
        f.sweep_s,
        f.seed_s,
        crate::percentile(&f.child_ms, 50.0),
        crate::percentile(&f.child_ms, 100.0),
        crate::percentile(&f.execution_ms, 50.0),
        crate::percentile(&f.gap_ms, 50.0)
    );
    println!(
        "- concurrency reached: overall {} (maxConcurrency {}), per database server {} (limit 1), per ECS cluster {} (perCluster {})",
        f.overall, s.max_concurrency, f.per_server, f.per_cluster, s.per_cluster
    );
    println!(
        "- per target without a fault: {} state transitions, {} Lambda invocations, AWS calls {}",
        range(&f.transitions),
        range(&f.invocations),
        aws(f)
    );
    for (kind, t) in &f.faulted_transitions {
        println!("- per {kind}: {} transitions", range(t));
    }
    println!(
        "- the sweep itself: {} transitions, invocations {:?}",
        f.sweep_transitions, f.sweep_invocations
    );
    if !f.aws_by_operation.is_empty() {
        let total: u64 = f.aws_by_operation.values().sum();
        let list: Vec<String> = f
            .aws_by_operation
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", *v as f64 / f.targets as f64))
            .collect();
        println!(
            "- the Lambdas' AWS calls: {total} in all, per target by operation: {}",
            list.join(", ")
        );
    }
    println!("- outcomes (ReportOutcome's byOutcome): {}", outcomes(f));
    println!(
        "- invariant monitor: {} passes over every target, {} checks, **{} violations**",
        f.passes, f.checks, f.violations
    );
}

fn print_table(rows: &[Figures], s: &Settings) {
    println!(
        "### Fleet sweeps (maxConcurrency {}, perCluster {}, jitter ≤ {} s, seed {})",
        s.max_concurrency, s.per_cluster, s.jitter, s.seed
    );
    println!();
    println!("| targets | servers / clusters / lanes | sweep wall time | concurrency overall / server / cluster | transitions per target | Lambda invocations per target | AWS calls per target | sweep's own transitions | outcomes | monitor checks | violations |");
    println!("|---:|---|---:|---|---:|---:|---:|---:|---|---:|---:|");
    for f in rows {
        println!(
            "| {} | {} / {} / {} | {:.1} s | {} / {} / {} | {} | {} | {} | {} | {} | {} | **{}** |",
            f.targets,
            f.servers,
            f.clusters,
            f.lanes,
            f.sweep_s,
            f.overall,
            f.per_server,
            f.per_cluster,
            range(&f.transitions),
            range(&f.invocations),
            aws(f),
            f.sweep_transitions,
            outcomes(f),
            f.checks,
            f.violations
        );
    }
    println!();
}
