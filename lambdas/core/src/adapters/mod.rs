//! Adapters: the ports implemented on the AWS SDK and tokio-postgres.

#[cfg(any(
    feature = "ssm",
    feature = "secretsmanager",
    feature = "ecs",
    feature = "sfn",
    feature = "rds",
    feature = "sns"
))]
mod aws;
#[cfg(feature = "ecs")]
pub mod ecs;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rds")]
pub mod rds;
#[cfg(feature = "secretsmanager")]
pub mod secrets;
#[cfg(feature = "sfn")]
pub mod sfn;
#[cfg(feature = "sns")]
pub mod sns;
#[cfg(feature = "ssm")]
pub mod ssm;
#[cfg(feature = "ssm")]
pub mod ssm_passwords;

/// Both password stores; a target's configuration picks one.
#[cfg(all(feature = "ssm", feature = "secretsmanager"))]
pub struct PasswordStores {
    pub secrets_manager: secrets::SecretsManager,
    pub ssm: ssm_passwords::SsmPasswordStore,
}

#[cfg(all(feature = "ssm", feature = "secretsmanager"))]
impl PasswordStores {
    pub fn get(&self, kind: crate::domain::StoreKind) -> &dyn crate::ports::SecretStore {
        match kind {
            crate::domain::StoreKind::SecretsManager => &self.secrets_manager,
            crate::domain::StoreKind::Ssm => &self.ssm,
        }
    }
}
