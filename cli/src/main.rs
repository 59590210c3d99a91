//! pgflip: the operators' command line. Against AWS with the standard
//! credential chain (`--stack NAME`, the Lambdas' environment with
//! `--env-file`), or against the local stack after `source
//! $STACK_DIR/stack.env`. It reads names, dates and execution records:
//! never a password.

mod context;
mod rotate;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use context::{name_of, outcome_of, target_of, Context};

#[derive(Parser)]
#[command(
    name = "pgflip",
    version,
    about = "See every target's state, rotate, and read the history of pgflip rotations"
)]
struct Cli {
    /// The stack's name: its state machine is <stack>-rotation, its schedule
    /// <stack>-rotation. Not needed on the local stack.
    #[arg(long, env = "PGFLIP_STACK", global = true)]
    stack: Option<String>,
    /// The Lambdas' environment (the targets): KEY=VALUE lines, or the JSON
    /// object `aws lambda get-function-configuration --function-name
    /// <select-user> --query Environment.Variables` prints. Default: the
    /// local stack's lambda.env, else this process's environment.
    #[arg(long, global = true, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per target: the active user, each user's password age, the last
    /// execution, a running one, the schedule's next run. Exit status 1 when
    /// a target could not be read (its row says why).
    Status {
        /// One target of the targets document (default: the environment's).
        #[arg(long, conflicts_with = "all")]
        target: Option<String>,
        /// Every target.
        #[arg(long)]
        all: bool,
        /// Also start a dry run per target and say what a rotation would do.
        #[arg(long)]
        dry_run: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a rotation (or a dry run) and print what changed. Exit status:
    /// 0 succeeded (or still running), 3 the execution failed, 1 an error
    /// of this command, 2 a usage error.
    Rotate {
        #[arg(long)]
        target: Option<String>,
        /// Preflight only: change nothing, say what would happen.
        #[arg(long)]
        dry_run: bool,
        /// Redeploy these services (comma-separated) instead of the
        /// target's, or `auto`: every consumer found in the cluster.
        #[arg(long, value_delimiter = ',')]
        services: Option<Vec<String>>,
        /// A consumer service missing from the services: stop (`error`, the
        /// default) or only warn (a deliberate partial run).
        #[arg(long, value_parser = ["error", "warn"])]
        unlisted_consumers: Option<String>,
        /// Kept in the execution's plan and history.
        #[arg(long)]
        reason: Option<String>,
        /// Show each state as it is entered, and wait for the end.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// The last executions, with outcome and duration.
    History {
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context::new(cli.stack, cli.env_file).await?;
    match cli.command {
        Command::Status {
            target,
            all,
            dry_run,
            json,
        } => {
            let targets = if all {
                ctx.all_targets().await?
            } else {
                let t = ctx.target(target.as_deref()).await?;
                vec![(name_of(&t), Ok(t))]
            };
            let statuses = status::gather(&ctx, &targets, dry_run).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                println!("{}", status::table(&statuses));
            }
            // A target that could not be read is an error for scripts too.
            Ok(if statuses.iter().any(|s| s.error.is_some()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Rotate {
            target,
            dry_run,
            services,
            unlisted_consumers,
            reason,
            follow,
            json,
        } => {
            let t = ctx.target(target.as_deref()).await?;
            let before = rotate::snapshot(&ctx, &t).await?;
            let options = rotate::Options {
                dry_run,
                services,
                unlisted_consumers,
                reason,
            };
            let record = rotate::start(&ctx, &t, &options, follow || ctx.local.is_some()).await?;
            let after = rotate::snapshot(&ctx, &t).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print!("{}", rotate::summary(&record, &before, &after));
                if dry_run && record.status != "RUNNING" {
                    println!("  dry run          {}", status::dry_run_verdict(&record));
                }
                if record.status == "RUNNING" {
                    println!(
                        "  (still running: pgflip status --target {} to see how it ends)",
                        name_of(&t)
                    );
                }
            }
            Ok(match record.status.as_str() {
                "SUCCEEDED" | "RUNNING" => ExitCode::SUCCESS,
                _ => ExitCode::from(3),
            })
        }
        Command::History {
            target,
            limit,
            json,
        } => {
            let want = match &target {
                Some(name) => Some(name_of(&ctx.target(Some(name)).await?)),
                None => None,
            };
            let records: Vec<_> = ctx
                .executions(1000)
                .await?
                .into_iter()
                .filter(|r| want.as_ref().is_none_or(|w| target_of(r) == *w))
                .take(limit)
                .collect();
            if json {
                let rows: Vec<_> = records
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(status::ExecutionSummary::of(r)).unwrap();
                        v["target"] = target_of(r).into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let mut t = Table::new();
                t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
                    "started",
                    "target",
                    "outcome",
                    "duration",
                    "execution",
                ]);
                for r in &records {
                    t.add_row(vec![
                        status::when(Some(r.start_ms)),
                        target_of(r),
                        outcome_of(r),
                        r.stop_ms.map_or_else(
                            || "-".into(),
                            |s| format!("{:.1} s", (s - r.start_ms) as f64 / 1000.0),
                        ),
                        r.name.clone(),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgflip: {e:#}");
            ExitCode::FAILURE
        }
    }
}
