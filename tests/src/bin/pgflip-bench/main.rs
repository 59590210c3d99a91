//! pgflip-bench: zero downtime under load, and what a rotation costs.
//!
//! Runs on the local stack (`$STACK_DIR/stack.env`, see scripts/lib/stack.sh);
//! `scripts/bench` starts the stack and calls this. Everything it talks to is
//! on 127.0.0.1. It prints identifiers and counts, never a password.
//!
//!   pgflip-bench run [--rotations N] [--rollbacks N] [--alternating N]
//!                    [--alternating-rollbacks N] [--baseline N]
//!                    [--scale 1,5,20] [--scale-runs N] [--extra-polls K]
//!                    [--moto-recorder] [--json FILE]
//!       N rotations through the real state machine under load, the forced
//!       rollback, the same in the alternating-secret layout (the target
//!       "alternating", its tasks' credentials injected from the secret as
//!       ECS does), the single-user baseline, the 1/5/20-service scale runs;
//!       prints the tables; exits 1 if a blue/green or alternating login
//!       failed or an execution ended other than expected.
//!
//!   pgflip-bench load [--seconds S] [--services a,b]
//!       the load harness alone (for example beside `scripts/rotate-local --keep`)
//!
//!   pgflip-bench inject-check [--seconds S]
//!       credentials injected the way ECS does (task definition `secrets`
//!       from one alternating secret's JSON keys, see injection.rs): tasks
//!       keep what they started with when the secret's AWSCURRENT moves, and
//!       tasks of a forced new deployment take the new user; exits 1 if a
//!       check fails
//!
//!   pgflip-bench chaos [--scenarios N] [--seed S] [--only K] [--max-seconds T]
//!       the chaos soak (chaos.rs): N seeded random schedules of 3–8 events
//!       (executions started by hand, schedule or RotationSucceeded event,
//!       crashes then a redrive or re-run, throttling, Lambda timeouts,
//!       failed rollouts, runs limited to a service, releases, Secrets
//!       Manager's own rotations) against the local target under load, the
//!       invariants checked after every event; exits 1 at the first violation
//!       and prints the seed, the schedule and the event
//!
//!   pgflip-bench fleet [--targets N | --sizes 10,50,100] [--max-concurrency M]
//!                      [--per-cluster K] [--jitter-seconds J] [--seed S]
//!       one sweep over a seeded fleet (fleet.rs, issue 14): faults injected
//!       into some targets, the invariant watched during the sweep, the
//!       concurrency reached and the cost per target; `fleet --help`
//!
//!   pgflip-bench footprint --bin-dir DIR --python PY [--samples N]
//!       size, init time and peak RSS of each Lambda bootstrap and of the
//!       Python/boto3 equivalents, against a Runtime API emulator
//!
//! Load settings (all runs): --tasks 2 --pause-ms 50 --start-ms 300
//! --stagger-ms 100 --drain-ms 500 --poll-ms 100.

mod chaos;
mod fleet;
mod footprint;
mod harness;
mod injection;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{CredentialSource, Harness, LoadConfig, Totals};
use pgflip_core::domain::{DbSecret, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use pgflip_core::password::PasswordPolicy;
use pgflip_tests::{Execution, RunOptions, Stack, Target};
use serde_json::{json, Value};

// ---------------------------------------------------------------- arguments

struct Args {
    command: String,
    options: BTreeMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse() -> Self {
        let mut raw = std::env::args().skip(1);
        let command = raw.next().unwrap_or_default();
        let mut options = BTreeMap::new();
        let mut flags = vec![];
        let rest: Vec<String> = raw.collect();
        let mut i = 0;
        while i < rest.len() {
            let key = rest[i]
                .strip_prefix("--")
                .unwrap_or_else(|| usage(&format!("unexpected argument {}", rest[i])));
            if matches!(key, "moto-recorder" | "help") {
                flags.push(key.to_string());
                i += 1;
            } else {
                let value = rest
                    .get(i + 1)
                    .unwrap_or_else(|| usage(&format!("--{key} needs a value")));
                options.insert(key.to_string(), value.clone());
                i += 2;
            }
        }
        Self {
            command,
            options,
            flags,
        }
    }

    fn number(&self, key: &str, default: u64) -> u64 {
        self.options.get(key).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("--{key} must be a whole number")))
        })
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }

    fn load_config(&self, target: &Target, services: Vec<String>) -> LoadConfig {
        let ms = |key: &str, default: u64| Duration::from_millis(self.number(key, default));
        let mut c = LoadConfig::new(target, services);
        c.tasks_per_service = self.number("tasks", 2) as usize;
        c.query_pause = ms("pause-ms", c.query_pause.as_millis() as u64);
        c.task_start = ms("start-ms", c.task_start.as_millis() as u64);
        c.stagger = ms("stagger-ms", c.stagger.as_millis() as u64);
        c.drain = ms("drain-ms", c.drain.as_millis() as u64);
        c.poll_every = ms("poll-ms", c.poll_every.as_millis() as u64);
        c
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("pgflip-bench: {problem}");
    eprintln!("usage: pgflip-bench run|load|inject-check|chaos|fleet|footprint [options]   (see the top of tests/src/bin/pgflip-bench/main.rs)");
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let ok = match args.command.as_str() {
        "run" => run(&args).await,
        "load" => load_only(&args).await,
        "inject-check" => injection::command(&args).await,
        "footprint" => footprint::command(&args).await,
        "chaos" => chaos::command(&args).await,
        "fleet" => fleet::command(&args).await,
        other => usage(&format!("unknown command {other:?}")),
    };
    std::process::exit(if ok { 0 } else { 1 });
}

// ---------------------------------------------------------------- helpers

fn say(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// `lo–hi` of counts (one number when all are equal).
fn range(v: &[u32]) -> String {
    let (lo, hi) = (
        v.iter().min().copied().unwrap_or(0),
        v.iter().max().copied().unwrap_or(0),
    );
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

/// One row of the load table for a phase of executions: its rotations,
/// queries, failed logins, other errors, duration p50 / p95 (with the waits
/// when they were not shortened), transitions and invocations.
fn print_phase_row(label: &str, phase: &Phase, waits_ms: Option<u64>) {
    let d: Vec<f64> = phase.runs.iter().map(|r| r.duration_ms as f64).collect();
    let t: Vec<u32> = phase.runs.iter().map(|r| r.transitions).collect();
    let i: Vec<u32> = phase.runs.iter().map(|r| r.invocations).collect();
    let waits = waits_ms.map_or(String::new(), |w| format!(" (waits {w} ms)"));
    println!(
        "| {label} | {} | {} | **{}** | {} | {:.0} / {:.0}{waits} | {} | {} |",
        phase.runs.len(),
        phase.load.queries,
        phase.load.failed_logins,
        phase.load.other_errors,
        percentile(&d, 50.0),
        percentile(&d, 95.0),
        range(&t),
        range(&i)
    );
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn other_user(key: &str) -> &'static str {
    if key == "blue" {
        "green"
    } else {
        "blue"
    }
}

struct Ctx {
    stack: Arc<Stack>,
    target: Target,
    admin: tokio_postgres::Client,
    problems: Vec<String>,
}

impl Ctx {
    async fn execute(&self, options: RunOptions) -> (Execution, Duration) {
        let stack = self.stack.clone();
        let started = Instant::now();
        let execution = tokio::task::spawn_blocking(move || stack.run(&options))
            .await
            .expect("the runner thread");
        (execution, started.elapsed())
    }

    async fn sessions_of(&self, role: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .await
            .map(|row| row.get::<_, i64>(0))
            .unwrap_or(-1)
    }

    /// The active user's key: the parameter's value, or in the alternating
    /// layout the role the secret's AWSCURRENT names.
    async fn active(&self) -> String {
        if self.target.alternating.is_some() {
            self.stack
                .alternating_user(&self.target, AWSCURRENT)
                .await
                .unwrap_or_default()
        } else {
            self.stack.active_user(&self.target).await
        }
    }

    /// The key of the other user of the target (`blue`/`green`, or the
    /// alternating target's other role).
    fn other_key(&self, key: &str) -> String {
        let t = &self.target;
        t.key(if t.color_of(key) == Some("blue") {
            "green"
        } else {
            "blue"
        })
    }

    /// Between two rotations: the harness's rollout is complete (what ECS's
    /// COMPLETED means; moto says COMPLETED at once) and the inactive user
    /// has no session left, so the next preflight passes.
    async fn wait_ready(&mut self, harness: &Harness) -> Duration {
        let started = Instant::now();
        if let Err(e) = harness.wait_settled(Duration::from_secs(60)).await {
            self.problems.push(e);
        }
        let active = self.active().await;
        let inactive = self.target.role_of(&self.other_key(&active)).to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.sessions_of(&inactive).await != 0 {
            if Instant::now() > deadline {
                self.problems
                    .push(format!("{inactive} still has sessions after 20 s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            let p = problem();
            say(format!("  !! {p}"));
            self.problems.push(p);
        }
    }
}

fn scenario(wait_ms: u64, tasks: Value) -> Value {
    json!({"waitMs": wait_ms, "retryIntervalMs": 0, "tasks": tasks})
}

fn invocations(e: &Execution) -> u32 {
    e.invocations.values().sum()
}

/// One execution's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    name: String,
    status: String,
    error: Option<String>,
    duration_ms: u64,
    wall_ms: u64,
    transitions: u32,
    invocations: u32,
    settle_ms: u64,
    failed_logins: u64,
    queries: u64,
}

fn record(e: &Execution, wall: Duration, settle: Duration, load: Totals) -> Run {
    Run {
        name: e.name.clone(),
        status: e.status.clone(),
        error: e.error.clone(),
        duration_ms: e.duration_ms,
        wall_ms: wall.as_millis() as u64,
        transitions: e.transitions,
        invocations: invocations(e),
        settle_ms: settle.as_millis() as u64,
        failed_logins: load.failed_logins,
        queries: load.queries,
    }
}

// ---------------------------------------------------------------- phases

#[derive(Debug, Default, serde::Serialize)]
struct Phase {
    name: String,
    runs: Vec<Run>,
    #[serde(skip)]
    load: Totals,
    load_json: Value,
    seconds: f64,
    errors: Vec<String>,
    /// Rotations after which the layout's invariant did not hold.
    invariant_violations: u64,
}

fn totals_json(t: &Totals) -> Value {
    json!({
        "queries": t.queries, "failedLogins": t.failed_logins, "otherErrors": t.other_errors,
        "credentialErrors": t.credential_errors, "asBlue": t.as_blue, "asGreen": t.as_green,
        "tasksStarted": t.tasks_started, "tasksStopped": t.tasks_stopped,
        "deploymentsSeen": t.deployments_seen,
    })
}

async fn finish_phase(mut phase: Phase, harness: Harness, started: Instant) -> Phase {
    phase.errors = harness.error_samples();
    phase.load = harness.stop().await;
    phase.load_json = totals_json(&phase.load);
    phase.seconds = started.elapsed().as_secs_f64();
    say(format!(
        "  load: {} queries, {} failed logins, {} other errors, {} tasks started",
        phase.load.queries,
        phase.load.failed_logins,
        phase.load.other_errors,
        phase.load.tasks_started
    ));
    phase
}

/// N consecutive rotations through the real state machine under load.
async fn blue_green(ctx: &mut Ctx, args: &Args, n: u64, extra_polls: u64) -> (Phase, Option<Run>) {
    say(format!(
        "== blue/green: {n} rotations under load (waits shortened to 0)"
    ));
    let started = Instant::now();
    let config = args.load_config(&ctx.target, ctx.target.services.clone());
    let harness = Harness::start(&ctx.target, config).await;
    ctx.wait_ready(&harness).await;
    let mut phase = Phase {
        name: "blue/green".into(),
        ..Phase::default()
    };

    // Warm-up: the first invoke of each function in cargo lambda watch starts
    // its process. Under load and counted in the failed logins, not timed.
    let (e, _) = ctx
        .execute(RunOptions {
            name: Some(format!("bench-warmup-{}", std::process::id())),
            scenario: Some(scenario(0, json!({}))),
            ..RunOptions::default()
        })
        .await;
    ctx.check(e.status == "SUCCEEDED", || {
        format!("warm-up rotation: {} {:?} {:?}", e.status, e.error, e.cause)
    });
    ctx.wait_ready(&harness).await;

    for i in 1..=n {
        let before = ctx.stack.active_user(&ctx.target).await;
        let load_before = harness.totals();
        let (e, wall) = ctx
            .execute(RunOptions {
                name: Some(format!("bench-bg-{i}-{}", std::process::id())),
                scenario: Some(scenario(0, json!({}))),
                ..RunOptions::default()
            })
            .await;
        let settle = ctx.wait_ready(&harness).await;
        let after = ctx.stack.active_user(&ctx.target).await;
        let load = harness.totals() - load_before;
        ctx.check(
            e.status == "SUCCEEDED" && after == other_user(&before),
            || {
                format!(
                    "rotation {i}: {} {:?} {:?}, active user {before} -> {after}",
                    e.status, e.error, e.cause
                )
            },
        );
        let invariant = ctx.stack.invariant(&ctx.target).await;
        phase.invariant_violations += u64::from(invariant.is_err());
        ctx.check(invariant.is_ok(), || {
            format!("rotation {i}: invariant broken: {invariant:?}")
        });
        let run = record(&e, wall, settle, load);
        if i == 1 || i % 10 == 0 || i == n || load.failed_logins > 0 {
            say(format!(
                "  rotation {i}/{n}: {before} -> {after}, {} in {} ms, {} transitions, {} invocations; load {} queries, {} failed logins",
                e.status, e.duration_ms, e.transitions, run.invocations, load.queries, load.failed_logins
            ));
        }
        phase.runs.push(run);
    }

    // One more rotation whose rollout needs `extra_polls` more looks.
    let mut polled = None;
    if extra_polls > 0 {
        let in_progress: Vec<Value> = (0..extra_polls)
            // The real look, reported as still rolling out (moto completes
            // at once): a normal result, which the state machine loops on.
            .map(|_| json!({"merge": {"status": "IN_PROGRESS"}}))
            .collect();
        let load_before = harness.totals();
        let (e, wall) = ctx
            .execute(RunOptions {
                name: Some(format!("bench-polls-{}", std::process::id())),
                scenario: Some(scenario(0, json!({"WaitForStable": in_progress}))),
                ..RunOptions::default()
            })
            .await;
        let settle = ctx.wait_ready(&harness).await;
        let load = harness.totals() - load_before;
        ctx.check(e.status == "SUCCEEDED", || {
            format!(
                "rotation with {extra_polls} extra polls: {} {:?}",
                e.status, e.error
            )
        });
        say(format!(
            "  rotation with {extra_polls} extra polls: {} in {} ms, {} transitions",
            e.status, e.duration_ms, e.transitions
        ));
        polled = Some(record(&e, wall, settle, load));
    }
    (finish_phase(phase, harness, started).await, polled)
}

/// Rotations whose rollout is reported FAILED: the state machine flips the
/// parameter back and redeploys again, under load.
async fn rollback(ctx: &mut Ctx, args: &Args, n: u64, wait_ms: u64) -> Phase {
    say(format!(
        "== forced rollback: {n} rotation(s) with a FAILED rollout injected, under load (waits {wait_ms} ms)"
    ));
    let started = Instant::now();
    let config = args.load_config(&ctx.target, ctx.target.services.clone());
    let harness = Harness::start(&ctx.target, config).await;
    ctx.wait_ready(&harness).await;
    let mut phase = Phase {
        name: "rollback".into(),
        ..Phase::default()
    };
    for i in 1..=n {
        let before = ctx.stack.active_user(&ctx.target).await;
        let load_before = harness.totals();
        let (e, wall) = ctx
            .execute(RunOptions {
                name: Some(format!("bench-rollback-{i}-{}", std::process::id())),
                scenario: Some(scenario(
                    wait_ms,
                    json!({"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "ECS reported a FAILED deployment (injected)"}}]}),
                )),
                ..RunOptions::default()
            })
            .await;
        let settle = ctx.wait_ready(&harness).await;
        let after = ctx.stack.active_user(&ctx.target).await;
        let load = harness.totals() - load_before;
        ctx.check(
            e.status == "FAILED"
                && e.error.as_deref() == Some("RotationRolledBack")
                && after == before,
            || {
                format!(
                    "rollback {i}: {} {:?}, active user {before} -> {after}",
                    e.status, e.error
                )
            },
        );
        let invariant = ctx.stack.invariant(&ctx.target).await;
        phase.invariant_violations += u64::from(invariant.is_err());
        ctx.check(invariant.is_ok(), || {
            format!("rollback {i}: invariant broken: {invariant:?}")
        });
        say(format!(
            "  rollback {i}/{n}: {} ({}) in {} ms, {} transitions, {} invocations; active user stays {after}; load {} queries ({} as blue, {} as green), {} failed logins",
            e.status,
            e.error.as_deref().unwrap_or("-"),
            e.duration_ms,
            e.transitions,
            invocations(&e),
            load.queries,
            load.as_blue,
            load.as_green,
            load.failed_logins
        ));
        phase.runs.push(record(&e, wall, settle, load));
    }
    finish_phase(phase, harness, started).await
}

/// The task definition family the alternating target's services run: every
/// `DB_*` variable injected from the alternating secret's JSON keys.
const ALTERNATING_FAMILY: &str = "pgflip-local-alt-injected";

/// Seeds the alternating target (roles, database, secret, cluster and its
/// services), lists it in the targets document, and points its services at
/// a task definition that injects the secret (`AWSCURRENT`) as ECS does.
async fn prepare_alternating(stack: &Stack, t: &Target) -> Result<(), String> {
    stack.seed(t).await;
    stack.register_target(t).await;
    let secret = t.alternating.as_deref().expect("an alternating target");
    let arn = stack.secret_arn(secret).await;
    injection::inject_from_secret(
        &stack.ecs,
        &t.cluster,
        &t.services,
        ALTERNATING_FAMILY,
        &arn,
    )
    .await
    .map(|_| ())
}

/// The alternating-secret layout under load: `n` rotations of the target
/// `ctx.target` (one secret whose AWSCURRENT names the active role), the
/// harness's tasks taking their credentials the way ECS injects them (the
/// task definition's `secrets[]` resolved at task start), then `rollbacks`
/// rotations whose rollout is reported FAILED (AWSCURRENT moves back to
/// AWSPREVIOUS, the services are redeployed again).
async fn alternating(
    ctx: &mut Ctx,
    args: &Args,
    n: u64,
    rollbacks: u64,
    wait_ms: u64,
) -> (Phase, Option<Phase>) {
    let roles = format!("{} / {}", ctx.target.blue_role, ctx.target.green_role);
    let mut config = args.load_config(&ctx.target, ctx.target.services.clone());
    config.credentials = CredentialSource::Injected;
    let input = ctx.target.input();

    say(format!(
        "== alternating secret: {n} rotations of {input} (roles {roles}) under load, credentials injected by ECS from {} (waits shortened to 0)",
        ctx.target.alternating.as_deref().unwrap_or_default()
    ));
    let started = Instant::now();
    let harness = Harness::start(&ctx.target, config.clone()).await;
    ctx.wait_ready(&harness).await;
    let mut phase = Phase {
        name: "alternating".into(),
        ..Phase::default()
    };
    for i in 1..=n {
        let before = ctx.active().await;
        let load_before = harness.totals();
        let (e, wall) = ctx
            .execute(RunOptions {
                name: Some(format!("bench-alt-{i}-{}", std::process::id())),
                input: Some(input.clone()),
                scenario: Some(scenario(0, json!({}))),
                ..RunOptions::default()
            })
            .await;
        let settle = ctx.wait_ready(&harness).await;
        let after = ctx.active().await;
        let load = harness.totals() - load_before;
        let expected = ctx.other_key(&before);
        ctx.check(e.status == "SUCCEEDED" && after == expected, || {
            format!(
                "alternating rotation {i}: {} {:?} {:?}, AWSCURRENT names {before} -> {after}",
                e.status, e.error, e.cause
            )
        });
        let invariant = ctx.stack.invariant(&ctx.target).await;
        phase.invariant_violations += u64::from(invariant.is_err());
        ctx.check(invariant.is_ok(), || {
            format!("alternating rotation {i}: invariant broken: {invariant:?}")
        });
        // Tasks started before the flip keep the previous role: it still works.
        let previous = ctx.stack.login_stage(&ctx.target, AWSPREVIOUS).await;
        ctx.check(previous.as_deref() == Ok(before.as_str()), || {
            format!(
                "alternating rotation {i}: AWSPREVIOUS ({before}) does not log in: {previous:?}"
            )
        });
        let run = record(&e, wall, settle, load);
        if i == 1 || i % 10 == 0 || i == n || load.failed_logins > 0 {
            say(format!(
                "  alternating rotation {i}/{n}: {before} -> {after}, {} in {} ms, {} transitions, {} invocations; load {} queries ({} as {}, {} as {}), {} failed logins",
                e.status, e.duration_ms, e.transitions, run.invocations, load.queries,
                load.as_blue, ctx.target.blue_role, load.as_green, ctx.target.green_role,
                load.failed_logins
            ));
        }
        phase.runs.push(run);
    }
    let phase = finish_phase(phase, harness, started).await;
    check_alternating_load(ctx, &phase, n > 0);
    if rollbacks == 0 {
        return (phase, None);
    }

    say(format!(
        "== alternating rollback: {rollbacks} rotation(s) of {input} with a FAILED rollout injected, under load (waits {wait_ms} ms)"
    ));
    let started = Instant::now();
    let harness = Harness::start(&ctx.target, config).await;
    ctx.wait_ready(&harness).await;
    let mut rb = Phase {
        name: "alternating rollback".into(),
        ..Phase::default()
    };
    for i in 1..=rollbacks {
        let before = ctx.active().await;
        let load_before = harness.totals();
        let (e, wall) = ctx
            .execute(RunOptions {
                name: Some(format!("bench-alt-rollback-{i}-{}", std::process::id())),
                input: Some(input.clone()),
                scenario: Some(scenario(
                    wait_ms,
                    json!({"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "forced (bench)"}}]}),
                )),
                ..RunOptions::default()
            })
            .await;
        let settle = ctx.wait_ready(&harness).await;
        let after = ctx.active().await;
        let load = harness.totals() - load_before;
        ctx.check(
            e.status == "FAILED"
                && e.error.as_deref() == Some("RotationRolledBack")
                && after == before,
            || {
                format!(
                    "alternating rollback {i}: {} {:?} {:?}, AWSCURRENT names {before} -> {after}",
                    e.status, e.error, e.cause
                )
            },
        );
        let invariant = ctx.stack.invariant(&ctx.target).await;
        rb.invariant_violations += u64::from(invariant.is_err());
        ctx.check(invariant.is_ok(), || {
            format!("alternating rollback {i}: invariant broken: {invariant:?}")
        });
        say(format!(
            "  alternating rollback {i}/{rollbacks}: {} ({}) in {} ms, {} transitions, {} invocations; AWSCURRENT stays {after}; load {} queries ({} as {}, {} as {}), {} failed logins",
            e.status,
            e.error.as_deref().unwrap_or("-"),
            e.duration_ms,
            e.transitions,
            invocations(&e),
            load.queries,
            load.as_blue,
            ctx.target.blue_role,
            load.as_green,
            ctx.target.green_role,
            load.failed_logins
        ));
        rb.runs.push(record(&e, wall, settle, load));
    }
    let rb = finish_phase(rb, harness, started).await;
    check_alternating_load(ctx, &rb, true);
    (phase, Some(rb))
}

/// The injected tasks' figures: every credential resolved, every query
/// counted as one of the target's two roles, and (after a flip) both seen.
fn check_alternating_load(ctx: &mut Ctx, phase: &Phase, both_roles: bool) {
    let l = phase.load;
    let (blue, green) = (ctx.target.blue_role.clone(), ctx.target.green_role.clone());
    say(format!(
        "  {}: {} queries as {blue}, {} as {green}; {} credential errors; {} invariant violation(s)",
        phase.name, l.as_blue, l.as_green, l.credential_errors, phase.invariant_violations
    ));
    let name = phase.name.clone();
    ctx.check(l.credential_errors == 0, || {
        format!(
            "{name}: {} task start(s) could not resolve the injected secrets: {:?}",
            l.credential_errors, phase.errors
        )
    });
    ctx.check(l.as_blue + l.as_green == l.queries, || {
        format!(
            "{name}: {} of {} queries ran as neither {blue} nor {green}",
            l.queries - l.as_blue - l.as_green,
            l.queries
        )
    });
    ctx.check(!both_roles || (l.as_blue > 0 && l.as_green > 0), || {
        format!(
            "{name}: the tasks did not run as both roles ({} as {blue}, {} as {green})",
            l.as_blue, l.as_green
        )
    });
}

/// The approach blue/green replaces: change the active user's password in
/// place, update its secret, redeploy. Same harness, same timing.
async fn baseline(ctx: &mut Ctx, args: &Args, n: u64) -> Phase {
    say(format!(
        "== single-user baseline: {n} in-place rotations of the active user, then redeploy, under the same load"
    ));
    let started = Instant::now();
    let config = args.load_config(&ctx.target, ctx.target.services.clone());
    let harness = Harness::start(&ctx.target, config).await;
    ctx.wait_ready(&harness).await;
    let aws = harness::harness_aws().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let ecs = aws_sdk_ecs::Client::new(&aws);
    let policy = PasswordPolicy::default();
    let mut phase = Phase {
        name: "baseline".into(),
        ..Phase::default()
    };
    for i in 1..=n {
        let active = ctx.stack.active_user(&ctx.target).await;
        let secret_id = ctx.target.secret_of(&active).to_string();
        let role = ctx.target.role_of(&active).to_string();
        let load_before = harness.totals();
        let t0 = Instant::now();
        // As a single-user rotation Lambda does it (createSecret, setSecret,
        // finishSecret), then the redeploy that makes the tasks read it.
        let current = secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
            .expect("read the active user's secret");
        let current_version = current.version_id.clone().unwrap_or_default();
        let secret = DbSecret::parse(&secret_id, current.secret_string().unwrap_or_default())
            .expect("a well-formed secret");
        let password = policy.generate();
        // 1. stage the new password as AWSPENDING
        let pending = secrets
            .put_secret_value()
            .secret_id(&secret_id)
            .secret_string(
                secret
                    .with_password(password.clone())
                    .to_secret_string()
                    .expose(),
            )
            .version_stages(AWSPENDING)
            .send()
            .await
            .expect("put the new secret version")
            .version_id
            .unwrap_or_default();
        // 2. set it in the database: from now on the old password fails
        ctx.admin
            .simple_query(&format!(
                "ALTER ROLE \"{role}\" PASSWORD '{}'",
                password.scram_verifier()
            ))
            .await
            .expect("ALTER ROLE of the active user");
        // 3. promote it to AWSCURRENT
        ctx.stack
            .promote_staged(&secret_id, &current_version, &pending, AWSPENDING)
            .await;
        // 4. redeploy every service, concurrently
        redeploy(&ecs, &ctx.target.cluster, &ctx.target.services).await;
        let rotated = t0.elapsed();
        let settle = ctx.wait_ready(&harness).await;
        let load = harness.totals() - load_before;
        let invariant = ctx.stack.invariant(&ctx.target).await;
        phase.invariant_violations += u64::from(invariant.is_err());
        ctx.check(invariant.is_ok(), || {
            format!("baseline {i}: invariant broken: {invariant:?}")
        });
        say(format!(
            "  baseline {i}/{n}: {active} changed in place in {} ms, tasks replaced {} ms later; load {} queries, {} failed logins",
            rotated.as_millis(),
            settle.as_millis(),
            load.queries,
            load.failed_logins
        ));
        phase.runs.push(Run {
            name: format!("baseline-{i}"),
            status: "DONE".into(),
            error: None,
            duration_ms: rotated.as_millis() as u64,
            wall_ms: rotated.as_millis() as u64,
            transitions: 0,
            invocations: 0,
            settle_ms: settle.as_millis() as u64,
            failed_logins: load.failed_logins,
            queries: load.queries,
        });
    }
    finish_phase(phase, harness, started).await
}

// ---------------------------------------------------------------- scale

#[derive(Debug, Clone, serde::Serialize)]
struct ScaleRow {
    services: usize,
    runs: usize,
    total_ms_p50: f64,
    redeploy_ms_p50: f64,
    wait_ms_p50: f64,
    transitions: u32,
    failed_logins: u64,
    queries: u64,
    aws_calls: BTreeMap<String, u64>,
    /// Reference: the same UpdateService calls sent from the bench, one by one and all at once.
    one_by_one_ms: f64,
    at_once_ms: f64,
}

/// Milliseconds spent in each state (summed over its visits), from the runner's history.
fn state_times(history: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(history).unwrap_or_default();
    let events: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    let mut entered: BTreeMap<String, f64> = BTreeMap::new();
    let mut spent: BTreeMap<String, f64> = BTreeMap::new();
    for event in &events {
        let name = event["state"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let at = event["timestamp"].as_f64().unwrap_or(0.0);
        match event["type"].as_str() {
            Some("StateEntered") => {
                entered.insert(name, at);
            }
            Some("StateExited") | Some("StateFailed") => {
                if let Some(start) = entered.remove(&name) {
                    *spent.entry(name).or_default() += at - start;
                }
            }
            _ => {}
        }
    }
    spent
}

/// Plain HTTP/1.1 to moto's management API on loopback.
fn moto_api(method: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|e| e.to_string())?;
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    if !host.starts_with("127.0.0.1:") {
        return Err(format!("refusing a non-loopback endpoint {host}"));
    }
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// AWS calls in moto's recording, by operation, leaving out the harness's own.
fn count_calls(recording: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in recording.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let headers = &entry["headers"];
        let header = |name: &str| {
            headers
                .as_object()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.as_str())
                })
                .unwrap_or_default()
                .to_string()
        };
        // The Lambdas use the Rust SDK; the harness marks its own calls
        // (app/pgflip-load); the local runner's Step Functions bookkeeping
        // (StartExecution, StopExecution: Step Functions' own work in AWS)
        // comes from Node.
        let agent = format!("{} {}", header("user-agent"), header("x-amz-user-agent"));
        if agent.contains("pgflip-load") || !agent.contains("aws-sdk-rust") {
            continue;
        }
        let target = header("x-amz-target");
        let operation = target.rsplit('.').next().unwrap_or_default();
        let service = if target.starts_with("AmazonEC2ContainerService") {
            "ecs"
        } else if target.starts_with("AmazonSSM") {
            "ssm"
        } else if target.starts_with("secretsmanager") {
            "secretsmanager"
        } else if target.starts_with("AWSStepFunctions") {
            "states"
        } else {
            "other"
        };
        *calls.entry(format!("{service}:{operation}")).or_default() += 1;
    }
    calls
}

/// `UpdateService` with `forceNewDeployment` for every service, concurrently.
async fn redeploy(ecs: &aws_sdk_ecs::Client, cluster: &str, services: &[String]) {
    let handles: Vec<_> = services
        .iter()
        .map(|service| {
            let call = ecs
                .update_service()
                .cluster(cluster)
                .service(service)
                .force_new_deployment(true);
            tokio::spawn(call.send())
        })
        .collect();
    for handle in handles {
        handle
            .await
            .expect("the UpdateService task")
            .expect("ecs:UpdateService");
    }
}

async fn ensure_services(ctx: &Ctx, services: &[String]) {
    let ecs = &ctx.stack.ecs;
    let mut active = vec![];
    for batch in services.chunks(10) {
        let out = ecs
            .describe_services()
            .cluster(&ctx.target.cluster)
            .set_services(Some(batch.to_vec()))
            .send()
            .await
            .expect("describe services");
        for s in out.services() {
            if s.status() == Some("ACTIVE") {
                active.push(s.service_name().unwrap_or_default().to_string());
            }
        }
    }
    for service in services.iter().filter(|s| !active.contains(s)) {
        ecs.create_service()
            .cluster(&ctx.target.cluster)
            .service_name(service)
            .task_definition(format!("{}-app", ctx.target.cluster))
            .desired_count(2)
            .send()
            .await
            .expect("create a service for the scale run");
    }
}

async fn scale(
    ctx: &mut Ctx,
    args: &Args,
    sizes: &[usize],
    runs: u64,
    record_calls: bool,
    work: &Path,
) -> (Vec<ScaleRow>, Totals) {
    say(format!(
        "== scale: rotations with {sizes:?} ECS services (input \"services\"), {runs} timed run(s) each, under load (2 tasks per service, pause × services/2: same total rate)"
    ));
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let all: Vec<String> = (1..=largest).map(|i| format!("scale-{i:02}")).collect();
    ensure_services(ctx, &all).await;
    let mut rows = vec![];
    let mut load_total = Totals::default();
    for &n in sizes {
        let services: Vec<String> = all[..n].to_vec();
        // Services left out of the previous size did not follow its flips:
        // deploy them once now, as their owner would, so that none of them
        // looks like an unfinished rollout to the preflight.
        redeploy(&ctx.stack.ecs, &ctx.target.cluster, &services).await;
        // Reference, on the same moto before the load starts: the same N
        // UpdateService calls one after another, then all at once (as
        // redeploy-ecs sends them).
        let t = Instant::now();
        for service in &services {
            redeploy(
                &ctx.stack.ecs,
                &ctx.target.cluster,
                std::slice::from_ref(service),
            )
            .await;
        }
        let one_by_one = t.elapsed();
        let t = Instant::now();
        redeploy(&ctx.stack.ecs, &ctx.target.cluster, &services).await;
        let at_once = t.elapsed();
        // The same total query rate at every size: each task pauses longer
        // when there are more services (2 tasks per service).
        let mut config = args.load_config(&ctx.target, services.clone());
        config.query_pause = config.query_pause * (n as u32).max(2) / 2;
        let harness = Harness::start(&ctx.target, config).await;
        ctx.wait_ready(&harness).await;
        let (mut totals, mut redeploys, mut waits, mut transitions) = (vec![], vec![], vec![], 0);
        let mut calls = BTreeMap::new();
        let timed = runs.max(1);
        for r in 0..timed + u64::from(record_calls) {
            let counting = r == timed;
            let history = work.join(format!("scale-{n}-{r}.json"));
            let before = ctx.stack.active_user(&ctx.target).await;
            if counting {
                let _ = moto_api("POST", "/moto-api/recorder/reset-recording");
                let _ = moto_api("POST", "/moto-api/recorder/start-recording");
            }
            let (e, _) = ctx
                .execute(RunOptions {
                    name: Some(format!("bench-scale-{n}-{r}-{}", std::process::id())),
                    input: Some(json!({"services": services, "reason": "pgflip-bench scale run"})),
                    scenario: Some(scenario(0, json!({}))),
                    history: Some(history.clone()),
                    ..RunOptions::default()
                })
                .await;
            if counting {
                let _ = moto_api("POST", "/moto-api/recorder/stop-recording");
                match moto_api("GET", "/moto-api/recorder/download-recording") {
                    Ok(recording) => calls = count_calls(&recording),
                    Err(e) => ctx.problems.push(format!("moto recorder: {e}")),
                }
                // The recording holds request bodies (a new password): drop it now.
                let _ = moto_api("POST", "/moto-api/recorder/reset-recording");
            }
            ctx.wait_ready(&harness).await;
            let after = ctx.stack.active_user(&ctx.target).await;
            ctx.check(
                e.status == "SUCCEEDED" && after == other_user(&before),
                || {
                    format!(
                        "scale {n} run {r}: {} {:?} {:?}",
                        e.status, e.error, e.cause
                    )
                },
            );
            let spent = state_times(&history);
            let _ = std::fs::remove_file(&history);
            if !counting {
                totals.push(e.duration_ms as f64);
                redeploys.push(spent.get("RedeployEcs").copied().unwrap_or(f64::NAN));
                waits.push(
                    spent.get("WaitForStable").copied().unwrap_or(0.0)
                        + spent.get("WaitBeforePoll").copied().unwrap_or(0.0),
                );
                transitions = e.transitions;
            }
        }
        let load = harness.stop().await;
        load_total.queries += load.queries;
        load_total.failed_logins += load.failed_logins;
        load_total.other_errors += load.other_errors;
        let row = ScaleRow {
            services: n,
            runs: timed as usize,
            total_ms_p50: percentile(&totals, 50.0),
            redeploy_ms_p50: percentile(&redeploys, 50.0),
            wait_ms_p50: percentile(&waits, 50.0),
            transitions,
            failed_logins: load.failed_logins,
            queries: load.queries,
            aws_calls: calls,
            one_by_one_ms: one_by_one.as_secs_f64() * 1000.0,
            at_once_ms: at_once.as_secs_f64() * 1000.0,
        };
        say(format!(
            "  {n} services: rotation {:.0} ms (RedeployEcs {:.0} ms, wait {:.0} ms), {} transitions; load {} queries, {} failed logins",
            row.total_ms_p50, row.redeploy_ms_p50, row.wait_ms_p50, row.transitions, load.queries, load.failed_logins
        ));
        rows.push(row);
    }
    (rows, load_total)
}

// ---------------------------------------------------------------- run

async fn run(args: &Args) -> bool {
    let rotations = args.number("rotations", 100);
    let rollbacks = args.number("rollbacks", 3);
    let alternating_n = args.number("alternating", 100);
    let alternating_rollbacks = args.number("alternating-rollbacks", 1);
    let baseline_n = args.number("baseline", 10);
    let extra_polls = args.number("extra-polls", 2);
    let rollback_wait = args.number("rollback-wait-ms", 1000);
    let scale_runs = args.number("scale-runs", 3);
    let sizes: Vec<usize> = match args.text("scale") {
        None | Some("") | Some("none") => vec![],
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| usage("--scale takes a list like 1,5,20"))
            })
            .collect(),
    };
    let started = Instant::now();
    let stack = Arc::new(Stack::from_env().await);
    let target = Target::local();
    stack.seed(&target).await;
    let alternating_target = Target::local_alternating();
    let mut problems = vec![];
    let alternating_ready = if alternating_n + alternating_rollbacks > 0 {
        match prepare_alternating(&stack, &alternating_target).await {
            Ok(()) => true,
            Err(e) => {
                problems.push(format!("the alternating target could not be prepared: {e}"));
                false
            }
        }
    } else {
        false
    };
    let admin = stack.admin("postgres").await;
    let mut ctx = Ctx {
        stack,
        target,
        admin,
        problems,
    };
    let work = std::env::temp_dir().join(format!("pgflip-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a work directory");
    let probe = args.load_config(&ctx.target, vec![]);
    say(format!(
        "== load: {} tasks per service, each opens a fresh connection and runs a query, pausing {} ms; on a new deployment, new tasks start after {} ms (+{} ms each), old tasks stop {} ms after their replacement is healthy; deployments polled every {} ms",
        probe.tasks_per_service,
        probe.query_pause.as_millis(),
        probe.task_start.as_millis(),
        probe.stagger.as_millis(),
        probe.drain.as_millis(),
        probe.poll_every.as_millis()
    ));

    let (bg, polled) = blue_green(&mut ctx, args, rotations, extra_polls).await;
    let rb = if rollbacks > 0 {
        Some(rollback(&mut ctx, args, rollbacks, rollback_wait).await)
    } else {
        None
    };
    let (alt, alt_rb) = if alternating_ready {
        let parameter_target = std::mem::replace(&mut ctx.target, alternating_target);
        let phases = alternating(
            &mut ctx,
            args,
            alternating_n,
            alternating_rollbacks,
            rollback_wait,
        )
        .await;
        ctx.target = parameter_target;
        (Some(phases.0), phases.1)
    } else {
        (None, None)
    };
    let base = if baseline_n > 0 {
        Some(baseline(&mut ctx, args, baseline_n).await)
    } else {
        None
    };
    let scaled = if sizes.is_empty() {
        None
    } else {
        Some(
            scale(
                &mut ctx,
                args,
                &sizes,
                scale_runs,
                args.flag("moto-recorder"),
                &work,
            )
            .await,
        )
    };
    let _ = std::fs::remove_dir_all(&work);

    // ---- tables
    let durations: Vec<f64> = bg.runs.iter().map(|r| r.duration_ms as f64).collect();
    let walls: Vec<f64> = bg.runs.iter().map(|r| r.wall_ms as f64).collect();
    let settles: Vec<f64> = bg.runs.iter().map(|r| r.settle_ms as f64).collect();
    let transitions: Vec<u32> = bg.runs.iter().map(|r| r.transitions).collect();
    let invocations: Vec<u32> = bg.runs.iter().map(|r| r.invocations).collect();
    println!();
    println!(
        "### Rotations under load ({} s)",
        started.elapsed().as_secs()
    );
    println!();
    println!("| run | rotations | queries | failed logins | other errors | rotation p50 / p95 (ms) | transitions | Lambda invocations |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| blue/green (pgflip) | {} (+1 warm-up) | {} | **{}** | {} | {:.0} / {:.0} | {} | {} |",
        bg.runs.len(),
        bg.load.queries,
        bg.load.failed_logins,
        bg.load.other_errors,
        percentile(&durations, 50.0),
        percentile(&durations, 95.0),
        range(&transitions),
        range(&invocations)
    );
    if let Some(p) = &polled {
        println!(
            "| blue/green, rollout needs {extra_polls} more polls | 1 | {} | **{}** | – | {} | {} | {} |",
            p.queries, p.failed_logins, p.duration_ms, p.transitions, p.invocations
        );
    }
    for (label, phase, waits) in [
        ("forced rollback (FAILED rollout)", &rb, Some(rollback_wait)),
        ("alternating secret (ECS-injected)", &alt, None),
        (
            "alternating rollback (FAILED rollout)",
            &alt_rb,
            Some(rollback_wait),
        ),
    ] {
        if let Some(phase) = phase {
            print_phase_row(label, phase, waits);
        }
    }
    if let Some(base) = &base {
        let d: Vec<f64> = base.runs.iter().map(|r| r.duration_ms as f64).collect();
        let per: Vec<f64> = base.runs.iter().map(|r| r.failed_logins as f64).collect();
        println!(
            "| single-user baseline (in place + redeploy) | {} | {} | **{}** ({:.0} per rotation) | {} | {:.0} / {:.0} (no state machine) | – | – |",
            base.runs.len(),
            base.load.queries,
            base.load.failed_logins,
            percentile(&per, 50.0),
            base.load.other_errors,
            percentile(&d, 50.0),
            percentile(&d, 95.0)
        );
    }
    println!();
    println!(
        "Rotation time is the execution's duration in the runner with waits shortened to 0 (debug Lambdas in cargo lambda watch); with the runner's Node start it is {:.0} / {:.0} ms (p50 / p95). After each rotation the bench waits for the harness's tasks to be replaced (p50 {:.0} ms), as ECS's COMPLETED would.",
        percentile(&walls, 50.0),
        percentile(&walls, 95.0),
        percentile(&settles, 50.0)
    );
    for p in alt.iter().chain(alt_rb.iter()) {
        let alt_target = Target::local_alternating();
        println!(
            "{}: {} queries as {}, {} as {} (each task's DB_* injected from {} at AWSCURRENT when it starts), {} credential error(s), {} invariant violation(s) after {} execution(s).",
            if p.name == "alternating" { "Alternating secret" } else { "Alternating rollback" },
            p.load.as_blue,
            alt_target.blue_role,
            p.load.as_green,
            alt_target.green_role,
            alt_target.alternating.as_deref().unwrap_or_default(),
            p.load.credential_errors,
            p.invariant_violations,
            p.runs.len()
        );
    }
    let happy = transitions.iter().copied().max().unwrap_or(0);
    if let Some(p) = &polled {
        let per_poll = (p.transitions as f64 - happy as f64) / extra_polls.max(1) as f64;
        println!(
            "State transitions: {happy} for a happy-path rotation, {} with {extra_polls} extra polls = {per_poll:.0} per extra poll (target ≤ 15 + 3 per extra poll, a Wait, a look and the Choice on its result, since a rollout in progress is no error: {}).",
            p.transitions,
            if happy <= 15 && per_poll <= 3.0 { "met" } else { "missed" }
        );
    }

    if let Some((rows, load)) = &scaled {
        println!();
        println!("### Scale: one rotation redeploying 1, 5, 20 services");
        println!();
        println!("| services | rotation p50 (ms) | RedeployEcs p50 (ms) | wait (ms) | transitions | ecs:UpdateService | ecs:DescribeServices | other AWS calls | all AWS calls | failed logins | N UpdateService one by one / at once (ms) |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in rows {
            let get = |k: &str| row.aws_calls.get(k).copied();
            let all: u64 = row.aws_calls.values().sum();
            let other = all
                - get("ecs:UpdateService").unwrap_or(0)
                - get("ecs:DescribeServices").unwrap_or(0);
            let show = |v: Option<u64>| v.map_or("n/a".to_string(), |n| n.to_string());
            let recorded = !row.aws_calls.is_empty();
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | **{}** | {:.0} / {:.0} |",
                row.services,
                row.total_ms_p50,
                row.redeploy_ms_p50,
                row.wait_ms_p50,
                row.transitions,
                show(get("ecs:UpdateService").or(recorded.then_some(0))),
                show(get("ecs:DescribeServices").or(recorded.then_some(0))),
                if recorded {
                    other.to_string()
                } else {
                    "n/a".into()
                },
                if recorded {
                    all.to_string()
                } else {
                    "n/a".into()
                },
                row.failed_logins,
                row.one_by_one_ms,
                row.at_once_ms
            );
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            if last.services > first.services {
                println!();
                println!(
                    "RedeployEcs with {} services takes {:.1}× the time of {} ({}× the services): redeploy-ecs sends the UpdateService calls concurrently, so the wall time is bounded by how fast the ECS endpoint answers them in parallel (moto is one Python process; before the load starts the same {} calls take {:.0} ms one by one and {:.0} ms at once from here). wait-for-stable takes 10 services per DescribeServices call. AWS calls per rotation grow by one UpdateService per service (and one DescribeServices per 10 services per poll). Load during the scale runs: {} queries, {} failed logins.",
                    last.services,
                    last.redeploy_ms_p50 / first.redeploy_ms_p50.max(1.0),
                    first.services,
                    last.services / first.services.max(1),
                    last.services,
                    last.one_by_one_ms,
                    last.at_once_ms,
                    load.queries,
                    load.failed_logins
                );
            }
        }
        if rows.iter().any(|r| !r.aws_calls.is_empty()) {
            println!("AWS calls of one rotation by operation (moto's request recorder, the harness's own calls left out):");
            for row in rows {
                let list: Vec<String> = row
                    .aws_calls
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                println!("- {} services: {}", row.services, list.join(", "));
            }
        }
    }

    // ---- verdict
    let mut errors: Vec<String> = bg.errors.clone();
    if let Some(rb) = &rb {
        errors.extend(rb.errors.iter().cloned());
    }
    let bg_failed = bg.load.failed_logins
        + rb.as_ref().map_or(0, |p| p.load.failed_logins)
        + scaled.as_ref().map_or(0, |(_, l)| l.failed_logins);
    let alt_failed = alt.as_ref().map_or(0, |p| p.load.failed_logins)
        + alt_rb.as_ref().map_or(0, |p| p.load.failed_logins);
    let alt_violations = alt.as_ref().map_or(0, |p| p.invariant_violations)
        + alt_rb.as_ref().map_or(0, |p| p.invariant_violations);
    let mut ok = ctx.problems.is_empty();
    println!();
    if bg_failed > 0 {
        ok = false;
        println!("FAIL: {bg_failed} blue/green login(s) failed. First errors: {errors:?}");
    }
    if alt_failed > 0 {
        ok = false;
        let errors: Vec<&String> = alt
            .iter()
            .chain(alt_rb.iter())
            .flat_map(|p| p.errors.iter())
            .collect();
        println!("FAIL: {alt_failed} alternating-secret login(s) failed. First errors: {errors:?}");
    }
    if alt_violations > 0 {
        ok = false;
        println!(
            "FAIL: the alternating layout's invariant broke after {alt_violations} execution(s)"
        );
    }
    if let Some(base) = &base {
        if base.load.failed_logins == 0 {
            ok = false;
            println!("FAIL: the single-user baseline showed no failed login: the harness would not see downtime");
        } else {
            println!(
                "Baseline failures look like: {:?}",
                base.errors.iter().take(2).collect::<Vec<_>>()
            );
        }
    }
    for p in &ctx.problems {
        println!("FAIL: {p}");
    }
    if ok {
        println!("OK: 0 failed blue/green logins over {} rotations (+ warm-up{}) and {} forced rollback(s).",
            bg.runs.len(),
            if polled.is_some() { ", + 1 with extra polls" } else { "" },
            rb.as_ref().map_or(0, |p| p.runs.len()));
        if let Some(a) = &alt {
            println!(
                "OK: 0 failed alternating-secret logins (ECS-injected credentials) over {} rotations and {} forced rollback(s); invariant held after each.",
                a.runs.len(),
                alt_rb.as_ref().map_or(0, |p| p.runs.len())
            );
        }
    }
    if let Some(path) = args.text("json") {
        let out = json!({
            "blueGreen": bg, "extraPolls": polled, "rollback": rb, "baseline": base,
            "alternating": alt, "alternatingRollback": alt_rb,
            "scale": scaled.as_ref().map(|(rows, _)| rows), "problems": ctx.problems, "ok": ok,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out).unwrap())
            .expect("write the JSON results");
    }
    ok
}

// ---------------------------------------------------------------- load only

async fn load_only(args: &Args) -> bool {
    let target = Target::local();
    let services: Vec<String> = args
        .text("services")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| target.services.clone());
    let seconds = args.number("seconds", 30).min(3600);
    let mut config = args.load_config(&target, services);
    config.max_life = Duration::from_secs(seconds + 60);
    let harness = Harness::start(&target, config).await;
    let started = Instant::now();
    let mut last = Totals::default();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = harness.totals();
        let d = now - last;
        say(format!(
            "  t={:>4}s  {:>4} queries/s  failed logins {}  (total {})  deployments seen {}",
            started.elapsed().as_secs(),
            d.queries,
            d.failed_logins,
            now.failed_logins,
            now.deployments_seen
        ));
        last = now;
    }
    let samples = harness.error_samples();
    let totals = harness.stop().await;
    println!("{}", totals_json(&totals));
    if !samples.is_empty() {
        say(format!("errors seen: {samples:?}"));
    }
    totals.failed_logins == 0
}
