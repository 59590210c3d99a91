//! Typed configuration, read from the environment once at cold start.
//!
//! Each Lambda parses only the part it needs; the README's configuration table
//! lists every variable. Values are identifiers (names, ARNs), never secrets.

use std::collections::HashMap;

use serde::Deserialize;

use crate::domain::{
    dedup, same_secret, Connection, PasswordSetter, PointerLayout, ReaderEndpoint, Services,
    StoreKind, UnlistedConsumers, UserKeys, MAX_LOOKS,
};
use crate::errors::RotationError;
use crate::password::{PasswordPolicy, DEFAULT_EXCLUDED};

/// A source of environment variables (the process environment, or a map in tests).
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

fn required(env: &dyn Env, key: &str) -> Result<String, RotationError> {
    env.var(key).map(|v| v.trim().to_string()).ok_or_else(|| {
        RotationError::Configuration(format!("environment variable {key} is not set"))
    })
}

fn number(
    env: &dyn Env,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, RotationError> {
    let Some(raw) = env.var(key) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(RotationError::Configuration(format!(
            "{key} must be a whole number between {min} and {max}, got {raw:?}"
        ))),
    }
}

/// Splits a comma-separated list, dropping blanks and repeats (the first
/// of each stays, in order).
pub fn split_list(raw: &str) -> Vec<String> {
    dedup(raw.split(',').map(str::trim))
}

/// The default of `VALID_UNTIL_MARGIN_DAYS`: the schedule's 30 days until
/// the next rotation moves the pointer away, plus two weeks to notice and
/// fix a failed one.
pub const DEFAULT_VALID_UNTIL_MARGIN_DAYS: u64 = 45;

/// Checks a rollout's look interval and deadline: at most [`MAX_LOOKS`] looks
/// fit in the deadline, so an execution cannot reach Step Functions'
/// history limit while it waits (and then fail without its rollback).
pub fn check_waits(
    what: &str,
    poll_seconds: u64,
    timeout_seconds: u64,
) -> Result<(), RotationError> {
    let looks = timeout_seconds.div_ceil(poll_seconds.max(1));
    if poll_seconds == 0 || looks > u64::from(MAX_LOOKS) {
        let least = timeout_seconds.div_ceil(u64::from(MAX_LOOKS)).max(1);
        return Err(RotationError::Configuration(format!(
            "{what}: a poll interval of {poll_seconds} s with a deadline of {timeout_seconds} s allows {} looks at a rollout, more than the {MAX_LOOKS} that fit in an execution's history; set the poll interval to at least {least} s or shorten the deadline",
            if poll_seconds == 0 { "unbounded".to_string() } else { looks.to_string() }
        )));
    }
    Ok(())
}

/// What one rotation acts on: the pointer, the two users and their secrets, the
/// services that read them. Read by `select-user`, which passes what later
/// steps need on in the [`crate::domain::Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// The target's name in the targets document (`None`: the environment's).
    pub name: Option<String>,
    /// Where the pointer lives. With the alternating secret, both users'
    /// secret ids are that secret, and `parameter_name` is the optional
    /// active-user parameter kept equal to it (empty: none).
    pub layout: PointerLayout,
    pub parameter_name: String,
    pub blue_user: String,
    pub green_user: String,
    pub blue_secret_id: String,
    pub green_secret_id: String,
    pub cluster: String,
    /// The services to redeploy: listed, or `auto` (discovered).
    pub services: Services,
    /// A service that reads the target but is not listed: refuse or warn.
    pub unlisted_consumers: UnlistedConsumers,
    pub stable_poll_seconds: u64,
    pub stable_timeout_seconds: u64,
    pub password_store: StoreKind,
    pub connection: Connection,
    /// Readers the new password must log in on before the flip, and whose
    /// sessions count as the inactive user's.
    pub readers: Vec<ReaderEndpoint>,
    /// An RDS Proxy whose `Auth` must list both users' secrets.
    pub proxy_name: Option<String>,
    /// Whether the two users' secrets may name different servers or
    /// databases (default: no, `EndpointMismatch`).
    pub allow_different_endpoints: bool,
    /// The user about to become active must stay valid (`VALID UNTIL`) at
    /// least this many days.
    pub valid_until_margin_days: u64,
    /// The administrator's secret (`DB_ADMIN_SECRET_ID`): `select-user`
    /// checks it can set a password no version holds (the alternating
    /// layout's first rotation), `generate-and-set-password` sets it.
    pub admin_secret_id: Option<String>,
}

/// `POINTER_LAYOUT`: `parameter` (the default) or `alternating-secret`.
enum Layout {
    Parameter,
    AlternatingSecret,
}

fn layout_from_env(env: &dyn Env) -> Result<Layout, RotationError> {
    match env.var("POINTER_LAYOUT").as_deref().map(str::trim) {
        None | Some("parameter") => Ok(Layout::Parameter),
        Some("alternating-secret") => Ok(Layout::AlternatingSecret),
        Some(other) => Err(RotationError::Configuration(format!(
            "POINTER_LAYOUT must be parameter or alternating-secret, got {other:?}"
        ))),
    }
}

/// The alternating secret's labels and tag are Secrets Manager's.
fn alternating_needs_secrets_manager(what: &str, store: StoreKind) -> Result<(), RotationError> {
    if store == StoreKind::SecretsManager {
        return Ok(());
    }
    Err(RotationError::Configuration(format!(
        "{what}: the alternating-secret layout keeps both users in one Secrets Manager secret; PASSWORD_STORE must be secretsmanager"
    )))
}

/// The store from `PASSWORD_STORE` (`secretsmanager`, the default, or `ssm`).
fn store_from_env(env: &dyn Env) -> Result<StoreKind, RotationError> {
    match env.var("PASSWORD_STORE") {
        None => Ok(StoreKind::default()),
        Some(raw) => StoreKind::parse(&raw).ok_or_else(|| {
            RotationError::Configuration(format!(
                "PASSWORD_STORE must be secretsmanager or ssm, got {raw:?}"
            ))
        }),
    }
}

/// `DB_HOST`, `DB_PORT`, `DB_NAME`: only needed for passwords stored bare.
fn connection_from_env(env: &dyn Env) -> Result<Connection, RotationError> {
    let port = match env.var("DB_PORT") {
        None => None,
        Some(_) => Some(number(env, "DB_PORT", 5432, 1, 65535)? as u16),
    };
    Ok(Connection {
        host: env.var("DB_HOST").map(|v| v.trim().to_string()),
        port,
        dbname: env.var("DB_NAME").map(|v| v.trim().to_string()),
    })
}

/// `DB_READER_ENDPOINTS`: comma-separated `host:port` of readers.
fn readers_from(what: &str, raw: &[&str]) -> Result<Vec<ReaderEndpoint>, RotationError> {
    let mut out: Vec<ReaderEndpoint> = Vec::new();
    for item in dedup(raw.iter().copied()) {
        let reader = ReaderEndpoint::parse(&item).ok_or_else(|| {
            RotationError::Configuration(format!("{what}: {item:?} is not host:port"))
        })?;
        out.push(reader);
    }
    Ok(out)
}

fn boolean(env: &dyn Env, key: &str) -> Result<bool, RotationError> {
    match env.var(key).as_deref().map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(RotationError::Configuration(format!(
            "{key} must be true or false, got {other:?}"
        ))),
    }
}

/// `services` in a targets document entry: `["web", …]` or `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ServicesEntry {
    Listed(Vec<String>),
    Word(String),
}

/// `UNLISTED_CONSUMERS`: `error` (the default) or `warn`.
fn unlisted_from_env(env: &dyn Env) -> Result<UnlistedConsumers, RotationError> {
    match env.var("UNLISTED_CONSUMERS") {
        None => Ok(UnlistedConsumers::default()),
        Some(raw) => UnlistedConsumers::parse(&raw).ok_or_else(|| {
            RotationError::Configuration(format!(
                "UNLISTED_CONSUMERS must be error or warn, got {raw:?}"
            ))
        }),
    }
}

/// One entry of the targets document (see [`Targets`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetEntry {
    #[serde(default)]
    active_user_parameter: Option<String>,
    #[serde(default)]
    blue_user: Option<String>,
    #[serde(default)]
    green_user: Option<String>,
    #[serde(default)]
    blue_secret_id: Option<String>,
    #[serde(default)]
    green_secret_id: Option<String>,
    /// The alternating-secret layout: this one secret instead of the
    /// parameter and the two secrets.
    #[serde(default)]
    alternating_secret_id: Option<String>,
    cluster: String,
    /// A list of names, or `"auto"`.
    services: ServicesEntry,
    #[serde(default)]
    unlisted_consumers: Option<UnlistedConsumers>,
    #[serde(default)]
    password_store: Option<StoreKind>,
    #[serde(default)]
    db_host: Option<String>,
    #[serde(default)]
    db_port: Option<u16>,
    #[serde(default)]
    db_name: Option<String>,
    #[serde(default)]
    stable_poll_seconds: Option<u64>,
    #[serde(default)]
    stable_timeout_seconds: Option<u64>,
    #[serde(default)]
    reader_endpoints: Vec<String>,
    #[serde(default)]
    db_proxy_name: Option<String>,
    #[serde(default)]
    allow_different_endpoints: Option<bool>,
    #[serde(default)]
    valid_until_margin_days: Option<u64>,
}

impl TargetConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, RotationError> {
        let users = UserKeys::from_env(env)?;
        let listed = split_list(&required(env, "ECS_SERVICES")?);
        let services = Services::parse_list(&listed.iter().map(String::as_str).collect::<Vec<_>>());
        if services == Services::Listed(vec![]) {
            return Err(RotationError::Configuration(
                "ECS_SERVICES must name at least one service, or be auto".into(),
            ));
        }
        let stable_poll_seconds = number(env, "STABLE_POLL_SECONDS", 30, 1, 3600)?;
        let stable_timeout_seconds = number(env, "STABLE_TIMEOUT_SECONDS", 1800, 1, 86_400)?;
        check_waits(
            "STABLE_POLL_SECONDS and STABLE_TIMEOUT_SECONDS",
            stable_poll_seconds,
            stable_timeout_seconds,
        )?;
        let readers = env.var("DB_READER_ENDPOINTS").unwrap_or_default();
        let password_store = store_from_env(env)?;
        // Every variable is read whatever the layout (the table below lists them).
        let layout = layout_from_env(env)?;
        let parameter = env
            .var("ACTIVE_USER_PARAMETER")
            .map(|v| v.trim().to_string());
        let alternating = env
            .var("ALTERNATING_SECRET_ID")
            .map(|v| v.trim().to_string());
        let blue_secret = env.var("BLUE_SECRET_ID").map(|v| v.trim().to_string());
        let green_secret = env.var("GREEN_SECRET_ID").map(|v| v.trim().to_string());
        let unset = |key: &str| {
            RotationError::Configuration(format!("environment variable {key} is not set"))
        };
        let (layout, parameter_name, blue_secret_id, green_secret_id) = match layout {
            Layout::Parameter => (
                PointerLayout::Parameter,
                parameter.ok_or_else(|| unset("ACTIVE_USER_PARAMETER"))?,
                blue_secret.ok_or_else(|| unset("BLUE_SECRET_ID"))?,
                green_secret.ok_or_else(|| unset("GREEN_SECRET_ID"))?,
            ),
            Layout::AlternatingSecret => {
                if blue_secret.is_some() || green_secret.is_some() {
                    return Err(RotationError::Configuration(
                        "BLUE_SECRET_ID or GREEN_SECRET_ID is set, but POINTER_LAYOUT=alternating-secret keeps both users in ALTERNATING_SECRET_ID; unset them".into(),
                    ));
                }
                alternating_needs_secrets_manager("POINTER_LAYOUT", password_store)?;
                let secret = alternating.ok_or_else(|| unset("ALTERNATING_SECRET_ID"))?;
                (
                    PointerLayout::AlternatingSecret {
                        secret_id: secret.clone(),
                        active_user_parameter: parameter.clone(),
                    },
                    parameter.unwrap_or_default(),
                    secret.clone(),
                    secret,
                )
            }
        };
        Ok(Self {
            name: None,
            layout,
            parameter_name,
            blue_user: users.blue,
            green_user: users.green,
            blue_secret_id,
            green_secret_id,
            cluster: required(env, "ECS_CLUSTER")?,
            services,
            unlisted_consumers: unlisted_from_env(env)?,
            stable_poll_seconds,
            stable_timeout_seconds,
            password_store,
            connection: connection_from_env(env)?,
            readers: readers_from(
                "DB_READER_ENDPOINTS",
                &readers.split(',').collect::<Vec<_>>(),
            )?,
            proxy_name: env.var("DB_PROXY_NAME").map(|v| v.trim().to_string()),
            admin_secret_id: match password_setter_from_env(env) {
                PasswordSetter::Admin { secret_id } => Some(secret_id),
                PasswordSetter::SelfService => None,
            },
            allow_different_endpoints: boolean(env, "ALLOW_DIFFERENT_ENDPOINTS")?,
            valid_until_margin_days: number(
                env,
                "VALID_UNTIL_MARGIN_DAYS",
                DEFAULT_VALID_UNTIL_MARGIN_DAYS,
                0,
                3650,
            )?,
        })
    }

    /// The target `name` of a targets document (JSON). Waits not given in the
    /// entry are the environment target's (`base`).
    pub fn from_document(
        document_name: &str,
        document: &str,
        name: &str,
        base: &TargetConfig,
    ) -> Result<Self, RotationError> {
        let bad = |what: String| {
            RotationError::Configuration(format!("targets document {document_name}: {what}"))
        };
        let mut all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(document)
            .map_err(|e| bad(format!("not a JSON object of targets: {e}")))?;
        if all.contains_key(crate::input::DEFAULT_TARGET) {
            return Err(bad(format!(
                "{:?} is the reserved name of the environment's target; rename that entry",
                crate::input::DEFAULT_TARGET
            )));
        }
        let Some(raw) = all.remove(name) else {
            let mut known: Vec<&String> = all.keys().collect();
            known.sort();
            return Err(RotationError::InvalidInput(format!(
                "field \"target\" names {name:?}, which the targets document {document_name} does not define (it has {known:?})"
            )));
        };
        Self::from_entry(
            &format!("targets document {document_name}"),
            raw,
            name,
            base,
        )
    }

    /// One target entry (the shape of [`Targets`]' entries) named `name`,
    /// from `source` (for messages: the document, or the target's own
    /// parameter in the `TARGETS_PATH` registry). Waits not given in the
    /// entry are `base`'s. Anything wrong is `ConfigurationError` naming
    /// the source and the field.
    pub fn from_entry(
        source: &str,
        raw: serde_json::Value,
        name: &str,
        base: &TargetConfig,
    ) -> Result<Self, RotationError> {
        let bad = |what: String| RotationError::Configuration(format!("{source}: {what}"));
        let entry: TargetEntry =
            serde_json::from_value(raw).map_err(|e| bad(format!("target {name:?}: {e}")))?;
        let users = UserKeys {
            blue: entry.blue_user.unwrap_or_else(|| "blue".into()),
            green: entry.green_user.unwrap_or_else(|| "green".into()),
        };
        let non_empty = |field: &str, v: &str| {
            if v.trim().is_empty() {
                Err(bad(format!("target {name:?}: {field} is empty")))
            } else {
                Ok(v.trim().to_string())
            }
        };
        if users.blue == users.green {
            return Err(bad(format!(
                "target {name:?}: blueUser and greenUser must differ"
            )));
        }
        let services = match &entry.services {
            ServicesEntry::Listed(names) => {
                Services::Listed(dedup(names.iter().map(String::as_str)))
            }
            ServicesEntry::Word(word) if word.trim().eq_ignore_ascii_case("auto") => Services::Auto,
            ServicesEntry::Word(other) => {
                return Err(bad(format!(
                    "target {name:?}: services must be a list of service names or \"auto\", got {other:?}"
                )))
            }
        };
        if services == Services::Listed(vec![]) {
            return Err(bad(format!(
                "target {name:?}: services must name at least one service, or be \"auto\""
            )));
        }
        let stable_poll_seconds = entry
            .stable_poll_seconds
            .unwrap_or(base.stable_poll_seconds);
        let stable_timeout_seconds = entry
            .stable_timeout_seconds
            .unwrap_or(base.stable_timeout_seconds)
            .max(1);
        check_waits(
            &format!("{source}: target {name:?}"),
            stable_poll_seconds,
            stable_timeout_seconds,
        )?;
        let readers: Vec<&str> = entry.reader_endpoints.iter().map(String::as_str).collect();
        let given = |field: &str, v: &Option<String>| match v {
            Some(v) => non_empty(field, v),
            None => Err(bad(format!("target {name:?}: {field} is missing"))),
        };
        let password_store = entry.password_store.unwrap_or_default();
        let (layout, parameter_name, blue_secret_id, green_secret_id) = match &entry
            .alternating_secret_id
        {
            None => (
                PointerLayout::Parameter,
                given("activeUserParameter", &entry.active_user_parameter)?,
                given("blueSecretId", &entry.blue_secret_id)?,
                given("greenSecretId", &entry.green_secret_id)?,
            ),
            Some(secret) => {
                if entry.blue_secret_id.is_some() || entry.green_secret_id.is_some() {
                    return Err(bad(format!(
                            "target {name:?}: alternatingSecretId keeps both users in one secret; remove blueSecretId and greenSecretId"
                        )));
                }
                alternating_needs_secrets_manager(
                    &format!("{source}: target {name:?}"),
                    password_store,
                )?;
                let secret = non_empty("alternatingSecretId", secret)?;
                let parameter = match &entry.active_user_parameter {
                    Some(p) => Some(non_empty("activeUserParameter", p)?),
                    None => None,
                };
                (
                    PointerLayout::AlternatingSecret {
                        secret_id: secret.clone(),
                        active_user_parameter: parameter.clone(),
                    },
                    parameter.unwrap_or_default(),
                    secret.clone(),
                    secret,
                )
            }
        };
        Ok(Self {
            name: Some(name.to_string()),
            layout,
            parameter_name,
            blue_user: users.blue,
            green_user: users.green,
            blue_secret_id,
            green_secret_id,
            cluster: non_empty("cluster", &entry.cluster)?,
            services,
            unlisted_consumers: entry.unlisted_consumers.unwrap_or_default(),
            stable_poll_seconds,
            stable_timeout_seconds,
            password_store,
            connection: Connection {
                host: entry.db_host,
                port: entry.db_port,
                dbname: entry.db_name,
            },
            readers: readers_from(
                &format!("{source}: target {name:?}: readerEndpoints"),
                &readers,
            )?,
            proxy_name: entry
                .db_proxy_name
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
            allow_different_endpoints: entry.allow_different_endpoints.unwrap_or(false),
            admin_secret_id: base.admin_secret_id.clone(),
            valid_until_margin_days: entry
                .valid_until_margin_days
                .unwrap_or(base.valid_until_margin_days)
                .min(3650),
        })
    }

    /// The two user keys.
    pub fn users(&self) -> UserKeys {
        UserKeys {
            blue: self.blue_user.clone(),
            green: self.green_user.clone(),
        }
    }

    /// The secret of a user key, if the key is one of the two users.
    pub fn secret_of(&self, user: &str) -> Option<&str> {
        if user == self.blue_user {
            Some(&self.blue_secret_id)
        } else if user == self.green_user {
            Some(&self.green_secret_id)
        } else {
            None
        }
    }

    /// The user whose secret `secret` is: `secret` may be the ARN an event
    /// carries (`…:secret:<name>-<6 random characters>`) while the
    /// configuration names the secret by name, or the other way round.
    pub fn owner_of_secret(&self, secret: &str) -> Option<&str> {
        if same_secret(&self.blue_secret_id, secret) {
            Some(&self.blue_user)
        } else if same_secret(&self.green_secret_id, secret) {
            Some(&self.green_user)
        } else {
            None
        }
    }

    /// The other user of the pair.
    pub fn other(&self, user: &str) -> Option<&str> {
        if user == self.blue_user {
            Some(&self.green_user)
        } else if user == self.green_user {
            Some(&self.blue_user)
        } else {
            None
        }
    }
}

impl UserKeys {
    /// `BLUE_USER` and `GREEN_USER` (default `blue` and `green`), which must differ.
    pub fn from_env(env: &dyn Env) -> Result<Self, RotationError> {
        let blue = env
            .var("BLUE_USER")
            .unwrap_or_else(|| "blue".into())
            .trim()
            .to_string();
        let green = env
            .var("GREEN_USER")
            .unwrap_or_else(|| "green".into())
            .trim()
            .to_string();
        if blue == green {
            return Err(RotationError::Configuration(format!(
                "BLUE_USER and GREEN_USER must differ, both are {blue:?}"
            )));
        }
        Ok(Self { blue, green })
    }
}

/// Where other targets are defined: `TARGETS_PARAMETER` names an SSM
/// parameter holding a JSON object of targets by name, each like
/// `{"activeUserParameter": …, "blueSecretId": …, "greenSecretId": …,
/// "cluster": …, "services": […]}` (optional: `blueUser`, `greenUser`,
/// `passwordStore`, `dbHost`, `dbPort`, `dbName`, `stablePollSeconds`,
/// `stableTimeoutSeconds`). An execution names one with `{"target": …}`;
/// without it, it rotates the target of the environment.
///
/// For fleets, `TARGETS_PATH` (for example `/pgflip/targets/`) holds one
/// SSM parameter per target, `<path><name>`, each one such entry: an
/// execution reads its own target with one `GetParameter`, listings use
/// `GetParametersByPath`, and a bad entry fails only its own target. A name
/// is looked up under the path first, then in the document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    pub parameter_name: Option<String>,
    /// Ends in `/` when set.
    pub path: Option<String>,
}

impl Targets {
    pub fn from_env(env: &dyn Env) -> Self {
        Self {
            parameter_name: env.var("TARGETS_PARAMETER").map(|v| v.trim().to_string()),
            path: env
                .var("TARGETS_PATH")
                .map(|v| format!("{}/", v.trim().trim_end_matches('/'))),
        }
    }
}

/// What `report-outcome` reports to: `ALERT_TOPIC_ARN` (required: the SNS
/// topic of notifications) and `METRICS_NAMESPACE` (default `pgflip`: the
/// CloudWatch namespace of its metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    pub alert_topic_arn: String,
    pub metrics_namespace: String,
}

impl ReportConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, RotationError> {
        Ok(Self {
            alert_topic_arn: required(env, "ALERT_TOPIC_ARN")?,
            metrics_namespace: env
                .var("METRICS_NAMESPACE")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "pgflip".into()),
        })
    }
}

/// The sweep's limits (`plan-sweep`): `SWEEP_MAX_CONCURRENCY` (default 10,
/// 1–10,000: rotations at once in all), `SWEEP_PER_CLUSTER` (default 2,
/// 1–1,000: rotations at once per ECS cluster) and `SWEEP_JITTER_SECONDS`
/// (default 60, 0–3,600: each lane's start is delayed by up to this many
/// seconds). A sweep's input may override each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    pub max_concurrency: u32,
    pub per_cluster: u32,
    pub jitter_seconds: u32,
}

impl SweepConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, RotationError> {
        let n = |key, default, min, max| number(env, key, default, min, max).map(|n| n as u32);
        Ok(Self {
            max_concurrency: n("SWEEP_MAX_CONCURRENCY", 10, 1, 10_000)?,
            per_cluster: n("SWEEP_PER_CLUSTER", 2, 1, 1_000)?,
            jitter_seconds: n("SWEEP_JITTER_SECONDS", 60, 0, 3_600)?,
        })
    }
}

/// How to reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext. Only when explicitly configured (the local stack).
    Disable,
    /// TLS, verify the certificate chain against `DB_SSL_ROOT_CERT` and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub ssl_mode: SslMode,
    /// PEM bundle of the CAs to trust (for RDS: the RDS CA bundle shipped with the function).
    pub ssl_root_cert: Option<String>,
    pub connect_timeout_seconds: u64,
    /// Which verifier a new password is stored as.
    pub password_encryption: PasswordEncryption,
}

/// Which verifier a new password is stored as (`DB_PASSWORD_ENCRYPTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordEncryption {
    /// What the server's `password_encryption` says (and, for SCRAM, its
    /// `scram_iterations` where the server has that setting): what the
    /// server itself would store for a plaintext password.
    #[default]
    Auto,
    /// SCRAM-SHA-256, whatever the server says.
    ScramSha256,
    /// md5, whatever the server says (clients that only speak md5).
    Md5,
}

/// `DB_PASSWORD_ENCRYPTION`: `auto` (default), `scram-sha-256` or `md5`.
pub fn password_encryption_from_env(env: &dyn Env) -> Result<PasswordEncryption, RotationError> {
    match env.var("DB_PASSWORD_ENCRYPTION").as_deref().map(str::trim) {
        None | Some("auto") => Ok(PasswordEncryption::Auto),
        Some("scram-sha-256") => Ok(PasswordEncryption::ScramSha256),
        Some("md5") => Ok(PasswordEncryption::Md5),
        Some(other) => Err(RotationError::Configuration(format!(
            "DB_PASSWORD_ENCRYPTION must be auto, scram-sha-256 or md5, got {other:?}"
        ))),
    }
}

impl DbConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, RotationError> {
        let ssl_mode = match env.var("DB_SSLMODE").as_deref().map(str::trim) {
            None | Some("verify-full") => SslMode::VerifyFull,
            Some("disable") => SslMode::Disable,
            Some(other) => {
                return Err(RotationError::Configuration(format!(
                    "DB_SSLMODE must be verify-full or disable, got {other:?}"
                )))
            }
        };
        let ssl_root_cert = env.var("DB_SSL_ROOT_CERT");
        if ssl_mode == SslMode::VerifyFull && ssl_root_cert.is_none() {
            return Err(RotationError::Configuration(
                "DB_SSLMODE=verify-full needs DB_SSL_ROOT_CERT (a PEM CA bundle path)".into(),
            ));
        }
        Ok(Self {
            ssl_mode,
            ssl_root_cert,
            connect_timeout_seconds: number(env, "DB_CONNECT_TIMEOUT_SECONDS", 5, 1, 60)?,
            password_encryption: PasswordEncryption::Auto,
        })
    }
}

/// The password policy from `PASSWORD_LENGTH` and `PASSWORD_EXCLUDE_CHARACTERS`.
pub fn password_policy_from_env(env: &dyn Env) -> Result<PasswordPolicy, RotationError> {
    let length = number(env, "PASSWORD_LENGTH", 32, 0, u64::MAX)? as usize;
    let excluded = env
        .var("PASSWORD_EXCLUDE_CHARACTERS")
        .unwrap_or_else(|| DEFAULT_EXCLUDED.to_string());
    PasswordPolicy::new(length, &excluded)
}

/// Who sets the new password: the user itself (default), or the
/// administrator whose secret `DB_ADMIN_SECRET_ID` names.
pub fn password_setter_from_env(env: &dyn Env) -> PasswordSetter {
    match env.var("DB_ADMIN_SECRET_ID") {
        Some(secret_id) => PasswordSetter::Admin {
            secret_id: secret_id.trim().to_string(),
        },
        None => PasswordSetter::SelfService,
    }
}

/// The environment variables each parser reads, by the name a Lambda's
/// `main.rs` calls it with. `tests/tests/template.rs` checks that
/// `infra/template.yaml` sets exactly these for every Lambda whose `main.rs`
/// calls the parser; the `env_vars` test below keeps the table equal to what
/// the parsers actually read.
pub const ENV_VARS: &[(&str, &[&str])] = &[
    (
        "TargetConfig::from_env",
        &[
            "POINTER_LAYOUT",
            "ACTIVE_USER_PARAMETER",
            "ALTERNATING_SECRET_ID",
            "DB_ADMIN_SECRET_ID",
            "BLUE_USER",
            "GREEN_USER",
            "BLUE_SECRET_ID",
            "GREEN_SECRET_ID",
            "ECS_CLUSTER",
            "ECS_SERVICES",
            "UNLISTED_CONSUMERS",
            "STABLE_POLL_SECONDS",
            "STABLE_TIMEOUT_SECONDS",
            "PASSWORD_STORE",
            "DB_HOST",
            "DB_PORT",
            "DB_NAME",
            "DB_READER_ENDPOINTS",
            "DB_PROXY_NAME",
            "ALLOW_DIFFERENT_ENDPOINTS",
            "VALID_UNTIL_MARGIN_DAYS",
        ],
    ),
    ("Targets::from_env", &["TARGETS_PARAMETER", "TARGETS_PATH"]),
    (
        "SweepConfig::from_env",
        &[
            "SWEEP_MAX_CONCURRENCY",
            "SWEEP_PER_CLUSTER",
            "SWEEP_JITTER_SECONDS",
        ],
    ),
    (
        "ReportConfig::from_env",
        &["ALERT_TOPIC_ARN", "METRICS_NAMESPACE"],
    ),
    ("UserKeys::from_env", &["BLUE_USER", "GREEN_USER"]),
    (
        "DbConfig::from_env",
        &[
            "DB_SSLMODE",
            "DB_SSL_ROOT_CERT",
            "DB_CONNECT_TIMEOUT_SECONDS",
        ],
    ),
    (
        "password_policy_from_env",
        &["PASSWORD_LENGTH", "PASSWORD_EXCLUDE_CHARACTERS"],
    ),
    ("password_setter_from_env", &["DB_ADMIN_SECRET_ID"]),
    ("password_encryption_from_env", &["DB_PASSWORD_ENCRYPTION"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("ACTIVE_USER_PARAMETER", "/app/db/active-user"),
            ("BLUE_SECRET_ID", "app/db/blue"),
            ("GREEN_SECRET_ID", "app/db/green"),
            ("ECS_CLUSTER", "app"),
            ("ECS_SERVICES", "web, worker ,"),
        ])
    }

    #[test]
    fn target_defaults() {
        let c = TargetConfig::from_env(&base()).unwrap();
        assert_eq!(
            c.services,
            Services::Listed(vec!["web".into(), "worker".into()])
        );
        assert_eq!(
            (c.blue_user.as_str(), c.green_user.as_str()),
            ("blue", "green")
        );
        assert_eq!(c.other("blue"), Some("green"));
        assert_eq!(c.secret_of("green"), Some("app/db/green"));
        assert_eq!(c.other("purple"), None);
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-AbCdEf";
        assert_eq!(c.owner_of_secret(arn), Some("green"));
        assert_eq!(c.owner_of_secret("app/db/blue"), Some("blue"));
        assert_eq!(
            c.owner_of_secret("arn:aws:secretsmanager:us-east-1:1:secret:app/db/other-AbCdEf"),
            None
        );
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        let mut env = base();
        env.remove("ECS_CLUSTER");
        let err = TargetConfig::from_env(&env).unwrap_err();
        assert_eq!(err.name(), "ConfigurationError");
        assert!(err.to_string().contains("ECS_CLUSTER"));

        let mut env = base();
        env.insert("STABLE_POLL_SECONDS", "soon");
        assert!(TargetConfig::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("STABLE_POLL_SECONDS"));

        let mut env = base();
        env.insert("ECS_SERVICES", " , ");
        assert!(TargetConfig::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("ECS_SERVICES"));

        let mut env = base();
        env.insert("GREEN_USER", "blue");
        assert!(TargetConfig::from_env(&env).is_err());
    }

    #[test]
    fn password_store_and_bare_connection_settings() {
        let c = TargetConfig::from_env(&base()).unwrap();
        assert_eq!(c.password_store, StoreKind::SecretsManager);
        assert_eq!(c.connection, Connection::default());
        let mut env = base();
        env.extend([
            ("PASSWORD_STORE", "ssm"),
            ("DB_HOST", "db.internal"),
            ("DB_PORT", "6432"),
            ("DB_NAME", "app"),
        ]);
        let c = TargetConfig::from_env(&env).unwrap();
        assert_eq!(c.password_store, StoreKind::Ssm);
        assert_eq!(c.connection.port, Some(6432));
        env.insert("PASSWORD_STORE", "vault");
        let err = TargetConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("PASSWORD_STORE"), "{err}");
        env.insert("PASSWORD_STORE", "ssm");
        env.insert("DB_PORT", "0");
        assert!(TargetConfig::from_env(&env).is_err());
    }

    #[test]
    fn services_may_be_discovered_and_unlisted_consumers_tolerated() {
        let mut env = base();
        env.insert("ECS_SERVICES", " Auto ");
        env.insert("UNLISTED_CONSUMERS", "warn");
        let c = TargetConfig::from_env(&env).unwrap();
        assert_eq!(c.services, Services::Auto);
        assert_eq!(c.unlisted_consumers, UnlistedConsumers::Warn);
        env.insert("UNLISTED_CONSUMERS", "ignore");
        let err = TargetConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("UNLISTED_CONSUMERS"), "{err}");
        assert_eq!(
            TargetConfig::from_env(&base()).unwrap().unlisted_consumers,
            UnlistedConsumers::Error
        );

        let base = TargetConfig::from_env(&base()).unwrap();
        let doc = |services: &str, extra: &str| {
            format!(
                r#"{{"orders": {{"activeUserParameter": "/orders/active", "blueSecretId": "ob",
                "greenSecretId": "og", "cluster": "orders", "services": {services}{extra}}}}}"#
            )
        };
        let t =
            TargetConfig::from_document("/targets", &doc("\"auto\"", ""), "orders", &base).unwrap();
        assert_eq!(t.services, Services::Auto);
        assert_eq!(t.unlisted_consumers, UnlistedConsumers::Error);
        let t = TargetConfig::from_document(
            "/targets",
            &doc("[\"api\"]", r#", "unlistedConsumers": "warn""#),
            "orders",
            &base,
        )
        .unwrap();
        assert_eq!(t.unlisted_consumers, UnlistedConsumers::Warn);
        for (services, extra, says) in [
            ("\"all\"", "", "\"auto\""),
            ("[]", "", "at least one"),
            (
                "[\"api\"]",
                r#", "unlistedConsumers": "ignore""#,
                "`error` or `warn`",
            ),
        ] {
            let err =
                TargetConfig::from_document("/targets", &doc(services, extra), "orders", &base)
                    .unwrap_err();
            assert_eq!(err.name(), "ConfigurationError");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn a_target_of_the_document_inherits_only_the_waits() {
        let base = TargetConfig::from_env(&base()).unwrap();
        let doc = r#"{"orders": {"activeUserParameter": "/orders/active", "blueSecretId": "ob",
            "greenSecretId": "og", "cluster": "orders", "services": ["api", " "]}}"#;
        let t = TargetConfig::from_document("/targets", doc, "orders", &base).unwrap();
        assert_eq!(t.name.as_deref(), Some("orders"));
        assert_eq!(t.services, Services::Listed(vec!["api".into()]));
        assert_eq!(
            (t.blue_user.as_str(), t.green_user.as_str()),
            ("blue", "green")
        );
        assert_eq!(t.stable_timeout_seconds, base.stable_timeout_seconds);
        assert_eq!(t.password_store, StoreKind::SecretsManager);
        let err = TargetConfig::from_document("/targets", doc, "billing", &base).unwrap_err();
        assert_eq!(err.name(), "InvalidInput");
        let same = doc.replace(
            "\"og\"",
            "\"og\", \"blueUser\": \"x\", \"greenUser\": \"x\"",
        );
        let err = TargetConfig::from_document("/targets", &same, "orders", &base).unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn ssl_defaults_to_verify_full_and_needs_a_ca() {
        let env: HashMap<&str, &str> = HashMap::new();
        assert!(DbConfig::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("DB_SSL_ROOT_CERT"));
        let env = HashMap::from([("DB_SSLMODE", "disable")]);
        assert_eq!(DbConfig::from_env(&env).unwrap().ssl_mode, SslMode::Disable);
        let env = HashMap::from([("DB_SSLMODE", "prefer")]);
        assert!(
            DbConfig::from_env(&env).is_err(),
            "no silent fallback modes"
        );
    }

    #[test]
    fn password_policy_from_env_enforces_bounds() {
        let env = HashMap::from([("PASSWORD_LENGTH", "8")]);
        assert!(password_policy_from_env(&env).is_err());
        let env = HashMap::from([("PASSWORD_LENGTH", "40")]);
        assert_eq!(password_policy_from_env(&env).unwrap().length(), 40);
    }
}

#[cfg(test)]
mod env_vars {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;

    /// Answers with a valid value for every variable it knows, and remembers
    /// every variable it is asked for (known or not).
    struct Recording {
        asked: RefCell<BTreeSet<String>>,
    }

    impl Env for Recording {
        fn var(&self, key: &str) -> Option<String> {
            self.asked.borrow_mut().insert(key.to_string());
            let value = match key {
                "ECS_SERVICES" => "web,worker",
                "BLUE_USER" => "blue",
                "GREEN_USER" => "green",
                "DB_SSLMODE" => "verify-full",
                k if k.ends_with("_SECONDS") => "10",
                "PASSWORD_LENGTH" => "40",
                "PASSWORD_EXCLUDE_CHARACTERS" => "\\",
                "PASSWORD_STORE" => "ssm",
                "DB_PORT" => "5432",
                "DB_READER_ENDPOINTS" => "reader.internal:5432",
                "ALLOW_DIFFERENT_ENDPOINTS" => "false",
                "VALID_UNTIL_MARGIN_DAYS" => "45",
                "DB_PASSWORD_ENCRYPTION" => "md5",
                "UNLISTED_CONSUMERS" => "warn",
                "POINTER_LAYOUT" => "parameter",
                "SWEEP_MAX_CONCURRENCY" | "SWEEP_PER_CLUSTER" => "4",
                _ => "x",
            };
            Some(value.to_string())
        }
    }

    #[test]
    fn the_table_lists_what_each_parser_reads() {
        for (parser, listed) in ENV_VARS {
            let env = Recording {
                asked: RefCell::default(),
            };
            let parsed = match *parser {
                "TargetConfig::from_env" => TargetConfig::from_env(&env).map(drop),
                "Targets::from_env" => {
                    Targets::from_env(&env);
                    Ok(())
                }
                "UserKeys::from_env" => UserKeys::from_env(&env).map(drop),
                "ReportConfig::from_env" => ReportConfig::from_env(&env).map(drop),
                "SweepConfig::from_env" => SweepConfig::from_env(&env).map(drop),
                "DbConfig::from_env" => DbConfig::from_env(&env).map(drop),
                "password_policy_from_env" => password_policy_from_env(&env).map(drop),
                "password_setter_from_env" => {
                    password_setter_from_env(&env);
                    Ok(())
                }
                "password_encryption_from_env" => password_encryption_from_env(&env).map(drop),
                other => panic!("ENV_VARS names {other}: call it here too"),
            };
            parsed.unwrap_or_else(|e| panic!("{parser}: {e}"));
            let listed: BTreeSet<String> = listed.iter().map(|v| v.to_string()).collect();
            assert_eq!(*env.asked.borrow(), listed, "ENV_VARS entry of {parser}");
        }
    }
}
