//! Classification of AWS SDK errors into named rotation errors.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::errors::RotationError;

/// AWS error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServerException",
];

/// The error code of a service error, if the call got that far.
pub(super) fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(ctx) => ctx.err().code(),
        _ => None,
    }
}

/// Classifies an SDK error: transport problems, throttling and 5xx are
/// retryable (`AwsUnavailable`), the rest is `AwsRequestFailed`.
pub(super) fn classify<E>(operation: &str, err: SdkError<E, HttpResponse>) -> RotationError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("Unknown");
            let message = ctx.err().message().unwrap_or_default();
            let status = ctx.raw().status().as_u16();
            let text = format!("{operation}: {code} (HTTP {status}): {message}");
            if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
                RotationError::AwsUnavailable(text)
            } else {
                RotationError::AwsRequestFailed(text)
            }
        }
        SdkError::ConstructionFailure(_) => RotationError::AwsRequestFailed(format!(
            "{operation}: could not build the request: {err}"
        )),
        // Timeouts, DNS/TCP/TLS failures, unparseable responses.
        _ => RotationError::AwsUnavailable(format!(
            "{operation}: {}",
            aws_smithy_types_display(&err)
        )),
    }
}

/// Like [`classify`], but a service error whose code `known` recognises
/// becomes the error `known` returns (a missing resource, say).
pub(super) fn classify_or<E>(
    operation: &str,
    err: SdkError<E, HttpResponse>,
    known: impl FnOnce(&str) -> Option<RotationError>,
) -> RotationError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error_code(&err).and_then(known) {
        Some(named) => named,
        None => classify(operation, err),
    }
}

/// The SDK's `Display` for dispatch errors is terse; include the source chain.
fn aws_smithy_types_display(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
