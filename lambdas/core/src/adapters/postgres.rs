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

use crate::config::{DbConfig, PasswordEncryption, SslMode};
use crate::domain::Endpoint;
use crate::errors::RotationError;
use crate::password::{Password, Verifier, SCRAM_DEFAULT_ITERATIONS};
use crate::ports::{Database, Preflight, ServerFacts, UserFacts};

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
            login_rejected(format!("{text} at {endpoint}"))
        } else if *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || code.code().starts_with("08")
        {
            RotationError::DatabaseUnavailable(format!("{endpoint}: {text}"))
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            RotationError::DatabaseReadOnly(format!("{endpoint} is read-only: {text}"))
        } else {
            RotationError::Database(format!("{endpoint}: {text}"))
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
        return RotationError::TlsVerificationFailed(format!(
            "the TLS certificate of {}:{} failed verification against DB_SSL_ROOT_CERT: {text}. Connect by a name the certificate carries (for RDS: the instance, cluster or proxy endpoint, not a DNS alias) and trust the CA that signed it",
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

/// What the server said to an `ALTER ROLE … PASSWORD`: a refusal to let this
/// login set a password (SQLSTATE 42501, as RDS's `rds.restrict_password_commands`
/// gives it, or an extension such as credcheck that refuses pre-hashed
/// passwords) is `PasswordChangeNotAllowed` with what to do; the rest is
/// classified like any other error.
fn classify_alter_role(
    login: &str,
    role: &str,
    as_admin: bool,
    endpoint: &Endpoint,
    e: tokio_postgres::Error,
) -> RotationError {
    if let Some(db) = e.as_db_error() {
        let message = db.message().to_ascii_lowercase();
        let prehashed = ["encrypted", "hashed", "pre-hash"]
            .iter()
            .any(|w| message.contains(w));
        if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE || prehashed {
            let advice = match (as_admin, prehashed) {
                (_, true) => "the server refuses passwords sent as a verifier; pgflip never sends a plaintext password, so allow pre-hashed passwords for this role (for example credcheck.encrypted_password_allowed = on)".to_string(),
                (false, false) => "this user may not change its own password here (on RDS with rds.restrict_password_commands, only rds_password members may): set DB_ADMIN_SECRET_ID to the secret of an administrator who may, or grant the user that right".to_string(),
                (true, false) => format!("the administrator {login:?} may not set the password of {role:?}: give it CREATEROLE (and ADMIN OPTION on {role:?} on PostgreSQL 16 and later), or membership of rds_password on RDS with rds.restrict_password_commands"),
            };
            return RotationError::PasswordChangeNotAllowed(format!(
                "{endpoint}: ALTER ROLE {role:?} PASSWORD as {login:?} was refused: {} ({}); {advice}",
                db.message(),
                db.code().code()
            ));
        }
    }
    classify(login, endpoint, e)
}

/// A role name as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What one login sees of the server (one round trip).
const SERVER_FACTS_SQL: &str = "SELECT pg_is_in_recovery() AS in_recovery, \
     current_setting('transaction_read_only') = 'on' AS read_only, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn, \
     current_setting('password_encryption') AS password_encryption, \
     current_setting('scram_iterations', true) AS scram_iterations";

/// A WAL position (`16/B374D848`) as a byte offset.
fn parse_lsn(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// The server's facts and the verifier kind it would store, from a row of
/// [`SERVER_FACTS_SQL`].
fn server_facts(row: &tokio_postgres::Row) -> (ServerFacts, Verifier) {
    let iterations = row
        .get::<_, Option<String>>("scram_iterations")
        .and_then(|i| i.parse().ok())
        .unwrap_or(SCRAM_DEFAULT_ITERATIONS);
    let verifier = match row.get::<_, String>("password_encryption").as_str() {
        "md5" => Verifier::Md5,
        _ => Verifier::ScramSha256 { iterations },
    };
    (
        ServerFacts {
            in_recovery: row.get("in_recovery"),
            read_only: row.get("read_only"),
            wal_lsn: row
                .get::<_, Option<String>>("lsn")
                .as_deref()
                .and_then(parse_lsn),
        },
        verifier,
    )
}

/// Everything about a user that is not a privilege: whether it exists, its
/// `VALID UNTIL`, its sessions, and facts from `pg_roles` (every column, so
/// an attribute a later PostgreSQL adds is compared too), `pg_db_role_setting`
/// (settings, per database too), `pg_auth_members` (memberships both ways,
/// with every option column) and `pg_shdepend` (ownership and policies in
/// this database; in other databases of the server, by database and kind).
const ROLE_FACTS_SQL: &str = r#"
WITH r AS (SELECT * FROM pg_roles WHERE rolname = $1),
     here AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT 'attribute'::text AS kind, a.key::text AS a, coalesce(a.value, 'null')::text AS b
  FROM r, jsonb_each_text(to_jsonb(r) - 'rolname' - 'oid' - 'rolpassword' - 'rolconfig') AS a
UNION ALL
SELECT 'setting', coalesce(d.datname::text, ''), c::text
  FROM r JOIN pg_db_role_setting s ON s.setrole = r.oid
  LEFT JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) AS c
UNION ALL
SELECT 'member of', g.rolname::text,
       (to_jsonb(m) - 'oid' - 'roleid' - 'member' - 'grantor')::text
  FROM r JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid
UNION ALL
SELECT 'has member', g.rolname::text,
       (to_jsonb(m) - 'oid' - 'roleid' - 'member' - 'grantor')::text
  FROM r JOIN pg_auth_members m ON m.roleid = r.oid JOIN pg_roles g ON g.oid = m.member
UNION ALL
SELECT 'depends ' || sd.deptype::text,
       CASE WHEN sd.dbid IN (0, (SELECT oid FROM here)) THEN ''
            ELSE coalesce(d.datname::text, sd.dbid::text) END,
       CASE WHEN sd.dbid IN (0, (SELECT oid FROM here))
            THEN coalesce(pg_describe_object(sd.classid, sd.objid, sd.objsubid), 'a dropped object')
            ELSE sd.classid::regclass::text END
  FROM r JOIN pg_shdepend sd
    ON sd.refclassid = 'pg_authid'::regclass AND sd.refobjid = r.oid
  LEFT JOIN pg_database d ON d.oid = sd.dbid
"#;

/// The catalogs of this server with an ACL column (`aclitem[]`): each row's
/// privileges are exploded for the user. Found, not listed, so a catalog a
/// later PostgreSQL adds (as 15 added `pg_parameter_acl`) is compared too.
const ACL_COLUMNS_SQL: &str = r#"
SELECT c.relname::text AS catalog, a.attname::text AS acl,
       EXISTS (SELECT 1 FROM pg_attribute o
                WHERE o.attrelid = c.oid AND o.attname = 'oid' AND o.attnum > 0 AND NOT o.attisdropped) AS has_oid
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r'
   AND a.atttypid = 'aclitem[]'::regtype
 ORDER BY 1, 2
"#;

/// One query over every ACL column: `(privilege, grantable, object)` for
/// each privilege granted to the role `$1` (directly; PUBLIC's and a
/// group's privileges are the same for both users). `pg_init_privs` holds
/// an extension's initial privileges, kept for pg_dump, not what is in
/// effect: left out.
fn acl_facts_sql(columns: &[(String, String, bool)]) -> Option<String> {
    let parts: Vec<String> = columns
        .iter()
        .filter(|(catalog, _, _)| catalog != "pg_init_privs")
        .map(|(catalog, acl, has_oid)| {
            let object = if catalog == "pg_attribute" {
                "pg_describe_object('pg_class'::regclass, t.attrelid, t.attnum)".to_string()
            } else if *has_oid {
                // Large objects are described as objects of pg_largeobject,
                // though their ACLs live in pg_largeobject_metadata.
                let class = match catalog.as_str() {
                    "pg_largeobject_metadata" => "pg_largeobject",
                    other => other,
                };
                format!("pg_describe_object('pg_catalog.{class}'::regclass, t.oid, 0)")
            } else {
                format!("'a row of {catalog}'")
            };
            format!(
                "SELECT x.privilege_type, x.is_grantable, coalesce({object}, 'a dropped object') FROM pg_catalog.{} t, aclexplode(t.{}) x WHERE x.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                quote_ident(catalog),
                quote_ident(acl)
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\nUNION ALL\n"))
}

/// An object's description with mentions of `role` itself written `<self>`
/// (`pg_describe_object` names them unquoted): the default privileges of
/// objects it creates, its user mappings. Only the whole name counts, so
/// `blue` does not touch `blue_owner`.
fn of_self(role: &str, description: &str) -> String {
    let mut out = description.to_string();
    for (before, after) in [("belonging to role ", " "), ("user mapping for ", " on ")] {
        let whole = format!("{before}{role}{after}");
        out = out.replace(&whole, &format!("{before}<self>{after}"));
        let at_end = format!("{before}{role}");
        if out.ends_with(&at_end) {
            out.truncate(out.len() - role.len());
            out.push_str("<self>");
        }
    }
    out
}

/// The comparable line of one `ROLE_FACTS_SQL` row of `role`, or `None` for
/// rows described in more detail elsewhere (ACL dependencies here: the
/// privileges themselves are facts). Mentions of the role itself in an
/// object's description are written `<self>`, so that blue's "user mapping
/// for blue" equals green's "user mapping for green".
fn role_fact(role: &str, kind: &str, a: &str, b: &str) -> Option<String> {
    let this = |object: &str| of_self(role, object);
    Some(match (kind, a) {
        // NULL and 'infinity' both mean the password never expires.
        ("attribute", "rolvaliduntil") if b == "null" || b == "infinity" => return None,
        ("attribute", key) => attribute(key, b),
        ("setting", "") => format!("setting {b}"),
        ("setting", db) => format!("setting {b} in database {db}"),
        ("member of" | "has member", other) => format!("{kind} {other} ({})", options(b)),
        ("depends a", "") => return None,
        ("depends o", "") => format!("owner of {}", this(b)),
        ("depends r", "") => format!("named in {}", this(b)),
        (kind, "") => format!("{kind} on {}", this(b)),
        ("depends o", db) => format!("in database {db}: owner of a {b} object"),
        ("depends a", db) => format!("in database {db}: in the ACL of a {b} object"),
        ("depends r", db) => format!("in database {db}: named in a {b} object"),
        (kind, db) => format!("in database {db}: {kind} on a {b} object"),
    })
}

/// A membership's options (every `pg_auth_members` column but the roles
/// and the grantor: `admin_option`, and from PostgreSQL 16 `inherit_option`
/// and `set_option`) as `admin_option=false, …`.
fn options(json: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => json.to_string(),
    }
}

/// A `pg_roles` column as the attribute clause of `CREATE ROLE` says it
/// (unknown columns as `name=value`).
fn attribute(key: &str, value: &str) -> String {
    let flag =
        |on: &str, off: &str| format!("attribute {}", if value == "true" { on } else { off });
    match key {
        "rolsuper" => flag("SUPERUSER", "NOSUPERUSER"),
        "rolinherit" => flag("INHERIT", "NOINHERIT"),
        "rolcreaterole" => flag("CREATEROLE", "NOCREATEROLE"),
        "rolcreatedb" => flag("CREATEDB", "NOCREATEDB"),
        "rolcanlogin" => flag("LOGIN", "NOLOGIN"),
        "rolreplication" => flag("REPLICATION", "NOREPLICATION"),
        "rolbypassrls" => flag("BYPASSRLS", "NOBYPASSRLS"),
        "rolconnlimit" => format!("attribute CONNECTION LIMIT {value}"),
        "rolvaliduntil" => format!("attribute VALID UNTIL {value}"),
        other => format!("attribute {other}={value}"),
    }
}

/// Counts the facts about other databases (one row per object there) into
/// one line per database and kind: `in database x: owner of 3 pg_class objects`.
fn summarise(facts: Vec<String>) -> Vec<String> {
    let mut counted: std::collections::BTreeMap<String, usize> = Default::default();
    for fact in facts {
        *counted.entry(fact).or_default() += 1;
    }
    let mut out: Vec<String> = counted
        .into_iter()
        .map(|(fact, n)| {
            if n == 1 || !fact.starts_with("in database ") {
                fact
            } else {
                format!("{} (×{n})", fact.replacen(" a ", " each ", 1))
            }
        })
        .collect();
    out.sort();
    out
}

#[async_trait]
impl Database for Postgres {
    async fn check_login(
        &self,
        endpoint: &Endpoint,
        user: &str,
        password: &Password,
    ) -> Result<ServerFacts, RotationError> {
        let client = self.connect(endpoint, user, password).await?;
        let row = client
            .query_one(SERVER_FACTS_SQL, &[])
            .await
            .map_err(|e| classify(user, endpoint, e))?;
        Ok(server_facts(&row).0)
    }

    async fn set_own_password(
        &self,
        endpoint: &Endpoint,
        user: &str,
        current: &Password,
        new: &Password,
    ) -> Result<(), RotationError> {
        let client = self.connect(endpoint, user, current).await?;
        let statement = format!(
            "ALTER ROLE CURRENT_USER PASSWORD '{}'",
            self.verifier(&client, endpoint, user, user, new).await?
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| classify_alter_role(user, user, false, endpoint, e))?;
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
            self.verifier(&client, endpoint, admin_user, role, new)
                .await?
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| classify_alter_role(admin_user, role, true, endpoint, e))?;
        Ok(())
    }

    async fn user_facts(
        &self,
        endpoint: &Endpoint,
        login_user: &str,
        login_password: &Password,
        users: &[&str],
    ) -> Result<Preflight, RotationError> {
        let client = self.connect(endpoint, login_user, login_password).await?;
        let failed = |e| classify(login_user, endpoint, e);
        let server = server_facts(
            &client
                .query_one(SERVER_FACTS_SQL, &[])
                .await
                .map_err(failed)?,
        )
        .0;
        let columns: Vec<(String, String, bool)> = client
            .query(ACL_COLUMNS_SQL, &[])
            .await
            .map_err(failed)?
            .iter()
            .map(|r| (r.get("catalog"), r.get("acl"), r.get("has_oid")))
            .collect();
        let acl = match acl_facts_sql(&columns) {
            Some(sql) => Some(client.prepare(&sql).await.map_err(failed)?),
            None => None,
        };
        let role_facts = client.prepare(ROLE_FACTS_SQL).await.map_err(failed)?;
        let about = client
            .prepare(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS exists,
                        (SELECT (extract(epoch FROM rolvaliduntil) * 1000)::float8 FROM pg_roles
                          WHERE rolname = $1 AND rolvaliduntil IS NOT NULL AND rolvaliduntil <> 'infinity') AS valid_until_ms,
                        (SELECT count(*) FROM pg_stat_activity
                          WHERE usename = $1 AND pid <> pg_backend_pid()) AS sessions",
            )
            .await
            .map_err(failed)?;
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let row = client.query_one(&about, &[user]).await.map_err(failed)?;
            let mut facts: Vec<String> = client
                .query(&role_facts, &[user])
                .await
                .map_err(failed)?
                .iter()
                .filter_map(|r| role_fact(user, r.get(0), r.get(1), r.get(2)))
                .collect();
            if let Some(acl) = &acl {
                for r in client.query(acl, &[user]).await.map_err(failed)? {
                    let (privilege, grantable, object): (String, bool, String) =
                        (r.get(0), r.get(1), r.get(2));
                    facts.push(format!(
                        "{privilege} on {}{}",
                        of_self(user, &object),
                        if grantable { " WITH GRANT OPTION" } else { "" }
                    ));
                }
            }
            out.push(UserFacts {
                exists: row.get("exists"),
                facts: summarise(facts),
                live_sessions: row.get("sessions"),
                valid_until_ms: row
                    .get::<_, Option<f64>>("valid_until_ms")
                    .map(|ms| ms as i64),
            });
        }
        Ok(Preflight { server, users: out })
    }
}

impl Postgres {
    /// The verifier of `new` for `role`, of the kind configured
    /// (`DB_PASSWORD_ENCRYPTION`) or, by default, the kind the server would
    /// store (`password_encryption`, `scram_iterations`), read in the session
    /// that will run the `ALTER ROLE`. Checked to hold only verifier
    /// characters before it goes into a literal (ALTER ROLE takes no bind
    /// parameters).
    async fn verifier(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        login: &str,
        role: &str,
        new: &Password,
    ) -> Result<String, RotationError> {
        let kind = match self.config.password_encryption {
            PasswordEncryption::ScramSha256 => Verifier::ScramSha256 {
                iterations: SCRAM_DEFAULT_ITERATIONS,
            },
            PasswordEncryption::Md5 => Verifier::Md5,
            PasswordEncryption::Auto => {
                let row = client
                    .query_one(SERVER_FACTS_SQL, &[])
                    .await
                    .map_err(|e| classify(login, endpoint, e))?;
                server_facts(&row).1
            }
        };
        checked_verifier(new.verifier(kind, role))
    }
}

/// A verifier is base64, hex, `$`, `:` and its prefix only: checked rather
/// than assumed before it goes into a literal.
fn checked_verifier(v: String) -> Result<String, RotationError> {
    let shape = v.starts_with("SCRAM-SHA-256$") || (v.starts_with("md5") && v.len() == 35);
    if shape
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "$:+/=-".contains(c))
    {
        Ok(v)
    } else {
        Err(RotationError::Database("unexpected verifier format".into()))
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
        let p = Password::new("x".repeat(32));
        for kind in [
            Verifier::Md5,
            Verifier::ScramSha256 { iterations: 4096 },
            Verifier::ScramSha256 { iterations: 10_000 },
        ] {
            checked_verifier(p.verifier(kind, "green")).unwrap();
        }
        assert!(checked_verifier("SCRAM-SHA-256$1:a'; DROP".into()).is_err());
        assert!(checked_verifier("plaintext".into()).is_err());
    }

    #[test]
    fn lsns_are_byte_offsets() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn role_facts_name_no_user_and_count_other_databases() {
        assert_eq!(
            role_fact("blue", "attribute", "rolcanlogin", "true").as_deref(),
            Some("attribute LOGIN")
        );
        assert_eq!(
            role_fact("blue", "attribute", "rolsomethingnew", "7").as_deref(),
            Some("attribute rolsomethingnew=7")
        );
        assert_eq!(
            role_fact("blue", "depends o", "", "user mapping for blue on server s").as_deref(),
            Some("owner of user mapping for <self> on server s")
        );
        assert_eq!(role_fact("blue", "depends a", "", "table t"), None);
        assert_eq!(
            of_self(
                "blue",
                "default privileges on new relations belonging to role blue"
            ),
            "default privileges on new relations belonging to role <self>"
        );
        assert_eq!(
            of_self(
                "blue",
                "default privileges on new relations belonging to role blue_owner in schema s"
            ),
            "default privileges on new relations belonging to role blue_owner in schema s"
        );
        assert_eq!(
            of_self(
                "blue",
                "default privileges on new relations belonging to role blue in schema s"
            ),
            "default privileges on new relations belonging to role <self> in schema s"
        );
        let other = role_fact("blue", "depends o", "other", "pg_class").unwrap();
        assert_eq!(
            summarise(vec![other.clone(), other]),
            ["in database other: owner of each pg_class object (×2)"]
        );
    }
}
