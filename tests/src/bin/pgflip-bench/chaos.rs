//! The chaos soak (issue 15): seeded random schedules of executions,
//! crashes, faults, releases, Secrets Manager's own rotations, concurrent
//! starts, operators' edits and PostgreSQL outages, against the local
//! parameter-layout target or the alternating-secret target, under
//! application load, with the invariants checked after every event.
//!
//!   pgflip-bench chaos [--scenarios N] [--first K] [--seed S] [--only K]
//!                      [--max-seconds T] [--list 1] [--increment 1] [--json FILE]
//!   pgflip-bench chaos --combine A.json,B.json,...   (shards' figures summed)
//!
//! Scenario K of seed S is a pure function of (S, K): a small SplitMix64
//! generator draws its 3–8 events of the first increment's kinds before
//! anything runs, exactly as the first increment drew them; a second
//! generator of the same (S, K) then decides the layout (one scenario in
//! four runs against the alternating target) and inserts, before each of
//! those events with a chance of 2 in 5, an event of the second
//! increment's kinds. `--increment 1` skips that second generator: the
//! first increment's schedules, unchanged, against the parameter layout.
//! `--only K` replays exactly scenario K (the passwords, timings and
//! execution names are not seeded).
//!
//! Event kinds. First increment: executions started by hand (some limited
//! to one service), by schedule or by a `RotationSucceeded` event; a crash
//! after a random step, then a redrive, a re-run or nothing; throttling
//! (`AwsUnavailable`) and `States.Timeout` at a step; a FAILED rollout; a
//! release (a deployment pgflip did not make); Secrets Manager's own
//! rotation of either user's secret. Second increment:
//! - concurrent starts: two executions of the target, the second started
//!   100–700 ms after the first, each in its own thread; checked once both
//!   ended: exactly one may go past `SelectUser`, the other must fail with
//!   `RotationInProgress` having invoked nothing but `select-user`; both
//!   going past it is a violation unless moto's start and stop dates show
//!   one registered only after the other stopped (node's start-up varies
//!   by more than the delay), or the later one's SelectUser entered only
//!   after the earlier one's last state ended (the runner's history
//!   timestamps; moto's dates overlap by the runner's last moments and the
//!   guard's ListExecutions comes some time after the later one was
//!   registered), or only its SelectUser overlapped the earlier one's tail
//!   (it exited after moto recorded the earlier one's stop and its next
//!   state entered after the earlier one's last): then "one after the
//!   other" (`one_after_the_other`), and the failed
//!   logins of the user the later one rotated are counted apart (moto
//!   reports a rollout COMPLETED at once while the harness still drains
//!   the old tasks ECS would have stopped); both refused is a violation;
//! - an operator editing a secret's connection fields: a new `AWSCURRENT`
//!   version of the active or the inactive user's secret (alternating: of
//!   the one secret) whose `dbClusterIdentifier` changed, the password
//!   unchanged, written in the next whole second (moto keeps whole-second
//!   version dates) under a label of its own (`chaos-edit`), moved to
//!   `AWSCURRENT` with UpdateSecretVersionStage (moto's PutSecretValue with
//!   `AWSCURRENT` relabels the wrong version), the label then removed: an
//!   existing `AWSPENDING` keeps its label, as after a real operator's
//!   PutSecretValue;
//! - PostgreSQL unreachable for a while: the primary is stopped
//!   (`pg_ctl stop -m fast`) either just before an execution starts or
//!   right after a random step of it ran (the runner's `afterCommand`), and
//!   started again 0.5–12 s later; the execution's retries are 1 s apart
//!   (5 attempts, as the ASL allows). It must succeed or fail with one of
//!   pgflip's error names (a violation otherwise); the invariants are
//!   checked once the server accepts connections again. The load's errors
//!   during the outage are connection errors, not failed logins;
//! - the alternating-secret layout: `Target::local_alternating()` seeded and
//!   registered, its services injecting `DB_*` from the secret (the
//!   harness with `CredentialSource::Injected`), every input naming the
//!   target; Secrets Manager's own rotation there stages a version naming
//!   the role `AWSCURRENT` does not name, with a new password (`ALTER ROLE`
//!   as superuser between staging and promotion), promotes it, then starts
//!   an execution with a `RotationSucceeded` event naming the secret.
//!
//! Third increment (a third generator of the same (S, K) inserts one before
//! each event so far with a chance of 1 in 3; `--increment 2` skips it):
//! - a release pgflip did not make IN_PROGRESS (by ECS's rolloutState)
//!   when an execution starts, completing 0.3–7 s after the start;
//! - ECS's deployment circuit breaker rolling a service back during a
//!   rotation, 0–2.5 s after RedeployEcs ran. Both are partly emulated, as
//!   moto cannot fail a rollout nor keep two deployments: see
//!   `recreate_service` and `Soak::ecs_rollback`;
//! - a consumer service added between runs (`extra-N`, its task definition
//!   taking the target's credentials as the target's own services do,
//!   created and its tasks started by the harness under load) or the newest
//!   one deleted (its tasks stop). Executions by hand then list every
//!   consumer (`services`); by schedule or event they use the target's
//!   configuration, which does not name it: `UnlistedConsumer`, nothing
//!   changed. Invariant 2 covers the added services' tasks: after a
//!   successful rotation every running task of every consumer logs in.
//!   The added services are deleted at the end of the scenario;
//! - PostgreSQL hanging, not stopped: the primary's postmaster and every
//!   process it forked get SIGSTOP (connections hang instead of failing)
//!   before an execution starts or right after a step, and SIGCONT 1–8 s
//!   later from a watchdog in a session of its own; the soak also resumes
//!   them when the event ends (a guard's `Drop`, also on a panic) and on
//!   Ctrl-C or SIGTERM. The execution must succeed or fail with one of
//!   pgflip's error names, and every invariant must hold after it.
//!
//! After every event (and after each run of a crash and its recovery) the
//! harness is let settle (its tasks replaced, as ECS's COMPLETED would mean:
//! moto completes a rollout at once), then:
//!   1. the user the pointer names logs in with its AWSCURRENT password
//!      (alternating: the role AWSCURRENT names, with AWSCURRENT's password);
//!   2. no application login failed since the last check, except those of
//!      tasks still holding a password that Secrets Manager's own rotation
//!      (an event of this soak) changed: from that rotation until every
//!      consumer service (the target's and those the scenario added) has
//!      been redeployed or deleted since, the login failures of that role
//!      (the harness's error samples name it) are counted apart, not
//!      pgflip's; any other role's failure in that time is a violation;
//!   3. at most one version per secret carries AWSPENDING (exactly one
//!      AWSCURRENT), and none after a SUCCEEDED execution (README: "After any
//!      successful execution no version carries AWSPENDING");
//!   4. no password ever seen (both secrets at AWSCURRENT and AWSPENDING,
//!      after every check, and every one this soak made) appears in the
//!      runner's progress, summary or history of that event;
//!   5. the pointer only moves to a user verified after its last password
//!      change, checked as: each role's password verifier (`pg_authid`,
//!      read as superuser; a SCRAM verifier changes with every `ALTER ROLE
//!      … PASSWORD`, even to the same password) is recorded as "verified"
//!      (a) for the role a `VerifyLogin` state of a run of the event exited
//!      for (the plan's `targetUser`; the verifier read when the run ended:
//!      no later step of a run sets a password), and for both roles of a
//!      `SelectUser` that exited in mode `redeploy` or `wait` (it logs in
//!      as both before finishing an earlier rotation), (b) for the role the
//!      pointer names at each check, once (1) passed, and (c) for the role
//!      the soak's own alternating rotation promoted (Secrets Manager's
//!      testSecret). When the pointer names another role than at the last
//!      check, and the soak did not move it itself, that role's verifier
//!      now must equal the one recorded for it before this check's (b):
//!      never recorded, or recorded and changed since, is a violation;
//!   6. alternating layout, after a SUCCEEDED execution: the role
//!      AWSPREVIOUS names logs in with AWSPREVIOUS's password.
//!
//! A violation stops the soak: the seed, the scenario, its whole schedule
//! and the event that broke it are printed, and the command exits 1.
//! After every scenario, invariant 4 in the logs: what cargo lambda watch
//! logged (every Lambda, `$PGFLIP_STACK_DIR/lambda.log`) and the primary's
//! server log (`log_statement = 'all'`) gained since the last search must
//! hold none of the passwords the soak knows (every value it read from
//! either secret at any check, every one it set).
//!
//! Passwords (and verifiers) stay in memory; nothing here prints one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgflip_core::domain::{AWSCURRENT, AWSPENDING};

const AWSPREVIOUS: &str = "AWSPREVIOUS";
use pgflip_core::password::{Password, PasswordPolicy};
use pgflip_tests::{rotation_succeeded_event, Execution, RunOptions, Stack, Target};
use serde_json::{json, Value};

use crate::harness::{Harness, Totals};
use crate::{say, Args};

// ---------------------------------------------------------------- the generator

/// SplitMix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn for_scenario(seed: u64, number: u64) -> Self {
        let mut rng = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let mixed = rng.next() ^ number.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut roll = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }
}

const STEPS: [&str; 6] = [
    "SelectUser",
    "GenerateAndSetPassword",
    "VerifyLogin",
    "FlipParameter",
    "RedeployEcs",
    "WaitForStable",
];

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, Copy)]
enum Trigger {
    Hand,
    Scheduled,
    /// A Secrets Manager RotationSucceeded event for this user's secret.
    SecretEvent(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Recovery {
    Redrive,
    Rerun,
    Nothing,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Crash {
        step: &'static str,
        then: Recovery,
    },
    Throttle {
        step: &'static str,
        times: u64,
    },
    Timeout {
        step: &'static str,
        after_call: bool,
    },
    RolloutFailed,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Execution {
        trigger: Trigger,
        /// A run limited to this one service (by hand only).
        services: Option<&'static str>,
        fault: Fault,
        wait_ms: u64,
    },
    /// A deployment pgflip did not make.
    Release { service: &'static str },
    /// Secrets Manager's own rotation of this user's secret (alternating:
    /// of the one secret, to the role AWSCURRENT does not name, then an
    /// execution started by its RotationSucceeded event).
    ExternalRotation { key: &'static str },
    /// Two executions, the second `delay_ms` after the first.
    Concurrent {
        first: Trigger,
        second: Trigger,
        delay_ms: u64,
    },
    /// An operator's new AWSCURRENT version of a user's secret, only its
    /// `dbClusterIdentifier` changed.
    OperatorEdit { which: Which },
    /// PostgreSQL stopped before an execution starts (`after: None`) or
    /// right after `after` ran, and started again `down_ms` later.
    Outage {
        trigger: Trigger,
        after: Option<&'static str>,
        down_ms: u64,
    },
    /// A release of `service` pgflip did not make is IN_PROGRESS when an
    /// execution starts; it completes `finish_ms` after the start.
    ForeignRollout {
        service: &'static str,
        trigger: Trigger,
        finish_ms: u64,
    },
    /// An execution during which ECS's deployment circuit breaker rolls
    /// `service`'s deployment back: `delay_ms` after RedeployEcs ran, after
    /// `looks` looks that saw it IN_PROGRESS.
    EcsRollback {
        service: &'static str,
        trigger: Trigger,
        delay_ms: u64,
        looks: u64,
    },
    /// A new ECS service that takes the target's credentials, created and
    /// started under load (a new consumer).
    ServiceAdded,
    /// The newest service a `ServiceAdded` made is deleted.
    ServiceRemoved,
    /// PostgreSQL hangs: the primary's postmaster and backends stopped
    /// (SIGSTOP) before an execution starts (`after: None`) or right after
    /// `after` ran, resumed (SIGCONT) `hang_ms` later.
    Hang {
        trigger: Trigger,
        after: Option<&'static str>,
        hang_ms: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Active,
    Inactive,
}

/// A scenario: its layout and its events.
struct Scenario {
    alternating: bool,
    events: Vec<Event>,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Hand => write!(f, "by hand"),
            Trigger::Scheduled => write!(f, "by schedule"),
            Trigger::SecretEvent(key) => write!(f, "by RotationSucceeded of {key}'s secret"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Execution {
                trigger,
                services,
                fault,
                wait_ms,
            } => {
                match trigger {
                    Trigger::Hand => write!(f, "execution by hand")?,
                    Trigger::Scheduled => write!(f, "execution by schedule")?,
                    Trigger::SecretEvent(key) => {
                        write!(f, "execution by RotationSucceeded of {key}'s secret")?
                    }
                }
                if let Some(s) = services {
                    write!(f, " {{\"services\": [\"{s}\"]}}")?;
                }
                match fault {
                    Fault::None => {}
                    Fault::Crash { step, then } => {
                        write!(f, ", crash after {step}, then ")?;
                        match then {
                            Recovery::Redrive => write!(f, "a redrive from {step}")?,
                            Recovery::Rerun => write!(f, "a re-run")?,
                            Recovery::Nothing => write!(f, "nothing")?,
                        }
                    }
                    Fault::Throttle { step, times } => {
                        write!(f, ", AwsUnavailable thrown {times}x at {step}")?
                    }
                    Fault::Timeout { step, after_call } => write!(
                        f,
                        ", States.Timeout at {step} ({})",
                        if *after_call {
                            "after the Lambda ran"
                        } else {
                            "before the Lambda ran"
                        }
                    )?,
                    Fault::RolloutFailed => write!(f, ", rollout FAILED (RolloutFailed)")?,
                }
                write!(f, ", waitMs {wait_ms}, retryIntervalMs 0")
            }
            Event::Release { service } => {
                write!(f, "release: a deployment of {service} pgflip did not make")
            }
            Event::ExternalRotation { key } => write!(
                f,
                "Secrets Manager rotates {key}'s secret (new AWSCURRENT + ALTER ROLE; alternating: the role AWSCURRENT does not name, then an execution by its RotationSucceeded)"
            ),
            Event::Concurrent {
                first,
                second,
                delay_ms,
            } => write!(
                f,
                "concurrent starts: an execution {first}, another {second} {delay_ms} ms later"
            ),
            Event::OperatorEdit { which } => write!(
                f,
                "an operator edits the {} user's secret (new AWSCURRENT, dbClusterIdentifier changed; alternating: the one secret)",
                match which {
                    Which::Active => "active",
                    Which::Inactive => "inactive",
                }
            ),
            Event::Outage {
                trigger,
                after,
                down_ms,
            } => match after {
                None => write!(
                    f,
                    "PostgreSQL stopped for {down_ms} ms, an execution {trigger} started right after the stop, retryIntervalMs 1000"
                ),
                Some(step) => write!(
                    f,
                    "an execution {trigger}, PostgreSQL stopped for {down_ms} ms right after {step} ran, retryIntervalMs 1000"
                ),
            },
            Event::ForeignRollout {
                service,
                trigger,
                finish_ms,
            } => write!(
                f,
                "a release of {service} pgflip did not make is IN_PROGRESS when an execution {trigger} starts; it completes {finish_ms} ms later"
            ),
            Event::EcsRollback {
                service,
                trigger,
                delay_ms,
                looks,
            } => write!(
                f,
                "an execution {trigger}; ECS's circuit breaker rolls {service}'s deployment back {delay_ms} ms after RedeployEcs ran ({looks} look(s) IN_PROGRESS, then FAILED)"
            ),
            Event::ServiceAdded => write!(
                f,
                "a new service taking the target's credentials is created and started under load (executions by hand list every consumer)"
            ),
            Event::ServiceRemoved => write!(f, "the newest added service is deleted"),
            Event::Hang {
                trigger,
                after,
                hang_ms,
            } => match after {
                None => write!(
                    f,
                    "PostgreSQL hangs (SIGSTOP) for {hang_ms} ms, an execution {trigger} started right after, retryIntervalMs 1000"
                ),
                Some(step) => write!(
                    f,
                    "an execution {trigger}, PostgreSQL hangs (SIGSTOP) for {hang_ms} ms right after {step} ran, retryIntervalMs 1000"
                ),
            },
        }
    }
}

/// Scenario `number` of `seed`, drawn before anything runs: 3–8 events of
/// the first increment's kinds (drawn exactly as the first increment drew
/// them), then (`increment` 2) the layout and the second increment's
/// events inserted among them, from a generator of their own.
fn schedule(seed: u64, number: u64, increment: u64) -> Scenario {
    let mut rng = Rng::for_scenario(seed, number);
    let n = 3 + rng.below(6);
    let first: Vec<Event> = (0..n).map(|_| draw(&mut rng)).collect();
    if increment < 2 {
        return Scenario {
            alternating: false,
            events: first,
        };
    }
    let mut rng = Rng::for_scenario(seed ^ 0x0002_C4A0_5EED_0002, number);
    let alternating = rng.below(4) == 0;
    let mut events = vec![];
    for e in first {
        if rng.below(5) < 2 {
            events.push(draw_second(&mut rng));
        }
        events.push(e);
    }
    if increment < 3 {
        return Scenario {
            alternating,
            events,
        };
    }
    // The third increment's events, from a generator of their own: before
    // each event so far with a chance of 1 in 3.
    let mut rng = Rng::for_scenario(seed ^ 0x0003_C4A0_5EED_0003, number);
    let mut third = vec![];
    for e in events {
        if rng.below(3) == 0 {
            third.push(draw_third(&mut rng));
        }
        third.push(e);
    }
    Scenario {
        alternating,
        events: third,
    }
}

/// An event of the third increment's kinds: a deployment status by ECS (a
/// release in progress when pgflip starts, a circuit-breaker rollback
/// during a rotation), a consumer service added or removed, PostgreSQL
/// hanging.
fn draw_third(rng: &mut Rng) -> Event {
    match rng.weighted(&[25, 25, 14, 10, 26]) {
        2 => Event::ServiceAdded,
        3 => Event::ServiceRemoved,
        4 => Event::Hang {
            trigger: draw_trigger(rng),
            after: rng.pick(&[
                None,
                Some("SelectUser"),
                Some("GenerateAndSetPassword"),
                Some("VerifyLogin"),
                Some("FlipParameter"),
            ]),
            hang_ms: rng.pick(&[1000, 3000, 5000, 8000]),
        },
        0 => Event::ForeignRollout {
            service: rng.pick(&["web", "worker"]),
            trigger: draw_trigger(rng),
            finish_ms: rng.pick(&[300, 1000, 2000, 3500, 7000]),
        },
        _ => Event::EcsRollback {
            service: rng.pick(&["web", "worker"]),
            trigger: draw_trigger(rng),
            delay_ms: rng.pick(&[0, 200, 500, 1000, 2500]),
            looks: rng.pick(&[1, 1, 2, 3]),
        },
    }
}

fn draw_trigger(rng: &mut Rng) -> Trigger {
    match rng.weighted(&[50, 25, 25]) {
        0 => Trigger::Hand,
        1 => Trigger::Scheduled,
        _ => Trigger::SecretEvent(rng.pick(&["blue", "green"])),
    }
}

/// An event of the second increment's kinds: concurrent starts, an
/// operator's edit, a PostgreSQL outage.
fn draw_second(rng: &mut Rng) -> Event {
    match rng.weighted(&[35, 35, 30]) {
        0 => Event::Concurrent {
            first: draw_trigger(rng),
            second: draw_trigger(rng),
            delay_ms: rng.pick(&[100, 200, 300, 500, 700]),
        },
        1 => Event::OperatorEdit {
            which: rng.pick(&[Which::Active, Which::Inactive]),
        },
        _ => Event::Outage {
            trigger: draw_trigger(rng),
            after: rng.pick(&[
                None,
                Some("SelectUser"),
                Some("GenerateAndSetPassword"),
                Some("VerifyLogin"),
                Some("FlipParameter"),
            ]),
            down_ms: rng.pick(&[500, 2000, 2000, 5000, 12000]),
        },
    }
}

fn draw(rng: &mut Rng) -> Event {
    // execution, execution with a crash, throttling, timeout, failed
    // rollout, release, Secrets Manager's rotation
    match rng.weighted(&[16, 14, 6, 6, 6, 24, 28]) {
        5 => Event::Release {
            service: rng.pick(&["web", "worker"]),
        },
        6 => Event::ExternalRotation {
            key: rng.pick(&["blue", "green"]),
        },
        kind => {
            let trigger = draw_trigger(rng);
            let services = match trigger {
                Trigger::Hand if rng.below(4) == 0 => Some(rng.pick(&["web", "worker"])),
                _ => None,
            };
            let fault = match kind {
                1 => Fault::Crash {
                    step: rng.pick(&STEPS),
                    then: rng.pick(&[
                        Recovery::Redrive,
                        Recovery::Redrive,
                        Recovery::Rerun,
                        Recovery::Nothing,
                    ]),
                },
                2 => Fault::Throttle {
                    step: rng.pick(&STEPS),
                    times: 1 + rng.below(2),
                },
                3 => Fault::Timeout {
                    step: rng.pick(&STEPS),
                    after_call: rng.below(2) == 0,
                },
                4 => Fault::RolloutFailed,
                _ => Fault::None,
            };
            Event::Execution {
                trigger,
                services,
                fault,
                wait_ms: rng.pick(&[0, 0, 0, 100]),
            }
        }
    }
}

fn scenario_json(fault: Option<&Fault>, wait_ms: u64) -> Value {
    let tasks = match fault {
        Some(Fault::Crash { step, .. }) => json!({ *step: [{"abortAfter": true}] }),
        Some(Fault::Throttle { step, times }) => {
            let throw = json!({"throw": {"error": "AwsUnavailable", "cause": "chaos: throttled"}});
            json!({ *step: vec![throw; *times as usize] })
        }
        Some(Fault::Timeout { step, after_call }) => {
            let error = json!({"error": "States.Timeout", "cause": "chaos: the Lambda timed out"});
            let action = if *after_call { "throwAfter" } else { "throw" };
            json!({ *step: [{ action: error }] })
        }
        Some(Fault::RolloutFailed) => {
            json!({"WaitForStable": [{"throwAfter": {"error": "RolloutFailed", "cause": "chaos"}}]})
        }
        _ => json!({}),
    };
    json!({"waitMs": wait_ms, "retryIntervalMs": 0, "tasks": tasks})
}

/// The input a state had when it was entered last, from a run's history
/// (its JSON text).
fn state_input(history: &str, state: &str) -> Option<Value> {
    let events: Vec<Value> = serde_json::from_str(history).ok()?;
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "StateEntered" && e["state"]["name"] == state)
        .map(|e| e["state"]["input"].clone())
}

fn outcome(e: &Execution) -> String {
    match e.status.as_str() {
        "SUCCEEDED" => format!(
            "SUCCEEDED (mode {})",
            e.output["mode"].as_str().unwrap_or("?")
        ),
        "ABORTED" => format!(
            "ABORTED (crash after {})",
            e.aborted_in.as_deref().unwrap_or("?")
        ),
        other => format!("{other} {}", e.error.as_deref().unwrap_or("(no error)")),
    }
}

// ---------------------------------------------------------------- a check's reads

/// What one check reads of a secret: how many versions carry AWSCURRENT
/// and AWSPENDING (one DescribeSecret), and the values at AWSCURRENT, at
/// AWSPENDING when a version carries it and, when asked, at AWSPREVIOUS
/// (one GetSecretValue each, at once). Never printed.
struct SecretView {
    id: String,
    current: usize,
    pending: usize,
    at_current: Option<Value>,
    at_pending: Option<Value>,
    at_previous: Option<Value>,
}

impl SecretView {
    fn at(&self, stage: &str) -> Option<&Value> {
        match stage {
            AWSCURRENT => self.at_current.as_ref(),
            AWSPENDING => self.at_pending.as_ref(),
            _ => self.at_previous.as_ref(),
        }
    }

    fn username(&self, stage: &str) -> Option<String> {
        self.at(stage)?["username"].as_str().map(str::to_string)
    }

    fn password(&self, stage: &str) -> Option<Password> {
        self.at(stage)?["password"]
            .as_str()
            .map(|p| Password::new(p.to_string()))
    }
}

async fn read_secret(stack: &Stack, id: &str, previous: bool) -> SecretView {
    let out = stack
        .secrets
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("describe the secret");
    let stages = out.version_ids_to_stages.unwrap_or_default();
    let count = |label: &str| {
        stages
            .values()
            .filter(|s| s.iter().any(|x| x == label))
            .count()
    };
    let (current, pending, has_previous) =
        (count(AWSCURRENT), count(AWSPENDING), count(AWSPREVIOUS) > 0);
    let value = |stage: &'static str, wanted: bool| async move {
        if !wanted {
            return None;
        }
        let raw = stack
            .secrets
            .get_secret_value()
            .secret_id(id)
            .version_stage(stage)
            .send()
            .await
            .ok()?
            .secret_string?;
        serde_json::from_str::<Value>(&raw).ok()
    };
    let (at_current, at_pending, at_previous) = tokio::join!(
        value(AWSCURRENT, current > 0),
        value(AWSPENDING, pending > 0),
        value(AWSPREVIOUS, previous && has_previous),
    );
    SecretView {
        id: id.to_string(),
        current,
        pending,
        at_current,
        at_pending,
        at_previous,
    }
}

/// Both roles' password verifiers (`pg_authid`, never printed), on the
/// scenario's superuser connection: made when there is none (the soak drops
/// it after a PostgreSQL outage or hang) or it closed, and made again once
/// when a query fails.
async fn verifiers(
    stack: &Stack,
    admin: &mut Option<tokio_postgres::Client>,
    t: &Target,
) -> BTreeMap<String, String> {
    let roles = vec![t.blue_role.clone(), t.green_role.clone()];
    let sql =
        "SELECT rolname::text, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = ANY($1)";
    for attempt in 0..2 {
        if admin.as_ref().is_none_or(|c| c.is_closed()) {
            *admin = Some(stack.admin("postgres").await);
        }
        let client = admin.as_ref().expect("a superuser connection");
        match client.query(sql, &[&roles]).await {
            Ok(rows) => return rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            Err(_) if attempt == 0 => *admin = None,
            Err(e) => panic!("read pg_authid as superuser: {e}"),
        }
    }
    unreachable!()
}

/// A login a check makes: as the user `key` with a password it read, or
/// already known to fail (what is missing).
enum StageLogin {
    Ready(String, Password),
    Refused(String),
}

/// The login as the role a version of the alternating secret names, with
/// that version's password ([`Stack::login_stage`] from a check's reads).
fn stage_login(t: &Target, v: &SecretView, stage: &str) -> StageLogin {
    let Some(role) = v.username(stage) else {
        return StageLogin::Refused(format!("{} has no {stage} version", v.id));
    };
    let Some(color) = t.color_of(&role) else {
        return StageLogin::Refused(format!("{stage} names {role:?}, neither configured user"));
    };
    match v.password(stage) {
        Some(p) => StageLogin::Ready(t.key(color), p),
        None => StageLogin::Refused(format!("{} has no {stage} password", v.id)),
    }
}

impl StageLogin {
    async fn run(self, stack: &Stack, t: &Target, port: u16) -> Result<(), String> {
        match self {
            StageLogin::Ready(key, password) => stack.login_at(t, &key, &password, port).await,
            StageLogin::Refused(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------- the soak

/// Tasks that hold a password Secrets Manager's own rotation changed while
/// they used it: their failed logins are expected until every service has
/// a deployment newer than the rotation (and the harness settled on it).
struct Window {
    role: String,
    deployments: Vec<(String, String)>,
}

impl Window {
    /// Whether some consumer service still runs the deployment it had when
    /// the window opened, given every consumer service's PRIMARY deployment
    /// now (`(service, id)`; a deleted service is absent): its tasks may
    /// still hold the window's old password.
    fn open(&self, now: &[(String, String)]) -> bool {
        self.deployments.iter().any(|then| now.contains(then))
    }
}

struct Soak {
    stack: Arc<Stack>,
    target: Target,
    work: PathBuf,
    /// Every password seen or made; never printed.
    passwords: HashSet<String>,
    kinds: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    executions: u64,
    events: u64,
    queries: u64,
    failed_logins: u64,
    expected_failed_logins: u64,
    seq: u64,
    /// Invariant 5: each role's password verifier when it was last
    /// verified (never printed).
    trusted: BTreeMap<String, String>,
    /// The role the pointer named at the last check.
    last_pointer: Option<String>,
    /// Roles a `VerifyLogin` exited for in the runs since the last check.
    verified_roles: Vec<String>,
    /// The soak itself moved the pointer since the last check (its own
    /// rotation of the alternating secret).
    moved_by_soak: bool,
    /// How to stop and start the stack's primary (`None`: not reachable).
    pg: Option<PgCtl>,
    /// Concurrent pairs: one proceeded / both, one after the other.
    pairs_guarded: u64,
    pairs_sequential: u64,
    alternating_scenarios: u64,
    sfn: aws_sdk_sfn::Client,
    /// Services this scenario added (consumers beside the target's own).
    extras: Vec<String>,
    /// The logs searched for passwords after each scenario, with how far
    /// each has been searched (bytes).
    logs: Vec<(PathBuf, u64)>,
    /// Where the time went, by phase (`--profile 1`).
    profile: BTreeMap<&'static str, Duration>,
    /// The superuser connection the checks read `pg_authid` on, kept from
    /// check to check; dropped after a PostgreSQL outage or hang.
    admin: Option<tokio_postgres::Client>,
}

/// Runs a command off the async threads; whether it exited 0.
async fn shell(mut cmd: std::process::Command) -> bool {
    tokio::task::spawn_blocking(move || cmd.status().is_ok_and(|s| s.success()))
        .await
        .unwrap_or(false)
}

/// The primary's `pg_ctl`, data directory and `pg_isready`
/// (`$PGFLIP_STACK_DIR/pg_ctl` names the binary, scripts/lib/stack.sh).
struct PgCtl {
    ctl: PathBuf,
    data: PathBuf,
    isready: PathBuf,
}

impl PgCtl {
    fn from_env() -> Option<Self> {
        let dir = PathBuf::from(std::env::var_os("PGFLIP_STACK_DIR")?);
        let ctl = PathBuf::from(std::fs::read_to_string(dir.join("pg_ctl")).ok()?.trim());
        let data = dir.join("pgdata");
        let isready = ctl.with_file_name("pg_isready");
        (ctl.is_file() && data.is_dir() && isready.is_file()).then_some(Self { ctl, data, isready })
    }

    /// A shell script that stops the primary (fast) and starts it again
    /// `down_ms` later in the background, as the postgres OS user when run
    /// as root (scripts/lib/stack.sh's `as_postgres`).
    fn outage_script(&self, down_ms: u64) -> String {
        let ctl = self.ctl.display();
        let data = self.data.display();
        format!(
            "as_pg() {{ if [ \"$(id -u)\" = 0 ]; then (cd / && runuser -u postgres -- \"$@\"); else \"$@\"; fi; }}
as_pg '{ctl}' -D '{data}' -m fast -w stop >/dev/null 2>&1 || true
( sleep {}.{:03}; as_pg '{ctl}' -D '{data}' -l '{data}/server.log' -w -t 60 start ) </dev/null >/dev/null 2>&1 &",
            down_ms / 1000,
            down_ms % 1000
        )
    }

    /// A shell script that stops (SIGSTOP) the primary's postmaster and
    /// every process it forked (backends, walsender, background workers):
    /// connections hang, they are not refused. A watchdog in a session of
    /// its own (setsid: a Ctrl-C to the soak's process group does not reach
    /// it) resumes them `hang_ms` later, whatever becomes of the soak; the
    /// soak resumes them itself too when the event ends ([`HangGuard`]).
    fn hang_script(&self, hang_ms: u64) -> String {
        let pids = self.pids_script();
        format!(
            "{pids}; kill -STOP $pids 2>/dev/null
setsid sh -c \"sleep {}.{:03}; kill -CONT $pids\" </dev/null >/dev/null 2>&1 &",
            hang_ms / 1000,
            hang_ms % 1000
        )
    }

    /// Sets `$pids` to the postmaster's pid and its children's.
    fn pids_script(&self) -> String {
        format!(
            "pm=$(head -1 '{}/postmaster.pid'); pids=\"$pm $(pgrep -P $pm | tr '\\n' ' ')\"",
            self.data.display()
        )
    }

    /// Resumes the postmaster and its children (SIGCONT; harmless when
    /// none is stopped). Synchronous: runs from `Drop` too.
    fn resume(&self) {
        let script = format!("{}; kill -CONT $pids 2>/dev/null; true", self.pids_script());
        let _ = std::process::Command::new("sh")
            .args(["-c", &script])
            .status();
    }

    /// Whether the primary accepts connections (`pg_isready`).
    async fn ready(&self, host: &str, port: u16) -> bool {
        let mut cmd = std::process::Command::new(&self.isready);
        cmd.args(["-q", "-h", host, "-p", &port.to_string(), "-t", "2"]);
        shell(cmd).await
    }

    /// Waits until the primary accepts connections; starts it itself when
    /// the background start has not brought it back in time.
    async fn ensure_up(&self, host: &str, port: u16, down_ms: u64) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut started_here = false;
        loop {
            let ready = self.ready(host, port).await;
            if ready {
                return Ok(t0.elapsed());
            }
            let waited = t0.elapsed();
            if !started_here && waited > Duration::from_millis(down_ms + 30_000) {
                started_here = true;
                let script = format!(
                    "as_pg() {{ if [ \"$(id -u)\" = 0 ]; then (cd / && runuser -u postgres -- \"$@\"); else \"$@\"; fi; }}
as_pg '{}' -D '{}' -l '{}/server.log' -w -t 60 start >/dev/null 2>&1",
                    self.ctl.display(),
                    self.data.display(),
                    self.data.display()
                );
                let mut cmd = std::process::Command::new("sh");
                cmd.args(["-c", &script]);
                shell(cmd).await;
            } else if waited > Duration::from_millis(down_ms + 90_000) {
                return Err(format!(
                    "PostgreSQL did not accept connections {} s after the outage began",
                    waited.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Resumes a stopped PostgreSQL when dropped: at the end of the event,
/// and on a panic's unwinding.
struct HangGuard<'a>(&'a PgCtl);

impl Drop for HangGuard<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// The primary's data directory while a hang may be in effect, for the
/// Ctrl-C and SIGTERM handler ([`resume_on_signal`]).
static HANGING: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// On Ctrl-C or SIGTERM: resume a hanging PostgreSQL, then exit 130.
fn resume_on_signal() {
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if let Some(data) = HANGING.lock().unwrap().clone() {
            if let Some(pg) = PgCtl::from_env() {
                debug_assert_eq!(pg.data, data);
                pg.resume();
            }
        }
        std::process::exit(130);
    });
}

/// What one check point saw go wrong.
struct Violation {
    what: String,
}

/// A check point's view of the load: totals and login-failure samples
/// already accounted for.
struct LoadMark {
    totals: Totals,
    samples: BTreeSet<String>,
}

impl Soak {
    /// Adds the time since `since` to `phase`.
    fn spent(&mut self, phase: &'static str, since: Instant) {
        *self.profile.entry(phase).or_default() += since.elapsed();
    }

    fn kind(&mut self, k: impl Into<String>) {
        *self.kinds.entry(k.into()).or_default() += 1;
    }

    /// The options of a run with its history file.
    fn prepare(&mut self, options: RunOptions) -> (RunOptions, PathBuf) {
        self.seq += 1;
        let history = self
            .work
            .join(format!("chaos-{}-{}.json", std::process::id(), self.seq));
        let mut options = options;
        options.history = Some(history.clone());
        (options, history)
    }

    /// Reads and removes a run's history, counts its outcome and notes the
    /// roles it verified (invariant 5; `verified_roles`).
    fn finish(&mut self, e: &Execution, history: &std::path::Path, wall: Duration) -> String {
        if std::env::var_os("CHAOS_DEBUG").is_some() {
            say(format!(
                "    run {}: {} ms in the runner, {} ms wall",
                e.name,
                e.duration_ms,
                wall.as_millis()
            ));
        }
        let history_text = std::fs::read_to_string(history).unwrap_or_default();
        let _ = std::fs::remove_file(history);
        self.executions += 1;
        *self.outcomes.entry(outcome(e)).or_default() += 1;
        let verified = verified_roles(&history_text, &self.target);
        self.verified_roles.extend(verified);
        history_text
    }

    async fn run(&mut self, options: RunOptions) -> (Execution, String) {
        let (options, history) = self.prepare(options);
        let stack = self.stack.clone();
        let t0 = Instant::now();
        let e = tokio::task::spawn_blocking(move || stack.run(&options))
            .await
            .expect("the runner thread");
        self.spent("events: executions (the runner: node, the Lambdas)", t0);
        let text = self.finish(&e, &history, t0.elapsed());
        (e, text)
    }

    fn name(&mut self, seed: u64, scenario: u64, event: usize) -> String {
        format!(
            "chaos-{seed}-{scenario}-{event}-{}-{}",
            std::process::id(),
            self.seq + 1
        )
    }

    /// When moto had an execution RUNNING: its start and stop dates (ms).
    async fn window_of(&self, name: &str) -> Option<(i64, i64)> {
        let arn = format!("arn:aws:states:us-east-1:123456789012:execution:pgflip-rotation:{name}");
        let d = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .ok()?;
        let start = d.start_date.to_millis().ok()?;
        let stop = d.stop_date.and_then(|s| s.to_millis().ok())?;
        Some((start, stop))
    }

    /// The execution input for `trigger`, naming the target when it is one
    /// of the targets document.
    async fn input(&mut self, trigger: Trigger, services: Option<&str>) -> Value {
        let t = self.target.clone();
        let mut input = match trigger {
            Trigger::Hand => {
                self.kind("start by hand");
                match services {
                    Some(s) => {
                        self.kind("run limited to some services");
                        json!({"services": [s]})
                    }
                    // An operator who added a consumer lists it (runs by
                    // schedule or event use the target's configuration,
                    // which does not: UnlistedConsumer).
                    None if !self.extras.is_empty() => {
                        let mut all = t.services.clone();
                        all.extend(self.extras.iter().cloned());
                        json!({ "services": all })
                    }
                    None => json!({}),
                }
            }
            Trigger::Scheduled => {
                self.kind("start by schedule");
                json!({"Comment": "scheduled"})
            }
            Trigger::SecretEvent(key) => {
                self.kind("start by RotationSucceeded event");
                let arn = self.stack.secret_arn(t.secret_of(&t.key(key))).await;
                rotation_succeeded_event(&arn)
            }
        };
        if let Some(name) = &t.name {
            input["target"] = json!(name);
        }
        input
    }

    /// The check after an event (or one run of it): settle, then the four
    /// invariants. `texts` are what the event's runs printed and recorded.
    /// After an execution under a fault: it must have ended SUCCEEDED or
    /// with one of pgflip's error names (`fault` names the fault in the
    /// violation), then every invariant is checked as after any event.
    async fn check_named(
        &mut self,
        fault: &str,
        e: &Execution,
        history: String,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
    ) -> Result<(), Violation> {
        if !named(e) {
            return Err(Violation {
                what: format!(
                    "{fault}: the execution ended {} without one of pgflip's error names",
                    outcome(e)
                ),
            });
        }
        self.check(
            harness,
            mark,
            windows,
            &texts(e, history),
            e.status == "SUCCEEDED",
        )
        .await
    }

    async fn check(
        &mut self,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        texts: &[String],
        succeeded: bool,
    ) -> Result<(), Violation> {
        let t0 = Instant::now();
        if let Err(e) = harness.wait_settled(Duration::from_secs(60)).await {
            return Err(Violation {
                what: format!("the load did not settle: {e}"),
            });
        }
        let settled = t0.elapsed();
        self.spent("checks: the load settling (tasks replaced)", t0);
        let t1 = Instant::now();
        // Every read of the check at once (the stack is quiet between
        // events: no run is in flight, the load only logs in): the
        // pointer, each secret's labels and values (one DescribeSecret and
        // one GetSecretValue per label a version carries), the roles'
        // verifiers (one superuser connection per scenario), the
        // deployments when a window is open.
        let t = self.target.clone();
        let consumer_services = self.consumer_services();
        let ids: Vec<String> = if t.blue_secret == t.green_secret {
            vec![t.blue_secret.clone()]
        } else {
            vec![t.blue_secret.clone(), t.green_secret.clone()]
        };
        let previous = succeeded && t.alternating.is_some();
        let stack = &self.stack;
        let (parameter, first, second, verifiers, deployments) = tokio::join!(
            async {
                match t.alternating {
                    Some(_) => None,
                    None => Some(stack.active_user(&t).await),
                }
            },
            read_secret(stack, &ids[0], previous),
            async {
                match ids.get(1) {
                    Some(id) => Some(read_secret(stack, id, previous).await),
                    None => None,
                }
            },
            verifiers(stack, &mut self.admin, &t),
            async {
                if windows.is_empty() {
                    vec![]
                } else {
                    stack
                        .primary_deployments_present(&t.cluster, &consumer_services)
                        .await
                }
            },
        );
        let views: Vec<SecretView> = std::iter::once(first).chain(second).collect();
        let view = |id: &str| views.iter().find(|v| v.id == id).expect("a secret read");
        for v in &views {
            for value in [&v.at_current, &v.at_pending, &v.at_previous]
                .into_iter()
                .flatten()
            {
                if let Some(p) = value["password"].as_str() {
                    self.passwords.insert(p.to_string());
                }
            }
        }
        // (1) the pointer's user logs in with its AWSCURRENT password, and
        // (6) alternating, after a SUCCEEDED execution: AWSPREVIOUS's role
        // with AWSPREVIOUS's password; both logins at once.
        let (pointer, login1) = match &parameter {
            None => {
                let v = view(&ids[0]);
                let role = v.username(AWSCURRENT).unwrap_or_default();
                (role.clone(), stage_login(&t, v, AWSCURRENT))
            }
            Some(active) => match t.color_of(active) {
                None => (
                    active.clone(),
                    StageLogin::Refused(format!("the parameter names {active:?}")),
                ),
                Some(_) => {
                    let role = t.role_of(active).to_string();
                    let login = match view(t.secret_of(active)).password(AWSCURRENT) {
                        Some(p) => StageLogin::Ready(t.key(t.color_of(active).unwrap()), p),
                        None => StageLogin::Refused(format!(
                            "{} has no AWSCURRENT password",
                            t.secret_of(active)
                        )),
                    };
                    (role, login)
                }
            },
        };
        let login6 = if previous {
            Some(stage_login(&t, view(&ids[0]), AWSPREVIOUS))
        } else {
            None
        };
        let port = stack.port_of(&t);
        let (r1, r6) = tokio::join!(login1.run(stack, &t, port), async {
            match login6 {
                Some(l) => Some(l.run(stack, &t, port).await),
                None => None,
            }
        });
        if let Err(e) = r1 {
            let e = match &parameter {
                None => format!("the role AWSCURRENT names cannot log in with it: {e}"),
                Some(active) if t.color_of(active).is_some() => {
                    format!("{active} cannot log in with its AWSCURRENT password: {e}")
                }
                Some(_) => e,
            };
            return Err(Violation {
                what: format!("invariant 1 (the pointer's user logs in): {e}"),
            });
        }
        // (2) no failed application login, but those of tasks whose user
        // Secrets Manager rotated under them
        let now = harness.totals();
        let failed = now.failed_logins - mark.totals.failed_logins;
        self.queries += now.queries - mark.totals.queries;
        let samples: BTreeSet<String> = harness.error_samples().into_iter().collect();
        let new_login_samples: Vec<&String> = samples
            .difference(&mark.samples)
            .filter(|s| s.starts_with("28"))
            .collect();
        if failed > 0 {
            let attributable = !windows.is_empty()
                && new_login_samples.iter().all(|s| {
                    windows
                        .iter()
                        .any(|w| s.contains(&format!("\"{}\"", w.role)))
                });
            if attributable {
                self.expected_failed_logins += failed;
            } else {
                self.failed_logins += failed;
                return Err(Violation {
                    what: format!(
                        "invariant 2 (tasks keep logging in): {failed} application login(s) failed{}; new error samples: {new_login_samples:?}",
                        if windows.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " (open windows for {:?} do not explain them)",
                                windows.iter().map(|w| &w.role).collect::<Vec<_>>()
                            )
                        }
                    ),
                });
            }
        }
        mark.totals = now;
        mark.samples = samples;
        if !windows.is_empty() {
            windows.retain(|w| w.open(&deployments));
        }
        // (3) labels
        for v in &views {
            let id = &v.id;
            let (current, pending) = (v.current, v.pending);
            if current != 1 || pending > 1 {
                return Err(Violation {
                    what: format!(
                        "invariant 3 (labels): {id} has {current} AWSCURRENT and {pending} AWSPENDING versions"
                    ),
                });
            }
            if succeeded && pending > 0 {
                return Err(Violation {
                    what: format!(
                        "invariant 3 (labels): {id} keeps an AWSPENDING version after a SUCCEEDED execution"
                    ),
                });
            }
        }
        // (4) no password in what the runs printed or recorded
        for (i, text) in texts.iter().enumerate() {
            if self.passwords.iter().any(|p| text.contains(p.as_str())) {
                return Err(Violation {
                    what: format!(
                        "invariant 4 (no password in output): a password appears in the output of run {} of this event (not shown)",
                        i + 1
                    ),
                });
            }
        }
        // (5) the pointer moved only to a user verified since its last
        // password change
        for role in std::mem::take(&mut self.verified_roles) {
            if let Some(v) = verifiers.get(&role) {
                self.trusted.insert(role, v.clone());
            }
        }
        if let Some(last) = self.last_pointer.clone() {
            if last != pointer && !self.moved_by_soak {
                let now = verifiers.get(&pointer);
                match self.trusted.get(&pointer) {
                    Some(v) if Some(v) == now => {}
                    Some(_) => {
                        return Err(Violation {
                            what: format!(
                                "invariant 5 (verified before the pointer moves): the pointer moved from {last} to {pointer}, whose password changed (pg_authid) after it was last verified"
                            ),
                        })
                    }
                    None => {
                        return Err(Violation {
                            what: format!(
                                "invariant 5 (verified before the pointer moves): the pointer moved from {last} to {pointer}, which no VerifyLogin of this event and no earlier check verified"
                            ),
                        })
                    }
                }
            }
        }
        self.moved_by_soak = false;
        if let Some(v) = verifiers.get(&pointer) {
            self.trusted.insert(pointer.clone(), v.clone());
        }
        self.last_pointer = Some(pointer);
        // (6) alternating: AWSPREVIOUS's role still logs in after a
        // completed rotation
        if let Some(Err(e)) = r6 {
            return Err(Violation {
                what: format!(
                    "invariant 6 (alternating: AWSPREVIOUS's role logs in after a SUCCEEDED execution): {e}"
                ),
            });
        }
        self.spent("checks: the invariants", t1);
        if std::env::var_os("CHAOS_DEBUG").is_some() {
            say(format!(
                "    check: settled in {} ms, checked in {} ms",
                settled.as_millis(),
                (t0.elapsed() - settled).as_millis()
            ));
        }
        Ok(())
    }

    /// Runs one event; the check after each of its runs. `log` gets one
    /// line per run (name, outcome).
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &mut self,
        event: &Event,
        names: (u64, u64, usize),
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        let t = self.target.clone();
        match *event {
            Event::Release { service } => {
                self.kind("release (a deployment pgflip did not make)");
                self.stack.redeploy(&t, service).await;
                self.check(harness, mark, windows, &[], false).await
            }
            Event::ExternalRotation { .. } if t.alternating.is_some() => {
                self.alternating_rotation((seed, scenario, index), harness, mark, windows, log)
                    .await
            }
            Event::Concurrent {
                first,
                second,
                delay_ms,
            } => {
                self.concurrent(
                    (first, second, delay_ms),
                    (seed, scenario, index),
                    harness,
                    mark,
                    windows,
                    log,
                )
                .await
            }
            Event::OperatorEdit { which } => {
                self.operator_edit(which, log).await;
                self.check(harness, mark, windows, &[], false).await
            }
            Event::Outage {
                trigger,
                after,
                down_ms,
            } => {
                self.outage(
                    (trigger, after, down_ms),
                    (seed, scenario, index),
                    harness,
                    mark,
                    windows,
                    log,
                )
                .await
            }
            Event::ForeignRollout {
                service,
                trigger,
                finish_ms,
            } => {
                self.foreign_rollout(
                    (service, trigger, finish_ms),
                    (seed, scenario, index),
                    harness,
                    mark,
                    windows,
                    log,
                )
                .await
            }
            Event::EcsRollback {
                service,
                trigger,
                delay_ms,
                looks,
            } => {
                self.ecs_rollback(
                    (service, trigger, delay_ms, looks),
                    (seed, scenario, index),
                    harness,
                    mark,
                    windows,
                    log,
                )
                .await
            }
            Event::Hang {
                trigger,
                after,
                hang_ms,
            } => {
                self.hang(
                    (trigger, after, hang_ms),
                    (seed, scenario, index),
                    harness,
                    mark,
                    windows,
                    log,
                )
                .await
            }
            Event::ServiceAdded => {
                self.add_service(harness).await?;
                self.check(harness, mark, windows, &[], false).await
            }
            Event::ServiceRemoved => {
                match self.extras.pop() {
                    Some(name) => {
                        self.kind("consumer service removed");
                        harness.remove_service(&name);
                        delete_service(&self.stack.ecs, &t.cluster, &name).await;
                        log.push(format!("service {name} deleted"));
                    }
                    None => self.kind("service removal skipped (none added)"),
                }
                self.check(harness, mark, windows, &[], false).await
            }
            Event::ExternalRotation { key } => {
                let active = self.stack.active_user(&t).await;
                let role = t.role_of(key).to_string();
                // Whether running tasks use this user (for the figures): its
                // queries since the last check (no wait). The window opens
                // whatever this says.
                let before = mark.totals;
                let after = harness.totals();
                let in_use = if key == "blue" {
                    after.as_blue > before.as_blue
                } else {
                    after.as_green > before.as_green
                };
                self.kind(format!(
                    "Secrets Manager rotation of the {} user{}",
                    if key == active { "active" } else { "inactive" },
                    if in_use { " (in use by tasks)" } else { "" }
                ));
                windows.push(Window {
                    role: role.clone(),
                    deployments: self.consumer_deployments().await,
                });
                // As Secrets Manager's rotation does it: createSecret (a new
                // AWSPENDING version), setSecret (ALTER ROLE), finishSecret
                // (AWSCURRENT moved to it), and no AWSPENDING left. The
                // label moves go through UpdateSecretVersionStage: moto's
                // PutSecretValue with AWSCURRENT relabels the version it
                // last made current, not the one pgflip promoted since, and
                // leaves two AWSCURRENT versions.
                let password = PasswordPolicy::default().generate();
                self.passwords.insert(password.expose().to_string());
                let secret = t.secret_of(key).to_string();
                self.stack
                    .rotate_like_secrets_manager(&secret, &role, &password)
                    .await;
                log.push(format!(
                    "{role} rotated externally ({}, {})",
                    if key == active { "active" } else { "inactive" },
                    if in_use {
                        "in use: its tasks fail until redeployed"
                    } else {
                        "no query seen since the last check"
                    }
                ));
                self.check(harness, mark, windows, &[], false).await
            }
            Event::Execution {
                trigger,
                services,
                fault,
                wait_ms,
            } => {
                let input = self.input(trigger, services).await;
                match fault {
                    Fault::None => {}
                    Fault::Crash { then, .. } => self.kind(match then {
                        Recovery::Redrive => "crash, then a redrive",
                        Recovery::Rerun => "crash, then a re-run",
                        Recovery::Nothing => "crash, then nothing",
                    }),
                    Fault::Throttle { .. } => self.kind("throttling (AwsUnavailable, retried)"),
                    Fault::Timeout { .. } => self.kind("Lambda timeout (States.Timeout)"),
                    Fault::RolloutFailed => self.kind("failed rollout"),
                }
                let name = self.name(seed, scenario, index);
                let (e, history) = self
                    .run(RunOptions {
                        input: Some(input.clone()),
                        name: Some(name.clone()),
                        scenario: Some(scenario_json(Some(&fault), wait_ms)),
                        ..RunOptions::default()
                    })
                    .await;
                log.push(format!(
                    "{name}: {} | {}",
                    outcome(&e),
                    e.cause.as_deref().unwrap_or("")
                ));
                let texts = vec![
                    format!(
                        "{}\n{}\n{}\n{}",
                        e.progress,
                        e.output,
                        e.cause.as_deref().unwrap_or(""),
                        e.error.as_deref().unwrap_or("")
                    ),
                    history.clone(),
                ];
                self.check(harness, mark, windows, &texts, e.status == "SUCCEEDED")
                    .await?;
                let Fault::Crash { step, then } = fault else {
                    return Ok(());
                };
                if e.status != "ABORTED" {
                    self.kind("crash step not reached");
                    return Ok(());
                }
                let quick = scenario_json(None, wait_ms);
                let recovered = match then {
                    Recovery::Nothing => return Ok(()),
                    Recovery::Rerun => {
                        let name = self.name(seed, scenario, index);
                        self.run(RunOptions {
                            input: Some(input),
                            name: Some(name),
                            scenario: Some(quick),
                            ..RunOptions::default()
                        })
                        .await
                    }
                    Recovery::Redrive => {
                        let Some(state) = state_input(&history, step) else {
                            return Err(Violation {
                                what: format!("the crashed run's history has no input of {step}"),
                            });
                        };
                        self.run(RunOptions {
                            input: Some(input),
                            name: Some(name.clone()),
                            start_at: Some(step.to_string()),
                            state_input: Some(state),
                            scenario: Some(quick),
                            ..RunOptions::default()
                        })
                        .await
                    }
                };
                let (r, history) = recovered;
                log.push(format!(
                    "{} ({}): {} | {}",
                    r.name,
                    match then {
                        Recovery::Redrive => "redrive",
                        _ => "re-run",
                    },
                    outcome(&r),
                    r.cause.as_deref().unwrap_or("")
                ));
                let texts = vec![
                    format!(
                        "{}\n{}\n{}\n{}",
                        r.progress,
                        r.output,
                        r.cause.as_deref().unwrap_or(""),
                        r.error.as_deref().unwrap_or("")
                    ),
                    history,
                ];
                self.check(harness, mark, windows, &texts, r.status == "SUCCEEDED")
                    .await
            }
        }
    }
}

/// The roles a run's history shows pgflip logged in as, in order
/// (invariant 5): the `targetUser` of every `VerifyLogin` that exited, and
/// both users of a `SelectUser` that exited in mode `redeploy` or `wait`
/// (finishing an earlier rotation, select-user logs in as the user the
/// pointer names and as the other one, which a failed rollout flips back
/// to, and fails the run when either is refused). Seed 11, scenario 405:
/// a rollback by ECS after a `RotationSucceeded` of the alternating secret
/// moved the pointer to the role only SelectUser had verified, a false
/// violation while only `VerifyLogin` counted.
fn verified_roles(history: &str, t: &Target) -> Vec<String> {
    let events: Vec<Value> = serde_json::from_str(history).unwrap_or_default();
    let role = |user: Option<&str>| {
        user.filter(|u| t.color_of(u).is_some())
            .map(|u| t.role_of(u).to_string())
    };
    let mut roles = vec![];
    for ev in events.iter().filter(|e| e["type"] == "StateExited") {
        let out = &ev["state"]["output"];
        let plan = if out["targetUser"].is_string() {
            out
        } else {
            &out["plan"]
        };
        match ev["state"]["name"].as_str() {
            Some("VerifyLogin") => roles.extend(role(plan["targetUser"].as_str())),
            Some("SelectUser")
                if matches!(plan["mode"].as_str(), Some("redeploy") | Some("wait")) =>
            {
                roles.extend(role(plan["targetUser"].as_str()));
                roles.extend(role(plan["previousUser"].as_str()));
            }
            _ => {}
        }
    }
    roles
}

/// The user a run's SelectUser chose to rotate (its plan's `targetUser`), as a role.
fn selected_role(history: &str, t: &Target) -> Option<String> {
    let events: Vec<Value> = serde_json::from_str(history).ok()?;
    events
        .iter()
        .find(|e| e["type"] == "StateExited" && e["state"]["name"] == "SelectUser")
        .and_then(|e| e["state"]["output"]["targetUser"].as_str())
        .filter(|u| t.color_of(u).is_some())
        .map(|u| t.role_of(u).to_string())
}

/// The timestamp (ms) of the first event of a run's history that `is`
/// picks.
fn first_event_ms(history: &str, is: impl Fn(&Value) -> bool) -> Option<i64> {
    let events: Vec<Value> = serde_json::from_str(history).ok()?;
    events
        .iter()
        .find(|e| is(e))
        .and_then(|e| e["timestamp"].as_i64())
}

/// When a run's SelectUser was first entered (its history's timestamp, ms).
fn select_user_entered_ms(history: &str) -> Option<i64> {
    first_event_ms(history, |e| {
        e["type"] == "StateEntered" && e["state"]["name"] == "SelectUser"
    })
}

/// When a run's last state event happened (its history's timestamps, ms).
fn last_event_ms(history: &str) -> Option<i64> {
    let events: Vec<Value> = serde_json::from_str(history).ok()?;
    events.iter().filter_map(|e| e["timestamp"].as_i64()).max()
}

/// The services whose tasks take `t`'s credentials: its own, then those the
/// scenario added (`extras`).
fn consumer_services(t: &Target, extras: &[String]) -> Vec<String> {
    t.services.iter().chain(extras).cloned().collect()
}

/// Whether two concurrent starts ran one after the other, each given as its
/// moto window (start and stop dates, ms since the epoch; `None` when
/// unknown) and its runner's history (a JSON array of events with `type`,
/// `state.name` and `timestamp` in ms): moto registered one RUNNING only
/// after the other stopped; or, when moto's dates overlap by the last
/// moments of the earlier one (its runner records the stop after its last
/// state ended, and the later one's guard lists executions some time after
/// it was registered), the later one's SelectUser entered only after the
/// earlier one's last state had ended (the runners' timestamps, one clock):
/// no state of the two interleaved; or only the later one's SelectUser
/// overlapped the earlier one's last moments: it exited after moto had
/// recorded the earlier one's stop (moto's date and the runner's
/// timestamp: one machine's clock), so its guard could see it stopped, and
/// its next state entered after the earlier one's last state had ended, so
/// no step that changes anything overlapped (seed 11, scenario 337: moto's
/// dates overlapped by 12 ms, faster runs since SCRAM got cheaper). A
/// guard that let a run read the state before the other's flip would
/// still show in invariants 1, 2 and 5. False when either window or
/// timestamp is missing.
fn one_after_the_other(
    (w1, history1): (Option<(i64, i64)>, &str),
    (w2, history2): (Option<(i64, i64)>, &str),
) -> bool {
    let (Some((a1, b1)), Some((a2, b2))) = (w1, w2) else {
        return false;
    };
    let (earlier, earlier_stop, later) = if a1 <= a2 {
        (history1, b1, history2)
    } else {
        (history2, b2, history1)
    };
    let done = last_event_ms(earlier);
    a2 > b1
        || a1 > b2
        || matches!(
            (done, select_user_entered_ms(later)),
            (Some(done), Some(entered)) if entered > done
        )
        || matches!(
            (done, select_user_exited_ms(later), entered_after_select_user_ms(later)),
            (Some(done), Some(exited), next)
                if exited > earlier_stop && next.is_none_or(|next| next > done)
        )
}

/// When a run's SelectUser first exited (its history's timestamp, ms).
fn select_user_exited_ms(history: &str) -> Option<i64> {
    first_event_ms(history, |e| {
        e["type"] == "StateExited" && e["state"]["name"] == "SelectUser"
    })
}

/// When a run first entered a state after SelectUser (its history's
/// timestamp, ms), if it did.
fn entered_after_select_user_ms(history: &str) -> Option<i64> {
    first_event_ms(history, |e| {
        e["type"] == "StateEntered" && e["state"]["name"] != "SelectUser"
    })
}

/// What a run printed and recorded (for the leak check).
fn texts(e: &Execution, history: String) -> Vec<String> {
    vec![
        format!(
            "{}\n{}\n{}\n{}",
            e.progress,
            e.output,
            e.cause.as_deref().unwrap_or(""),
            e.error.as_deref().unwrap_or("")
        ),
        history,
    ]
}

/// Whether an execution succeeded or failed with one of pgflip's error names.
fn named(e: &Execution) -> bool {
    e.status == "SUCCEEDED"
        || e.error
            .as_deref()
            .is_some_and(|n| pgflip_core::errors::ALL.iter().any(|(name, _)| *name == n))
}

fn run_line(e: &Execution) -> String {
    format!(
        "{}: {} | {}",
        e.name,
        outcome(e),
        e.cause.as_deref().unwrap_or("")
    )
}

type Names = (u64, u64, usize);

impl Soak {
    /// Secrets Manager's own rotation of the alternating secret: a version
    /// naming the role AWSCURRENT does not name, its new password set with
    /// ALTER ROLE, promoted; then an execution by its RotationSucceeded.
    async fn alternating_rotation(
        &mut self,
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        let t = self.target.clone();
        let secret = t.alternating.clone().expect("an alternating target");
        let active = self
            .stack
            .alternating_user(&t, AWSCURRENT)
            .await
            .unwrap_or_default();
        let role = if active == t.blue_role {
            t.green_role.clone()
        } else {
            t.blue_role.clone()
        };
        // Queries as that role since the last check (for the figures).
        let before = mark.totals;
        let after = harness.totals();
        let in_use = if role == t.blue_role {
            after.as_blue > before.as_blue
        } else {
            after.as_green > before.as_green
        };
        self.kind(format!(
            "Secrets Manager rotation of the alternating secret (to the role AWSCURRENT does not name{}), then its RotationSucceeded",
            if in_use { "; in use by tasks" } else { "" }
        ));
        // Tasks started before the last flip hold this role.
        windows.push(Window {
            role: role.clone(),
            deployments: self.consumer_deployments().await,
        });
        let password = PasswordPolicy::default().generate();
        self.passwords.insert(password.expose().to_string());
        // createSecret (AWSCURRENT's fields, the other role, a new
        // password), setSecret as the administrator, finishSecret.
        self.stack
            .rotate_like_secrets_manager(&secret, &role, &password)
            .await;
        self.moved_by_soak = true;
        log.push(format!(
            "Secrets Manager rotated the alternating secret: AWSCURRENT {active} -> {role} ({})",
            if in_use {
                "the new role was in use by old tasks: they fail until redeployed"
            } else {
                "no query as that role seen since the last check"
            }
        ));
        self.check(harness, mark, windows, &[], false).await?;
        let input = self.input(Trigger::SecretEvent("blue"), None).await;
        let name = self.name(seed, scenario, index);
        let (e, history) = self
            .run(RunOptions {
                input: Some(input),
                name: Some(name),
                scenario: Some(scenario_json(None, 0)),
                ..RunOptions::default()
            })
            .await;
        log.push(run_line(&e));
        self.check(
            harness,
            mark,
            windows,
            &texts(&e, history),
            e.status == "SUCCEEDED",
        )
        .await
    }

    /// Two executions, the second `delay_ms` after the first, each in a
    /// thread of its own; checked once both ended.
    async fn concurrent(
        &mut self,
        (first, second, delay_ms): (Trigger, Trigger, u64),
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        self.kind("concurrent starts (two executions)");
        let in1 = self.input(first, None).await;
        let in2 = self.input(second, None).await;
        let n1 = self.name(seed, scenario, index);
        let (o1, h1) = self.prepare(RunOptions {
            input: Some(in1),
            name: Some(n1),
            scenario: Some(scenario_json(None, 0)),
            ..RunOptions::default()
        });
        let n2 = self.name(seed, scenario, index);
        let (o2, h2) = self.prepare(RunOptions {
            input: Some(in2),
            name: Some(n2),
            scenario: Some(scenario_json(None, 0)),
            ..RunOptions::default()
        });
        let before_pair = self.consumer_deployments().await;
        let (s1, s2) = (self.stack.clone(), self.stack.clone());
        let t0 = Instant::now();
        let j1 = tokio::task::spawn_blocking(move || {
            let e = s1.run(&o1);
            (e, t0.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let spawned2 = t0.elapsed();
        let j2 = tokio::task::spawn_blocking(move || {
            let e = s2.run(&o2);
            (e, t0.elapsed())
        });
        let (e1, end1) = j1.await.expect("the first runner thread");
        let (e2, end2) = j2.await.expect("the second runner thread");
        let text1 = self.finish(&e1, &h1, end1);
        let text2 = self.finish(&e2, &h2, end2 - spawned2);
        log.push(format!("{} (first)", run_line(&e1)));
        log.push(format!(
            "{} (second, spawned {} ms after the first)",
            run_line(&e2),
            spawned2.as_millis()
        ));
        let past = |e: &Execution| e.states.iter().any(|s| s != "SelectUser");
        let refused = |e: &Execution| e.error.as_deref() == Some("RotationInProgress");
        let mut broke = None;
        for e in [&e1, &e2] {
            if refused(e) {
                let extra: Vec<&String> = e
                    .invocations
                    .keys()
                    .filter(|k| k.as_str() != "select-user")
                    .collect();
                if !extra.is_empty() || past(e) {
                    broke = Some(format!(
                        "concurrent starts: {} was refused (RotationInProgress) but ran {:?}, invoked {extra:?}",
                        e.name, e.states
                    ));
                }
            }
        }
        // Whether one was registered RUNNING only after the other stopped
        // (moto's start and stop dates, in ms): node's start-up varies by
        // more than the delay between the two.
        let (w1, w2) = (
            self.window_of(&e1.name).await,
            self.window_of(&e2.name).await,
        );
        let sequential = one_after_the_other((w1, &text1), (w2, &text2));
        match (past(&e1), past(&e2)) {
            (true, true) if !sequential => {
                broke = Some(format!(
                    "concurrent starts: both went past SelectUser ({} and {}) while both were RUNNING (moto start/stop ms: {w1:?} and {w2:?})",
                    outcome(&e1),
                    outcome(&e2),
                ));
            }
            (true, true) => {
                self.pairs_sequential += 1;
                self.kind("concurrent starts: both proceeded, one after the other");
                // The later one started right after the earlier one's
                // WaitForStable: moto reports a rollout COMPLETED at once,
                // while the harness still drains the tasks it replaces (ECS
                // would have stopped them before COMPLETED). Their failed
                // logins as the user the later one rotated are the
                // harness's, not pgflip's: counted apart until every
                // service has been redeployed since the pair began.
                let later = if w1.map(|w| w.0) > w2.map(|w| w.0) {
                    &text1
                } else {
                    &text2
                };
                if let Some(role) = selected_role(later, &self.target) {
                    windows.push(Window {
                        role,
                        deployments: before_pair.clone(),
                    });
                }
            }
            (true, false) | (false, true) => {
                let other = if past(&e1) { &e2 } else { &e1 };
                if refused(other) {
                    self.pairs_guarded += 1;
                } else {
                    self.kind(format!(
                        "concurrent starts: the other stopped at SelectUser with {}",
                        outcome(other)
                    ));
                }
            }
            (false, false) => {
                if refused(&e1) && refused(&e2) {
                    broke = Some(
                        "concurrent starts: both were refused with RotationInProgress".to_string(),
                    );
                } else {
                    self.kind("concurrent starts: neither went past SelectUser");
                }
            }
        }
        if let Some(what) = broke {
            return Err(Violation { what });
        }
        let mut all = texts(&e1, text1);
        all.extend(texts(&e2, text2));
        let succeeded = e1.status == "SUCCEEDED" || e2.status == "SUCCEEDED";
        self.check(harness, mark, windows, &all, succeeded).await
    }

    /// An operator's edit of a connection field: a new AWSCURRENT version,
    /// the password unchanged.
    async fn operator_edit(&mut self, which: Which, log: &mut Vec<String>) {
        let t = self.target.clone();
        let (secret, whose) = match &t.alternating {
            Some(alt) => (alt.clone(), "the alternating secret".to_string()),
            None => {
                let active = self.stack.active_user(&t).await;
                let inactive = if t.color_of(&active) == Some("blue") {
                    t.key("green")
                } else {
                    t.key("blue")
                };
                let (key, what) = match which {
                    Which::Active => (active, "active"),
                    Which::Inactive => (inactive, "inactive"),
                };
                (
                    t.secret_of(&key).to_string(),
                    format!("the {what} user's secret"),
                )
            }
        };
        self.kind(format!("operator edit of {whose} (connection fields)"));
        // A version made from now on compares as newer (whole seconds in moto).
        pgflip_tests::next_second().await;
        let current = self.stack.secret_state(&secret).await.current;
        let raw = self
            .stack
            .secrets
            .get_secret_value()
            .secret_id(&secret)
            .version_stage(AWSCURRENT)
            .send()
            .await
            .expect("read the secret")
            .secret_string
            .unwrap_or_default();
        let mut value: Value = serde_json::from_str(&raw).expect("the secret is JSON");
        self.seq += 1;
        value["dbClusterIdentifier"] = json!(format!("chaos-cluster-{}", self.seq));
        let new = self
            .stack
            .secrets
            .put_secret_value()
            .secret_id(&secret)
            .secret_string(value.to_string())
            .version_stages(EDIT_LABEL)
            .send()
            .await
            .expect("put the operator's version")
            .version_id
            .unwrap_or_default();
        self.stack
            .promote_staged(&secret, &current, &new, EDIT_LABEL)
            .await;
        log.push(format!(
            "an operator edited {whose}: dbClusterIdentifier changed, a new AWSCURRENT"
        ));
    }

    /// An execution with PostgreSQL stopped before it starts or right after
    /// a step, started again `down_ms` later.
    async fn outage(
        &mut self,
        (trigger, after, down_ms): (Trigger, Option<&'static str>, u64),
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        let Some(pg) = self.pg.take() else {
            self.kind("PostgreSQL outage skipped (pg_ctl not reachable)");
            return Ok(());
        };
        self.kind(match after {
            None => "PostgreSQL outage, an execution started during it".to_string(),
            Some(step) => format!("PostgreSQL outage after {step}"),
        });
        let input = self.input(trigger, None).await;
        let script = pg.outage_script(down_ms);
        let tasks = match after {
            None => json!({}),
            Some(step) => json!({ step: [{"afterCommand": ["sh", "-c", script]}] }),
        };
        if after.is_none() {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", &script]);
            shell(cmd).await;
        }
        let name = self.name(seed, scenario, index);
        let (e, history) = self
            .run(RunOptions {
                input: Some(input),
                name: Some(name),
                scenario: Some(json!({"waitMs": 0, "retryIntervalMs": 1000, "tasks": tasks})),
                ..RunOptions::default()
            })
            .await;
        let back = pg
            .ensure_up(&self.stack.pg_host, self.stack.pg_port, down_ms)
            .await;
        self.pg = Some(pg);
        self.admin = None;
        if after.is_some_and(|s| !e.states.iter().any(|x| x == s)) {
            self.kind("PostgreSQL outage: its step not reached");
        }
        log.push(format!(
            "{} [PostgreSQL back {} ms after the run ended]",
            run_line(&e),
            back.as_ref().map(|d| d.as_millis()).unwrap_or(0)
        ));
        if let Err(what) = back {
            return Err(Violation { what });
        }
        self.check_named("PostgreSQL outage", &e, history, harness, mark, windows)
            .await
    }
}

/// Creates `service` of `cluster` anew on its task definition with
/// `desired` tasks wanted: how the soak sets a deployment's rolloutState.
///
/// Emulated, because moto cannot do better: moto's ECS keeps one
/// deployment per service, changed in place by UpdateService, and fixes
/// its rolloutState when the service is created: COMPLETED when
/// MOTO_ECS_SERVICE_RUNNING (2 on the local stack) covers the desired
/// count, else IN_PROGRESS for good. So a release in progress is the
/// service created anew wanting 3 tasks (a new PRIMARY deployment,
/// IN_PROGRESS), and that release completing is the service created anew
/// wanting 2 (another new PRIMARY, COMPLETED; on ECS the same deployment
/// would turn COMPLETED: pgflip reads a newer PRIMARY that replaced the one
/// it waits for as that one's outcome, so both read the same).
async fn recreate_service(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
    desired: i32,
) -> Result<(), String> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| format!("ecs:DescribeServices {service}: {e}"))?;
    let task_definition = out
        .services()
        .iter()
        .find(|s| s.service_name() == Some(service) && s.status() == Some("ACTIVE"))
        .and_then(|s| s.task_definition())
        .ok_or_else(|| format!("service {service} has no task definition"))?
        .to_string();
    ecs.delete_service()
        .cluster(cluster)
        .service(service)
        .force(true)
        .send()
        .await
        .map_err(|e| format!("ecs:DeleteService {service}: {e}"))?;
    ecs.create_service()
        .cluster(cluster)
        .service_name(service)
        .task_definition(task_definition)
        .desired_count(desired)
        .send()
        .await
        .map_err(|e| format!("ecs:CreateService {service}: {e}"))?;
    Ok(())
}

impl Soak {
    /// A release pgflip did not make, IN_PROGRESS when an execution
    /// starts, completing `finish_ms` after the start (see
    /// [`recreate_service`] for how moto is made to report it).
    async fn foreign_rollout(
        &mut self,
        (service, trigger, finish_ms): (&'static str, Trigger, u64),
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        self.kind("release IN_PROGRESS (by ECS) when an execution starts");
        let cluster = self.target.cluster.clone();
        if let Err(what) = recreate_service(&self.stack.ecs, &cluster, service, 3).await {
            return Err(Violation { what });
        }
        let input = self.input(trigger, None).await;
        let ecs = self.stack.ecs.clone();
        let finisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(finish_ms)).await;
            recreate_service(&ecs, &cluster, service, 2).await
        });
        let name = self.name(seed, scenario, index);
        let (e, history) = self
            .run(RunOptions {
                input: Some(input),
                name: Some(name),
                scenario: Some(json!({"waitMs": 300, "retryIntervalMs": 0, "tasks": {}})),
                ..RunOptions::default()
            })
            .await;
        // The release completes in any case (after the run, if it was late).
        let finished = finisher.await.unwrap_or_else(|e| Err(e.to_string()));
        log.push(format!(
            "{} [release of {service} completed {finish_ms} ms after the start]",
            run_line(&e)
        ));
        if let Err(what) = finished {
            return Err(Violation { what });
        }
        self.check_named("release in progress", &e, history, harness, mark, windows)
            .await
    }

    /// An execution during which ECS's deployment circuit breaker rolls
    /// `service` back. On ECS: the deployment RedeployEcs made is
    /// IN_PROGRESS for a while, then FAILED, and the previous deployment
    /// (the previous task definition) becomes PRIMARY again, IN_PROGRESS
    /// then COMPLETED, starting tasks of its own. Emulated, as moto never
    /// fails a rollout nor keeps two deployments: `delay_ms` after
    /// RedeployEcs ran (a marker file its `afterCommand` writes) the soak
    /// makes that rollback's deployment in moto (UpdateService with a new
    /// deployment on the service's task definition, which RedeployEcs did
    /// not change: the previous one; the harness starts its tasks), and the
    /// runner makes WaitForStable's first `looks` looks report IN_PROGRESS
    /// (`merge`, after the real Lambda ran) and the next one fail with
    /// RolloutFailed (`throwAfter`), as the Lambda does on ECS when its
    /// deployment is FAILED or an older one is PRIMARY again.
    async fn ecs_rollback(
        &mut self,
        (service, trigger, delay_ms, looks): (&'static str, Trigger, u64, u64),
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        self.kind("rollback by ECS (circuit breaker) during a rotation");
        let input = self.input(trigger, None).await;
        self.seq += 1;
        let marker = self.work.join(format!(
            "chaos-redeployed-{}-{}",
            std::process::id(),
            self.seq
        ));
        let _ = std::fs::remove_file(&marker);
        let mut wait_actions: Vec<Value> =
            vec![json!({"merge": {"status": "IN_PROGRESS"}}); looks as usize];
        wait_actions.push(json!({"throwAfter": {
            "error": "RolloutFailed",
            "cause": format!("chaos: ECS's circuit breaker rolled {service} back (emulated, moto never fails a rollout)")
        }}));
        let tasks = json!({
            "RedeployEcs": [{"afterCommand": ["touch", marker.display().to_string()]}],
            "WaitForStable": wait_actions,
        });
        let (stack, t, watched) = (self.stack.clone(), self.target.clone(), marker.clone());
        let rollback = tokio::spawn(async move {
            while !watched.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            stack.redeploy(&t, service).await;
        });
        let name = self.name(seed, scenario, index);
        let (e, history) = self
            .run(RunOptions {
                input: Some(input),
                name: Some(name),
                scenario: Some(json!({"waitMs": 300, "retryIntervalMs": 0, "tasks": tasks})),
                ..RunOptions::default()
            })
            .await;
        let rolled_back = if marker.exists() {
            // RedeployEcs ran: ECS's rollback happens, late or not.
            let _ = rollback.await;
            true
        } else {
            rollback.abort();
            self.kind("rollback by ECS: RedeployEcs not reached");
            false
        };
        let _ = std::fs::remove_file(&marker);
        log.push(format!(
            "{}{}",
            run_line(&e),
            if rolled_back {
                format!(" [ECS rolled {service} back {delay_ms} ms after RedeployEcs]")
            } else {
                String::new()
            }
        ));
        self.check_named("rollback by ECS", &e, history, harness, mark, windows)
            .await
    }
}

impl Soak {
    /// Invariant 4 in the logs: searches what the Lambda log and the
    /// PostgreSQL server log gained since the last search (up to their last
    /// complete line) for every password the soak knows: every value it
    /// read from either secret and every one it set.
    fn search_logs(&mut self) -> Result<(), Violation> {
        for (path, searched) in self.logs.iter_mut() {
            use std::io::{Read, Seek, SeekFrom};
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue;
            };
            let mut bytes = vec![];
            if file.seek(SeekFrom::Start(*searched)).is_err()
                || file.read_to_end(&mut bytes).is_err()
            {
                continue;
            }
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let text = String::from_utf8_lossy(&bytes[..end]);
            *searched += end as u64;
            if self.passwords.iter().any(|p| text.contains(p.as_str())) {
                return Err(Violation {
                    what: format!(
                        "invariant 4 (no password in any log): a password the soak knows appears in {} (not shown)",
                        path.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Deletes a service (force: its tasks stop).
async fn delete_service(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) {
    let _ = ecs
        .delete_service()
        .cluster(cluster)
        .service(service)
        .force(true)
        .send()
        .await;
}

impl Soak {
    /// A new consumer service under load: its task definition takes the
    /// target's credentials the way the target's own services do (the
    /// parameter and both secrets, following the pointer; alternating: DB_*
    /// injected from the secret), created wanting 2 tasks, its tasks
    /// started by the harness. pgflip's consumer discovery finds it.
    async fn add_service(&mut self, harness: &Harness) -> Result<(), Violation> {
        self.kind("consumer service added under load");
        self.seq += 1;
        let name = format!("extra-{}", self.seq);
        let t = self.target.clone();
        let family = match &t.alternating {
            Some(secret) => {
                let arn = self.stack.secret_arn(secret).await;
                crate::injection::register_injected_task_definition(
                    &self.stack.ecs,
                    &format!("{}-{name}", t.cluster),
                    &arn,
                )
                .await
                .map_err(|what| Violation { what })?
            }
            None => self.stack.register_consumer(&t, &name).await,
        };
        self.stack
            .ecs
            .create_service()
            .cluster(&t.cluster)
            .service_name(&name)
            .task_definition(family)
            .desired_count(2)
            .send()
            .await
            .map_err(|e| Violation {
                what: format!("ecs:CreateService {name}: {e}"),
            })?;
        harness.add_service(&name);
        self.extras.push(name);
        Ok(())
    }

    /// Every service whose tasks take the target's credentials: the
    /// target's own and those this scenario added.
    fn consumer_services(&self) -> Vec<String> {
        consumer_services(&self.target, &self.extras)
    }

    /// The PRIMARY deployment of every consumer service (`consumer_services`)
    /// that exists: a window of expected failed logins stays open while any
    /// of them still runs the deployment it had when the window opened
    /// (seed 11, scenario 203: Secrets Manager rotated the active user,
    /// releases redeployed web and worker, and the window closed while an
    /// added service's tasks still held the old password, a false
    /// violation).
    async fn consumer_deployments(&self) -> Vec<(String, String)> {
        self.stack
            .primary_deployments_present(&self.target.cluster, &self.consumer_services())
            .await
    }

    /// Deletes the services this scenario added.
    async fn remove_extras(&mut self, harness: &Harness) {
        for name in std::mem::take(&mut self.extras) {
            harness.remove_service(&name);
            delete_service(&self.stack.ecs, &self.target.cluster, &name).await;
        }
    }
}

impl Soak {
    /// An execution with PostgreSQL hung (SIGSTOP) before it starts or
    /// right after a step, resumed `hang_ms` later.
    async fn hang(
        &mut self,
        (trigger, after, hang_ms): (Trigger, Option<&'static str>, u64),
        names: Names,
        harness: &Harness,
        mark: &mut LoadMark,
        windows: &mut Vec<Window>,
        log: &mut Vec<String>,
    ) -> Result<(), Violation> {
        let (seed, scenario, index) = names;
        let Some(pg) = self.pg.take() else {
            self.kind("PostgreSQL hang skipped (pg_ctl not reachable)");
            return Ok(());
        };
        self.kind(match after {
            None => "PostgreSQL hang (SIGSTOP), an execution started during it".to_string(),
            Some(step) => format!("PostgreSQL hang (SIGSTOP) after {step}"),
        });
        let input = self.input(trigger, None).await;
        let script = pg.hang_script(hang_ms);
        let tasks = match after {
            None => json!({}),
            Some(step) => json!({ step: [{"afterCommand": ["sh", "-c", script]}] }),
        };
        *HANGING.lock().unwrap() = Some(pg.data.clone());
        let (e, history, back) = {
            let _guard = HangGuard(&pg);
            if after.is_none() {
                let mut cmd = std::process::Command::new("sh");
                cmd.args(["-c", &script]);
                shell(cmd).await;
            }
            let name = self.name(seed, scenario, index);
            let (e, history) = self
                .run(RunOptions {
                    input: Some(input),
                    name: Some(name),
                    scenario: Some(json!({"waitMs": 0, "retryIntervalMs": 1000, "tasks": tasks})),
                    ..RunOptions::default()
                })
                .await;
            // Hung until the watchdog resumed it, or resumed now.
            let t0 = Instant::now();
            let _ = tokio::time::timeout(Duration::from_millis(hang_ms), async {
                while !pg.ready(&self.stack.pg_host, self.stack.pg_port).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            (e, history, t0.elapsed())
        };
        *HANGING.lock().unwrap() = None;
        let up = pg
            .ensure_up(&self.stack.pg_host, self.stack.pg_port, 0)
            .await;
        self.pg = Some(pg);
        self.admin = None;
        if after.is_some_and(|s| !e.states.iter().any(|x| x == s)) {
            self.kind("PostgreSQL hang: its step not reached");
        }
        log.push(format!(
            "{} [PostgreSQL answered {} ms after the run ended]",
            run_line(&e),
            back.as_millis()
        ));
        if let Err(what) = up {
            return Err(Violation { what });
        }
        self.check_named("PostgreSQL hang", &e, history, harness, mark, windows)
            .await
    }
}

/// The label an operator's edit is written under before AWSCURRENT moves
/// to it (AWSPENDING stays where it is).
const EDIT_LABEL: &str = "chaos-edit";

// ---------------------------------------------------------------- figures

/// What a run of the soak (or, combined, of its shards) counted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Figures {
    seed: u64,
    scenarios_run: u64,
    scenarios_planned: u64,
    /// The `--max-seconds` bound that stopped it early.
    stopped_by_time: Option<u64>,
    alternating_scenarios: u64,
    events: u64,
    kinds: BTreeMap<String, u64>,
    executions: u64,
    outcomes: BTreeMap<String, u64>,
    pairs_guarded: u64,
    pairs_sequential: u64,
    queries: u64,
    failed_logins: u64,
    expected_failed_logins: u64,
    violations: u64,
    /// The run's wall time (combined: the longest shard's).
    wall_seconds: f64,
    profile: BTreeMap<String, f64>,
    /// How many runs these figures sum (1: not combined).
    shards: u64,
}

impl Figures {
    /// The sum of several shards' figures; the wall time is the longest.
    fn combine(parts: Vec<Figures>) -> Figures {
        let mut all = Figures::default();
        let mut shard_seconds = 0.0;
        for f in parts {
            all.seed = f.seed;
            all.scenarios_run += f.scenarios_run;
            all.scenarios_planned += f.scenarios_planned;
            all.stopped_by_time = all.stopped_by_time.or(f.stopped_by_time);
            all.alternating_scenarios += f.alternating_scenarios;
            all.events += f.events;
            for (k, n) in f.kinds {
                *all.kinds.entry(k).or_default() += n;
            }
            all.executions += f.executions;
            for (k, n) in f.outcomes {
                *all.outcomes.entry(k).or_default() += n;
            }
            all.pairs_guarded += f.pairs_guarded;
            all.pairs_sequential += f.pairs_sequential;
            all.queries += f.queries;
            all.failed_logins += f.failed_logins;
            all.expected_failed_logins += f.expected_failed_logins;
            all.violations += f.violations;
            all.wall_seconds = all.wall_seconds.max(f.wall_seconds);
            shard_seconds += f.wall_seconds;
            for (k, s) in f.profile {
                *all.profile.entry(k).or_default() += s;
            }
            all.shards += f.shards;
        }
        all.profile
            .insert("(all shards' wall time)".to_string(), shard_seconds);
        all
    }

    fn print(&self, profile: bool) {
        let seed = self.seed;
        let run_count = self.scenarios_run;
        println!();
        if self.shards > 1 {
            println!(
                "### Chaos soak, seed {seed}: {} shards combined",
                self.shards
            );
        } else {
            println!("### Chaos soak, seed {seed}");
        }
        println!();
        println!(
            "scenarios run: {run_count} of {}{}",
            self.scenarios_planned,
            match self.stopped_by_time {
                Some(max_seconds) => format!(" (stopped at the {max_seconds} s bound)"),
                None => String::new(),
            }
        );
        println!(
            "scenarios against the alternating-secret target: {}",
            self.alternating_scenarios
        );
        println!("events: {}", self.events);
        println!("events by kind:");
        for (k, n) in &self.kinds {
            println!("  {n:>5}  {k}");
        }
        println!("executions: {}", self.executions);
        println!("executions by outcome:");
        for (k, n) in &self.outcomes {
            println!("  {n:>5}  {k}");
        }
        println!(
            "concurrent pairs: {} with one refused RotationInProgress, {} where both proceeded one after the other",
            self.pairs_guarded, self.pairs_sequential
        );
        println!("application queries: {}", self.queries);
        println!(
            "failed application logins: {} (must be 0)",
            self.failed_logins
        );
        println!(
            "failed logins of tasks holding a password changed under them by Secrets Manager's own rotation, or by the later of two concurrent starts that ran one after the other before the harness had drained the tasks moto already reported replaced (expected until their service is redeployed; not pgflip's): {}",
            self.expected_failed_logins
        );
        println!("invariant violations: {}", self.violations);
        let wall = self.wall_seconds;
        if self.shards > 1 {
            let total = self
                .profile
                .get("(all shards' wall time)")
                .copied()
                .unwrap_or(wall);
            println!(
                "wall time: {wall:.0} s (the longest of {} shards run at once; {:.1} s per scenario of the run; {total:.0} s summed over the shards, {:.1} s per scenario per shard)",
                self.shards,
                wall / run_count.max(1) as f64,
                total / run_count.max(1) as f64
            );
        } else {
            println!(
                "wall time: {wall:.0} s ({:.1} s per scenario)",
                wall / run_count.max(1) as f64
            );
        }
        if profile {
            println!("where the time went (s, and s per scenario; checks and executions are inside events, the first check of each scenario too):");
            for (phase, s) in &self.profile {
                println!(
                    "  {:>8.1}  {:>6.2}  {phase}",
                    s,
                    s / run_count.max(1) as f64
                );
            }
        }
    }
}

/// `pgflip-bench chaos --combine A.json,B.json,...`: the shards' figures
/// (each written by `--json`) summed and printed; false when a shard saw
/// a violation, a failed login, or its file is missing.
fn combine(list: &str, profile: bool, json: Option<&str>) -> bool {
    let mut parts = vec![];
    let mut ok = true;
    for path in list.split(',').filter(|p| !p.is_empty()) {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Figures>(&t).map_err(|e| e.to_string()))
        {
            Ok(f) => parts.push(f),
            Err(e) => {
                say(format!(
                    "no figures from {path} ({e}): that shard did not finish"
                ));
                ok = false;
            }
        }
    }
    let all = Figures::combine(parts);
    all.print(profile);
    if let Some(path) = json {
        ok &= write_figures(&all, path);
    }
    ok && all.violations == 0 && all.failed_logins == 0
}

/// Writes `figures` to `path` as JSON (the shape `--combine` reads);
/// false, said, when it cannot.
fn write_figures(figures: &Figures, path: &str) -> bool {
    let text = serde_json::to_string_pretty(figures).expect("the figures as JSON");
    match std::fs::write(path, text) {
        Ok(()) => true,
        Err(e) => {
            say(format!("could not write {path}: {e}"));
            false
        }
    }
}

/// `pgflip-bench chaos --help`.
const HELP: &str = "\
pgflip-bench chaos: the chaos soak (issue 15). Seeded random schedules of
faults and events against the local stack under application load, the
invariants checked after every event. Needs a running local stack
(source $STACK_DIR/stack.env; scripts/bench --chaos N --seed S starts one).

usage: pgflip-bench chaos [--scenarios N] [--first K] [--seed S] [--only K]
                          [--list 1] [--increment 1|2|3] [--max-seconds T]
                          [--profile 1] [--json FILE]
                          [--pause-ms 200] [--start-ms 100] [--stagger-ms 50]
                          [--drain-ms 200] [--poll-ms 50] [--tasks 2]

  --scenarios N     N scenarios of the seed (20), from the first
  --first K         the first scenario (1): scenarios K..K+N-1, a shard of a
                    longer run (scripts/bench --chaos N --parallel P)
  --seed S          the seed (1); scenario K of seed S is a pure function of
                    (S, K): the same events in the same order on any machine
                    (passwords, exact timings and execution names are not
                    seeded)
  --only K          run scenario K alone (to replay a violation)
  --list 1          print the schedules, run nothing
  --increment I     which increments' event kinds to draw (3): 1 the first
                    increment's schedules unchanged; 2 adds concurrent
                    starts, operators' edits, PostgreSQL stopped, the
                    alternating-secret layout; 3 adds releases IN_PROGRESS
                    when pgflip starts, rollbacks by ECS's circuit breaker,
                    consumer services added and removed, PostgreSQL hanging
  --max-seconds T   start no scenario after T seconds (3600)
  --profile 1       print where the time went, by phase, at the end
  --json FILE       also write the figures as JSON (one shard's; with
                    --combine, the sum)
  --combine A,B,..  print the sum of shards' --json figures, run nothing;
                    exits 1 if a shard saw a violation or a failed login,
                    or left no figures
  --pause-ms ...    the load harness: pause after each query of a task, a
                    new task's start-up delay, the stagger between new
                    tasks, how long an old task drains, how often the
                    harness polls ECS, tasks per service

Events: executions started by hand (some limited to one service), by
schedule, or by a Secrets Manager RotationSucceeded event; two at once; a
crash after a random step, then a redrive, a re-run or nothing; throttling;
a Lambda timeout; a failed rollout; a release pgflip did not make (finished
at once, or IN_PROGRESS when pgflip starts); a rollback by ECS; Secrets
Manager's own rotation of either user; an operator's edit of a secret's
connection fields; PostgreSQL stopped or hanging (SIGSTOP) before or during
a run; a consumer service added or removed. One scenario in four runs
against the alternating-secret target with ECS-injected credentials.

Checked after every event (a violation stops the soak, prints the seed, the
schedule and the event, and exits 1):
  1. the user the pointer names logs in with its AWSCURRENT password;
  2. no application login failed (every running task of every consumer
     service logs in with what it started with, or was replaced), except
     tasks holding a password Secrets Manager's own rotation changed;
  3. one AWSCURRENT and at most one AWSPENDING per secret, none after a
     SUCCEEDED execution;
  4. no password the soak knows in the runner's output or history (and,
     after each scenario, in the Lambda log and the PostgreSQL server log);
  5. the pointer moved only to a user verified since its last password
     change (pg_authid verifiers);
  6. alternating: AWSPREVIOUS's role logs in after a SUCCEEDED execution;
  and every execution under a fault ends SUCCEEDED or with one of pgflip's
  error names.

Figures at the end: scenarios, events by kind, executions by outcome,
application queries, failed logins, violations, wall time.
";

pub async fn command(args: &Args) -> bool {
    if args.flag("help") {
        print!("{HELP}");
        return true;
    }
    if let Some(list) = args.text("combine") {
        return combine(
            list,
            args.text("profile").is_some_and(|v| v != "0"),
            args.text("json"),
        );
    }
    let scenarios = args.number("scenarios", 20);
    let first = args.number("first", 1);
    let seed = args.number("seed", 1);
    let only = args.text("only").map(|v| {
        v.parse::<u64>()
            .unwrap_or_else(|_| crate::usage("--only must be a scenario number"))
    });
    let max_seconds = args.number("max-seconds", 3600);
    let increment = args.number("increment", 3);
    let started = Instant::now();
    resume_on_signal();
    let stack = Arc::new(Stack::from_env().await);
    let target = Target::local();
    let work = std::env::var_os("PGFLIP_STACK_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut soak = Soak {
        stack,
        target: target.clone(),
        work,
        passwords: HashSet::new(),
        kinds: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        executions: 0,
        events: 0,
        queries: 0,
        failed_logins: 0,
        expected_failed_logins: 0,
        seq: 0,
        trusted: BTreeMap::new(),
        last_pointer: None,
        verified_roles: vec![],
        moved_by_soak: false,
        pg: PgCtl::from_env(),
        pairs_guarded: 0,
        pairs_sequential: 0,
        alternating_scenarios: 0,
        extras: vec![],
        logs: vec![],
        profile: BTreeMap::new(),
        admin: None,
        sfn: aws_sdk_sfn::Client::new(
            &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        ),
    };
    // cargo lambda watch's output (every Lambda's log) and the primary's
    // server log (log_statement = 'all': every statement pgflip sent).
    if let Some(dir) = std::env::var_os("PGFLIP_STACK_DIR") {
        soak.logs.push((PathBuf::from(dir).join("lambda.log"), 0));
    }
    soak.logs.push((soak.stack.pg_log.clone(), 0));
    let numbers: Vec<u64> = match only {
        Some(k) => vec![k],
        None => (first..first + scenarios).collect(),
    };
    if args.text("list").is_some_and(|v| v != "0") {
        // The schedules alone, nothing run (`--list 1`).
        for &number in &numbers {
            let sc = schedule(seed, number, increment);
            println!(
                "scenario {number} of seed {seed} ({} layout):",
                if sc.alternating {
                    "alternating-secret"
                } else {
                    "parameter"
                }
            );
            for (i, e) in sc.events.iter().enumerate() {
                println!("  {}. {e}", i + 1);
            }
        }
        return true;
    }
    say(format!(
        "== chaos soak: {} scenario(s) of seed {seed} (increment {increment}'s schedules), against {}{} under load; invariants checked after every event",
        numbers.len(),
        target.parameter_name,
        if increment >= 2 {
            " or the alternating target"
        } else {
            ""
        }
    ));
    if increment >= 2 && soak.pg.is_none() {
        say("   PostgreSQL outages are skipped: $PGFLIP_STACK_DIR/pg_ctl, pgdata or pg_isready not found");
    }
    let mut run_count = 0u64;
    // (scenario, schedule, event, what broke, the scenario's runs)
    type Broken = (u64, bool, Vec<Event>, usize, String, Vec<String>);
    let mut violation: Option<Broken> = None;
    let mut stopped_by_time = false;
    for &number in &numbers {
        if started.elapsed() > Duration::from_secs(max_seconds) {
            stopped_by_time = true;
            break;
        }
        let Scenario {
            alternating,
            events,
        } = schedule(seed, number, increment);
        let target = if alternating {
            soak.alternating_scenarios += 1;
            Target::local_alternating()
        } else {
            Target::local()
        };
        soak.target = target.clone();
        soak.trusted.clear();
        soak.last_pointer = None;
        soak.verified_roles.clear();
        soak.moved_by_soak = false;
        let phase = Instant::now();
        soak.stack.seed(&target).await;
        soak.spent("scenario start: seeding the target", phase);
        let phase = Instant::now();
        let mut config = args.load_config(&target, target.services.clone());
        if alternating {
            // As the bench's alternating phase: listed in the targets
            // document, its services injecting DB_* from the secret.
            soak.stack.register_target(&target).await;
            let secret = target
                .alternating
                .as_deref()
                .expect("an alternating target");
            let arn = soak.stack.secret_arn(secret).await;
            if let Err(e) = crate::injection::inject_from_secret(
                &soak.stack.ecs,
                &target.cluster,
                &target.services,
                "pgflip-local-alt-chaos",
                &arn,
            )
            .await
            {
                say(format!("the alternating target could not be prepared: {e}"));
                return false;
            }
            config.credentials = crate::harness::CredentialSource::Injected;
        }
        let ms = |key: &str, default: u64| Duration::from_millis(args.number(key, default));
        // Lighter than the bench's 50 ms: each query is a fresh SCRAM
        // login, and the soak's time goes into the runner, which shares the
        // two cores with the load.
        config.query_pause = ms("pause-ms", 200);
        config.task_start = ms("start-ms", 100);
        config.stagger = ms("stagger-ms", 50);
        config.drain = ms("drain-ms", 200);
        config.poll_every = ms("poll-ms", 50);
        config.max_life = Duration::from_secs(600);
        let harness = Harness::start(&target, config).await;
        soak.spent(
            "scenario start: registering, injection, harness start",
            phase,
        );
        let phase = Instant::now();
        let mut mark = LoadMark {
            totals: Totals::default(),
            samples: BTreeSet::new(),
        };
        let mut windows: Vec<Window> = vec![];
        let first = soak
            .check(&harness, &mut mark, &mut windows, &[], false)
            .await;
        soak.spent("scenario start: first check (tasks up)", phase);
        let t0 = Instant::now();
        let mut log = vec![];
        let mut broke_at = None;
        if let Err(v) = first {
            broke_at = Some((0, v.what));
        } else {
            for (i, event) in events.iter().enumerate() {
                soak.events += 1;
                let e0 = Instant::now();
                let r = soak
                    .apply(
                        event,
                        (seed, number, i + 1),
                        &harness,
                        &mut mark,
                        &mut windows,
                        &mut log,
                    )
                    .await;
                soak.spent("events (all of it)", e0);
                if let Err(v) = r {
                    broke_at = Some((i + 1, v.what));
                    break;
                }
                log.push(format!(
                    "[event {} took {} ms]",
                    i + 1,
                    e0.elapsed().as_millis()
                ));
            }
        }
        let phase = Instant::now();
        soak.remove_extras(&harness).await;
        let totals = harness.stop().await;
        soak.spent("scenario end: harness stop", phase);
        let phase = Instant::now();
        if broke_at.is_none() {
            if let Err(v) = soak.search_logs() {
                broke_at = Some((events.len(), v.what));
            }
        }
        soak.spent("scenario end: log search", phase);
        // What the load did after the last check (normally nothing).
        soak.queries += totals.queries - mark.totals.queries;
        run_count += 1;
        if let Some((at, what)) = broke_at {
            violation = Some((number, alternating, events, at, what, log));
            break;
        }
        say(format!(
            "  scenario {number}{}: {} events, {} s{}",
            if alternating { " (alternating)" } else { "" },
            events.len(),
            t0.elapsed().as_secs(),
            if log.is_empty() {
                String::new()
            } else {
                let short: Vec<&str> = log
                    .iter()
                    .map(|l| l.split(" | ").next().unwrap_or_default())
                    .collect();
                format!("; {}", short.join("; "))
            }
        ));
    }

    // ---- figures
    let figures = Figures {
        seed,
        scenarios_run: run_count,
        scenarios_planned: numbers.len() as u64,
        stopped_by_time: stopped_by_time.then_some(max_seconds),
        alternating_scenarios: soak.alternating_scenarios,
        events: soak.events,
        kinds: soak.kinds.clone(),
        executions: soak.executions,
        outcomes: soak.outcomes.clone(),
        pairs_guarded: soak.pairs_guarded,
        pairs_sequential: soak.pairs_sequential,
        queries: soak.queries,
        failed_logins: soak.failed_logins,
        expected_failed_logins: soak.expected_failed_logins,
        violations: u64::from(violation.is_some()),
        wall_seconds: started.elapsed().as_secs_f64(),
        profile: soak
            .profile
            .iter()
            .map(|(k, d)| (k.to_string(), d.as_secs_f64()))
            .collect(),
        shards: 1,
    };
    figures.print(args.text("profile").is_some_and(|v| v != "0"));
    if let Some(path) = args.text("json") {
        if !write_figures(&figures, path) {
            return false;
        }
    }
    match violation {
        None => {
            println!("OK: no invariant broke after any event.");
            true
        }
        Some((number, alternating, events, at, what, log)) => {
            println!();
            println!(
                "VIOLATION: seed {seed}, scenario {number} ({} layout), event {at}",
                if alternating {
                    "alternating-secret"
                } else {
                    "parameter"
                }
            );
            println!("schedule:");
            for (i, e) in events.iter().enumerate() {
                println!("  {}{}. {e}", if i + 1 == at { ">" } else { " " }, i + 1);
            }
            println!("runs of the scenario:");
            for line in &log {
                // Causes are printed, with any password they might hold masked.
                let mut line = line.clone();
                for p in &soak.passwords {
                    line = line.replace(p.as_str(), "***");
                }
                println!("  {line}");
            }
            println!("broke at event {at}: {what}");
            println!(
                "replay: target/debug/pgflip-bench chaos --seed {seed} --only {number}{}",
                if increment < 2 { " --increment 1" } else { "" }
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner's history: `(type, state, ms)` events.
    fn history(events: &[(&str, &str, i64)]) -> String {
        let events: Vec<Value> = events
            .iter()
            .map(|(kind, state, ms)| json!({"type": kind, "state": {"name": state}, "timestamp": ms}))
            .collect();
        Value::Array(events).to_string()
    }

    /// A run from SelectUser to WaitForStable, its states entered at
    /// `from` ms and ending at `to`.
    fn run(from: i64, to: i64) -> String {
        history(&[
            ("StateEntered", "SelectUser", from),
            ("StateExited", "SelectUser", from + 40),
            ("StateEntered", "WaitForStable", to - 40),
            ("StateExited", "WaitForStable", to),
        ])
    }

    /// A `StateExited` event of `state` whose output is `output`.
    fn exited(state: &str, output: Value) -> Value {
        json!({"type": "StateExited", "state": {"name": state, "output": output}, "timestamp": 0})
    }

    #[test]
    fn a_select_user_finishing_an_earlier_rotation_verified_both_roles() {
        // Seed 11, scenario 405 (alternating): a RotationSucceeded of the
        // alternating secret; SelectUser in mode redeploy logged in as both
        // roles, then ECS rolled web back and the rollback moved AWSCURRENT
        // to alt_app_clone, which no VerifyLogin had verified.
        let t = Target::local_alternating();
        let history = json!([
            exited(
                "SelectUser",
                json!({"mode": "redeploy", "targetUser": "alt_app", "previousUser": "alt_app_clone"})
            ),
            exited("RedeployEcs", json!({"plan": {"mode": "redeploy", "targetUser": "alt_app"}})),
        ])
        .to_string();
        assert_eq!(verified_roles(&history, &t), ["alt_app", "alt_app_clone"]);
        let waited = history.replace("\"redeploy\"", "\"wait\"");
        assert_eq!(verified_roles(&waited, &t), ["alt_app", "alt_app_clone"]);
    }

    #[test]
    fn a_rotation_verified_only_what_its_verify_login_logged_in_as() {
        // Mode rotate or flip: SelectUser's check is not the last word (the
        // password is set after it, or a flip verifies in VerifyLogin).
        let t = Target::local();
        let history = json!([
            exited(
                "SelectUser",
                json!({"mode": "rotate", "targetUser": "green", "previousUser": "blue"})
            ),
            exited(
                "GenerateAndSetPassword",
                json!({"plan": {"targetUser": "green"}})
            ),
            exited("VerifyLogin", json!({"plan": {"targetUser": "green"}})),
            exited("VerifyLogin", json!({"targetUser": "nobody"})),
        ])
        .to_string();
        assert_eq!(
            verified_roles(&history, &t),
            [t.role_of("green").to_string()]
        );
        assert!(verified_roles("not a history", &t).is_empty());
    }

    #[test]
    fn a_window_stays_open_while_an_added_service_still_runs_its_old_deployment() {
        // Seed 11, scenario 203: Secrets Manager rotated the active user;
        // releases then redeployed web and worker, but not extra-312, whose
        // tasks still held the old password.
        let t = Target::local();
        let extras = vec!["extra-312".to_string()];
        let services = consumer_services(&t, &extras);
        assert_eq!(services, ["web", "worker", "extra-312"]);
        let d = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(s, id)| (s.to_string(), id.to_string()))
                .collect()
        };
        let w = Window {
            role: "green".into(),
            deployments: d(&[("web", "a"), ("worker", "b"), ("extra-312", "c")]),
        };
        assert!(w.open(&d(&[("web", "a2"), ("worker", "b2"), ("extra-312", "c")])));
        assert!(!w.open(&d(&[("web", "a2"), ("worker", "b2"), ("extra-312", "c2")])));
        // Deleted: its tasks are gone with it.
        assert!(!w.open(&d(&[("web", "a2"), ("worker", "b2")])));
    }

    #[test]
    fn concurrent_starts_overlapping_in_moto_only_by_the_runners_last_moments_ran_one_after_the_other(
    ) {
        // Seed 7, scenario 3: moto's dates overlapped by 92 ms (the earlier
        // runner's stop recorded after its last state), while the later
        // one's SelectUser entered after the earlier one's last state.
        let earlier = run(1_000, 5_000);
        let later = run(5_010, 9_000);
        let (w1, w2) = (Some((990, 5_100)), Some((5_008, 9_050)));
        assert!(one_after_the_other((w1, &earlier), (w2, &later)));
        assert!(one_after_the_other((w2, &later), (w1, &earlier)));
    }

    #[test]
    fn concurrent_starts_where_only_the_later_select_user_overlapped_the_earlier_tail_ran_one_after_the_other(
    ) {
        // Seed 11, scenario 337: moto's dates overlapped by 12 ms; the later
        // one's SelectUser entered before the earlier one's stop and exited
        // after it, and its next state came after the earlier one's last.
        let earlier = run(293_470, 294_050);
        let later = history(&[
            ("StateEntered", "SelectUser", 294_047),
            ("StateExited", "SelectUser", 294_090),
            ("StateEntered", "GenerateAndSetPassword", 294_095),
            ("StateExited", "WaitForStable", 294_560),
        ]);
        let (w1, w2) = (Some((293_460, 294_058)), Some((294_046, 294_572)));
        assert!(one_after_the_other((w1, &earlier), (w2, &later)));
        assert!(one_after_the_other((w2, &later), (w1, &earlier)));
        // SelectUser exited before moto recorded the stop: its guard ran
        // while the earlier one was RUNNING, yet it went on.
        let early = later.replace("294090", "294055");
        assert!(!one_after_the_other((w1, &earlier), (w2, &early)));
        // A later state entered before the earlier one's last ended.
        let tail = run(293_470, 294_100);
        assert!(!one_after_the_other((w1, &tail), (w2, &later)));
    }

    #[test]
    fn concurrent_starts_whose_states_interleaved_did_not() {
        // The later one's SelectUser entered while the earlier one still
        // ran a state: a real overlap, which the soak must report.
        let earlier = run(1_000, 5_000);
        let later = run(4_900, 9_000);
        let (w1, w2) = (Some((990, 5_100)), Some((4_890, 9_050)));
        assert!(!one_after_the_other((w1, &earlier), (w2, &later)));
        assert!(!one_after_the_other((w2, &later), (w1, &earlier)));
    }

    #[test]
    fn concurrent_starts_apart_in_moto_ran_one_after_the_other_whatever_the_histories() {
        let (w1, w2) = (Some((1_000, 2_000)), Some((2_001, 3_000)));
        assert!(one_after_the_other((w1, "[]"), (w2, "[]")));
        assert!(one_after_the_other((w2, "[]"), (w1, "[]")));
    }

    #[test]
    fn concurrent_starts_without_a_window_or_a_timestamp_are_not_taken_for_sequential() {
        let earlier = run(1_000, 5_000);
        let later = run(5_010, 9_000);
        assert!(!one_after_the_other(
            (None, &earlier),
            (Some((5_008, 9_050)), &later)
        ));
        let no_select_user = history(&[("StateEntered", "GenerateAndSetPassword", 6_000)]);
        assert!(!one_after_the_other(
            (Some((990, 5_100)), &earlier),
            (Some((5_008, 9_050)), &no_select_user)
        ));
    }
}
