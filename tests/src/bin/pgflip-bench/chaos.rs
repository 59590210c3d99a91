//! The chaos soak (issue 15, first increment): seeded random schedules of
//! executions, crashes, faults, releases and Secrets Manager's own rotations
//! against the local parameter-layout target, under application load, with
//! the invariants checked after every event.
//!
//!   pgflip-bench chaos [--scenarios N] [--seed S] [--only K] [--max-seconds T]
//!                      [--list 1]
//!
//! Scenario K of seed S is a pure function of (S, K): a small SplitMix64
//! generator draws its 3–8 events before anything runs, so `--only K`
//! replays exactly that schedule (the passwords, timings and execution names
//! are not seeded). Each scenario re-seeds `Target::local()` and starts a
//! fresh load harness. Events run one after another, each execution through
//! the runner, synchronously; concurrent starts are a later increment.
//!
//! After every event (and after each run of a crash and its recovery) the
//! harness is let settle (its tasks replaced, as ECS's COMPLETED would mean:
//! moto completes a rollout at once), then:
//!   1. the user the parameter names logs in with its AWSCURRENT password;
//!   2. no application login failed since the last check, except those of
//!      tasks still holding a password that Secrets Manager's own rotation
//!      (an event of this soak) changed: from that rotation until every
//!      service has been redeployed since, the login failures of that role
//!      (the harness's error samples name it) are counted apart, not
//!      pgflip's; any other role's failure in that time is a violation;
//!   3. at most one version per secret carries AWSPENDING (exactly one
//!      AWSCURRENT), and none after a SUCCEEDED execution (README: "After any
//!      successful execution no version carries AWSPENDING");
//!   4. no password ever seen (both secrets at AWSCURRENT and AWSPENDING,
//!      after every check, and every one this soak made) appears in the
//!      runner's progress, summary or history of that event.
//!
//! A violation stops the soak: the seed, the scenario, its whole schedule
//! and the event that broke it are printed, and the command exits 1.
//! Passwords stay in memory; nothing here prints one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgflip_core::domain::{AWSCURRENT, AWSPENDING};
use pgflip_core::password::PasswordPolicy;
use pgflip_tests::{Execution, RunOptions, Stack, Target};
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
    /// Secrets Manager's own rotation of this user's secret.
    ExternalRotation { key: &'static str },
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
                "Secrets Manager rotates {key}'s secret (new AWSCURRENT + ALTER ROLE)"
            ),
        }
    }
}

/// Scenario `number` of `seed`: 3–8 events, drawn before anything runs.
fn schedule(seed: u64, number: u64) -> Vec<Event> {
    let mut rng = Rng::for_scenario(seed, number);
    let n = 3 + rng.below(6);
    (0..n).map(|_| draw(&mut rng)).collect()
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
            let trigger = match rng.weighted(&[50, 25, 25]) {
                0 => Trigger::Hand,
                1 => Trigger::Scheduled,
                _ => Trigger::SecretEvent(rng.pick(&["blue", "green"])),
            };
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

fn rotation_succeeded_event(secret_arn: &str) -> Value {
    json!({
        "version": "0", "id": "c4a05e11", "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager", "account": "123456789012", "time": "2026-11-01T00:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationSucceeded", "awsRegion": "us-east-1", "eventType": "AwsServiceEvent",
            "additionalEventData": {"SecretId": secret_arn}
        }
    })
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

// ---------------------------------------------------------------- the soak

/// Tasks that hold a password Secrets Manager's own rotation changed while
/// they used it: their failed logins are expected until every service has
/// a deployment newer than the rotation (and the harness settled on it).
struct Window {
    role: String,
    deployments: Vec<(String, String)>,
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
    fn kind(&mut self, k: impl Into<String>) {
        *self.kinds.entry(k.into()).or_default() += 1;
    }

    async fn run(&mut self, options: RunOptions) -> (Execution, String) {
        self.seq += 1;
        let history = self
            .work
            .join(format!("chaos-{}-{}.json", std::process::id(), self.seq));
        let mut options = options;
        options.history = Some(history.clone());
        let stack = self.stack.clone();
        let t0 = Instant::now();
        let e = tokio::task::spawn_blocking(move || stack.run(&options))
            .await
            .expect("the runner thread");
        if std::env::var_os("CHAOS_DEBUG").is_some() {
            say(format!(
                "    run {}: {} ms in the runner, {} ms wall",
                e.name,
                e.duration_ms,
                t0.elapsed().as_millis()
            ));
        }
        let history_text = std::fs::read_to_string(&history).unwrap_or_default();
        let _ = std::fs::remove_file(&history);
        self.executions += 1;
        *self.outcomes.entry(outcome(&e)).or_default() += 1;
        (e, history_text)
    }

    fn name(&mut self, seed: u64, scenario: u64, event: usize) -> String {
        format!(
            "chaos-{seed}-{scenario}-{event}-{}-{}",
            std::process::id(),
            self.seq + 1
        )
    }

    /// Collects the passwords of both secrets at AWSCURRENT and AWSPENDING.
    async fn collect_passwords(&mut self) {
        for key in ["blue", "green"] {
            let id = self.target.secret_of(key).to_string();
            let state = self.stack.secret_state(&id).await;
            self.passwords.insert(
                self.stack
                    .password_at(&id, AWSCURRENT)
                    .await
                    .expose()
                    .into(),
            );
            if state.pending.is_some() {
                self.passwords.insert(
                    self.stack
                        .password_at(&id, AWSPENDING)
                        .await
                        .expose()
                        .into(),
                );
            }
        }
    }

    /// Versions labelled AWSCURRENT and AWSPENDING of a secret.
    async fn label_counts(&self, secret: &str) -> (usize, usize) {
        let out = self
            .stack
            .secrets
            .describe_secret()
            .secret_id(secret)
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
        (count(AWSCURRENT), count(AWSPENDING))
    }

    /// The check after an event (or one run of it): settle, then the four
    /// invariants. `texts` are what the event's runs printed and recorded.
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
        // (1) the pointer's user logs in with its AWSCURRENT password
        if let Err(e) = self.stack.invariant(&self.target).await {
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
            let deployments = self.stack.primary_deployments(&self.target).await;
            windows.retain(|w| {
                w.deployments
                    .iter()
                    .any(|(s, id)| deployments.iter().any(|(s2, id2)| s == s2 && id == id2))
            });
        }
        // (3) labels
        for key in ["blue", "green"] {
            let id = self.target.secret_of(key).to_string();
            let (current, pending) = self.label_counts(&id).await;
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
        self.collect_passwords().await;
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
            Event::ExternalRotation { key } => {
                let active = self.stack.active_user(&t).await;
                let role = t.role_of(key).to_string();
                // Whether running tasks use this user (for the figures): its
                // queries over 500 ms. The window opens whatever this says:
                // a task between two slow queries looks idle.
                let before = harness.totals();
                tokio::time::sleep(Duration::from_millis(500)).await;
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
                    deployments: self.stack.primary_deployments(&t).await,
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
                let current = self.stack.secret_state(&secret).await.current;
                let new = self
                    .stack
                    .stage_pending(&secret, |v| v["password"] = json!(password.expose()))
                    .await;
                self.stack
                    .admin("postgres")
                    .await
                    .batch_execute(&format!(
                        "ALTER ROLE \"{role}\" PASSWORD '{}'",
                        password.scram_verifier()
                    ))
                    .await
                    .expect("ALTER ROLE as Secrets Manager's rotation would");
                self.stack
                    .secrets
                    .update_secret_version_stage()
                    .secret_id(&secret)
                    .version_stage(AWSCURRENT)
                    .move_to_version_id(&new)
                    .remove_from_version_id(&current)
                    .send()
                    .await
                    .expect("finishSecret: AWSCURRENT to the new version");
                self.stack
                    .secrets
                    .update_secret_version_stage()
                    .secret_id(&secret)
                    .version_stage(AWSPENDING)
                    .remove_from_version_id(&new)
                    .send()
                    .await
                    .expect("remove AWSPENDING from the new version");
                log.push(format!(
                    "{role} rotated externally ({}, {})",
                    if key == active { "active" } else { "inactive" },
                    if in_use {
                        "in use: its tasks fail until redeployed"
                    } else {
                        "no query seen in 500 ms"
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
                let input = match trigger {
                    Trigger::Hand => {
                        self.kind("start by hand");
                        match services {
                            Some(s) => {
                                self.kind("run limited to some services");
                                json!({"services": [s]})
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
                        let arn = self.stack.secret_arn(t.secret_of(key)).await;
                        rotation_succeeded_event(&arn)
                    }
                };
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

pub async fn command(args: &Args) -> bool {
    let scenarios = args.number("scenarios", 20);
    let seed = args.number("seed", 1);
    let only = args.text("only").map(|v| {
        v.parse::<u64>()
            .unwrap_or_else(|_| crate::usage("--only must be a scenario number"))
    });
    let max_seconds = args.number("max-seconds", 3600);
    let started = Instant::now();
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
    };
    let numbers: Vec<u64> = match only {
        Some(k) => vec![k],
        None => (1..=scenarios).collect(),
    };
    if args.text("list").is_some_and(|v| v != "0") {
        // The schedules alone, nothing run (`--list 1`).
        for &number in &numbers {
            println!("scenario {number} of seed {seed}:");
            for (i, e) in schedule(seed, number).iter().enumerate() {
                println!("  {}. {e}", i + 1);
            }
        }
        return true;
    }
    say(format!(
        "== chaos soak: {} scenario(s) of seed {seed}, 3–8 events each, against {} under load; invariants checked after every event",
        numbers.len(),
        target.parameter_name
    ));
    let mut run_count = 0u64;
    // (scenario, schedule, event, what broke, the scenario's runs)
    type Broken = (u64, Vec<Event>, usize, String, Vec<String>);
    let mut violation: Option<Broken> = None;
    let mut stopped_by_time = false;
    for &number in &numbers {
        if started.elapsed() > Duration::from_secs(max_seconds) {
            stopped_by_time = true;
            break;
        }
        let events = schedule(seed, number);
        soak.stack.seed(&target).await;
        let mut config = args.load_config(&target, target.services.clone());
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
        let mut mark = LoadMark {
            totals: Totals::default(),
            samples: BTreeSet::new(),
        };
        let mut windows: Vec<Window> = vec![];
        let first = soak
            .check(&harness, &mut mark, &mut windows, &[], false)
            .await;
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
        let totals = harness.stop().await;
        // What the load did after the last check (normally nothing).
        soak.queries += totals.queries - mark.totals.queries;
        run_count += 1;
        if let Some((at, what)) = broke_at {
            violation = Some((number, events, at, what, log));
            break;
        }
        say(format!(
            "  scenario {number}: {} events, {} s{}",
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
    let wall = started.elapsed().as_secs_f64();
    println!();
    println!("### Chaos soak, seed {seed}");
    println!();
    println!(
        "scenarios run: {run_count} of {}{}",
        numbers.len(),
        if stopped_by_time {
            format!(" (stopped at the {max_seconds} s bound)")
        } else {
            String::new()
        }
    );
    println!("events: {}", soak.events);
    println!("events by kind:");
    for (k, n) in &soak.kinds {
        println!("  {n:>5}  {k}");
    }
    println!("executions: {}", soak.executions);
    println!("executions by outcome:");
    for (k, n) in &soak.outcomes {
        println!("  {n:>5}  {k}");
    }
    println!("application queries: {}", soak.queries);
    println!(
        "failed application logins: {} (must be 0)",
        soak.failed_logins
    );
    println!(
        "failed logins of tasks holding a password Secrets Manager's own rotation changed under them (expected until their service is redeployed; not pgflip's): {}",
        soak.expected_failed_logins
    );
    println!("invariant violations: {}", u64::from(violation.is_some()));
    println!("wall time: {wall:.0} s");
    match violation {
        None => {
            println!("OK: no invariant broke after any event.");
            true
        }
        Some((number, events, at, what, log)) => {
            println!();
            println!("VIOLATION: seed {seed}, scenario {number}, event {at}");
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
            println!("replay: target/debug/pgflip-bench chaos --seed {seed} --only {number}");
            false
        }
    }
}
