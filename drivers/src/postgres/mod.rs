//! PostgreSQL: an r2d2 pool of `postgres` clients in read-only sessions.
//!
//! Session layer: every connection starts with `default_transaction_read_only=on` and
//! `standard_conforming_strings=on` (startup options, which override role and database
//! defaults; the gate lexes string literals on that assumption). A query takes two round trips
//! (issue 12; it took four): first one simple-query message that resets the session
//! ([`RESET_SESSION`]: advisory locks released, every setting — `search_path`, the read-only
//! default — back to its value at connect, cursors closed, `LISTEN`s dropped) and sets
//! `statement_timeout` to the time left before the deadline; then the statement in one
//! extended-protocol exchange (`query_typed_raw`: unnamed statement, parameter types inferred
//! by the server, binary results), which runs in its own implicit transaction, read-only by
//! that default — a write that slips past the text check fails with SQLSTATE 25006 — and a
//! runaway query is stopped by the server (57014 → `Timeout`). The reset therefore runs
//! before each query rather than after it (whatever a query left behind lasts while its
//! connection is idle, and is gone before the next query on it); a connection whose reset
//! fails is replaced. An empty result costs a third round trip (a `Describe`, to name its
//! columns: the crate gives the columns with the rows). Cancel sends a cancel request on
//! the connection's cancel token. Rows are never buffered (tokio-postgres' one-message
//! channel gives back-pressure).
//!
//! Each physical connection reads its backend pid and start time once at connect; every query
//! hands them to [`RowSink::started`] as `pg:<pid>:<start, µs since the epoch>` before the
//! statement is sent, and `cancel_server_session` terminates a backend only when both match
//! (a pid recycled by another backend is never hit).
//!
//! TLS: rustls through `tokio-postgres-rustls`, per [`SslMode`] (see `crate::tls`); SCRAM
//! uses channel binding when the link is TLS. Before a connection that may run without TLS
//! carries a password, [`probe::CleartextProbe`] refuses a server that would ask for it in
//! clear text (unless `allow_cleartext_password`).

mod probe;
mod types;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::alarm::Alarm;
use crate::catalog::{TextRows, TextSink};
use crate::database::Driver;
use crate::pool::{DbPool, Pooled, Session};
use crate::query::Interrupt;
use crate::rowbuf::RowBuf;
use crate::secret::scrub;
use crate::{
    ColumnMeta, ConnectionSpec, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, OdbcDialect,
    PrivilegeReport, QueryStats, RowSink, Secret, SslMode,
};

/// How long after the deadline the client-side alarm cancels a query the server-side
/// `statement_timeout` did not stop (e.g. a stalled network).
const BACKSTOP: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Driver::cancel_server_session`] waits for an ended session to leave the
/// server's session list, and how often it looks.
const SESSION_GONE_WITHIN: Duration = Duration::from_secs(5);
const SESSION_POLL: Duration = Duration::from_millis(50);
/// When a cancel request is sent a second time (see `stream`).
const RESEND: Duration = Duration::from_millis(250);

/// Run before each query ([`prelude`]): what `DISCARD ALL` does except `DEALLOCATE ALL`
/// (the client's prepared statements stay valid) and the temporary-object parts (a read-only
/// session cannot create any). `RESET ALL` brings every setting back to its value at connect,
/// i.e. the startup options above (`standard_conforming_strings`, read-only default) and the
/// role's or database's `search_path`.
pub(crate) const RESET_SESSION: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all()";

/// The backend's start as whole microseconds since the Unix epoch (an exact integer, whatever
/// the session's `TimeZone` or `DateStyle`), of the `pg_stat_activity` row aliased `a`.
const BACKEND_START_US: &str = "floor(extract(epoch from a.backend_start) * 1000000)::int8";

pub(crate) struct PgSession {
    client: Client,
    /// `pg:<pid>:<backend start in µs>`, read once at connect (see [`RowSink::started`]).
    server_session: String,
}

/// The pid and start of the backend behind `client` (one round trip, at connect).
fn server_session(client: &mut Client) -> Result<String, postgres::Error> {
    let row = client.query_one(
        &format!(
            "SELECT pg_catalog.pg_backend_pid(), {BACKEND_START_US} \
             FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()"
        ),
        &[],
    )?;
    let (pid, start): (i32, i64) = (row.get(0), row.get(1));
    Ok(format!("pg:{pid}:{start}"))
}

/// The pid and start of a `pg:<pid>:<start>` session id.
fn parse_session(session: &str) -> Result<(i32, i64), DriverError> {
    session
        .strip_prefix("pg:")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(pid, start)| Some((pid.parse().ok()?, start.parse().ok()?)))
        .ok_or_else(|| DriverError::Bind(format!("`{session}` is not a postgres server session id")))
}

impl Session for PgSession {
    fn ping(&mut self) -> Result<(), DriverError> {
        self.client.simple_query("SELECT 1").map(drop).map_err(|e| DriverError::Query(e.to_string()))
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    // No `reset` on return: the reset travels with the next query's first round trip
    // (`prelude`), so returning a connection costs no round trip.
}

pub(crate) struct PgDb {
    pool: DbPool<PgSession>,
    database: String,
}

impl PgDb {
    pub(crate) fn open(spec: &ConnectionSpec) -> Result<Self, DriverError> {
        let password = spec.password.resolve()?;
        let (config, target, mode) = config(spec, password.as_ref())?;
        let tls_config = crate::tls::client_config(mode, spec.ssl_root_cert.as_deref())?;
        let probe =
            (!spec.allow_cleartext_password && !mode.requires_tls() && config.get_password().is_some())
                .then(|| cleartext_probe(&config, mode, &tls_config));
        let tls = MakeRustlsConnect::new(tls_config);
        let secrets: Vec<Secret> = password.into_iter().chain(spec.connection_string.clone()).collect();
        let database = config.get_dbname().or(config.get_user()).unwrap_or_default().to_owned();
        let pool = DbPool::open(&spec.pool, move || {
            if let Some(probe) = &probe {
                probe.check()?;
            }
            let refs: Vec<&Secret> = secrets.iter().collect();
            let scrubbed = |e: postgres::Error| match connect_error(&e, &target, mode) {
                DriverError::Open(m) => DriverError::Unavailable(scrub(m, &refs)),
                other => other,
            };
            let mut client = config.connect(tls.clone()).map_err(scrubbed)?;
            let server_session = server_session(&mut client).map_err(scrubbed)?;
            Ok(PgSession { client, server_session })
        })?;
        Ok(Self { pool, database })
    }
}

/// The cleartext probe for the servers `config` names (TCP hosts only: a Unix socket does
/// not cross the network).
fn cleartext_probe(config: &Config, mode: SslMode, tls: &rustls::ClientConfig) -> probe::CleartextProbe {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let targets = if config.get_hostaddrs().is_empty() {
        config
            .get_hosts()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match h {
                postgres::config::Host::Tcp(h) => Some((h.clone(), port(i))),
                #[cfg(unix)]
                postgres::config::Host::Unix(_) => None,
            })
            .collect()
    } else {
        config.get_hostaddrs().iter().enumerate().map(|(i, a)| (a.to_string(), port(i))).collect()
    };
    probe::CleartextProbe {
        targets,
        user: config.get_user().unwrap_or_default().to_owned(),
        database: config.get_dbname().map(str::to_owned),
        prefer_tls: (mode == SslMode::Prefer).then(|| std::sync::Arc::new(tls.clone())),
        timeout: config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT),
    }
}

/// Builds the client configuration; `target` names the server in error messages. The TLS
/// mode is the stronger of `sslMode` and an explicit `sslmode=` in the connection string.
fn config(
    spec: &ConnectionSpec,
    password: Option<&Secret>,
) -> Result<(Config, String, SslMode), DriverError> {
    let mut config = match &spec.connection_string {
        Some(cs) => cs.expose().parse::<Config>().map_err(|_| {
            // The parser's message may quote the string, password included.
            DriverError::Open(
                "postgres: the connection string is not valid (key=value or postgres:// URL; \
                 give verify-ca / verify-full with the sslMode setting, not in the string)"
                    .into(),
            )
        })?,
        None => {
            let mut c = Config::new();
            c.host(spec.host.as_deref().unwrap_or("localhost"));
            c.port(spec.port.unwrap_or(5432));
            if let Some(db) = &spec.database {
                c.dbname(db);
            }
            c
        }
    };
    if let Some(user) = &spec.user {
        config.user(user);
    }
    if let Some(password) = password {
        config.password(password.expose());
    }
    if config.get_user().is_none() {
        return Err(DriverError::Open("postgres: no user given".into()));
    }
    let explicit = spec
        .connection_string
        .as_ref()
        .is_some_and(|cs| cs.expose().to_ascii_lowercase().contains("sslmode"));
    let from_string = match config.get_ssl_mode() {
        postgres::config::SslMode::Disable => SslMode::Disable,
        postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    let mode = if explicit { spec.ssl_mode.max(from_string) } else { spec.ssl_mode };
    config.ssl_mode(match mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
    });
    config.application_name("mini-connector");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(60));
    // Session layer: every transaction of this session is read-only by default, and string
    // literals follow the standard (backslashes are not escapes), as the gate lexes them.
    // Given last, these win over the same settings in user-supplied options.
    const PINNED: &str = "-c default_transaction_read_only=on -c standard_conforming_strings=on";
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {PINNED}"),
        _ => PINNED.to_owned(),
    };
    config.options(&options);
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok((config, format!("{host}:{port}"), mode))
}

/// A specific, password-free message for a failed connection attempt.
fn connect_error(e: &postgres::Error, target: &str, mode: SslMode) -> DriverError {
    if let Some(db) = e.as_db_error() {
        let message = db.message();
        let specific = match db.code() {
            c if *c == SqlState::INVALID_PASSWORD => format!("authentication failed: {message}"),
            c if *c == SqlState::INVALID_CATALOG_NAME => message.to_owned(),
            c if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION && message.contains("no encryption") => {
                format!(
                    "the server requires TLS ({message}); set sslMode require or verify-full (now {mode})"
                )
            }
            c if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!("access denied: {message}"),
            c => format!("{message} (SQLSTATE {})", c.code()),
        };
        return DriverError::Open(format!("postgres {target}: {specific}"));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text = format!("{text}: {m}");
        }
        source = s.source();
    }
    let text = text.strip_prefix("error connecting to server: ").unwrap_or(&text).to_owned();
    if text.contains("TLS") {
        // "error performing TLS handshake: server does not support TLS", "... invalid peer
        // certificate: ..." (unknown issuer, name mismatch, expired).
        return DriverError::Open(format!("postgres {target}: TLS (sslMode {mode}) failed: {text}"));
    }
    DriverError::Open(format!("postgres {target}: cannot reach the server: {text}"))
}

/// Maps a statement error; a server-side cancel (57014) becomes `Timeout` or `Cancelled`.
fn query_error(e: &postgres::Error, interrupt: &Interrupt) -> DriverError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::QUERY_CANCELED {
            return interrupt.stopped();
        }
        return DriverError::Query(format!("{} (SQLSTATE {})", db.message(), db.code().code()));
    }
    if e.is_closed() {
        return DriverError::Query(format!("connection to the server was lost: {e}"));
    }
    let text = e.to_string();
    if text.starts_with("error serializing parameter") {
        return DriverError::Bind(text);
    }
    DriverError::Query(text)
}

/// Whether the failure says the connection is gone (the pool hands out a fresh one).
fn is_connection_error(e: &postgres::Error) -> bool {
    e.is_closed()
        || (e.as_db_error().is_none() && e.code().is_none())
        || e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
}

impl Driver for PgDb {
    fn ping(&self) -> Result<(), DriverError> {
        self.pool.check_health()
    }

    fn pool_status(&self) -> crate::PoolStatus {
        self.pool.status()
    }

    /// `pg_terminate_backend` of the pid only while its `backend_start` matches, then waits
    /// until the backend is gone from `pg_stat_activity`. Each statement runs in its own
    /// transaction: `pg_stat_activity` is a snapshot per transaction.
    fn cancel_server_session(&self, session: &str) -> Result<bool, DriverError> {
        let (pid, start) = parse_session(session)?;
        let mut pooled = self.pool.acquire(None)?;
        if pooled.conn.server_session == session {
            // The session is this idle pooled connection: nothing runs on it.
            return Ok(true);
        }
        let failed = |e: postgres::Error| {
            if is_connection_error(&e) {
                DriverError::Unavailable(format!("postgres: the connection was lost: {e}"))
            } else {
                DriverError::Query(e.to_string())
            }
        };
        let matching =
            format!("FROM pg_catalog.pg_stat_activity a WHERE a.pid = $1 AND {BACKEND_START_US} = $2");
        let outcome = (|| {
            let client = &mut pooled.conn.client;
            let terminate = format!("SELECT pg_catalog.pg_terminate_backend(a.pid) {matching}");
            let Some(row) = client.query_opt(&terminate, &[&pid, &start]).map_err(failed)? else {
                return Ok(true);
            };
            if !row.get::<_, bool>(0) {
                tracing::warn!(pid, "pg_terminate_backend refused (another role's session?)");
            }
            let still_there = format!("SELECT 1 {matching}");
            let deadline = Instant::now() + SESSION_GONE_WITHIN;
            loop {
                if client.query_opt(&still_there, &[&pid, &start]).map_err(failed)?.is_none() {
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(SESSION_POLL);
            }
        })();
        if matches!(outcome, Err(DriverError::Unavailable(_))) {
            pooled.broken = true;
        }
        outcome
    }

    fn query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        for (i, p) in params.iter().enumerate() {
            types::Param(p).check(i + 1)?;
        }
        // The text is exactly what the gate judged (`?` already rewritten there).
        let mut pooled = self.begin(interrupt)?;
        run(&mut pooled, sql, params, interrupt, sink)
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        let sql = OdbcDialect::Postgres.catalog_sql().expect("postgres has catalogue SQL");
        let mut rows = PgText { db: self };
        crate::catalog::assemble(
            &mut rows,
            sql,
            OdbcDialect::Postgres,
            connection,
            DbKind::Postgres,
            progress,
        )
    }

    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        crate::privileges::check(&mut PgText { db: self }, OdbcDialect::Postgres, &self.database)
    }

    fn sql_dialect(&self) -> OdbcDialect {
        OdbcDialect::Postgres
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

type PgPooled = r2d2::PooledConnection<crate::pool::Manager<PgSession>>;

impl PgDb {
    /// A pooled connection with its session reset and the query's statement timeout set, in
    /// one round trip ([`prelude`]). A connection that died while idle (server restart) is
    /// replaced transparently.
    fn begin(&self, interrupt: &Interrupt) -> Result<PgPooled, DriverError> {
        // A server restart leaves every pooled connection dead: replace as many as the pool holds.
        let mut retries = self.pool.max_size();
        loop {
            let mut pooled = self.pool.acquire(interrupt.remaining())?;
            let timeout_ms = interrupt.remaining_ms().unwrap_or(0);
            match pooled.conn.client.batch_execute(&prelude(timeout_ms)) {
                Ok(()) => return Ok(pooled),
                Err(e) => {
                    pooled.broken = true;
                    if is_connection_error(&e) {
                        if retries > 0 {
                            tracing::info!(error = %e, "stale postgres connection replaced");
                            retries -= 1;
                            continue;
                        }
                        return Err(DriverError::Unavailable(format!(
                            "postgres: every connection failed before the query started: {e}"
                        )));
                    }
                    return Err(query_error(&e, interrupt));
                }
            }
        }
    }
}

/// The first of a query's two round trips, one simple-query message: the session reset
/// ([`RESET_SESSION`], so whatever the previous query on this connection left behind is gone
/// before this one runs) and the statement timeout. The statement itself then runs in the
/// implicit transaction of its own extended-protocol message, read-only by the pinned
/// `default_transaction_read_only` (which `RESET ALL` has just restored).
fn prelude(timeout_ms: u64) -> String {
    format!("{RESET_SESSION}; SET statement_timeout = {timeout_ms}")
}

/// Runs the statement (second round trip) and decides whether the connection may return to
/// the pool.
fn run(
    pooled: &mut Pooled<PgSession>,
    sql: &str,
    params: &[serde_json::Value],
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    sink.started(Some(&pooled.conn.server_session))?;
    let client = &mut pooled.conn.client;
    let (outcome, fired) = stream(client, sql, params, interrupt, sink);
    match outcome {
        Ok(stats) if !fired => Ok(stats),
        Ok(stats) => {
            // A cancel may land after the last row: do not trust the session any more.
            pooled.broken = true;
            Ok(stats)
        }
        Err(Aborted { error, pending }) => {
            if pending || fired {
                // Rows are still in flight: stop the statement and drop the connection
                // instead of draining a possibly huge result.
                let _ = client.cancel_token().cancel_query(NoTls);
                pooled.broken = true;
            }
            // Otherwise the statement's implicit transaction already ended with its error.
            Err(error)
        }
    }
}

struct Aborted {
    error: DriverError,
    /// The result was not read to its end.
    pending: bool,
}

/// Parses, binds, executes and reads the statement in one extended-protocol exchange
/// (`query_typed_raw`: unnamed statement, parameter types left to the server — `unknown` —
/// binary results); also says whether a cancel hook or the deadline alarm fired (the session
/// is then not trusted for reuse).
fn stream(
    client: &mut Client,
    sql: &str,
    params: &[serde_json::Value],
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> (Result<QueryStats, Aborted>, bool) {
    let done = |error: DriverError| Aborted { error, pending: false };
    // A cancel request only stops a statement the server is executing; one that lands while
    // the session waits for the next message is dropped. So the hook sends it at once and
    // again a moment later, and the query thread checks the token itself.
    let token = client.cancel_token();
    let resend: Arc<Mutex<Option<Alarm>>> = Arc::new(Mutex::new(None));
    let slot = resend.clone();
    let hook = interrupt.cancel.on_cancel(move || {
        if let Err(e) = token.cancel_query(NoTls) {
            tracing::warn!(error = %e, "postgres cancel request failed");
        }
        let again = token.clone();
        *slot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Alarm::arm(Instant::now() + RESEND, move || {
                let _ = again.cancel_query(NoTls);
            }));
    });
    let alarm_token = client.cancel_token();
    let alarm = interrupt.deadline.map(|deadline| {
        Alarm::arm(deadline + BACKSTOP, move || {
            let _ = alarm_token.cancel_query(NoTls);
        })
    });
    let disarm = |hook: crate::query::HookGuard, alarm: Option<Alarm>| {
        let fired = hook.disarm() | alarm.is_some_and(Alarm::disarm);
        let again = resend.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(again);
        fired
    };
    let typed = params.iter().map(|p| (types::Param(p), postgres::types::Type::UNKNOWN));
    let outcome = match client.query_typed_raw(sql, typed) {
        Ok(mut rows) => {
            let read = read(&mut rows, interrupt, sink);
            drop(rows);
            Ok(read)
        }
        Err(e) => Err(e),
    };
    let result = match outcome {
        Ok(Ok(None)) => describe(client, sql, interrupt, sink),
        Ok(Ok(Some(stats))) => Ok(stats),
        Ok(Err(aborted)) => Err(aborted),
        Err(e) => Err(done(match bind_count_error(&e, params.len()) {
            Some(error) => error,
            None if params.is_empty() => query_error(&e, interrupt),
            // "could not determine data type of parameter $n" is also what more values than
            // placeholders give: the statement's own parameter count tells (one more round
            // trip, on this error path only).
            None => match client.prepare(sql) {
                Ok(statement) if statement.params().len() != params.len() => {
                    bind_mismatch(statement.params().len(), params.len())
                }
                _ => query_error(&e, interrupt),
            },
        })),
    };
    (result, disarm(hook, alarm))
}

fn bind_mismatch(takes: usize, given: usize) -> DriverError {
    DriverError::Bind(format!("query takes {takes} parameters, {given} given"))
}

/// The server's answer to fewer values than placeholders ("bind message supplies 0
/// parameters, but prepared statement \"\" requires 1", SQLSTATE 08P01) as our `Bind` error.
fn bind_count_error(e: &postgres::Error, given: usize) -> Option<DriverError> {
    let db = e.as_db_error()?;
    if *db.code() != SqlState::PROTOCOL_VIOLATION {
        return None;
    }
    let takes = db.message().strip_prefix("bind message supplies ")?.rsplit(" requires ").next()?;
    Some(bind_mismatch(takes.trim().parse().ok()?, given))
}

/// Column metadata of a result.
fn column_meta(columns: &[postgres::Column]) -> Vec<ColumnMeta> {
    columns
        .iter()
        .map(|c| ColumnMeta {
            name: c.name().to_owned(),
            wire_type: types::wire_type(c.type_()),
            db_type: c.type_().name().to_owned(),
            nullable: None,
        })
        .collect()
}

/// Reads the rows into `sink`. The columns come with the first row: the postgres crate does
/// not hand out the description of an unnamed statement, so only an empty result costs one
/// more round trip (a `Describe` of the statement, to name its columns).
fn read(
    rows: &mut postgres::RowIter<'_>,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<Option<QueryStats>, Aborted> {
    let done = |error: DriverError| Aborted { error, pending: false };
    let pending = |error| Aborted { error, pending: true };
    use postgres::fallible_iterator::FallibleIterator;
    let mut next = || rows.next().map_err(|e| done(query_error(&e, interrupt)));
    let Some(first) = next()? else {
        // Empty: the statement is over; only its columns are missing (see `describe`).
        return Ok(None);
    };
    sink.columns(&column_meta(first.columns())).map_err(|e| pending(e.into()))?;
    let types: Vec<postgres::types::Type> = first.columns().iter().map(|c| c.type_().clone()).collect();
    let mut buf = RowBuf::default();
    let mut count = 0u64;
    let mut row = Some(first);
    while let Some(current) = row {
        interrupt.check_row(count).map_err(pending)?;
        buf.emit(sink, |f| {
            for (i, ty) in types.iter().enumerate() {
                let raw: types::Raw<'_> =
                    current.try_get(i).map_err(|e| DriverError::Query(e.to_string()))?;
                types::push_cell(f, ty, raw.0)?;
            }
            Ok(())
        })
        .map_err(pending)?;
        count += 1;
        row = next()?;
    }
    Ok(Some(QueryStats { rows: count, columns: types.len() }))
}

/// The columns of an empty result, told to `sink` (one `Parse`/`Describe` round trip; the
/// statement is closed again without running).
fn describe(
    client: &mut Client,
    sql: &str,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, Aborted> {
    let done = |error: DriverError| Aborted { error, pending: false };
    let statement = client.prepare(sql).map_err(|e| done(query_error(&e, interrupt)))?;
    let meta = column_meta(statement.columns());
    sink.columns(&meta).map_err(|e| done(e.into()))?;
    Ok(QueryStats { rows: 0, columns: meta.len() })
}

/// Catalogue and privilege queries through the normal row path (read-only transaction,
/// no timeout).
struct PgText<'a> {
    db: &'a PgDb,
}

impl TextRows for PgText<'_> {
    fn each_row(&mut self, sql: &str, row: &mut crate::catalog::RowFn<'_>) -> Result<(), DriverError> {
        let interrupt = Interrupt::new(&crate::QueryOptions::default(), std::time::Instant::now());
        let mut pooled = self.db.begin(&interrupt)?;
        let mut sink = TextSink { row, error: None };
        match run(&mut pooled, sql, &[], &interrupt, &mut sink) {
            Ok(_) => Ok(()),
            Err(e) => Err(sink.unwrap_error(e)),
        }
    }
}
