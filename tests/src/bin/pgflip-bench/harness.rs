//! The load harness: "tasks" that behave like an application's ECS tasks.
//!
//! Each task takes its credentials once, when it starts, and keeps them for
//! its whole life (as an ECS task keeps the environment it was started
//! with), from one of two sources ([`CredentialSource`]):
//! - `Parameter`: the application reads the active-user parameter, then that
//!   user's `AWSCURRENT` secret;
//! - `Injected`: no application code, ECS injects them: the task definition
//!   of its service's PRIMARY deployment at that moment, its `secrets[]`
//!   resolved as the ECS agent does, the task reading `DB_USER`,
//!   `DB_PASSWORD`, `DB_HOST`, `DB_PORT` and `DB_NAME` ([`crate::injection`]).
//!
//! It then opens a fresh PostgreSQL connection, runs one query and closes
//! it, in a loop, counting successes and failed logins.
//!
//! A controller polls `DescribeServices` for a new PRIMARY deployment id per
//! service and then rolls that service's tasks the way an ECS rolling
//! deployment does (minimum healthy 100 %, maximum 200 %): new tasks start
//! after a start-up delay, staggered; each time a new task is healthy (its
//! first query succeeded), one old task is told to stop after the drain delay
//! and keeps working until then.
//!
//! Everything is bounded: a hard deadline for the harness, a connect timeout
//! per login, a fixed number of tasks per service. Passwords stay inside
//! [`Password`] values and are never printed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgflip_core::domain::{DbSecret, AWSCURRENT};
use pgflip_core::password::Password;
use pgflip_tests::Target;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::injection;

/// Where a task takes its credentials from when it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialSource {
    /// The application reads the active-user parameter, then that user's
    /// secret at `AWSCURRENT`.
    #[default]
    Parameter,
    /// ECS injects them: the `DB_*` variables of the task definition its
    /// service's PRIMARY deployment runs when the task starts, `secrets[]`
    /// resolved like the ECS agent does (see [`crate::injection`]). Register
    /// one with [`injection::inject_from_secret`].
    Injected,
}

/// How the tasks behave and how a deployment replaces them.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub cluster: String,
    pub services: Vec<String>,
    /// How tasks get their credentials (default: the parameter).
    pub credentials: CredentialSource,
    /// Tasks per service (the services' desired count).
    pub tasks_per_service: usize,
    /// Pause after each connect-and-query.
    pub query_pause: Duration,
    /// How often the controller looks for new deployments.
    pub poll_every: Duration,
    /// Time from a deployment being seen to its first new task starting.
    pub task_start: Duration,
    /// Extra start delay of each further new task.
    pub stagger: Duration,
    /// Time an old task keeps working after its replacement is healthy.
    pub drain: Duration,
    /// Hard bound on the harness's life.
    pub max_life: Duration,
}

impl LoadConfig {
    pub fn new(target: &Target, services: Vec<String>) -> Self {
        Self {
            cluster: target.cluster.clone(),
            services,
            credentials: CredentialSource::Parameter,
            tasks_per_service: 2,
            query_pause: Duration::from_millis(50),
            poll_every: Duration::from_millis(100),
            task_start: Duration::from_millis(300),
            stagger: Duration::from_millis(100),
            drain: Duration::from_millis(500),
            max_life: Duration::from_secs(3600),
        }
    }
}

/// Counts since the harness started; subtract two snapshots for a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Connections that logged in and ran their query.
    pub queries: u64,
    /// Logins the server refused (SQLSTATE class 28: bad password, no such role).
    pub failed_logins: u64,
    /// Any other failure (connection refused, timeout, query error).
    pub other_errors: u64,
    /// A task could not read the parameter or secret when it started (or,
    /// injected, resolve its task definition's `secrets`).
    pub credential_errors: u64,
    /// Successful queries as blue and as green (the target's `blue_role` and
    /// `green_role`: in the alternating layout the role and its clone).
    pub as_blue: u64,
    pub as_green: u64,
    /// Tasks started and stopped.
    pub tasks_started: u64,
    pub tasks_stopped: u64,
    /// New deployments seen.
    pub deployments_seen: u64,
}

impl std::ops::Sub for Totals {
    type Output = Totals;
    fn sub(self, o: Totals) -> Totals {
        Totals {
            queries: self.queries - o.queries,
            failed_logins: self.failed_logins - o.failed_logins,
            other_errors: self.other_errors - o.other_errors,
            credential_errors: self.credential_errors - o.credential_errors,
            as_blue: self.as_blue - o.as_blue,
            as_green: self.as_green - o.as_green,
            tasks_started: self.tasks_started - o.tasks_started,
            tasks_stopped: self.tasks_stopped - o.tasks_stopped,
            deployments_seen: self.deployments_seen - o.deployments_seen,
        }
    }
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    failed_logins: AtomicU64,
    other_errors: AtomicU64,
    credential_errors: AtomicU64,
    as_blue: AtomicU64,
    as_green: AtomicU64,
    tasks_started: AtomicU64,
    tasks_stopped: AtomicU64,
    deployments_seen: AtomicU64,
    /// The first few distinct error messages (no secrets: server messages name the user only).
    samples: Mutex<Vec<String>>,
}

impl Counters {
    fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Totals {
            queries: get(&self.queries),
            failed_logins: get(&self.failed_logins),
            other_errors: get(&self.other_errors),
            credential_errors: get(&self.credential_errors),
            as_blue: get(&self.as_blue),
            as_green: get(&self.as_green),
            tasks_started: get(&self.tasks_started),
            tasks_stopped: get(&self.tasks_stopped),
            deployments_seen: get(&self.deployments_seen),
        }
    }

    fn sample(&self, message: String) {
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 8 && !samples.contains(&message) {
            samples.push(message);
        }
    }
}

/// What a task works with: read once at its start, kept for its life.
struct Credentials {
    user_key: String,
    username: String,
    host: String,
    port: u16,
    dbname: String,
    password: Password,
}

struct Shared {
    target: Target,
    config: LoadConfig,
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
    ecs: aws_sdk_ecs::Client,
    /// The same clients, as the ECS agent uses them for injection.
    agent: injection::Agent,
    counters: Counters,
    /// The services whose tasks run now (the configured ones, then as
    /// [`Harness::add_service`] and [`Harness::remove_service`] change it).
    services: Mutex<Vec<String>>,
    /// Services to start (`true`) or stop, for the controller.
    changes: Mutex<Vec<(String, bool)>>,
}

struct Task {
    generation: u64,
    index: usize,
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stop_at: Option<Instant>,
    handle: JoinHandle<()>,
}

struct Service {
    name: String,
    deployment_id: String,
    generation: u64,
    tasks: Vec<Task>,
}

impl Service {
    fn settled(&self, desired: usize) -> bool {
        self.tasks.len() == desired
            && self
                .tasks
                .iter()
                .all(|t| t.generation == self.generation && t.healthy.load(Ordering::SeqCst))
    }
}

/// A running harness. Stop it with [`Harness::stop`].
pub struct Harness {
    shared: Arc<Shared>,
    settled: Arc<AtomicBool>,
    /// Deployment polls: incremented when one starts and again when it
    /// has finished (odd: one in flight).
    polls: Arc<AtomicU64>,
    quit: Arc<AtomicBool>,
    controller: Option<JoinHandle<Vec<Service>>>,
}

/// AWS clients of the harness, marked with their own user agent (`app/pgflip-load`)
/// so that AWS call counts can tell the Lambdas' calls from the harness's.
pub async fn harness_aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .app_name(aws_config::AppName::new("pgflip-load").expect("a valid app name"))
        .load()
        .await
}

impl Harness {
    /// Starts the tasks of every service on its current deployment and the controller.
    pub async fn start(target: &Target, config: LoadConfig) -> Self {
        let aws = harness_aws().await;
        let shared = Arc::new(Shared {
            target: target.clone(),
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(&aws),
            secrets: aws_sdk_secretsmanager::Client::new(&aws),
            ecs: aws_sdk_ecs::Client::new(&aws),
            agent: injection::Agent::new(&aws),
            counters: Counters::default(),
            services: Mutex::new(config.services.clone()),
            changes: Mutex::new(vec![]),
        });
        let ids = primary_deployments(&shared)
            .await
            .expect("describe the services at the start of the load");
        let now = Instant::now();
        let services: Vec<Service> = shared
            .config
            .services
            .iter()
            .map(|name| {
                let mut service = Service {
                    name: name.clone(),
                    deployment_id: ids.get(name).cloned().unwrap_or_default(),
                    generation: 0,
                    tasks: vec![],
                };
                for index in 0..shared.config.tasks_per_service {
                    let at = now + shared.config.stagger * index as u32;
                    service.tasks.push(spawn_task(&shared, name, 0, index, at));
                }
                service
            })
            .collect();
        let settled = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let controller = tokio::spawn(control(
            shared.clone(),
            services,
            settled.clone(),
            polls.clone(),
            quit.clone(),
        ));
        Self {
            shared,
            settled,
            polls,
            quit,
            controller: Some(controller),
        }
    }

    pub fn totals(&self) -> Totals {
        self.shared.counters.totals()
    }

    /// The first distinct error messages seen (for a report; never a password).
    pub fn error_samples(&self) -> Vec<String> {
        self.shared.counters.samples.lock().unwrap().clone()
    }

    /// Waits until every service runs only healthy tasks of its newest
    /// deployment (the rollout as ECS would report it COMPLETED).
    pub async fn wait_settled(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        // Only a poll that started after this call has seen the deployments
        // made before it: wait for the next one to start and finish (after
        // the one in flight, if any).
        let seen = self.polls.load(Ordering::SeqCst);
        let needed = if seen.is_multiple_of(2) {
            seen + 2
        } else {
            seen + 3
        };
        while self.polls.load(Ordering::SeqCst) < needed || !self.settled.load(Ordering::SeqCst) {
            if started.elapsed() > limit {
                return Err(format!(
                    "the harness's tasks did not settle within {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }

    /// Starts the tasks of a service created since (a new consumer): a full
    /// set on its current deployment, then rolled like the others.
    pub fn add_service(&self, name: &str) {
        self.shared
            .changes
            .lock()
            .unwrap()
            .push((name.to_string(), true));
    }

    /// Stops the tasks of a service (deleted: ECS stops its tasks).
    pub fn remove_service(&self, name: &str) {
        self.shared
            .changes
            .lock()
            .unwrap()
            .push((name.to_string(), false));
    }

    /// Stops every task and the controller, and waits for them.
    pub async fn stop(mut self) -> Totals {
        self.quit.store(true, Ordering::SeqCst);
        if let Some(controller) = self.controller.take() {
            let services = controller.await.expect("the controller ended cleanly");
            for service in services {
                for task in service.tasks {
                    task.stop.store(true, Ordering::SeqCst);
                    let _ = tokio::time::timeout(Duration::from_secs(10), task.handle).await;
                }
            }
        }
        self.totals()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
    }
}

async fn primary_deployments(shared: &Shared) -> Result<BTreeMap<String, String>, String> {
    let mut ids = BTreeMap::new();
    let names = shared.services.lock().unwrap().clone();
    for batch in names.chunks(10) {
        let out = shared
            .ecs
            .describe_services()
            .cluster(&shared.config.cluster)
            .set_services(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| format!("ecs:DescribeServices: {e}"))?;
        for s in out.services() {
            ids.insert(
                s.service_name().unwrap_or_default().to_string(),
                pgflip_tests::primary_deployment_id(s),
            );
        }
    }
    Ok(ids)
}

fn spawn_task(
    shared: &Arc<Shared>,
    service: &str,
    generation: u64,
    index: usize,
    start_at: Instant,
) -> Task {
    let healthy = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::spawn(run_task(
        shared.clone(),
        service.to_string(),
        start_at,
        healthy.clone(),
        stop.clone(),
    ));
    Task {
        generation,
        index,
        healthy,
        stop,
        stop_at: None,
        handle,
    }
}

/// The controller: looks for new deployments, rolls tasks, reports "settled".
async fn control(
    shared: Arc<Shared>,
    mut services: Vec<Service>,
    settled: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    quit: Arc<AtomicBool>,
) -> Vec<Service> {
    let config = shared.config.clone();
    let born = Instant::now();
    let mut last_poll = Instant::now() - config.poll_every;
    while !quit.load(Ordering::SeqCst) && born.elapsed() < config.max_life {
        let changes: Vec<(String, bool)> = std::mem::take(&mut *shared.changes.lock().unwrap());
        for (name, add) in changes {
            if add {
                // Its deployment is taken at the next poll: none yet, so
                // that poll sees a "new deployment" and starts the tasks.
                shared.services.lock().unwrap().push(name.clone());
                services.push(Service {
                    name,
                    deployment_id: String::new(),
                    generation: 0,
                    tasks: vec![],
                });
            } else {
                shared.services.lock().unwrap().retain(|n| *n != name);
                for service in services.iter().filter(|s| s.name == name) {
                    for task in &service.tasks {
                        task.stop.store(true, Ordering::SeqCst);
                    }
                }
                services.retain(|s| s.name != name);
            }
        }
        let now = Instant::now();
        let mut polled = false;
        if now.duration_since(last_poll) >= config.poll_every {
            last_poll = now;
            polled = true;
            // Started (odd); finished once the tasks were rolled for it.
            polls.fetch_add(1, Ordering::SeqCst);
            match primary_deployments(&shared).await {
                Ok(ids) => {
                    let now = Instant::now();
                    for service in services.iter_mut() {
                        let Some(id) = ids.get(&service.name) else {
                            continue;
                        };
                        if *id != service.deployment_id {
                            // A new deployment: start a full set of new tasks.
                            service.deployment_id = id.clone();
                            service.generation += 1;
                            shared
                                .counters
                                .deployments_seen
                                .fetch_add(1, Ordering::SeqCst);
                            for index in 0..config.tasks_per_service {
                                let at = now + config.task_start + config.stagger * index as u32;
                                let task = spawn_task(
                                    &shared,
                                    &service.name,
                                    service.generation,
                                    index,
                                    at,
                                );
                                service.tasks.push(task);
                            }
                        }
                    }
                }
                Err(e) => shared.counters.sample(e),
            }
        }

        let now = Instant::now();
        let mut all_settled = true;
        for service in services.iter_mut() {
            let newest = service.generation;
            let new_healthy = service
                .tasks
                .iter()
                .filter(|t| t.generation == newest && t.healthy.load(Ordering::SeqCst))
                .count();
            let old_scheduled = service
                .tasks
                .iter()
                .filter(|t| t.generation < newest && t.stop_at.is_some())
                .count();
            // One old task drains per healthy new task; all of them once the
            // new set is complete.
            let allowed = if new_healthy >= config.tasks_per_service {
                usize::MAX
            } else {
                new_healthy
            };
            let mut budget = allowed.saturating_sub(old_scheduled);
            let mut old: Vec<&mut Task> = service
                .tasks
                .iter_mut()
                .filter(|t| t.generation < newest && t.stop_at.is_none())
                .collect();
            old.sort_by_key(|t| (t.generation, t.index));
            for task in old {
                if budget == 0 {
                    break;
                }
                task.stop_at = Some(now + config.drain);
                budget -= 1;
            }
            for task in service.tasks.iter() {
                if task.stop_at.is_some_and(|at| at <= now) {
                    task.stop.store(true, Ordering::SeqCst);
                }
            }
            service.tasks.retain(|t| !t.handle.is_finished());
            all_settled &= service.settled(config.tasks_per_service);
        }
        settled.store(all_settled, Ordering::SeqCst);
        if polled {
            // Counted after the tasks were rolled for what this poll saw.
            polls.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settled.store(false, Ordering::SeqCst);
    services
}

/// One task: wait for its start, read the credentials once, then connect,
/// query and disconnect in a loop until told to stop.
async fn run_task(
    shared: Arc<Shared>,
    service: String,
    start_at: Instant,
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let counters = &shared.counters;
    while Instant::now() < start_at {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counters.tasks_started.fetch_add(1, Ordering::SeqCst);
    // A task that cannot read its configuration retries, as a container
    // restarts; it has no credentials to fail a login with.
    let credentials = loop {
        if stop.load(Ordering::SeqCst) {
            counters.tasks_stopped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let read = match shared.config.credentials {
            CredentialSource::Parameter => read_credentials(&shared).await,
            CredentialSource::Injected => injected_credentials(&shared, &service).await,
        };
        match read {
            Ok(c) => break c,
            Err(e) => {
                counters.credential_errors.fetch_add(1, Ordering::SeqCst);
                counters.sample(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    while !stop.load(Ordering::SeqCst) {
        match login_and_query(&credentials).await {
            Ok(()) => {
                counters.queries.fetch_add(1, Ordering::SeqCst);
                // By the target's roles (an injected user that is neither
                // counts in `queries` only).
                match credentials.user_key.as_str() {
                    "blue" => counters.as_blue.fetch_add(1, Ordering::SeqCst),
                    "green" => counters.as_green.fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
                healthy.store(true, Ordering::SeqCst);
            }
            Err(Failure::Login(message)) => {
                counters.failed_logins.fetch_add(1, Ordering::SeqCst);
                counters.sample(message);
            }
            Err(Failure::Other(message)) => {
                counters.other_errors.fetch_add(1, Ordering::SeqCst);
                counters.sample(message);
            }
        }
        pause(shared.config.query_pause, &stop).await;
    }
    counters.tasks_stopped.fetch_add(1, Ordering::SeqCst);
}

/// Sleeps `d`, or less once `stop` is set: a task told to stop ends as
/// soon as its current query has (a drained task is not kept waiting for
/// its next one, nor the harness for it).
async fn pause(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_millis(10))).await;
    }
}

async fn read_credentials(shared: &Shared) -> Result<Credentials, String> {
    let user_key = shared
        .ssm
        .get_parameter()
        .name(&shared.target.parameter_name)
        .send()
        .await
        .map_err(|e| format!("ssm:GetParameter: {e}"))?
        .parameter
        .and_then(|p| p.value)
        .unwrap_or_default();
    let secret_id = match user_key.as_str() {
        "blue" => &shared.target.blue_secret,
        "green" => &shared.target.green_secret,
        other => return Err(format!("the parameter names {other:?}")),
    };
    let raw = shared
        .secrets
        .get_secret_value()
        .secret_id(secret_id)
        .version_stage(AWSCURRENT)
        .send()
        .await
        .map_err(|e| format!("secretsmanager:GetSecretValue: {e}"))?
        .secret_string
        .ok_or_else(|| format!("{secret_id} has no SecretString"))?;
    let secret = DbSecret::parse(secret_id, &raw).map_err(|e| e.to_string())?;
    Ok(Credentials {
        user_key,
        username: secret.username().to_string(),
        host: secret.host().to_string(),
        port: secret.port(),
        dbname: secret.dbname().to_string(),
        password: secret.password().clone(),
    })
}

/// What ECS injects into a task of `service` starting now, read the way an
/// application reads its environment. The user key is the color whose role
/// the injected `DB_USER` names (else the role itself).
async fn injected_credentials(shared: &Shared, service: &str) -> Result<Credentials, String> {
    let env =
        injection::injected_environment(&shared.agent, &shared.config.cluster, service).await?;
    let db = env.db_credentials()?;
    let target = &shared.target;
    let user_key = if db.username == target.blue_role {
        "blue".to_string()
    } else if db.username == target.green_role {
        "green".to_string()
    } else {
        db.username.clone()
    };
    Ok(Credentials {
        user_key,
        username: db.username,
        host: db.host,
        port: db.port,
        dbname: db.dbname,
        password: db.password,
    })
}

enum Failure {
    Login(String),
    Other(String),
}

fn classify(e: tokio_postgres::Error) -> Failure {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    match e.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            Failure::Login(message)
        }
        _ => Failure::Other(message),
    }
}

async fn login_and_query(c: &Credentials) -> Result<(), Failure> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(&c.host)
        .port(c.port)
        .user(&c.username)
        .password(c.password.expose())
        .dbname(&c.dbname)
        .application_name("pgflip-load")
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await
        .map_err(classify)?;
    let connection = tokio::spawn(connection);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client.query_one("SELECT count(*) FROM orders", &[]),
    )
    .await;
    // Dropping the client sends Terminate; wait for the connection to close
    // so a stopped task leaves no session behind.
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(e)),
        Err(_) => Err(Failure::Other("query timed out after 5 s".into())),
    }
}
