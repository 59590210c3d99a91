//! Generated passwords survive how applications use them: written unencoded
//! into a libpq URI or conninfo string, a JDBC URL, Python's URL parsing, a
//! Rust URL crate, an env file, a `.pgpass` file. Real parsers: libpq (through
//! `tests/fixtures/password-parsers.py`, which also runs urllib, python-dotenv
//! and bash), the `url` crate here, and libpq's `.pgpass` reading through
//! `psql` against the local PostgreSQL. No password is ever printed.

use std::io::Write;
use std::process::{Command, Stdio};

use pgflip_core::password::{Password, PasswordPolicy};
use pgflip_tests::{repo_root, Stack, Target};
use proptest::prelude::*;
use serde_json::Value;

/// What `password-parsers.py` says of these passwords: per parser, how many
/// broke and which characters (other than letters and digits) they held.
fn parsers_on(passwords: &[Password]) -> Value {
    let root = repo_root();
    let mut child = Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("tests/fixtures/password-parsers.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tests/fixtures/password-parsers.py (scripts/test installs its venv)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for p in passwords {
            writeln!(stdin, "{}", p.expose()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "password-parsers.py failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The parsers a password broke in (by name).
fn broken(report: &Value) -> Vec<String> {
    report["broken"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["count"].as_u64() != Some(0))
        .map(|(name, v)| {
            format!(
                "{name} ({} broken, holding {})",
                v["count"], v["characters"]
            )
        })
        .collect()
}

/// Whether the `url` crate gives the password back from a URI as written.
fn url_crate_keeps(password: &str) -> bool {
    match url::Url::parse(&format!("postgresql://app:{password}@db.internal:5432/app")) {
        Ok(u) => {
            u.password() == Some(password)
                && u.host_str() == Some("db.internal")
                && u.port() == Some(5432)
                && u.username() == "app"
        }
        Err(_) => false,
    }
}

#[test]
fn default_passwords_round_trip_unencoded_through_every_parser() {
    let policy = PasswordPolicy::default();
    assert!(
        policy.entropy_bits() >= 190.0,
        "the default has {:.1} bits of entropy",
        policy.entropy_bits()
    );
    let passwords: Vec<Password> = (0..500).map(|_| policy.generate()).collect();
    let report = parsers_on(&passwords);
    assert_eq!(report["checked"], 500);
    assert!(broken(&report).is_empty(), "{:?}", broken(&report));
    let failed = passwords
        .iter()
        .filter(|p| !url_crate_keeps(p.expose()))
        .count();
    assert_eq!(failed, 0, "the url crate changed {failed} passwords");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any length the policy allows: every password it makes survives the
    /// `url` crate (the Python and libpq parsers run on 500 above).
    #[test]
    fn any_length_survives_the_url_crate(length in 16usize..=128) {
        let policy = PasswordPolicy::new(length, pgflip_core::password::DEFAULT_EXCLUDED).unwrap();
        for _ in 0..10 {
            let p = policy.generate();
            prop_assert!(url_crate_keeps(p.expose()));
        }
    }
}

/// The input from the field: of 20 passwords of the old default, 8 held `%`
/// (libpq refuses the URI) and 13 broke Python's urlsplit (`?`, `#`, `[`).
/// The same parsers catch that, so the check above can fail.
#[test]
fn the_old_default_broke_these_parsers() {
    let old = PasswordPolicy::new(32, ":/@\"'\\`").unwrap();
    let passwords: Vec<Password> = (0..100).map(|_| old.generate()).collect();
    let report = parsers_on(&passwords);
    let broken = &report["broken"];
    for parser in ["libpq-uri", "urllib", "jdbc-query", "shell-env"] {
        assert!(
            broken[parser]["count"].as_u64().unwrap() > 0,
            "{parser} took every old-default password: {report}"
        );
    }
    assert!(broken["libpq-uri"]["characters"]
        .as_str()
        .unwrap()
        .contains('%'));
    assert!(passwords.iter().any(|p| !url_crate_keeps(p.expose())));
}

/// libpq's own `.pgpass` reading: psql logs in with a password it found in a
/// `.pgpass` line written as is (no escaping), for default passwords.
#[tokio::test]
async fn default_passwords_work_from_a_pgpass_file_as_written() {
    let stack = Stack::from_env().await;
    let t = Target::unique("pgpass");
    stack.seed_database(&t).await;
    let dir = std::env::temp_dir().join(format!("pgpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgpass");
    let admin = stack.admin("postgres").await;
    for _ in 0..10 {
        let p = PasswordPolicy::default().generate();
        admin
            .batch_execute(&format!(
                "ALTER ROLE \"{}\" PASSWORD '{}'",
                t.green_role,
                p.scram_verifier()
            ))
            .await
            .unwrap();
        std::fs::write(
            &file,
            format!(
                "{}:{}:{}:{}:{}\n",
                stack.pg_host,
                stack.pg_port,
                t.dbname,
                t.green_role,
                p.expose()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("psql")
            .args(["-X", "-w", "-A", "-t", "-c", "SELECT 1"])
            .args(["-h", &stack.pg_host, "-p", &stack.pg_port.to_string()])
            .args(["-U", &t.green_role, "-d", &t.dbname])
            .env("PGPASSFILE", &file)
            .env_remove("PGPASSWORD")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql did not log in from .pgpass: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
