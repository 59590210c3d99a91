//! The six rotation steps. Each is a plain async function over the ports, so
//! the Lambda binaries stay a few lines and unit tests run them on fakes.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::{TargetConfig, Targets};
use crate::domain::*;
use crate::errors::RotationError;
use crate::input::ExecutionInput;
use crate::password::PasswordPolicy;
use crate::ports::*;

/// What the state machine passes to `select-user`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectRequest {
    #[serde(default)]
    pub input: Value,
    pub execution_id: String,
    pub execution_name: String,
}

/// What the state machine passes to `verify-login`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    pub plan: Plan,
    pub pending: PendingPassword,
}

/// The `ClientRequestToken` (32 hex characters) for an execution: the same for
/// every retry and redrive of that execution, different for every other one.
pub fn client_request_token(execution_id: &str) -> String {
    let digest = Sha256::digest(execution_id.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whose password a secret holds: what a bare password (SSM, setup (a))
/// leaves out, the target's configuration fills in.
#[derive(Clone, Copy)]
struct Owner<'a> {
    /// The database user (`None`: only a full JSON value will do).
    user: Option<&'a str>,
    connection: &'a Connection,
}

async fn read_stage(
    secrets: &dyn SecretStore,
    secret_id: &str,
    stage: &str,
    owner: Owner<'_>,
) -> Result<Option<SecretVersion>, RotationError> {
    match secrets.get_stage(secret_id, stage).await? {
        Some(mut v) => {
            v.secret = v.secret.complete(secret_id, owner.user, owner.connection)?;
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

async fn current_secret(
    secrets: &dyn SecretStore,
    secret_id: &str,
    owner: Owner<'_>,
) -> Result<SecretVersion, RotationError> {
    read_stage(secrets, secret_id, AWSCURRENT, owner)
        .await?
        .ok_or_else(|| {
            RotationError::SecretNotFound(format!("{secret_id} has no {AWSCURRENT} version"))
        })
}

/// The target an execution acts on: the one its input names in the targets
/// document, or the environment's. A name the document does not define, or
/// a name without a document, is `InvalidInput`; changes nothing.
pub async fn resolve_target(
    targets: &Targets,
    default: &TargetConfig,
    request: &SelectRequest,
    parameters: &dyn ParameterStore,
) -> Result<TargetConfig, RotationError> {
    let input = ExecutionInput::parse(&request.input)?;
    if input.targets.is_some() {
        return Err(RotationError::InvalidInput(
            "field \"targets\" starts a sweep, which the state machine runs before select-user; this step rotates one target".into(),
        ));
    }
    let Some(name) = input.target else {
        return Ok(default.clone());
    };
    let Some(document) = &targets.parameter_name else {
        return Err(RotationError::InvalidInput(format!(
            "field \"target\" names {name:?}, but no targets document is configured (TARGETS_PARAMETER)"
        )));
    };
    let raw = parameters.get(document).await.map_err(|e| match e {
        RotationError::ParameterNotFound(p) => {
            RotationError::Configuration(format!("the targets document {p} does not exist"))
        }
        other => other,
    })?;
    let target = TargetConfig::from_document(document, &raw.value, &name, default)?;
    if target.parameter_name == default.parameter_name {
        return Err(RotationError::Configuration(format!(
            "targets document {document}: target {name:?} uses the active-user parameter {} of the default target; each target needs its own",
            target.parameter_name
        )));
    }
    info!(target = %name, parameter = %target.parameter_name, "resolved the target");
    Ok(target)
}

/// Step 1: check no other execution is rotating, read the pointer, decide
/// what to do (rotate, or finish an interrupted flip), and for a rotation
/// check that rotating the inactive user is safe. Changes nothing.
#[allow(clippy::too_many_arguments)]
pub async fn select_user(
    config: &TargetConfig,
    request: &SelectRequest,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
    database: &dyn Database,
    deployments: &dyn Deployments,
    executions: &dyn Executions,
) -> Result<Plan, RotationError> {
    let input = ExecutionInput::parse(&request.input)?;
    if input.target != config.name {
        return Err(RotationError::InvalidInput(format!(
            "the input names target {:?}, the configuration given is {:?}",
            input.target, config.name
        )));
    }
    guard(
        executions,
        &request.execution_id,
        config.name.as_deref(),
        now_ms(),
    )
    .await?;

    let pointer = parameters.get(&config.parameter_name).await?;
    let active = pointer.value.trim().to_string();
    let shown = active.clone();
    let invalid = || RotationError::InvalidActiveUser {
        parameter: config.parameter_name.clone(),
        value: shown.clone(),
        blue: config.blue_user.clone(),
        green: config.green_user.clone(),
    };
    let inactive = config.other(&active).ok_or_else(invalid)?.to_string();
    let services = input.services.unwrap_or_else(|| config.services.clone());
    let described = deployments.describe(&config.cluster, &services).await?;
    // CodeDeploy or an external controller owns these services' deployments;
    // a forced ECS deployment is refused there. Stop before changing anything.
    let unsupported: Vec<String> = described
        .iter()
        .filter(|s| matches!(s.controller.as_deref(), Some(c) if c != "ECS"))
        .map(|s| {
            format!(
                "{}/{} ({})",
                config.cluster,
                s.name,
                s.controller.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(RotationError::UnsupportedDeploymentController(
            unsupported.join(", "),
        ));
    }
    let flipped_ms = pointer.last_modified_ms;
    let mut mode = rollout_mode(flipped_ms, &described);
    // Started by Secrets Manager's own rotation of one of the two users.
    let mut alert = None;
    if let Some(rotated) = &input.rotated_secret {
        match config.owner_of_secret(rotated) {
            // The inactive user got a new password: verify it, flip to it.
            Some(owner) if owner == inactive && mode == Mode::Rotate => mode = Mode::Flip,
            Some(owner) if owner == inactive => {}
            // The active user's password changed under the running tasks:
            // redeploy at once so tasks pick up the new one, then fail loudly.
            Some(_) => {
                mode = Mode::Redeploy;
                alert = Some(crate::errors::ACTIVE_USER_ROTATED_EXTERNALLY.to_string());
                warn!(active_user = %active, secret = %rotated, "Secrets Manager rotated the ACTIVE user's password: running tasks may fail to open connections until they are replaced; redeploying now");
            }
            None => {
                return Err(RotationError::InvalidInput(format!(
                    "the RotationSucceeded event names {rotated}, which is neither {:?} nor {:?}",
                    config.blue_secret_id, config.green_secret_id
                )))
            }
        }
    }

    // Normally the inactive user is rotated. When an earlier rotation flipped
    // the pointer but its rollout did not finish, that rotation is finished
    // instead: its target is the user the pointer names now.
    let (previous, target) = match mode {
        Mode::Redeploy | Mode::Wait => (inactive, active),
        Mode::Rotate | Mode::Flip => (active, inactive),
    };
    let previous_secret_id = config.secret_of(&previous).ok_or_else(invalid)?;
    let target_secret_id = config.secret_of(&target).ok_or_else(invalid)?;
    let owner = |user| Owner {
        user: Some(user),
        connection: &config.connection,
    };
    let previous_secret = current_secret(secrets, previous_secret_id, owner(&previous)).await?;
    let target_secret = current_secret(secrets, target_secret_id, owner(&target)).await?;
    let (previous_role, target_role) = (
        previous_secret.secret.username(),
        target_secret.secret.username(),
    );
    if previous_role == target_role {
        return Err(RotationError::Configuration(format!(
            "both secrets name the database user {previous_role:?}; blue and green must be two users"
        )));
    }
    // The inactive user got a new AWSCURRENT after the last flip: it was
    // rotated and verified, but not flipped to. Flip to it; don't rotate again.
    if mode == Mode::Rotate {
        if let (Some(flipped), Some(created)) = (flipped_ms, target_secret.created_ms) {
            if created > flipped {
                mode = Mode::Flip;
            }
        }
    }

    match mode {
        Mode::Rotate | Mode::Flip => {
            // The inactive user's sessions only matter if its password changes.
            preflight(
                database,
                &previous_secret.secret,
                target_role,
                mode == Mode::Rotate,
            )
            .await?;
            target_logs_in(
                database,
                secrets,
                target_secret_id,
                &target_secret,
                owner(&target),
            )
            .await?;
        }
        Mode::Redeploy | Mode::Wait => {
            // Nothing will be rotated; the user the pointer names must work,
            // and so must the other one: a failed rollout flips back to it.
            for secret in [&target_secret.secret, &previous_secret.secret] {
                database
                    .check_login(&secret.endpoint(), secret.username(), secret.password())
                    .await?;
            }
        }
    }
    if mode != Mode::Rotate {
        warn!(?mode, active_user = %active_now(&mode, &previous, &target), "an earlier rotation did not finish: finishing it instead of starting another");
    }

    let rollout = (mode == Mode::Wait).then(|| Rollout {
        cluster: config.cluster.clone(),
        deployments: services
            .iter()
            .zip(&described)
            .map(|(service, d)| ServiceDeployment {
                service: service.clone(),
                deployment_id: primary(&d.deployments)
                    .map(|p| p.id.clone())
                    .unwrap_or_default(),
                rollout_state: None,
            })
            .collect(),
        status: RolloutStatus::InProgress,
        poll_seconds: config.stable_poll_seconds,
        deadline_ms: now_ms().saturating_add(config.stable_timeout_seconds as i64 * 1000),
        alert: alert.clone(),
    });
    let plan = Plan {
        execution_name: request.execution_name.clone(),
        target: config.name.clone(),
        client_request_token: client_request_token(&request.execution_id),
        parameter_name: config.parameter_name.clone(),
        users: config.users(),
        password_store: config.password_store,
        connection: config.connection.clone(),
        previous_user: previous,
        target_user: target,
        target_secret_id: target_secret_id.to_string(),
        previous_secret_id: previous_secret_id.to_string(),
        cluster: config.cluster.clone(),
        services,
        dry_run: input.dry_run,
        mode,
        stable_poll_seconds: config.stable_poll_seconds,
        stable_timeout_seconds: config.stable_timeout_seconds,
        reason: input.reason,
        rollout,
        alert,
        pending: (mode == Mode::Flip).then(|| PendingPassword {
            version_id: target_secret.version_id.clone(),
            resumed: true,
        }),
    };
    info!(
        previous_user = %plan.previous_user,
        target_user = %plan.target_user,
        mode = ?plan.mode,
        services = plan.services.len(),
        dry_run = plan.dry_run,
        "selected the inactive user"
    );
    Ok(plan)
}

fn active_now<'a>(mode: &Mode, previous: &'a str, target: &'a str) -> &'a str {
    match mode {
        Mode::Redeploy | Mode::Wait => target,
        Mode::Rotate | Mode::Flip => previous,
    }
}

/// The inactive user must log in before anything changes: with its
/// AWSCURRENT password, or (an interrupted rotation that already set it in
/// the database) with its AWSPENDING one.
async fn target_logs_in(
    database: &dyn Database,
    secrets: &dyn SecretStore,
    secret_id: &str,
    current: &SecretVersion,
    owner: Owner<'_>,
) -> Result<(), RotationError> {
    let s = &current.secret;
    match database
        .check_login(&s.endpoint(), s.username(), s.password())
        .await
    {
        Err(RotationError::LoginRejected { user, .. }) => {
            let pending = read_stage(secrets, secret_id, AWSPENDING, owner)
                .await?
                .filter(|p| p.version_id != current.version_id);
            if let Some(p) = pending {
                let ps = &p.secret;
                if database
                    .check_login(&ps.endpoint(), ps.username(), ps.password())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            Err(RotationError::LoginRejected {
                user,
                detail: format!("the inactive user's {AWSCURRENT} password in {secret_id} does not log in (nor does an {AWSPENDING} one); fix the secret or the database password"),
            })
        }
        other => other,
    }
}

/// Executions older than the state machine's own timeout cannot be running.
const GUARD_MAX_AGE_MS: i64 = 6 * 3600 * 1000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(i64::MAX)
}

/// The concurrency guard, per target: of the running executions of the same
/// target, the one that started first (then the smaller ARN) proceeds; every
/// other fails fast. Every execution lists itself as running before it gets
/// here, so two executions always agree on which one goes on. Executions of
/// other targets, and sweeps (which only start executions), do not count.
/// Only executions that started earlier are looked at more closely
/// (`DescribeExecution` for their input): usually there are none.
async fn guard(
    executions: &dyn Executions,
    me: &str,
    my_target: Option<&str>,
    now_ms: i64,
) -> Result<(), RotationError> {
    let running = executions.running(me).await?;
    // Not listed yet (eventual consistency): then everyone listed started first.
    let my_start = running
        .iter()
        .find(|e| e.arn == me)
        .map_or(i64::MAX, |e| e.started_ms);
    let mut earlier: Vec<&RunningExecution> = running
        .iter()
        .filter(|e| e.arn != me && now_ms.saturating_sub(e.started_ms) < GUARD_MAX_AGE_MS)
        .filter(|e| (e.started_ms, e.arn.as_str()) < (my_start, me))
        .collect();
    earlier.sort_by_key(|e| (e.started_ms, e.arn.clone()));
    for other in earlier {
        let raw = executions.input(&other.arn).await?;
        let value: Value = match raw.as_deref().map(serde_json::from_str).transpose() {
            Ok(v) => v.unwrap_or(Value::Null),
            // Not JSON: it fails at its first step, having changed nothing.
            Err(_) => continue,
        };
        let Ok(theirs) = ExecutionInput::parse(&value) else {
            continue; // the same: its select-user refuses that input
        };
        if theirs.targets.is_some() {
            continue; // a sweep: its child executions are guarded themselves
        }
        if theirs.target.as_deref() == my_target {
            return Err(RotationError::RotationInProgress(other.arn.clone()));
        }
    }
    Ok(())
}

fn primary(deployments: &[DeploymentState]) -> Option<&DeploymentState> {
    deployments.iter().find(|d| d.status == "PRIMARY")
}

/// Whether the services have caught up with the last change of the pointer.
fn rollout_mode(flipped_ms: Option<i64>, described: &[ServiceState]) -> Mode {
    let mut mode = Mode::Rotate;
    for service in described {
        let Some(p) = primary(&service.deployments) else {
            continue;
        };
        if let (Some(flipped), Some(created)) = (flipped_ms, p.created_at_ms) {
            if created < flipped {
                return Mode::Redeploy;
            }
        }
        if !service.shifts_traffic() {
            if p.rollout_state.as_deref() == Some("IN_PROGRESS") {
                mode = Mode::Wait;
            }
            continue;
        }
        let Some(sd) = &service.service_deployment else {
            continue;
        };
        match service_deployment_outcome(&sd.status) {
            RolloutStatus::InProgress => mode = Mode::Wait,
            // ECS rolled back (or someone stopped) a deployment made after the
            // flip: production traffic went back to tasks that may predate it.
            RolloutStatus::Failed if matches!((flipped_ms, sd.created_at_ms), (Some(f), Some(c)) if c > f) =>
            {
                return Mode::Redeploy;
            }
            _ => {}
        }
    }
    mode
}

/// Preflight, as the previous (active) user, whose password is known to work:
/// both users exist, their privileges match, and (when its password is about
/// to change) the inactive one has no sessions.
async fn preflight(
    database: &dyn Database,
    active: &DbSecret,
    target_role: &str,
    check_sessions: bool,
) -> Result<(), RotationError> {
    let active_role = active.username();
    let facts = database
        .user_facts(
            &active.endpoint(),
            active_role,
            active.password(),
            &[active_role, target_role],
        )
        .await?;
    for (role, fact) in [active_role, target_role].iter().zip(&facts) {
        if !fact.exists {
            return Err(RotationError::UserNotFound(role.to_string()));
        }
    }
    let differences =
        grant_differences(active_role, &facts[0].grants, target_role, &facts[1].grants);
    if !differences.is_empty() {
        return Err(RotationError::PrivilegeDrift {
            a: active_role.to_string(),
            b: target_role.to_string(),
            differences,
        });
    }
    if check_sessions && facts[1].live_sessions > 0 {
        return Err(RotationError::InactiveUserInUse {
            user: target_role.to_string(),
            sessions: facts[1].live_sessions,
        });
    }
    Ok(())
}

/// Lists what one user may do and the other may not, in both directions.
fn grant_differences(a: &str, a_grants: &[String], b: &str, b_grants: &[String]) -> String {
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter().filter(|g| !y.contains(g)).cloned().collect()
    };
    let (only_a, only_b) = (only(a_grants, b_grants), only(b_grants, a_grants));
    let mut parts = Vec::new();
    if !only_a.is_empty() {
        parts.push(format!("only {a:?}: {}", only_a.join(", ")));
    }
    if !only_b.is_empty() {
        parts.push(format!("only {b:?}: {}", only_b.join(", ")));
    }
    parts.join("; ")
}

/// Step 2: stage a new password as `AWSPENDING` and set it in the database.
/// An existing `AWSPENDING` version (an interrupted rotation) is resumed
/// instead of generating another.
pub async fn generate_and_set_password(
    plan: &Plan,
    policy: &PasswordPolicy,
    setter: &PasswordSetter,
    secrets: &dyn SecretStore,
    database: &dyn Database,
) -> Result<PendingPassword, RotationError> {
    let secret_id = &plan.target_secret_id;
    let owner = plan_owner(plan, &plan.target_user);
    let current = current_secret(secrets, secret_id, owner).await?;
    let pending = read_stage(secrets, secret_id, AWSPENDING, owner).await?;
    let (version_id, staged, resumed) = match pending {
        Some(p) if p.version_id != current.version_id => {
            info!(version_id = %p.version_id, "resuming the pending version");
            (p.version_id, p.secret, true)
        }
        _ => {
            let staged = current.secret.with_password(policy.generate());
            let version_id = secrets
                .put_pending(
                    secret_id,
                    &plan.client_request_token,
                    &staged.to_secret_string(),
                )
                .await?;
            info!(%version_id, "staged a new version as AWSPENDING");
            (version_id, staged, false)
        }
    };
    if staged.username() != current.secret.username() {
        return Err(RotationError::SecretMalformed {
            secret: secret_id.clone(),
            reason: format!(
                "the AWSPENDING version names user {:?}, AWSCURRENT names {:?}",
                staged.username(),
                current.secret.username()
            ),
        });
    }

    let endpoint = current.secret.endpoint();
    let user = current.secret.username();
    if let PasswordSetter::Admin {
        secret_id: admin_id,
    } = setter
    {
        // Setting the same verifier again is harmless: no resume logic needed.
        // In the same store as the users' passwords, as the RDS JSON shape
        // (a bare password would not say whose it is).
        let admin = current_secret(
            secrets,
            admin_id,
            Owner {
                user: None,
                connection: &plan.connection,
            },
        )
        .await?;
        database
            .set_password_as(
                &endpoint,
                admin.secret.username(),
                admin.secret.password(),
                user,
                staged.password(),
            )
            .await?;
        info!(
            user,
            admin = admin.secret.username(),
            "set the new password in the database as the administrator"
        );
        return Ok(PendingPassword {
            version_id,
            resumed,
        });
    }
    match database
        .set_own_password(
            &endpoint,
            user,
            current.secret.password(),
            staged.password(),
        )
        .await
    {
        Ok(()) => info!(user, "set the new password in the database"),
        Err(RotationError::LoginRejected { .. }) => {
            // A replay after the password was already set: the current one no
            // longer works, the staged one must.
            database
                .check_login(&endpoint, user, staged.password())
                .await
                .map_err(|e| match e {
                    RotationError::LoginRejected { user, .. } => RotationError::LoginRejected {
                        user,
                        detail: "neither the AWSCURRENT nor the AWSPENDING password logs in".into(),
                    },
                    other => other,
                })?;
            warn!(user, "the pending password was already set; continuing");
        }
        Err(other) => return Err(other),
    }
    Ok(PendingPassword {
        version_id,
        resumed,
    })
}

/// Step 3: log in with the pending password, then promote it to `AWSCURRENT`.
pub async fn verify_login(
    plan: &Plan,
    pending: &PendingPassword,
    secrets: &dyn SecretStore,
    database: &dyn Database,
) -> Result<Verified, RotationError> {
    let secret_id = &plan.target_secret_id;
    let owner = plan_owner(plan, &plan.target_user);
    let current = current_secret(secrets, secret_id, owner).await?;
    if current.version_id == pending.version_id {
        // Promoted by an earlier attempt: it must still log in.
        database
            .check_login(
                &current.secret.endpoint(),
                current.secret.username(),
                current.secret.password(),
            )
            .await?;
        return Ok(Verified {
            version_id: current.version_id,
            already_current: true,
        });
    }
    let staged = read_stage(secrets, secret_id, AWSPENDING, owner)
        .await?
        .filter(|v| v.version_id == pending.version_id)
        .ok_or_else(|| {
            RotationError::SecretNotFound(format!(
                "{secret_id} has no {AWSPENDING} version {}",
                pending.version_id
            ))
        })?;
    database
        .check_login(
            &staged.secret.endpoint(),
            staged.secret.username(),
            staged.secret.password(),
        )
        .await?;
    secrets.promote(secret_id, &staged.version_id).await?;
    info!(version_id = %staged.version_id, "verified the login and promoted the version to AWSCURRENT");
    Ok(Verified {
        version_id: staged.version_id,
        already_current: false,
    })
}

fn plan_owner<'a>(plan: &'a Plan, user: &'a str) -> Owner<'a> {
    Owner {
        user: Some(user),
        connection: &plan.connection,
    }
}

/// Step 4 (and the rollback's first step): point the parameter at a user.
pub async fn flip_parameter(
    request: &FlipRequest,
    parameters: &dyn ParameterStore,
) -> Result<Flipped, RotationError> {
    let users = &request.users;
    if !users.contains(&request.to) {
        return Err(RotationError::InvalidInput(format!(
            "field \"to\" must be {:?} or {:?}, got {:?}",
            users.blue, users.green, request.to
        )));
    }
    let was = parameters
        .get(&request.parameter_name)
        .await?
        .value
        .trim()
        .to_string();
    let changed = was != request.to;
    if changed {
        parameters.put(&request.parameter_name, &request.to).await?;
    }
    info!(parameter = %request.parameter_name, %was, active_user = %request.to, changed, "flipped the active user");
    Ok(Flipped {
        active_user: request.to.clone(),
        was,
        changed,
    })
}

/// Step 5: force a new deployment of every service, all at once.
pub async fn redeploy_ecs(
    request: &RedeployRequest,
    deployments: &dyn Deployments,
) -> Result<Rollout, RotationError> {
    if request.services.is_empty() {
        return Err(RotationError::InvalidInput(
            "field \"services\" is empty".into(),
        ));
    }
    let started = futures::future::join_all(
        request
            .services
            .iter()
            .map(|service| deployments.force_new_deployment(&request.cluster, service)),
    )
    .await;
    let mut out = Vec::with_capacity(started.len());
    for (service, result) in request.services.iter().zip(started) {
        let deployment_id = result?;
        info!(cluster = %request.cluster, %service, %deployment_id, "forced a new deployment");
        out.push(ServiceDeployment {
            service: service.clone(),
            deployment_id,
            rollout_state: None,
        });
    }
    Ok(Rollout {
        cluster: request.cluster.clone(),
        deployments: out,
        status: RolloutStatus::InProgress,
        poll_seconds: request.stable_poll_seconds,
        deadline_ms: now_ms().saturating_add(request.stable_timeout_seconds as i64 * 1000),
        alert: request.alert.clone(),
    })
}

/// Step 6: look at the deployments once. Completed: the rollout comes back.
/// Otherwise an error the state machine acts on: `RolloutInProgress` (it
/// waits and looks again), `RolloutFailed` or `RolloutTimedOut` (it rolls
/// back), `ActiveUserRotatedExternally` (completed, but the execution must
/// still fail loudly). Two state transitions per look: the Wait and this.
pub async fn wait_for_stable(
    rollout: &Rollout,
    deployments: &dyn Deployments,
    now_ms: i64,
) -> Result<Rollout, RotationError> {
    let services: Vec<String> = rollout
        .deployments
        .iter()
        .map(|d| d.service.clone())
        .collect();
    let described = deployments.describe(&rollout.cluster, &services).await?;
    let mut next = rollout.clone();
    let mut states = Vec::with_capacity(services.len());
    for (tracked, current) in next.deployments.iter_mut().zip(&described) {
        let (state, detail) = service_state(&tracked.deployment_id, current);
        tracked.rollout_state = Some(match detail {
            Some(detail) => format!("{}({detail})", state_name(state)),
            None => state_name(state).to_string(),
        });
        states.push(state);
    }
    next.status = if states.contains(&RolloutStatus::Failed) {
        RolloutStatus::Failed
    } else if states.iter().all(|s| *s == RolloutStatus::Completed) {
        RolloutStatus::Completed
    } else {
        RolloutStatus::InProgress
    };
    let summary = next
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
    let summary = format!("cluster {}: {summary}", next.cluster);
    info!(status = ?next.status, %summary, "looked at the rollout");
    match next.status {
        RolloutStatus::Failed => Err(RotationError::RolloutFailed(summary)),
        RolloutStatus::InProgress if now_ms >= rollout.deadline_ms => {
            Err(RotationError::RolloutTimedOut(summary))
        }
        RolloutStatus::InProgress => Err(RotationError::RolloutInProgress(summary)),
        RolloutStatus::Completed => match &rollout.alert {
            Some(_) => Err(RotationError::ActiveUserRotatedExternally(summary)),
            None => Ok(next),
        },
    }
}

fn state_name(s: RolloutStatus) -> &'static str {
    match s {
        RolloutStatus::InProgress => "IN_PROGRESS",
        RolloutStatus::Completed => "COMPLETED",
        RolloutStatus::Failed => "FAILED",
    }
}

/// The state of our deployment of one service, with what an operator should
/// see next to it (the lifecycle stage of a traffic-shifting deployment). If
/// a newer deployment replaced ours (someone deployed meanwhile), that one
/// started after the flip too, so its outcome stands for ours.
fn service_state(ours: &str, service: &ServiceState) -> (RolloutStatus, Option<String>) {
    if service.shifts_traffic() {
        shifted_state(ours, service)
    } else {
        (rolling_state(ours, &service.deployments), None)
    }
}

/// A rolling service: the `rolloutState` of our deployment.
fn rolling_state(ours: &str, deployments: &[DeploymentState]) -> RolloutStatus {
    let tracked = deployments
        .iter()
        .find(|d| d.id == ours)
        .or_else(|| deployments.iter().find(|d| d.status == "PRIMARY"));
    let Some(d) = tracked else {
        return RolloutStatus::InProgress;
    };
    match d.rollout_state.as_deref() {
        Some("FAILED") => RolloutStatus::Failed,
        Some("COMPLETED") if d.status == "PRIMARY" => RolloutStatus::Completed,
        // Without rollout data, a PRIMARY deployment that is the only one left is done.
        None if d.status == "PRIMARY" && deployments.len() == 1 => RolloutStatus::Completed,
        _ => RolloutStatus::InProgress,
    }
}

/// A blue/green (or linear, canary) service: the status of the service
/// deployment that rolls out ours (or one that replaced ours). Until it is
/// `SUCCESSFUL` both revisions may run (through `BAKE_TIME`) and ECS may still
/// roll production traffic back to the old tasks, which use the old user.
fn shifted_state(ours: &str, service: &ServiceState) -> (RolloutStatus, Option<String>) {
    let primary = primary(&service.deployments).map(|p| p.id.as_str());
    let ours_created = service
        .deployments
        .iter()
        .find(|d| d.id == ours)
        .and_then(|d| d.created_at_ms);
    let current = service.service_deployment.as_ref().filter(|sd| {
        let target = sd.target_revision_arn.as_deref();
        deploys(target, ours)
            || primary.is_some_and(|p| p != ours && deploys(target, p))
            // Should the revision numbering ever differ from the deployment
            // id's: a service deployment that began with ours or later is
            // ours or one that replaced it.
            || matches!((sd.created_at_ms, ours_created), (Some(c), Some(o)) if c >= o)
    });
    let Some(sd) = current else {
        // None yet, or ECS still shows the one before ours.
        return (
            RolloutStatus::InProgress,
            Some("AWAITING_SERVICE_DEPLOYMENT".into()),
        );
    };
    let state = service_deployment_outcome(&sd.status);
    let detail = match (state, sd.lifecycle_stage.as_deref()) {
        (RolloutStatus::Completed, _) => None,
        (RolloutStatus::Failed, _) => Some(sd.status.clone()),
        (RolloutStatus::InProgress, Some(stage)) if sd.status == "IN_PROGRESS" => {
            Some(stage.to_string())
        }
        (RolloutStatus::InProgress, Some(stage)) => Some(format!("{} {stage}", sd.status)),
        (RolloutStatus::InProgress, None) => Some(sd.status.clone()),
    };
    (state, detail)
}

/// What an ECS service deployment's status means for the rollout. A rollback
/// (requested, running or done) or a stop means the new tasks will not keep
/// production traffic: failed, whatever ECS does next.
fn service_deployment_outcome(status: &str) -> RolloutStatus {
    match status {
        "SUCCESSFUL" => RolloutStatus::Completed,
        "STOPPED"
        | "STOP_REQUESTED"
        | "ROLLBACK_REQUESTED"
        | "ROLLBACK_IN_PROGRESS"
        | "ROLLBACK_SUCCESSFUL"
        | "ROLLBACK_FAILED" => RolloutStatus::Failed,
        // PENDING, IN_PROGRESS, and any status newer than this code.
        _ => RolloutStatus::InProgress,
    }
}

/// Whether a service revision (`…:service-revision/<cluster>/<service>/<n>`)
/// is the one of a `DescribeServices` deployment (`ecs-svc/<n>`).
fn deploys(revision_arn: Option<&str>, deployment_id: &str) -> bool {
    let number = deployment_id.rsplit('/').next().unwrap_or_default();
    !number.is_empty() && revision_arn.and_then(|a| a.rsplit('/').next()) == Some(number)
}

#[cfg(test)]
mod tests;
