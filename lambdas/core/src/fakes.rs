//! In-memory fakes of the ports, for unit tests. They keep state the way the
//! real services do (staging labels move, passwords change, deployments get
//! new ids), so a step that runs things in the wrong order fails its test.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::{DbSecret, Endpoint, SecretVersion, AWSCURRENT, AWSPENDING};
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::*;

/// A shared clock (milliseconds since the epoch, near the real time): each
/// tick is a second later than the last, so what a fake wrote later also
/// carries a later timestamp.
static TICKS: AtomicI64 = AtomicI64::new(0);

pub fn tick() -> i64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    real + TICKS.fetch_add(1000, Ordering::SeqCst)
}

/// The shared clock's present: later than every tick so far, earlier than
/// the next (what `steps::now_ms` reads in the core's unit tests).
pub fn now() -> i64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    real + TICKS.load(Ordering::SeqCst)
}

/// Queued failures for the next calls of a named operation.
#[derive(Default)]
pub struct Faults(Mutex<HashMap<&'static str, Vec<RotationError>>>);

impl Faults {
    pub fn push(&self, op: &'static str, error: RotationError) {
        self.0.lock().unwrap().entry(op).or_default().push(error);
    }

    fn take(&self, op: &'static str) -> Result<(), RotationError> {
        match self.0.lock().unwrap().get_mut(op) {
            Some(queue) if !queue.is_empty() => Err(queue.remove(0)),
            _ => Ok(()),
        }
    }
}

#[derive(Default)]
pub struct FakeParameters {
    pub values: Mutex<HashMap<String, ParameterValue>>,
    pub puts: Mutex<u32>,
    pub faults: Faults,
}

impl FakeParameters {
    pub fn with(name: &str, value: &str) -> Self {
        let p = Self::default();
        p.set(name, value);
        p
    }

    /// Writes a value now (as someone outside the rotation would).
    pub fn set(&self, name: &str, value: &str) {
        self.values.lock().unwrap().insert(
            name.into(),
            ParameterValue {
                value: value.into(),
                last_modified_ms: Some(tick()),
            },
        );
    }

    pub fn value(&self, name: &str) -> Option<String> {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map(|p| p.value.clone())
    }
}

#[async_trait]
impl ParameterStore for FakeParameters {
    async fn get(&self, name: &str) -> Result<ParameterValue, RotationError> {
        self.faults.take("get")?;
        self.values
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| RotationError::ParameterNotFound(name.into()))
    }

    async fn put(&self, name: &str, value: &str) -> Result<(), RotationError> {
        self.faults.take("put")?;
        *self.puts.lock().unwrap() += 1;
        self.set(name, value);
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<(String, String)>, RotationError> {
        self.faults.take("list")?;
        let path = format!("{}/", path.trim_end_matches('/'));
        Ok(self
            .values
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(&path)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            })
            .map(|(name, v)| (name.clone(), v.value.clone()))
            .collect())
    }
}

#[derive(Clone)]
pub struct FakeVersion {
    pub id: String,
    pub value: String,
    pub stages: Vec<String>,
    pub created_ms: i64,
}

#[derive(Default)]
pub struct FakeSecrets {
    pub secrets: Mutex<BTreeMap<String, Vec<FakeVersion>>>,
    /// The flip times recorded per secret (the `pgflip:flipped-at` tag).
    pub flips: Mutex<BTreeMap<String, FlipRecord>>,
    pub faults: Faults,
}

impl FakeSecrets {
    pub fn add(&self, id: &str, version_id: &str, value: &str) {
        self.secrets
            .lock()
            .unwrap()
            .entry(id.into())
            .or_default()
            .push(FakeVersion {
                id: version_id.into(),
                value: value.into(),
                stages: vec![AWSCURRENT.into()],
                created_ms: tick(),
            });
    }

    /// Adds a version carrying `stages` (for example `AWSPREVIOUS`), taking
    /// them off any other version.
    pub fn add_staged(&self, id: &str, version_id: &str, value: &str, stages: &[&str]) {
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets.entry(id.into()).or_default();
        for stage in stages {
            Self::move_stage(versions, stage, None);
        }
        versions.push(FakeVersion {
            id: version_id.into(),
            value: value.into(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            created_ms: tick(),
        });
    }

    /// The id and creation of the version carrying `stage`, no value.
    fn stage_version(
        &self,
        id: &str,
        stage: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        let secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get(id)
            .ok_or_else(|| RotationError::SecretNotFound(id.into()))?;
        Ok(versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .map(|v| CurrentVersion {
                version_id: v.id.clone(),
                created_ms: Some(v.created_ms),
            }))
    }

    /// The `username` of the version carrying `stage`.
    pub fn user_at(&self, id: &str, stage: &str) -> Option<String> {
        let value = self.value_at(id, stage)?;
        let json: serde_json::Value = serde_json::from_str(&value).ok()?;
        json["username"].as_str().map(str::to_string)
    }

    /// The version id carrying `stage`.
    pub fn version_at(&self, id: &str, stage: &str) -> Option<String> {
        self.secrets
            .lock()
            .unwrap()
            .get(id)?
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .map(|v| v.id.clone())
    }

    pub fn password_at(&self, id: &str, stage: &str) -> Option<String> {
        let secrets = self.secrets.lock().unwrap();
        let v = secrets
            .get(id)?
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))?;
        if !v.value.trim_start().starts_with('{') {
            return Some(v.value.clone()); // a bare password, as in SSM
        }
        let json: serde_json::Value = serde_json::from_str(&v.value).ok()?;
        json["password"].as_str().map(str::to_string)
    }

    /// The raw stored value of the version carrying `stage`.
    pub fn value_at(&self, id: &str, stage: &str) -> Option<String> {
        let secrets = self.secrets.lock().unwrap();
        secrets
            .get(id)?
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .map(|v| v.value.clone())
    }

    pub fn version_count(&self, id: &str) -> usize {
        self.secrets.lock().unwrap().get(id).map_or(0, Vec::len)
    }

    fn move_stage(versions: &mut [FakeVersion], stage: &str, to: Option<&str>) {
        for v in versions.iter_mut() {
            v.stages.retain(|s| s != stage);
        }
        if let Some(to) = to {
            if let Some(v) = versions.iter_mut().find(|v| v.id == to) {
                v.stages.push(stage.into());
            }
        }
    }
}

#[async_trait]
impl SecretStore for FakeSecrets {
    async fn get_stage(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<Option<SecretVersion>, RotationError> {
        self.faults.take("get_stage")?;
        let secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get(secret_id)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.into()))?;
        versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .map(|v| {
                Ok(SecretVersion {
                    version_id: v.id.clone(),
                    // Either store: JSON, or a bare password as in SSM.
                    secret: DbSecret::parse_or_bare(secret_id, &v.value)?,
                    created_ms: Some(v.created_ms),
                })
            })
            .transpose()
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        secret_string: &Password,
    ) -> Result<String, RotationError> {
        self.faults.take("put_pending")?;
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get_mut(secret_id)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.into()))?;
        if let Some(existing) = versions.iter().find(|v| v.id == token) {
            // Secrets Manager: same token and value is a no-op, another value is an error.
            return if existing.value == secret_string.expose() {
                Ok(token.into())
            } else {
                Err(RotationError::AwsRequestFailed(format!(
                    "version {token} exists with another value"
                )))
            };
        }
        Self::move_stage(versions, AWSPENDING, None);
        versions.push(FakeVersion {
            id: token.into(),
            value: secret_string.expose().into(),
            stages: vec![AWSPENDING.into()],
            created_ms: tick(),
        });
        Ok(token.into())
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), RotationError> {
        self.faults.take("promote")?;
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get_mut(secret_id)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.into()))?;
        if !versions.iter().any(|v| v.id == version_id) {
            return Err(RotationError::SecretNotFound(format!(
                "{secret_id} version {version_id}"
            )));
        }
        let old = versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == AWSCURRENT))
            .map(|v| v.id.clone());
        if old.as_deref() != Some(version_id) {
            Self::move_stage(versions, "AWSPREVIOUS", old.as_deref());
            Self::move_stage(versions, AWSCURRENT, Some(version_id));
        }
        Self::move_stage(versions, AWSPENDING, None);
        Ok(())
    }

    async fn discard_pending(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<(), RotationError> {
        self.faults.take("discard_pending")?;
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get_mut(secret_id)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.into()))?;
        if let Some(v) = versions.iter_mut().find(|v| v.id == version_id) {
            v.stages.retain(|s| s != AWSPENDING);
        }
        Ok(())
    }

    async fn previous_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        self.stage_version(secret_id, "AWSPREVIOUS")
    }

    async fn flipped_at(&self, secret_id: &str) -> Result<Option<FlipRecord>, RotationError> {
        self.faults.take("flipped_at")?;
        if !self.secrets.lock().unwrap().contains_key(secret_id) {
            return Err(RotationError::SecretNotFound(secret_id.into()));
        }
        Ok(self.flips.lock().unwrap().get(secret_id).cloned())
    }

    async fn record_flip(
        &self,
        secret_id: &str,
        at_ms: i64,
        version_id: &str,
    ) -> Result<(), RotationError> {
        self.faults.take("record_flip")?;
        if !self.secrets.lock().unwrap().contains_key(secret_id) {
            return Err(RotationError::SecretNotFound(secret_id.into()));
        }
        // Never earlier than the versions made before it (the fake's clock).
        let record = FlipRecord {
            at_ms: at_ms.max(tick()),
            version_id: version_id.into(),
        };
        self.flips.lock().unwrap().insert(secret_id.into(), record);
        Ok(())
    }

    async fn label(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: &str,
    ) -> Result<(), RotationError> {
        self.faults.take("label")?;
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets
            .get_mut(secret_id)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.into()))?;
        Self::move_stage(versions, stage, Some(version_id));
        Ok(())
    }

    async fn current_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        self.faults.take("current_version")?;
        self.stage_version(secret_id, AWSCURRENT)
    }
}

#[derive(Clone, Default)]
pub struct FakeUser {
    pub password: String,
    pub grants: Vec<String>,
    pub live_sessions: i64,
    /// `VALID UNTIL` (milliseconds since the epoch); the server refuses the
    /// password after it.
    pub valid_until_ms: Option<i64>,
    /// Whether a plaintext password ever reached the server (it must not).
    pub saw_plaintext: bool,
}

/// A read replica: it knows the passwords as of the changes it has
/// replayed. It stays where it is for `stall` more login attempts, then
/// replays everything at once.
#[derive(Clone, Default)]
pub struct FakeReader {
    /// Login attempts left before it catches up.
    pub stall: u32,
    /// How many password changes it has replayed.
    pub replayed: u32,
    /// Passwords as of what it has replayed.
    pub passwords: HashMap<String, String>,
    pub sessions: HashMap<String, i64>,
    /// A replica of another primary: it is as far as the primary, yet its
    /// passwords never change.
    pub foreign: bool,
}

#[derive(Default)]
pub struct FakeDatabase {
    pub users: Mutex<HashMap<String, FakeUser>>,
    /// What a login on the primary sees of it.
    pub server: Mutex<ServerFacts>,
    /// Readers by host name.
    pub readers: Mutex<HashMap<String, FakeReader>>,
    /// What the ALTER ROLE answers, when set (a refusal).
    pub alter_role_refusal: Mutex<Option<RotationError>>,
    pub faults: Faults,
    pub password_changes: Mutex<u32>,
}

impl FakeDatabase {
    pub fn add_user(&self, name: &str, password: &str, grants: &[&str]) {
        self.users.lock().unwrap().insert(
            name.into(),
            FakeUser {
                password: password.into(),
                grants: grants.iter().map(|g| g.to_string()).collect(),
                ..FakeUser::default()
            },
        );
    }

    /// Adds a reader that has replayed everything so far and stalls for
    /// `stall` login attempts after that.
    pub fn add_reader(&self, host: &str, stall: u32) {
        let reader = FakeReader {
            stall,
            replayed: *self.password_changes.lock().unwrap(),
            passwords: self.passwords(),
            ..FakeReader::default()
        };
        self.readers.lock().unwrap().insert(host.into(), reader);
    }

    fn passwords(&self) -> HashMap<String, String> {
        self.users
            .lock()
            .unwrap()
            .iter()
            .map(|(u, f)| (u.clone(), f.password.clone()))
            .collect()
    }

    /// Changes `user`'s password behind the rotation's back (another tool,
    /// an operator, Secrets Manager's own rotation).
    pub fn set_password(&self, user: &str, password: &str) {
        self.users
            .lock()
            .unwrap()
            .get_mut(user)
            .unwrap_or_else(|| panic!("no fake user {user}"))
            .password = password.into();
    }

    pub fn password_of(&self, user: &str) -> Option<String> {
        self.users
            .lock()
            .unwrap()
            .get(user)
            .map(|u| u.password.clone())
    }

    pub fn logs_in(&self, user: &str, password: &str) -> bool {
        let users = self.users.lock().unwrap();
        users.get(user).is_some_and(|u| {
            u.password == password && u.valid_until_ms.is_none_or(|v| v > crate::steps::now_ms())
        })
    }

    fn rejected(user: &str) -> RotationError {
        RotationError::LoginRejected {
            user: user.into(),
            detail: "password authentication failed".into(),
        }
    }

    fn login(&self, user: &str, password: &Password) -> Result<(), RotationError> {
        if self.logs_in(user, password.expose()) {
            Ok(())
        } else {
            Err(Self::rejected(user))
        }
    }

    /// A login on `endpoint`: the primary, or one of the readers.
    fn login_at(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<ServerFacts, RotationError> {
        let changes = *self.password_changes.lock().unwrap();
        let mut readers = self.readers.lock().unwrap();
        let Some(reader) = readers.get_mut(&endpoint.host) else {
            drop(readers);
            self.login(user, password)?;
            let mut facts = self.server.lock().unwrap().clone();
            facts.wal_lsn = Some(u64::from(changes));
            return Ok(facts);
        };
        if reader.foreign {
            reader.replayed = changes;
        } else if reader.stall > 0 {
            reader.stall -= 1;
        } else {
            reader.replayed = changes;
            reader.passwords = self.passwords();
        }
        if reader.passwords.get(user).map(String::as_str) != Some(password.expose()) {
            return Err(Self::rejected(user));
        }
        Ok(ServerFacts {
            in_recovery: true,
            read_only: true,
            wal_lsn: Some(u64::from(reader.replayed)),
        })
    }
}

#[async_trait]
impl Database for FakeDatabase {
    async fn check_login(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<ServerFacts, RotationError> {
        self.faults.take("check_login")?;
        self.login_at(endpoint, user, password)
    }

    async fn set_own_password(
        &self,
        _: &Endpoint,
        user: &str,
        current: &Password,
        new: &Password,
    ) -> Result<(), RotationError> {
        self.faults.take("set_own_password")?;
        self.login(user, current)?;
        if let Some(refusal) = self.alter_role_refusal.lock().unwrap().clone() {
            return Err(refusal);
        }
        if self.server.lock().unwrap().read_only {
            return Err(RotationError::DatabaseReadOnly(
                "cannot execute ALTER ROLE in a read-only transaction".into(),
            ));
        }
        // The real adapter sends a verifier; the fake checks it is one and
        // that it matches the new password.
        let verifier = new.scram_verifier();
        let mut users = self.users.lock().unwrap();
        let u = users.get_mut(user).expect("logged in");
        u.saw_plaintext |= !verifier.starts_with("SCRAM-SHA-256$");
        u.password = new.expose().to_string();
        *self.password_changes.lock().unwrap() += 1;
        Ok(())
    }

    async fn set_password_as(
        &self,
        _: &Endpoint,
        admin_user: &str,
        admin_password: &Password,
        role: &str,
        new: &Password,
    ) -> Result<(), RotationError> {
        self.faults.take("set_password_as")?;
        self.login(admin_user, admin_password)?;
        let mut users = self.users.lock().unwrap();
        let admin_may = users
            .get(admin_user)
            .is_some_and(|a| a.grants.iter().any(|g| g == "attribute CREATEROLE"));
        if !admin_may {
            return Err(RotationError::PasswordChangeNotAllowed(format!(
                "permission denied to alter role {role}"
            )));
        }
        let u = users
            .get_mut(role)
            .ok_or_else(|| RotationError::UserNotFound(role.into()))?;
        u.password = new.expose().to_string();
        *self.password_changes.lock().unwrap() += 1;
        Ok(())
    }

    async fn user_facts(
        &self,
        endpoint: &Endpoint,
        login_user: &str,
        login_password: &Password,
        users: &[&str],
    ) -> Result<Preflight, RotationError> {
        self.faults.take("user_facts")?;
        let server = self.login_at(endpoint, login_user, login_password)?;
        let reader_sessions = self
            .readers
            .lock()
            .unwrap()
            .get(&endpoint.host)
            .map(|r| r.sessions.clone());
        let known = self.users.lock().unwrap();
        let users = users
            .iter()
            .map(|u| match known.get(*u) {
                Some(f) => UserFacts {
                    exists: true,
                    facts: f.grants.clone(),
                    live_sessions: match &reader_sessions {
                        Some(sessions) => sessions.get(*u).copied().unwrap_or(0),
                        None => f.live_sessions,
                    },
                    valid_until_ms: f.valid_until_ms,
                },
                None => UserFacts::default(),
            })
            .collect();
        Ok(Preflight { server, users })
    }
}

/// A step of a service deployment: its status and lifecycle stage.
pub type Step = (&'static str, Option<&'static str>);

#[derive(Default)]
pub struct FakeDeployments {
    /// cluster → service → deployments (newest first).
    pub services: Mutex<HashMap<String, HashMap<String, Vec<DeploymentState>>>>,
    pub forced: Mutex<Vec<String>>,
    /// Deployment controller by service (default `ECS`).
    pub controllers: Mutex<HashMap<String, String>>,
    /// Deployment strategy by service (default: none reported, which ECS
    /// treats as `ROLLING`).
    pub strategies: Mutex<HashMap<String, String>>,
    /// The current service deployment of each traffic-shifting service.
    pub service_deployments: Mutex<HashMap<String, ServiceDeploymentState>>,
    /// What each traffic-shifting service's current service deployment goes
    /// through next: every `describe` moves it one step on.
    pub scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    /// cluster → its running tasks that no service started.
    pub tasks: Mutex<HashMap<String, Vec<StandaloneTask>>>,
    /// task definition → what it reads (`valueFrom`s and environment values).
    pub references: Mutex<HashMap<String, Vec<String>>>,
    /// Services `services` still lists that `describe` no longer finds
    /// (deleted meanwhile; moto keeps listing deleted ones).
    pub gone: Mutex<Vec<String>>,
    pub faults: Faults,
    counter: Mutex<u32>,
}

fn revision_arn(cluster: &str, service: &str, deployment_id: &str) -> String {
    let number = deployment_id.rsplit('/').next().unwrap_or_default();
    format!("arn:aws:ecs:us-east-1:123456789012:service-revision/{cluster}/{service}/{number}")
}

impl FakeDeployments {
    /// Makes every deployment of `service` run the task definition
    /// `<service>-td:1`, which reads `references`.
    pub fn reads(&self, cluster: &str, service: &str, references: &[&str]) {
        let task_definition = format!("{service}-td:1");
        for d in self
            .services
            .lock()
            .unwrap()
            .get_mut(cluster)
            .and_then(|c| c.get_mut(service))
            .expect("a service of the fake")
        {
            d.task_definition = Some(task_definition.clone());
        }
        self.references.lock().unwrap().insert(
            task_definition,
            references.iter().map(|r| r.to_string()).collect(),
        );
    }

    /// Adds a service (deployed now) to the cluster.
    pub fn add_service(&self, cluster: &str, service: &str) {
        self.services
            .lock()
            .unwrap()
            .entry(cluster.into())
            .or_default()
            .insert(
                service.into(),
                vec![DeploymentState {
                    id: format!("ecs-svc/initial-{service}"),
                    status: "PRIMARY".into(),
                    rollout_state: Some("COMPLETED".into()),
                    created_at_ms: Some(tick()),
                    task_definition: Some(format!("{cluster}-app:1")),
                }],
            );
    }

    /// Starts a task outside any service, reading `references`.
    pub fn run_task(
        &self,
        cluster: &str,
        name: &str,
        created_ms: Option<i64>,
        references: &[&str],
    ) {
        let task_definition = format!("{name}-td:1");
        self.references.lock().unwrap().insert(
            task_definition.clone(),
            references.iter().map(|r| r.to_string()).collect(),
        );
        self.tasks
            .lock()
            .unwrap()
            .entry(cluster.into())
            .or_default()
            .push(StandaloneTask {
                arn: format!("arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{name}"),
                task_definition,
                created_ms,
            });
    }

    pub fn with_services(cluster: &str, services: &[&str]) -> Self {
        let d = Self::default();
        let mut map = HashMap::new();
        for s in services {
            map.insert(
                s.to_string(),
                vec![DeploymentState {
                    id: format!("ecs-svc/initial-{s}"),
                    status: "PRIMARY".into(),
                    rollout_state: Some("COMPLETED".into()),
                    created_at_ms: Some(tick()),
                    task_definition: Some(format!("{cluster}-app:1")),
                }],
            );
        }
        d.services.lock().unwrap().insert(cluster.into(), map);
        d
    }

    /// Makes `service` an ECS-native blue/green service whose last deployment
    /// succeeded. Like ECS (as far as pgflip may rely on), its deployments'
    /// `rolloutState` says nothing useful: the fake reports `COMPLETED`, so a
    /// step that trusts it instead of the service deployment fails its test.
    pub fn blue_green(&self, cluster: &str, service: &str) {
        self.strategies
            .lock()
            .unwrap()
            .insert(service.into(), "BLUE_GREEN".into());
        let primary = self.services.lock().unwrap()[cluster][service][0]
            .id
            .clone();
        self.service_deployments.lock().unwrap().insert(
            service.into(),
            ServiceDeploymentState {
                arn: format!(
                    "arn:aws:ecs:us-east-1:123456789012:service-deployment/{cluster}/{service}/initial"
                ),
                status: "SUCCESSFUL".into(),
                lifecycle_stage: Some("CLEAN_UP".into()),
                target_revision_arn: Some(revision_arn(cluster, service, &primary)),
                created_at_ms: Some(tick()),
            },
        );
    }

    /// The steps `service`'s current service deployment goes through, one per
    /// `describe` (the last one stays).
    pub fn script(&self, service: &str, steps: &[Step]) {
        self.scripts
            .lock()
            .unwrap()
            .insert(service.into(), steps.iter().copied().collect());
    }

    /// Sets the rollout state of every service's PRIMARY deployment.
    pub fn set_primary_state(&self, cluster: &str, state: &str) {
        for deployments in self
            .services
            .lock()
            .unwrap()
            .get_mut(cluster)
            .unwrap()
            .values_mut()
        {
            deployments[0].rollout_state = Some(state.into());
        }
    }
}

#[async_trait]
impl Workloads for FakeDeployments {
    async fn services(&self, cluster: &str) -> Result<Vec<String>, RotationError> {
        self.faults.take("services")?;
        let all = self.services.lock().unwrap();
        let mut names: Vec<String> = all
            .get(cluster)
            .ok_or_else(|| RotationError::ServiceNotFound(cluster.into()))?
            .keys()
            .cloned()
            .chain(self.gone.lock().unwrap().iter().cloned())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn standalone_tasks(&self, cluster: &str) -> Result<Vec<StandaloneTask>, RotationError> {
        self.faults.take("standalone_tasks")?;
        Ok(self
            .tasks
            .lock()
            .unwrap()
            .get(cluster)
            .cloned()
            .unwrap_or_default())
    }

    async fn references(&self, task_definition: &str) -> Result<Vec<String>, RotationError> {
        self.faults.take("references")?;
        Ok(self
            .references
            .lock()
            .unwrap()
            .get(task_definition)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl Deployments for FakeDeployments {
    async fn force_new_deployment(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<StartedDeployment, RotationError> {
        self.faults.take("force_new_deployment")?;
        let mut all = self.services.lock().unwrap();
        let deployments = all
            .get_mut(cluster)
            .and_then(|c| c.get_mut(service))
            .ok_or_else(|| RotationError::ServiceNotFound(format!("{cluster}/{service}")))?;
        let mut counter = self.counter.lock().unwrap();
        *counter += 1;
        let id = format!("ecs-svc/{counter}");
        for d in deployments.iter_mut() {
            d.status = "ACTIVE".into();
        }
        let shifts_traffic = self
            .strategies
            .lock()
            .unwrap()
            .get(service)
            .is_some_and(|s| s != "ROLLING");
        deployments.insert(
            0,
            DeploymentState {
                id: id.clone(),
                status: "PRIMARY".into(),
                rollout_state: Some(
                    if shifts_traffic {
                        "COMPLETED"
                    } else {
                        "IN_PROGRESS"
                    }
                    .into(),
                ),
                created_at_ms: Some(tick()),
                task_definition: deployments.first().and_then(|d| d.task_definition.clone()),
            },
        );
        if shifts_traffic {
            self.service_deployments.lock().unwrap().insert(
                service.into(),
                ServiceDeploymentState {
                    arn: format!(
                        "arn:aws:ecs:us-east-1:123456789012:service-deployment/{cluster}/{service}/sd-{counter}"
                    ),
                    status: "PENDING".into(),
                    lifecycle_stage: None,
                    target_revision_arn: Some(revision_arn(cluster, service, &id)),
                    created_at_ms: Some(tick()),
                },
            );
        }
        self.forced.lock().unwrap().push(service.into());
        let created_at_ms = deployments[0].created_at_ms;
        Ok(StartedDeployment { id, created_at_ms })
    }

    async fn describe(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, RotationError> {
        self.faults.take("describe")?;
        let all = self.services.lock().unwrap();
        let controllers = self.controllers.lock().unwrap();
        let strategies = self.strategies.lock().unwrap();
        let mut current = self.service_deployments.lock().unwrap();
        let mut scripts = self.scripts.lock().unwrap();
        services
            .iter()
            .map(|s| {
                // Like ECS, a service may be named by its ARN.
                let deployments = all
                    .get(cluster)
                    .and_then(|c| c.get(s.rsplit('/').next().unwrap_or(s)))
                    .cloned()
                    .ok_or_else(|| RotationError::ServiceNotFound(format!("{cluster}/{s}")))?;
                let mut state = ServiceState {
                    name: s.clone(),
                    controller: Some(controllers.get(s).cloned().unwrap_or_else(|| "ECS".into())),
                    strategy: strategies.get(s).cloned(),
                    deployments,
                    service_deployment: None,
                };
                if state.shifts_traffic() {
                    if let Some(sd) = current.get_mut(s) {
                        let script = scripts.entry(s.clone()).or_default();
                        let step = if script.len() > 1 {
                            script.pop_front()
                        } else {
                            script.front().copied()
                        };
                        if let Some((status, stage)) = step {
                            sd.status = status.into();
                            sd.lifecycle_stage = stage.map(Into::into);
                        }
                        state.service_deployment = Some(sd.clone());
                    }
                }
                Ok(state)
            })
            .collect()
    }
}

/// Running executions of the state machine, as Step Functions would list them.
#[derive(Default)]
pub struct FakeExecutions {
    pub running: Mutex<Vec<RunningExecution>>,
    pub inputs: Mutex<HashMap<String, String>>,
    pub faults: Faults,
}

impl FakeExecutions {
    pub fn start(&self, arn: &str) {
        self.running.lock().unwrap().push(RunningExecution {
            arn: arn.into(),
            started_ms: tick(),
        });
    }

    /// Starts an execution with this input.
    pub fn start_with(&self, arn: &str, input: serde_json::Value) {
        self.inputs
            .lock()
            .unwrap()
            .insert(arn.into(), input.to_string());
        self.start(arn);
    }

    pub fn stop(&self, arn: &str) {
        self.running.lock().unwrap().retain(|e| e.arn != arn);
    }
}

#[async_trait]
impl Executions for FakeExecutions {
    /// The running executions of `execution_arn`'s state machine, as
    /// `states:ListExecutions` lists them.
    async fn running(&self, execution_arn: &str) -> Result<Vec<RunningExecution>, RotationError> {
        self.faults.take("running")?;
        let machine = |arn: &str| arn.rsplit_once(':').map(|(m, _)| m.to_string());
        Ok(self
            .running
            .lock()
            .unwrap()
            .iter()
            .filter(|e| machine(&e.arn) == machine(execution_arn))
            .cloned()
            .collect())
    }

    async fn input(&self, execution_arn: &str) -> Result<Option<String>, RotationError> {
        self.faults.take("input")?;
        Ok(self.inputs.lock().unwrap().get(execution_arn).cloned())
    }
}

/// RDS Proxies by name, with the secret ARNs of their `Auth` lists.
#[derive(Default)]
pub struct FakeProxies {
    pub proxies: Mutex<HashMap<String, Vec<String>>>,
    pub faults: Faults,
}

impl FakeProxies {
    pub fn add(&self, name: &str, secrets: &[&str]) {
        self.proxies
            .lock()
            .unwrap()
            .insert(name.into(), secrets.iter().map(|s| s.to_string()).collect());
    }
}

#[async_trait]
impl Proxies for FakeProxies {
    async fn auth_secrets(&self, proxy: &str) -> Result<Vec<String>, RotationError> {
        self.faults.take("auth_secrets")?;
        self.proxies
            .lock()
            .unwrap()
            .get(proxy)
            .cloned()
            .ok_or_else(|| {
                RotationError::Configuration(format!("the RDS Proxy {proxy} does not exist"))
            })
    }
}

/// Execution histories by execution ARN.
#[derive(Default)]
pub struct FakeHistory {
    pub events: Mutex<HashMap<String, Vec<HistoryEvent>>>,
    pub faults: Faults,
}

#[async_trait]
impl ExecutionHistory for FakeHistory {
    async fn history(&self, execution_arn: &str) -> Result<Vec<HistoryEvent>, RotationError> {
        self.faults.take("history")?;
        Ok(self
            .events
            .lock()
            .unwrap()
            .get(execution_arn)
            .cloned()
            .unwrap_or_default())
    }
}

/// The messages published, in order (subject, message).
#[derive(Default)]
pub struct FakeNotifier {
    pub published: Mutex<Vec<(String, String)>>,
    pub faults: Faults,
}

#[async_trait]
impl Notifier for FakeNotifier {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), RotationError> {
        self.faults.take("publish")?;
        self.published
            .lock()
            .unwrap()
            .push((subject.into(), message.into()));
        Ok(())
    }
}
