//! Step 2, `generate-and-set-password` (ASL state `GenerateAndSetPassword`).

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::read::{current_secret, Owner};
use crate::domain::*;
use crate::errors::RotationError;
use crate::layouts::{self, Stores};
use crate::password::PasswordPolicy;
use crate::ports::{Database, SecretStore};
use crate::ports::{ParameterStore, Pointer};

/// The `ClientRequestToken` (32 hex characters) for an execution: the same for
/// every retry and redrive of that execution, different for every other one.
pub fn client_request_token(execution_id: &str) -> String {
    let digest = Sha256::digest(execution_id.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Step 2: stage a new password as `AWSPENDING` and set it in the database.
/// An existing `AWSPENDING` version (an interrupted rotation) is resumed
/// instead of generating another, but only while it is still right: every
/// field but the password equals the `AWSCURRENT` version's (same user,
/// server, port, database, form), and its password passes today's policy.
/// A stale one is discarded first (see [`discard_stale`]). Refuses
/// (`PointerMoved`) when the pointer names the target user by now.
pub async fn generate_and_set_password(
    plan: &Plan,
    policy: &PasswordPolicy,
    setter: &PasswordSetter,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
    database: &dyn Database,
) -> Result<PendingPassword, RotationError> {
    let user = &plan.target_user;
    let stores = Stores {
        parameters,
        secrets,
    };
    let pointer = layouts::for_plan(plan, stores);
    still_inactive(pointer.as_ref(), user).await?;
    // The version the user logs in with now; none (the alternating layout
    // before its first rotation): an administrator sets the first password.
    let known = pointer.current(user).await?;
    let current = match &known {
        Some(v) => v.clone(),
        None => pointer.template(user).await?,
    };
    let pending = pointer
        .pending(user)
        .await?
        .filter(|p| p.version_id != current.version_id);
    let mut token = plan.client_request_token.clone();
    let resumable = match pending {
        None => None,
        Some(p) => {
            let mut stale = p.secret.differences_besides_password(&current.secret);
            if !policy.accepts(p.secret.password().expose()) {
                stale.push("password (it fails today's password policy)".into());
            }
            if stale.is_empty() {
                Some(p)
            } else {
                let restore = known.is_some() && *setter == PasswordSetter::SelfService;
                discard_stale(
                    pointer.as_ref(),
                    user,
                    restore,
                    database,
                    &current,
                    &p,
                    &stale,
                )
                .await?;
                if p.version_id == token {
                    // That version was made by this execution: a new value
                    // needs a new request token (the same token with another
                    // value is refused). Derived, so a retry derives it again.
                    token = client_request_token(&format!("{token}:{}", p.version_id));
                }
                None
            }
        }
    };
    let (version_id, staged, resumed) = match resumable {
        Some(p) => {
            info!(version_id = %p.version_id, "resuming the pending version");
            (p.version_id, p.secret, true)
        }
        None => {
            let staged = current.secret.with_password(policy.generate());
            let version_id = pointer
                .stage(user, &token, &staged.to_secret_string())
                .await?;
            info!(%version_id, "staged a new version as AWSPENDING");
            (version_id, staged, false)
        }
    };

    let endpoint = current.secret.endpoint();
    let user = current.secret.username();
    let admin_id = match (setter, &known) {
        (PasswordSetter::Admin { secret_id }, _) => Some(secret_id.clone()),
        (PasswordSetter::SelfService, None) => Some(pointer.admin_secret().await?.ok_or_else(|| {
            RotationError::SecretNotFound(format!(
                "{}: no version holds the password of {user:?} and no administrator is configured (masterarn or DB_ADMIN_SECRET_ID)",
                pointer.name()
            ))
        })?),
        (PasswordSetter::SelfService, Some(_)) => None,
    };
    if let Some(admin_id) = admin_id {
        // Setting the same verifier again is harmless: no resume logic needed.
        let admin = admin_secret(plan, &admin_id, secrets).await?;
        database
            .set_password_as(
                &endpoint,
                admin.username(),
                admin.password(),
                user,
                staged.password(),
            )
            .await?;
        info!(
            user,
            admin = admin.username(),
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

/// The user this execution rotates must still be the inactive one: a redrive
/// of an execution planned before a newer rotation (or another rotator's
/// move) would otherwise change the password the pointer names.
/// `PointerMoved` then, with nothing changed.
pub(crate) async fn still_inactive(pointer: &dyn Pointer, user: &str) -> Result<(), RotationError> {
    let now = pointer.read().await?;
    if now.active == user {
        return Err(RotationError::PointerMoved(format!(
            "{} names {user:?} now, the user this execution was planned to rotate (the pointer moved since its SelectUser)",
            pointer.name()
        )));
    }
    Ok(())
}

/// The administrator's secret (`DB_ADMIN_SECRET_ID`, or the alternating
/// secret's `masterarn`), in the same store as the users' passwords, as the
/// RDS JSON shape (a bare password would not say whose it is).
async fn admin_secret(
    plan: &Plan,
    secret_id: &str,
    secrets: &dyn SecretStore,
) -> Result<DbSecret, RotationError> {
    let owner = Owner {
        user: None,
        connection: &plan.connection,
    };
    Ok(current_secret(secrets, secret_id, owner).await?.secret)
}

/// Discards a pending version that is no longer right (`stale` names why:
/// field names, never values) so that a fresh password is made instead.
/// Its password may already be in the database (a run that stopped after
/// setting it): then the user is first set back to its `AWSCURRENT`
/// password, logged in with the stale one, so that at every instant the
/// database holds a password one of the secret's labelled versions has. Only
/// then is the label removed (the version stays, unlabelled). Neither
/// password logging in is `LoginRejected`, with nothing discarded.
async fn discard_stale(
    pointer: &dyn Pointer,
    user_key: &str,
    restore_if_set: bool,
    database: &dyn Database,
    current: &SecretVersion,
    stale: &SecretVersion,
    why: &[String],
) -> Result<(), RotationError> {
    let (endpoint, user) = (current.secret.endpoint(), current.secret.username());
    // An administrator sets the new password without the old one (and with
    // no version holding the user's password, only an administrator can).
    let restore = match restore_if_set {
        false => false,
        true => match database
            .check_login(&endpoint, user, current.secret.password())
            .await
        {
            Ok(_) => false,
            Err(RotationError::LoginRejected { .. }) => true,
            Err(other) => return Err(other),
        },
    };
    if restore {
        database
            .set_own_password(
                &endpoint,
                user,
                stale.secret.password(),
                current.secret.password(),
            )
            .await
            .map_err(|e| match e {
                RotationError::LoginRejected { user, .. } => RotationError::LoginRejected {
                    user,
                    detail: format!(
                        "neither the {AWSCURRENT} version {} nor the stale {AWSPENDING} version {} logs in at {endpoint}; nothing was discarded",
                        current.version_id, stale.version_id
                    ),
                },
                other => other,
            })?;
        warn!(user, version_id = %current.version_id, "the stale pending password was set in the database: set the AWSCURRENT one back first");
    }
    pointer.discard(user_key, &stale.version_id).await?;
    warn!(
        secret = %pointer.secret_of(user_key).unwrap_or_default(),
        discarded_version_id = %stale.version_id,
        current_version_id = %current.version_id,
        differs = %why.join(", "),
        "discarded a stale pending version; a fresh password will be made"
    );
    Ok(())
}
