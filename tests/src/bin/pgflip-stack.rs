//! Helper for scripts/rotate-local: seed the local target, snapshot it, and
//! check and report a rotation. Reads the stack's endpoints from the
//! environment (`$STACK_DIR/stack.env`). Prints identifiers, never a password.
//!
//!   pgflip-stack seed
//!   pgflip-stack snapshot                       (JSON on stdout)
//!   pgflip-stack report BEFORE AFTER EXECUTION  (JSON files; exit 1 if a check fails)
//!   pgflip-stack invariant                      (exit 1 unless the active user logs in)
//!
//! With `--alternating` first, the same for the alternating-secret target
//! (`Target::local_alternating`, a target of the targets document).

use pgflip_core::domain::AWSCURRENT;
use pgflip_tests::{Snapshot, Stack, Target};
use serde_json::Value;

fn read<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let stack = Stack::from_env().await;
    let target = if args.first().map(String::as_str) == Some("--alternating") {
        args.remove(0);
        Target::local_alternating()
    } else {
        Target::local()
    };
    match args.first().map(String::as_str) {
        Some("seed") => {
            stack.seed(&target).await;
            if target.alternating.is_some() {
                stack.register_target(&target).await;
            }
            eprintln!(
                "== seeded: roles {} and {} (members of {}), database {}, parameter {} = blue, secrets {} and {}, cluster {} with services {}",
                target.blue_role,
                target.green_role,
                target.owner_role,
                target.dbname,
                target.parameter_name,
                target.blue_secret,
                target.green_secret,
                target.cluster,
                target.services.join(", ")
            );
        }
        Some("snapshot") => {
            let snapshot = stack.snapshot(&target).await;
            println!("{}", serde_json::to_string(&snapshot).unwrap());
        }
        Some("invariant") => match stack.invariant(&target).await {
            Ok(user) => eprintln!("invariant holds: {user} logs in with its AWSCURRENT password"),
            Err(e) => {
                eprintln!("INVARIANT BROKEN: {e}");
                std::process::exit(1);
            }
        },
        Some("report") if args.len() == 4 => {
            let before: Snapshot = read(&args[1]);
            let after: Snapshot = read(&args[2]);
            let execution: Value = read(&args[3]);
            let ok = if target.alternating.is_some() {
                report_alternating(&stack, &target, &before, &after, &execution).await
            } else {
                report(&stack, &target, &before, &after, &execution).await
            };
            if !ok {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: pgflip-stack [--alternating] seed | snapshot | invariant | report BEFORE AFTER EXECUTION"
            );
            std::process::exit(2);
        }
    }
}

/// The first lines of a report: the execution, its status and cost.
fn print_header(execution: &Value) {
    println!();
    println!("  rotation {}", execution["name"].as_str().unwrap_or("?"));
    println!(
        "  status           {} ({} state transitions, {} ms)",
        execution["status"].as_str().unwrap_or("?"),
        execution["transitions"],
        execution["durationMs"]
    );
}

/// The report's checks, printed as they are made.
struct Checks {
    ok: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Self { ok: true }
    }
}

impl Checks {
    fn check(&mut self, good: bool, what: String) {
        println!("  [{}] {what}", if good { "ok" } else { "FAILED" });
        self.ok &= good;
    }
}

/// Whether every service has another PRIMARY deployment after than before.
fn all_redeployed(before: &Snapshot, after: &Snapshot) -> bool {
    before
        .deployments
        .iter()
        .zip(&after.deployments)
        .all(|((_, old), (_, new))| old != new)
}

/// The role a version of the alternating secret names.
async fn role_in(stack: &Stack, secret: &str, version_id: &str) -> String {
    let raw = stack
        .secrets
        .get_secret_value()
        .secret_id(secret)
        .version_id(version_id)
        .send()
        .await
        .ok()
        .and_then(|o| o.secret_string)
        .unwrap_or_default();
    serde_json::from_str::<Value>(&raw)
        .ok()
        .and_then(|v| v["username"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The alternating-secret layout's report: which role AWSCURRENT names
/// before and after, and that both roles still log in.
async fn report_alternating(
    stack: &Stack,
    t: &Target,
    before: &Snapshot,
    after: &Snapshot,
    execution: &Value,
) -> bool {
    let secret = t.alternating.as_deref().expect("an alternating target");
    let (b, a) = (before.secret("blue"), after.secret("blue"));
    let was = role_in(stack, secret, &b.current).await;
    let now = role_in(stack, secret, &a.current).await;
    print_header(execution);
    println!("  layout           alternating secret {secret}");
    println!(
        "  AWSCURRENT names {was} -> {now} (version {} -> {})",
        &b.current.chars().take(8).collect::<String>(),
        &a.current.chars().take(8).collect::<String>()
    );
    println!(
        "  observer param   {} -> {}",
        before.active_user, after.active_user
    );
    let mut checks = Checks::default();
    let mut check = |good: bool, what: String| checks.check(good, what);
    check(
        execution["status"] == "SUCCEEDED",
        "the execution succeeded".into(),
    );
    check(
        now != was,
        format!("AWSCURRENT names the other role ({now})"),
    );
    check(a.pending.is_none(), "no AWSPENDING left".into());
    check(
        after.active_user == now,
        format!(
            "the active-user parameter follows the secret ({})",
            after.active_user
        ),
    );
    let key = t.color_of(&now).map(|c| t.key(c)).unwrap_or_default();
    match stack.psql_login(t, &key).await {
        Ok(line) => check(
            true,
            format!("psql logs in as {now} with AWSCURRENT: {line}"),
        ),
        Err(e) => check(false, format!("psql login as {now}: {e}")),
    }
    match stack.login_stage(t, "AWSPREVIOUS").await {
        Ok(role) => check(
            role == was,
            format!("{role} (AWSPREVIOUS, what running tasks hold) still logs in"),
        ),
        Err(e) => check(false, format!("AWSPREVIOUS login: {e}")),
    }
    check(
        all_redeployed(before, after),
        "every service got a new deployment".into(),
    );
    println!();
    checks.ok
}

async fn report(
    stack: &Stack,
    t: &Target,
    before: &Snapshot,
    after: &Snapshot,
    execution: &Value,
) -> bool {
    let previous = &before.active_user;
    let rotated = &after.active_user;
    // Secret version ids differ at the start, ECS deployment ids at the end.
    let short = |id: &str| id.chars().take(8).collect::<String>();
    let tail = |id: &str| {
        id.chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    print_header(execution);
    println!("  active user      {previous} -> {rotated}");
    for key in ["blue", "green"] {
        let (b, a) = (before.secret(key), after.secret(key));
        let note = if b.current == a.current {
            "unchanged"
        } else {
            "rotated"
        };
        println!(
            "  {key:<5} secret     AWSCURRENT {} -> {} ({note})",
            short(&b.current),
            short(&a.current)
        );
    }
    for ((service, old), (_, new)) in before.deployments.iter().zip(&after.deployments) {
        let note = if old == new {
            "NOT redeployed"
        } else {
            "redeployed"
        };
        println!(
            "  service {service:<8} …{} -> …{} ({note})",
            tail(old),
            tail(new)
        );
    }

    let mut checks = Checks::default();
    let mut check = |good: bool, what: String| checks.check(good, what);
    check(
        execution["status"] == "SUCCEEDED",
        "the execution succeeded".into(),
    );
    check(
        rotated != previous,
        format!("the parameter names the other user ({rotated})"),
    );
    check(
        before.secret(rotated).current != after.secret(rotated).current,
        format!("{rotated}'s secret has a new AWSCURRENT version"),
    );
    check(
        after.secret(rotated).pending.is_none(),
        format!("{rotated}'s secret has no AWSPENDING left"),
    );
    check(
        before.secret(previous) == after.secret(previous),
        format!("{previous}'s secret is unchanged"),
    );
    match stack.psql_login(t, rotated).await {
        Ok(line) => check(
            true,
            format!("psql logs in as {rotated} with its AWSCURRENT password: {line}"),
        ),
        Err(e) => check(false, format!("psql login as {rotated}: {e}")),
    }
    match stack.login(t, previous, AWSCURRENT).await {
        Ok(()) => check(
            true,
            format!("{previous} still logs in with its unchanged password"),
        ),
        Err(e) => check(false, format!("{previous} login: {e}")),
    }
    check(
        all_redeployed(before, after),
        "every service got a new deployment".into(),
    );
    println!();
    checks.ok
}
