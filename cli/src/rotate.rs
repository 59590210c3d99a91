//! Starting an execution and following it: on AWS `StartExecution`, then the
//! history every 2 s; on the local stack the local runner (the same one
//! `scripts/rotate-local` uses), its progress lines shown live.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use pgflip_core::config::TargetConfig;
use pgflip_core::ports::ExecutionRecord;
use serde_json::{json, Value};

use crate::context::{name_of, Context};

/// What an execution is asked to do, besides its target.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    /// `services`: names, or `auto` (`None`: the target's).
    pub services: Option<Vec<String>>,
    /// `unlistedConsumers`: `error` or `warn`.
    pub unlisted_consumers: Option<String>,
    pub reason: Option<String>,
}

/// The input of an execution for `target`.
fn input(t: &TargetConfig, o: &Options) -> Value {
    let mut i = json!({"reason": o.reason.as_deref().unwrap_or("pgflip rotate")});
    if let Some(name) = &t.name {
        i["target"] = json!(name);
    }
    if o.dry_run {
        i["dryRun"] = json!(true);
    }
    match o.services.as_deref() {
        Some([one]) if one == "auto" => i["services"] = json!("auto"),
        Some(list) => i["services"] = json!(list),
        None => {}
    }
    if let Some(u) = &o.unlisted_consumers {
        i["unlistedConsumers"] = json!(u);
    }
    i
}

/// Starts an execution for `target` and waits for its end (local runs
/// always end before this returns; on AWS, without `follow`, it returns
/// the running execution at once). With `follow`, each state is printed to
/// stderr as it is entered.
pub async fn start(
    ctx: &Context,
    t: &TargetConfig,
    options: &Options,
    follow: bool,
) -> Result<ExecutionRecord> {
    let input = input(t, options);
    match &ctx.local {
        Some(local) => {
            let dir = local.repo.join("scripts/sfn");
            let started = pgflip_core::steps::now_ms();
            let mut cmd = Command::new("node");
            cmd.current_dir(&dir)
                .args(["--require", "./polyfill.cjs", "run.mjs", "--input"])
                .arg(input.to_string())
                .stdout(Stdio::piped())
                .stderr(if follow {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start the local runner in {}", dir.display()))?;
            if follow {
                let stderr = child.stderr.take().expect("piped");
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    std::io::stderr().flush().ok();
                }
            }
            let out = child.wait_with_output().context("the local runner")?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let Some(summary) = stdout
                .lines()
                .last()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
            else {
                if out.status.code() == Some(130) {
                    bail!("interrupted: the local execution was recorded as aborted; the next rotation (or a redrive) resumes its work");
                }
                bail!(
                    "the local runner printed no summary (exit status {})",
                    out.status
                );
            };
            let text = |k: &str| summary[k].as_str().map(str::to_string);
            // The execution's own duration (as `history` shows it), not the
            // runner's start-up around it.
            let stop = pgflip_core::steps::now_ms();
            let start = summary["durationMs"].as_i64().map_or(started, |d| stop - d);
            Ok(ExecutionRecord {
                execution_arn: text("executionArn").unwrap_or_default(),
                name: text("name").unwrap_or_default(),
                status: text("status").unwrap_or_default(),
                start_ms: start,
                stop_ms: Some(stop),
                input: Some(input.to_string()),
                output: (!summary["output"].is_null()).then(|| summary["output"].to_string()),
                error: text("error"),
                cause: text("cause"),
            })
        }
        None => {
            let machine = ctx.state_machine_arn().await?;
            let arn = ctx
                .sfn_client
                .start_execution()
                .state_machine_arn(&machine)
                .input(input.to_string())
                .send()
                .await
                .context("states:StartExecution")?
                .execution_arn;
            eprintln!("started {arn} (target {})", name_of(t));
            let mut seen = 0usize;
            loop {
                if follow {
                    let history = ctx
                        .sfn_client
                        .get_execution_history()
                        .execution_arn(&arn)
                        .into_paginator()
                        .items()
                        .send()
                        .collect::<Result<Vec<_>, _>>()
                        .await
                        .context("states:GetExecutionHistory")?;
                    for e in history.iter().skip(seen) {
                        if let Some(d) = &e.state_entered_event_details {
                            eprintln!("  -> {}", d.name);
                        }
                    }
                    seen = history.len();
                }
                let d = ctx
                    .sfn_client
                    .describe_execution()
                    .execution_arn(&arn)
                    .send()
                    .await
                    .context("states:DescribeExecution")?;
                let record = ExecutionRecord {
                    execution_arn: arn.clone(),
                    name: d.name.clone().unwrap_or_default(),
                    status: d.status.as_str().to_string(),
                    start_ms: d.start_date.to_millis().unwrap_or_default(),
                    stop_ms: d.stop_date.and_then(|t| t.to_millis().ok()),
                    input: d.input.clone(),
                    output: d.output.clone(),
                    error: d.error.clone(),
                    cause: d.cause.clone(),
                };
                if !follow || record.status != "RUNNING" {
                    return Ok(record);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What a target looks like, before and after: the active user and when
/// each user's password was set.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub active_user: String,
    /// (user, its `AWSCURRENT` version: id and creation time)
    pub passwords: Vec<(String, Option<pgflip_core::ports::CurrentVersion>)>,
}

pub async fn snapshot(ctx: &Context, t: &TargetConfig) -> Result<Snapshot> {
    let dates = pgflip_core::steps::password_dates(t, &ctx.parameters, ctx.store(t)).await?;
    Ok(Snapshot {
        active_user: dates
            .active
            .unwrap_or_else(|| "(AWSCURRENT's role)".to_string()),
        passwords: dates.passwords,
    })
}

/// The before/after summary `scripts/rotate-local` prints too.
pub fn summary(record: &ExecutionRecord, before: &Snapshot, after: &Snapshot) -> String {
    let mut out = String::new();
    let duration = record
        .stop_ms
        .map(|s| format!(" in {:.1} s", (s - record.start_ms) as f64 / 1000.0))
        .unwrap_or_default();
    out.push_str(&format!("  rotation         {}\n", record.name));
    out.push_str(&format!(
        "  outcome          {}{duration}\n",
        crate::context::outcome_of(record)
    ));
    out.push_str(&format!(
        "  active user      {} -> {}\n",
        before.active_user, after.active_user
    ));
    let id = |v: &Option<pgflip_core::ports::CurrentVersion>| {
        v.as_ref().map_or_else(
            || "-".to_string(),
            |v| v.version_id.chars().take(8).collect(),
        )
    };
    for ((user, b), (_, a)) in before.passwords.iter().zip(&after.passwords) {
        let changed = b.as_ref().map(|v| &v.version_id) != a.as_ref().map(|v| &v.version_id);
        let note = if changed {
            format!(
                "rotated, set {}",
                crate::status::when(a.as_ref().and_then(|v| v.created_ms))
            )
        } else {
            "unchanged".to_string()
        };
        out.push_str(&format!(
            "  {user:<16} AWSCURRENT {} -> {} ({note})\n",
            id(b),
            id(a)
        ));
    }
    if let (Some(error), cause) = (&record.error, &record.cause) {
        out.push_str(&format!(
            "  error            {error}: {}\n",
            cause.as_deref().unwrap_or("")
        ));
    }
    if let Some(plan) = record
        .output
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
    {
        if let Some(services) = plan["services"].as_array() {
            let names: Vec<&str> = services.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!("  services         {}\n", names.join(", ")));
        }
    }
    out
}
