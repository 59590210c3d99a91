//! Step 3, `verify-login` (ASL state `VerifyLogin`).

use serde::Deserialize;
use tracing::{info, warn};

use super::read::{current_secret, plan_owner, read_stage};
use crate::domain::*;
use crate::errors::RotationError;
use crate::ports::{Database, SecretStore, ServerFacts};

/// What the state machine passes to `verify-login`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    pub plan: Plan,
    pub pending: PendingPassword,
}

/// Step 3: log in with the pending password, on the primary and on every
/// reader, then promote it to `AWSCURRENT` (an RDS Proxy reads that label,
/// so this comes before the flip). A version already promoted (a replay, or
/// mode `flip`) is checked the same way. Afterwards no version of the
/// secret carries `AWSPENDING`.
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
        // Promoted by an earlier attempt, or rotated by another tool: it
        // must still log in, everywhere.
        let s = &current.secret;
        let primary = database
            .check_login(&s.endpoint(), s.username(), s.password())
            .await?;
        readers_accept(plan, secrets, database, s, &primary).await?;
        // Another tool's rotation (or an old run) may have left a pending
        // label behind: nothing will resume it now.
        if let Some(left) = read_stage(secrets, secret_id, AWSPENDING, owner).await? {
            secrets.discard_pending(secret_id, &left.version_id).await?;
            warn!(discarded_version_id = %left.version_id, current_version_id = %current.version_id, "removed a leftover AWSPENDING label");
        }
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
    let s = &staged.secret;
    let primary = database
        .check_login(&s.endpoint(), s.username(), s.password())
        .await?;
    readers_accept(plan, secrets, database, s, &primary).await?;
    secrets.promote(secret_id, &staged.version_id).await?;
    info!(version_id = %staged.version_id, readers = plan.readers.len(), "verified the login and promoted the version to AWSCURRENT");
    Ok(Verified {
        version_id: staged.version_id,
        already_current: false,
    })
}

/// The new password must log in on every reader too: a lagging replica
/// refuses it until it has replayed the change. A reader that refuses it is
/// asked (as the previous user, whose password did not change) how far it
/// has replayed: short of the primary's WAL position after the change, it is
/// `ReaderLagging` (the state machine waits and tries again); past it, the
/// reader will never accept the password (`LoginRejected`: not a replica of
/// this primary, or its password differs).
async fn readers_accept(
    plan: &Plan,
    secrets: &dyn SecretStore,
    database: &dyn Database,
    staged: &DbSecret,
    primary: &ServerFacts,
) -> Result<(), RotationError> {
    if plan.readers.is_empty() {
        return Ok(());
    }
    let endpoint = staged.endpoint();
    let previous = current_secret(
        secrets,
        &plan.previous_secret_id,
        plan_owner(plan, &plan.previous_user),
    )
    .await?
    .secret;
    for reader in &plan.readers {
        let at = endpoint.on(reader);
        match database
            .check_login(&at, staged.username(), staged.password())
            .await
        {
            Ok(_) => continue,
            Err(RotationError::LoginRejected { user, detail }) => {
                let replayed = database
                    .check_login(&at, previous.username(), previous.password())
                    .await?
                    .wal_lsn;
                return Err(match (replayed, primary.wal_lsn) {
                    (Some(r), Some(p)) if r < p => RotationError::ReaderLagging(format!(
                        "the reader {at} has not replayed the password change of {user:?} yet (replayed to {} of {} bytes of WAL); nothing was flipped",
                        r,
                        p
                    )),
                    _ => RotationError::LoginRejected {
                        user,
                        detail: format!(
                            "{detail}: the reader {at} has replayed past the password change and still refuses it (is it a replica of {endpoint}?); nothing was flipped"
                        ),
                    },
                });
            }
            Err(other) => return Err(other),
        }
    }
    info!(
        readers = plan.readers.len(),
        "the new password logs in on every reader"
    );
    Ok(())
}
