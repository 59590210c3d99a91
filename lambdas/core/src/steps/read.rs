//! Reading a user's password at a stage, completed with whose it is.

use crate::domain::*;
use crate::errors::RotationError;
use crate::ports::SecretStore;

/// Whose password a secret holds: what a bare password (SSM, setup (a))
/// leaves out, the target's configuration fills in.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    /// The database user (`None`: only a full JSON value will do).
    pub user: Option<&'a str>,
    pub connection: &'a Connection,
}

pub(crate) async fn read_stage(
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

pub(crate) async fn current_secret(
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
