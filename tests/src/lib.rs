//! Test support for the local stack: seed a rotation target (PostgreSQL roles
//! and database, SSM parameter, two secrets, an ECS cluster with services),
//! inspect it, and run the state machine through `scripts/sfn/run.mjs`.
//!
//! The stack's endpoints come from the environment that `scripts/test` and
//! `scripts/rotate-local` export (`$STACK_DIR/stack.env`).

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_config::BehaviorVersion;
use pgflip_core::domain::{AWSCURRENT, AWSPENDING};
use pgflip_core::password::PasswordPolicy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: run the integration tests through scripts/test, which starts the local stack")
    })
}

/// What one rotation acts on, with the names the Lambdas are configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub parameter_name: String,
    pub blue_secret: String,
    pub green_secret: String,
    pub dbname: String,
    pub blue_role: String,
    pub green_role: String,
    pub owner_role: String,
    pub cluster: String,
    pub services: Vec<String>,
    /// The name under which the targets document lists it (`None`: the
    /// target the Lambdas' environment describes).
    #[serde(default)]
    pub name: Option<String>,
    /// The values the active-user parameter holds for the two users, when
    /// they are not `blue` and `green` (bare passwords: the database roles).
    #[serde(default)]
    pub keys: Option<(String, String)>,
    /// The PostgreSQL server the target lives on (`None`: the stack's
    /// primary; the md5 server's port for a target there).
    #[serde(default)]
    pub port: Option<u16>,
    /// More fields of its entry in the targets document (readers, a proxy…).
    #[serde(default)]
    pub document: Value,
    /// The alternating-secret layout: this one secret (AWSCURRENT names the
    /// active role) instead of the two secrets; `parameter_name` is then
    /// the optional parameter kept equal to it, and the users are the roles.
    #[serde(default)]
    pub alternating: Option<String>,
}

/// The SSM parameter holding the targets document (`TARGETS_PARAMETER` of
/// the local Lambdas, scripts/lib/stack.sh).
pub const TARGETS_DOCUMENT: &str = "/pgflip-local/targets";

/// The registry path of one parameter per target (`TARGETS_PATH` of the
/// local Lambdas, scripts/lib/stack.sh).
pub const TARGETS_REGISTRY: &str = "/pgflip-local/registry";

/// Whether a password id names an SSM parameter (names start with "/") or a
/// Secrets Manager secret.
pub fn in_ssm(secret_id: &str) -> bool {
    secret_id.starts_with('/')
}

impl Target {
    /// The target the local Lambdas are configured for (scripts/lib/stack.sh).
    pub fn local() -> Self {
        Self {
            parameter_name: "/pgflip-local/app/active-user".into(),
            blue_secret: "pgflip-local/app/blue".into(),
            green_secret: "pgflip-local/app/green".into(),
            dbname: "app".into(),
            blue_role: "blue".into(),
            green_role: "green".into(),
            owner_role: "app_owner".into(),
            cluster: "pgflip-local".into(),
            services: vec!["web".into(), "worker".into()],
            name: None,
            keys: None,
            port: None,
            document: Value::Null,
            alternating: None,
        }
    }

    /// A target of its own, for tests that run in parallel.
    pub fn unique(tag: &str) -> Self {
        let id = format!("{tag}_{}", std::process::id());
        Self {
            parameter_name: format!("/pgflip-test/{id}/active-user"),
            blue_secret: format!("pgflip-test/{id}/blue"),
            green_secret: format!("pgflip-test/{id}/green"),
            dbname: format!("db_{id}"),
            blue_role: format!("{id}_blue"),
            green_role: format!("{id}_green"),
            owner_role: format!("{id}_owner"),
            cluster: format!("cluster-{id}"),
            services: vec!["web".into(), "worker".into()],
            name: None,
            keys: None,
            port: None,
            document: Value::Null,
            alternating: None,
        }
    }

    /// A target of the targets document, named `name`, whose passwords are
    /// SSM SecureString parameters holding just the password (setup (a)).
    pub fn unique_in_ssm(tag: &str, name: &str) -> Self {
        let mut t = Self::unique(tag);
        let id = format!("{tag}_{}", std::process::id());
        t.blue_secret = format!("/pgflip-test/{id}/blue-password");
        t.green_secret = format!("/pgflip-test/{id}/green-password");
        t.name = Some(name.into());
        // A bare password does not say whose it is: the parameter names the role.
        t.keys = Some((t.blue_role.clone(), t.green_role.clone()));
        t
    }

    /// A target of the targets document in the alternating-secret layout
    /// (AWS's alternating users: a role and its clone in one secret).
    pub fn alternating(mut self, secret: &str, name: &str) -> Self {
        self.blue_secret = secret.into();
        self.green_secret = secret.into();
        self.alternating = Some(secret.into());
        self.name = Some(name.into());
        self.keys = Some((self.blue_role.clone(), self.green_role.clone()));
        self
    }

    /// The alternating target `scripts/rotate-local --layout
    /// alternating-secret` rotates: `app` and its clone, in a database and
    /// a cluster of their own.
    pub fn local_alternating() -> Self {
        let mut t = Self::local();
        t.parameter_name = "/pgflip-local/alt/active-user".into();
        t.dbname = "alt".into();
        t.blue_role = "alt_app".into();
        t.green_role = "alt_app_clone".into();
        t.owner_role = "alt_owner".into();
        t.cluster = "pgflip-local-alt".into();
        t.alternating("pgflip-local/alt/app", "alternating")
    }

    /// The parameter's value for `blue` or `green`.
    pub fn key(&self, color: &str) -> String {
        match (&self.keys, color) {
            (Some((blue, _)), "blue") => blue.clone(),
            (Some((_, green)), "green") => green.clone(),
            (None, "blue" | "green") => color.to_string(),
            (_, other) => panic!("no user {other:?}"),
        }
    }

    /// `blue` or `green`, for a value of the parameter.
    pub fn color_of(&self, key: &str) -> Option<&'static str> {
        ["blue", "green"].into_iter().find(|c| self.key(c) == key)
    }

    /// A target of the targets document, named `name`, in Secrets Manager.
    pub fn unique_named(tag: &str, name: &str) -> Self {
        let mut t = Self::unique(tag);
        t.name = Some(name.into());
        t
    }

    /// The execution input that rotates this target.
    pub fn input(&self) -> Value {
        match &self.name {
            Some(name) => json!({ "target": name }),
            None => json!({}),
        }
    }

    pub fn secret_of(&self, key: &str) -> &str {
        match self.color_of(key).unwrap_or("?") {
            "blue" => &self.blue_secret,
            "green" => &self.green_secret,
            _ => panic!("no user key {key:?}"),
        }
    }

    pub fn role_of(&self, key: &str) -> &str {
        match self.color_of(key).unwrap_or("?") {
            "blue" => &self.blue_role,
            "green" => &self.green_role,
            _ => panic!("no user key {key:?}"),
        }
    }
}

/// One secret's labels, by version id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    pub current: String,
    pub pending: Option<String>,
    pub versions: usize,
}

/// What the rotation may change, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub active_user: String,
    pub blue: SecretState,
    pub green: SecretState,
    /// (service, PRIMARY deployment id)
    pub deployments: Vec<(String, String)>,
}

impl Snapshot {
    pub fn secret(&self, key: &str) -> &SecretState {
        match key {
            "blue" => &self.blue,
            _ => &self.green,
        }
    }
}

/// The outcome of one state machine execution, as `run.mjs` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Execution {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub output: Value,
    /// The state an `abortAfter` scenario action aborted in.
    #[serde(default, rename = "abortedIn")]
    pub aborted_in: Option<String>,
    pub transitions: u32,
    pub states: Vec<String>,
    pub invocations: std::collections::BTreeMap<String, u32>,
    /// A sweep's child executions, in the order they ran.
    #[serde(default)]
    pub children: Vec<ChildExecution>,
    #[serde(rename = "durationMs")]
    pub duration_ms: u64,
    /// The runner's progress lines (stderr).
    #[serde(skip)]
    pub progress: String,
}

/// One rotation a sweep started.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildExecution {
    pub target: String,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The child's own state transitions and Lambda invocations.
    #[serde(default)]
    pub transitions: u32,
    #[serde(default)]
    pub invocations: std::collections::BTreeMap<String, u32>,
    /// The state an `abortAfter` action of its scenario aborted it in.
    #[serde(default)]
    pub aborted_in: Option<String>,
    /// The child execution's own time (its runner's start left out).
    #[serde(default)]
    pub duration_ms: u64,
}

/// Options of one state machine run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub input: Option<Value>,
    pub name: Option<String>,
    pub scenario: Option<Value>,
    pub start_at: Option<String>,
    pub state_input: Option<Value>,
    pub history: Option<PathBuf>,
    /// Another definition than statemachine/rotation.asl.json (the sweep).
    pub definition: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Stack {
    pub pg_host: String,
    pub pg_port: u16,
    /// A streaming hot standby of the primary.
    pub standby_port: u16,
    /// A separate server with `password_encryption = md5` and md5 in pg_hba.conf.
    pub md5_port: u16,
    superuser: String,
    superpass: String,
    pub pg_log: PathBuf,
    pub lambda_endpoint: String,
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub ecs: aws_sdk_ecs::Client,
}

impl Stack {
    pub async fn from_env() -> Self {
        Self::with_config(aws_config::load_defaults(BehaviorVersion::latest()).await)
    }

    /// [`Stack::from_env`] whose AWS clients mark their requests with
    /// `app/<app>` in the user agent, so that a count of the Lambdas' calls
    /// in moto's request recorder can leave a tool's own calls out.
    pub async fn from_env_as(app: &str) -> Self {
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .app_name(aws_config::AppName::new(app.to_string()).expect("a valid app name"))
            .load()
            .await;
        Self::with_config(aws)
    }

    fn with_config(aws: aws_config::SdkConfig) -> Self {
        env("AWS_ENDPOINT_URL");
        Self {
            pg_host: env("PGFLIP_PG_HOST"),
            pg_port: env("PGFLIP_PG_PORT").parse().unwrap(),
            standby_port: env("PGFLIP_PG_STANDBY_PORT").parse().unwrap(),
            md5_port: env("PGFLIP_PG_MD5_PORT").parse().unwrap(),
            superuser: env("PGFLIP_PG_SUPERUSER"),
            superpass: env("PGFLIP_PG_SUPERPASS"),
            pg_log: env("PGFLIP_PG_LOG").into(),
            lambda_endpoint: env("PGFLIP_LAMBDA_ENDPOINT"),
            ssm: aws_sdk_ssm::Client::new(&aws),
            secrets: aws_sdk_secretsmanager::Client::new(&aws),
            ecs: aws_sdk_ecs::Client::new(&aws),
        }
    }

    /// The extra SCRAM servers' ports (`PGFLIP_EXTRA_SERVERS` of
    /// scripts/lib/stack.sh; none by default).
    pub fn extra_ports(&self) -> Vec<u16> {
        std::env::var("PGFLIP_PG_EXTRA_PORTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// A superuser connection to `dbname` on the primary.
    pub async fn admin(&self, dbname: &str) -> tokio_postgres::Client {
        self.admin_at(self.pg_port, dbname).await
    }

    /// The server `t` lives on.
    pub fn port_of(&self, t: &Target) -> u16 {
        t.port.unwrap_or(self.pg_port)
    }

    /// A superuser connection to `dbname` on the server at `port`.
    pub async fn admin_at(&self, port: u16, dbname: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host(&self.pg_host)
            .port(port)
            .user(&self.superuser)
            .password(&self.superpass)
            .dbname(dbname)
            .connect(NoTls)
            .await
            .expect("superuser connection to the local PostgreSQL");
        tokio::spawn(conn);
        client
    }

    /// The database part of [`Stack::seed`]: the two users (members of the
    /// owner role), the database and its sample table, on the target's
    /// server. Returns the users' passwords (blue, green).
    pub async fn seed_database(
        &self,
        t: &Target,
    ) -> (
        pgflip_core::password::Password,
        pgflip_core::password::Password,
    ) {
        let policy = PasswordPolicy::default();
        let (blue_pw, green_pw) = (policy.generate(), policy.generate());
        let port = self.port_of(t);
        let admin = self.admin_at(port, "postgres").await;
        // Stored the way that server stores passwords.
        let verifier = |pw: &pgflip_core::password::Password, role: &str| {
            if port == self.md5_port {
                pw.verifier(pgflip_core::password::Verifier::Md5, role)
            } else {
                pw.scram_verifier()
            }
        };
        let statements = [
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", t.dbname),
            // What a test granted them elsewhere (parameters, tablespaces).
            format!(
                "DO $$ DECLARE r name; BEGIN
                   FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('{}', '{}', '{}') LOOP
                     EXECUTE format('DROP OWNED BY %I', r);
                   END LOOP; END $$",
                t.blue_role, t.green_role, t.owner_role
            ),
            format!("DROP ROLE IF EXISTS \"{}\"", t.blue_role),
            format!("DROP ROLE IF EXISTS \"{}\"", t.green_role),
            format!("DROP ROLE IF EXISTS \"{}\"", t.owner_role),
            format!("CREATE ROLE \"{}\" NOLOGIN", t.owner_role),
            format!(
                "CREATE ROLE \"{}\" LOGIN IN ROLE \"{}\" PASSWORD '{}'",
                t.blue_role,
                t.owner_role,
                verifier(&blue_pw, &t.blue_role)
            ),
            format!(
                "CREATE ROLE \"{}\" LOGIN IN ROLE \"{}\" PASSWORD '{}'",
                t.green_role,
                t.owner_role,
                verifier(&green_pw, &t.green_role)
            ),
            format!(
                "CREATE DATABASE \"{}\" OWNER \"{}\"",
                t.dbname, t.owner_role
            ),
        ];
        for statement in &statements {
            admin.simple_query(statement).await.unwrap_or_else(|e| {
                panic!(
                    "seed: {}: {e}",
                    statement.split(" PASSWORD").next().unwrap()
                )
            });
        }
        let db = self.admin_at(port, &t.dbname).await;
        db.batch_execute(&format!(
            "SET ROLE \"{owner}\";
             CREATE TABLE orders (id bigserial PRIMARY KEY, item text NOT NULL, created timestamptz DEFAULT now());
             INSERT INTO orders (item) VALUES ('first'), ('second');",
            owner = t.owner_role
        ))
        .await
        .expect("create the sample table");
        (blue_pw, green_pw)
    }

    /// Creates (or re-creates) the target from scratch: roles, database, a
    /// sample table owned by the shared owner role, the active-user
    /// parameter (`blue`), the two secrets and the ECS services.
    pub async fn seed(&self, t: &Target) {
        let (blue_pw, green_pw) = self.seed_database(t).await;
        let port = self.port_of(t);

        let pairs = if let Some(secret) = &t.alternating {
            // AWS's alternating users after a rotation: green (the clone)
            // in AWSPREVIOUS, blue in AWSCURRENT.
            let _ = self
                .secrets
                .delete_secret()
                .secret_id(secret)
                .force_delete_without_recovery(true)
                .send()
                .await;
            for (i, (role, pw)) in [(&t.green_role, &green_pw), (&t.blue_role, &blue_pw)]
                .into_iter()
                .enumerate()
            {
                let value = json!({
                    "engine": "postgres", "host": self.pg_host, "port": port,
                    "dbname": t.dbname, "username": role, "password": pw.expose(),
                })
                .to_string();
                if i == 0 {
                    self.secrets
                        .create_secret()
                        .name(secret)
                        .secret_string(value)
                        .send()
                        .await
                        .expect("create the alternating secret");
                } else {
                    let put = self
                        .secrets
                        .put_secret_value()
                        .secret_id(secret)
                        .secret_string(value)
                        .send()
                        .await
                        .expect("put the active user's version");
                    // pgflip has seen it (a first run records when it saw
                    // an AWSCURRENT another rotator set, then redeploys):
                    // the services are deployed after, so the first run
                    // rotates. `forget_flips` undoes it.
                    self.record_flip(secret, put.version_id().unwrap()).await;
                }
            }
            vec![]
        } else {
            vec![
                (&t.blue_secret, &t.blue_role, &blue_pw),
                (&t.green_secret, &t.green_role, &green_pw),
            ]
        };
        for (secret, role, pw) in pairs {
            if in_ssm(secret) {
                // As setup (a) keeps it: the bare password, encrypted.
                let _ = self
                    .ssm
                    .delete_parameter()
                    .name(secret.as_str())
                    .send()
                    .await;
                self.ssm
                    .put_parameter()
                    .name(secret.as_str())
                    .value(pw.expose())
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .send()
                    .await
                    .expect("create a user's password parameter");
                continue;
            }
            let _ = self
                .secrets
                .delete_secret()
                .secret_id(secret)
                .force_delete_without_recovery(true)
                .send()
                .await;
            let value = json!({
                "engine": "postgres", "host": self.pg_host, "port": port,
                "dbname": t.dbname, "username": role, "password": pw.expose(),
            });
            self.secrets
                .create_secret()
                .name(secret)
                .secret_string(value.to_string())
                .send()
                .await
                .expect("create a user's secret");
        }

        // The parameter after the secrets, the deployments after the parameter:
        // the order of a finished rotation, so the first run rotates.
        self.ssm
            .put_parameter()
            .name(&t.parameter_name)
            .value(t.key("blue"))
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("put the active-user parameter");
        // A version made from now on compares as newer than the parameter.
        next_second().await;

        self.create_cluster(&t.cluster).await;
        let family = format!("{}-app", t.cluster);
        let existing = self
            .ecs
            .describe_services()
            .cluster(&t.cluster)
            .set_services(Some(t.services.clone()))
            .send()
            .await
            .expect("describe services");
        for service in &t.services {
            let active = existing.services().iter().any(|s| {
                s.service_name() == Some(service.as_str()) && s.status() == Some("ACTIVE")
            });
            if active {
                // The parameter was just written: roll it out, as an operator
                // would, so the target starts consistent (no unfinished flip).
                self.redeploy(t, service).await;
            } else {
                self.create_service(t, service, &family).await;
            }
        }
    }

    /// Creates `service` in `t`'s cluster, running `family` with 2 tasks
    /// (which moto reports as a COMPLETED rollout).
    async fn create_service(&self, t: &Target, service: &str, family: &str) {
        self.ecs
            .create_service()
            .cluster(&t.cluster)
            .service_name(service)
            .task_definition(family)
            .desired_count(2)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create service {service}: {e}"));
    }

    /// Writes pgflip's flip record on `secret_id` (the tag
    /// `pgflip:flipped-at`): `version_id` is `AWSCURRENT` since now.
    pub async fn record_flip(&self, secret_id: &str, version_id: &str) {
        let record = pgflip_core::ports::FlipRecord {
            at_ms: pgflip_core::steps::now_ms(),
            version_id: version_id.to_string(),
        };
        self.secrets
            .tag_resource()
            .secret_id(secret_id)
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(pgflip_core::ports::FLIPPED_AT_TAG)
                    .value(record.render())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("tag {secret_id}: {e}"));
    }

    /// Removes pgflip's flip record from `secret_id`: an alternating secret
    /// as AWS's rotation leaves it, before pgflip first saw it.
    pub async fn forget_flips(&self, secret_id: &str) {
        self.secrets
            .untag_resource()
            .secret_id(secret_id)
            .tag_keys(pgflip_core::ports::FLIPPED_AT_TAG)
            .send()
            .await
            .unwrap_or_else(|e| panic!("untag {secret_id}: {e}"));
    }

    /// The version pgflip's flip record names, if any.
    pub async fn recorded_flip(&self, secret_id: &str) -> Option<String> {
        let d = self
            .secrets
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe {secret_id}: {e}"));
        d.tags()
            .iter()
            .find(|t| t.key() == Some(pgflip_core::ports::FLIPPED_AT_TAG))
            .and_then(|t| t.value())
            .and_then(pgflip_core::ports::FlipRecord::parse)
            .map(|r| r.version_id)
    }

    /// Forces a new deployment of one of the target's services, as an
    /// operator (or a finished rotation) would.
    pub async fn redeploy(&self, t: &Target, service: &str) {
        self.ecs
            .update_service()
            .cluster(&t.cluster)
            .service(service)
            .force_new_deployment(true)
            .send()
            .await
            .expect("redeploy service");
    }

    /// Makes `service` of `t`'s cluster a consumer of the target, the way a
    /// task definition takes credentials it cannot choose between: ECS
    /// injects the active-user parameter and both users' passwords
    /// (`secrets[].valueFrom`: the parameter's ARN, each secret's ARN with
    /// its JSON key), and the entry point picks one. The service is created
    /// anew with that task definition (moto keeps a deployment's task
    /// definition from the service's creation), deployed now.
    pub async fn take_credentials(&self, t: &Target, service: &str) {
        let family = self.register_consumer(t, service).await;
        let _ = self
            .ecs
            .delete_service()
            .cluster(&t.cluster)
            .service(service)
            .force(true)
            .send()
            .await;
        self.create_service(t, service, &family).await;
    }

    /// Registers the task definition family `<cluster>-<name>` that takes
    /// the target's credentials (see [`Stack::take_credentials`]); returns
    /// the family.
    pub async fn register_consumer(&self, t: &Target, name: &str) -> String {
        use aws_sdk_ecs::types::{ContainerDefinition, Secret};
        let parameter = self
            .ssm
            .get_parameter()
            .name(&t.parameter_name)
            .send()
            .await
            .expect("read the active-user parameter")
            .parameter
            .and_then(|p| p.arn)
            .expect("the parameter's ARN");
        let mut secrets = vec![Secret::builder()
            .name("DB_ACTIVE_USER")
            .value_from(parameter)
            .build()
            .unwrap()];
        for key in ["blue", "green"] {
            let id = t.secret_of(key);
            let value_from = if in_ssm(id) {
                id.to_string()
            } else {
                format!("{}:password::", self.secret_arn(id).await)
            };
            secrets.push(
                Secret::builder()
                    .name(format!("{}_PASSWORD", key.to_uppercase()))
                    .value_from(value_from)
                    .build()
                    .unwrap(),
            );
        }
        let family = format!("{}-{name}", t.cluster);
        self.ecs
            .register_task_definition()
            .family(&family)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image("public.ecr.aws/docker/library/busybox:latest")
                    .memory(128)
                    .set_secrets(Some(secrets))
                    .build(),
            )
            .send()
            .await
            .expect("register the consumer's task definition");
        family
    }

    /// The target's entry, as the targets document and the registry hold it.
    pub fn target_entry(&self, t: &Target) -> Value {
        let mut entry = match &t.alternating {
            Some(secret) => json!({
                "alternatingSecretId": secret,
                "activeUserParameter": t.parameter_name,
            }),
            None => json!({
                "activeUserParameter": t.parameter_name,
                "blueSecretId": t.blue_secret,
                "greenSecretId": t.green_secret,
            }),
        };
        entry["cluster"] = json!(t.cluster);
        entry["services"] = json!(t.services);
        entry["stablePollSeconds"] = json!(1);
        if let Value::Object(extra) = &t.document {
            for (k, v) in extra {
                entry[k] = v.clone();
            }
        }
        if let Some((blue, green)) = &t.keys {
            entry["blueUser"] = json!(blue);
            entry["greenUser"] = json!(green);
        }
        if in_ssm(&t.blue_secret) {
            entry["passwordStore"] = json!("ssm");
            entry["dbHost"] = json!(self.pg_host);
            entry["dbPort"] = json!(self.port_of(t));
            entry["dbName"] = json!(t.dbname);
        }
        entry
    }

    /// Adds (or replaces) the target in the targets document the local
    /// Lambdas read. Not atomic: callers hold the state-machine tests' lock.
    /// Creates the ECS cluster `cluster` (again: moto keeps it) and
    /// registers its application's task definition, family `<cluster>-app`.
    pub async fn create_cluster(&self, cluster: &str) {
        self.ecs
            .create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .expect("create cluster");
        self.ecs
            .register_task_definition()
            .family(format!("{cluster}-app"))
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("app")
                    .image("public.ecr.aws/docker/library/busybox:latest")
                    .memory(128)
                    .build(),
            )
            .send()
            .await
            .expect("register task definition");
    }

    pub async fn register_target(&self, t: &Target) {
        let name = t.name.as_deref().expect("a named target");
        let mut doc: Value = match self.ssm.get_parameter().name(TARGETS_DOCUMENT).send().await {
            Ok(out) => serde_json::from_str(&out.parameter.unwrap().value.unwrap()).unwrap(),
            Err(_) => json!({}),
        };
        doc[name] = self.target_entry(t);
        self.ssm
            .put_parameter()
            .name(TARGETS_DOCUMENT)
            .value(doc.to_string())
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("write the targets document");
    }

    /// Registers the target as its own parameter under the registry path
    /// the local Lambdas read (`TARGETS_PATH`): `<path>/<name>`.
    pub async fn register_in_registry(&self, t: &Target) {
        let name = t.name.as_deref().expect("a named target");
        self.ssm
            .put_parameter()
            .name(format!("{TARGETS_REGISTRY}/{name}"))
            .value(self.target_entry(t).to_string())
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("write the target's registry parameter");
    }

    pub async fn active_user(&self, t: &Target) -> String {
        self.ssm
            .get_parameter()
            .name(&t.parameter_name)
            .send()
            .await
            .expect("read the active-user parameter")
            .parameter
            .and_then(|p| p.value)
            .unwrap_or_default()
    }

    pub async fn set_active_user(&self, t: &Target, value: &str) {
        self.ssm
            .put_parameter()
            .name(&t.parameter_name)
            .value(value)
            .overwrite(true)
            .send()
            .await
            .expect("write the active-user parameter");
    }

    pub async fn secret_state(&self, secret_id: &str) -> SecretState {
        if in_ssm(secret_id) {
            return self.parameter_state(secret_id).await;
        }
        let out = self
            .secrets
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .expect("describe secret");
        let stages = out.version_ids_to_stages.unwrap_or_default();
        let at = |label: &str| {
            stages
                .iter()
                .find(|(_, s)| s.iter().any(|x| x == label))
                .map(|(id, _)| id.clone())
        };
        SecretState {
            current: at(AWSCURRENT).expect("a version is AWSCURRENT"),
            pending: at(AWSPENDING),
            versions: stages.len(),
        }
    }

    /// A password parameter's versions: current is the one labelled
    /// `pgflip-current`, or the latest when none is (as pgflip reads it).
    async fn parameter_state(&self, name: &str) -> SecretState {
        let history = self
            .ssm
            .get_parameter_history()
            .name(name)
            .send()
            .await
            .expect("get parameter history")
            .parameters
            .unwrap_or_default();
        let labelled = |label: &str| {
            history
                .iter()
                .find(|p| p.labels().iter().any(|l| l == label))
                .map(|p| p.version.to_string())
        };
        SecretState {
            current: labelled("pgflip-current")
                .unwrap_or_else(|| history.last().expect("a version").version.to_string()),
            pending: labelled("pgflip-pending"),
            versions: history.len(),
        }
    }

    /// The value applications read of a password parameter: the latest
    /// version, no label (what ECS injects). Never print it.
    pub async fn parameter_latest(&self, name: &str) -> pgflip_core::password::Password {
        let value = self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .expect("get parameter")
            .parameter
            .and_then(|p| p.value)
            .unwrap();
        pgflip_core::password::Password::new(value)
    }

    /// The password at a label. Stays inside the test process; never print it.
    /// For an SSM parameter, AWSCURRENT is what applications read (the latest
    /// version), and it must be the version labelled `pgflip-current`.
    pub async fn password_at(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> pgflip_core::password::Password {
        if in_ssm(secret_id) {
            let latest = self.parameter_latest(secret_id).await;
            let label = match stage {
                AWSCURRENT => "pgflip-current",
                _ => "pgflip-pending",
            };
            let labelled = self
                .ssm
                .get_parameter()
                .name(format!("{secret_id}:{label}"))
                .with_decryption(true)
                .send()
                .await
                .ok()
                .and_then(|o| o.parameter)
                .and_then(|p| p.value);
            return match (stage, labelled) {
                (AWSCURRENT, Some(current)) => {
                    assert!(
                        current == latest.expose(),
                        "{secret_id}: the latest version (what tasks read) is not the one labelled pgflip-current"
                    );
                    latest
                }
                (AWSCURRENT, None) => latest, // never rotated: the latest is current
                (_, Some(pending)) => pgflip_core::password::Password::new(pending),
                (_, None) => panic!("{secret_id} has no {label} version"),
            };
        }
        let raw = self
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage)
            .send()
            .await
            .expect("get secret value")
            .secret_string
            .unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        pgflip_core::password::Password::new(v["password"].as_str().unwrap().to_string())
    }

    pub async fn primary_deployments(&self, t: &Target) -> Vec<(String, String)> {
        let out = self
            .ecs
            .describe_services()
            .cluster(&t.cluster)
            .set_services(Some(t.services.clone()))
            .send()
            .await
            .expect("describe services");
        t.services
            .iter()
            .map(|name| {
                let s = out
                    .services()
                    .iter()
                    .find(|s| s.service_name() == Some(name.as_str()))
                    .expect("service exists");
                (name.clone(), primary_deployment_id(s))
            })
            .collect()
    }

    /// The PRIMARY deployment id of each of `services` of `cluster` that
    /// still exists, as `(name, id)` in the order given
    /// (`ecs:DescribeServices`, 10 at a time; deleted ones left out).
    pub async fn primary_deployments_present(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for chunk in services.chunks(10) {
            let out = self
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .expect("describe services");
            for name in chunk {
                if let Some(s) = out.services().iter().find(|s| {
                    s.service_name() == Some(name.as_str()) && s.status() != Some("INACTIVE")
                }) {
                    found.push((name.clone(), primary_deployment_id(s)));
                }
            }
        }
        found
    }

    pub async fn snapshot(&self, t: &Target) -> Snapshot {
        Snapshot {
            active_user: self.active_user(t).await,
            blue: self.secret_state(&t.blue_secret).await,
            green: self.secret_state(&t.green_secret).await,
            deployments: self.primary_deployments(t).await,
        }
    }

    /// Logs in as the user `key` with the password at `stage` of its secret.
    pub async fn login(&self, t: &Target, key: &str, stage: &str) -> Result<(), String> {
        let password = self.password_at(t.secret_of(key), stage).await;
        self.login_at(t, key, &password, self.port_of(t)).await
    }

    /// Logs in as the user `key` with `password` on the server at `port`
    /// (the standby, say) and reads the sample table.
    pub async fn login_at(
        &self,
        t: &Target,
        key: &str,
        password: &pgflip_core::password::Password,
        port: u16,
    ) -> Result<(), String> {
        let (client, connection) = self.connect_as(t, key, password, port).await?;
        let seen = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        // Closed before returning: a session still open a moment later
        // would count as a live session of that user in the next run.
        drop(client);
        let _ = connection.await;
        seen
    }

    /// A connection as the user `key` of `t` with `password` on the server
    /// at `port` (errors are the server's or the network's, never the password).
    async fn connect_as(
        &self,
        t: &Target,
        key: &str,
        password: &pgflip_core::password::Password,
        port: u16,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), String> {
        let (client, conn) = tokio_postgres::Config::new()
            .host(&self.pg_host)
            .port(port)
            .user(t.role_of(key))
            .password(password.expose())
            .dbname(&t.dbname)
            .connect(NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((client, connection))
    }

    /// Logs in with `psql` as the user `key` with its AWSCURRENT password
    /// (passed in the child's environment, never on a command line or in output).
    pub async fn psql_login(&self, t: &Target, key: &str) -> Result<String, String> {
        let password = self.password_at(t.secret_of(key), AWSCURRENT).await;
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &self.pg_host, "-p", &self.port_of(t).to_string()])
            .args(["-U", t.role_of(key), "-d", &t.dbname])
            .args([
                "-c",
                "SELECT current_user || ' sees ' || count(*) || ' orders' FROM orders",
            ])
            .env("PGPASSWORD", password.expose())
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| format!("could not run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The role the alternating secret's version at `stage` names (`None`:
    /// no version carries it).
    pub async fn alternating_user(&self, t: &Target, stage: &str) -> Option<String> {
        let secret = t.alternating.as_deref().expect("an alternating target");
        let raw = self
            .secrets
            .get_secret_value()
            .secret_id(secret)
            .version_stage(stage)
            .send()
            .await
            .ok()?
            .secret_string?;
        let v: Value = serde_json::from_str(&raw).ok()?;
        v["username"].as_str().map(str::to_string)
    }

    /// Logs in as the role the alternating secret's version at `stage`
    /// names, with that version's password; returns the role.
    pub async fn login_stage(&self, t: &Target, stage: &str) -> Result<String, String> {
        let secret = t.alternating.as_deref().expect("an alternating target");
        let role = self
            .alternating_user(t, stage)
            .await
            .ok_or_else(|| format!("{secret} has no {stage} version"))?;
        let key = t
            .color_of(&role)
            .map(|c| t.key(c))
            .ok_or_else(|| format!("{stage} names {role:?}, neither configured user"))?;
        let password = self.password_at(secret, stage).await;
        self.login_at(t, &key, &password, self.port_of(t))
            .await
            .map(|()| role)
    }

    /// The invariant: the user the parameter names logs in with its AWSCURRENT password.
    /// In the alternating layout: the role AWSCURRENT names logs in with
    /// AWSCURRENT's password.
    pub async fn invariant(&self, t: &Target) -> Result<String, String> {
        if t.alternating.is_some() {
            return self
                .login_stage(t, AWSCURRENT)
                .await
                .map_err(|e| format!("the role AWSCURRENT names cannot log in with it: {e}"));
        }
        let active = self.active_user(t).await;
        if t.color_of(&active).is_none() {
            return Err(format!("the parameter names {active:?}"));
        }
        self.login(t, &active, AWSCURRENT)
            .await
            .map(|()| active.clone())
            .map_err(|e| format!("{active} cannot log in with its AWSCURRENT password: {e}"))
    }

    /// Runs the state machine once through `scripts/sfn/run.mjs`.
    pub fn run(&self, options: &RunOptions) -> Execution {
        let root = repo_root();
        let sfn = root.join("scripts/sfn");
        let mut args: Vec<String> = vec![];
        if let Some(input) = &options.input {
            args.extend(["--input".into(), input.to_string()]);
        }
        if let Some(name) = &options.name {
            args.extend(["--name".into(), name.clone()]);
        }
        // Removed when this function returns or panics.
        let scratch = TempDir::new();
        if let Some(scenario) = &options.scenario {
            let scenario_file = scratch.path().join("scenario.json");
            std::fs::write(&scenario_file, scenario.to_string()).unwrap();
            args.extend(["--scenario".into(), scenario_file.display().to_string()]);
        }
        if let Some(state) = &options.start_at {
            args.extend(["--start-at".into(), state.clone()]);
        }
        if let Some(input) = &options.state_input {
            args.extend(["--state-input".into(), input.to_string()]);
        }
        if let Some(history) = &options.history {
            args.extend(["--history".into(), history.display().to_string()]);
        }
        if let Some(definition) = &options.definition {
            args.extend(["--definition".into(), definition.display().to_string()]);
        }
        let mut cmd = Command::new("node");
        cmd.current_dir(&sfn)
            .args(["--require", "./polyfill.cjs", "run.mjs"])
            .args(["--lambda-endpoint", &self.lambda_endpoint])
            .args(&args);
        let out = cmd.output().expect("run node scripts/sfn/run.mjs");
        drop(scratch);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let progress = String::from_utf8_lossy(&out.stderr).to_string();
        let line = stdout.lines().last().unwrap_or_else(|| {
            panic!(
                "the runner printed no summary (status {:?}); its stderr:\n{progress}",
                out.status
            )
        });
        let mut execution: Execution = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad runner summary ({e}): {line}\n{progress}"));
        execution.progress = progress;
        execution
    }
}

/// The id of a service's PRIMARY deployment (empty when it has none).
pub fn primary_deployment_id(service: &aws_sdk_ecs::types::Service) -> String {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .and_then(|d| d.id())
        .unwrap_or_default()
        .to_string()
}

/// A fresh directory `pgflip-test-<pid>-<n>-<ns>`, private to this user
/// (0700), removed with its contents when dropped: when the run ends, and
/// when a test panics on the way (unwinding). It is made in the local
/// stack's directory when there is one, so that even a test killed on a
/// timeout (no unwinding) leaves nothing behind once the stack is removed;
/// else in the temporary folder.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::os::unix::fs::DirBuilderExt;
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = std::env::var_os("PGFLIP_STACK_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "pgflip-test-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs in as a client that speaks only md5 (as old drivers do): the
/// startup message, then an answer to `AuthenticationMD5Password` and
/// nothing else. A server that asks for SCRAM (because the stored verifier
/// is SCRAM) refuses such a client. libpq 15 has no `require_auth`, so this
/// is a small raw-protocol client. Errors never hold the password.
pub fn md5_only_login(
    host: &str,
    port: u16,
    user: &str,
    password: &pgflip_core::password::Password,
    dbname: &str,
) -> Result<(), String> {
    use bytes::BytesMut;
    use postgres_protocol::message::{backend::Message, frontend};
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", dbname)], &mut out).unwrap();
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    let mut next = |stream: &mut std::net::TcpStream| -> Result<Message, String> {
        loop {
            if let Some(m) = Message::parse(&mut buf).map_err(|e| e.to_string())? {
                return Ok(m);
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let error_text = |body: postgres_protocol::message::backend::ErrorResponseBody| {
        use fallible_iterator::FallibleIterator;
        let mut fields = body.fields();
        let mut text = vec![];
        while let Ok(Some(f)) = fields.next() {
            if matches!(f.type_(), b'C' | b'M') {
                text.push(String::from_utf8_lossy(f.value_bytes()).to_string());
            }
        }
        text.join(": ")
    };
    match next(&mut stream)? {
        Message::AuthenticationMd5Password(body) => {
            let hash = postgres_protocol::authentication::md5_hash(
                user.as_bytes(),
                password.expose().as_bytes(),
                body.salt(),
            );
            let mut out = BytesMut::new();
            frontend::password_message(hash.as_bytes(), &mut out).unwrap();
            stream.write_all(&out).map_err(|e| e.to_string())?;
        }
        Message::AuthenticationSasl(_) => {
            return Err("the server asks for SCRAM-SHA-256; this client speaks only md5".into())
        }
        Message::ErrorResponse(body) => return Err(error_text(body)),
        _ => return Err("the server asked for another authentication method".into()),
    }
    match next(&mut stream)? {
        Message::AuthenticationOk => Ok(()),
        Message::ErrorResponse(body) => Err(error_text(body)),
        _ => Err("unexpected answer to the md5 password".into()),
    }
}

impl Stack {
    /// Delays the standby's replay of everything it receives by `delay`
    /// (`recovery_min_apply_delay`: `'0'`, `'3s'`, `'1h'`) and waits until
    /// it is in effect.
    pub async fn set_replay_delay(&self, delay: &str) {
        let standby = self.admin_at(self.standby_port, "postgres").await;
        execute_each(
            &standby,
            "the standby's replay delay",
            &format!(
                "ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'; SELECT pg_reload_conf()"
            ),
        )
        .await;
        let want = match delay {
            "0" => "0".to_string(),
            d => d.to_string(),
        };
        for _ in 0..50 {
            let now: String = self
                .admin_at(self.standby_port, "postgres")
                .await
                .query_one("SHOW recovery_min_apply_delay", &[])
                .await
                .unwrap()
                .get(0);
            if now == want || (want == "0" && now == "0") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the standby did not take recovery_min_apply_delay = {delay}");
    }

    /// Waits until the standby has replayed everything the primary has
    /// written so far.
    pub async fn standby_caught_up(&self) {
        let primary: String = self
            .admin("postgres")
            .await
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        let standby = self.admin_at(self.standby_port, "postgres").await;
        for _ in 0..100 {
            let caught: bool = standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&primary],
                )
                .await
                .unwrap()
                .get(0);
            if caught {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the standby did not catch up");
    }
}

/// Creates an RDS Proxy on moto that authenticates with `secrets` (ARNs),
/// through `tests/fixtures/rds-proxy.py`.
pub fn rds_proxy(name: &str, secrets: &[&str]) {
    let root = repo_root();
    let status = Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("tests/fixtures/rds-proxy.py"))
        .arg(name)
        .args(secrets)
        .status()
        .expect("run tests/fixtures/rds-proxy.py");
    assert!(status.success(), "rds-proxy.py {name} failed");
}

/// Runs `tests/fixtures/sns-inbox.py` with `args`; its JSON answer.
fn sns_inbox(args: &[&str]) -> Value {
    let root = repo_root();
    let out = Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("tests/fixtures/sns-inbox.py"))
        .args(args)
        .output()
        .expect("run tests/fixtures/sns-inbox.py");
    assert!(
        out.status.success(),
        "sns-inbox.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sns-inbox.py prints JSON")
}

/// An SNS topic on moto whose messages can be read back: (topic ARN, queue URL).
pub fn sns_topic_with_inbox(name: &str) -> (String, String) {
    let v = sns_inbox(&["create", name]);
    (
        v["topicArn"].as_str().unwrap().to_string(),
        v["queueUrl"].as_str().unwrap().to_string(),
    )
}

/// What was published to the topic of [`sns_topic_with_inbox`] since the
/// last read: (subject, message) pairs.
pub fn sns_read(queue_url: &str) -> Vec<(String, String)> {
    sns_inbox(&["read", queue_url])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["subject"].as_str().unwrap_or_default().to_string(),
                m["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A run's history (`RunOptions::history`, aws-local-stepfunctions' events)
/// as the events `report-outcome` reads from Step Functions' history.
pub fn history_events(path: &std::path::Path) -> Vec<pgflip_core::ports::HistoryEvent> {
    use pgflip_core::ports::HistoryEvent;
    let events: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the history"))
            .expect("the history is JSON");
    let text = |v: &Value| v.as_str().map(str::to_string);
    events
        .iter()
        .filter_map(|e| {
            let state = || e["state"]["name"].as_str().unwrap_or_default().to_string();
            Some(match e["type"].as_str()? {
                "StateEntered" => HistoryEvent::Entered { state: state() },
                "StateExited" => HistoryEvent::Exited {
                    state: state(),
                    output: Some(e["state"]["output"].clone()),
                },
                "StateFailed" => HistoryEvent::Failed {
                    error: text(&e["Error"]).unwrap_or_default(),
                    cause: text(&e["Cause"]).unwrap_or_default(),
                },
                "ExecutionSucceeded" => HistoryEvent::Ended {
                    status: "SUCCEEDED".into(),
                    error: None,
                    cause: None,
                },
                "ExecutionFailed" => HistoryEvent::Ended {
                    status: "FAILED".into(),
                    error: text(&e["Error"]),
                    cause: text(&e["Cause"]),
                },
                "ExecutionAborted" => HistoryEvent::Ended {
                    status: "ABORTED".into(),
                    error: None,
                    cause: None,
                },
                _ => return None,
            })
        })
        .collect()
}

impl Stack {
    /// Writes a new `AWSCURRENT` version of a secret (as an operator or
    /// another tool would): the current value, changed by `edit`. Returns
    /// the new version id.
    pub async fn edit_secret(&self, secret_id: &str, edit: impl FnOnce(&mut Value)) -> String {
        self.put_version(secret_id, AWSCURRENT, edit).await
    }

    /// Makes `version_id`, which carries the label `staged` (`AWSPENDING`,
    /// or a label of the caller's), the `AWSCURRENT` version of `secret_id`
    /// in place of `current`, then takes `staged` off it: Secrets Manager's
    /// finishSecret (AWSPREVIOUS follows AWSCURRENT). Also how a test
    /// writes a new AWSCURRENT: moto 5.2.5's PutSecretValue(AWSCURRENT)
    /// moves AWSPREVIOUS from the version it last *put* current, not from
    /// the one a label move made current.
    pub async fn promote_staged(
        &self,
        secret_id: &str,
        current: &str,
        version_id: &str,
        staged: &str,
    ) {
        for (stage, to, from) in [
            (AWSCURRENT, Some(version_id), current),
            (staged, None, version_id),
        ] {
            self.secrets
                .update_secret_version_stage()
                .secret_id(secret_id)
                .version_stage(stage)
                .set_move_to_version_id(to.map(str::to_string))
                .remove_from_version_id(from)
                .send()
                .await
                .unwrap_or_else(|e| panic!("move {stage} in {secret_id}: {e}"));
        }
    }

    /// What Secrets Manager's own rotation does to `secret_id`: createSecret
    /// (a version staged `AWSPENDING`: the current one's fields, `role` and
    /// `password`), setSecret (`ALTER ROLE`, a SCRAM verifier) and
    /// finishSecret (`AWSCURRENT` moved to it, `AWSPENDING` removed).
    /// Returns the new version's id.
    pub async fn rotate_like_secrets_manager(
        &self,
        secret_id: &str,
        role: &str,
        password: &pgflip_core::password::Password,
    ) -> String {
        let current = self.secret_state(secret_id).await.current;
        let new = self
            .stage_pending(secret_id, |v| {
                v["username"] = json!(role);
                v["password"] = json!(password.expose());
            })
            .await;
        self.set_role_password(role, password).await;
        self.promote_staged(secret_id, &current, &new, AWSPENDING)
            .await;
        new
    }

    /// Sets `role`'s password as the superuser, as a SCRAM verifier (what
    /// Secrets Manager's own rotation, or an operator, would do).
    pub async fn set_role_password(&self, role: &str, password: &pgflip_core::password::Password) {
        self.admin("postgres")
            .await
            .batch_execute(&format!(
                "ALTER ROLE \"{role}\" PASSWORD '{}'",
                password.scram_verifier()
            ))
            .await
            .unwrap_or_else(|e| panic!("ALTER ROLE {role}: {e}"));
    }

    /// Stages a version labelled `AWSPENDING` only (as a run that stopped,
    /// or another tool, leaves one): the current value, changed by `edit`.
    pub async fn stage_pending(&self, secret_id: &str, edit: impl FnOnce(&mut Value)) -> String {
        self.put_version(secret_id, AWSPENDING, edit).await
    }

    /// A new version labelled `stage`: the `AWSCURRENT` value, changed by `edit`.
    async fn put_version(
        &self,
        secret_id: &str,
        stage: &str,
        edit: impl FnOnce(&mut Value),
    ) -> String {
        let raw = self
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(AWSCURRENT)
            .send()
            .await
            .expect("read the secret")
            .secret_string
            .unwrap();
        let mut value: Value = serde_json::from_str(&raw).unwrap();
        edit(&mut value);
        self.secrets
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value.to_string())
            .version_stages(stage)
            .send()
            .await
            .unwrap_or_else(|e| panic!("write a new {stage} version: {e}"))
            .version_id
            .unwrap()
    }

    /// The ARN of a secret (as events and RDS Proxy name it).
    pub async fn secret_arn(&self, secret_id: &str) -> String {
        self.secrets
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .expect("describe the secret")
            .arn
            .unwrap()
    }

    /// A session as the user `key` of `t` on the server at `port`, with the
    /// password at `AWSCURRENT`, held open by the caller (a task that has
    /// not drained yet).
    pub async fn session(&self, t: &Target, key: &str, port: u16) -> tokio_postgres::Client {
        self.session_at(t, key, AWSCURRENT, port).await
    }

    /// A session as the user `key`, logged in with the password of its
    /// secret's version at `stage` (the alternating secret: the version
    /// that names it, AWSCURRENT or AWSPREVIOUS).
    pub async fn session_at(
        &self,
        t: &Target,
        key: &str,
        stage: &str,
        port: u16,
    ) -> tokio_postgres::Client {
        let password = self.password_at(t.secret_of(key), stage).await;
        self.connect_as(t, key, &password, port)
            .await
            .unwrap_or_else(|e| panic!("a session as {key} at {stage} on port {port}: {e}"))
            .0
    }
}

/// Runs `;`-separated SQL statements one by one (some, such as `DROP
/// TABLESPACE` or `ALTER SYSTEM`, may not run in the transaction block that
/// one multi-statement query is). `what` names the caller in a failure.
pub async fn execute_each(db: &tokio_postgres::Client, what: &str, statements: &str) {
    for statement in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        db.batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{what}: {statement}: {e}"));
    }
}

/// Lets the next whole second begin: moto keeps a secret version's
/// `CreatedDate` in whole seconds (AWS keeps milliseconds), and select-user
/// compares it with the parameter's `LastModifiedDate`; what is written
/// after this compares as later, as it would in AWS.
pub async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(
        1000 - u64::from(now.subsec_millis()) + 10,
    ))
    .await;
}

/// Secrets Manager's `RotationSucceeded` event for a secret, as EventBridge
/// delivers it (through CloudTrail).
pub fn rotation_succeeded_event(secret_arn: &str) -> Value {
    json!({
        "version": "0", "id": "7e0c2d4f", "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager", "account": "123456789012", "time": "2026-11-01T00:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "eventVersion": "1.08", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationSucceeded", "awsRegion": "us-east-1", "eventType": "AwsServiceEvent",
            "additionalEventData": {"SecretId": secret_arn}
        }
    })
}
