//! The error contract between the Lambdas and the state machine.
//!
//! Every error that crosses a Lambda boundary carries one of the names below as
//! its `errorType`; `statemachine/rotation.asl.json` matches these names in
//! `Retry` and `Catch`. The names are stable: renaming one is a breaking change
//! of the state machine contract. The README's error table lists them all.
//!
//! Messages are shown in the Step Functions execution history, so they hold
//! names, ARNs and version ids only, never a secret value.

use lambda_runtime::Diagnostic;

/// The execution input has a known field with a wrong type or value.
pub const INVALID_INPUT: &str = "InvalidInput";
/// A Lambda's environment is missing a variable or holds an invalid value.
pub const CONFIGURATION_ERROR: &str = "ConfigurationError";
/// The active-user parameter holds neither of the two configured users.
pub const INVALID_ACTIVE_USER: &str = "InvalidActiveUser";
/// The active-user parameter does not exist.
pub const PARAMETER_NOT_FOUND: &str = "ParameterNotFound";
/// A user's secret, or the version the step needs, does not exist.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// A secret's value is not the JSON the product expects.
pub const SECRET_MALFORMED: &str = "SecretMalformed";
/// One of the two database users does not exist.
pub const USER_NOT_FOUND: &str = "UserNotFound";
/// The two users' privileges, memberships or owned objects differ.
pub const PRIVILEGE_DRIFT: &str = "PrivilegeDrift";
/// A user's `VALID UNTIL` has passed: the server refuses its password.
pub const PASSWORD_EXPIRED: &str = "PasswordExpired";
/// The user about to become active has a `VALID UNTIL` within the margin.
pub const PASSWORD_EXPIRES_SOON: &str = "PasswordExpiresSoon";
/// A user's secret names a hot standby or a read-only database.
pub const DATABASE_READ_ONLY: &str = "DatabaseReadOnly";
/// The two users' secrets name different servers or databases.
pub const ENDPOINT_MISMATCH: &str = "EndpointMismatch";
/// A reader has not yet replayed the password change. Retryable.
pub const READER_LAGGING: &str = "ReaderLagging";
/// The RDS Proxy of the target does not authenticate with both users' secrets.
pub const PROXY_MISSING_SECRET: &str = "ProxyMissingSecret";
/// The database refused the `ALTER ROLE … PASSWORD` (restricted password
/// management, an extension that refuses pre-hashed passwords).
pub const PASSWORD_CHANGE_NOT_ALLOWED: &str = "PasswordChangeNotAllowed";
/// The database server's TLS certificate failed verification.
pub const TLS_VERIFICATION_FAILED: &str = "TlsVerificationFailed";
/// The inactive user still has sessions (old tasks draining). Retryable.
pub const INACTIVE_USER_IN_USE: &str = "InactiveUserInUse";
/// The database refused a login with the password the step tried.
pub const LOGIN_REJECTED: &str = "LoginRejected";
/// The database could not be reached or failed transiently. Retryable.
pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
/// The database answered with an error that retrying will not fix.
pub const DATABASE_ERROR: &str = "DatabaseError";
/// An AWS API throttled or failed transiently. Retryable.
pub const AWS_UNAVAILABLE: &str = "AwsUnavailable";
/// An AWS API rejected the request for a reason retrying will not fix.
pub const AWS_REQUEST_FAILED: &str = "AwsRequestFailed";
/// A service's deployment controller cannot be force-deployed by ECS (`CODE_DEPLOY`, `EXTERNAL`).
pub const UNSUPPORTED_DEPLOYMENT_CONTROLLER: &str = "UnsupportedDeploymentController";
/// A service of the cluster reads the target's pointer or a user's secret
/// but is not among the services listed for the rotation: it would never be
/// redeployed, and its tasks would break at the next rotation.
pub const UNLISTED_CONSUMER: &str = "UnlistedConsumer";
/// Another execution of the state machine is rotating this target right now.
pub const ROTATION_IN_PROGRESS: &str = "RotationInProgress";
/// Another sweep, started first, is running: a sweep's limits per database
/// server and per cluster hold only one sweep at a time.
pub const SWEEP_IN_PROGRESS: &str = "SweepInProgress";
/// The pointer moved since `select-user` planned this execution (a redrive
/// of an old execution after a newer rotation, or another rotator): the
/// user it would rotate is the active one now. Nothing was changed.
pub const POINTER_MOVED: &str = "PointerMoved";
/// The ECS cluster or one of the services does not exist.
pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
/// An ECS deployment reported `FAILED`, or ECS rolled back to an older one.
pub const ROLLOUT_FAILED: &str = "RolloutFailed";
/// A rollout this execution did not start (found in progress by
/// `select-user`) failed or did not finish by the deadline; nothing was changed.
pub const FOREIGN_ROLLOUT_FAILED: &str = "ForeignRolloutFailed";
/// The deployments did not finish before the deadline.
pub const ROLLOUT_TIMED_OUT: &str = "RolloutTimedOut";
/// Secrets Manager's own rotation changed the *active* user's password: running
/// tasks were at risk. The services were redeployed at once (raised by the state machine).
pub const ACTIVE_USER_ROTATED_EXTERNALLY: &str = "ActiveUserRotatedExternally";
/// The rotation failed after the flip and was rolled back (raised by the state machine).
pub const ROTATION_ROLLED_BACK: &str = "RotationRolledBack";
/// The rollback itself failed; a person must look (raised by the state machine).
pub const ROLLBACK_FAILED: &str = "RollbackFailed";
/// A sweep over several targets ended with at least one failed rotation
/// (raised by the sweep state machine; each rotation has its own history).
pub const SWEEP_INCOMPLETE: &str = "SweepIncomplete";

/// Every error name, with whether the state machine retries it. The offline
/// ASL test checks this list against the names the definition uses.
pub const ALL: &[(&str, bool)] = &[
    (INVALID_INPUT, false),
    (CONFIGURATION_ERROR, false),
    (INVALID_ACTIVE_USER, false),
    (PARAMETER_NOT_FOUND, false),
    (SECRET_NOT_FOUND, false),
    (SECRET_MALFORMED, false),
    (USER_NOT_FOUND, false),
    (PRIVILEGE_DRIFT, false),
    (PASSWORD_EXPIRED, false),
    (PASSWORD_EXPIRES_SOON, false),
    (DATABASE_READ_ONLY, false),
    (ENDPOINT_MISMATCH, false),
    (READER_LAGGING, true),
    (PROXY_MISSING_SECRET, false),
    (PASSWORD_CHANGE_NOT_ALLOWED, false),
    (TLS_VERIFICATION_FAILED, false),
    (INACTIVE_USER_IN_USE, true),
    (LOGIN_REJECTED, false),
    (DATABASE_UNAVAILABLE, true),
    (DATABASE_ERROR, false),
    (AWS_UNAVAILABLE, true),
    (AWS_REQUEST_FAILED, false),
    (SERVICE_NOT_FOUND, false),
    (ROTATION_IN_PROGRESS, false),
    (SWEEP_IN_PROGRESS, false),
    (POINTER_MOVED, false),
    (UNSUPPORTED_DEPLOYMENT_CONTROLLER, false),
    (UNLISTED_CONSUMER, false),
    (ROLLOUT_FAILED, false),
    (FOREIGN_ROLLOUT_FAILED, false),
    (ROLLOUT_TIMED_OUT, false),
    (ACTIVE_USER_ROTATED_EXTERNALLY, false),
    (ROTATION_ROLLED_BACK, false),
    (ROLLBACK_FAILED, false),
    (SWEEP_INCOMPLETE, false),
];

/// An error of a rotation step. Each variant maps to exactly one name above.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RotationError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("configuration: {0}")]
    Configuration(String),
    #[error("parameter {parameter} holds {value:?}, which is neither {blue:?} nor {green:?}")]
    InvalidActiveUser {
        parameter: String,
        value: String,
        blue: String,
        green: String,
    },
    #[error("parameter {0} does not exist")]
    ParameterNotFound(String),
    #[error("secret not found: {0}")]
    SecretNotFound(String),
    #[error("secret {secret} is malformed: {reason}")]
    SecretMalformed { secret: String, reason: String },
    #[error("database user {0:?} does not exist")]
    UserNotFound(String),
    #[error("privileges of {a:?} and {b:?} differ: {differences}")]
    PrivilegeDrift {
        a: String,
        b: String,
        differences: String,
    },
    #[error("the password of {user:?} expired at {valid_until} (VALID UNTIL): the server refuses it. Run ALTER ROLE \"{user}\" VALID UNTIL 'infinity' (or a later date); nothing was changed")]
    PasswordExpired { user: String, valid_until: String },
    #[error("{user:?} is about to become the active user, but its VALID UNTIL is {valid_until}, before now plus the margin of {margin_days} day(s) (VALID_UNTIL_MARGIN_DAYS): the application would lose it before the next rotation. Run ALTER ROLE \"{user}\" VALID UNTIL 'infinity' (or a later date); nothing was changed")]
    PasswordExpiresSoon {
        user: String,
        valid_until: String,
        margin_days: u64,
    },
    #[error("{0}; nothing was changed")]
    DatabaseReadOnly(String),
    #[error("{0}; nothing was changed")]
    EndpointMismatch(String),
    #[error("{0}")]
    ReaderLagging(String),
    #[error("{0}; nothing was changed")]
    ProxyMissingSecret(String),
    #[error("{0}")]
    PasswordChangeNotAllowed(String),
    #[error("{0}")]
    TlsVerificationFailed(String),
    /// `by`: what still uses it (live sessions, or consumers that have not
    /// moved to the active user), for people.
    #[error("inactive user {user:?} is still in use: {by}; nothing was changed")]
    InactiveUserInUse { user: String, by: String },
    #[error("login as {user:?} rejected: {detail}")]
    LoginRejected { user: String, detail: String },
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("AWS unavailable or throttling: {0}")]
    AwsUnavailable(String),
    #[error("AWS request failed: {0}")]
    AwsRequestFailed(String),
    #[error("ECS service or cluster not found: {0}")]
    ServiceNotFound(String),
    #[error("execution {0} is rotating this target right now; nothing was changed")]
    RotationInProgress(String),
    #[error("sweep {0} started first and is running; this sweep started no rotation")]
    SweepInProgress(String),
    #[error(
        "{0}; nothing was changed: start a new execution, which plans from the pointer as it is"
    )]
    PointerMoved(String),
    #[error("the rollout failed: {0}")]
    RolloutFailed(String),
    #[error("a rollout this execution did not start failed or did not finish by the deadline ({0}); the active-user parameter was not moved, nothing was changed")]
    ForeignRolloutFailed(String),
    #[error("the deployments did not complete by the deadline: {0}")]
    RolloutTimedOut(String),
    #[error("Secrets Manager rotated the password of the active user under the running tasks; every service was redeployed and is stable now ({0}). Rotate only the inactive user.")]
    ActiveUserRotatedExternally(String),
    #[error("ECS cannot force a new deployment of {0}: remove it from the services pgflip redeploys, or move it to the ECS deployment controller (rolling or ECS blue/green); nothing was changed")]
    UnsupportedDeploymentController(String),
    #[error("{0}; nothing was changed")]
    UnlistedConsumer(String),
}

impl RotationError {
    /// The stable `errorType` of this error.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => INVALID_INPUT,
            Self::Configuration(_) => CONFIGURATION_ERROR,
            Self::InvalidActiveUser { .. } => INVALID_ACTIVE_USER,
            Self::ParameterNotFound(_) => PARAMETER_NOT_FOUND,
            Self::SecretNotFound(_) => SECRET_NOT_FOUND,
            Self::SecretMalformed { .. } => SECRET_MALFORMED,
            Self::UserNotFound(_) => USER_NOT_FOUND,
            Self::PrivilegeDrift { .. } => PRIVILEGE_DRIFT,
            Self::PasswordExpired { .. } => PASSWORD_EXPIRED,
            Self::PasswordExpiresSoon { .. } => PASSWORD_EXPIRES_SOON,
            Self::DatabaseReadOnly(_) => DATABASE_READ_ONLY,
            Self::EndpointMismatch(_) => ENDPOINT_MISMATCH,
            Self::ReaderLagging(_) => READER_LAGGING,
            Self::ProxyMissingSecret(_) => PROXY_MISSING_SECRET,
            Self::PasswordChangeNotAllowed(_) => PASSWORD_CHANGE_NOT_ALLOWED,
            Self::TlsVerificationFailed(_) => TLS_VERIFICATION_FAILED,
            Self::InactiveUserInUse { .. } => INACTIVE_USER_IN_USE,
            Self::LoginRejected { .. } => LOGIN_REJECTED,
            Self::DatabaseUnavailable(_) => DATABASE_UNAVAILABLE,
            Self::Database(_) => DATABASE_ERROR,
            Self::AwsUnavailable(_) => AWS_UNAVAILABLE,
            Self::AwsRequestFailed(_) => AWS_REQUEST_FAILED,
            Self::ServiceNotFound(_) => SERVICE_NOT_FOUND,
            Self::RotationInProgress(_) => ROTATION_IN_PROGRESS,
            Self::SweepInProgress(_) => SWEEP_IN_PROGRESS,
            Self::PointerMoved(_) => POINTER_MOVED,
            Self::UnsupportedDeploymentController(_) => UNSUPPORTED_DEPLOYMENT_CONTROLLER,
            Self::UnlistedConsumer(_) => UNLISTED_CONSUMER,
            Self::RolloutFailed(_) => ROLLOUT_FAILED,
            Self::ForeignRolloutFailed(_) => FOREIGN_ROLLOUT_FAILED,
            Self::RolloutTimedOut(_) => ROLLOUT_TIMED_OUT,
            Self::ActiveUserRotatedExternally(_) => ACTIVE_USER_ROTATED_EXTERNALLY,
        }
    }

    /// Whether the state machine retries this error.
    pub fn is_retryable(&self) -> bool {
        ALL.iter()
            .find(|(name, _)| *name == self.name())
            .is_some_and(|(_, retryable)| *retryable)
    }
}

/// The longest message an error carries across the Lambda boundary, in
/// characters. Step Functions keeps at most 32,768 characters of a cause,
/// and a failed rotation's cause travels on wrapped: in its rollback's
/// cause, then in the sweep's (the child's whole description as JSON). A
/// longer message (a drift listing thousands of grants) is cut here, saying
/// so, and the rest stays in the function's log.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

impl From<RotationError> for Diagnostic {
    fn from(error: RotationError) -> Self {
        let mut message = error.to_string();
        if message.chars().count() > MAX_MESSAGE_CHARS {
            tracing::warn!(error = error.name(), "{message}");
            let total = message.chars().count();
            message = message.chars().take(MAX_MESSAGE_CHARS).collect();
            message.push_str(&format!(
                "… ({} more characters in the function's log)",
                total - MAX_MESSAGE_CHARS
            ));
        }
        Diagnostic {
            error_type: error.name().to_string(),
            error_message: message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep reads a failed rotation's description from a cause Step
    /// Functions cuts at 32,768 characters: the message is bounded long
    /// before that (found by a review of the sweep).
    #[test]
    fn a_long_message_is_cut_at_the_lambda_boundary() {
        let long = RotationError::Configuration("g".repeat(50_000));
        let d = Diagnostic::from(long);
        assert_eq!(d.error_type, "ConfigurationError");
        assert!(d.error_message.chars().count() < MAX_MESSAGE_CHARS + 60);
        assert!(d
            .error_message
            .ends_with("more characters in the function's log)"));
        let short = Diagnostic::from(RotationError::Configuration("x".into()));
        assert_eq!(short.error_message, "configuration: x");
    }

    #[test]
    fn names_are_unique_pascal_case_and_not_reserved() {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in ALL {
            assert!(seen.insert(*name), "duplicate error name {name}");
            assert!(
                !name.starts_with("States."),
                "{name} uses the reserved prefix"
            );
            assert!(name.chars().next().unwrap().is_ascii_uppercase(), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
    }

    #[test]
    fn diagnostic_carries_the_stable_name() {
        let d: Diagnostic = RotationError::InactiveUserInUse {
            user: "green".into(),
            by: "3 live session(s) on db:5432/app".into(),
        }
        .into();
        assert_eq!(d.error_type, "InactiveUserInUse");
        assert!(d.error_message.contains("3 live session"));
    }

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        assert!(RotationError::DatabaseUnavailable("x".into()).is_retryable());
        assert!(RotationError::AwsUnavailable("x".into()).is_retryable());
        assert!(!RotationError::LoginRejected {
            user: "g".into(),
            detail: "d".into()
        }
        .is_retryable());
        assert!(!RotationError::InvalidInput("x".into()).is_retryable());
    }
}
