//! What every Lambda binary does at cold start.

use crate::errors::RotationError;

/// Starts tracing: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (set by the
/// template), level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The shared AWS configuration (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Exits the cold start with a clear message when configuration is wrong:
/// the Lambda then reports an init error naming the variable.
pub fn or_exit<T>(result: Result<T, RotationError>) -> T {
    result.unwrap_or_else(|e| {
        tracing::error!(error_type = e.name(), "{e}");
        eprintln!("{}: {e}", e.name());
        std::process::exit(1);
    })
}

/// Parses a step's input; a wrong shape is `InvalidInput` naming the problem.
pub fn parse_payload<T: serde::de::DeserializeOwned>(
    payload: serde_json::Value,
) -> Result<T, RotationError> {
    serde_json::from_value(payload).map_err(|e| RotationError::InvalidInput(e.to_string()))
}
