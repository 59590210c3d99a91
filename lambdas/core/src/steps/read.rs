//! Reading passwords: a user's password at a stage, completed with whose it
//! is; and, without any value, the dates operators see (`password_dates`).

use crate::config::TargetConfig;
use crate::domain::*;
use crate::errors::RotationError;
use crate::ports::{CurrentVersion, ParameterStore, SecretStore};

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

/// What operators see of a target without reading any secret value (the
/// CLI's `status`, report-outcome's password ages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordDates {
    /// The user the pointer names, when a value-free source says so: the
    /// active-user parameter. `None` in the alternating layout without that
    /// parameter, or when another rotator moved `AWSCURRENT` after the
    /// parameter was last written.
    pub active: Option<String>,
    /// When the pointer last moved (milliseconds since the epoch).
    pub moved_ms: Option<i64>,
    /// Each user with the version holding its password (id and creation,
    /// no value). Without a known active user in the alternating layout,
    /// the two labels `AWSCURRENT` and `AWSPREVIOUS` stand in for the users.
    pub passwords: Vec<(String, Option<CurrentVersion>)>,
}

/// Reads [`PasswordDates`]: the parameter (`ssm:GetParameter`), and each
/// password's version through `SecretStore::current_version` /
/// `previous_version` (`secretsmanager:ListSecretVersionIds`, or an SSM
/// parameter's history without decryption). Errors are the stores'.
pub async fn password_dates(
    config: &TargetConfig,
    parameters: &dyn ParameterStore,
    store: &dyn SecretStore,
) -> Result<PasswordDates, RotationError> {
    match &config.layout {
        PointerLayout::Parameter => {
            let pointer = parameters.get(&config.parameter_name).await?;
            let mut passwords = Vec::new();
            for (user, secret) in [
                (&config.blue_user, &config.blue_secret_id),
                (&config.green_user, &config.green_secret_id),
            ] {
                passwords.push((user.clone(), store.current_version(secret).await?));
            }
            Ok(PasswordDates {
                active: Some(pointer.value.trim().to_string()),
                moved_ms: pointer.last_modified_ms,
                passwords,
            })
        }
        PointerLayout::AlternatingSecret {
            secret_id,
            active_user_parameter,
        } => {
            let current = store.current_version(secret_id).await?;
            let previous = store.previous_version(secret_id).await?;
            let created = current.as_ref().and_then(|c| c.created_ms);
            let mut active = None;
            if let Some(parameter) = active_user_parameter {
                let shown = parameters.get(parameter).await?;
                // pgflip writes the parameter after it moves AWSCURRENT; a
                // newer AWSCURRENT was promoted by another rotator.
                let fresh = match (shown.last_modified_ms, created) {
                    (Some(written), Some(created)) => written >= created,
                    _ => true,
                };
                let user = shown.value.trim().to_string();
                if fresh && config.other(&user).is_some() {
                    active = Some(user);
                }
            }
            let passwords = match &active {
                Some(user) => {
                    let other = config.other(user).unwrap_or_default().to_string();
                    vec![(user.clone(), current), (other, previous)]
                }
                None => vec![
                    (AWSCURRENT.to_string(), current),
                    (AWSPREVIOUS.to_string(), previous),
                ],
            };
            Ok(PasswordDates {
                active,
                moved_ms: created,
                passwords,
            })
        }
    }
}
