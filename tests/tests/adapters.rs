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
    let id = ecs.force_new_deployment(&t.cluster, "web").await.unwrap();
    assert_ne!(id, before[0].1);
    let described = ecs.describe(&t.cluster, &t.services).await.unwrap();
    let web = described[0]
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
    assert!(facts[0].exists && facts[1].exists && !facts[2].exists);
    assert_eq!(
        facts[0].grants, facts[1].grants,
        "seeded users must be equivalent"
    );
    assert!(facts[0]
        .grants
        .contains(&format!("member of {}", t.owner_role)));
    assert_eq!(facts[1].live_sessions, 0);

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
        facts[1]
            .grants
            .contains(&"USAGE on sequence counter".to_string()),
        "{:?}",
        facts[1].grants
    );
    assert!(
        facts[1]
            .grants
            .contains(&"setting statement_timeout=5s".to_string()),
        "{:?}",
        facts[1].grants
    );
    assert!(!facts[0]
        .grants
        .contains(&"USAGE on sequence counter".to_string()));
    assert_eq!(facts[1].live_sessions, 1);
    drop(session);
}
