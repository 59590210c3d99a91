//! The `pgflip` command line (issue 16) against the local stack: rotate and
//! follow, status (table and JSON), history, a dry run, a bad target, and
//! no password in anything it prints.

use super::*;

/// Runs the built `pgflip` binary (scripts/test builds every binary of the
/// workspace first) with the stack's environment: (exit code, stdout, stderr).
fn pgflip(args: &[&str]) -> (i32, String, String) {
    pgflip_with(args, &[])
}

/// The same, without the environment variables named in `unset`.
fn pgflip_with(args: &[&str], unset: &[&str]) -> (i32, String, String) {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| pgflip_tests::repo_root().join("target"));
    let bin = target_dir.join("debug/pgflip");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p pgflip-cli",
        bin.display()
    );
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(args).current_dir(std::env::temp_dir());
    for var in unset {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run pgflip");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_command_line_rotates_follows_and_reports_without_a_password() {
    let c = case().await;
    let mut printed = String::new();

    // A dry run changes nothing and says what a rotation would do.
    let (code, out, err) = pgflip(&["rotate", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("would rotate green (then flip to it), redeploy web, worker"),
        "{out}"
    );
    assert_eq!(c.after().await, c.before, "a dry run changed something");
    printed += &(out + &err);

    // Rotate, following the states live (on stderr).
    let (code, out, err) = pgflip(&["rotate", "--follow"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("-> GenerateAndSetPassword") && err.contains("-> RolloutDone"),
        "{err}"
    );
    assert!(out.contains("active user      blue -> green"), "{out}");
    assert!(out.contains("(rotated, set "), "{out}");
    assert!(out.contains("(unchanged)"), "{out}");
    let name = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("rotation"))
        .map(|n| n.trim().to_string())
        .expect("the rotation's name");
    assert_eq!(c.assert_invariant().await, "green");
    printed += &(out + &err);

    // Status as JSON: the active user, both password ages, that execution,
    // and the schedule (the template names it like the state machine).
    let root = pgflip_tests::repo_root();
    let made = std::process::Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("tests/fixtures/schedule.py"))
        .args(["pgflip-rotation", "rate(30 days)"])
        .status()
        .expect("run tests/fixtures/schedule.py");
    assert!(made.success());
    let (code, out, err) = pgflip(&["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let status: Value = serde_json::from_str(&out).expect("status --json is JSON");
    let s = &status[0];
    assert_eq!(s["target"], "default");
    assert_eq!(s["activeUser"], "green");
    assert_eq!(s["users"][1]["user"], "green");
    assert_eq!(s["users"][1]["active"], true);
    assert!(s["users"][0]["passwordAgeDays"].is_number(), "{s}");
    assert_eq!(s["lastExecution"]["name"], name.as_str());
    assert_eq!(s["lastExecution"]["outcome"], "Succeeded");
    assert!(s["running"].is_null());
    assert_eq!(s["schedule"]["expression"], "rate(30 days)");
    assert_eq!(s["schedule"]["state"], "ENABLED");
    let next = s["schedule"]["nextRun"].as_str().expect("a next run");
    assert!(next > "2026" && next.ends_with('Z'), "{next}");
    printed += &out;

    // The table, and the history with the dry run and the rotation.
    let (code, out, _) = pgflip(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("green*") && out.contains("Succeeded"), "{out}");
    printed += &out;
    let (code, out, err) = pgflip(&["history", "--json", "--limit", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["outcome"], "Succeeded");
    assert_eq!(rows[1]["outcome"], "DryRun");
    printed += &out;

    // Input the command line passes on: services auto on a target whose
    // services take no credentials is refused; a failed execution exits 3.
    let (code, out, err) = pgflip(&["rotate", "--dry-run", "--services", "auto"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("error            ConfigurationError"), "{out}");
    printed += &(out + &err);

    // A target that does not exist: a clear error, nothing started.
    let (code, out, err) = pgflip(&["status", "--target", "no-such-target"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no target named \"no-such-target\"") && out.is_empty(),
        "{out}{err}"
    );

    let rotated = [
        ("blue", AWSCURRENT),
        ("green", AWSCURRENT),
        ("green", "AWSPREVIOUS"),
    ];
    assert_no_password_in(&c, &printed, &rotated).await;
}

/// The AWS path (no local stack in the environment: `--stack` and
/// `--env-file`), against moto's Step Functions, which records executions
/// but does not run them: `rotate` starts one and reports it running,
/// `history` and `status` list it through ListExecutions and
/// DescribeExecution. The execution is stopped at the end, or the
/// concurrency guard would see it in the tests after this one.
#[tokio::test]
async fn the_command_line_starts_and_lists_executions_on_aws() {
    let c = case().await;
    let env_file = format!(
        "{}/lambda.env",
        std::env::var("PGFLIP_STACK_DIR").expect("PGFLIP_STACK_DIR")
    );
    let aws = ["--stack", "pgflip", "--env-file", env_file.as_str()];
    let local = ["PGFLIP_STACK_DIR", "PGFLIP_LAMBDA_ENDPOINT"];
    // The state machine exists once a local run registered it.
    let (code, out, err) = pgflip(&["rotate", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = pgflip_with(&[&aws[..], &["rotate"]].concat(), &local);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("started arn:aws:states:"), "{err}");
    assert!(out.contains("outcome          Running"), "{out}");
    let arn = err
        .split_whitespace()
        .find(|w| w.starts_with("arn:aws:states:"))
        .unwrap()
        .to_string();

    let (code, out, err) = pgflip_with(&[&aws[..], &["history", "--json"]].concat(), &local);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["executionArn"], arn.as_str());
    assert_eq!(rows[0]["outcome"], "Running");
    let (code, out, err) = pgflip_with(&[&aws[..], &["status", "--json"]].concat(), &local);
    assert_eq!(code, 0, "{out}{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["running"]["executionArn"], arn.as_str());

    // Without the local stack and without --stack: told what to give.
    let (code, _, err) = pgflip_with(&["status"], &local);
    assert_eq!(code, 1);
    assert!(err.contains("--stack"), "{err}");

    let aws_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sfn::Client::new(&aws_config)
        .stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("stop the execution moto keeps running");
    assert_eq!(
        c.after().await,
        c.before,
        "starting on moto changed something"
    );
}
