//! [`Database`] on PostgreSQL via tokio-postgres.
//!
//! TLS uses rustls (already in every binary through the AWS SDK, so no
//! OpenSSL to ship or patch). `verify-full` checks the chain against the
//! configured CA bundle and the host name; there is no fallback to plaintext.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use crate::config::{DbConfig, SslMode};
use crate::domain::Endpoint;
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::{Database, UserFacts};

pub struct Postgres {
    config: DbConfig,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Postgres {
    pub fn new(config: DbConfig) -> Result<Self, RotationError> {
        let tls = match config.ssl_mode {
            SslMode::Disable => None,
            SslMode::VerifyFull => {
                let path = config.ssl_root_cert.as_deref().ok_or_else(|| {
                    RotationError::Configuration("DB_SSL_ROOT_CERT is not set".into())
                })?;
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                    path,
                )?))
            }
        };
        Ok(Self { config, tls })
    }

    async fn connect(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<Client, RotationError> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&endpoint.host)
            .port(endpoint.port)
            .dbname(&endpoint.dbname)
            .user(user)
            .password(password.expose())
            .application_name("pgflip")
            .connect_timeout(Duration::from_secs(self.config.connect_timeout_seconds));
        let timeout = Duration::from_secs(self.config.connect_timeout_seconds + 1);
        let result = match &self.tls {
            None => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                tokio::time::timeout(timeout, pg.connect(NoTls))
                    .await
                    .map(|r| r.map(|(client, conn)| spawn(client, conn)))
            }
            Some(tls) => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                tokio::time::timeout(timeout, pg.connect(tls.clone()))
                    .await
                    .map(|r| r.map(|(client, conn)| spawn(client, conn)))
            }
        };
        match result {
            Err(_) => Err(RotationError::DatabaseUnavailable(format!(
                "connecting to {}:{} timed out",
                endpoint.host, endpoint.port
            ))),
            Ok(Err(e)) => Err(classify(user, endpoint, e)),
            Ok(Ok(client)) => Ok(client),
        }
    }
}

fn spawn<S, T>(client: Client, conn: tokio_postgres::Connection<S, T>) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "database connection closed with an error");
        }
    });
    client
}

/// A rustls client config trusting exactly the CAs in the PEM bundle at `path`.
pub fn tls_config(path: &str) -> Result<rustls::ClientConfig, RotationError> {
    let bad =
        |reason: String| RotationError::Configuration(format!("DB_SSL_ROOT_CERT {path}: {reason}"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Maps a tokio-postgres error to a named error. Server messages name the
/// user, never the password; the statements we send never hold a plaintext.
fn classify(user: &str, endpoint: &Endpoint, e: tokio_postgres::Error) -> RotationError {
    let login_rejected = |detail: String| RotationError::LoginRejected {
        user: user.to_string(),
        detail,
    };
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let text = format!("{} ({})", db.message(), code.code());
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            login_rejected(text)
        } else if *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || code.code().starts_with("08")
        {
            RotationError::DatabaseUnavailable(text)
        } else {
            RotationError::Database(text)
        };
    }
    // No SQLSTATE: I/O, TLS or protocol trouble before or after login.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("certificate") || text.contains("InvalidCertificate") {
        // A TLS verification failure is a configuration or attack, not a blip.
        return RotationError::Database(format!(
            "TLS to {}:{} failed verification: {text}",
            endpoint.host, endpoint.port
        ));
    }
    if text.contains("server does not support TLS") {
        return RotationError::Database(format!(
            "{}:{} does not offer TLS, and DB_SSLMODE requires it",
            endpoint.host, endpoint.port
        ));
    }
    RotationError::DatabaseUnavailable(format!("{}:{}: {text}", endpoint.host, endpoint.port))
}

/// The SCRAM-SHA-256 verifier of `new`. It is base64 and `$:` only; check
/// rather than assume before putting it in a literal (ALTER ROLE takes no
/// bind parameters).
fn verifier(new: &Password) -> Result<String, RotationError> {
    let v = new.scram_verifier();
    if v.starts_with("SCRAM-SHA-256$")
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "$:+/=-".contains(c))
    {
        Ok(v)
    } else {
        Err(RotationError::Database(
            "unexpected SCRAM verifier format".into(),
        ))
    }
}

/// A role name as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Everything a user may do, as comparable lines without the user's name:
/// attributes, settings, memberships, direct privileges and owned objects.
const USER_FACTS_SQL: &str = r#"
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS exists,
       ARRAY(
         SELECT fact FROM (
           SELECT 'attribute ' || a AS fact FROM pg_roles r,
             LATERAL (VALUES
               (CASE WHEN r.rolsuper THEN 'SUPERUSER' END),
               (CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END),
               (CASE WHEN r.rolcreatedb THEN 'CREATEDB' END),
               (CASE WHEN NOT r.rolinherit THEN 'NOINHERIT' END),
               (CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END),
               (CASE WHEN r.rolreplication THEN 'REPLICATION' END),
               (CASE WHEN r.rolconnlimit <> -1 THEN 'CONNECTION LIMIT ' || r.rolconnlimit END)
             ) AS v(a)
             WHERE r.rolname = $1 AND a IS NOT NULL
           UNION ALL
           SELECT 'setting ' || s FROM pg_roles r, unnest(r.rolconfig) AS s WHERE r.rolname = $1
           UNION ALL
           SELECT 'member of ' || g.rolname
             FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
             WHERE r.rolname = $1
           UNION ALL
           SELECT a.privilege_type || ' on database ' || d.datname
             FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee
             WHERE r.rolname = $1
           UNION ALL
           SELECT a.privilege_type || ' on schema ' || n.nspname
             FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee
             WHERE r.rolname = $1
           UNION ALL
           SELECT a.privilege_type || ' on ' || CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'table ' END || c.oid::regclass::text
             FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
             WHERE r.rolname = $1
           UNION ALL
           SELECT 'owns schema ' || n.nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
             WHERE r.rolname = $1
           UNION ALL
           SELECT 'owns ' || CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' ELSE 'table ' END || c.oid::regclass::text
             FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
             WHERE r.rolname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           UNION ALL
           SELECT 'owns function ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
             WHERE r.rolname = $1
         ) facts ORDER BY fact
       ) AS grants,
       -- Other users' rows hide backend_type from a non-superuser; usename is
       -- visible, and no background worker runs as an application user.
       (SELECT count(*) FROM pg_stat_activity
         WHERE usename = $1 AND pid <> pg_backend_pid()) AS sessions
"#;

#[async_trait]
impl Database for Postgres {
    async fn check_login(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<(), RotationError> {
        let client = self.connect(endpoint, user, password).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| classify(user, endpoint, e))?;
        Ok(())
    }

    async fn set_own_password(
        &self,
        endpoint: &Endpoint,
        user: &str,
        current: &Password,
        new: &Password,
    ) -> Result<(), RotationError> {
        let client = self.connect(endpoint, user, current).await?;
        let statement = format!("ALTER ROLE CURRENT_USER PASSWORD '{}'", verifier(new)?);
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| classify(user, endpoint, e))?;
        Ok(())
    }

    async fn set_password_as(
        &self,
        endpoint: &Endpoint,
        admin_user: &str,
        admin_password: &Password,
        role: &str,
        new: &Password,
    ) -> Result<(), RotationError> {
        let client = self.connect(endpoint, admin_user, admin_password).await?;
        let statement = format!(
            "ALTER ROLE {} PASSWORD '{}'",
            quote_ident(role),
            verifier(new)?
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| classify(admin_user, endpoint, e))?;
        Ok(())
    }

    async fn user_facts(
        &self,
        endpoint: &Endpoint,
        login_user: &str,
        login_password: &Password,
        users: &[&str],
    ) -> Result<Vec<UserFacts>, RotationError> {
        let client = self.connect(endpoint, login_user, login_password).await?;
        let statement = client
            .prepare(USER_FACTS_SQL)
            .await
            .map_err(|e| classify(login_user, endpoint, e))?;
        let mut facts = Vec::with_capacity(users.len());
        for user in users {
            let row = client
                .query_one(&statement, &[user])
                .await
                .map_err(|e| classify(login_user, endpoint, e))?;
            facts.push(UserFacts {
                exists: row.get("exists"),
                grants: row.get("grants"),
                live_sessions: row.get("sessions"),
            });
        }
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("green"), "\"green\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn verifiers_are_checked_before_use() {
        let v = verifier(&Password::new("x".repeat(32))).unwrap();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
    }
}
