//! `pgflip status`: per target, the active user, each user's password age,
//! the last execution, a running one, the schedule's next run and (with
//! `--dry-run`) what a rotation would do now.

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgflip_core::config::TargetConfig;
use pgflip_core::ports::ExecutionRecord;
use serde::Serialize;
use serde_json::Value;

use crate::context::{name_of, outcome_of, target_of, Context};

const DAY_MS: f64 = 86_400_000.0;

/// RFC 3339 in UTC, or `-`.
pub fn when(ms: Option<i64>) -> String {
    ms.map(|ms| {
        aws_smithy_types::DateTime::from_millis(ms)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default()
    })
    .unwrap_or_else(|| "-".into())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    pub user: String,
    pub active: bool,
    /// Days since its `AWSCURRENT` version was created.
    pub password_age_days: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pub name: String,
    pub outcome: String,
    pub started: String,
    pub duration_seconds: Option<f64>,
    pub execution_arn: String,
}

impl ExecutionSummary {
    pub fn of(r: &ExecutionRecord) -> Self {
        Self {
            name: r.name.clone(),
            outcome: outcome_of(r),
            started: when(Some(r.start_ms)),
            duration_seconds: r.stop_ms.map(|s| (s - r.start_ms) as f64 / 1000.0),
            execution_arn: r.execution_arn.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    pub name: String,
    pub expression: String,
    pub state: String,
    pub next_run: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub target: String,
    pub active_user: String,
    /// When the pointer last changed.
    pub flipped: String,
    pub users: Vec<UserStatus>,
    pub last_execution: Option<ExecutionSummary>,
    pub running: Option<ExecutionSummary>,
    pub schedule: Option<ScheduleStatus>,
    /// What a dry run started now said (with `--dry-run`).
    pub dry_run: Option<String>,
    /// Why the target could not be read (a bad entry of the targets
    /// document, a missing parameter or secret): the other fields are empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetStatus {
    fn failed(target: String, error: String) -> Self {
        Self {
            target,
            active_user: "-".into(),
            flipped: "-".into(),
            users: vec![],
            last_execution: None,
            running: None,
            schedule: None,
            dry_run: None,
            error: Some(error),
        }
    }
}

/// AWS numbers the days of the week 1 (Sunday) to 7, cron 0 to 6: each
/// number of the field one less (a `#n` occurrence stays as it is).
fn aws_day_of_week(field: &str) -> Option<String> {
    let mut out = String::new();
    let mut number = String::new();
    let mut after_hash = false;
    for c in field.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if !number.is_empty() {
            let n: u32 = number.parse().ok()?;
            let n = if after_hash { n } else { n.checked_sub(1)? };
            out.push_str(&n.to_string());
            number.clear();
        }
        after_hash = c == '#';
        if c != '\0' {
            out.push(c);
        }
    }
    Some(out)
}

/// The next run of an EventBridge Scheduler expression after `now_ms`:
/// `rate(N unit)` counted from the schedule's start, `cron(…)` with its six
/// fields (minutes, hours, day of month, month, day of week with 1 =
/// Sunday, year) when its time zone is UTC. `None` for `at(…)`, a cron in
/// another time zone, a year other than the next run's, or an expression it
/// cannot read.
pub fn next_run(
    expression: &str,
    timezone: Option<&str>,
    created_ms: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    if let Some(rate) = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (n, unit) = rate.trim().split_once(' ')?;
        let n: i64 = n.parse().ok()?;
        let unit_ms = match unit.trim().trim_end_matches('s') {
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            _ => return None,
        };
        let every = n.checked_mul(unit_ms).filter(|e| *e > 0)?;
        let start = created_ms?;
        let k = ((now_ms - start) / every).max(0) + 1;
        return Some(start + k * every);
    }
    let cron = expression.strip_prefix("cron(")?.strip_suffix(')')?;
    if timezone.is_some_and(|tz| !tz.is_empty() && tz != "UTC" && tz != "Etc/UTC") {
        return None;
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 6 {
        return None;
    }
    let dow = aws_day_of_week(fields[4])?;
    let five = [fields[0], fields[1], fields[2], fields[3], dow.as_str()]
        .iter()
        .map(|f| if *f == "?" { "*" } else { f })
        .collect::<Vec<_>>()
        .join(" ");
    let pattern = croner::Cron::new(&five).parse().ok()?;
    let from = chrono_like(now_ms)?;
    let next = pattern.find_next_occurrence(&from, false).ok()?;
    if fields[5] != "*" {
        use chrono::Datelike;
        let year = next.year().to_string();
        if !fields[5].split(',').any(|y| y == year) {
            return None;
        }
    }
    Some(next.timestamp_millis())
}

fn chrono_like(ms: i64) -> Option<croner_time::DateTime<croner_time::Utc>> {
    croner_time::DateTime::from_timestamp_millis(ms)
}

/// croner works on chrono's types.
mod croner_time {
    pub use chrono::{DateTime, Utc};
}

async fn schedule(ctx: &Context, last_start: Option<i64>) -> Option<ScheduleStatus> {
    // The template names it like the state machine (on the local stack:
    // one a test or an operator created on moto under that name).
    let name = if ctx.local.is_some() {
        crate::context::LOCAL_MACHINE.to_string()
    } else {
        format!("{}-rotation", ctx.stack)
    };
    let s = ctx.scheduler.get_schedule().name(&name).send().await.ok()?;
    let expression = s.schedule_expression.unwrap_or_default();
    let state = s.state.map(|s| s.as_str().to_string()).unwrap_or_default();
    let created = s
        .start_date
        .or(s.creation_date)
        .and_then(|d| d.to_millis().ok())
        .or(last_start);
    let timezone = s.schedule_expression_timezone.clone();
    let next = (state == "ENABLED")
        .then(|| {
            next_run(
                &expression,
                timezone.as_deref(),
                created,
                pgflip_core::steps::now_ms(),
            )
        })
        .flatten();
    // A cron in another time zone: shown with it (its next run is not
    // computed here).
    let expression = match timezone.as_deref() {
        Some(tz) if !tz.is_empty() && tz != "UTC" => format!("{expression} {tz}"),
        _ => expression,
    };
    Some(ScheduleStatus {
        name,
        expression,
        state,
        next_run: next.map(|n| when(Some(n))),
    })
}

/// What a dry run's execution says a rotation would do now.
pub fn dry_run_verdict(r: &ExecutionRecord) -> String {
    if r.status != "SUCCEEDED" {
        return format!(
            "would stop: {}: {}",
            r.error.as_deref().unwrap_or(&r.status),
            r.cause.as_deref().unwrap_or("")
        );
    }
    let plan: Value = r
        .output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    let services: Vec<&str> = plan["services"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let s = |k: &str| plan[k].as_str().unwrap_or("?").to_string();
    if let Some(in_use) = plan["inUse"].as_str() {
        return format!("would wait (InactiveUserInUse): {in_use}");
    }
    match plan["mode"].as_str() {
        Some("rotate") => format!(
            "would rotate {} (then flip to it), redeploy {}",
            s("targetUser"),
            services.join(", ")
        ),
        Some("flip") => format!(
            "would verify {}'s new password and flip to it, redeploy {}",
            s("targetUser"),
            services.join(", ")
        ),
        Some(mode) => format!(
            "would finish an earlier rotation (mode {mode}): redeploy or wait for {}",
            services.join(", ")
        ),
        None => "would rotate".into(),
    }
}

/// One target's status.
async fn one(
    ctx: &Context,
    t: &TargetConfig,
    executions: &[ExecutionRecord],
    schedule: Option<&ScheduleStatus>,
    dry_run: bool,
) -> Result<TargetStatus> {
    let now = pgflip_core::steps::now_ms();
    let name = name_of(t);
    // No secret value is read: the parameter and the versions' dates.
    let dates = pgflip_core::steps::password_dates(t, &ctx.parameters, ctx.store(t)).await?;
    let active = dates
        .active
        .clone()
        .unwrap_or_else(|| "(AWSCURRENT's role)".to_string());
    let mut users = Vec::new();
    for (user, version) in &dates.passwords {
        let created = version.as_ref().and_then(|v| v.created_ms);
        users.push(UserStatus {
            user: user.clone(),
            active: dates.active.as_deref() == Some(user.as_str()) || user == "AWSCURRENT",
            password_age_days: created.map(|c| ((now - c) as f64 / DAY_MS * 10.0).round() / 10.0),
        });
    }
    let mine: Vec<&ExecutionRecord> = executions.iter().filter(|e| target_of(e) == name).collect();
    let dry_run = if dry_run {
        Some(dry_run_verdict(
            &crate::rotate::start(
                ctx,
                t,
                &crate::rotate::Options {
                    dry_run: true,
                    reason: Some("pgflip status --dry-run".into()),
                    ..Default::default()
                },
                false,
            )
            .await?,
        ))
    } else {
        None
    };
    Ok(TargetStatus {
        target: name,
        active_user: active,
        flipped: when(dates.moved_ms),
        users,
        last_execution: mine
            .iter()
            .find(|e| e.status != "RUNNING")
            .map(|e| ExecutionSummary::of(e)),
        running: mine
            .iter()
            .find(|e| e.status == "RUNNING")
            .map(|e| ExecutionSummary::of(e)),
        schedule: schedule.map(|s| ScheduleStatus {
            name: s.name.clone(),
            expression: s.expression.clone(),
            state: s.state.clone(),
            next_run: s.next_run.clone(),
        }),
        dry_run,
        error: None,
    })
}

/// Each target's status; a target that cannot be read gets a row that says
/// why, and the others are still shown.
pub async fn gather(
    ctx: &Context,
    targets: &[(String, Result<TargetConfig, String>)],
    dry_run: bool,
) -> Result<Vec<TargetStatus>> {
    let executions = ctx.executions(200).await?;
    let last_start = executions.first().map(|e| e.start_ms);
    let schedule_status = schedule(ctx, last_start).await;
    let mut out = Vec::new();
    for (name, config) in targets {
        let status = match config {
            // The schedule rotates the environment's target (or sweeps).
            Ok(t) => {
                let schedule = schedule_status.as_ref().filter(|_| t.name.is_none());
                match one(ctx, t, &executions, schedule, dry_run).await {
                    Ok(s) => s,
                    Err(e) => TargetStatus::failed(name.clone(), format!("{e:#}")),
                }
            }
            Err(e) => TargetStatus::failed(name.clone(), e.clone()),
        };
        out.push(status);
    }
    Ok(out)
}

pub fn table(statuses: &[TargetStatus]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "target",
        "active",
        "password age (days)",
        "last execution",
        "running",
        "next scheduled run",
    ]);
    for s in statuses {
        let ages = s
            .users
            .iter()
            .map(|u| {
                format!(
                    "{}{}: {}",
                    u.user,
                    if u.active { "*" } else { "" },
                    u.password_age_days
                        .map_or_else(|| "-".into(), |d| format!("{d:.1}"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let last = s.last_execution.as_ref().map_or_else(
            || "-".into(),
            |e| format!("{} ({})\n{}", e.outcome, e.started, e.name),
        );
        let running = s
            .running
            .as_ref()
            .map_or_else(|| "-".into(), |e| format!("{} since {}", e.name, e.started));
        let next = s.schedule.as_ref().map_or_else(
            || "-".into(),
            |sc| match &sc.next_run {
                Some(n) => format!("{n}\n{}", sc.expression),
                None => format!("{} ({})", sc.expression, sc.state.to_lowercase()),
            },
        );
        if s.error.is_some() {
            t.add_row(vec![
                s.target.clone(),
                "?".into(),
                "(cannot read: see below)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        t.add_row(vec![
            s.target.clone(),
            s.active_user.clone(),
            ages,
            last,
            running,
            next,
        ]);
    }
    let mut out = t.to_string();
    for s in statuses {
        if let Some(error) = &s.error {
            out.push_str(&format!("\n{}: {error}", s.target));
        }
    }
    for s in statuses.iter().filter(|s| s.dry_run.is_some()) {
        out.push_str(&format!(
            "\n{}: {}",
            s.target,
            s.dry_run.as_deref().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn rate_schedules_count_from_their_start_and_cron_ones_run_in_utc() {
        let start = 1_700_000_000_000; // 2023-11-14T22:13:20Z, a Tuesday
        let utc = Some("UTC");
        assert_eq!(
            next_run("rate(1 hour)", utc, Some(start), start + 90 * 60_000),
            Some(start + 2 * HOUR)
        );
        assert_eq!(
            next_run("rate(30 days)", Some("Europe/Paris"), Some(start), start),
            Some(start + 30 * 24 * HOUR)
        );
        assert_eq!(
            next_run("rate(5 minutes)", utc, Some(start), start - HOUR),
            Some(start + 300_000)
        );
        assert_eq!(next_run("rate(1 fortnight)", utc, Some(start), start), None);
        assert_eq!(next_run("rate(2 days)", utc, None, start), None);
        // 03:00 UTC on Mondays: the 20th, whether Monday is spelt MON or 2
        // (AWS counts Sunday as 1), and in a year given explicitly.
        for monday in [
            "cron(0 3 ? * MON *)",
            "cron(0 3 ? * 2 *)",
            "cron(0 3 ? * 2-2 2023)",
        ] {
            let next = next_run(monday, utc, None, start).unwrap();
            assert_eq!(when(Some(next)), "2023-11-20T03:00:00Z", "{monday}");
        }
        let sunday = next_run("cron(0 3 ? * 1 *)", None, None, start).unwrap();
        assert_eq!(when(Some(sunday)), "2023-11-19T03:00:00Z");
        assert_eq!(aws_day_of_week("6#3").as_deref(), Some("5#3"));
        // A year that has passed, another time zone, at(), nonsense: unknown.
        assert_eq!(next_run("cron(0 3 1 * ? 2020)", utc, None, start), None);
        assert_eq!(
            next_run("cron(0 3 ? * 2 *)", Some("America/New_York"), None, start),
            None
        );
        assert_eq!(next_run("at(2030-01-01T00:00:00)", utc, None, start), None);
        assert_eq!(next_run("cron(bad)", utc, None, start), None);
    }

    fn record(status: &str, output: Option<serde_json::Value>) -> ExecutionRecord {
        ExecutionRecord {
            execution_arn: "arn:aws:states:eu-west-1:1:execution:x-rotation:e".into(),
            name: "e".into(),
            status: status.into(),
            start_ms: 0,
            stop_ms: Some(1500),
            input: Some(r#"{"dryRun": true, "target": "orders"}"#.into()),
            output: output.map(|o| o.to_string()),
            error: (status == "FAILED").then(|| "PrivilegeDrift".into()),
            cause: (status == "FAILED").then(|| "only \"blue\": SELECT on table audit".into()),
        }
    }

    #[test]
    fn a_dry_run_says_what_a_rotation_would_do_or_why_it_would_stop() {
        let plan = serde_json::json!({"mode": "rotate", "targetUser": "green", "services": ["web", "worker"]});
        assert_eq!(
            dry_run_verdict(&record("SUCCEEDED", Some(plan))),
            "would rotate green (then flip to it), redeploy web, worker"
        );
        let busy = serde_json::json!({"mode": "rotate", "targetUser": "green", "inUse": "green is still in use: 1 live session(s) on db:5432/app (old tasks still draining)"});
        assert_eq!(
            dry_run_verdict(&record("SUCCEEDED", Some(busy))),
            "would wait (InactiveUserInUse): green is still in use: 1 live session(s) on db:5432/app (old tasks still draining)"
        );
        assert_eq!(
            dry_run_verdict(&record("FAILED", None)),
            "would stop: PrivilegeDrift: only \"blue\": SELECT on table audit"
        );
        let r = record("SUCCEEDED", None);
        assert_eq!(crate::context::outcome_of(&r), "DryRun");
        assert_eq!(crate::context::target_of(&r), "orders");
        assert_eq!(
            crate::context::outcome_of(&record("FAILED", None)),
            "PrivilegeDrift"
        );
    }
}
