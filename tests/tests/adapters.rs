//! The adapters against the real local stack: SSM, Secrets Manager and ECS on
//! moto, PostgreSQL 15 with SCRAM. Each test seeds a target of its own, so
//! these run in parallel.

use pgflip_core::adapters::{
    ecs::EcsDeployments, postgres::Postgres, rds::RdsProxies, secrets::SecretsManager,
    ssm::SsmParameters, ssm_passwords::SsmPasswordStore,
};
use pgflip_core::config::{DbConfig, PasswordEncryption, SslMode};
use pgflip_core::domain::{Endpoint, AWSCURRENT, AWSPENDING};
use pgflip_core::password::{Password, PasswordPolicy, Verifier};
use pgflip_core::ports::*;
use pgflip_core::steps::client_request_token;
use pgflip_tests::{in_ssm, Stack, Target};

async fn seeded(tag: &str) -> (Stack, Target) {
    let stack = Stack::from_env().await;
    let target = Target::unique(tag);
    stack.seed(&target).await;
    (stack, target)
}

fn postgres() -> Postgres {
    Postgres::new(DbConfig {
        ssl_mode: SslMode::Disable,
        ssl_root_cert: None,
        connect_timeout_seconds: 3,
        password_encryption: Default::default(),
    })
    .unwrap()
}

fn endpoint(stack: &Stack, t: &Target) -> Endpoint {
    Endpoint {
        host: stack.pg_host.clone(),
        port: stack.pg_port,
        dbname: t.dbname.clone(),
    }
}

#[tokio::test]
async fn ssm_reads_writes_and_names_a_missing_parameter() {
    let (stack, t) = seeded("ssm").await;
    let ssm = SsmParameters::new(stack.ssm.clone());
    let first = ssm.get(&t.parameter_name).await.unwrap();
    assert_eq!(first.value, "blue");
    ssm.put(&t.parameter_name, "green").await.unwrap();
    let second = ssm.get(&t.parameter_name).await.unwrap();
    assert_eq!(second.value, "green");
    // select-user compares this with deployment and secret timestamps.
    assert!(
        second.last_modified_ms > first.last_modified_ms,
        "{first:?} {second:?}"
    );
    let err = ssm.get("/pgflip-test/does-not-exist").await.unwrap_err();
    assert_eq!(err.name(), "ParameterNotFound");
}

#[tokio::test]
async fn secrets_manager_stages_resumes_and_promotes() {
    let (stack, t) = seeded("secrets").await;
    let sm = SecretsManager::new(stack.secrets.clone());
    let current = sm
        .get_stage(&t.green_secret, AWSCURRENT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.secret.username(), t.green_role);
    assert!(sm
        .get_stage(&t.green_secret, AWSPENDING)
        .await
        .unwrap()
        .is_none());

    let token = client_request_token("secrets-test-execution");
    let staged = current
        .secret
        .with_password(PasswordPolicy::default().generate());
    let v1 = sm
        .put_pending(&t.green_secret, &token, &staged.to_secret_string())
        .await
        .unwrap();
    // Same token, same value: Secrets Manager treats it as the same request.
    let v2 = sm
        .put_pending(&t.green_secret, &token, &staged.to_secret_string())
        .await
        .unwrap();
    assert_eq!(v1, v2);
    let pending = sm
        .get_stage(&t.green_secret, AWSPENDING)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.version_id, v1);
    assert_eq!(
        pending.secret.password().expose(),
        staged.password().expose()
    );
    assert_eq!(stack.secret_state(&t.green_secret).await.versions, 2);

    sm.promote(&t.green_secret, &v1).await.unwrap();
    let state = stack.secret_state(&t.green_secret).await;
    assert_eq!(state.current, v1);
    assert_eq!(state.pending, None);
    // Promoting again is a no-op.
    sm.promote(&t.green_secret, &v1).await.unwrap();
    assert_eq!(stack.secret_state(&t.green_secret).await, state);
    // The blue secret was never touched.
    assert_eq!(stack.secret_state(&t.blue_secret).await.versions, 1);
}

#[tokio::test]
async fn secrets_manager_names_missing_and_malformed_secrets() {
    let (stack, t) = seeded("badsecret").await;
    let sm = SecretsManager::new(stack.secrets.clone());
    let err = sm
        .get_stage("pgflip-test/no-such-secret", AWSCURRENT)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
    stack
        .secrets
        .put_secret_value()
        .secret_id(&t.blue_secret)
        .secret_string(r#"{"username": "x", "password": "not-shown-anywhere"}"#)
        .send()
        .await
        .unwrap();
    let err = sm.get_stage(&t.blue_secret, AWSCURRENT).await.unwrap_err();
    assert_eq!(err.name(), "SecretMalformed");
    assert!(!err.to_string().contains("not-shown-anywhere"));
}

#[tokio::test]
async fn ecs_forces_new_deployments_and_reports_rollout() {
    let (stack, t) = seeded("ecs").await;
    let ecs = EcsDeployments::new(stack.ecs.clone());
    let before = stack.primary_deployments(&t).await;
    let id = ecs
        .force_new_deployment(&t.cluster, "web")
        .await
        .unwrap()
        .id;
    assert_ne!(id, before[0].1);
    let described = ecs.describe(&t.cluster, &t.services).await.unwrap();
    assert_eq!(described[0].controller.as_deref(), Some("ECS"));
    let web = described[0]
        .deployments
        .iter()
        .find(|d| d.id == id)
        .expect("our deployment is listed");
    assert_eq!(web.status, "PRIMARY");
    // moto completes a rollout when MOTO_ECS_SERVICE_RUNNING >= desired count (2).
    assert_eq!(web.rollout_state.as_deref(), Some("COMPLETED"));

    let err = ecs
        .force_new_deployment(&t.cluster, "ghost")
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ServiceNotFound");
    let err = ecs
        .force_new_deployment("no-such-cluster", "web")
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ServiceNotFound");
    let err = ecs
        .describe(&t.cluster, &["ghost".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ServiceNotFound");
}

#[tokio::test]
async fn ecs_lists_the_workloads_of_a_cluster_and_what_their_task_definitions_take() {
    let (stack, t) = seeded("ecs_workloads").await;
    let ecs = EcsDeployments::new(stack.ecs.clone());
    stack.take_credentials(&t, "worker").await;
    assert_eq!(ecs.services(&t.cluster).await.unwrap(), ["web", "worker"]);

    // What a deployment runs, and what that task definition takes.
    let worker = &ecs.describe(&t.cluster, &["worker".into()]).await.unwrap()[0];
    let definition = worker.deployments[0]
        .task_definition
        .clone()
        .expect("a deployment names its task definition");
    let taken = ecs.references(&definition).await.unwrap();
    assert_eq!(taken.len(), 3, "{taken:?}");
    assert!(
        taken[0].ends_with(&format!(":parameter{}", t.parameter_name)),
        "{taken:?}"
    );
    let blue = stack.secret_arn(&t.blue_secret).await;
    assert_eq!(taken[1], format!("{blue}:password::"));

    // A job started by hand is listed; a task a service started is not.
    let family = stack.register_consumer(&t, "nightly").await;
    for group in [None, Some("service:web")] {
        stack
            .ecs
            .run_task()
            .cluster(&t.cluster)
            .task_definition(&family)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .set_group(group.map(String::from))
            .send()
            .await
            .unwrap();
    }
    let tasks = ecs.standalone_tasks(&t.cluster).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0].task_definition.contains(&family), "{tasks:?}");

    let err = ecs.services("no-such-cluster").await.unwrap_err();
    assert_eq!(err.name(), "ServiceNotFound");
}

#[tokio::test]
async fn postgres_logs_in_and_rejects_wrong_passwords() {
    let (stack, t) = seeded("login").await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;
    pg.check_login(&ep, &t.green_role, &green).await.unwrap();
    let err = pg
        .check_login(&ep, &t.green_role, &Password::new("wrong-password".into()))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
    let err = pg
        .check_login(&ep, "nobody_here", &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "LoginRejected");
}

#[tokio::test]
async fn postgres_unreachable_is_retryable() {
    let pg = postgres();
    // A port nothing listens on (bound and released just now).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = Endpoint {
        host: "127.0.0.1".into(),
        port,
        dbname: "app".into(),
    };
    let err = pg
        .check_login(&ep, "green", &Password::new("x".into()))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "DatabaseUnavailable");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn postgres_sets_a_scram_verifier_and_the_plaintext_never_reaches_the_server() {
    let (stack, t) = seeded("scram").await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    let old = stack.password_at(&t.green_secret, AWSCURRENT).await;
    let new = PasswordPolicy::default().generate();
    pg.set_own_password(&ep, &t.green_role, &old, &new)
        .await
        .unwrap();
    pg.check_login(&ep, &t.green_role, &new).await.unwrap();
    assert_eq!(
        pg.check_login(&ep, &t.green_role, &old)
            .await
            .unwrap_err()
            .name(),
        "LoginRejected"
    );
    let admin = stack.admin("postgres").await;
    let row = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&t.green_role],
        )
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert!(
        stored.starts_with("SCRAM-SHA-256$4096:"),
        "not a SCRAM verifier"
    );
    // log_statement = 'all' on the local server: the statement is logged, the password is not.
    let log = std::fs::read_to_string(&stack.pg_log).unwrap();
    assert!(
        log.contains("ALTER ROLE CURRENT_USER PASSWORD 'SCRAM-SHA-256$"),
        "statement not logged"
    );
    assert!(
        !log.contains(new.expose()),
        "the new password reached the server log"
    );
}

#[tokio::test]
async fn postgres_reads_facts_sessions_expiry_and_the_server_for_the_preflight() {
    let (stack, t) = seeded("facts").await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    let blue = stack.password_at(&t.blue_secret, AWSCURRENT).await;
    let users = [
        t.blue_role.as_str(),
        t.green_role.as_str(),
        "no_such_role_here",
    ];
    let found = pg
        .user_facts(&ep, &t.blue_role, &blue, &users)
        .await
        .unwrap();
    let facts = &found.users;
    assert!(facts[0].exists && facts[1].exists && !facts[2].exists);
    assert_eq!(
        facts[0].facts, facts[1].facts,
        "seeded users must be equivalent"
    );
    assert!(
        facts[0]
            .facts
            .iter()
            .any(|f| f.starts_with(&format!("member of {} ", t.owner_role))),
        "{:?}",
        facts[0].facts
    );
    assert!(facts[0].facts.contains(&"attribute LOGIN".to_string()));
    // No fact names the user itself.
    for f in &facts[0].facts {
        assert!(!f.contains(&t.blue_role), "{f}");
    }
    assert_eq!(facts[1].live_sessions, 0);
    assert_eq!(facts[1].valid_until_ms, None);
    assert!(!found.server.in_recovery && !found.server.read_only);
    assert!(found.server.wal_lsn.is_some());

    // A live session of green, and an expiry, show up.
    let session = stack.session(&t, "green", stack.pg_port).await;
    stack
        .admin("postgres")
        .await
        .batch_execute(&format!(
            "ALTER ROLE \"{}\" VALID UNTIL '2100-01-01 00:00:00+00'",
            t.green_role
        ))
        .await
        .unwrap();
    let found = pg
        .user_facts(&ep, &t.blue_role, &blue, &users[..2])
        .await
        .unwrap();
    assert_eq!(found.users[1].live_sessions, 1);
    assert_eq!(found.users[1].valid_until_ms, Some(4_102_444_800_000));
    drop(session);

    // The standby: in recovery, read-only, and it tells how far it replayed.
    let on_standby = Endpoint {
        port: stack.standby_port,
        ..ep.clone()
    };
    stack.standby_caught_up().await;
    let server = pg
        .check_login(&on_standby, &t.blue_role, &blue)
        .await
        .unwrap();
    assert!(server.in_recovery && server.read_only, "{server:?}");
    assert!(server.wal_lsn.is_some());
    // A database whose sessions are read-only.
    stack
        .admin("postgres")
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
            t.dbname
        ))
        .await
        .unwrap();
    let server = pg.check_login(&ep, &t.blue_role, &blue).await.unwrap();
    assert!(!server.in_recovery && server.read_only, "{server:?}");
}

/// The differences the preflight reports between blue and green after
/// `here` ran in their database and `elsewhere` in another database of the
/// server, as (only blue, only green). In both the statements and the
/// answer, `{b}`, `{g}`, `{o}` and `{d}` stand for the case's blue, green,
/// owner role and database, `{x}` for a name unique to the run.
async fn drift_after(
    tag: &str,
    x: &str,
    here: &str,
    elsewhere: &str,
) -> (Vec<String>, Vec<String>) {
    let stack = Stack::from_env().await;
    let t = Target::unique(tag);
    let (blue, _) = stack.seed_database(&t).await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    let users = [t.blue_role.as_str(), t.green_role.as_str()];
    let before = pg
        .user_facts(&ep, &t.blue_role, &blue, &users)
        .await
        .unwrap();
    assert_eq!(
        before.users[0].facts, before.users[1].facts,
        "{tag}: not equal to begin with"
    );
    let fill = |s: &str| {
        s.replace("{b}", &format!("\"{}\"", t.blue_role))
            .replace("{g}", &format!("\"{}\"", t.green_role))
            .replace("{o}", &format!("\"{}\"", t.owner_role))
            .replace("{d}", &format!("\"{}\"", t.dbname))
            .replace("{x}", x)
    };
    pgflip_tests::execute_each(&stack.admin(&t.dbname).await, tag, &fill(here)).await;
    if !elsewhere.is_empty() {
        let other = format!("{}_other", t.dbname);
        pgflip_tests::execute_each(
            &stack.admin("postgres").await,
            tag,
            &format!(
                "DROP DATABASE IF EXISTS \"{other}\" WITH (FORCE); CREATE DATABASE \"{other}\""
            ),
        )
        .await;
        pgflip_tests::execute_each(&stack.admin(&other).await, tag, &fill(elsewhere)).await;
    }
    let after = pg
        .user_facts(&ep, &t.blue_role, &blue, &users)
        .await
        .unwrap();
    let unfill = |f: &String| {
        f.replace(&t.dbname, "{d}")
            .replace(&t.owner_role, "{o}")
            .replace(&t.blue_role, "{b}")
            .replace(&t.green_role, "{g}")
            .replace(x, "{x}")
    };
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|f| !b.contains(f)).map(unfill).collect()
    };
    (
        only(&after.users[0].facts, &after.users[1].facts),
        only(&after.users[1].facts, &after.users[0].facts),
    )
}

/// Drift of every kind a login depends on is found, named, and put on the
/// right side: the three inputs from the field first, then the rest of the
/// kind (every object class with an ACL, grant options, default
/// privileges, policies, ownership here and in another database,
/// memberships and their options, attributes, settings).
#[tokio::test]
async fn drift_of_every_kind_is_found_and_named() {
    let x = format!("x{}", std::process::id());
    let stack = Stack::from_env().await;
    let ts_dir = std::path::PathBuf::from(std::env::var("PGFLIP_STACK_DIR").unwrap())
        .join(format!("ts-{x}"));
    std::fs::create_dir_all(&ts_dir).unwrap();
    {
        use std::os::unix::fs::{chown, MetadataExt};
        let owner = std::fs::metadata(stack.pg_log.parent().unwrap()).unwrap();
        chown(&ts_dir, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    // Cluster-wide objects some cases grant on.
    pgflip_tests::execute_each(
        &stack.admin("postgres").await,
        "setup",
        &format!(
            "DROP TABLESPACE IF EXISTS ts_{x}; CREATE TABLESPACE ts_{x} LOCATION '{}';
             DROP ROLE IF EXISTS extra_{x}; CREATE ROLE extra_{x} NOLOGIN;
             DROP ROLE IF EXISTS watcher_{x}; CREATE ROLE watcher_{x} NOLOGIN",
            ts_dir.display()
        ),
    )
    .await;
    // (case, in their database, in another database, only blue, only green)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("column grant (field input 1)", "CREATE TABLE audit (id int, note text); GRANT SELECT (note) ON audit TO {b}", "", "SELECT on column note of table audit", ""),
        ("function (field input 2)", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC; GRANT EXECUTE ON FUNCTION f() TO {b}", "", "EXECUTE on function f()", ""),
        ("default privileges (field input 3)", "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT SELECT ON TABLES TO {g}", "", "", "SELECT on default privileges on new relations belonging to role {o} in schema public"),
        ("procedure", "CREATE PROCEDURE p() LANGUAGE sql AS ''; REVOKE EXECUTE ON PROCEDURE p() FROM PUBLIC; GRANT EXECUTE ON PROCEDURE p() TO {g}", "", "", "EXECUTE on function p()"),
        ("sequence", "CREATE SEQUENCE counter; GRANT USAGE ON SEQUENCE counter TO {g}", "", "", "USAGE on sequence counter"),
        ("type", "CREATE TYPE mood AS ENUM ('ok'); REVOKE USAGE ON TYPE mood FROM PUBLIC; GRANT USAGE ON TYPE mood TO {b}", "", "USAGE on type mood", ""),
        ("domain", "CREATE DOMAIN positive AS int CHECK (VALUE > 0); REVOKE USAGE ON DOMAIN positive FROM PUBLIC; GRANT USAGE ON DOMAIN positive TO {g}", "", "", "USAGE on type positive"),
        ("schema", "CREATE SCHEMA reports; GRANT USAGE ON SCHEMA reports TO {g}", "", "", "USAGE on schema reports"),
        ("database", "GRANT CREATE ON DATABASE {d} TO {b}", "", "CREATE on database {d}", ""),
        ("language", "GRANT USAGE ON LANGUAGE plpgsql TO {g}", "", "", "USAGE on language plpgsql"),
        ("large object", "SELECT lo_create(4242); GRANT SELECT ON LARGE OBJECT 4242 TO {b}", "", "SELECT on large object 4242", ""),
        ("foreign-data wrapper", "CREATE FOREIGN DATA WRAPPER fdw_{x}; GRANT USAGE ON FOREIGN DATA WRAPPER fdw_{x} TO {g}", "", "", "USAGE on foreign-data wrapper fdw_{x}"),
        ("foreign server", "CREATE FOREIGN DATA WRAPPER w_{x}; CREATE SERVER s_{x} FOREIGN DATA WRAPPER w_{x}; GRANT USAGE ON FOREIGN SERVER s_{x} TO {b}", "", "USAGE on server s_{x}", ""),
        ("tablespace", "GRANT CREATE ON TABLESPACE ts_{x} TO {g}", "", "", "CREATE on tablespace ts_{x}"),
        ("parameter (15+)", "GRANT SET ON PARAMETER work_mem TO {b}", "", "SET on parameter work_mem", ""),
        ("grant option", "CREATE TABLE shared (); GRANT SELECT ON shared TO {b} WITH GRANT OPTION; GRANT SELECT ON shared TO {g}", "", "SELECT on table shared WITH GRANT OPTION", "SELECT on table shared"),
        ("row-level security policy", "CREATE TABLE rows (x int); ALTER TABLE rows ENABLE ROW LEVEL SECURITY; CREATE POLICY mine ON rows TO {g} USING (true)", "", "", "named in policy mine on table rows"),
        ("ownership", "CREATE TABLE owned (); ALTER TABLE owned OWNER TO {b}", "", "owner of table owned", ""),
        ("membership option", "GRANT {o} TO {g} WITH ADMIN OPTION", "", "member of {o} (admin_option=false)", "member of {o} (admin_option=true)"),
        ("membership", "GRANT extra_{x} TO {b}", "", "member of extra_{x} (admin_option=false)", ""),
        ("member", "GRANT {g} TO watcher_{x}", "", "", "has member watcher_{x} (admin_option=false)"),
        ("connection limit", "ALTER ROLE {g} CONNECTION LIMIT 5", "", "attribute CONNECTION LIMIT -1", "attribute CONNECTION LIMIT 5"),
        ("inherit", "ALTER ROLE {b} NOINHERIT", "", "attribute NOINHERIT", "attribute INHERIT"),
        ("bypassrls", "ALTER ROLE {g} BYPASSRLS", "", "attribute NOBYPASSRLS", "attribute BYPASSRLS"),
        ("valid until", "ALTER ROLE {b} VALID UNTIL '2100-01-01 00:00:00+00'", "", "attribute VALID UNTIL 2100-01-01T00:00:00+00:00", ""),
        ("role setting", "ALTER ROLE {g} SET search_path = reports, public", "", "", "setting search_path=reports, public"),
        ("per-database setting", "ALTER ROLE {b} IN DATABASE {d} SET work_mem = '8MB'", "", "setting work_mem=8MB in database {d}", ""),
        ("ownership in another database", "", "CREATE TABLE elsewhere (); ALTER TABLE elsewhere OWNER TO {g}", "", "in database {d}_other: owner of a pg_class object"),
        ("privileges in another database", "", "CREATE TABLE elsewhere (); CREATE TABLE more (); GRANT SELECT ON elsewhere, more TO {b}", "in database {d}_other: in the ACL of each pg_class object (×2)", ""),
    ];
    let mut problems = vec![];
    for (i, (case, here, elsewhere, only_blue, only_green)) in cases.iter().enumerate() {
        let (blue, green) = drift_after(&format!("drift{i}"), &x, here, elsewhere).await;
        let want = |s: &str| -> Vec<String> {
            if s.is_empty() {
                vec![]
            } else {
                vec![s.to_string()]
            }
        };
        eprintln!("{case:<36} only blue {blue:?}  only green {green:?}");
        if blue != want(only_blue) || green != want(only_green) {
            problems.push(format!(
                "{case}: only blue {blue:?} (want {only_blue:?}), only green {green:?} (want {only_green:?})"
            ));
        }
    }
    pgflip_tests::execute_each(
        &stack.admin("postgres").await,
        "cleanup",
        &format!("DROP TABLESPACE IF EXISTS ts_{x}"),
    )
    .await;
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[tokio::test]
async fn an_administrator_secret_can_set_the_password() {
    let (stack, t) = seeded("admin").await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    // A CREATEROLE role, as an RDS master user would be; not a superuser.
    let admin_role = format!("{}_admin", t.owner_role);
    let admin_pw = PasswordPolicy::default().generate();
    let su = stack.admin("postgres").await;
    su.simple_query(&format!("DROP ROLE IF EXISTS \"{admin_role}\""))
        .await
        .unwrap();
    su.simple_query(&format!(
        "CREATE ROLE \"{admin_role}\" LOGIN CREATEROLE PASSWORD '{}'",
        admin_pw.scram_verifier()
    ))
    .await
    .unwrap();
    su.simple_query(&format!(
        "GRANT CONNECT ON DATABASE \"{}\" TO \"{admin_role}\"",
        t.dbname
    ))
    .await
    .unwrap();
    let new = PasswordPolicy::default().generate();
    pg.set_password_as(&ep, &admin_role, &admin_pw, &t.green_role, &new)
        .await
        .unwrap();
    pg.check_login(&ep, &t.green_role, &new).await.unwrap();
    let stored: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&t.green_role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"));
    let log = std::fs::read_to_string(&stack.pg_log).unwrap();
    assert!(
        !log.contains(new.expose()),
        "the new password reached the server log"
    );
    // A user without CREATEROLE may not do it.
    let blue = stack.password_at(&t.blue_secret, AWSCURRENT).await;
    let err = pg
        .set_password_as(
            &ep,
            &t.blue_role,
            &blue,
            &t.green_role,
            &PasswordPolicy::default().generate(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), "PasswordChangeNotAllowed", "{err}");
    assert!(err.to_string().contains("CREATEROLE"), "{err}");
    pg.check_login(&ep, &t.green_role, &new).await.unwrap();
}

/// A CA, and a server certificate for `localhost` signed by it (PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pgflip test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

async fn set_server_tls(
    stack: &Stack,
    on: bool,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) {
    let su = stack.admin("postgres").await;
    if let Some((crt, key)) = cert {
        su.simple_query(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            crt.display()
        ))
        .await
        .unwrap();
        su.simple_query(&format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            key.display()
        ))
        .await
        .unwrap();
    }
    su.simple_query(&format!(
        "ALTER SYSTEM SET ssl = {}",
        if on { "on" } else { "off" }
    ))
    .await
    .unwrap();
    su.simple_query("SELECT pg_reload_conf()").await.unwrap();
    // The postmaster reloads asynchronously: wait until new sessions see it.
    for _ in 0..50 {
        let now = stack
            .admin("postgres")
            .await
            .query_one("SHOW ssl", &[])
            .await
            .unwrap();
        if now.get::<_, String>(0) == if on { "on" } else { "off" } {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server did not switch ssl to {on}");
}

/// TLS verify-full against the local PostgreSQL with a CA the test makes.
/// Other tests connect with sslmode disable, which the server still allows.
#[tokio::test]
async fn tls_verify_full_accepts_the_right_server_and_refuses_everything_else() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let (stack, t) = seeded("tls").await;
    let dir = std::path::PathBuf::from(std::env::var("PGFLIP_STACK_DIR").unwrap())
        .join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, crt, key) = certificates();
    let (other_ca, _, _) = certificates();
    let paths = ["ca.pem", "other-ca.pem", "server.crt", "server.key"].map(|f| dir.join(f));
    for (path, pem) in paths.iter().zip([&ca, &other_ca, &crt, &key]) {
        std::fs::write(path, pem).unwrap();
    }
    // The server runs as the data directory's owner and wants its key private.
    let owner = std::fs::metadata(std::path::Path::new(&stack.pg_log).parent().unwrap()).unwrap();
    for path in [&paths[2], &paths[3]] {
        chown(path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    std::fs::set_permissions(&paths[3], std::fs::Permissions::from_mode(0o600)).unwrap();

    let verify_full = |ca: &std::path::Path| {
        Postgres::new(DbConfig {
            ssl_mode: SslMode::VerifyFull,
            ssl_root_cert: Some(ca.display().to_string()),
            connect_timeout_seconds: 3,
            password_encryption: Default::default(),
        })
        .unwrap()
    };
    let at = |host: &str| Endpoint {
        host: host.into(),
        port: stack.pg_port,
        dbname: t.dbname.clone(),
    };
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;

    // 1. A server that offers no TLS is an error, never a plaintext fallback.
    set_server_tls(&stack, false, None).await;
    let err = verify_full(&paths[0])
        .check_login(&at("localhost"), &t.green_role, &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "DatabaseError", "{err}");
    assert!(err.to_string().contains("does not offer TLS"), "{err}");

    // 2. With TLS on: the right name and CA log in.
    set_server_tls(&stack, true, Some((&paths[2], &paths[3]))).await;
    verify_full(&paths[0])
        .check_login(&at("localhost"), &t.green_role, &green)
        .await
        .unwrap();

    // 3. A name the certificate does not carry (a DNS alias, say) is
    // refused, with its own name, the host and the reason.
    let err = verify_full(&paths[0])
        .check_login(&at("127.0.0.1"), &t.green_role, &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "TlsVerificationFailed", "{err}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:"), "{text}");
    assert!(
        text.contains("not valid for name") || text.contains("NotValidForName"),
        "{text}"
    );

    // 4. A certificate from a CA we do not trust is refused.
    let err = verify_full(&paths[1])
        .check_login(&at("localhost"), &t.green_role, &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "TlsVerificationFailed", "{err}");
    assert!(err.to_string().contains("localhost:"), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    // 5. Setting a password over verified TLS works end to end.
    let new = PasswordPolicy::default().generate();
    verify_full(&paths[0])
        .set_own_password(&at("localhost"), &t.green_role, &green, &new)
        .await
        .unwrap();
    verify_full(&paths[0])
        .check_login(&at("localhost"), &t.green_role, &new)
        .await
        .unwrap();
}

#[test]
fn a_ca_bundle_without_certificates_is_a_configuration_error() {
    let path = std::env::temp_dir().join(format!("empty-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = Postgres::new(DbConfig {
        ssl_mode: SslMode::VerifyFull,
        ssl_root_cert: Some(path.display().to_string()),
        connect_timeout_seconds: 3,
        password_encryption: Default::default(),
    })
    .err()
    .expect("refused");
    std::fs::remove_file(&path).ok();
    assert_eq!(err.name(), "ConfigurationError");
}

fn postgres_storing(encryption: PasswordEncryption) -> Postgres {
    Postgres::new(DbConfig {
        ssl_mode: SslMode::Disable,
        ssl_root_cert: None,
        connect_timeout_seconds: 3,
        password_encryption: encryption,
    })
    .unwrap()
}

async fn stored_verifier(stack: &Stack, port: u16, role: &str) -> String {
    stack
        .admin_at(port, "postgres")
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

/// On a server with `password_encryption = md5` and md5 in pg_hba.conf, the
/// new password is stored as md5 (computed here: the plaintext never goes
/// to the server) and a client that speaks only md5 logs in with it. Stored
/// as SCRAM, as before, that client was refused.
#[tokio::test]
async fn the_stored_verifier_follows_the_servers_password_encryption() {
    let stack = Stack::from_env().await;
    let mut t = Target::unique("md5srv");
    t.port = Some(stack.md5_port);
    let (_, green) = stack.seed_database(&t).await;
    let ep = Endpoint {
        port: stack.md5_port,
        ..endpoint(&stack, &t)
    };
    let md5_client = |password: &Password| {
        pgflip_tests::md5_only_login(
            &stack.pg_host,
            stack.md5_port,
            &t.green_role,
            password,
            &t.dbname,
        )
    };
    md5_client(&green).expect("seeded as md5: an md5-only client logs in");

    // Default (auto): what the server says, md5.
    let new = PasswordPolicy::default().generate();
    postgres()
        .set_own_password(&ep, &t.green_role, &green, &new)
        .await
        .unwrap();
    let stored = stored_verifier(&stack, stack.md5_port, &t.green_role).await;
    assert!(
        stored.starts_with("md5") && stored.len() == 35,
        "not an md5 verifier"
    );
    md5_client(&new).expect("an md5-only client logs in with the new password");
    postgres()
        .check_login(&ep, &t.green_role, &new)
        .await
        .unwrap();
    let log = std::fs::read_to_string(std::env::var("PGFLIP_PG_MD5_LOG").unwrap()).unwrap();
    assert!(
        log.contains("ALTER ROLE CURRENT_USER PASSWORD 'md5"),
        "statement not logged"
    );
    assert!(
        !log.contains(new.expose()),
        "the plaintext reached the server"
    );

    // Forced SCRAM (DB_PASSWORD_ENCRYPTION=scram-sha-256): SCRAM there, and
    // the md5-only client is refused, as it was before.
    let scram = PasswordPolicy::default().generate();
    postgres_storing(PasswordEncryption::ScramSha256)
        .set_own_password(&ep, &t.green_role, &new, &scram)
        .await
        .unwrap();
    assert!(stored_verifier(&stack, stack.md5_port, &t.green_role)
        .await
        .starts_with("SCRAM-SHA-256$4096:"));
    let refused = md5_client(&scram).unwrap_err();
    assert!(refused.contains("SCRAM"), "{refused}");

    // Forced md5 on the SCRAM server; and a SCRAM verifier with another
    // iteration count (PostgreSQL 16's scram_iterations) logs in too.
    let (stack2, t2) = seeded("md5forced").await;
    let ep2 = endpoint(&stack2, &t2);
    let old = stack2.password_at(&t2.green_secret, AWSCURRENT).await;
    let forced = PasswordPolicy::default().generate();
    postgres_storing(PasswordEncryption::Md5)
        .set_own_password(&ep2, &t2.green_role, &old, &forced)
        .await
        .unwrap();
    assert!(stored_verifier(&stack2, stack2.pg_port, &t2.green_role)
        .await
        .starts_with("md5"));
    let iterated = PasswordPolicy::default().generate();
    stack2
        .admin("postgres")
        .await
        .batch_execute(&format!(
            "ALTER ROLE \"{}\" PASSWORD '{}'",
            t2.green_role,
            iterated.verifier(Verifier::ScramSha256 { iterations: 10_000 }, &t2.green_role)
        ))
        .await
        .unwrap();
    assert!(stored_verifier(&stack2, stack2.pg_port, &t2.green_role)
        .await
        .starts_with("SCRAM-SHA-256$10000:"));
    postgres()
        .check_login(&ep2, &t2.green_role, &iterated)
        .await
        .unwrap();
}

/// A user that may not change its own password gets a named error that says
/// what to configure. PostgreSQL 15 refuses it (42501) to a role with the
/// REPLICATION attribute; RDS's rds.restrict_password_commands does the
/// same to everyone outside rds_password.
#[tokio::test]
async fn a_user_that_may_not_change_its_own_password_is_told_to_configure_an_administrator() {
    let (stack, t) = seeded("restricted").await;
    stack
        .admin("postgres")
        .await
        .batch_execute(&format!("ALTER ROLE \"{}\" REPLICATION", t.green_role))
        .await
        .unwrap();
    let green = stack.password_at(&t.green_secret, AWSCURRENT).await;
    let err = postgres()
        .set_own_password(
            &endpoint(&stack, &t),
            &t.green_role,
            &green,
            &PasswordPolicy::default().generate(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), "PasswordChangeNotAllowed", "{err}");
    assert!(err.to_string().contains("DB_ADMIN_SECRET_ID"), "{err}");
    assert!(err.to_string().contains("42501"), "{err}");
    postgres()
        .check_login(&endpoint(&stack, &t), &t.green_role, &green)
        .await
        .unwrap();
}

/// Both stores take the pending label off a version (and leave it there,
/// unlabelled); a version without the label is left alone.
#[tokio::test]
async fn both_password_stores_discard_a_pending_version() {
    let (stack, t) = seeded("discard").await;
    let sm = SecretsManager::new(stack.secrets.clone());
    let current = sm
        .get_stage(&t.green_secret, AWSCURRENT)
        .await
        .unwrap()
        .unwrap();
    let staged = current
        .secret
        .with_password(PasswordPolicy::default().generate());
    let v = sm
        .put_pending(
            &t.green_secret,
            &client_request_token("discard-test"),
            &staged.to_secret_string(),
        )
        .await
        .unwrap();
    sm.discard_pending(&t.green_secret, &v).await.unwrap();
    let state = stack.secret_state(&t.green_secret).await;
    assert_eq!(state.pending, None);
    assert_eq!(state.current, current.version_id);
    assert_eq!(state.versions, 2, "the version itself stays");
    sm.discard_pending(&t.green_secret, &v).await.unwrap();
    sm.discard_pending(&t.green_secret, &current.version_id)
        .await
        .unwrap();
    assert_eq!(
        stack.secret_state(&t.green_secret).await.current,
        current.version_id
    );

    let t = Target::unique_in_ssm("discardssm", "discard-ssm");
    stack.seed(&t).await;
    let ssm = SsmPasswordStore::new(stack.ssm.clone());
    let v = ssm
        .put_pending(
            &t.green_secret,
            "unused",
            &PasswordPolicy::default().generate(),
        )
        .await
        .unwrap();
    assert_eq!(
        stack.secret_state(&t.green_secret).await.pending.as_deref(),
        Some(v.as_str())
    );
    ssm.discard_pending(&t.green_secret, &v).await.unwrap();
    let state = stack.secret_state(&t.green_secret).await;
    assert_eq!(state.pending, None);
    assert_eq!(
        state.current, "1",
        "the version pgflip labelled current stays current"
    );
    ssm.discard_pending(&t.green_secret, &v).await.unwrap();
}

/// moto models RDS Proxy: the adapter reads the secrets of its Auth list,
/// and names a proxy that does not exist.
#[tokio::test]
async fn both_password_stores_tell_when_the_current_password_was_set_without_reading_it() {
    let stack = Stack::from_env().await;
    let sm = SecretsManager::new(stack.secrets.clone());
    let ssm = SsmPasswordStore::new(stack.ssm.clone());
    for (t, store) in [
        (Target::unique("ages_sm"), &sm as &dyn SecretStore),
        (
            Target::unique_in_ssm("ages_ssm", "ages-ssm"),
            &ssm as &dyn SecretStore,
        ),
    ] {
        let before = pgflip_core::steps::now_ms() - 1000;
        stack.seed(&t).await;
        let current = store
            .current_version(&t.green_secret)
            .await
            .unwrap()
            .expect("a current version");
        let created = current.created_ms.expect("a creation time");
        assert!(
            created >= before,
            "{}: {created} < {before}",
            t.green_secret
        );
        // A pending version is not the current one.
        store
            .put_pending(
                &t.green_secret,
                &client_request_token("ages"),
                &Password::new(
                    if in_ssm(&t.green_secret) {
                        "Pending-password-0123456789abcdef".to_string()
                    } else {
                        serde_json::json!({"engine": "postgres", "host": "h", "port": 5432, "dbname": "d", "username": t.green_role, "password": "Pending-password-0123456789abcdef"}).to_string()
                    },
                ),
            )
            .await
            .unwrap();
        // (moto answers the time of the call as a secret version's
        // CreatedDate: the version id is what is compared.)
        assert_eq!(
            store
                .current_version(&t.green_secret)
                .await
                .unwrap()
                .map(|v| v.version_id),
            Some(current.version_id.clone())
        );
        // (moto 5.2.5 answers ListSecretVersionIds on a missing secret with
        // a 500, where AWS says ResourceNotFoundException, which the adapter
        // maps like every other call: only the SSM store is checked here.)
        if in_ssm(&t.green_secret) {
            let err = store
                .current_version("/pgflip-test/no-such-parameter")
                .await
                .unwrap_err();
            assert_eq!(err.name(), "SecretNotFound");
        }
    }
}

#[tokio::test]
async fn rds_proxy_lists_the_secrets_it_authenticates_with() {
    let (stack, t) = seeded("proxy").await;
    let blue_arn = stack.secret_arn(&t.blue_secret).await;
    let name = format!("proxy-{}", std::process::id());
    pgflip_tests::rds_proxy(&name, &[&blue_arn]);
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let rds = aws_sdk_rds::Client::new(&aws);
    let proxies = RdsProxies::new(rds);
    assert_eq!(proxies.auth_secrets(&name).await.unwrap(), vec![blue_arn]);
    let err = proxies.auth_secrets("no-such-proxy").await.unwrap_err();
    assert_eq!(err.name(), "ConfigurationError", "{err}");
}
