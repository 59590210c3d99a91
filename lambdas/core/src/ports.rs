//! Ports: the narrow capabilities the steps need. Adapters in
//! [`crate::adapters`] implement them on the AWS SDK and tokio-postgres;
//! [`crate::fakes`] implements them in memory for unit tests.

use async_trait::async_trait;

use crate::domain::{Endpoint, Flipped, SecretVersion};
use crate::errors::RotationError;
use crate::password::Password;

/// A parameter's value and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterValue {
    pub value: String,
    /// Milliseconds since the Unix epoch, as the service reports it.
    pub last_modified_ms: Option<i64>,
}

/// The active-user pointer (SSM Parameter Store).
#[async_trait]
pub trait ParameterStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<ParameterValue, RotationError>;
    async fn put(&self, name: &str, value: &str) -> Result<(), RotationError>;

    /// Every parameter directly under `path` (which ends in `/`), by full
    /// name, with its value: `ssm:GetParametersByPath` (not recursive,
    /// paginated, 10 per page). An empty path lists nothing.
    async fn list(&self, path: &str) -> Result<Vec<(String, String)>, RotationError>;
}

/// Where each user's password lives, with staging labels: Secrets Manager
/// (`AWSPENDING`/`AWSCURRENT` as they are) or SSM SecureString parameters
/// (the same two stages as parameter version labels). Stages are named by
/// the Secrets Manager constants in [`crate::domain`]; each adapter maps them.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The version carrying `stage`, or `None` when no version carries it.
    /// A missing secret is `SecretNotFound`.
    async fn get_stage(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<Option<SecretVersion>, RotationError>;

    /// Stores a new version labelled `AWSPENDING` only. Idempotent for the
    /// same `token` and value. Returns the version id (equal to the token).
    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        secret_string: &Password,
    ) -> Result<String, RotationError>;

    /// Moves `AWSCURRENT` to `version_id` (the old current version keeps
    /// `AWSPREVIOUS`) and removes `AWSPENDING` from it. Idempotent.
    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), RotationError>;

    /// Removes `AWSPENDING` from `version_id` (the version itself stays, as
    /// an unlabelled one). Idempotent: a version without the label is left
    /// as it is.
    async fn discard_pending(&self, secret_id: &str, version_id: &str)
        -> Result<(), RotationError>;

    /// The version carrying `AWSCURRENT` (`None` when none does): its id
    /// and when it was created, read without any value:
    /// `secretsmanager:ListSecretVersionIds`, or the parameter's history
    /// without decryption. A missing secret is `SecretNotFound`.
    async fn current_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError>;

    /// The same for the version carrying `AWSPREVIOUS` (the alternating
    /// secret: the inactive role's password). Stores without that label
    /// answer `None`.
    async fn previous_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError>;

    /// When pgflip last moved the secret's `AWSCURRENT`, and to which
    /// version (the alternating layout's flip): the tag [`FLIPPED_AT_TAG`]
    /// (`secretsmanager:DescribeSecret`). `None`: never recorded (or not in
    /// the `<ms>:<version id>` form). Stores that cannot hold a pointer say
    /// `ConfigurationError`.
    async fn flipped_at(&self, secret_id: &str) -> Result<Option<FlipRecord>, RotationError>;

    /// Records that `AWSCURRENT` moved to `version_id` at `at_ms`
    /// (`secretsmanager:TagResource`, [`FLIPPED_AT_TAG`]). Written after
    /// the move: a record naming another version than `AWSCURRENT` means
    /// the label moved since (or the record was not written yet).
    async fn record_flip(
        &self,
        secret_id: &str,
        at_ms: i64,
        version_id: &str,
    ) -> Result<(), RotationError>;

    /// Moves the custom staging label `stage` to `version_id`, off the
    /// version that had it (`secretsmanager:UpdateSecretVersionStage`).
    /// Idempotent. A labelled version is never deprecated (deleted) by
    /// Secrets Manager.
    async fn label(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: &str,
    ) -> Result<(), RotationError>;
}

/// The tag on an alternating secret that says when pgflip last moved its
/// `AWSCURRENT`, and where: `<milliseconds since the epoch>:<version id>`.
pub const FLIPPED_AT_TAG: &str = "pgflip:flipped-at";

/// What [`FLIPPED_AT_TAG`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlipRecord {
    pub at_ms: i64,
    pub version_id: String,
}

impl FlipRecord {
    /// `<ms>:<version id>` (anything else: `None`).
    pub fn parse(raw: &str) -> Option<Self> {
        let (at, version) = raw.trim().split_once(':')?;
        Some(Self {
            at_ms: at.parse().ok()?,
            version_id: version.to_string(),
        })
        .filter(|r| !r.version_id.is_empty())
    }

    pub fn render(&self) -> String {
        format!("{}:{}", self.at_ms, self.version_id)
    }
}

/// What a password store that cannot hold a pointer answers to
/// [`SecretStore::flipped_at`] and [`SecretStore::record_flip`].
pub fn unsupported_pointer(secret_id: &str) -> RotationError {
    RotationError::Configuration(format!(
        "{secret_id}: the alternating-secret layout needs a Secrets Manager secret (PASSWORD_STORE=secretsmanager)"
    ))
}

/// What a pointer says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerState {
    /// The user it names (one of the two configured users).
    pub active: String,
    /// When it last moved, milliseconds since the epoch (`None`: unknown).
    /// No earlier than the true move: pgflip's record of its flip (or of
    /// when it first saw the value), or for a move it has no record of the
    /// time of the read (see `unrecorded`).
    pub moved_ms: Option<i64>,
    /// The pointer's value pgflip has no record of moving to, so `moved_ms`
    /// is the read time: an alternating secret's `AWSCURRENT` version
    /// promoted by another rotator (Secrets Manager's own rotation, an
    /// operator). [`Pointer::record_seen`] records it; `None` otherwise.
    pub unrecorded: Option<String>,
}

/// A target's pointer: where it lives, where each user's password is, how
/// it flips and flips back. One adapter per layout (`crate::layouts`), both
/// built on [`ParameterStore`] and [`SecretStore`]; every step reads and
/// writes users' passwords and the pointer through it.
#[async_trait]
pub trait Pointer: Send + Sync {
    /// The pointer's name, for messages (the parameter, or the secret).
    fn name(&self) -> &str;

    /// The secret where `user`'s next password is staged (`None`: not one
    /// of the two users).
    fn secret_of(&self, user: &str) -> Option<&str>;

    /// The user the pointer names and when it moved. A value naming
    /// neither user is `InvalidActiveUser`; a missing pointer is
    /// `ParameterNotFound` or `SecretNotFound`.
    async fn read(&self) -> Result<PointerState, RotationError>;

    /// The version `user` logs in with now, completed with its connection
    /// fields. `None`: no labelled version holds its password (alternating
    /// layout, before its first rotation: only an administrator can set it).
    /// Parameter layout: `AWSCURRENT` of the user's secret (missing is
    /// `SecretNotFound`). Alternating: `AWSCURRENT` when it names `user`,
    /// else `AWSPREVIOUS` when that does, with `AWSCURRENT`'s connection
    /// fields (the server a new password is set on).
    async fn current(&self, user: &str) -> Result<Option<SecretVersion>, RotationError>;

    /// The connection fields a new version for `user` is made from: its
    /// current version, or (alternating, none) the active version renamed.
    async fn template(&self, user: &str) -> Result<SecretVersion, RotationError>;

    /// The `AWSPENDING` version of `user`'s secret, if any (alternating: the
    /// one pending version of the secret, whichever user it names).
    async fn pending(&self, user: &str) -> Result<Option<SecretVersion>, RotationError>;

    /// Stages `value` for `user` as `AWSPENDING` (idempotent per `token`).
    async fn stage(
        &self,
        user: &str,
        token: &str,
        value: &crate::password::Password,
    ) -> Result<String, RotationError>;

    /// Removes the `AWSPENDING` label from a stale version of `user`'s
    /// secret. Alternating: nothing, since the next `stage` moves the label
    /// (only the flip moves that secret's labels otherwise).
    async fn discard(&self, user: &str, version_id: &str) -> Result<(), RotationError>;

    /// After the login is verified: parameter layout, promote the version
    /// to `AWSCURRENT` of the user's secret (an RDS Proxy reads that label,
    /// so before the flip); alternating, nothing (promoting is the flip).
    /// Returns whether a label moved.
    async fn settle(&self, user: &str, version_id: &str) -> Result<bool, RotationError>;

    /// Makes the pointer name `to`. `version_id`: the verified version the
    /// forward flip may promote (alternating); without it, the flip goes
    /// back to the version already naming `to` (the rollback). Idempotent.
    async fn flip(&self, to: &str, version_id: Option<&str>) -> Result<Flipped, RotationError>;

    /// Records that the pointer named what `state` says at `state.moved_ms`
    /// when `state.unrecorded` is set (alternating: the flip tag on that
    /// `AWSCURRENT` version, `secretsmanager:TagResource`), so a later read
    /// dates the move no later than this one did instead of "now" again.
    /// Nothing otherwise (an SSM parameter dates its own writes).
    async fn record_seen(&self, state: &PointerState) -> Result<(), RotationError>;

    /// An administrator's secret the pointer names (alternating: the
    /// version's `masterarn`), used when no version holds the inactive
    /// user's password.
    async fn admin_secret(&self) -> Result<Option<String>, RotationError>;
}

/// The `AWSCURRENT` version of a secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentVersion {
    /// The version id (a parameter's version number).
    pub version_id: String,
    /// Milliseconds since the epoch. (moto 5.2.5 answers the time of the
    /// call for a secret's version; AWS the version's creation.)
    pub created_ms: Option<i64>,
}

/// What one login learns about the server it reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerFacts {
    /// `pg_is_in_recovery()`: a hot standby (or a replica being promoted).
    pub in_recovery: bool,
    /// `transaction_read_only` of a new transaction of this session: true on
    /// a standby, or when `default_transaction_read_only` is on for the
    /// server, the database or the role.
    pub read_only: bool,
    /// The WAL position (bytes): on a primary `pg_current_wal_lsn()`, on a
    /// standby `pg_last_wal_replay_lsn()` (how far it has replayed).
    pub wal_lsn: Option<u64>,
}

/// What the preflight learns about one user, from the catalogs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFacts {
    pub exists: bool,
    /// Sorted, comparable lines, none naming the user itself, of everything
    /// a login as the user depends on: attributes, settings, memberships,
    /// privileges on any object, default privileges, policies, ownership.
    pub facts: Vec<String>,
    /// Sessions of the user on this server, other than the one asking.
    pub live_sessions: i64,
    /// `VALID UNTIL`, milliseconds since the epoch (`None`: never expires).
    pub valid_until_ms: Option<i64>,
}

/// The answer of [`Database::user_facts`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preflight {
    /// The server the login reached.
    pub server: ServerFacts,
    /// One per user asked about, in the same order.
    pub users: Vec<UserFacts>,
}

/// The PostgreSQL database the two users live in.
#[async_trait]
pub trait Database: Send + Sync {
    /// Logs in as `user` with `password` and reports what it sees of the
    /// server (one query).
    async fn check_login(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<ServerFacts, RotationError>;

    /// Logs in as `user` with `current` and changes its own password to `new`,
    /// sending only a verifier computed here, of the kind the server's
    /// `password_encryption` asks for (SCRAM-SHA-256 or md5).
    async fn set_own_password(
        &self,
        endpoint: &Endpoint,
        user: &str,
        current: &Password,
        new: &Password,
    ) -> Result<(), RotationError>;

    /// Logs in as an administrator (`admin_user` with `admin_password`) and
    /// sets the password of `role` to `new`, sending only a verifier (as
    /// above). For databases where users may not change their own password.
    async fn set_password_as(
        &self,
        endpoint: &Endpoint,
        admin_user: &str,
        admin_password: &Password,
        role: &str,
        new: &Password,
    ) -> Result<(), RotationError>;

    /// Logs in as `login_user` and reads the facts about each of `users`
    /// (and about the server) from the catalogs.
    async fn user_facts(
        &self,
        endpoint: &Endpoint,
        login_user: &str,
        login_password: &Password,
        users: &[&str],
    ) -> Result<Preflight, RotationError>;
}

/// RDS Proxy: which secrets a proxy authenticates clients with.
#[async_trait]
pub trait Proxies: Send + Sync {
    /// The ARNs of the secrets in the proxy's `Auth` list
    /// (`rds:DescribeDBProxies`). A missing proxy is `ConfigurationError`.
    async fn auth_secrets(&self, proxy: &str) -> Result<Vec<String>, RotationError>;
}

/// The state of one ECS deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED` (absent for services without
    /// deployment circuit breaker data).
    pub rollout_state: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: Option<i64>,
    /// The task definition (ARN) the deployment's tasks run.
    pub task_definition: Option<String>,
}

/// A deployment `UpdateService` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedDeployment {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: Option<i64>,
}

/// The state of a service's current service deployment, as
/// `DescribeServiceDeployments` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeploymentState {
    pub arn: String,
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `STOPPED`, `STOP_REQUESTED`,
    /// `ROLLBACK_REQUESTED`, `ROLLBACK_IN_PROGRESS`, `ROLLBACK_SUCCESSFUL` or
    /// `ROLLBACK_FAILED`.
    pub status: String,
    /// Where a traffic-shifting deployment is: `RECONCILE_SERVICE`,
    /// `PRE_SCALE_UP`, `SCALE_UP`, `POST_SCALE_UP`, `TEST_TRAFFIC_SHIFT`,
    /// `POST_TEST_TRAFFIC_SHIFT`, `PRODUCTION_TRAFFIC_SHIFT`,
    /// `POST_PRODUCTION_TRAFFIC_SHIFT`, `BAKE_TIME` or `CLEAN_UP`.
    pub lifecycle_stage: Option<String>,
    /// The service revision it deploys. Its last path segment is the number
    /// of the matching `DescribeServices` deployment id (`ecs-svc/<number>`).
    pub target_revision_arn: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: Option<i64>,
}

/// One ECS service as `DescribeServices` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub name: String,
    /// `ECS` (rolling or ECS-native blue/green), `CODE_DEPLOY` or `EXTERNAL`.
    pub controller: Option<String>,
    /// `deploymentConfiguration.strategy`: `ROLLING` (also when absent),
    /// `BLUE_GREEN`, `LINEAR` or `CANARY`.
    pub strategy: Option<String>,
    pub deployments: Vec<DeploymentState>,
    /// For a service whose strategy shifts traffic (anything but `ROLLING`):
    /// its current service deployment, when it has one. Always `None` for
    /// rolling services, which are watched through `rolloutState`.
    pub service_deployment: Option<ServiceDeploymentState>,
}

impl ServiceState {
    /// Whether ECS shifts traffic between two revisions (blue/green, linear,
    /// canary) instead of replacing tasks in place.
    pub fn shifts_traffic(&self) -> bool {
        self.strategy.as_deref().is_some_and(|s| s != "ROLLING")
    }
}

/// ECS services and their deployments.
#[async_trait]
pub trait Deployments: Send + Sync {
    /// `UpdateService` with `forceNewDeployment`; returns the new PRIMARY deployment.
    async fn force_new_deployment(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<StartedDeployment, RotationError>;

    /// Each service, in the order asked; for traffic-shifting services also
    /// their current service deployment.
    async fn describe(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, RotationError>;
}

/// A running task that no service started (`group` is not `service:…`): a
/// worker or job run with `RunTask`, which no redeploy replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneTask {
    pub arn: String,
    /// The task definition (ARN) it runs.
    pub task_definition: String,
    /// `createdAt`, milliseconds since the Unix epoch: the agent resolves
    /// the task definition's secrets after this (`None`: ECS did not say).
    pub created_ms: Option<i64>,
}

/// What runs in an ECS cluster, and what its task definitions read: the
/// source of consumer discovery (`steps::consumers`).
#[async_trait]
pub trait Workloads: Send + Sync {
    /// The names of every service of the cluster (`ecs:ListServices`,
    /// paginated, 100 per page). A missing cluster is `ServiceNotFound`.
    async fn services(&self, cluster: &str) -> Result<Vec<String>, RotationError>;

    /// Every task of the cluster with desired status `RUNNING` that no
    /// service started (`ecs:ListTasks`, paginated, then `ecs:DescribeTasks`,
    /// 100 per call).
    async fn standalone_tasks(&self, cluster: &str) -> Result<Vec<StandaloneTask>, RotationError>;

    /// Every value the task definition takes from outside its image: each
    /// container's `secrets[].valueFrom` and `environment[].value`
    /// (`ecs:DescribeTaskDefinition`; `environmentFiles` in S3 are not read).
    async fn references(&self, task_definition: &str) -> Result<Vec<String>, RotationError>;
}

/// One event of an execution's history, as much of it as a report needs.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryEvent {
    /// A state was entered (`…StateEntered`).
    Entered { state: String },
    /// A state was left (`…StateExited`), with its output when the history
    /// carries it.
    Exited {
        state: String,
        output: Option<serde_json::Value>,
    },
    /// A Task, or the Lambda it invoked, failed or timed out (retried,
    /// caught or final).
    Failed { error: String, cause: String },
    /// The execution ended: `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`,
    /// with the error and cause it failed with.
    Ended {
        status: String,
        error: Option<String>,
        cause: Option<String>,
    },
    /// The execution was redriven after it ended (`ExecutionRedriven`).
    Redriven,
}

/// What an execution went through (Step Functions' execution history).
#[async_trait]
pub trait ExecutionHistory: Send + Sync {
    /// Every event of the execution, oldest first
    /// (`states:GetExecutionHistory`, paginated, with the states' outputs).
    async fn history(&self, execution_arn: &str) -> Result<Vec<HistoryEvent>, RotationError>;
}

/// One execution of the rotation state machine, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    pub execution_arn: String,
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`, …
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    /// The input, a JSON string.
    pub input: Option<String>,
    /// The output (the plan and what followed), for one that succeeded.
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// The executions of a state machine, newest first (operators' view).
#[async_trait]
pub trait ExecutionRecords: Send + Sync {
    /// At most `max` executions of `state_machine_arn`, newest first, each
    /// described (`states:ListExecutions`, then `states:DescribeExecution`
    /// per execution).
    async fn recent(
        &self,
        state_machine_arn: &str,
        max: usize,
    ) -> Result<Vec<ExecutionRecord>, RotationError>;
}

/// Where people hear about an execution that needs them.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes one message (`sns:Publish` to the alert topic); `subject`
    /// is at most 100 characters.
    async fn publish(&self, subject: &str, message: &str) -> Result<(), RotationError>;
}

/// Another execution of the same state machine that is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningExecution {
    pub arn: String,
    pub started_ms: i64,
}

/// The executions of the state machine (the concurrency guard).
#[async_trait]
pub trait Executions: Send + Sync {
    /// The RUNNING executions of the state machine that `execution_arn`
    /// belongs to, this one included when it is listed.
    async fn running(&self, execution_arn: &str) -> Result<Vec<RunningExecution>, RotationError>;

    /// The input an execution was started with (`None`: none was given).
    async fn input(&self, execution_arn: &str) -> Result<Option<String>, RotationError>;
}
