//! Step 3, `verify-login` (ASL state `VerifyLogin`).

use serde::Deserialize;
use tracing::{info, warn};

use super::generate_and_set_password::still_inactive;
use crate::domain::*;
use crate::errors::RotationError;
use crate::layouts::{self, Stores};
use crate::ports::{Database, ParameterStore, Pointer, SecretStore, ServerFacts};

/// What the state machine passes to `verify-login`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    pub plan: Plan,
    pub pending: PendingPassword,
}

/// Step 3: log in with the pending password, on the primary and on every
/// reader, then (parameter layout) promote it to `AWSCURRENT` of the user's
/// secret (an RDS Proxy reads that label, so this comes before the flip).
/// A version already promoted (a replay, or mode `flip`) is checked the
/// same way; afterwards no version of the secret carries `AWSPENDING`. In
/// the alternating layout promoting the version is the flip: it stays
/// `AWSPENDING` here. Refuses (`PointerMoved`) when the pointer names the
/// target user by now.
pub async fn verify_login(
    plan: &Plan,
    pending: &PendingPassword,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
    database: &dyn Database,
) -> Result<Verified, RotationError> {
    let user = &plan.target_user;
    let stores = Stores {
        parameters,
        secrets,
    };
    let pointer = layouts::for_plan(plan, stores);
    let pointer = pointer.as_ref();
    still_inactive(pointer, user).await?;
    let current = pointer.current(user).await?;
    if let Some(current) = current.filter(|c| c.version_id == pending.version_id) {
        // Promoted by an earlier attempt, or rotated by another tool: it
        // must still log in, everywhere.
        let s = &current.secret;
        let primary = database
            .check_login(&s.endpoint(), s.username(), s.password())
            .await?;
        readers_accept(plan, pointer, database, s, &primary).await?;
        // Another tool's rotation (or an old run) may have left a pending
        // label behind: nothing will resume it now.
        if let Some(left) = pointer.pending(user).await? {
            pointer.discard(user, &left.version_id).await?;
            warn!(discarded_version_id = %left.version_id, current_version_id = %current.version_id, "a leftover AWSPENDING version: its label was removed (the alternating secret: the next staged version takes it)");
        }
        return Ok(Verified {
            version_id: current.version_id,
            already_current: true,
        });
    }
    let staged = pointer
        .pending(user)
        .await?
        .filter(|v| v.version_id == pending.version_id)
        .ok_or_else(|| {
            RotationError::SecretNotFound(format!(
                "{} has no {AWSPENDING} version {}",
                pointer.secret_of(user).unwrap_or_default(),
                pending.version_id
            ))
        })?;
    let s = &staged.secret;
    let primary = database
        .check_login(&s.endpoint(), s.username(), s.password())
        .await?;
    readers_accept(plan, pointer, database, s, &primary).await?;
    let promoted = pointer.settle(user, &staged.version_id).await?;
    info!(version_id = %staged.version_id, readers = plan.readers.len(), promoted, "verified the login{}", if promoted { " and promoted the version to AWSCURRENT" } else { "; the flip promotes it" });
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
    pointer: &dyn Pointer,
    database: &dyn Database,
    staged: &DbSecret,
    primary: &ServerFacts,
) -> Result<(), RotationError> {
    if plan.readers.is_empty() {
        return Ok(());
    }
    let endpoint = staged.endpoint();
    let previous = pointer.template(&plan.previous_user).await?.secret;
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
