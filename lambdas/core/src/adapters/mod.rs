//! Adapters: the ports implemented on the AWS SDK and tokio-postgres.

#[cfg(any(
    feature = "ssm",
    feature = "secretsmanager",
    feature = "ecs",
    feature = "sfn"
))]
mod aws;
#[cfg(feature = "ecs")]
pub mod ecs;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "secretsmanager")]
pub mod secrets;
#[cfg(feature = "sfn")]
pub mod sfn;
#[cfg(feature = "ssm")]
pub mod ssm;
