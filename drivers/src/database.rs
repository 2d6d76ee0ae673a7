//! The driver-neutral connection handle.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pool::PoolStatus;
use crate::query::Interrupt;
use crate::sqlite::SqliteDb;
use crate::{
    DatabaseSchema, DbKind, DriverError, OdbcDialect, Password, QueryOptions, QueryStats, RowSink, Secret,
};

/// Connection pool limits of one database (spec §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections kept open even when idle (clamped to `max_connections`); opened in the
    /// background after [`Database::open`], so a database that is down does not stop it.
    pub min_connections: u32,
    /// Upper bound on open connections; at least 1. The pool grows towards it one connection
    /// per query waiting for one, and closes idle ones again after `idle_timeout`.
    pub max_connections: u32,
    /// How long a query waits for a free connection before [`DriverError::PoolExhausted`];
    /// must not be zero.
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and replaced; zero means never.
    pub max_lifetime: Duration,
    /// Idle connections above `min_connections` are closed after this; zero means never.
    pub idle_timeout: Duration,
    /// A connection idle for longer than this answers `SELECT 1` before it is handed out
    /// (network drivers; SQLite files need none).
    pub health_check_interval: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            min_connections: 2,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(5 * 60),
            health_check_interval: Duration::from_secs(2 * 60),
        }
    }
}

/// Whether a PostgreSQL or MySQL/MariaDB connection uses TLS, and what it checks (the
/// libpq modes; config spelling `disable`, `prefer`, `require`, `verify-ca`, `verify-full`).
///
/// TLS runs on rustls (TLS 1.3 preferred, 1.2 accepted). Only the `verify-*` modes stop an
/// active man in the middle (`verify-ca` only while the CA signs nothing but database
/// servers): `prefer` and `require` encrypt without checking who answers, and `prefer` falls
/// back to a plain connection when the server (or someone in between) says it has no TLS.
/// ODBC connections set TLS in the ODBC driver's own options instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain otherwise.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (encryption against passive
    /// eavesdroppers only).
    Require,
    /// TLS, and the server's certificate must chain to the CA in `ssl_root_cert` (required);
    /// the host name is not compared. PostgreSQL only: the MySQL client also trusts the public
    /// Web PKI roots, which would make a chain-only check accept any public certificate.
    VerifyCa,
    /// TLS, a certificate chaining to `ssl_root_cert` (or, without it, to the public Web PKI
    /// roots), issued for the host name connected to. The MySQL client trusts the public roots
    /// in addition to `ssl_root_cert`.
    VerifyFull,
}

impl SslMode {
    /// Every mode, weakest first.
    pub const ALL: [SslMode; 5] =
        [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection fails rather than run without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s.to_ascii_lowercase()).ok_or_else(|| {
            format!("unknown sslMode `{s}` (expected disable, prefer, require, verify-ca or verify-full)")
        })
    }
}

/// Everything needed to open one configured database.
///
/// Build it with a struct literal ending in `..ConnectionSpec::default()`; fields a database
/// type does not use are ignored. Secrets (`password`, `connection_string`) never show in
/// `Debug` output or error messages.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// Name of the connection, as the cloud console addresses it.
    pub name: String,
    /// Engine.
    pub kind: DbKind,
    /// SQLite: path of the database file.
    pub path: PathBuf,
    /// Pool limits.
    pub pool: PoolSettings,
    /// PostgreSQL / MySQL: server host name or address (default `localhost`).
    pub host: Option<String>,
    /// PostgreSQL / MySQL: TCP port (default 5432 / 3306).
    pub port: Option<u16>,
    /// PostgreSQL / MySQL: database (schema) name.
    pub database: Option<String>,
    /// User name.
    pub user: Option<String>,
    /// Password, from the vault or an interim `env:`/`file:` reference.
    pub password: Password,
    /// A driver connection string instead of host/port/...: a `postgres://` or
    /// `host=... dbname=...` string, a `mysql://` URL, or an ODBC connection string.
    pub connection_string: Option<Secret>,
    /// ODBC: data source name from `odbc.ini`.
    pub dsn: Option<String>,
    /// PostgreSQL / MySQL: TLS policy.
    pub ssl_mode: SslMode,
    /// PostgreSQL / MySQL: PEM file of the CA certificate(s) the server's certificate must
    /// chain to (`sslRootCert`); for `verify-ca` and `verify-full` only.
    pub ssl_root_cert: Option<PathBuf>,
    /// PostgreSQL / MySQL: whether the password may be sent in clear text (PostgreSQL
    /// `password` authentication, MySQL `mysql_clear_password`) over a connection without TLS
    /// (`allowCleartextPassword`). Off by default: such a server is refused at connect.
    pub allow_cleartext_password: bool,
    /// ODBC: which database is behind the DSN (catalogue SQL, session setup, type names).
    pub dialect: Option<OdbcDialect>,
    /// Tally: the company the XML gateway exports from (`SVCURRENTCOMPANY`); without it, the
    /// company loaded in TallyPrime.
    pub company: Option<String>,
}

impl Default for ConnectionSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: DbKind::Sqlite,
            path: PathBuf::new(),
            pool: PoolSettings::default(),
            host: None,
            port: None,
            database: None,
            user: None,
            password: Password::None,
            connection_string: None,
            dsn: None,
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
            allow_cleartext_password: false,
            dialect: None,
            company: None,
        }
    }
}

impl ConnectionSpec {
    /// Checks that the fields the database type needs are there (no connection is made).
    ///
    /// `sqlite` needs `path`; `postgres` and `mysql` need `host` or `connection_string`, and
    /// a `user` unless the connection string names one; `odbc` needs `dsn` or
    /// `connection_string`. The message names the field in the config's spelling.
    pub fn validate(&self) -> Result<(), String> {
        let cs = self.connection_string.as_ref().map(|c| c.expose());
        match self.kind {
            DbKind::Sqlite if self.path.as_os_str().is_empty() => Err("`path` is required for sqlite".into()),
            DbKind::Sqlite => Ok(()),
            DbKind::Postgres | DbKind::Mysql => {
                if self.host.is_none() && cs.is_none() {
                    return Err(format!("`host` or `connectionString` is required for {}", self.kind));
                }
                if self.user.is_none() && !cs.is_some_and(|c| c.contains("user") || c.contains('@')) {
                    return Err(format!("`user` is required for {}", self.kind));
                }
                if self.dsn.is_some() || self.dialect.is_some() {
                    return Err(format!("`dsn` and `dialect` are for odbc connections, not {}", self.kind));
                }
                self.validate_tls()
            }
            DbKind::Odbc if self.dsn.is_none() && cs.is_none() => {
                Err("`dsn` or `connectionString` is required for odbc".into())
            }
            DbKind::Odbc if self.ssl_mode.requires_tls() || self.ssl_root_cert.is_some() => {
                Err("odbc connections take TLS settings from the ODBC driver's own options (e.g. psqlODBC \
                 `SSLMode=verify-full`, MariaDB `SSLVERIFY=1`), not `sslMode`/`sslRootCert`"
                    .into())
            }
            DbKind::Odbc => Ok(()),
            DbKind::Mongodb if self.host.is_none() && cs.is_none() => {
                Err("`host` or `connectionString` is required for mongodb".into())
            }
            DbKind::Mongodb => Ok(()),
            // TallyPrime's XML gateway: `host` defaults to localhost, `port` to 9000.
            DbKind::Tally if !matches!(self.password, Password::None) => {
                Err("tally takes no password: TallyPrime's XML gateway has no login".into())
            }
            DbKind::Tally if cs.is_some() || self.dsn.is_some() => {
                Err("tally takes `host`, `port` and `company`, not `connectionString` or `dsn`".into())
            }
            DbKind::Tally => Ok(()),
        }
    }

    /// The TLS settings of a PostgreSQL / MySQL connection fit together.
    fn validate_tls(&self) -> Result<(), String> {
        match (self.ssl_mode, &self.ssl_root_cert) {
            (SslMode::VerifyCa, None) => {
                Err("sslMode verify-ca needs `sslRootCert` (the CA the server certificate must chain to)"
                    .into())
            }
            (SslMode::VerifyCa, Some(_)) if self.kind == DbKind::Mysql => {
                Err("sslMode verify-ca is not available for mysql: the MySQL client also trusts the public \
                 Web PKI roots, so a chain-only check would accept any publicly issued certificate; \
                 use verify-full (with `sslRootCert`)"
                    .into())
            }
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, Some(_)) => Err(format!(
                "`sslRootCert` is only used by sslMode verify-ca and verify-full, not {}",
                self.ssl_mode
            )),
            _ => Ok(()),
        }
    }
}

/// Whether a connection string carries a password (`password=`, `pwd=`, or
/// `scheme://user:password@host`); configuration files must use `passwordRef` instead.
pub fn connection_string_has_password(connection_string: &str) -> bool {
    let lower = connection_string.to_ascii_lowercase();
    let key_value = lower
        .split(|c: char| c == ';' || c.is_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| matches!(k.trim(), "password" | "pwd") && !v.trim().is_empty());
    let url_userinfo = lower
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    key_value || url_userinfo
}

/// Progress of a running schema discovery, for the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryProgress {
    /// Tables and views described so far.
    pub done: usize,
    /// Tables and views in total, once known.
    pub total: Option<usize>,
}

/// Whether the connection's user could change data, and how to fix it (issue 3 §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegeReport {
    /// The database user the connection logs in as.
    pub user: String,
    /// Whether anything below lets the user write; the session layer stays read-only anyway.
    pub can_write: bool,
    /// Superuser / administrator rights.
    pub superuser: bool,
    /// What was found, one line each, sorted (e.g. `INSERT on public.orders`,
    /// `owns table public.customers`); at most 50 lines plus a `... and N more` line.
    pub findings: Vec<String>,
    /// SQL an administrator can run to create a SELECT-only user for this database type.
    pub suggested_sql: String,
}

/// What every engine implements; [`Database`] dispatches to it.
pub(crate) trait Driver: Send + Sync {
    /// One cheap round trip; `Unavailable` when no connection can be made.
    fn ping(&self) -> Result<(), DriverError>;
    /// See [`Database::cancel_server_session`]; engines without server sessions cannot tell.
    fn cancel_server_session(&self, _session: &str) -> Result<bool, DriverError> {
        Ok(false)
    }
    fn pool_status(&self) -> PoolStatus;
    fn query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError>;
    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError>;
    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError>;
    /// The SQL dialect of the engine (picks the gate dialect a query must be checked in).
    fn sql_dialect(&self) -> OdbcDialect;
    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A pooled, read-only handle on one database; cheap to clone and shared across threads.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    kind: DbKind,
    driver: Box<dyn Driver>,
}

impl Database {
    /// Checks the settings and opens the pool; a network database is not contacted here.
    ///
    /// A PostgreSQL, MySQL/MariaDB or ODBC database that is down, unreachable or refuses the
    /// login does not fail `open`: the pool connects in the background, and a query (or
    /// [`check_health`](Self::check_health)) made while no connection can be made fails with
    /// [`DriverError::Unavailable`] naming the cause (`cannot reach the server ...`,
    /// `authentication failed ...`, `database "x" does not exist`, `the server requires TLS
    /// ...`, `ODBC driver ... not found`), never the password. Once the database is back the
    /// same handle works again, no reopening needed. `open` itself fails with
    /// [`DriverError::Open`] only for what no server can fix: settings that do not fit
    /// together, an unreadable CA file or password reference, a connection string that does not
    /// parse, a missing SQLite file (`database file not found: ...`; files are never created)
    /// or one that is not a database.
    pub fn open(spec: &ConnectionSpec) -> Result<Database, DriverError> {
        spec.validate().map_err(|e| DriverError::Open(format!("{}: {e}", spec.name)))?;
        let driver: Box<dyn Driver> = match spec.kind {
            DbKind::Sqlite => Box::new(SqliteDb::open(&spec.path, &spec.pool)?),
            DbKind::Postgres => Box::new(crate::postgres::PgDb::open(spec)?),
            DbKind::Mysql => Box::new(crate::mysql::MyDb::open(spec)?),
            #[cfg(feature = "odbc")]
            DbKind::Odbc => Box::new(crate::odbc::OdbcDb::open(spec)?),
            #[cfg(not(feature = "odbc"))]
            DbKind::Odbc => {
                return Err(DriverError::UnsupportedKind("odbc (this build has no ODBC support)".into()));
            }
            DbKind::Mongodb => crate::mongodb::MongoDb::open(spec)?,
            DbKind::Tally => crate::tally::TallyDb::open(spec)?,
        };
        tracing::debug!(name = %spec.name, kind = %spec.kind, "database opened");
        Ok(Database { inner: Arc::new(Inner { name: spec.name.clone(), kind: spec.kind, driver }) })
    }

    /// Name of the connection.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Engine of the connection.
    pub fn kind(&self) -> DbKind {
        self.inner.kind
    }

    /// The SQL dialect of the engine behind the connection (for ODBC, the configured one).
    pub fn dialect(&self) -> OdbcDialect {
        self.inner.driver.sql_dialect()
    }

    /// Checks that a pooled connection answers `SELECT 1`; the same as
    /// [`check_health`](Self::check_health).
    pub fn ping(&self) -> Result<(), DriverError> {
        self.inner.driver.ping()
    }

    /// One cheap round trip (`SELECT 1`, or the dialect's ping) to tell whether the database
    /// can be used now: [`DriverError::Unavailable`] when no connection can be made (the agent
    /// retries unhealthy databases with it). Dead pooled connections (server restart) are
    /// replaced on the way, so a database that is back answers `Ok` at the first call.
    pub fn check_health(&self) -> Result<(), DriverError> {
        self.inner.driver.ping()
    }

    /// Stops, on the server, whatever the server session `session` still runs — the id a
    /// [`RowSink::started`] call received, e.g. from a run of an agent process that crashed —
    /// and says whether that is proven.
    ///
    /// `Ok(true)`: no statement of that session runs any more (it was ended and is gone from
    /// the server's session list, or it was not there at all: finished, or the server
    /// restarted). `Ok(false)`: it cannot be told (the session is still listed after a few
    /// seconds, this login may not end it, or the engine has no server sessions: SQLite, ODBC).
    /// PostgreSQL (`pg:<pid>:<backend start>`) ends the backend with `pg_terminate_backend`
    /// only when both its pid and its start time match, so a recycled pid is never hit; MySQL /
    /// MariaDB (`mysql:<connection id>:<server start>`) answers `true` at once when the server
    /// restarted since (connection ids start again from 1 then), else runs `KILL CONNECTION`
    /// and watches the process list.
    /// Both work for the connection's own (non-superuser) login, which owns the sessions its
    /// queries ran in. An id that is not of this engine's form is [`DriverError::Bind`]; a
    /// database that cannot be reached is [`DriverError::Unavailable`].
    pub fn cancel_server_session(&self, session: &str) -> Result<bool, DriverError> {
        self.inner.driver.cancel_server_session(session)
    }

    /// Open and idle connections of the pool now.
    pub fn pool_status(&self) -> PoolStatus {
        self.inner.driver.pool_status()
    }

    /// Reads tables, views, columns, keys and row count estimates; never reads row data.
    pub fn discover(&self) -> Result<DatabaseSchema, DriverError> {
        self.inner.driver.discover(&self.inner.name, &mut |_| {})
    }

    /// Like [`discover`](Self::discover), reporting progress as tables are described.
    pub fn discover_with_progress(
        &self,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        self.inner.driver.discover(&self.inner.name, progress)
    }

    /// Whether the connection's user holds write privileges (superuser, INSERT/UPDATE/DELETE
    /// grants, ownership), with the SQL to create a SELECT-only user instead.
    pub fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        self.inner.driver.write_privileges()
    }

    /// What the read-only gate must judge a text for on this database: the engine's dialect
    /// and the driver's placeholder style (the native PostgreSQL driver binds only `$n`).
    pub fn gate_target(&self) -> gate::Target {
        let dialect = self.dialect().gate_dialect();
        let placeholders = match self.inner.kind {
            DbKind::Mongodb => return gate::Target::MONGO,
            DbKind::Tally => return gate::Target::TALLY,
            DbKind::Postgres => gate::Placeholders::Dollar,
            _ => gate::Placeholders::Question,
        };
        gate::Target { dialect, placeholders, language: gate::Language::Sql }
    }

    /// Runs one query the read-only gate approved, with positional `params`, and pushes its
    /// rows into `sink`.
    ///
    /// The text run is exactly [`gate::Checked::sql`]: the driver never rewrites it (the gate
    /// already turned PostgreSQL `?` placeholders into `$n` before judging). Placeholders are
    /// `?` for every engine (PostgreSQL also takes `$1`...). A verdict reached in another
    /// dialect than this engine's is refused with [`DriverError::WriteRejected`]. The query
    /// runs in a read-only transaction. Rows are streamed, never buffered; the call returns when
    /// the result is exhausted or fails with [`DriverError::Timeout`], [`DriverError::Cancelled`],
    /// [`DriverError::Sink`]...
    pub fn query(
        &self,
        checked: &gate::Checked,
        params: &[serde_json::Value],
        opts: &QueryOptions,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let interrupt = Interrupt::new(opts, Instant::now());
        if checked.target() != self.gate_target() {
            return Err(DriverError::WriteRejected(format!(
                "the query was checked for {:?} but this connection needs {:?}",
                checked.target(),
                self.gate_target()
            )));
        }
        interrupt.check()?;
        self.inner.driver.query(checked.sql(), params, &interrupt, sink)
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Database {
    /// The SQLite backend, for white-box tests.
    pub(crate) fn sqlite(&self) -> &SqliteDb {
        self.inner.driver.as_any().downcast_ref().expect("a SQLite database")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _assert_send_sync() {
        fn is<T: Send + Sync + Clone + 'static>() {}
        is::<Database>();
    }

    #[test]
    fn pool_defaults_match_spec() {
        let p = PoolSettings::default();
        assert_eq!((p.min_connections, p.max_connections), (2, 10));
        assert_eq!(p.acquire_timeout, Duration::from_secs(10));
        assert_eq!(p.max_lifetime, Duration::from_secs(1800));
        assert_eq!(p.idle_timeout, Duration::from_secs(300));
        assert_eq!(p.health_check_interval, Duration::from_secs(120));
    }

    #[test]
    fn specs_are_validated_per_type() {
        let pg = ConnectionSpec { kind: DbKind::Postgres, ..ConnectionSpec::default() };
        assert_eq!(pg.validate().unwrap_err(), "`host` or `connectionString` is required for postgres");
        let pg = ConnectionSpec { host: Some("db".into()), ..pg };
        assert_eq!(pg.validate().unwrap_err(), "`user` is required for postgres");
        assert!(ConnectionSpec { user: Some("ro".into()), ..pg }.validate().is_ok());
        let odbc = ConnectionSpec { kind: DbKind::Odbc, ..ConnectionSpec::default() };
        assert!(odbc.validate().is_err());
        assert!(ConnectionSpec { dsn: Some("erp".into()), ..odbc }.validate().is_ok());
        assert!(ConnectionSpec::default().validate().is_err(), "sqlite without path");
        let mongo = ConnectionSpec { kind: DbKind::Mongodb, ..ConnectionSpec::default() };
        assert_eq!(mongo.validate().unwrap_err(), "`host` or `connectionString` is required for mongodb");
        assert!(ConnectionSpec { host: Some("db".into()), ..mongo }.validate().is_ok());
        let tally = ConnectionSpec { kind: DbKind::Tally, ..ConnectionSpec::default() };
        assert!(tally.validate().is_ok(), "host and port have defaults");
        let with_password = ConnectionSpec { password: Password::Value(Secret::new("x")), ..tally.clone() };
        assert_eq!(
            with_password.validate().unwrap_err(),
            "tally takes no password: TallyPrime's XML gateway has no login"
        );
        let with_dsn = ConnectionSpec { dsn: Some("erp".into()), ..tally };
        assert!(with_dsn.validate().unwrap_err().contains("not `connectionString` or `dsn`"));
        let err = Database::open(&ConnectionSpec {
            name: "x".into(),
            kind: DbKind::Mysql,
            ..ConnectionSpec::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "open failed: x: `host` or `connectionString` is required for mysql");
    }

    #[test]
    fn passwords_in_connection_strings_are_detected() {
        for cs in [
            "host=db user=ro password=x",
            "Driver={ODBC Driver 18};Server=db;UID=ro;PWD={p;w}",
            "postgres://ro:secret@db/erp",
            "mysql://ro:secret@db:3306/erp",
        ] {
            assert!(connection_string_has_password(cs), "{cs}");
        }
        for cs in ["host=db user=ro dbname=erp", "DSN=erp;UID=ro", "postgres://ro@db/erp", "mysql://db/erp"] {
            assert!(!connection_string_has_password(cs), "{cs}");
        }
    }

    #[test]
    fn spec_debug_hides_secrets() {
        let spec = ConnectionSpec {
            password: Password::Value(Secret::new("hunter2")),
            connection_string: Some(Secret::new("host=x password=hunter2")),
            ..ConnectionSpec::default()
        };
        let debug = format!("{spec:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"));
    }
}
