//! Step 1, `select-user` (ASL state `SelectUser`).

use serde::Deserialize;
use serde_json::Value;
use tracing::{info, warn};

use super::consumers::{declared, discover, inactive_user_in_use, services_to_redeploy};
use super::generate_and_set_password::client_request_token;
use super::guard::{guard, now_ms};
use super::preflight::{
    explain_rejection, preflight, proxy_knows_both, same_endpoint, writable, Checks,
};
use super::read::{read_stage, Owner};
use crate::config::{TargetConfig, Targets};
use crate::domain::*;
use crate::errors::RotationError;
use crate::input::ExecutionInput;
use crate::layouts::{self, Stores};
use crate::ports::*;
use crate::rollout::{primary, rollout_mode};

/// What the state machine passes to `select-user`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectRequest {
    #[serde(default)]
    pub input: Value,
    pub execution_id: String,
    pub execution_name: String,
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
    let target = super::registry::find_target(targets, default, &name, parameters).await?;
    if !target.parameter_name.is_empty() && target.parameter_name == default.parameter_name {
        return Err(RotationError::Configuration(format!(
            "target {name:?} uses the active-user parameter {} of the default target; each target needs its own",
            target.parameter_name
        )));
    }
    info!(target = %name, parameter = %target.parameter_name, "resolved the target");
    Ok(target)
}

/// Whose secret Secrets Manager's own rotation just changed (the execution
/// was started by its `RotationSucceeded` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    Inactive,
    Active,
    /// The alternating secret itself: its `AWSCURRENT` moved to the other
    /// user (the flip is done; verify, redeploy, wait).
    Pointer,
}

/// What the mode is decided from; all of it read before anything changes.
#[derive(Debug, Clone, Copy)]
pub struct ModeFacts<'a> {
    /// When the pointer last changed (milliseconds since the epoch).
    pub flipped_ms: Option<i64>,
    /// The services the execution redeploys, as ECS describes them.
    pub services: &'a [ServiceState],
    /// When the inactive user's `AWSCURRENT` version was created.
    pub inactive_current_ms: Option<i64>,
    pub rotated: Option<Rotated>,
}

/// What an execution does, from the state it finds (a pure function), and
/// the error to raise once its rollout completes, if any. In this order:
///
/// - Secrets Manager rotated the **active** user: redeploy at once, then
///   fail loudly (`ActiveUserRotatedExternally`);
/// - the services have not caught up with the last flip: finish that rollout
///   (`redeploy` when some service's deployment predates the flip, `wait`
///   when one made after it is still rolling out), whatever started it;
/// - the inactive user got a new `AWSCURRENT` after the flip (rotated and
///   verified but not flipped, or rotated by Secrets Manager): `flip`;
/// - otherwise `rotate`.
pub fn choose_mode(facts: &ModeFacts<'_>) -> (Mode, Option<String>) {
    if facts.rotated == Some(Rotated::Active) {
        return (
            Mode::Redeploy,
            Some(crate::errors::ACTIVE_USER_ROTATED_EXTERNALLY.to_string()),
        );
    }
    if facts.rotated == Some(Rotated::Pointer) {
        return (Mode::Redeploy, None);
    }
    let mode = rollout_mode(facts.flipped_ms, facts.services);
    if mode != Mode::Rotate {
        return (mode, None);
    }
    let rotated_after_flip = matches!(
        (facts.flipped_ms, facts.inactive_current_ms),
        (Some(flipped), Some(created)) if created > flipped
    );
    if facts.rotated == Some(Rotated::Inactive) || rotated_after_flip {
        return (Mode::Flip, None);
    }
    (Mode::Rotate, None)
}

/// Step 1: check no other execution is rotating, read the pointer, find the
/// target's consumers in its cluster (`steps::consumers`) and the services to
/// redeploy, decide what to do (rotate, or finish an interrupted flip), and
/// for a rotation check that rotating the inactive user is safe: no live
/// session and no consumer still holds it. Changes no password, label or
/// pointer; outside a dry run it records when it first saw a pointer value
/// another rotator set (`Pointer::record_seen`).
#[allow(clippy::too_many_arguments)]
pub async fn select_user(
    config: &TargetConfig,
    request: &SelectRequest,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
    database: &dyn Database,
    deployments: &dyn Deployments,
    executions: &dyn Executions,
    proxies: &dyn Proxies,
    workloads: &dyn Workloads,
) -> Result<Plan, RotationError> {
    let input = ExecutionInput::parse(&request.input)?;
    if input.target != config.name {
        return Err(RotationError::InvalidInput(format!(
            "the input names target {:?}, the configuration given is {:?}",
            input.target, config.name
        )));
    }
    let now = now_ms();
    guard(
        executions,
        &request.execution_id,
        config.name.as_deref(),
        now,
    )
    .await?;

    let stores = Stores {
        parameters,
        secrets,
    };
    let pointer = layouts::for_target(config, stores);
    let state = pointer.read().await?;
    // A pointer value another rotator set is dated "now" until recorded.
    // Record it at once, whatever this run decides next: that it was
    // current at the read is true, and a run refused below (say, the other
    // role cannot log in until the services are redeployed) must not read
    // "now" again after a redeploy. A dry run changes nothing.
    if !input.dry_run {
        pointer.record_seen(&state).await?;
    }
    let active = state.active.clone();
    let inactive = config
        .other(&active)
        .expect("the pointer names one of the two users")
        .to_string();
    let consumers = discover(workloads, deployments, config).await?;
    let services = services_to_redeploy(
        input.services.as_ref().unwrap_or(&config.services),
        &consumers,
        input
            .unlisted_consumers
            .unwrap_or(config.unlisted_consumers),
        config,
    )?;
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
    let active_secret = pointer.template(&active).await?;
    // None: no version holds the inactive user's password (the alternating
    // layout before its first rotation): only an administrator can set it.
    let inactive_current = pointer.current(&inactive).await?;
    let inactive_secret = match &inactive_current {
        Some(v) => v.clone(),
        None => pointer.template(&inactive).await?,
    };
    let rotated = match &input.rotated_secret {
        None => None,
        Some(secret)
            if config
                .layout
                .alternating_secret()
                .is_some_and(|alternating| same_secret(alternating, secret)) =>
        {
            warn!(%secret, active_user = %active, "Secrets Manager rotated the alternating secret: its AWSCURRENT moved; verifying both users, then redeploying");
            Some(Rotated::Pointer)
        }
        Some(secret) => match config.owner_of_secret(secret) {
            Some(owner) if owner == inactive => {
                if newer(inactive_secret.created_ms, state.moved_ms) {
                    Some(Rotated::Inactive)
                } else {
                    // Nothing new to verify (a late or repeated event): a
                    // scheduled run's decision resumes what is pending.
                    info!(%secret, "the RotationSucceeded event is older than the last flip: the inactive user has no newer version; deciding as for a scheduled run");
                    None
                }
            }
            // The active user's AWSCURRENT predates the pointer's last move:
            // no rotation happened under the running tasks since (a late or
            // repeated event, or one for a rotation done while the user was
            // inactive). Decided like a scheduled run, no alarm.
            Some(_) if !newer(active_secret.created_ms, state.moved_ms) => {
                info!(active_user = %active, %secret, "the RotationSucceeded event is older than the last flip to the active user: nothing rotated it since; deciding as for a scheduled run");
                None
            }
            Some(_) => {
                warn!(active_user = %active, %secret, "Secrets Manager rotated the ACTIVE user's password: running tasks may fail to open connections until they are replaced; redeploying now");
                Some(Rotated::Active)
            }
            None => {
                return Err(RotationError::InvalidInput(format!(
                    "the RotationSucceeded event names {secret}, which is neither {:?} nor {:?}",
                    config.blue_secret_id, config.green_secret_id
                )))
            }
        },
    };

    if active_secret.secret.username() == inactive_secret.secret.username() {
        return Err(RotationError::Configuration(format!(
            "both secrets name the database user {:?}; blue and green must be two users",
            active_secret.secret.username()
        )));
    }
    let (mode, alert) = choose_mode(&ModeFacts {
        flipped_ms: state.moved_ms,
        services: &described,
        // The alternating layout has no flip without a rotation: its
        // inactive user's version is never newer than the last move.
        inactive_current_ms: match config.layout {
            PointerLayout::Parameter => inactive_secret.created_ms,
            PointerLayout::AlternatingSecret { .. } => None,
        },
        rotated,
    });

    // Normally the inactive user is rotated. When an earlier rotation flipped
    // the pointer but its rollout did not finish, that rotation is finished
    // instead: its target is the user the pointer names now.
    let (previous, target, previous_secret, target_secret) = match mode {
        Mode::Redeploy | Mode::Wait => (
            inactive.clone(),
            active.clone(),
            inactive_secret,
            active_secret,
        ),
        Mode::Rotate | Mode::Flip => (
            active.clone(),
            inactive.clone(),
            active_secret,
            inactive_secret,
        ),
    };
    let previous_secret_id = pointer.secret_of(&previous).expect("one of the two users");
    let target_secret_id = pointer.secret_of(&target).expect("one of the two users");
    // Who will set the new password when no version holds the current one.
    let target_has_password = match mode {
        Mode::Rotate | Mode::Flip => inactive_current.is_some(),
        Mode::Redeploy | Mode::Wait => true,
    };
    if !target_has_password {
        admin_can_set(config, pointer.as_ref(), secrets, database, &target).await?;
    } else if matches!(mode, Mode::Redeploy | Mode::Wait) && inactive_current.is_none() {
        // A failed rollout flips back to the other user: it must have a password.
        return Err(RotationError::SecretNotFound(format!(
            "{}: no version holds the password of {inactive:?}, which a failed rollout would flip back to; nothing was changed",
            pointer.name()
        )));
    }

    let mut dry_in_use = None;
    match mode {
        Mode::Rotate | Mode::Flip => {
            // Each secret on its own first (the inactive user logs in, on a
            // writable primary), then the two together (the same server and
            // database), then what the catalogs say about both.
            if target_has_password {
                target_logs_in(
                    database,
                    pointer.as_ref(),
                    &target,
                    &target_secret,
                    &previous_secret.secret,
                    now,
                )
                .await?;
            }
            same_endpoint(
                &previous_secret.secret,
                &target_secret.secret,
                config.allow_different_endpoints,
            )?;
            if let Some(proxy) = &config.proxy_name {
                proxy_knows_both(proxies, proxy, [previous_secret_id, target_secret_id]).await?;
            }
            let checked = preflight(
                database,
                &Checks {
                    active: &previous_secret.secret,
                    target: &target_secret.secret,
                    sessions: mode == Mode::Rotate,
                    readers: &config.readers,
                    margin_days: config.valid_until_margin_days,
                    now_ms: now,
                },
            )
            .await;
            // Like a live session, a consumer whose tasks may still hold the
            // inactive user stops its rotation (a flip, whose password is
            // already set, goes on).
            // Over every consumer: those discovery found, and the configured
            // services this run leaves out whose task definitions name no
            // credentials (seed 11, scenario 410 of the chaos soak: two runs
            // limited to worker, and web's tasks lost their user).
            let consumer_use = if mode == Mode::Rotate {
                let mut all = consumers.clone();
                all.extend(declared(deployments, config, &consumers, &services).await?);
                inactive_user_in_use(&all, &target, &previous, state.moved_ms)
            } else {
                None
            };
            let in_use = match (checked, consumer_use) {
                (Err(RotationError::InactiveUserInUse { by, .. }), consumers) => {
                    Some(consumers.map_or(by.clone(), |c| format!("{by}; {c}")))
                }
                (Err(other), _) => return Err(other),
                (Ok(()), consumers) => consumers,
            };
            if let Some(by) = in_use {
                warn!(user = %target, %by, "the inactive user is still in use");
                // A dry run says so at once; a rotation waits (the state
                // machine retries this error while old tasks drain).
                if !input.dry_run {
                    return Err(RotationError::InactiveUserInUse { user: target, by });
                }
                dry_in_use = Some(format!("{target} is still in use: {by}"));
            }
        }
        Mode::Redeploy | Mode::Wait => {
            // Nothing will be rotated; the user the pointer names must work,
            // and so must the other one: a failed rollout flips back to it.
            for (secret, other) in [
                (&target_secret.secret, &previous_secret.secret),
                (&previous_secret.secret, &target_secret.secret),
            ] {
                if let Err(e) = database
                    .check_login(&secret.endpoint(), secret.username(), secret.password())
                    .await
                {
                    return Err(explain_rejection(database, e, other, now).await);
                }
            }
        }
    }
    if mode != Mode::Rotate {
        warn!(?mode, active_user = %active_now(&mode, &previous, &target), "an earlier rotation did not finish: finishing it instead of starting another");
    }

    // A rollout found in progress is waited for, never rolled back: nothing
    // this execution did started it.
    let rollout = (mode == Mode::Wait).then(|| Rollout {
        cluster: config.cluster.clone(),
        deployments: services
            .iter()
            .zip(&described)
            .map(|(service, d)| {
                let p = primary(&d.deployments);
                ServiceDeployment {
                    service: service.clone(),
                    deployment_id: p.map(|p| p.id.clone()).unwrap_or_default(),
                    created_ms: p.and_then(|p| p.created_at_ms),
                    rollout_state: None,
                }
            })
            .collect(),
        status: RolloutStatus::InProgress,
        poll_seconds: config.stable_poll_seconds,
        deadline_ms: now.saturating_add(config.stable_timeout_seconds as i64 * 1000),
        alert: alert.clone(),
        foreign: true,
        looks: 0,
    });
    let plan = Plan {
        execution_name: request.execution_name.clone(),
        target: config.name.clone(),
        client_request_token: client_request_token(&request.execution_id),
        parameter_name: pointer.name().to_string(),
        pointer: config.layout.clone(),
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
        readers: config.readers.clone(),
        in_use: dry_in_use,
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

/// Whether a version created at `created` is newer than a move at `moved`
/// (unknown dates: assume it is, the cautious answer).
fn newer(created: Option<i64>, moved: Option<i64>) -> bool {
    match (created, moved) {
        (Some(c), Some(m)) => c > m,
        _ => true,
    }
}

fn active_now<'a>(mode: &Mode, previous: &'a str, target: &'a str) -> &'a str {
    match mode {
        Mode::Redeploy | Mode::Wait => target,
        Mode::Rotate | Mode::Flip => previous,
    }
}

/// The inactive user must log in before anything changes, on a server that
/// takes writes: with its current password, or (an interrupted rotation
/// that already set it in the database) with its AWSPENDING one, tried at
/// the current version's server, where the new password will be set.
async fn target_logs_in(
    database: &dyn Database,
    pointer: &dyn Pointer,
    user: &str,
    current: &SecretVersion,
    active: &DbSecret,
    now: i64,
) -> Result<(), RotationError> {
    let s = &current.secret;
    let endpoint = s.endpoint();
    let server = match database
        .check_login(&endpoint, s.username(), s.password())
        .await
    {
        Ok(server) => server,
        Err(RotationError::LoginRejected { user: role, detail }) => {
            let pending = pointer
                .pending(user)
                .await?
                .filter(|p| p.version_id != current.version_id);
            let mut by_pending = None;
            if let Some(p) = pending {
                by_pending = database
                    .check_login(&endpoint, s.username(), p.secret.password())
                    .await
                    .ok();
            }
            match by_pending {
                Some(server) => server,
                None => {
                    let rejected = RotationError::LoginRejected {
                        user: role,
                        detail: format!("{detail}: the inactive user's current password (version {} of {}) does not log in (nor does an {AWSPENDING} one); fix the secret or the database password", current.version_id, pointer.secret_of(user).unwrap_or_default()),
                    };
                    return Err(explain_rejection(database, rejected, active, now).await);
                }
            }
        }
        Err(other) => return Err(other),
    };
    writable(&server, &endpoint, s.username())
}

/// No version holds `user`'s password (the alternating layout before its
/// first rotation): an administrator must set it. Its secret is
/// `DB_ADMIN_SECRET_ID`, else the version's `masterarn`; it must exist and
/// log in. Missing is `SecretNotFound`, with nothing changed.
async fn admin_can_set(
    config: &TargetConfig,
    pointer: &dyn Pointer,
    secrets: &dyn SecretStore,
    database: &dyn Database,
    user: &str,
) -> Result<(), RotationError> {
    let (admin, source) = match &config.admin_secret_id {
        Some(id) => (id.clone(), "DB_ADMIN_SECRET_ID"),
        None => match pointer.admin_secret().await? {
            Some(id) => (id, "masterarn"),
            None => {
                return Err(RotationError::SecretNotFound(format!(
                    "{}: no version holds the password of {user:?} ({AWSPREVIOUS} is missing or names another user), so only an administrator can set its first one: add \"masterarn\" (the administrator's secret) to the secret, or set DB_ADMIN_SECRET_ID; nothing was changed",
                    pointer.name()
                )))
            }
        },
    };
    let owner = Owner {
        user: None,
        connection: &config.connection,
    };
    let found = match read_stage(secrets, &admin, AWSCURRENT, owner).await {
        Ok(found) => found,
        Err(RotationError::SecretNotFound(_)) => None,
        Err(other) => return Err(other),
    };
    let Some(secret) = found else {
        return Err(RotationError::SecretNotFound(format!(
            "the administrator's secret {admin} ({source}) does not exist or has no {AWSCURRENT} version; it is needed to set the first password of {user:?}; nothing was changed"
        )));
    };
    let s = &secret.secret;
    database
        .check_login(&s.endpoint(), s.username(), s.password())
        .await?;
    info!(%user, admin = s.username(), %source, "no version holds the inactive user's password: the administrator will set it");
    Ok(())
}
