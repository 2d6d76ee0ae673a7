//! MySQL / MariaDB: an r2d2 pool of `mysql` connections in read-only sessions.
//!
//! Session layer: every connection runs [`session_setup`]: `SET SESSION TRANSACTION READ
//! ONLY`, `time_zone = '+00:00'` (so `TIMESTAMP` values are UTC instants), and a `sql_mode`
//! without `NO_BACKSLASH_ESCAPES` and `ANSI_QUOTES` (nor the combination modes that imply
//! them), whatever the server's global mode: the gate lexes backslash escapes and
//! double-quoted strings the default way. Every query runs in `START TRANSACTION READ ONLY`
//! with the server-side limit set to the time left before its deadline (`max_statement_time`
//! on MariaDB, `max_execution_time` on MySQL). A write that slips past the text check fails
//! with error 1792; cancel runs `KILL QUERY <id>` from a second connection. When a connection
//! returns to the pool it is reset (`COM_RESET_CONNECTION`: `GET_LOCK` locks, user variables
//! and session settings go) and the session setup runs again. Queries always go through the
//! binary protocol (prepared statements), which never runs more than one statement, and rows
//! stream one by one from the socket.
//!
//! Every query hands `mysql:<connection id>:<server start>` to [`RowSink::started`] before the
//! statement is sent (the server's start time, read once per connection from the `Uptime`
//! status, because connection ids start again from 1 after a server restart);
//! `cancel_server_session` answers `true` at once for an id of an earlier server run, and
//! otherwise runs `KILL CONNECTION` and watches the process list.
//!
//! TLS: the `mysql` crate's rustls support (ring), per [`SslMode`]: `prefer` tries TLS and
//! falls back to plain only when the server has none; `verify-ca` is refused at validation
//! (the crate always adds the public Web PKI roots, so a chain-only check would pass any
//! public certificate). The `mysql_clear_password` plugin is enabled only on TLS connections
//! or with `allow_cleartext_password`. Known limit: `caching_sha2_password` (MySQL 8) on a
//! plain connection encrypts the password with a public key the server sends, which an active
//! man in the middle can replace; use TLS.

use std::fmt::Write;
use std::time::Duration;

use mysql::consts::{ColumnFlags, ColumnType};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, SslOpts, Value};

use crate::alarm::Alarm;
use crate::catalog::{TextRows, TextSink};
use crate::database::Driver;
use crate::pool::{DbPool, Pooled, Session};
use crate::query::Interrupt;
use crate::rowbuf::{Filler, RowBuf};
use crate::secret::scrub;
use crate::temporal::{write_hms, write_ymd};
use crate::{
    Cell, ColumnMeta, ConnectionSpec, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, OdbcDialect,
    PrivilegeReport, QueryStats, RowSink, Secret, SslMode, WireType,
};

const BACKSTOP: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Driver::cancel_server_session`] waits for a killed session to leave the process
/// list, and how often it looks.
const SESSION_GONE_WITHIN: Duration = Duration::from_secs(5);
const SESSION_POLL: Duration = Duration::from_millis(50);

/// MySQL error codes the driver maps.
mod code {
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const UNKNOWN_THREAD: u16 = 1094;
    pub const NOT_OWNER: u16 = 1095;
    pub const QUERY_INTERRUPTED: u16 = 1317;
    pub const MARIADB_STATEMENT_TIMEOUT: u16 = 1969;
    pub const MYSQL_QUERY_TIMEOUT: u16 = 3024;
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
}

/// Takes out of the session's `sql_mode` the two modes that change how string literals and
/// double quotes lex, and the combination modes that would bring them back; everything else
/// is kept. Also run on ODBC connections with the MySQL dialect.
pub(crate) const PIN_SQL_MODE: &str = "SET SESSION sql_mode = TRIM(BOTH ',' FROM \
     REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE( \
     CONCAT(',', @@SESSION.sql_mode, ','), \
     ',NO_BACKSLASH_ESCAPES,', ','), ',ANSI_QUOTES,', ','), ',ANSI,', ','), ',ORACLE,', ','), \
     ',MSSQL,', ','), ',DB2,', ','), ',POSTGRESQL,', ','), ',MAXDB,', ','))";

/// The session setup of every connection, at connect and after each reset (one round trip).
fn session_setup() -> String {
    format!("SET SESSION TRANSACTION READ ONLY; SET time_zone = '+00:00', NAMES utf8mb4; {PIN_SQL_MODE}")
}

/// Modes the gate's lexer cannot live with; checked after [`session_setup`] at connect.
const FORBIDDEN_MODES: [&str; 2] = ["NO_BACKSLASH_ESCAPES", "ANSI_QUOTES"];

pub(crate) struct MySession {
    conn: Conn,
    mariadb: bool,
    /// `mysql:<connection id>:<server start>` (see [`RowSink::started`]).
    server_session: String,
}

/// When the server started, in whole seconds since the epoch (`UNIX_TIMESTAMP()` minus the
/// `Uptime` status; ±1 s); `None` where the status table cannot be read.
fn server_start(conn: &mut Conn, mariadb: bool) -> Option<i64> {
    let table = if mariadb { "information_schema.GLOBAL_STATUS" } else { "performance_schema.global_status" };
    let sql = format!(
        "SELECT CAST(UNIX_TIMESTAMP() AS SIGNED) - CAST(VARIABLE_VALUE AS SIGNED) FROM {table} \
         WHERE UPPER(VARIABLE_NAME) = 'UPTIME'"
    );
    conn.query_first(sql)
        .inspect_err(|e| tracing::debug!(error = %e, "server start time unknown"))
        .ok()
        .flatten()
}

/// The server session id of `conn`: the connection id, and when known the server's start, so
/// an id recorded before a server restart (ids start again from 1) is never taken for a newer
/// session.
fn session_id(id: u32, server_start: Option<i64>) -> String {
    match server_start {
        Some(start) => format!("mysql:{id}:{start}"),
        None => format!("mysql:{id}"),
    }
}

/// The connection id and server start of a `mysql:<id>[:<start>]` session id.
fn parse_session(session: &str) -> Result<(u64, Option<i64>), DriverError> {
    let bad = || DriverError::Bind(format!("`{session}` is not a mysql server session id"));
    let rest = session.strip_prefix("mysql:").ok_or_else(bad)?;
    match rest.split_once(':') {
        Some((id, start)) => Ok((id.parse().map_err(|_| bad())?, Some(start.parse().map_err(|_| bad())?))),
        None => Ok((rest.parse().map_err(|_| bad())?, None)),
    }
}

/// Server start times read at different moments differ by up to a second or two (`Uptime`
/// has whole seconds); a restart moves it by more.
const SAME_SERVER_START: i64 = 3;

impl Session for MySession {
    fn ping(&mut self) -> Result<(), DriverError> {
        self.conn.query_drop("SELECT 1").map_err(|e| DriverError::Query(e.to_string()))
    }

    /// `COM_RESET_CONNECTION` (releases `GET_LOCK` locks, drops user variables and session
    /// settings), then the crate re-runs the init commands, i.e. [`session_setup`].
    fn reset(&mut self) -> Result<(), DriverError> {
        self.conn.reset().map_err(|e| DriverError::Query(e.to_string()))
    }
}

/// Fails when the session still has a mode the gate cannot lex under.
fn check_sql_mode(conn: &mut Conn, target: &str) -> Result<(), DriverError> {
    let mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .map_err(|e| DriverError::Open(format!("mysql {target}: reading sql_mode: {e}")))?;
    let mode = mode.unwrap_or_default();
    if let Some(bad) = mode.split(',').find(|m| FORBIDDEN_MODES.contains(&m.trim())) {
        return Err(DriverError::Open(format!(
            "mysql {target}: the session keeps sql_mode {bad} after setup ({mode}); refused"
        )));
    }
    Ok(())
}

pub(crate) struct MyDb {
    pool: DbPool<MySession>,
    opts: Opts,
    database: String,
}

impl MyDb {
    pub(crate) fn open(spec: &ConnectionSpec) -> Result<Self, DriverError> {
        let password = spec.password.resolve()?;
        let (opts, plain, target) = opts(spec, password.as_ref())?;
        let secrets: Vec<Secret> = password.into_iter().chain(spec.connection_string.clone()).collect();
        let database = opts.get_db_name().unwrap_or_default().to_owned();
        let connect_opts = opts.clone();
        let mode = spec.ssl_mode;
        let pool = DbPool::open(&spec.pool, move || {
            let refs: Vec<&Secret> = secrets.iter().collect();
            let scrubbed = |e: mysql::Error| match connect_error(&e, &target, mode) {
                DriverError::Open(m) => DriverError::Unavailable(scrub(m, &refs)),
                other => other,
            };
            let mut conn = match (Conn::new(connect_opts.clone()), &plain) {
                // `prefer`: plain only when the server does not offer TLS at all.
                (Err(mysql::Error::DriverError(mysql::DriverError::TlsNotSupported)), Some(plain)) => {
                    Conn::new(plain.clone()).map_err(scrubbed)?
                }
                (result, _) => result.map_err(scrubbed)?,
            };
            check_sql_mode(&mut conn, &target)?;
            let version: Option<String> =
                conn.query_first("SELECT VERSION()").map_err(|e| DriverError::Unavailable(e.to_string()))?;
            let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
            let server_session = session_id(conn.connection_id(), server_start(&mut conn, mariadb));
            Ok(MySession { conn, mariadb, server_session })
        })?;
        Ok(Self { pool, opts, database })
    }
}

/// The connection options, plus for `prefer` the plain fallback used when the server offers no
/// TLS; `target` names the server in error messages.
fn opts(
    spec: &ConnectionSpec,
    password: Option<&Secret>,
) -> Result<(Opts, Option<Opts>, String), DriverError> {
    let base = match &spec.connection_string {
        Some(cs) => OptsBuilder::from_opts(Opts::from_url(cs.expose()).map_err(|_| {
            DriverError::Open("mysql: the connection string is not a valid mysql:// URL".into())
        })?),
        None => OptsBuilder::new()
            .ip_or_hostname(Some(spec.host.clone().unwrap_or_else(|| "localhost".into())))
            .tcp_port(spec.port.unwrap_or(3306))
            .db_name(spec.database.clone()),
    };
    let mut builder = base;
    if let Some(user) = &spec.user {
        builder = builder.user(Some(user.clone()));
    }
    if let Some(password) = password {
        builder = builder.pass(Some(password.expose().to_owned()));
    }
    let builder = builder
        .prefer_socket(false)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .tcp_keepalive_time_ms(Some(60_000))
        .stmt_cache_size(Some(32))
        .init(vec![session_setup()]);
    let ssl = match spec.ssl_mode {
        SslMode::Disable => None,
        // Encryption only: any certificate, any name.
        SslMode::Prefer | SslMode::Require => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::VerifyCa => {
            return Err(DriverError::Open(
                "mysql: sslMode verify-ca is not available; use verify-full".into(),
            ));
        }
        SslMode::VerifyFull => {
            if let Some(path) = &spec.ssl_root_cert {
                // The crate reads the file at each connect; check it now for a clear error.
                crate::tls::load_roots(path)?;
            }
            Some(SslOpts::default().with_root_cert_path(spec.ssl_root_cert.clone()))
        }
    };
    // The password in clear only inside TLS, or where the connection allows it.
    let plain = (spec.ssl_mode == SslMode::Prefer)
        .then(|| Opts::from(builder.clone().enable_cleartext_plugin(spec.allow_cleartext_password)));
    let cleartext = spec.allow_cleartext_password || ssl.is_some();
    let opts = Opts::from(builder.ssl_opts(ssl).enable_cleartext_plugin(cleartext));
    let target = format!("{}:{}", opts.get_ip_or_hostname(), opts.get_tcp_port());
    Ok((opts, plain, target))
}

fn connect_error(e: &mysql::Error, target: &str, mode: SslMode) -> DriverError {
    let specific = match e {
        mysql::Error::MySqlError(m) => match m.code {
            code::ACCESS_DENIED => format!("authentication failed: {}", m.message),
            code::BAD_DB => m.message.clone(),
            code::SECURE_TRANSPORT_REQUIRED => format!(
                "the server requires TLS ({}); set sslMode require or verify-full (now {mode})",
                m.message
            ),
            _ if m.message.contains("insecure transport") || m.message.contains("SSL") => format!(
                "the server requires TLS ({}); set sslMode require or verify-full (now {mode})",
                m.message
            ),
            c => format!("{} (error {c})", m.message),
        },
        mysql::Error::DriverError(mysql::DriverError::TlsNotSupported) => {
            format!("the server does not offer TLS (sslMode {mode})")
        }
        mysql::Error::DriverError(mysql::DriverError::CleartextPluginDisabled) => cleartext_refused(),
        mysql::Error::DriverError(mysql::DriverError::UnknownAuthPlugin(name))
            if name == "mysql_clear_password" =>
        {
            cleartext_refused()
        }
        mysql::Error::TlsError(tls) => format!("TLS (sslMode {mode}) failed: {tls}"),
        mysql::Error::IoError(io) if io.to_string().contains("certificate") => {
            format!("TLS (sslMode {mode}) failed: {io}")
        }
        mysql::Error::IoError(io) => format!("cannot reach the server: {io}"),
        // rustls reports a refused certificate from inside the stream (`CodecError`/`IoError`).
        other if other.to_string().contains("certificate") => format!("TLS (sslMode {mode}) failed: {other}"),
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((_, detail, _)))) => {
            format!("cannot reach the server: {detail}")
        }
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(None)) => {
            "cannot reach the server".to_owned()
        }
        other => format!("cannot connect: {other}"),
    };
    DriverError::Open(format!("mysql {target}: {specific}"))
}

fn cleartext_refused() -> String {
    "the server asks for the password in clear text (mysql_clear_password) on a connection without \
     TLS; refused so the password is not sent readable on the network. Use sslMode require or \
     verify-full, or set allowCleartextPassword: true to accept the risk"
        .to_owned()
}

fn query_error(e: &mysql::Error, interrupt: &Interrupt) -> DriverError {
    match e {
        mysql::Error::MySqlError(m)
            if matches!(
                m.code,
                code::QUERY_INTERRUPTED | code::MARIADB_STATEMENT_TIMEOUT | code::MYSQL_QUERY_TIMEOUT
            ) =>
        {
            interrupt.stopped()
        }
        mysql::Error::MySqlError(m) => {
            DriverError::Query(format!("{} (error {}, SQLSTATE {})", m.message, m.code, m.state))
        }
        mysql::Error::IoError(io) => DriverError::Query(format!("connection to the server was lost: {io}")),
        other => DriverError::Query(other.to_string()),
    }
}

fn is_connection_error(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::IoError(_) | mysql::Error::CodecError(_))
        || matches!(e, mysql::Error::DriverError(_))
        || matches!(e, mysql::Error::MySqlError(m) if m.code == 2006 || m.code == 2013 || m.code == 1927)
}

type MyPooled = r2d2::PooledConnection<crate::pool::Manager<MySession>>;

impl MyDb {
    /// A pooled connection inside `START TRANSACTION READ ONLY` with the query's limit; a
    /// connection that died while idle (server restart) is replaced transparently.
    fn begin(&self, interrupt: &Interrupt) -> Result<MyPooled, DriverError> {
        // A server restart leaves every pooled connection dead: replace as many as the pool holds.
        let mut retries = self.pool.max_size();
        loop {
            let mut pooled = self.pool.acquire(interrupt.remaining())?;
            let ms = interrupt.remaining_ms().unwrap_or(0);
            let limit = if pooled.conn.mariadb {
                format!("SET SESSION max_statement_time = {}.{:03}", ms / 1000, ms % 1000)
            } else {
                format!("SET SESSION max_execution_time = {ms}")
            };
            let result = pooled
                .conn
                .conn
                .query_drop(&limit)
                .and_then(|()| pooled.conn.conn.query_drop("START TRANSACTION READ ONLY"));
            match result {
                Ok(()) => return Ok(pooled),
                Err(e) => {
                    pooled.broken = true;
                    if is_connection_error(&e) {
                        if retries > 0 {
                            tracing::info!(error = %e, "stale mysql connection replaced");
                            retries -= 1;
                            continue;
                        }
                        return Err(DriverError::Unavailable(format!(
                            "mysql: every connection failed before the query started: {e}"
                        )));
                    }
                    return Err(query_error(&e, interrupt));
                }
            }
        }
    }
}

/// Opens a second connection and stops the statement running on connection `id`.
fn kill_query(opts: &Opts, id: u32) {
    match Conn::new(opts.clone()).and_then(|mut c| c.query_drop(format!("KILL QUERY {id}"))) {
        Ok(()) => tracing::debug!(id, "KILL QUERY sent"),
        Err(e) => tracing::warn!(error = %e, "mysql KILL QUERY failed"),
    }
}

impl Driver for MyDb {
    fn ping(&self) -> Result<(), DriverError> {
        self.pool.check_health()
    }

    fn pool_status(&self) -> crate::PoolStatus {
        self.pool.status()
    }

    /// `KILL CONNECTION <id>`, then waits until the id is gone from the process list (a
    /// killed thread is listed as `Killed` until it has stopped).
    fn cancel_server_session(&self, session: &str) -> Result<bool, DriverError> {
        let (id, recorded_start) = parse_session(session)?;
        let mut pooled = self.pool.acquire(None)?;
        if pooled.conn.server_session == session {
            // The session is this idle pooled connection: nothing runs on it.
            return Ok(true);
        }
        let mariadb = pooled.conn.mariadb;
        let conn = &mut pooled.conn.conn;
        if let Some(recorded) = recorded_start
            && let Some(now) = server_start(conn, mariadb)
            && (now - recorded).abs() > SAME_SERVER_START
        {
            // The server restarted since: every session of that run is gone, and the id may
            // now name someone else's.
            return Ok(true);
        }
        let outcome = (|| {
            match conn.query_drop(format!("KILL CONNECTION {id}")) {
                Ok(()) => {}
                Err(mysql::Error::MySqlError(m)) if m.code == code::UNKNOWN_THREAD => return Ok(true),
                Err(mysql::Error::MySqlError(m)) if m.code == code::NOT_OWNER => {
                    tracing::warn!(id, "KILL refused: the session belongs to another user");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
            let deadline = std::time::Instant::now() + SESSION_GONE_WITHIN;
            loop {
                let listed: Option<u64> = conn
                    .exec_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))?;
                if listed == Some(0) {
                    return Ok(true);
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(SESSION_POLL);
            }
        })();
        outcome.map_err(|e| {
            if is_connection_error(&e) {
                pooled.broken = true;
                DriverError::Unavailable(format!("mysql: the connection was lost: {e}"))
            } else {
                DriverError::Query(e.to_string())
            }
        })
    }

    fn query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let values = crate::query::convert_params(params, to_value)?;
        let mut pooled = self.begin(interrupt)?;
        run(&mut pooled, &self.opts, sql, values, interrupt, sink)
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        let sql = OdbcDialect::Mysql.catalog_sql().expect("mysql has catalogue SQL");
        crate::catalog::assemble(
            &mut MyText { db: self },
            sql,
            OdbcDialect::Mysql,
            connection,
            DbKind::Mysql,
            progress,
        )
    }

    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        crate::privileges::check(&mut MyText { db: self }, OdbcDialect::Mysql, &self.database)
    }

    fn sql_dialect(&self) -> OdbcDialect {
        OdbcDialect::Mysql
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn to_value(p: &serde_json::Value) -> Result<Value, &'static str> {
    use serde_json::Value as J;
    Ok(match p {
        J::Null => Value::NULL,
        J::Bool(b) => Value::Int(i64::from(*b)),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None if n.is_u64() => return Err("integer out of range for a 64-bit signed integer"),
            None => Value::Double(n.as_f64().ok_or("unsupported number")?),
        },
        J::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        J::Array(_) => return Err("arrays are not supported"),
        J::Object(_) => return Err("objects are not supported"),
    })
}

fn run(
    pooled: &mut Pooled<MySession>,
    opts: &Opts,
    sql: &str,
    params: Vec<Value>,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let id = pooled.conn.conn.connection_id();
    if let Err(e) = sink.started(Some(&pooled.conn.server_session)) {
        if pooled.conn.conn.query_drop("ROLLBACK").is_err() {
            pooled.broken = true;
        }
        return Err(e.into());
    }
    let kill_opts = opts.clone();
    let hook = interrupt.cancel.on_cancel(move || kill_query(&kill_opts, id));
    let alarm = interrupt.deadline.map(|deadline| {
        let kill_opts = opts.clone();
        Alarm::arm(deadline + BACKSTOP, move || kill_query(&kill_opts, id))
    });
    let outcome = stream(&mut pooled.conn.conn, opts, sql, params, interrupt, sink);
    let fired = hook.disarm() | alarm.is_some_and(Alarm::disarm);
    let conn = &mut pooled.conn.conn;
    match outcome {
        Ok(stats) if !fired => match conn.query_drop("COMMIT") {
            Ok(()) => Ok(stats),
            Err(e) => {
                pooled.broken = true;
                Err(query_error(&e, interrupt))
            }
        },
        Ok(stats) => {
            pooled.broken = true;
            Ok(stats)
        }
        Err(e) => {
            if fired || conn.query_drop("ROLLBACK").is_err() {
                pooled.broken = true;
            }
            Err(e)
        }
    }
}

fn stream(
    conn: &mut Conn,
    opts: &Opts,
    sql: &str,
    params: Vec<Value>,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let id = conn.connection_id();
    let statement = conn.prep(sql).map_err(|e| query_error(&e, interrupt))?;
    if usize::from(statement.num_params()) != params.len() {
        return Err(DriverError::Bind(format!(
            "query takes {} parameters, {} given",
            statement.num_params(),
            params.len()
        )));
    }
    let params = if params.is_empty() { mysql::Params::Empty } else { mysql::Params::Positional(params) };
    let mut result = conn.exec_iter(&statement, params).map_err(|e| query_error(&e, interrupt))?;
    let kinds: Vec<Kind> = result.columns().as_ref().iter().map(Kind::of).collect();
    let columns: Vec<ColumnMeta> = result
        .columns()
        .as_ref()
        .iter()
        .zip(&kinds)
        .map(|(c, k)| ColumnMeta {
            name: c.name_str().into_owned(),
            wire_type: k.wire_type(),
            db_type: type_name(c),
            nullable: Some(!c.flags().contains(ColumnFlags::NOT_NULL_FLAG)),
        })
        .collect();
    let abort = |result: mysql::QueryResult<'_, '_, '_, mysql::Binary>, e: DriverError| {
        // Stop the statement before the result is drained on drop (it could be huge).
        kill_query(opts, id);
        drop(result);
        Err(e)
    };
    if let Err(e) = sink.columns(&columns) {
        return abort(result, e.into());
    }
    let mut buf = RowBuf::default();
    let mut count = 0u64;
    loop {
        let row = match result.next() {
            Some(Ok(row)) => row,
            Some(Err(e)) => return Err(query_error(&e, interrupt)),
            None => break,
        };
        if let Err(e) = interrupt.check_row(count) {
            return abort(result, e);
        }
        let emitted = buf.emit(sink, |f| {
            for (i, kind) in kinds.iter().enumerate() {
                push_cell(f, *kind, row.as_ref(i).unwrap_or(&Value::NULL))?;
            }
            Ok(())
        });
        if let Err(e) = emitted {
            return abort(result, e);
        }
        count += 1;
    }
    Ok(QueryStats { rows: count, columns: kinds.len() })
}

/// How a result column's values become cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    /// BIGINT UNSIGNED: exact decimal text (may exceed i64).
    BigUnsigned,
    Decimal,
    Float,
    Text,
    Json,
    Bytes,
    Date,
    Time,
    DateTime,
    /// TIMESTAMP: a UTC instant (the session runs in +00:00).
    Timestamp,
}

const BINARY_CHARSET: u16 = 63;

impl Kind {
    fn of(c: &mysql::Column) -> Kind {
        use ColumnType::*;
        let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        match c.column_type() {
            MYSQL_TYPE_TINY if c.column_length() == 1 => Kind::Bool,
            MYSQL_TYPE_LONGLONG if unsigned => Kind::BigUnsigned,
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_YEAR => Kind::Int,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => Kind::Float,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
            MYSQL_TYPE_JSON => Kind::Json,
            MYSQL_TYPE_BIT if c.column_length() == 1 => Kind::Bool,
            MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY => Kind::Bytes,
            _ if c.character_set() == BINARY_CHARSET => Kind::Bytes,
            _ => Kind::Text,
        }
    }

    fn wire_type(self) -> WireType {
        match self {
            Kind::Int => WireType::Integer,
            Kind::Bool => WireType::Boolean,
            Kind::BigUnsigned | Kind::Decimal => WireType::Decimal,
            Kind::Float => WireType::Float,
            Kind::Text => WireType::Text,
            Kind::Json => WireType::Json,
            Kind::Bytes => WireType::Bytes,
            Kind::Date => WireType::Date,
            Kind::Time => WireType::Time,
            Kind::DateTime => WireType::Timestamp,
            Kind::Timestamp => WireType::TimestampTz,
        }
    }
}

/// The server's type name, e.g. `INT`, `DECIMAL`, `VARCHAR`, `BIGINT UNSIGNED`.
fn type_name(c: &mysql::Column) -> String {
    use ColumnType::*;
    let binary = c.character_set() == BINARY_CHARSET;
    let flags = c.flags();
    let name = match c.column_type() {
        MYSQL_TYPE_TINY if c.column_length() == 1 => "TINYINT(1)",
        MYSQL_TYPE_TINY => "TINYINT",
        MYSQL_TYPE_SHORT => "SMALLINT",
        MYSQL_TYPE_INT24 => "MEDIUMINT",
        MYSQL_TYPE_LONG => "INT",
        MYSQL_TYPE_LONGLONG => "BIGINT",
        MYSQL_TYPE_YEAR => "YEAR",
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => "DECIMAL",
        MYSQL_TYPE_FLOAT => "FLOAT",
        MYSQL_TYPE_DOUBLE => "DOUBLE",
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => "DATE",
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => "TIME",
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => "DATETIME",
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => "TIMESTAMP",
        MYSQL_TYPE_JSON => "JSON",
        MYSQL_TYPE_BIT => "BIT",
        MYSQL_TYPE_GEOMETRY => "GEOMETRY",
        MYSQL_TYPE_NULL => "NULL",
        _ if flags.contains(ColumnFlags::ENUM_FLAG) => "ENUM",
        _ if flags.contains(ColumnFlags::SET_FLAG) => "SET",
        MYSQL_TYPE_STRING if binary => "BINARY",
        MYSQL_TYPE_STRING => "CHAR",
        MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR if binary => "VARBINARY",
        MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_VARCHAR => "VARCHAR",
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB if binary => {
            "BLOB"
        }
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => "TEXT",
        _ => "",
    };
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG)
        && !matches!(
            c.column_type(),
            MYSQL_TYPE_DOUBLE | MYSQL_TYPE_FLOAT | MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL
        );
    if unsigned { format!("{name} UNSIGNED") } else { name.to_owned() }
}

fn push_cell<'r>(f: &mut Filler<'_, 'r>, kind: Kind, value: &'r Value) -> Result<(), DriverError> {
    let bad = || DriverError::Query(format!("unexpected {kind:?} value from server"));
    match (kind, value) {
        (_, Value::NULL) => f.cell(Cell::Null),
        (Kind::Bool, Value::Int(i)) => f.cell(Cell::Bool(*i != 0)),
        (Kind::Bool, Value::UInt(u)) => f.cell(Cell::Bool(*u != 0)),
        (Kind::Bool, Value::Bytes(b)) => f.cell(Cell::Bool(b.iter().any(|x| *x != 0 && *x != b'0'))),
        (Kind::BigUnsigned, Value::UInt(u)) => f.decimal_with(|s| {
            let _ = write!(s, "{u}");
        }),
        (Kind::BigUnsigned, Value::Int(i)) => f.decimal_with(|s| {
            let _ = write!(s, "{i}");
        }),
        (_, Value::Int(i)) => f.cell(Cell::Int(*i)),
        (_, Value::UInt(u)) => match i64::try_from(*u) {
            Ok(i) => f.cell(Cell::Int(i)),
            Err(_) => f.decimal_with(|s| {
                let _ = write!(s, "{u}");
            }),
        },
        // FLOAT columns are single precision: go through the shortest decimal text so 1.1
        // stays 1.1 rather than 1.100000023841858.
        (_, Value::Float(x)) => f.cell(Cell::Float(x.to_string().parse().unwrap_or(f64::from(*x)))),
        (_, Value::Double(x)) => f.cell(Cell::Float(*x)),
        (Kind::Date, Value::Date(y, m, d, ..)) => {
            f.text_with(|s| write_ymd(s, i64::from(*y), u32::from(*m), u32::from(*d)))
        }
        (Kind::DateTime | Kind::Timestamp, Value::Date(y, m, d, h, mi, sec, us)) => f.text_with(|s| {
            write_ymd(s, i64::from(*y), u32::from(*m), u32::from(*d));
            s.push('T');
            write_hms(s, u32::from(*h), u32::from(*mi), u32::from(*sec), *us);
            if kind == Kind::Timestamp {
                s.push('Z');
            }
        }),
        (_, Value::Date(y, m, d, ..)) => {
            f.text_with(|s| write_ymd(s, i64::from(*y), u32::from(*m), u32::from(*d)))
        }
        (_, Value::Time(negative, days, h, m, sec, us)) => f.text_with(|s| {
            if *negative {
                s.push('-');
            }
            write_hms(s, days * 24 + u32::from(*h), u32::from(*m), u32::from(*sec), *us);
        }),
        (Kind::Bytes, Value::Bytes(b)) => f.cell(Cell::Bytes(b)),
        (Kind::Decimal, Value::Bytes(b)) => f.cell(Cell::Decimal(std::str::from_utf8(b).map_err(|_| bad())?)),
        (Kind::BigUnsigned, Value::Bytes(b)) => {
            f.cell(Cell::Decimal(std::str::from_utf8(b).map_err(|_| bad())?))
        }
        (Kind::Int, Value::Bytes(b)) => {
            f.cell(Cell::Int(std::str::from_utf8(b).ok().and_then(|t| t.parse().ok()).ok_or_else(bad)?))
        }
        (Kind::Float, Value::Bytes(b)) => {
            f.cell(Cell::Float(std::str::from_utf8(b).ok().and_then(|t| t.parse().ok()).ok_or_else(bad)?))
        }
        (Kind::DateTime | Kind::Timestamp, Value::Bytes(b)) => {
            let text = std::str::from_utf8(b).map_err(|_| bad())?;
            f.text_with(|s| {
                s.push_str(&text.replacen(' ', "T", 1));
                if kind == Kind::Timestamp {
                    s.push('Z');
                }
            });
        }
        (_, Value::Bytes(b)) => match std::str::from_utf8(b) {
            Ok(text) => f.cell(Cell::Text(text)),
            Err(_) => f.cell(Cell::Bytes(b)),
        },
    }
    Ok(())
}

struct MyText<'a> {
    db: &'a MyDb,
}

impl TextRows for MyText<'_> {
    fn each_row(&mut self, sql: &str, row: &mut crate::catalog::RowFn<'_>) -> Result<(), DriverError> {
        let interrupt = Interrupt::new(&crate::QueryOptions::default(), std::time::Instant::now());
        let mut pooled = self.db.begin(&interrupt)?;
        let mut sink = TextSink { row, error: None };
        match run(&mut pooled, &self.db.opts, sql, Vec::new(), &interrupt, &mut sink) {
            Ok(_) => Ok(()),
            Err(e) => Err(sink.unwrap_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbKind;

    fn spec(ssl_mode: SslMode, allow: bool) -> ConnectionSpec {
        ConnectionSpec {
            kind: DbKind::Mysql,
            host: Some("db".into()),
            user: Some("ro".into()),
            ssl_mode,
            allow_cleartext_password: allow,
            ..ConnectionSpec::default()
        }
    }

    /// `mysql_clear_password` only inside TLS, or where the connection allows it.
    #[test]
    fn the_cleartext_plugin_needs_tls_or_consent() {
        let cleartext = |mode, allow| {
            let (opts, plain, _) = opts(&spec(mode, allow), None).unwrap();
            (opts.get_enable_cleartext_plugin(), plain.map(|p| p.get_enable_cleartext_plugin()))
        };
        assert_eq!(cleartext(SslMode::Disable, false), (false, None));
        assert_eq!(cleartext(SslMode::Disable, true), (true, None));
        // `prefer`: the TLS attempt may (it fails without TLS), the plain fallback may not.
        assert_eq!(cleartext(SslMode::Prefer, false), (true, Some(false)));
        assert_eq!(cleartext(SslMode::Prefer, true), (true, Some(true)));
        assert_eq!(cleartext(SslMode::Require, false), (true, None));
        assert_eq!(cleartext(SslMode::VerifyFull, false), (true, None));
        let (require, _, _) = opts(&spec(SslMode::Require, false), None).unwrap();
        assert!(require.get_ssl_opts().is_some_and(|s| s.accept_invalid_certs()));
        let (full, _, _) = opts(&spec(SslMode::VerifyFull, false), None).unwrap();
        assert!(
            full.get_ssl_opts().is_some_and(|s| !s.accept_invalid_certs() && !s.skip_domain_validation())
        );
        assert!(full.get_init().iter().any(|i| i.contains("NO_BACKSLASH_ESCAPES")));
    }
}
