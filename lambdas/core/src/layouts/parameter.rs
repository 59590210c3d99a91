//! The parameter layout: an SSM parameter names the active user, each user
//! has its own secret (Secrets Manager, or an SSM SecureString).

use async_trait::async_trait;
use tracing::info;

use super::{check_user, Stores};
use crate::domain::{Connection, Flipped, SecretVersion, UserKeys, AWSCURRENT, AWSPENDING};
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::{Pointer, PointerState};
use crate::steps::read::{read_stage, Owner};

pub struct ParameterPointer<'a> {
    pub stores: Stores<'a>,
    pub parameter_name: &'a str,
    pub users: UserKeys,
    pub secret_ids: Vec<(&'a str, &'a str)>,
    /// For passwords stored bare.
    pub connection: &'a Connection,
}

impl ParameterPointer<'_> {
    fn secret(&self, user: &str) -> Result<&str, RotationError> {
        self.secret_of(user).ok_or_else(|| {
            RotationError::InvalidInput(format!(
                "{user:?} is neither {:?} nor {:?}",
                self.users.blue, self.users.green
            ))
        })
    }

    fn owner<'u>(&'u self, user: &'u str) -> Owner<'u> {
        Owner {
            user: Some(user),
            connection: self.connection,
        }
    }
}

#[async_trait]
impl Pointer for ParameterPointer<'_> {
    fn name(&self) -> &str {
        self.parameter_name
    }

    fn secret_of(&self, user: &str) -> Option<&str> {
        self.secret_ids
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, s)| *s)
    }

    /// `ssm:GetParameter`; `LastModifiedDate` is when it moved.
    async fn read(&self) -> Result<PointerState, RotationError> {
        let value = self.stores.parameters.get(self.parameter_name).await?;
        let active = value.value.trim().to_string();
        if !self.users.contains(&active) {
            return Err(RotationError::InvalidActiveUser {
                parameter: self.parameter_name.to_string(),
                value: active,
                blue: self.users.blue.clone(),
                green: self.users.green.clone(),
            });
        }
        Ok(PointerState {
            active,
            moved_ms: value.last_modified_ms,
            unrecorded: None,
        })
    }

    /// Nothing: `ssm:PutParameter` dates every write, by pgflip or by hand
    /// (`LastModifiedDate`, the time `read` gives).
    async fn record_seen(&self, _state: &PointerState) -> Result<(), RotationError> {
        Ok(())
    }

    async fn current(&self, user: &str) -> Result<Option<SecretVersion>, RotationError> {
        self.template(user).await.map(Some)
    }

    async fn template(&self, user: &str) -> Result<SecretVersion, RotationError> {
        let secret_id = self.secret(user)?;
        read_stage(self.stores.secrets, secret_id, AWSCURRENT, self.owner(user))
            .await?
            .ok_or_else(|| {
                RotationError::SecretNotFound(format!("{secret_id} has no {AWSCURRENT} version"))
            })
    }

    async fn pending(&self, user: &str) -> Result<Option<SecretVersion>, RotationError> {
        let secret_id = self.secret(user)?;
        read_stage(self.stores.secrets, secret_id, AWSPENDING, self.owner(user)).await
    }

    async fn stage(
        &self,
        user: &str,
        token: &str,
        value: &Password,
    ) -> Result<String, RotationError> {
        let secret_id = self.secret(user)?;
        self.stores
            .secrets
            .put_pending(secret_id, token, value)
            .await
    }

    async fn discard(&self, user: &str, version_id: &str) -> Result<(), RotationError> {
        let secret_id = self.secret(user)?;
        self.stores
            .secrets
            .discard_pending(secret_id, version_id)
            .await
    }

    async fn settle(&self, user: &str, version_id: &str) -> Result<bool, RotationError> {
        let secret_id = self.secret(user)?;
        self.stores.secrets.promote(secret_id, version_id).await?;
        Ok(true)
    }

    /// `ssm:GetParameter`, then `ssm:PutParameter` when it names another user.
    async fn flip(&self, to: &str, _version_id: Option<&str>) -> Result<Flipped, RotationError> {
        check_user(&self.users, to)?;
        let was = self
            .stores
            .parameters
            .get(self.parameter_name)
            .await?
            .value
            .trim()
            .to_string();
        let changed = was != to;
        if changed {
            self.stores.parameters.put(self.parameter_name, to).await?;
        }
        info!(parameter = %self.parameter_name, %was, active_user = %to, changed, "flipped the active user");
        Ok(Flipped {
            active_user: to.to_string(),
            was,
            changed,
        })
    }

    async fn admin_secret(&self) -> Result<Option<String>, RotationError> {
        Ok(None)
    }
}
