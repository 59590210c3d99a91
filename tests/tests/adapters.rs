//! The adapters against the real local stack: SSM, Secrets Manager and ECS on
//! moto, PostgreSQL 15 with SCRAM. Each test seeds a target of its own, so
//! these run in parallel.

use pgflip_core::adapters::{
    ecs::EcsDeployments, postgres::Postgres, secrets::SecretsManager, ssm::SsmParameters,
};
use pgflip_core::config::{DbConfig, SslMode};
use pgflip_core::domain::{Endpoint, AWSCURRENT, AWSPENDING};
use pgflip_core::password::{Password, PasswordPolicy};
use pgflip_core::ports::*;
use pgflip_core::steps::client_request_token;
use pgflip_tests::{Stack, Target};

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
async fn postgres_reads_privileges_and_sessions_for_the_preflight() {
    let (stack, t) = seeded("facts").await;
    let pg = postgres();
    let ep = endpoint(&stack, &t);
    let blue = stack.password_at(&t.blue_secret, AWSCURRENT).await;
    let users = [
        t.blue_role.as_str(),
        t.green_role.as_str(),
        "no_such_role_here",
    ];
    let facts = pg
        .user_facts(&ep, &t.blue_role, &blue, &users)
        .await
        .unwrap();
    assert!(facts.users[0].exists && facts.users[1].exists && !facts.users[2].exists);
    assert_eq!(
        facts.users[0].facts, facts.users[1].facts,
        "seeded users must be equivalent"
    );
    assert!(facts.users[0]
        .facts
        .contains(&format!("member of {}", t.owner_role)));
    assert_eq!(facts.users[1].live_sessions, 0);

    // Drift and a live session of green show up.
    let db = stack.admin(&t.dbname).await;
    db.batch_execute(&format!(
        "CREATE SEQUENCE counter; GRANT USAGE ON SEQUENCE counter TO \"{}\"; ALTER ROLE \"{}\" SET statement_timeout = '5s'",
        t.green_role, t.green_role
    ))
    .await
    .unwrap();
    let green_pw = stack.password_at(&t.green_secret, AWSCURRENT).await;
    let (session, conn) = tokio_postgres::Config::new()
        .host(&stack.pg_host)
        .port(stack.pg_port)
        .user(&t.green_role)
        .password(green_pw.expose())
        .dbname(&t.dbname)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let facts = pg
        .user_facts(&ep, &t.blue_role, &blue, &users[..2])
        .await
        .unwrap();
    assert!(
        facts.users[1]
            .facts
            .contains(&"USAGE on sequence counter".to_string()),
        "{:?}",
        facts.users[1].facts
    );
    assert!(
        facts.users[1]
            .facts
            .contains(&"setting statement_timeout=5s".to_string()),
        "{:?}",
        facts.users[1].facts
    );
    assert!(!facts.users[0]
        .facts
        .contains(&"USAGE on sequence counter".to_string()));
    assert_eq!(facts.users[1].live_sessions, 1);
    drop(session);
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
    assert_eq!(err.name(), "DatabaseError", "{err}");
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

    // 3. A name the certificate does not carry is refused.
    let err = verify_full(&paths[0])
        .check_login(&at("127.0.0.1"), &t.green_role, &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "DatabaseError", "{err}");
    assert!(err.to_string().contains("failed verification"), "{err}");

    // 4. A certificate from a CA we do not trust is refused.
    let err = verify_full(&paths[1])
        .check_login(&at("localhost"), &t.green_role, &green)
        .await
        .unwrap_err();
    assert_eq!(err.name(), "DatabaseError", "{err}");
    assert!(err.to_string().contains("failed verification"), "{err}");

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
    assert_eq!(err.name(), "ConfigurationError");
}
