//! The preflight of `select-user`: what must hold before a password changes
//! or the pointer moves. Every check reads; none changes anything.

use crate::domain::{same_secret, DbSecret, Endpoint, ReaderEndpoint};
use crate::errors::RotationError;
use crate::ports::{Database, Proxies, ServerFacts, UserFacts};

/// What the preflight checks, as the active user (whose password works).
pub(crate) struct Checks<'a> {
    pub active: &'a DbSecret,
    pub target: &'a DbSecret,
    /// The inactive user's sessions only matter when its password changes.
    pub sessions: bool,
    pub readers: &'a [ReaderEndpoint],
    pub margin_days: u64,
    pub now_ms: i64,
}

/// Logs in as the active user and checks, from the catalogs: its server is a
/// writable primary; both users exist; the user about to become active is
/// not expired or about to expire (`VALID UNTIL`); nothing a login depends
/// on differs between the two (`PrivilegeDrift`, both directions); and,
/// when its password is about to change, the inactive user has no sessions,
/// on the primary or on any reader.
pub(crate) async fn preflight(
    database: &dyn Database,
    c: &Checks<'_>,
) -> Result<(), RotationError> {
    let (active_role, target_role) = (c.active.username(), c.target.username());
    let endpoint = c.active.endpoint();
    let found = match database
        .user_facts(
            &endpoint,
            active_role,
            c.active.password(),
            &[active_role, target_role],
        )
        .await
    {
        Ok(found) => found,
        Err(e) => return Err(explain_rejection(database, e, c.target, c.now_ms).await),
    };
    writable(&found.server, &endpoint, active_role)?;
    let (active, target) = (&found.users[0], &found.users[1]);
    for (role, fact) in [(active_role, active), (target_role, target)] {
        if !fact.exists {
            return Err(RotationError::UserNotFound(role.to_string()));
        }
    }
    check_expiry(target_role, target, c.margin_days, c.now_ms)?;
    let differences = grant_differences(active_role, &active.facts, target_role, &target.facts);
    if !differences.is_empty() {
        return Err(RotationError::PrivilegeDrift {
            a: active_role.to_string(),
            b: target_role.to_string(),
            differences,
        });
    }
    if !c.sessions {
        return Ok(());
    }
    let mut sessions = vec![(endpoint.to_string(), target.live_sessions)];
    for reader in c.readers {
        let at = endpoint.on(reader);
        let on_reader = database
            .user_facts(&at, active_role, c.active.password(), &[target_role])
            .await?;
        sessions.push((at.to_string(), on_reader.users[0].live_sessions));
    }
    let total: i64 = sessions.iter().map(|(_, n)| n).sum();
    if total > 0 {
        let places: Vec<String> = sessions
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(at, n)| format!("{n} live session(s) on {at}"))
            .collect();
        tracing::warn!(user = target_role, sessions = %places.join(", "), "the inactive user still has sessions");
        return Err(RotationError::InactiveUserInUse {
            user: target_role.to_string(),
            by: format!("{} (old tasks still draining)", places.join(", ")),
        });
    }
    Ok(())
}

/// A login the server refused: if the role does not exist, or its `VALID
/// UNTIL` has passed (read from `pg_roles` by logging in as `via`, the other
/// user), that is what the error says, not that the secret is wrong.
/// Anything else stays as it is.
pub(crate) async fn explain_rejection(
    database: &dyn Database,
    error: RotationError,
    via: &DbSecret,
    now_ms: i64,
) -> RotationError {
    let RotationError::LoginRejected { user, .. } = &error else {
        return error;
    };
    let seen = database
        .user_facts(&via.endpoint(), via.username(), via.password(), &[user])
        .await;
    let Ok(found) = seen else {
        return error;
    };
    let facts = &found.users[0];
    match facts.valid_until_ms {
        _ if !facts.exists => RotationError::UserNotFound(user.clone()),
        Some(until) if until <= now_ms => RotationError::PasswordExpired {
            user: user.clone(),
            valid_until: timestamp(until),
        },
        _ => error,
    }
}

/// The user about to become active must log in until the next rotation at
/// least: `VALID UNTIL` past is `PasswordExpired`, within `margin_days` of
/// now `PasswordExpiresSoon`.
fn check_expiry(
    user: &str,
    facts: &UserFacts,
    margin_days: u64,
    now_ms: i64,
) -> Result<(), RotationError> {
    let Some(until) = facts.valid_until_ms else {
        return Ok(());
    };
    if until <= now_ms {
        return Err(RotationError::PasswordExpired {
            user: user.to_string(),
            valid_until: timestamp(until),
        });
    }
    let margin_ms = i64::try_from(margin_days)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000);
    if until < now_ms.saturating_add(margin_ms) {
        return Err(RotationError::PasswordExpiresSoon {
            user: user.to_string(),
            valid_until: timestamp(until),
            margin_days,
        });
    }
    Ok(())
}

/// Milliseconds since the epoch as an RFC 3339 UTC time (`2026-11-29T15:52:20Z`).
fn timestamp(ms: i64) -> String {
    aws_smithy_types::DateTime::from_millis(ms)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

/// The server a user's secret names must take writes: a hot standby, or a
/// database (or role) whose sessions are read-only, cannot store a password.
pub(crate) fn writable(
    server: &ServerFacts,
    endpoint: &Endpoint,
    user: &str,
) -> Result<(), RotationError> {
    if server.in_recovery {
        return Err(RotationError::DatabaseReadOnly(format!(
            "the secret of {user:?} names {endpoint}, a hot standby (pg_is_in_recovery() is true): point it at the primary (for RDS: the writer or instance endpoint)"
        )));
    }
    if server.read_only {
        return Err(RotationError::DatabaseReadOnly(format!(
            "sessions of {user:?} on {endpoint} are read-only (default_transaction_read_only is on for the server, the database or the role {user:?}): both users' server must take writes (pgflip sets passwords there, the application writes there)"
        )));
    }
    Ok(())
}

/// Both users' secrets must name the same server and database: the
/// application is flipped from one to the other, so they must find the same
/// data. A target may allow otherwise (`allowDifferentEndpoints`).
pub(crate) fn same_endpoint(
    active: &DbSecret,
    target: &DbSecret,
    allowed: bool,
) -> Result<(), RotationError> {
    let (a, t) = (active.endpoint(), target.endpoint());
    if allowed || a.same_as(&t) {
        return Ok(());
    }
    Err(RotationError::EndpointMismatch(format!(
        "the secret of {:?} names {a}, the secret of {:?} names {t}: after the flip the application would reach another server or database. Point both secrets at the same one (or set ALLOW_DIFFERENT_ENDPOINTS / allowDifferentEndpoints if that is intended)",
        active.username(),
        target.username()
    )))
}

/// An RDS Proxy authenticates only users whose secrets are in its `Auth`
/// list: both secrets must be there, or the application loses the proxy
/// after the flip.
pub(crate) async fn proxy_knows_both(
    proxies: &dyn Proxies,
    proxy: &str,
    secrets: [&str; 2],
) -> Result<(), RotationError> {
    let registered = proxies.auth_secrets(proxy).await?;
    let missing: Vec<&str> = secrets
        .into_iter()
        .filter(|s| !registered.iter().any(|r| same_secret(r, s)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RotationError::ProxyMissingSecret(format!(
        "the RDS Proxy {proxy} does not authenticate with {}: add {} to its Auth list (it lists {} secret(s))",
        missing.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        registered.len()
    )))
}

/// Lists what one user may do and the other may not, in both directions.
pub(crate) fn grant_differences(
    a: &str,
    a_grants: &[String],
    b: &str,
    b_grants: &[String],
) -> String {
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter().filter(|g| !y.contains(g)).cloned().collect()
    };
    let (only_a, only_b) = (only(a_grants, b_grants), only(b_grants, a_grants));
    let mut parts = Vec::new();
    if !only_a.is_empty() {
        parts.push(format!("only {a:?}: {}", only_a.join(", ")));
    }
    if !only_b.is_empty() {
        parts.push(format!("only {b:?}: {}", only_b.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn expiry_is_refused_before_the_margin_and_named_after_it() {
        let now = 1_000_000_000_000;
        let day = 86_400_000;
        let facts = |until| UserFacts {
            exists: true,
            valid_until_ms: until,
            ..UserFacts::default()
        };
        assert!(check_expiry("green", &facts(None), 45, now).is_ok());
        assert!(check_expiry("green", &facts(Some(now + 46 * day)), 45, now).is_ok());
        let soon = check_expiry("green", &facts(Some(now + 44 * day)), 45, now).unwrap_err();
        assert_eq!(soon.name(), "PasswordExpiresSoon");
        let past = check_expiry("green", &facts(Some(now - 1)), 45, now).unwrap_err();
        assert_eq!(past.name(), "PasswordExpired");
        assert!(past.to_string().contains("expired"), "{past}");
        assert!(check_expiry("green", &facts(Some(now + 1)), 0, now).is_ok());
    }
}
