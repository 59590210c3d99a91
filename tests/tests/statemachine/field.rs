//! Failures rotators hit in the field (issue 12), each input from the issue
//! and further cases of each kind, on the real state machine, Lambdas,
//! moto and PostgreSQL (the primary, its hot standby, the md5 server).

use super::*;
use pgflip_core::password::{PasswordPolicy, Verifier};

/// Runs `;`-separated statements as the superuser on the primary.
async fn sql(stack: &Stack, dbname: &str, statements: &str) {
    pgflip_tests::execute_each(&stack.admin(dbname).await, "setup", statements).await;
}

/// The same users, with the passwords their secrets hold now, and the same
/// database on the md5 server: "a second server with the same roles and
/// passwords", as after a migration.
async fn mirror_on_md5_server(stack: &Stack, t: &Target) {
    let admin = stack.admin_at(stack.md5_port, "postgres").await;
    let mut statements = vec![
        format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", t.dbname),
        format!("DROP ROLE IF EXISTS \"{}\"", t.blue_role),
        format!("DROP ROLE IF EXISTS \"{}\"", t.green_role),
        format!("DROP ROLE IF EXISTS \"{}\"", t.owner_role),
        format!("CREATE ROLE \"{}\" NOLOGIN", t.owner_role),
    ];
    for key in ["blue", "green"] {
        let password = stack.password_at(t.secret_of(key), AWSCURRENT).await;
        let role = t.role_of(key);
        statements.push(format!(
            "CREATE ROLE \"{role}\" LOGIN IN ROLE \"{}\" PASSWORD '{}'",
            t.owner_role,
            password.verifier(Verifier::Md5, role)
        ));
    }
    statements.push(format!(
        "CREATE DATABASE \"{}\" OWNER \"{}\"",
        t.dbname, t.owner_role
    ));
    for s in &statements {
        admin.batch_execute(s).await.unwrap();
    }
    let db = stack.admin_at(stack.md5_port, &t.dbname).await;
    db.batch_execute(&format!(
        "SET ROLE \"{}\"; CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
        t.owner_role
    ))
    .await
    .unwrap();
}

/// The pointer is written again and the services redeployed after it, as a
/// finished rotation leaves them: the next execution rotates.
async fn settle(stack: &Stack, t: &Target) {
    pgflip_tests::next_second().await;
    let active = stack.active_user(t).await;
    stack.set_active_user(t, &active).await;
    for service in &t.services {
        stack.redeploy(t, service).await;
    }
}

/// Nothing a rotation changes changed: the pointer, every secret version and
/// label, the deployments; and both users log in with their AWSCURRENT.
async fn assert_nothing_changed(c: &Case, what: &str) {
    let after = c.after().await;
    assert_eq!(after, c.before, "{what}: something changed");
    assert_eq!(c.assert_invariant().await, "blue", "{what}");
    c.stack
        .login(&c.target, "green", AWSCURRENT)
        .await
        .unwrap_or_else(|e| panic!("{what}: green no longer logs in: {e}"));
}

// ------------------------------------------------------------------ 1. drift

/// Each input from the field made a rotation succeed and the new active user
/// fail with `permission denied`. Now each stops at SelectUser with
/// `PrivilegeDrift` naming the difference on the right side, and nothing
/// changes; so do more cases of the kind (a row-level security policy
/// naming one user, a per-database setting of one user, an object one owns).
#[tokio::test]
async fn drift_from_the_field_stops_the_rotation_and_names_the_difference() {
    let cases = [
        (
            "CREATE TABLE audit (id int, note text); GRANT SELECT (note) ON audit TO blue",
            "only \"blue\": SELECT on column note of table audit",
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC; GRANT EXECUTE ON FUNCTION f() TO blue",
            "only \"blue\": EXECUTE on function f()",
        ),
        (
            "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO green",
            "only \"green\": SELECT on default privileges on new relations belonging to role app_owner in schema public",
        ),
        (
            "CREATE TABLE notes (x int); ALTER TABLE notes ENABLE ROW LEVEL SECURITY; CREATE POLICY own ON notes TO green USING (true)",
            "only \"green\": named in policy own on table notes",
        ),
        (
            "ALTER ROLE blue IN DATABASE app SET statement_timeout = '1s'",
            "only \"blue\": setting statement_timeout=1s in database app",
        ),
        (
            "CREATE TABLE owned (); ALTER TABLE owned OWNER TO green",
            "only \"green\": owner of table owned",
        ),
    ];
    for (setup, named) in cases {
        let c = case().await;
        sql(&c.stack, &c.target.dbname, setup).await;
        let e = c.run(json!({}), json!({}));
        assert_eq!(
            e.error.as_deref(),
            Some("PrivilegeDrift"),
            "{setup}: {:?}",
            e.cause
        );
        assert_eq!(e.states, ["SelectUser"], "{setup}");
        let cause = e.cause.clone().unwrap_or_default();
        assert!(cause.contains(named), "{setup}: {cause}");
        assert_nothing_changed(&c, setup).await;
    }
}

/// The user about to become active must stay valid past the margin; an
/// expired password is named as expired (whoever's), not as a bad secret.
#[tokio::test]
async fn expiring_and_expired_passwords_are_named_before_anything_changes() {
    let cases = [
        (
            "ALTER ROLE green VALID UNTIL 'now'::timestamptz + interval '10 days'",
            "PasswordExpiresSoon",
            "\"green\"",
        ),
        (
            "ALTER ROLE green VALID UNTIL '2001-01-01 00:00:00+00'",
            "PasswordExpired",
            "\"green\" expired at 2001-01-01T00:00:00Z",
        ),
        (
            "ALTER ROLE blue VALID UNTIL '2001-01-01 00:00:00+00'",
            "PasswordExpired",
            "\"blue\" expired at 2001-01-01T00:00:00Z",
        ),
    ];
    for (setup, error, named) in cases {
        let c = case().await;
        // VALID UNTIL takes a literal: compute the near date first.
        let setup = if setup.contains("'now'") {
            let when: String = c
                .stack
                .admin("postgres")
                .await
                .query_one("SELECT (now() + interval '10 days')::text", &[])
                .await
                .unwrap()
                .get(0);
            format!("ALTER ROLE green VALID UNTIL '{when}'")
        } else {
            setup.to_string()
        };
        sql(&c.stack, "postgres", &setup).await;
        let e = c.run(json!({}), json!({}));
        assert_eq!(e.error.as_deref(), Some(error), "{setup}: {:?}", e.cause);
        assert_eq!(e.states, ["SelectUser"]);
        let cause = e.cause.clone().unwrap_or_default();
        assert!(cause.contains(named), "{setup}: {cause}");
        assert!(
            !cause.contains("secret"),
            "{setup}: blames the secret: {cause}"
        );
        assert_eq!(c.after().await, c.before, "{setup}: something changed");
    }
}

// -------------------------------------------------------- 2. stale pending

/// The input from the field: a run aborted right after
/// GenerateAndSetPassword; then green's secret got a new AWSCURRENT whose
/// port names a second server with the same roles and passwords; a re-run
/// promoted the stale AWSPENDING (the old server) and flipped there. Now:
/// with only green's secret moved, the two secrets name different servers
/// (`EndpointMismatch`, nothing changed); with both moved (a migration), the
/// re-run flips to green at the new server and leaves no AWSPENDING; and
/// when the pointer moved after that, the stale version is discarded and a
/// fresh password is made on the new server (stored as md5 there, which
/// an md5-only client logs in with).
#[tokio::test]
async fn a_stale_pending_version_is_never_promoted() {
    let c = case().await;
    let aborted = c.run(
        json!({}),
        json!({"tasks": {"GenerateAndSetPassword": [{"abortAfter": true}]}}),
    );
    assert_eq!(aborted.status, "ABORTED");
    let stale = c.after().await.green.pending.expect("a pending version");
    mirror_on_md5_server(&c.stack, &c.target).await;
    let md5 = c.stack.md5_port;
    c.stack
        .edit_secret(&c.target.green_secret, |v| v["port"] = json!(md5))
        .await;

    // 1. Only green's secret moved: the two name different servers.
    let e = c.run(json!({}), json!({}));
    assert_eq!(
        e.error.as_deref(),
        Some("EndpointMismatch"),
        "{:?}",
        e.cause
    );
    assert_eq!(e.states, ["SelectUser"]);
    let mid = c.after().await;
    assert_eq!(mid.active_user, "blue");
    assert_eq!(
        mid.green.pending.as_deref(),
        Some(stale.as_str()),
        "not promoted"
    );
    assert_eq!(c.assert_invariant().await, "blue");

    // 2. Both moved (a migration): the re-run flips to green's AWSCURRENT
    // at the new server; the stale label is gone.
    c.stack
        .edit_secret(&c.target.blue_secret, |v| v["port"] = json!(md5))
        .await;
    let moved = c.stack.secret_state(&c.target.green_secret).await.current;
    let mut t = c.target.clone();
    t.port = Some(md5);
    let e = c.run(json!({}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "flip");
    let after = c.stack.snapshot(&t).await;
    assert_eq!(after.active_user, "green");
    assert_eq!(after.green.current, moved, "the stale version was promoted");
    assert_eq!(
        after.green.pending, None,
        "an AWSPENDING label was left behind"
    );
    assert_eq!(c.stack.invariant(&t).await.as_deref(), Ok("green"));

    // 3. A fresh stale version, then the pointer moves on: the next run
    // rotates blue, whose leftover AWSPENDING (old server, old password
    // policy) is discarded, and a fresh password is made at the new server.
    c.stack
        .stage_pending(&t.blue_secret, |v| {
            v["port"] = json!(c.stack.pg_port);
            v["password"] = json!("Left-over%pass?word#from-an-old-run");
        })
        .await;
    settle(&c.stack, &t).await;
    let e = c.run(json!({}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "rotate");
    assert_eq!(e.output["pending"]["resumed"], false);
    let after = c.stack.snapshot(&t).await;
    assert_eq!(after.active_user, "blue");
    assert_eq!(after.blue.pending, None);
    assert_eq!(c.stack.invariant(&t).await.as_deref(), Ok("blue"));
    let blue = c.stack.password_at(&t.blue_secret, AWSCURRENT).await;
    assert!(PasswordPolicy::default().accepts(blue.expose()));
    let raw = c
        .stack
        .secrets
        .get_secret_value()
        .secret_id(&t.blue_secret)
        .version_stage(AWSCURRENT)
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["port"], json!(md5), "AWSCURRENT points at the old server");
    // The md5 server stores md5 verifiers: so did pgflip (issue point 4).
    let stored: String = c
        .stack
        .admin_at(md5, "postgres")
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'blue'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"), "stored as another kind");
    pgflip_tests::md5_only_login(&c.stack.pg_host, md5, "blue", &blue, &t.dbname)
        .expect("an md5-only client logs in with the new password");
}

/// A leftover AWSPENDING whose password today's policy refuses (`%`, `?`,
/// `#`: characters the old default let through) is discarded, on either
/// store; a successful flip-mode run leaves no AWSPENDING behind.
#[tokio::test]
async fn leftover_pending_versions_are_discarded_on_either_store() {
    // Secrets Manager, mode rotate.
    let c = case().await;
    let leftover = c
        .stack
        .stage_pending(&c.target.green_secret, |v| {
            v["password"] = json!("Ab1%percent?and#hash-0123456789ab")
        })
        .await;
    let e = c.run(json!({}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["pending"]["resumed"], false);
    let after = c.after().await;
    assert_ne!(after.green.current, leftover, "the leftover was promoted");
    assert_eq!(after.green.pending, None);
    let green = c
        .stack
        .password_at(&c.target.green_secret, AWSCURRENT)
        .await;
    assert!(PasswordPolicy::default().accepts(green.expose()));
    c.assert_rotated(&after).await;

    // Secrets Manager, mode flip: another tool rotated green and left an
    // AWSPENDING behind.
    drop(c); // its lock
    let c = case().await;
    c.stack
        .stage_pending(&c.target.green_secret, |v| {
            v["password"] = json!("left-behind")
        })
        .await;
    let arn = rotate_externally(&c, "green").await;
    let e = c.run(rotation_succeeded_event(&arn), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "flip");
    assert_eq!(
        c.after().await.green.pending,
        None,
        "AWSPENDING left behind"
    );

    // The SSM store: a leftover pgflip-pending version the policy refuses.
    let stack = &c.stack;
    let t = Target::unique_in_ssm("leftover_ssm", "leftover-ssm");
    stack.seed(&t).await;
    stack.register_target(&t).await;
    stack
        .ssm
        .label_parameter_version()
        .name(&t.green_secret)
        .parameter_version(1)
        .labels("pgflip-current")
        .send()
        .await
        .unwrap();
    let put = stack
        .ssm
        .put_parameter()
        .name(&t.green_secret)
        .value("Ab1%percent?and#hash-0123456789ab")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    stack
        .ssm
        .label_parameter_version()
        .name(&t.green_secret)
        .parameter_version(put.version)
        .labels("pgflip-pending")
        .send()
        .await
        .unwrap();
    let e = run_quick(stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["pending"]["resumed"], false);
    let after = stack.snapshot(&t).await;
    assert_eq!(after.green.pending, None);
    assert_ne!(after.green.current, put.version.to_string());
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;
    assert!(PasswordPolicy::default().accepts(green.expose()));
    assert_eq!(
        stack.invariant(&t).await.as_deref(),
        Ok(t.key("green").as_str())
    );
}

// ---------------------------------------------------- 3. the server itself

/// The input from the field: green's secret names a read-only server; the
/// run stopped at GenerateAndSetPassword with DatabaseError after staging
/// an AWSPENDING. Now SelectUser proves the server takes writes first:
/// `DatabaseReadOnly` with nothing staged, for a hot standby, a database
/// whose sessions are read-only, and the inactive user's sessions alone
/// (found by its own login, before the drift that setting also is).
#[tokio::test]
async fn a_read_only_server_is_refused_before_anything_is_staged() {
    let cases = [
        ("green's secret names the hot standby", "hot standby"),
        (
            "default_transaction_read_only for the database",
            "read-only",
        ),
        (
            "default_transaction_read_only for the inactive user",
            "read-only",
        ),
    ];
    for (what, says) in cases {
        let c = case().await;
        match what {
            "green's secret names the hot standby" => {
                c.stack.standby_caught_up().await;
                let standby = c.stack.standby_port;
                c.stack
                    .edit_secret(&c.target.green_secret, |v| v["port"] = json!(standby))
                    .await;
            }
            "default_transaction_read_only for the database" => {
                sql(
                    &c.stack,
                    "postgres",
                    "ALTER DATABASE app SET default_transaction_read_only = on",
                )
                .await
            }
            _ => {
                sql(
                    &c.stack,
                    "postgres",
                    "ALTER ROLE green SET default_transaction_read_only = on",
                )
                .await
            }
        }
        let before = c.after().await;
        let e = c.run(json!({}), json!({}));
        assert_eq!(
            e.error.as_deref(),
            Some("DatabaseReadOnly"),
            "{what}: {:?}",
            e.cause
        );
        assert_eq!(e.states, ["SelectUser"], "{what}");
        assert!(
            e.cause.clone().unwrap_or_default().contains(says),
            "{what}: {:?}",
            e.cause
        );
        let after = c.after().await;
        assert_eq!(after, before, "{what}: something changed");
        assert_eq!(after.green.pending, None, "{what}: a version was staged");
        assert_eq!(c.assert_invariant().await, "blue");
    }
}

// ------------------------------------------------- 4. the stored verifier

/// The input from the field: on a server with `password_encryption = md5`
/// and md5 in pg_hba.conf, the new active user was stored as SCRAM and a
/// client that speaks only md5 was refused. Now the verifier follows the
/// server: md5 there, and the md5-only client logs in with AWSCURRENT.
#[tokio::test]
async fn on_an_md5_server_the_new_password_is_stored_as_md5() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let mut t = Target::unique_named("md5_target", "md5-target");
    t.port = Some(stack.md5_port);
    stack.seed(&t).await;
    stack.register_target(&t).await;
    let before = stack.snapshot(&t).await;
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_target_rotated(&stack, &t, &before).await;
    let stored: String = stack
        .admin_at(stack.md5_port, "postgres")
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&t.green_role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5") && stored.len() == 35, "not md5");
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;
    pgflip_tests::md5_only_login(
        &stack.pg_host,
        stack.md5_port,
        &t.green_role,
        &green,
        &t.dbname,
    )
    .expect("an md5-only client logs in as the new active user");
}

// ------------------------------------------------- 6. readers and proxies

/// A target whose applications also read from the hot standby.
async fn reader_target(stack: &Stack, tag: &str) -> Target {
    let mut t = Target::unique_named(tag, &tag.replace('_', "-"));
    t.document = json!({"readerEndpoints": [format!("127.0.0.1:{}", stack.standby_port)]});
    stack.set_replay_delay("0").await;
    stack.seed(&t).await;
    stack.register_target(&t).await;
    stack.standby_caught_up().await;
    t
}

/// A password valid on the primary is not yet valid on a lagging replica.
/// VerifyLogin waits for the reader (the state machine retries
/// `ReaderLagging`), then promotes and flips; a reader that does not catch
/// up in time stops the run there, nothing promoted or flipped, and a
/// redrive once it has caught up finishes the rotation.
#[tokio::test]
async fn the_new_password_must_log_in_on_every_reader_before_the_flip() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;

    // Lag of 3 s: the first retry (5 s later) finds the password there.
    let t = reader_target(&stack, "reader_wait").await;
    let before = stack.snapshot(&t).await;
    stack.set_replay_delay("3s").await;
    let e = stack.run(&RunOptions {
        input: Some(t.input()),
        scenario: Some(json!({"waitMs": 0})),
        ..RunOptions::default()
    });
    eprintln!("{}", e.progress);
    stack.set_replay_delay("0").await;
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert!(e.progress.contains("VerifyLogin retry"), "{}", e.progress);
    assert_target_rotated(&stack, &t, &before).await;
    stack.standby_caught_up().await;
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;
    stack
        .login_at(&t, "green", &green, stack.standby_port)
        .await
        .expect("green logs in on the reader");

    // A reader an hour behind: the retries run out, nothing is flipped.
    let t = reader_target(&stack, "reader_lag").await;
    let before = stack.snapshot(&t).await;
    stack.set_replay_delay("1h").await;
    let name = format!("reader-lag-{}", std::process::id());
    let history = std::env::temp_dir().join(format!("{name}.json"));
    let e = stack.run(&RunOptions {
        input: Some(t.input()),
        name: Some(name.clone()),
        scenario: Some(json!({"waitMs": 0, "retryIntervalMs": 0})),
        history: Some(history.clone()),
        ..RunOptions::default()
    });
    eprintln!("{}", e.progress);
    assert_eq!(e.error.as_deref(), Some("ReaderLagging"), "{:?}", e.cause);
    assert_eq!(e.states.last().map(String::as_str), Some("VerifyLogin"));
    let mid = stack.snapshot(&t).await;
    assert_eq!(
        mid.active_user,
        t.key("blue"),
        "flipped to a user the reader refuses"
    );
    assert_eq!(
        mid.green.current, before.green.current,
        "promoted before the reader had it"
    );
    assert!(mid.green.pending.is_some());
    assert_eq!(
        stack.invariant(&t).await.as_deref(),
        Ok(t.key("blue").as_str())
    );

    // Caught up: a redrive of VerifyLogin finishes the rotation.
    stack.set_replay_delay("0").await;
    stack.standby_caught_up().await;
    let e = run_quick(
        &stack,
        t.input(),
        json!({}),
        RunOptions {
            name: Some(name),
            start_at: Some("VerifyLogin".into()),
            state_input: Some(state_input(&history, "VerifyLogin")),
            ..RunOptions::default()
        },
    );
    std::fs::remove_file(&history).ok();
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_target_rotated(&stack, &t, &before).await;
}

/// Sessions of the inactive user on a reader count like sessions on the
/// primary: its password does not change under them.
#[tokio::test]
async fn sessions_on_a_reader_hold_the_rotation() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = reader_target(&stack, "reader_session").await;
    let before = stack.snapshot(&t).await;
    let session = stack.session(&t, "green", stack.standby_port).await;
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(
        e.error.as_deref(),
        Some("InactiveUserInUse"),
        "{:?}",
        e.cause
    );
    assert_eq!(e.states, ["SelectUser"]);
    assert_eq!(stack.snapshot(&t).await, before);
    drop(session);
}

/// An RDS Proxy authenticates only users whose secrets it lists: a target
/// whose proxy lists only blue's is refused before anything changes; once
/// it lists both, the rotation runs. (moto models RDS Proxy.)
#[tokio::test]
async fn an_rds_proxy_that_does_not_know_both_secrets_stops_the_rotation() {
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let mut t = Target::unique_named("proxied", "proxied");
    let proxy = format!("pgflip-proxy-{}", std::process::id());
    t.document = json!({"dbProxyName": proxy});
    stack.seed(&t).await;
    stack.register_target(&t).await;
    let (blue, green) = (
        stack.secret_arn(&t.blue_secret).await,
        stack.secret_arn(&t.green_secret).await,
    );
    pgflip_tests::rds_proxy(&proxy, &[&blue]);
    let before = stack.snapshot(&t).await;
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(
        e.error.as_deref(),
        Some("ProxyMissingSecret"),
        "{:?}",
        e.cause
    );
    assert!(
        e.cause
            .clone()
            .unwrap_or_default()
            .contains(&t.green_secret),
        "{:?}",
        e.cause
    );
    assert_eq!(stack.snapshot(&t).await, before);
    pgflip_tests::rds_proxy(&proxy, &[&blue, &green]);
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
}

// ---------------------------------------------------- 7. deployment status

/// The input from the field: a release (not pgflip's deployment) was still
/// rolling out after the last flip; a new execution waited, timed out, and
/// its rollback flipped the parameter to the other user; the next flipped it
/// back. Now the execution waits within the deadline, then stops with
/// `ForeignRolloutFailed` and never moves the pointer, however often it runs;
/// once the release finishes, the next run rotates.
#[tokio::test]
async fn a_release_still_rolling_out_is_waited_for_and_never_moves_the_pointer() {
    let c = case().await;
    let run_command = |argv: Vec<String>| {
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // The team's release: a deployment after the flip that never finishes.
    run_command(ecs_service(&c.target.cluster, "release", 3));
    for attempt in 1..=2 {
        let e = c.run(json!({"services": ["web", "release"]}), json!({}));
        assert_eq!(
            e.error.as_deref(),
            Some("ForeignRolloutFailed"),
            "attempt {attempt}: {:?}",
            e.cause
        );
        assert_eq!(e.output, Value::Null);
        for state in ["FlipParameter", "RollbackFlipParameter", "RedeployEcs"] {
            assert!(
                !e.states.iter().any(|s| s == state),
                "attempt {attempt}: {state} ran: {:?}",
                e.states
            );
        }
        assert_eq!(
            c.stack.active_user(&c.target).await,
            "blue",
            "attempt {attempt}: the pointer moved"
        );
        assert_eq!(c.assert_invariant().await, "blue");
    }
    // Any other error while watching it (here ECS refusing the request)
    // ends the same way: the original error, nothing rolled back.
    let e = c.run(
        json!({"services": ["web", "release"]}),
        json!({"tasks": {"WaitForStable": [{"throw": {"error": "AwsRequestFailed", "cause": "AccessDeniedException (injected)"}}]}}),
    );
    assert_eq!(
        e.error.as_deref(),
        Some("AwsRequestFailed"),
        "{:?}",
        e.cause
    );
    assert!(
        e.states.ends_with(&[
            "ChooseRollback".to_string(),
            "StoppedWithoutRollback".to_string()
        ]),
        "{:?}",
        e.states
    );
    assert_eq!(c.stack.active_user(&c.target).await, "blue");
    // The release finished: the next run rotates.
    run_command(ecs_service(&c.target.cluster, "release", 2));
    let e = c.run(json!({"services": ["web", "release"]}), json!({}));
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(c.stack.active_user(&c.target).await, "green");
    assert_eq!(c.assert_invariant().await, "green");
}

/// The input from the field: `{"services": ["web", "web"]}` forced two
/// deployments of web and then tracked a superseded one. Now each service
/// is redeployed, and watched, once.
#[tokio::test]
async fn a_service_named_twice_is_redeployed_once() {
    let c = case().await;
    let e = c.run(
        json!({"services": ["web", "web", "worker", " worker "]}),
        json!({}),
    );
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["services"], json!(["web", "worker"]));
    let watched: Vec<&str> = e.output["rollout"]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["service"].as_str().unwrap())
        .collect();
    assert_eq!(watched, ["web", "worker"]);
    c.assert_rotated(&c.after().await).await;
}

/// The input from the field: `STABLE_POLL_SECONDS=0` was accepted and a long
/// rollout polled without pause into Step Functions' history limit. Now a
/// poll interval that allows more looks than fit is refused, with a named
/// error: at cold start for the environment, at SelectUser for a target of
/// the targets document.
#[tokio::test]
async fn poll_settings_that_could_overflow_the_history_are_refused() {
    // The select-user binary itself, at cold start.
    let binary = pgflip_tests::repo_root().join("target/debug/select-user");
    for (poll, timeout) in [("0", "1800"), ("1", "1800")] {
        let out = std::process::Command::new(&binary)
            .env_clear()
            .env("ACTIVE_USER_PARAMETER", "/x/active-user")
            .env("BLUE_SECRET_ID", "x/blue")
            .env("GREEN_SECRET_ID", "x/green")
            .env("ECS_CLUSTER", "x")
            .env("ECS_SERVICES", "web")
            .env("STABLE_POLL_SECONDS", poll)
            .env("STABLE_TIMEOUT_SECONDS", timeout)
            .env("DB_SSLMODE", "disable")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ConfigurationError") && stderr.contains("STABLE_POLL_SECONDS"),
            "poll {poll} s: {stderr}"
        );
    }
    // A target of the document.
    let _guard = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let mut t = Target::unique_named("eager", "eager");
    t.document = json!({"stablePollSeconds": 0});
    stack.seed(&t).await;
    stack.register_target(&t).await;
    let before = stack.snapshot(&t).await;
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(
        e.error.as_deref(),
        Some("ConfigurationError"),
        "{:?}",
        e.cause
    );
    assert!(
        e.cause
            .clone()
            .unwrap_or_default()
            .contains("poll interval"),
        "{:?}",
        e.cause
    );
    assert_eq!(stack.snapshot(&t).await, before);
}

// -------------------------------------------------------- 8. named refusals

/// A user that may not change its own password (PostgreSQL refuses it to a
/// REPLICATION role with SQLSTATE 42501, as RDS does outside rds_password)
/// stops the run at GenerateAndSetPassword with `PasswordChangeNotAllowed`,
/// telling the operator to configure the administrator secret; the active
/// user is untouched.
#[tokio::test]
async fn a_user_that_may_not_change_its_own_password_gets_a_named_error() {
    let c = case().await;
    sql(
        &c.stack,
        "postgres",
        "ALTER ROLE blue REPLICATION; ALTER ROLE green REPLICATION",
    )
    .await;
    let e = c.run(json!({}), json!({}));
    assert_eq!(
        e.error.as_deref(),
        Some("PasswordChangeNotAllowed"),
        "{:?}",
        e.cause
    );
    assert_eq!(
        e.states.last().map(String::as_str),
        Some("GenerateAndSetPassword")
    );
    assert!(
        e.cause
            .clone()
            .unwrap_or_default()
            .contains("DB_ADMIN_SECRET_ID"),
        "{:?}",
        e.cause
    );
    let after = c.after().await;
    assert_eq!(after.active_user, "blue");
    assert_eq!(after.green.current, c.before.green.current);
    assert_eq!(c.assert_invariant().await, "blue");
    c.stack
        .login(&c.target, "green", AWSCURRENT)
        .await
        .expect("green's password did not change");
}
