//! ECS secret injection, emulated: how an application that changes no code
//! gets its database credentials.
//!
//! When ECS starts a task it takes the task definition of the service's
//! PRIMARY deployment, and the agent resolves each container's `secrets[]`
//! (`name`, `valueFrom`) with the task's execution role, once: the values
//! become environment variables of the container for its whole life. A new
//! deployment starts new tasks, which resolve again. [`injected_environment`]
//! does the same against the local ECS, Secrets Manager and SSM (moto), and
//! [`TaskEnvironment::db_credentials`] reads what a typical application reads
//! from its environment:
//!
//! | variable      | meaning                                         |
//! |---------------|-------------------------------------------------|
//! | `DB_USER`     | the login role                                  |
//! | `DB_PASSWORD` | its password                                    |
//! | `DB_HOST`     | the server's host                               |
//! | `DB_PORT`     | the server's port (decimal; 5432 when not set)  |
//! | `DB_NAME`     | the database                                    |
//!
//! `valueFrom` forms ([`parse_value_from`]), as the ECS agent takes them:
//! - Secrets Manager: the secret's full ARN, optionally followed by
//!   `:json-key:version-stage:version-id` (all three separators present, each
//!   part may be empty: `<arn>:username::`). No stage and no id means
//!   `AWSCURRENT`. A JSON key picks one top-level key of the JSON secret
//!   string; a string value is taken as is, any other value as its JSON text
//!   (the port `5432` becomes `5432`).
//! - SSM Parameter Store: a parameter name, or its ARN
//!   (`arn:aws:ssm:region:account:parameter/name`), read with
//!   `GetParameters` and decryption.
//!
//! Values from `secrets[]` stay inside [`Password`] until a login uses them;
//! no error or log line here contains one (errors name the `valueFrom`, the
//! variable and the key, never a value).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ecs::error::DisplayErrorContext;
use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, Secret};
use pgflip_core::password::Password;
use serde_json::{json, Value};

use crate::harness::{CredentialSource, Harness, Totals};

pub const DB_USER: &str = "DB_USER";
pub const DB_PASSWORD: &str = "DB_PASSWORD";
pub const DB_HOST: &str = "DB_HOST";
pub const DB_PORT: &str = "DB_PORT";
pub const DB_NAME: &str = "DB_NAME";

/// Where one `secrets[]` entry takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFrom {
    SecretsManager {
        /// The secret's ARN, without the `:json-key:…` suffix.
        secret_arn: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
    },
    Ssm {
        /// The parameter's name or ARN, as given (GetParameters takes both).
        name: String,
    },
}

const SECRET_FORM: &str =
    "arn:<partition>:secretsmanager:<region>:<account>:secret:<name>[:<json-key>:<version-stage>:<version-id>]";

/// Parses a `valueFrom` the way the ECS agent reads it. The error names the
/// input (an ARN or a parameter name, never a value) and the expected form.
pub fn parse_value_from(value_from: &str) -> Result<ValueFrom, String> {
    let bad = |why: &str| format!("secrets[].valueFrom {value_from:?}: {why}");
    if value_from.is_empty() {
        return Err(bad("empty"));
    }
    if value_from.chars().any(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    if !value_from.starts_with("arn:") {
        // Not an ARN: a parameter name in the task's region and account.
        return Ok(ValueFrom::Ssm {
            name: value_from.to_string(),
        });
    }
    let parts: Vec<&str> = value_from.split(':').collect();
    if parts.len() < 6 {
        return Err(bad(
            "not an ARN (arn:partition:service:region:account:resource)",
        ));
    }
    let (partition, service, region, account) = (parts[1], parts[2], parts[3], parts[4]);
    if !partition.starts_with("aws") {
        return Err(bad("unknown partition"));
    }
    if region.is_empty() {
        return Err(bad("the ARN has no region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the ARN's account is not 12 digits"));
    }
    match service {
        "secretsmanager" => {
            if parts.len() < 7 || parts[5] != "secret" || parts[6].is_empty() {
                return Err(bad(&format!("expected {SECRET_FORM}")));
            }
            let secret_arn = parts[..7].join(":");
            let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
            match parts.len() {
                7 => Ok(ValueFrom::SecretsManager {
                    secret_arn,
                    json_key: None,
                    version_stage: None,
                    version_id: None,
                }),
                // The agent wants all three separators: `<arn>:key::`.
                10 => Ok(ValueFrom::SecretsManager {
                    secret_arn,
                    json_key: nonempty(parts[7]),
                    version_stage: nonempty(parts[8]),
                    version_id: nonempty(parts[9]),
                }),
                n => Err(bad(&format!(
                    "{} field(s) after the secret name; expected none or three (write `<arn>:<json-key>::` for a key alone), {SECRET_FORM}",
                    n - 7
                ))),
            }
        }
        "ssm" => {
            let resource = parts[5..].join(":");
            match resource.strip_prefix("parameter/") {
                Some(name) if !name.is_empty() => Ok(ValueFrom::Ssm {
                    name: value_from.to_string(),
                }),
                _ => Err(bad(
                    "expected arn:<partition>:ssm:<region>:<account>:parameter/<name>",
                )),
            }
        }
        other => Err(bad(&format!(
            "a {other} ARN; ECS injects from secretsmanager or ssm only"
        ))),
    }
}

/// The text ECS puts in the variable for one JSON key's value.
fn json_value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One container's environment: `environment[]` as plain text, `secrets[]`
/// as [`Password`]s.
#[derive(Debug, Clone, Default)]
pub struct ContainerEnvironment {
    pub plain: BTreeMap<String, String>,
    pub secret: BTreeMap<String, Password>,
}

impl ContainerEnvironment {
    /// A variable's value; a secret one is exposed (for a user name, host…).
    fn text(&self, name: &str) -> Option<&str> {
        self.secret
            .get(name)
            .map(Password::expose)
            .or_else(|| self.plain.get(name).map(String::as_str))
    }

    fn password(&self, name: &str) -> Option<Password> {
        self.secret
            .get(name)
            .cloned()
            .or_else(|| self.plain.get(name).map(|v| Password::new(v.clone())))
    }
}

/// What a task was started with: its task definition and each container's
/// resolved environment.
#[derive(Debug, Clone)]
pub struct TaskEnvironment {
    pub task_definition: String,
    pub containers: Vec<(String, ContainerEnvironment)>,
}

/// The connection settings an application builds from `DB_*`.
#[derive(Debug, Clone)]
pub struct DbCredentials {
    pub username: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub password: Password,
}

impl TaskEnvironment {
    /// The `DB_*` variables of the first container that has `DB_USER`.
    pub fn db_credentials(&self) -> Result<DbCredentials, String> {
        let (container, env) = self
            .containers
            .iter()
            .find(|(_, env)| env.text(DB_USER).is_some())
            .ok_or_else(|| {
                format!(
                    "no container of {} has {DB_USER} in its environment",
                    self.task_definition
                )
            })?;
        let need = |name: &str| {
            env.text(name).map(str::to_string).ok_or_else(|| {
                format!(
                    "container {container} of {} has no {name}",
                    self.task_definition
                )
            })
        };
        let port = match env.text(DB_PORT) {
            None => 5432,
            // Not quoted: a task definition may map the wrong key to it.
            Some(p) => p.parse().map_err(|_| {
                format!(
                    "{DB_PORT} of container {container} is not a port number ({} characters)",
                    p.len()
                )
            })?,
        };
        Ok(DbCredentials {
            username: need(DB_USER)?,
            host: need(DB_HOST)?,
            port,
            dbname: need(DB_NAME)?,
            password: env.password(DB_PASSWORD).ok_or_else(|| {
                format!(
                    "container {container} of {} has no {DB_PASSWORD}",
                    self.task_definition
                )
            })?,
        })
    }
}

/// The AWS clients ECS uses on a task's behalf (the execution role's).
#[derive(Clone)]
pub struct Agent {
    pub ecs: aws_sdk_ecs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl Agent {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self {
            ecs: aws_sdk_ecs::Client::new(aws),
            secrets: aws_sdk_secretsmanager::Client::new(aws),
            ssm: aws_sdk_ssm::Client::new(aws),
        }
    }
}

/// The task definition a task of `service` starts with now: the PRIMARY
/// deployment's `taskDefinition`.
///
/// moto quirk (5.2.5, `ecs/models.py`): a deployment's `taskDefinition` is
/// copied when the service is created and never changes; `UpdateService`
/// with a new `taskDefinition` only sets the service's own `taskDefinition`
/// field (and makes a new deployment id only with `forceNewDeployment`). On
/// ECS the service's field always equals the PRIMARY deployment's, so when
/// the two differ (only moto makes them differ) the service's field is the
/// one ECS would start tasks with, and is taken.
pub async fn task_definition_of(
    agent: &Agent,
    cluster: &str,
    service: &str,
) -> Result<String, String> {
    let out = agent
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| {
            format!(
                "ecs:DescribeServices {service}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    let s = out
        .services()
        .iter()
        .find(|s| s.service_name() == Some(service) && s.status() == Some("ACTIVE"))
        .ok_or_else(|| format!("service {service} not found in cluster {cluster}"))?;
    let primary = s
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .and_then(|d| d.task_definition());
    match (primary, s.task_definition()) {
        (Some(p), Some(own)) if p != own => Ok(own.to_string()),
        (Some(p), _) => Ok(p.to_string()),
        (None, Some(own)) => Ok(own.to_string()),
        (None, None) => Err(format!("service {service} has no task definition")),
    }
}

/// What the ECS agent does at a task's start: the task definition of the
/// service's PRIMARY deployment, each container's `environment[]` and
/// resolved `secrets[]`. Any unresolvable secret fails the start, as it
/// fails the task on ECS.
pub async fn injected_environment(
    agent: &Agent,
    cluster: &str,
    service: &str,
) -> Result<TaskEnvironment, String> {
    let task_definition = task_definition_of(agent, cluster, service).await?;
    let out = agent
        .ecs
        .describe_task_definition()
        .task_definition(&task_definition)
        .send()
        .await
        .map_err(|e| {
            format!(
                "ecs:DescribeTaskDefinition {task_definition}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    let definition = out
        .task_definition()
        .ok_or_else(|| format!("{task_definition}: no task definition returned"))?;
    // One read per secret version and parameter, however many keys use it.
    let mut secret_strings: BTreeMap<(String, Option<String>, Option<String>), Password> =
        BTreeMap::new();
    let mut containers = vec![];
    for container in definition.container_definitions() {
        let cname = container.name().unwrap_or_default().to_string();
        let mut env = ContainerEnvironment::default();
        for kv in container.environment() {
            if let (Some(n), Some(v)) = (kv.name(), kv.value()) {
                env.plain.insert(n.to_string(), v.to_string());
            }
        }
        for secret in container.secrets() {
            let name = secret.name();
            let value = match parse_value_from(secret.value_from())? {
                ValueFrom::Ssm { name: parameter } => read_parameter(agent, &parameter).await?,
                ValueFrom::SecretsManager {
                    secret_arn,
                    json_key,
                    version_stage,
                    version_id,
                } => {
                    let key = (secret_arn, version_stage, version_id);
                    let whole = match secret_strings.get(&key) {
                        Some(s) => s.clone(),
                        None => {
                            let s = read_secret(agent, &key.0, &key.1, &key.2).await?;
                            secret_strings.insert(key.clone(), s.clone());
                            s
                        }
                    };
                    match json_key {
                        None => whole,
                        Some(k) => pick_key(whole.expose(), &k).map_err(|why| {
                            format!("{name} of container {cname} ({}): {why}", key.0)
                        })?,
                    }
                }
            };
            env.secret.insert(name.to_string(), value);
        }
        containers.push((cname, env));
    }
    Ok(TaskEnvironment {
        task_definition,
        containers,
    })
}

/// One top-level key of a JSON secret string. The error never quotes the
/// secret.
fn pick_key(secret_string: &str, key: &str) -> Result<Password, String> {
    let doc: Value = serde_json::from_str(secret_string)
        .map_err(|e| format!("the secret string is not JSON ({})", json_error_kind(&e)))?;
    let object = doc
        .as_object()
        .ok_or("the secret string is not a JSON object")?;
    let value = object
        .get(key)
        .ok_or_else(|| format!("the secret has no JSON key {key:?}"))?;
    Ok(Password::new(json_value_text(value)))
}

/// The kind of a JSON error, without its message (which may quote input).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "syntax error",
        Category::Data => "data error",
        Category::Eof => "truncated",
    }
}

async fn read_secret(
    agent: &Agent,
    secret_arn: &str,
    version_stage: &Option<String>,
    version_id: &Option<String>,
) -> Result<Password, String> {
    // No stage and no id is AWSCURRENT. Said explicitly: Secrets Manager
    // means the same without it, but moto (5.2.5) answers a request without
    // a stage with its `default_version_id`, which UpdateSecretVersionStage
    // does not move: after a promotion it still returns the old version.
    let version_stage = match (version_stage, version_id) {
        (None, None) => Some(pgflip_core::domain::AWSCURRENT.to_string()),
        (stage, _) => stage.clone(),
    };
    let out = agent
        .secrets
        .get_secret_value()
        .secret_id(secret_arn)
        .set_version_stage(version_stage)
        .set_version_id(version_id.clone())
        .send()
        .await
        .map_err(|e| {
            format!(
                "secretsmanager:GetSecretValue {secret_arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    out.secret_string.map(Password::new).ok_or_else(|| {
        format!("{secret_arn} has no SecretString (binary secrets are not injected)")
    })
}

async fn read_parameter(agent: &Agent, name: &str) -> Result<Password, String> {
    let out = agent
        .ssm
        .get_parameters()
        .names(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "ssm:GetParameters {name}: {}",
                aws_sdk_ssm::error::DisplayErrorContext(&e)
            )
        })?;
    if !out.invalid_parameters().is_empty() {
        return Err(format!("ssm:GetParameters: no parameter {name}"));
    }
    out.parameters
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|p| p.value)
        .map(Password::new)
        .ok_or_else(|| format!("ssm:GetParameters: {name} has no value"))
}

// ---------------------------------------------------------------- registration

/// The `secrets[]` of a task definition that takes every `DB_*` variable
/// from one secret's JSON keys, `AWSCURRENT` (the alternating-secret layout:
/// infra/example-app-task-definition-alternating.yaml).
pub fn db_secrets_from(secret_arn: &str) -> Vec<Secret> {
    [
        (DB_USER, "username"),
        (DB_PASSWORD, "password"),
        (DB_HOST, "host"),
        (DB_PORT, "port"),
        (DB_NAME, "dbname"),
    ]
    .into_iter()
    .map(|(name, key)| {
        Secret::builder()
            .name(name)
            .value_from(format!("{secret_arn}:{key}::"))
            .build()
            .expect("name and valueFrom are set")
    })
    .collect()
}

/// Registers the family `family` in the local ECS: one `app` container whose
/// `DB_*` come from `secret_arn`'s JSON keys (the shape of
/// infra/example-app-task-definition-alternating.yaml). Returns the new
/// revision's ARN.
pub async fn register_injected_task_definition(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    secret_arn: &str,
) -> Result<String, String> {
    let parsed = parse_value_from(secret_arn)?;
    let ValueFrom::SecretsManager {
        secret_arn: arn, ..
    } = parsed
    else {
        return Err(format!("{secret_arn} is not a Secrets Manager secret ARN"));
    };
    // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
    let fields: Vec<&str> = arn.split(':').collect();
    let execution_role = format!(
        "arn:{}:iam::{}:role/{family}-execution",
        fields[1], fields[4]
    );
    let out = ecs
        .register_task_definition()
        .family(family)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .execution_role_arn(execution_role)
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("public.ecr.aws/docker/library/busybox:stable")
                .essential(true)
                .environment(
                    KeyValuePair::builder()
                        .name("APP_NAME")
                        .value(family)
                        .build(),
                )
                .set_secrets(Some(db_secrets_from(&arn)))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "ecs:RegisterTaskDefinition {family}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    out.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| format!("ecs:RegisterTaskDefinition {family}: no ARN returned"))
}

/// Points `service` at `task_definition` (UpdateService). ECS starts a new
/// deployment for a new task definition by itself; moto makes a new
/// deployment id only with `forceNewDeployment`, so it is set (see
/// [`task_definition_of`] for the deployment's stale `taskDefinition`).
pub async fn use_task_definition(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
    task_definition: &str,
) -> Result<(), String> {
    ecs.update_service()
        .cluster(cluster)
        .service(service)
        .task_definition(task_definition)
        .force_new_deployment(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("ecs:UpdateService {service}: {}", DisplayErrorContext(&e)))
}

/// Registers `family` taking `DB_*` from `secret_arn` and points each of
/// `services` (in `cluster`) at it. Returns the task definition's ARN. A
/// harness started with `CredentialSource::Injected` for these services then
/// takes its credentials from that secret's `AWSCURRENT` at each task start.
pub async fn inject_from_secret(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    services: &[String],
    family: &str,
    secret_arn: &str,
) -> Result<String, String> {
    let arn = register_injected_task_definition(ecs, family, secret_arn).await?;
    for service in services {
        use_task_definition(ecs, cluster, service, &arn).await?;
    }
    Ok(arn)
}

// ---------------------------------------------------------------- inject-check

/// `pgflip-bench inject-check [--seconds S] [--tasks N]`: the injected source
/// end to end on the local stack (`pgflip-stack seed` done). Creates an
/// alternating secret whose `AWSCURRENT` names blue, two services of the
/// stack's cluster whose task definition injects `DB_*` from it, and runs
/// the harness with [`CredentialSource::Injected`](crate::harness::CredentialSource):
/// A. every task logs in as blue;
/// B. `AWSCURRENT` moves to a version naming green (AWSPENDING promoted, as
///    a flip of that layout does): the running tasks keep blue, no task starts;
/// C. a forced new deployment of both services: the new tasks log in as
///    green, the old ones drained; no failed login anywhere.
///
/// Prints each phase's figures (stderr) and one JSON line (stdout); removes
/// what it created; returns false on any failed check.
pub async fn command(args: &crate::Args) -> bool {
    let stack = pgflip_tests::Stack::from_env().await;
    let seeded = pgflip_tests::Target::local();
    let seconds = args.number("seconds", 3).clamp(1, 60);
    let tag = std::process::id();
    // A cluster of its own: the seeded cluster's services, and what pgflip
    // discovers in it, stay as they are (moto still lists deleted services).
    let mut target = seeded.clone();
    target.cluster = format!("{}-inject-check-{tag}", seeded.cluster);
    let names = Names {
        services: vec!["app-a".into(), "app-b".into()],
        secret: format!("{}/inject-check-{tag}", seeded.cluster),
        base_family: format!("{}-app", seeded.cluster),
        family: format!("{}-inject-check", seeded.cluster),
    };
    let mut created = Created::default();
    let outcome = check(
        args,
        &stack,
        &target,
        Duration::from_secs(seconds),
        &names,
        &mut created,
    )
    .await;
    created.remove(&stack, &target.cluster).await;
    match outcome {
        Ok(figures) => {
            println!("{figures}");
            let failed: Vec<&Value> = figures["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ok"] == false)
                .collect();
            if failed.is_empty() {
                crate::say("inject-check: OK");
                true
            } else {
                crate::say(format!("inject-check: {} check(s) FAILED", failed.len()));
                false
            }
        }
        Err(e) => {
            crate::say(format!("inject-check: FAILED: {e}"));
            false
        }
    }
}

struct Names {
    services: Vec<String>,
    secret: String,
    /// The seeded plain task definition the services are created with.
    base_family: String,
    /// The injecting task definition they are then updated to.
    family: String,
}

#[derive(Default)]
struct Created {
    secret: Option<String>,
    cluster: bool,
    services: Vec<String>,
    task_definition: Option<String>,
}

impl Created {
    async fn remove(&self, stack: &pgflip_tests::Stack, cluster: &str) {
        for service in &self.services {
            let _ = stack
                .ecs
                .delete_service()
                .cluster(cluster)
                .service(service)
                .force(true)
                .send()
                .await;
        }
        if self.cluster {
            let _ = stack.ecs.delete_cluster().cluster(cluster).send().await;
        }
        if let Some(td) = &self.task_definition {
            let _ = stack
                .ecs
                .deregister_task_definition()
                .task_definition(td)
                .send()
                .await;
        }
        if let Some(secret) = &self.secret {
            let _ = stack
                .secrets
                .delete_secret()
                .secret_id(secret)
                .force_delete_without_recovery(true)
                .send()
                .await;
        }
    }
}

/// A user's secret string at `AWSCURRENT` (JSON with its password: kept in
/// a [`Password`]).
async fn secret_string(stack: &pgflip_tests::Stack, id: &str) -> Result<Password, String> {
    stack
        .secrets
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            format!(
                "read {id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?
        .secret_string
        .map(Password::new)
        .ok_or_else(|| format!("{id} has no SecretString"))
}

fn phase_json(t: &Totals) -> Value {
    json!({
        "queries": t.queries, "asBlue": t.as_blue, "asGreen": t.as_green,
        "failedLogins": t.failed_logins, "otherErrors": t.other_errors,
        "credentialErrors": t.credential_errors, "tasksStarted": t.tasks_started,
        "tasksStopped": t.tasks_stopped, "deploymentsSeen": t.deployments_seen,
    })
}

fn show(name: &str, t: &Totals, seconds: f64) {
    crate::say(format!(
        "  {name:<28} {:>5} queries ({:>5} as blue, {:>5} as green) in {seconds:.1} s; failed logins {}, other errors {}, credential errors {}; tasks started {}, stopped {}; deployments seen {}",
        t.queries, t.as_blue, t.as_green, t.failed_logins, t.other_errors,
        t.credential_errors, t.tasks_started, t.tasks_stopped, t.deployments_seen
    ));
}

#[allow(clippy::too_many_arguments)]
async fn check(
    args: &crate::Args,
    stack: &pgflip_tests::Stack,
    target: &pgflip_tests::Target,
    hold: Duration,
    names: &Names,
    created: &mut Created,
) -> Result<Value, String> {
    let (services, secret_name) = (&names.services[..], names.secret.as_str());
    let agent = Agent {
        ecs: stack.ecs.clone(),
        secrets: stack.secrets.clone(),
        ssm: stack.ssm.clone(),
    };
    let mut checks = vec![];
    let mut record = |name: &str, ok: bool, detail: String| {
        crate::say(format!(
            "  [{}] {name}: {detail}",
            if ok { "ok" } else { "FAILED" }
        ));
        checks.push(json!({"check": name, "ok": ok, "detail": detail}));
    };

    // The alternating secret, AWSCURRENT = blue's credentials (same JSON
    // shape: engine, host, port as a number, dbname, username, password).
    let blue = secret_string(stack, &target.blue_secret).await?;
    let green = secret_string(stack, &target.green_secret).await?;
    let made = stack
        .secrets
        .create_secret()
        .name(secret_name)
        .secret_string(blue.expose())
        .send()
        .await
        .map_err(|e| {
            format!(
                "create {secret_name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let secret_arn = made.arn.ok_or("CreateSecret returned no ARN")?;
    let blue_version = made.version_id.ok_or("CreateSecret returned no version")?;
    created.secret = Some(secret_arn.clone());
    crate::say(format!(
        "== secret {secret_arn}: AWSCURRENT {blue_version} names {}",
        target.blue_role
    ));

    // Two services on the stack's plain task definition, then pointed at
    // the injecting one.
    stack
        .ecs
        .create_cluster()
        .cluster_name(&target.cluster)
        .send()
        .await
        .map_err(|e| {
            format!(
                "create cluster {}: {}",
                target.cluster,
                DisplayErrorContext(&e)
            )
        })?;
    created.cluster = true;
    for service in services {
        stack
            .ecs
            .create_service()
            .cluster(&target.cluster)
            .service_name(service)
            .task_definition(&names.base_family)
            .desired_count(2)
            .send()
            .await
            .map_err(|e| format!("create service {service}: {}", DisplayErrorContext(&e)))?;
        created.services.push(service.clone());
    }
    let td = inject_from_secret(
        &stack.ecs,
        &target.cluster,
        services,
        &names.family,
        &secret_arn,
    )
    .await?;
    created.task_definition = Some(td.clone());
    crate::say(format!(
        "== registered {td}: DB_USER, DB_PASSWORD, DB_HOST, DB_PORT, DB_NAME from {secret_arn}:<key>::; UpdateService {} to it",
        services.join(", ")
    ));

    // What moto reports after UpdateService with a new taskDefinition.
    let described = stack
        .ecs
        .describe_services()
        .cluster(&target.cluster)
        .services(&services[0])
        .send()
        .await
        .map_err(|e| format!("describe {}: {}", services[0], DisplayErrorContext(&e)))?;
    let s = described
        .services()
        .first()
        .ok_or("service not described")?;
    let primary_td = s
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .and_then(|d| d.task_definition())
        .unwrap_or("-")
        .to_string();
    let service_td = s.task_definition().unwrap_or("-").to_string();
    let resolved = task_definition_of(&agent, &target.cluster, &services[0]).await?;
    crate::say(format!(
        "   DescribeServices {}: PRIMARY deployment taskDefinition {primary_td}, service taskDefinition {service_td}; tasks start with {resolved}",
        services[0]
    ));
    let quirk = primary_td != service_td;
    record(
        "tasks resolve the task definition UpdateService set",
        resolved == td,
        format!(
            "{resolved}{}",
            if quirk {
                " (moto kept the deployment's old taskDefinition: the service's field is used)"
            } else {
                ""
            }
        ),
    );
    let env = injected_environment(&agent, &target.cluster, &services[0]).await?;
    let db = env.db_credentials()?;
    let names: Vec<String> = env
        .containers
        .iter()
        .flat_map(|(c, e)| {
            e.plain
                .keys()
                .map(move |k| format!("{c}.{k}"))
                .chain(e.secret.keys().map(move |k| format!("{c}.{k} (secret)")))
        })
        .collect();
    crate::say(format!("   a task's environment: {}", names.join(", ")));
    record(
        "a task starting now is injected blue",
        db.username == target.blue_role,
        format!(
            "DB_USER={} DB_HOST={} DB_PORT={} DB_NAME={} DB_PASSWORD=({} characters)",
            db.username,
            db.host,
            db.port,
            db.dbname,
            db.password.expose().len()
        ),
    );

    // A. The harness on the injected source.
    let mut config = args.load_config(target, services.to_vec());
    config.credentials = CredentialSource::Injected;
    config.max_life = Duration::from_secs(300);
    let per_set = (config.tasks_per_service * services.len()) as u64;
    let started = Instant::now();
    let harness = Harness::start(target, config).await;
    let outcome = async {
        harness.wait_settled(Duration::from_secs(30)).await?;
        tokio::time::sleep(hold).await;
        let a = harness.totals();
        let a_s = started.elapsed().as_secs_f64();
        show("A. injected blue", &a, a_s);
        record(
            "A: every task logs in as blue",
            a.queries > 0
                && a.as_blue == a.queries
                && a.failed_logins == 0
                && a.credential_errors == 0,
            format!(
                "{} queries, {} as blue, {} failed logins",
                a.queries, a.as_blue, a.failed_logins
            ),
        );
        record(
            "A: one task set started",
            a.tasks_started == per_set,
            format!("{} tasks started, {per_set} expected", a.tasks_started),
        );

        // B. AWSCURRENT moves to a version naming green.
        let pending = stack
            .secrets
            .put_secret_value()
            .secret_id(&secret_arn)
            .secret_string(green.expose())
            .version_stages(pgflip_core::domain::AWSPENDING)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "put the green version: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?
            .version_id
            .ok_or("PutSecretValue returned no version")?;
        stack
            .secrets
            .update_secret_version_stage()
            .secret_id(&secret_arn)
            .version_stage(pgflip_core::domain::AWSCURRENT)
            .move_to_version_id(&pending)
            .remove_from_version_id(&blue_version)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "promote the green version: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?;
        let b_from = Instant::now();
        let now_env = injected_environment(&agent, &target.cluster, &services[0]).await?;
        let now_user = now_env.db_credentials()?.username;
        crate::say(format!(
            "== AWSCURRENT moved to {pending} (names {now_user}); no deployment"
        ));
        record(
            "B: a task starting now would be injected green",
            now_user == target.green_role,
            format!("DB_USER={now_user}"),
        );
        tokio::time::sleep(hold).await;
        let b = harness.totals();
        let db_ = b - a;
        show(
            "B. secret flipped, running",
            &db_,
            b_from.elapsed().as_secs_f64(),
        );
        record(
            "B: running tasks keep blue and keep logging in",
            db_.queries > 0
                && db_.as_blue == db_.queries
                && db_.as_green == 0
                && db_.failed_logins == 0,
            format!(
                "{} queries, {} as blue, {} as green, {} failed logins",
                db_.queries, db_.as_blue, db_.as_green, db_.failed_logins
            ),
        );
        record(
            "B: no task started",
            db_.tasks_started == 0,
            format!("{} tasks started", db_.tasks_started),
        );

        // C. A forced new deployment: new tasks resolve again.
        for service in services {
            stack.redeploy(target, service).await;
        }
        let c_from = Instant::now();
        let rollout = harness.wait_settled(Duration::from_secs(60)).await?;
        let c = harness.totals();
        let dc = c - b;
        show("C. rollout", &dc, c_from.elapsed().as_secs_f64());
        crate::say(format!(
            "   rollout settled in {:.2} s",
            rollout.as_secs_f64()
        ));
        record(
            "C: each service's new deployment seen, one new task set started",
            dc.deployments_seen == services.len() as u64
                && dc.tasks_started == per_set
                && dc.tasks_stopped == per_set,
            format!(
                "{} deployments seen, {} tasks started, {} stopped",
                dc.deployments_seen, dc.tasks_started, dc.tasks_stopped
            ),
        );
        record(
            "C: no failed login during the rollout",
            dc.failed_logins == 0 && dc.credential_errors == 0,
            format!(
                "{} failed logins, {} as blue (old tasks draining), {} as green",
                dc.failed_logins, dc.as_blue, dc.as_green
            ),
        );
        let d_from = Instant::now();
        tokio::time::sleep(hold).await;
        let d = harness.totals() - c;
        show("D. after the rollout", &d, d_from.elapsed().as_secs_f64());
        record(
            "D: every task logs in as green",
            d.queries > 0 && d.as_green == d.queries && d.failed_logins == 0,
            format!(
                "{} queries, {} as green, {} as blue",
                d.queries, d.as_green, d.as_blue
            ),
        );
        Ok::<_, String>(json!({
            "A": phase_json(&a), "B": phase_json(&db_), "C": phase_json(&dc), "D": phase_json(&d),
            "rolloutSeconds": rollout.as_secs_f64(),
        }))
    }
    .await;
    let samples = harness.error_samples();
    let total = harness.stop().await;
    show("total", &total, started.elapsed().as_secs_f64());
    if !samples.is_empty() {
        crate::say(format!("   errors seen: {samples:?}"));
    }
    let mut phases = outcome?;
    record(
        "no failed login, no other error in the whole run",
        total.failed_logins == 0 && total.other_errors == 0,
        format!(
            "{} failed logins, {} other errors",
            total.failed_logins, total.other_errors
        ),
    );
    phases["total"] = phase_json(&total);
    phases["motoQuirk"] = json!({
        "primaryDeploymentTaskDefinition": primary_td,
        "serviceTaskDefinition": service_td,
    });
    phases["checks"] = json!(checks);
    Ok(phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbCdEf";

    fn sm(key: Option<&str>, stage: Option<&str>, id: Option<&str>) -> ValueFrom {
        ValueFrom::SecretsManager {
            secret_arn: ARN.into(),
            json_key: key.map(Into::into),
            version_stage: stage.map(Into::into),
            version_id: id.map(Into::into),
        }
    }

    #[test]
    fn full_secret_arn_is_the_whole_secret_string() {
        assert_eq!(parse_value_from(ARN), Ok(sm(None, None, None)));
    }

    #[test]
    fn json_key_only() {
        assert_eq!(
            parse_value_from(&format!("{ARN}:username::")),
            Ok(sm(Some("username"), None, None))
        );
    }

    #[test]
    fn json_key_and_stage() {
        assert_eq!(
            parse_value_from(&format!("{ARN}:password:AWSPREVIOUS:")),
            Ok(sm(Some("password"), Some("AWSPREVIOUS"), None))
        );
        // A stage without a key: the whole string of that version.
        assert_eq!(
            parse_value_from(&format!("{ARN}::AWSPENDING:")),
            Ok(sm(None, Some("AWSPENDING"), None))
        );
    }

    #[test]
    fn version_id() {
        let id = "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE";
        assert_eq!(
            parse_value_from(&format!("{ARN}:port::{id}")),
            Ok(sm(Some("port"), None, Some(id)))
        );
        assert_eq!(
            parse_value_from(&format!("{ARN}:port:AWSCURRENT:{id}")),
            Ok(sm(Some("port"), Some("AWSCURRENT"), Some(id)))
        );
    }

    #[test]
    fn other_partitions() {
        let arn = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbCdEf:host::";
        assert!(matches!(
            parse_value_from(arn),
            Ok(ValueFrom::SecretsManager { json_key: Some(k), .. }) if k == "host"
        ));
    }

    #[test]
    fn ssm_name_and_arn() {
        assert_eq!(
            parse_value_from("/app/db/active-user"),
            Ok(ValueFrom::Ssm {
                name: "/app/db/active-user".into()
            })
        );
        assert_eq!(
            parse_value_from("plain-name"),
            Ok(ValueFrom::Ssm {
                name: "plain-name".into()
            })
        );
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db/active-user";
        assert_eq!(
            parse_value_from(arn),
            Ok(ValueFrom::Ssm { name: arn.into() })
        );
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        for (input, says) in [
            ("", "empty"),
            ("has space", "whitespace"),
            (&format!("{ARN}:username") as &str, "expected none or three"),
            (&format!("{ARN}:username:"), "expected none or three"),
            (&format!("{ARN}:a:b:c:d"), "expected none or three"),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "expected arn:",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:key:x",
                "expected arn:",
            ),
            (
                "arn:aws:secretsmanager::123456789012:secret:x-AbCdEf",
                "no region",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:12345:secret:x-AbCdEf",
                "12 digits",
            ),
            (
                "arn:aws:ssm:us-east-1:123456789012:document/x",
                "parameter/<name>",
            ),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/",
                "parameter/<name>",
            ),
            (
                "arn:aws:s3:us-east-1:123456789012:bucket",
                "secretsmanager or ssm only",
            ),
            ("arn:aws", "not an ARN"),
            (
                "arn:foo:ssm:us-east-1:123456789012:parameter/x",
                "partition",
            ),
        ] {
            let e = parse_value_from(input).expect_err(input);
            assert!(e.contains(says), "{input:?}: {e}");
            assert!(e.contains(&format!("{input:?}")), "names the input: {e}");
        }
    }

    #[test]
    fn json_values_become_the_text_ecs_injects() {
        let doc = r#"{"username":"blue","port":5432,"ssl":true,"opts":{"a":1},"password":"s3cr3t-Value"}"#;
        assert_eq!(pick_key(doc, "username").unwrap().expose(), "blue");
        assert_eq!(pick_key(doc, "port").unwrap().expose(), "5432");
        assert_eq!(pick_key(doc, "ssl").unwrap().expose(), "true");
        assert_eq!(pick_key(doc, "opts").unwrap().expose(), r#"{"a":1}"#);
        let missing = pick_key(doc, "dbname").unwrap_err();
        assert!(missing.contains("dbname") && !missing.contains("s3cr3t"));
    }

    #[test]
    fn errors_never_quote_the_secret() {
        let broken = r#"{"password":"s3cr3t-Value""#;
        let e = pick_key(broken, "password").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = pick_key(r#""s3cr3t-Value""#, "password").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        let env = TaskEnvironment {
            task_definition: "td".into(),
            containers: vec![(
                "app".into(),
                ContainerEnvironment {
                    plain: BTreeMap::new(),
                    secret: BTreeMap::from([
                        (DB_USER.to_string(), Password::new("blue".into())),
                        (
                            DB_PASSWORD.to_string(),
                            Password::new("s3cr3t-Value".into()),
                        ),
                    ]),
                },
            )],
        };
        let e = env.db_credentials().unwrap_err();
        assert!(e.contains("DB_HOST") && !e.contains("s3cr3t"), "{e}");
        assert!(!format!("{env:?}").contains("s3cr3t"));
    }

    #[test]
    fn credentials_from_the_environment() {
        let secret = |v: &str| Password::new(v.into());
        let env = TaskEnvironment {
            task_definition: "td".into(),
            containers: vec![
                ("sidecar".into(), ContainerEnvironment::default()),
                (
                    "app".into(),
                    ContainerEnvironment {
                        plain: BTreeMap::from([(DB_NAME.to_string(), "app".to_string())]),
                        secret: BTreeMap::from([
                            (DB_USER.to_string(), secret("green")),
                            (DB_PASSWORD.to_string(), secret("pw")),
                            (DB_HOST.to_string(), secret("127.0.0.1")),
                            (DB_PORT.to_string(), secret("15432")),
                        ]),
                    },
                ),
            ],
        };
        let c = env.db_credentials().unwrap();
        assert_eq!(
            (
                c.username.as_str(),
                c.host.as_str(),
                c.port,
                c.dbname.as_str()
            ),
            ("green", "127.0.0.1", 15432, "app")
        );
        assert_eq!(c.password.expose(), "pw");
    }

    #[test]
    fn the_registered_secrets_parse_back() {
        for s in db_secrets_from(ARN) {
            assert!(matches!(
                parse_value_from(s.value_from()),
                Ok(ValueFrom::SecretsManager { secret_arn, json_key: Some(_), version_stage: None, version_id: None }) if secret_arn == ARN
            ));
        }
    }
}
