//! Domain types: the secret value, the rotation plan and the payloads passed
//! between states. Payloads hold names, ARNs and version ids, never a secret.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::errors::RotationError;
use crate::password::Password;

/// Secrets Manager staging labels the rotation uses.
pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// Where a target's pointer lives (`POINTER_LAYOUT`): the one thing that
/// says which user is active, and how it flips and flips back. Each layout
/// is one adapter of the [`crate::ports::Pointer`] port (`crate::layouts`);
/// the steps and states are the same for both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "camelCase")]
pub enum PointerLayout {
    /// An SSM parameter names the active user; each user has its own secret
    /// (or SSM SecureString). The flip writes the parameter.
    #[default]
    Parameter,
    /// One Secrets Manager secret whose `AWSCURRENT` version names the
    /// active user (`username`, `password`, connection fields, optional
    /// `masterarn`): AWS's alternating-users convention, which ECS can inject
    /// as it is. The flip promotes the new version to `AWSCURRENT`; the
    /// rollback moves `AWSCURRENT` back to the version naming the previous
    /// user. An active-user parameter, when configured, is kept equal to it
    /// for observers.
    #[serde(rename_all = "camelCase")]
    AlternatingSecret {
        secret_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_user_parameter: Option<String>,
    },
}

impl PointerLayout {
    /// The alternating secret, for that layout.
    pub fn alternating_secret(&self) -> Option<&str> {
        match self {
            Self::Parameter => None,
            Self::AlternatingSecret { secret_id, .. } => Some(secret_id),
        }
    }
}

/// A user's secret in the shape RDS uses:
/// `{"engine":"postgres","host":…,"port":5432,"dbname":…,"username":…,"password":…}`.
/// Fields the product does not know are kept as they are when a new version
/// is written.
#[derive(Clone)]
pub struct DbSecret {
    fields: Map<String, Value>,
    password: Password,
    /// Stored as the bare password (an SSM SecureString as setup (a) keeps
    /// it), not as JSON: written back the same way, the connection fields
    /// come from the target's configuration.
    bare: bool,
}

impl std::fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecret")
            .field("username", &self.username())
            .field("host", &self.host())
            .field("port", &self.port())
            .field("password", &self.password)
            .finish()
    }
}

impl DbSecret {
    /// Parses a secret string. Errors name the secret and the field, never the value.
    pub fn parse(secret_id: &str, secret_string: &str) -> Result<Self, RotationError> {
        let malformed = |reason: &str| RotationError::SecretMalformed {
            secret: secret_id.to_string(),
            reason: reason.to_string(),
        };
        // serde_json's error message can quote the input: do not pass it on.
        let value: Value =
            serde_json::from_str(secret_string).map_err(|_| malformed("not valid JSON"))?;
        let Value::Object(mut fields) = value else {
            return Err(malformed("not a JSON object"));
        };
        let password = match fields.remove("password") {
            Some(Value::String(p)) if !p.is_empty() => Password::new(p),
            Some(_) => return Err(malformed("field \"password\" is not a non-empty string")),
            None => return Err(malformed("field \"password\" is missing")),
        };
        for key in ["username", "host", "dbname"] {
            match fields.get(key) {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(_) => {
                    return Err(malformed(&format!(
                        "field \"{key}\" is not a non-empty string"
                    )))
                }
                None => return Err(malformed(&format!("field \"{key}\" is missing"))),
            }
        }
        match fields.get("port") {
            None => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p > 0 && p < 65536) => {}
            Some(Value::String(s)) if s.parse::<u16>().is_ok_and(|p| p > 0) => {}
            Some(_) => return Err(malformed("field \"port\" is not a port number")),
        }
        Ok(Self {
            fields,
            password,
            bare: false,
        })
    }

    /// Parses a value that is either the RDS JSON shape or a bare password
    /// (anything that does not start with `{`). A bare value knows no user or
    /// endpoint until [`DbSecret::complete`] fills them in.
    pub fn parse_or_bare(secret_id: &str, value: &str) -> Result<Self, RotationError> {
        if value.trim_start().starts_with('{') {
            return Self::parse(secret_id, value);
        }
        if value.is_empty() {
            return Err(RotationError::SecretMalformed {
                secret: secret_id.to_string(),
                reason: "the value is empty".into(),
            });
        }
        Ok(Self {
            fields: Map::new(),
            password: Password::new(value.to_string()),
            bare: true,
        })
    }

    /// Whether the value is a bare password.
    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// A bare password completed with the user it belongs to and the
    /// target's connection settings; a JSON value is returned as it is.
    pub fn complete(
        mut self,
        secret_id: &str,
        user: Option<&str>,
        connection: &Connection,
    ) -> Result<Self, RotationError> {
        if !self.bare {
            return Ok(self);
        }
        let missing = |what: &str| {
            RotationError::SecretMalformed {
            secret: secret_id.to_string(),
            reason: format!(
                "it holds a bare password, so {what} must be configured for the target (or store the RDS JSON shape)"
            ),
        }
        };
        let user = user.ok_or_else(|| missing("the user it belongs to"))?;
        let host = connection
            .host
            .as_deref()
            .ok_or_else(|| missing("DB_HOST"))?;
        let dbname = connection
            .dbname
            .as_deref()
            .ok_or_else(|| missing("DB_NAME"))?;
        self.fields
            .insert("username".into(), Value::String(user.into()));
        self.fields
            .insert("host".into(), Value::String(host.into()));
        self.fields
            .insert("dbname".into(), Value::String(dbname.into()));
        self.fields
            .insert("port".into(), Value::from(connection.port.unwrap_or(5432)));
        Ok(self)
    }

    fn string(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn username(&self) -> &str {
        self.string("username")
    }

    pub fn host(&self) -> &str {
        self.string("host")
    }

    pub fn dbname(&self) -> &str {
        self.string("dbname")
    }

    pub fn port(&self) -> u16 {
        match self.fields.get("port") {
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(5432)
    }

    pub fn password(&self) -> &Password {
        &self.password
    }

    /// A string field other than the password (`None`: absent or not a string).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// The same secret naming another database user (the alternating
    /// layout's next version: the active version's connection fields, the
    /// inactive user's name).
    pub fn for_user(&self, username: &str) -> Self {
        let mut fields = self.fields.clone();
        fields.insert("username".into(), Value::String(username.into()));
        Self {
            fields,
            password: self.password.clone(),
            bare: self.bare,
        }
    }

    /// The same secret with another password.
    pub fn with_password(&self, password: Password) -> Self {
        Self {
            fields: self.fields.clone(),
            password,
            bare: self.bare,
        }
    }

    /// The JSON to store in Secrets Manager. The result holds the plaintext:
    /// it goes straight into the `PutSecretValue` request.
    pub fn to_secret_string(&self) -> Password {
        if self.bare {
            return self.password.clone();
        }
        let mut fields = self.fields.clone();
        fields.insert(
            "password".to_string(),
            Value::String(self.password.expose().to_string()),
        );
        Password::new(Value::Object(fields).to_string())
    }

    /// The fields (by name, never by value) in which this secret and `other`
    /// differ, the password aside; `"form"` when one is stored bare and the
    /// other as JSON. Empty: the same user at the same place.
    pub fn differences_besides_password(&self, other: &DbSecret) -> Vec<String> {
        let mut keys: Vec<&String> = self.fields.keys().chain(other.fields.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut out: Vec<String> = keys
            .into_iter()
            .filter(|k| self.fields.get(*k) != other.fields.get(*k))
            .map(|k| k.to_string())
            .collect();
        if self.bare != other.bare {
            out.push("form".into());
        }
        out
    }

    /// Where to connect, for logins as this secret's user.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host().to_string(),
            port: self.port(),
            dbname: self.dbname().to_string(),
        }
    }
}

/// The non-blank names, trimmed, each once, in their first order: a service
/// named twice is redeployed (and watched) once.
pub fn dedup<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|seen| seen == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Whether a secret id (name or ARN) names the same secret as an ARN: a
/// secret ARN ends in `:secret:<name>-<6 random characters>`.
pub fn same_secret(a: &str, b: &str) -> bool {
    fn name_of(id: &str) -> &str {
        match id.split_once(":secret:") {
            Some((_, rest)) => match rest.rsplit_once('-') {
                Some((name, suffix)) if suffix.len() == 6 => name,
                _ => rest,
            },
            None => id,
        }
    }
    a == b || name_of(a) == name_of(b)
}

/// Whether `value` (a task definition's `secrets[].valueFrom`, or an
/// `environment[].value`) names the resource `id` (a secret's or a
/// parameter's name or ARN), the way ECS resolves it:
///
/// - a Secrets Manager ARN names `<name>-<6 characters>`, or a partial ARN
///   `<name>`; what follows the name (`:<json-key>:<stage>:<version-id>`) is
///   dropped;
/// - a Parameter Store ARN `…:parameter/<name>` names `<name>` (with or
///   without its leading `/`);
/// - anything else is compared whole (trimmed), also without a leading `/`.
///
/// Never true for an empty value.
pub fn names_resource(value: &str, id: &str) -> bool {
    fn candidates(raw: &str) -> Vec<&str> {
        let raw = raw.trim();
        if let Some((_, rest)) = raw.split_once(":secret:") {
            let name = rest.split(':').next().unwrap_or_default();
            let mut out = vec![name];
            if let Some((base, suffix)) = name.rsplit_once('-') {
                if suffix.len() == 6 && suffix.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    out.push(base);
                }
            }
            return out;
        }
        let name = match raw.split_once(":parameter") {
            Some((prefix, rest)) if prefix.starts_with("arn:") => rest,
            _ => raw,
        };
        vec![name.trim_start_matches('/')]
    }
    // Two ARNs must also agree on partition, service, region and account.
    fn scope(raw: &str) -> Option<Vec<&str>> {
        let raw = raw.trim();
        raw.starts_with("arn:")
            .then(|| raw.split(':').skip(1).take(4).collect())
    }
    if let (Some(x), Some(y)) = (scope(value), scope(id)) {
        if x != y {
            return false;
        }
    }
    let (a, b) = (candidates(value), candidates(id));
    a.iter().any(|x| !x.is_empty() && b.contains(x))
}

/// Which ECS services an execution redeploys: a list, or `auto` (every
/// service of the cluster whose task definitions read the target's pointer
/// or either user's secret; see `steps::consumers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Services {
    Listed(Vec<String>),
    Auto,
}

impl Services {
    /// `auto` (any case), or the non-blank names, each once (empty: none).
    pub fn parse_list(items: &[&str]) -> Self {
        match items {
            [one] if one.trim().eq_ignore_ascii_case("auto") => Self::Auto,
            _ => Self::Listed(dedup(items.iter().copied())),
        }
    }

    /// The listed names (empty for `auto`).
    pub fn listed(&self) -> &[String] {
        match self {
            Self::Listed(names) => names,
            Self::Auto => &[],
        }
    }
}

/// What to do about a service that reads the target but is not in the
/// listed services (`UNLISTED_CONSUMERS`): refuse the rotation
/// (`UnlistedConsumer`, the default) or only log a warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedConsumers {
    #[default]
    Error,
    Warn,
}

impl UnlistedConsumers {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "error" => Some(Self::Error),
            "warn" => Some(Self::Warn),
            _ => None,
        }
    }
}

/// The two values the active-user parameter may hold (`blue` and `green` by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKeys {
    pub blue: String,
    pub green: String,
}

impl UserKeys {
    pub fn contains(&self, user: &str) -> bool {
        user == self.blue || user == self.green
    }

    /// The other of the two (`None`: `user` is neither).
    pub fn other(&self, user: &str) -> Option<&str> {
        if user == self.blue {
            Some(&self.green)
        } else if user == self.green {
            Some(&self.blue)
        } else {
            None
        }
    }
}

/// Who changes the inactive user's password in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSetter {
    /// The user itself, logged in with its current password (the default:
    /// no standing administrator credentials are needed).
    SelfService,
    /// An administrator whose credentials are in this secret (RDS JSON
    /// shape), for databases where users may not change their own password.
    Admin { secret_id: String },
}

/// Where the users' passwords are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One Secrets Manager secret per user, staging labels `AWSPENDING` and
    /// `AWSCURRENT` (the default).
    #[default]
    SecretsManager,
    /// One SSM SecureString parameter per user; the labels are parameter
    /// version labels (`pgflip-pending`, `pgflip-current`).
    Ssm,
}

impl StoreKind {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "secretsmanager" => Some(Self::SecretsManager),
            "ssm" => Some(Self::Ssm),
            _ => None,
        }
    }
}

/// Connection settings of a target, for passwords stored bare (without the
/// RDS JSON around them). Names, never secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
}

/// A database endpoint, taken from a user's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

impl Endpoint {
    /// Whether both name the same server and database (host names compare
    /// without regard to case, as DNS does).
    pub fn same_as(&self, other: &Endpoint) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
            && self.dbname == other.dbname
    }

    /// This endpoint's database on another host (a reader).
    pub fn on(&self, reader: &ReaderEndpoint) -> Endpoint {
        Endpoint {
            host: reader.host.clone(),
            port: reader.port,
            dbname: self.dbname.clone(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// A read replica (or reader endpoint) clients also log in to: same
/// database, users and passwords as the primary, replicated with lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderEndpoint {
    pub host: String,
    pub port: u16,
}

impl ReaderEndpoint {
    /// `host:port` (port 5432 when left out; `[v6]:port` for IPv6).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (host, port) = match raw.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
                (h, p.parse::<u16>().ok().filter(|p| *p > 0)?)
            }
            _ => (raw, 5432),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| Self {
            host: host.to_string(),
            port,
        })
    }
}

/// One version of a secret, as read at a staging label or version id.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    pub version_id: String,
    pub secret: DbSecret,
    /// When the version was created (milliseconds since the epoch).
    pub created_ms: Option<i64>,
}

/// What an execution does, decided by `select-user` from the state it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Rotate the inactive user (the normal case).
    Rotate,
    /// The inactive user's AWSCURRENT version is newer than the last flip:
    /// an earlier execution rotated and verified it but did not flip (or
    /// another rotator changed it). Verify it logs in, then flip; do not
    /// generate another password.
    Flip,
    /// The parameter changed after some service's current deployment began:
    /// an earlier execution flipped but did not redeploy. Finish that:
    /// redeploy, wait, do not rotate.
    Redeploy,
    /// Deployments started after the last flip are still rolling out:
    /// finish that rotation by waiting for them, do not rotate.
    Wait,
}

/// The rotation decided by `select-user`: it is the state every later step reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The execution this rotation belongs to (for logs and idempotency tokens).
    pub execution_name: String,
    /// The configured target this rotation acts on (absent: the one the
    /// Lambdas' environment describes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ClientRequestToken` for the new secret version: derived from the
    /// execution, so a retried or redriven step never creates a second version.
    pub client_request_token: String,
    /// The pointer's name, for messages and the flip: the active-user
    /// parameter, or (layout alternating secret) the secret.
    pub parameter_name: String,
    /// Where the pointer lives and how it flips (absent in plans made
    /// before layouts existed: the parameter layout).
    #[serde(default)]
    pub pointer: PointerLayout,
    /// The two values the parameter may hold.
    pub users: UserKeys,
    /// Where the two users' passwords are kept.
    #[serde(default)]
    pub password_store: StoreKind,
    /// For passwords stored bare: where to connect.
    #[serde(default)]
    pub connection: Connection,
    /// The user that is active now and stays untouched.
    pub previous_user: String,
    /// The inactive user whose password this rotation changes.
    pub target_user: String,
    pub target_secret_id: String,
    pub previous_secret_id: String,
    pub cluster: String,
    pub services: Vec<String>,
    pub dry_run: bool,
    pub mode: Mode,
    pub stable_poll_seconds: u64,
    pub stable_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With [`Mode::Wait`]: the deployments to wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Set when the execution must end in failure after its rollout although
    /// every step worked: the error name to raise (for example
    /// `ActiveUserRotatedExternally`), raised by `wait-for-stable` once the
    /// rollout completed. Always serialized (null when unset): the state
    /// machine passes `$.alert` on to `redeploy-ecs`.
    #[serde(default)]
    pub alert: Option<String>,
    /// With [`Mode::Flip`]: the version `verify-login` checks before the flip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingPassword>,
    /// Readers the new password must log in on before the flip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<ReaderEndpoint>,
    /// A dry run only: what still uses the inactive user (live sessions,
    /// consumers), which would make a real rotation wait
    /// (`InactiveUserInUse`). A dry run reports it at once instead of waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<String>,
}

/// Output of `generate-and-set-password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPassword {
    pub version_id: String,
    /// True when an existing `AWSPENDING` version was resumed instead of a new one made.
    pub resumed: bool,
}

/// Output of `verify-login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub version_id: String,
    /// True when the version already was `AWSCURRENT` (a replayed step).
    pub already_current: bool,
}

/// Input of `flip-parameter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlipRequest {
    pub parameter_name: String,
    /// The two values the parameter may hold.
    pub users: UserKeys,
    /// The user the parameter must name afterwards.
    pub to: String,
    /// Where the pointer lives (absent: the parameter layout, as in
    /// executions started before layouts existed).
    #[serde(default)]
    pub pointer: PointerLayout,
    /// The version `verify-login` verified, for the forward flip (layout
    /// alternating secret: only that `AWSPENDING` version may be promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// Output of `flip-parameter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flipped {
    pub active_user: String,
    /// What the parameter held before this call.
    pub was: String,
    pub changed: bool,
}

/// Input of `redeploy-ecs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeployRequest {
    pub cluster: String,
    pub services: Vec<String>,
    pub stable_poll_seconds: u64,
    pub stable_timeout_seconds: u64,
    /// Carried into the rollout: raised once it completes (see [`Plan::alert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

/// One service's deployment started by `redeploy-ecs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeployment {
    pub service: String,
    pub deployment_id: String,
    /// When ECS created that deployment (milliseconds since the epoch): an
    /// older PRIMARY is ECS having rolled back, a newer one replaced ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
}

/// Rollout status of the services being watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutStatus {
    InProgress,
    Completed,
    Failed,
}

/// Output of `redeploy-ecs` and input and output of `wait-for-stable`: the
/// rollout being watched, how long to wait between looks, and the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub cluster: String,
    pub deployments: Vec<ServiceDeployment>,
    pub status: RolloutStatus,
    pub poll_seconds: u64,
    /// Milliseconds since the epoch after which an unfinished rollout is
    /// `RolloutTimedOut`.
    pub deadline_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The rollout was found in progress, not started by this execution (a
    /// release of the team's pipeline, or an earlier execution's): its
    /// failure or timeout is no reason to move the pointer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
    /// How many times `wait-for-stable` has looked (bounded by
    /// [`MAX_LOOKS`], whatever the clock says).
    #[serde(default)]
    pub looks: u32,
}

impl Rollout {
    /// `cluster <name>: web=COMPLETED, worker=IN_PROGRESS(BAKE_TIME)`: what
    /// the last look saw of each service (`?` before the first look).
    pub fn summary(&self) -> String {
        let services = self
            .deployments
            .iter()
            .map(|d| {
                format!(
                    "{}={}",
                    d.service,
                    d.rollout_state.as_deref().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("cluster {}: {services}", self.cluster)
    }
}

/// The most looks at one rollout. Each costs 9 history events (a `Wait`
/// entered and exited, a Task entered, scheduled, started, succeeded and
/// exited, a `Choice` entered and exited) and 3 state transitions; a rollout
/// and its rollback's rollout at 1,000 looks each stay near 18,000 of Step
/// Functions' 25,000 events per execution, leaving room for retries.
/// Configurations whose deadline allows more looks than this are refused at
/// cold start.
pub const MAX_LOOKS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_from_names_a_secret_or_parameter_the_way_ecs_resolves_it() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgflip/blue-AbC123";
        for (value, id, names) in [
            // A secret's JSON key, stage and version id follow its name.
            (format!("{arn}:password::"), "pgflip/blue", true),
            (format!("{arn}:username:AWSCURRENT:"), arn, true),
            (arn.to_string(), "pgflip/blue", true),
            // A partial ARN (no random suffix) and a full one.
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgflip/blue:password::"
                    .into(),
                arn,
                true,
            ),
            ("pgflip/blue".into(), arn, true),
            ("pgflip/blue".into(), "pgflip/blue", true),
            // Not the same secret: a longer name, the other user, a prefix.
            (
                format!("{arn}:password::").replace("blue", "blue2"),
                "pgflip/blue",
                false,
            ),
            (format!("{arn}:password::"), "pgflip/green", false),
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgflip/blue-green-AbC123"
                    .into(),
                "pgflip/blue",
                false,
            ),
            ("pgflip".into(), "pgflip/blue", false),
            // Parameters by ARN (no leading slash in it) or by name.
            (
                "arn:aws:ssm:eu-west-1:123456789012:parameter/pgflip/active-user".into(),
                "/pgflip/active-user",
                true,
            ),
            ("/pgflip/active-user".into(), "/pgflip/active-user", true),
            (
                "arn:aws:ssm:eu-west-1:123456789012:parameter/pgflip/active-user-2".into(),
                "/pgflip/active-user",
                false,
            ),
            (
                " /pgflip/active-user ".into(),
                "arn:aws:ssm:eu-west-1:123456789012:parameter/pgflip/active-user",
                true,
            ),
            // Another account's or region's secret of the same name.
            (arn.replace("123456789012", "999999999999"), arn, false),
            (arn.replace("eu-west-1", "us-west-2"), arn, false),
            (arn.replace("eu-west-1", "us-west-2"), "pgflip/blue", true),
            // An empty or unrelated value names nothing.
            ("".into(), "", false),
            ("postgres://app@db/app".into(), "pgflip/blue", false),
        ] {
            assert_eq!(names_resource(&value, id), names, "{value} names {id}?");
        }
    }

    #[test]
    fn services_are_a_list_or_auto() {
        assert_eq!(Services::parse_list(&["AUTO"]), Services::Auto);
        assert_eq!(
            Services::parse_list(&["web", " worker", "web", ""]),
            Services::Listed(vec!["web".into(), "worker".into()])
        );
        // "auto" among names is a service called auto.
        assert_eq!(Services::parse_list(&["web", "auto"]).listed().len(), 2);
    }

    const GOOD: &str = r#"{"engine":"postgres","host":"db.example","port":5433,"dbname":"app","username":"green","password":"s3cr3t-value","proxy":"keep-me"}"#;

    #[test]
    fn parses_the_rds_shape_and_keeps_unknown_fields() {
        let s = DbSecret::parse("arn:green", GOOD).unwrap();
        assert_eq!(s.username(), "green");
        assert_eq!(s.port(), 5433);
        assert_eq!(s.endpoint().dbname, "app");
        let written = s
            .with_password(Password::new("n3w".into()))
            .to_secret_string();
        let v: Value = serde_json::from_str(written.expose()).unwrap();
        assert_eq!(v["password"], "n3w");
        assert_eq!(v["proxy"], "keep-me");
        assert_eq!(v["port"], 5433);
        let string_port =
            r#"{"host":"h","port":"6543","dbname":"d","username":"u","password":"p"}"#;
        assert_eq!(DbSecret::parse("x", string_port).unwrap().port(), 6543);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = DbSecret::parse("arn:green", GOOD).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn malformed_secrets_name_the_field_not_the_value() {
        for (raw, expect) in [
            ("not json s3cr3t", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (
                r#"{"host":"h","dbname":"d","username":"u"}"#,
                "\"password\" is missing",
            ),
            (
                r#"{"host":"h","dbname":"d","password":"s3cr3t"}"#,
                "\"username\" is missing",
            ),
            (
                r#"{"host":"h","dbname":"d","username":"u","password":"s3cr3t","port":"x"}"#,
                "\"port\"",
            ),
        ] {
            let err = DbSecret::parse("arn:x", raw).unwrap_err();
            assert_eq!(err.name(), "SecretMalformed");
            let msg = err.to_string();
            assert!(msg.contains(expect), "{msg}");
            assert!(!msg.contains("s3cr3t"), "{msg}");
        }
    }

    #[test]
    fn plan_serializes_in_camel_case() {
        let v = serde_json::to_value(RolloutStatus::InProgress).unwrap();
        assert_eq!(v, "IN_PROGRESS");
    }
}
