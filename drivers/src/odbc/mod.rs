//! ODBC: an r2d2 pool of `odbc-api` connections, one dialect profile per connection.
//!
//! Session layer: `SQL_ATTR_ACCESS_MODE = SQL_MODE_READ_ONLY` at connect, then the dialect's
//! own means ([`OdbcDialect::odbc_session_setup`]: PostgreSQL and MySQL session read-only
//! characteristics, SQLite `query_only`) and, for Oracle and HANA, `SET TRANSACTION READ ONLY`
//! at the start of every query (autocommit off). Cancel and deadlines call `SQLCancel` from
//! another thread (plus the statement's query-timeout attribute). Rows stream one at a time
//! with `SQLFetch`/`SQLGetData`, so values of any length arrive whole; the driver's own
//! buffering is turned off where it has a switch (psqlODBC `UseDeclareFetch`, sqliteodbc
//! `StepAPI`). Known limit: MariaDB Connector/ODBC 3.1 reads the whole result into client
//! memory at execute even with `NO_CACHE=1` (measured: ~170 bytes per row); MySQL and MariaDB
//! should use the native `mysql` driver, which streams.

mod ffi;

use std::sync::OnceLock;
use std::time::Duration;

use odbc_api::handles::StatementImpl;
use odbc_api::handles::{AsStatementRef, Statement};
use odbc_api::parameter::{InputParameter, VarWCharBox};
use odbc_api::sys::{Date, Timestamp};
use odbc_api::{
    Bit, Connection, ConnectionOptions, Cursor, DataType, Environment, Nullable, ResultSetMetadata,
};

use crate::alarm::Alarm;
use crate::catalog::{TextRows, TextSink};
use crate::database::Driver;
use crate::pool::{DbPool, Pooled, Session};
use crate::query::Interrupt;
use crate::rowbuf::RowBuf;
use crate::secret::scrub;
use crate::temporal::{write_hms, write_ymd};
use crate::{
    Cell, ColumnMeta, ConnectionSpec, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, OdbcDialect,
    PrivilegeReport, QueryStats, RowSink, Secret, WireType,
};

const LOGIN_TIMEOUT_SECS: u32 = 10;

fn environment() -> Result<&'static Environment, DriverError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| Environment::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DriverError::Open(format!("odbc: the ODBC driver manager is not usable: {e}")))
}

pub(crate) struct OdbcSession {
    conn: Connection<'static>,
    dialect: OdbcDialect,
}

impl Session for OdbcSession {
    fn ping(&mut self) -> Result<(), DriverError> {
        let interrupt = Interrupt::new(&crate::QueryOptions::default(), std::time::Instant::now());
        let mut sink = TextSink { row: &mut |_| Ok(()), error: None };
        stream(&self.conn, self.dialect, self.dialect.ping_sql(), &[], &interrupt, &mut sink).map(drop)
    }

    fn is_closed(&self) -> bool {
        self.conn.is_dead().unwrap_or(true)
    }

    /// What ODBC allows without the native protocol's reset: release the dialect's locks,
    /// then re-apply the session setup and pins (see [`session_pins`]).
    fn reset(&mut self) -> Result<(), DriverError> {
        for statement in session_reset(self.dialect).iter().chain(self.dialect.odbc_session_setup()) {
            self.conn.execute(statement, (), None).map_err(|e| DriverError::Query(message(&e)))?;
        }
        Ok(())
    }
}

/// Settings the gate relies on, applied after the dialect's session setup at connect and after
/// each reset: PostgreSQL string literals without backslash escapes; MySQL/MariaDB a
/// `sql_mode` without `NO_BACKSLASH_ESCAPES` / `ANSI_QUOTES`.
fn session_pins(dialect: OdbcDialect) -> &'static [&'static str] {
    match dialect {
        OdbcDialect::Postgres => &["SET standard_conforming_strings = on"],
        OdbcDialect::Mysql => &[crate::mysql::PIN_SQL_MODE],
        _ => &[],
    }
}

/// Run when a connection returns to the pool, before the session setup and pins again.
/// PostgreSQL: advisory locks released, `search_path` and role back to their defaults
/// (not `RESET ALL`: psqlODBC sets its own session settings at connect). MySQL/MariaDB:
/// `GET_LOCK` locks released (`RELEASE_ALL_LOCKS`, MariaDB 10.5+ / MySQL 5.7+). Not possible
/// over ODBC: MySQL user variables (no `COM_RESET_CONNECTION`) and other settings a statement
/// changed; the native drivers reset those.
fn session_reset(dialect: OdbcDialect) -> Vec<&'static str> {
    let reset: &[&str] = match dialect {
        OdbcDialect::Postgres => {
            &["SELECT pg_advisory_unlock_all()", "RESET search_path", "RESET ROLE", "CLOSE ALL", "UNLISTEN *"]
        }
        OdbcDialect::Mysql => &["DO RELEASE_ALL_LOCKS()"],
        _ => &[],
    };
    reset.iter().chain(session_pins(dialect)).copied().collect()
}

pub(crate) struct OdbcDb {
    pool: DbPool<OdbcSession>,
    dialect: OdbcDialect,
    database: String,
}

impl OdbcDb {
    pub(crate) fn open(spec: &ConnectionSpec) -> Result<Self, DriverError> {
        let dialect = spec.dialect.unwrap_or(OdbcDialect::Generic);
        let password = spec.password.resolve()?;
        let connection_string = Secret::new(connection_string(spec, password.as_ref(), dialect)?);
        let env = environment()?;
        let secrets: Vec<Secret> = password
            .into_iter()
            .chain(spec.connection_string.clone())
            .chain([connection_string.clone()])
            .collect();
        let target =
            spec.dsn.clone().map(|d| format!("DSN {d}")).unwrap_or_else(|| "connection string".into());
        let manual_commit = dialect.odbc_begin_read_only().is_some();
        let pool = DbPool::open(&spec.pool, move || {
            let refs: Vec<&Secret> = secrets.iter().collect();
            let options = ConnectionOptions {
                login_timeout_sec: Some(LOGIN_TIMEOUT_SECS),
                ..ConnectionOptions::default()
            };
            let conn = ffi::connect_read_only(env, connection_string.expose(), options)
                .map_err(|e| DriverError::Open(scrub(connect_error(&e, &target), &refs)))?;
            for statement in dialect.odbc_session_setup().iter().chain(session_pins(dialect)) {
                conn.execute(statement, (), None).map_err(|e| {
                    DriverError::Open(format!(
                        "odbc {target}: session setup `{statement}` failed: {}",
                        message(&e)
                    ))
                })?;
            }
            if manual_commit {
                conn.set_autocommit(false).map_err(|e| DriverError::Open(message(&e)))?;
            }
            Ok(OdbcSession { conn, dialect })
        })?;
        let database = spec.database.clone().unwrap_or_default();
        Ok(Self { pool, dialect, database })
    }
}

/// The connection string handed to the driver manager: the configured one or `DSN=...`, plus
/// credentials and the streaming switches of drivers known to buffer whole results.
fn connection_string(
    spec: &ConnectionSpec,
    password: Option<&Secret>,
    dialect: OdbcDialect,
) -> Result<String, DriverError> {
    let mut cs = match (&spec.connection_string, &spec.dsn) {
        (Some(cs), _) => cs.expose().trim_end_matches(';').to_owned(),
        (None, Some(dsn)) => format!("DSN={}", odbc_api::escape_attribute_value(dsn)),
        (None, None) => return Err(DriverError::Open("odbc: give a dsn or a connectionString".into())),
    };
    let has = |cs: &str, key: &str| {
        cs.split(';').any(|kv| kv.split('=').next().is_some_and(|k| k.trim().eq_ignore_ascii_case(key)))
    };
    if let Some(user) = &spec.user
        && !has(&cs, "UID")
    {
        cs.push_str(&format!(";UID={}", odbc_api::escape_attribute_value(user)));
    }
    if let Some(password) = password
        && !has(&cs, "PWD")
    {
        cs.push_str(&format!(";PWD={}", odbc_api::escape_attribute_value(password.expose())));
    }
    let extras: &[(&str, &str)] = match dialect {
        // Fetch through a server-side cursor instead of reading the whole result at execute;
        // booleans as SQL_BIT.
        OdbcDialect::Postgres => &[("UseDeclareFetch", "1"), ("Fetch", "1000"), ("BoolsAsChar", "0")],
        // Stream rows (mysql_use_result) instead of caching the result set.
        OdbcDialect::Mysql => &[("NO_CACHE", "1")],
        // sqliteodbc reads the whole result at execute unless it steps through it.
        OdbcDialect::Sqlite => &[("StepAPI", "1")],
        _ => &[],
    };
    for (key, value) in extras {
        if !has(&cs, key) {
            cs.push_str(&format!(";{key}={value}"));
        }
    }
    Ok(cs)
}

fn message(e: &odbc_api::Error) -> String {
    match e {
        odbc_api::Error::Diagnostics { record, .. } => {
            let text = record.to_string();
            let msg = text.split_once("Message: ").map_or(text.as_str(), |(_, m)| m).trim().to_owned();
            format!("{msg} (SQLSTATE {}, native error {})", record.state.as_str(), record.native_error)
        }
        other => other.to_string(),
    }
}

fn state(e: &odbc_api::Error) -> Option<&str> {
    match e {
        odbc_api::Error::Diagnostics { record, .. } => Some(record.state.as_str()),
        _ => None,
    }
}

fn connect_error(e: &odbc_api::Error, target: &str) -> String {
    let detail = message(e);
    let specific = match state(e) {
        Some("IM002") => format!("data source name or driver not found: {detail}"),
        Some("IM003") | Some("IM004") => {
            format!("the ODBC driver could not be loaded (driver missing?): {detail}")
        }
        Some("28000") => format!("authentication failed: {detail}"),
        Some(s) if s.starts_with("08") => format!("cannot reach the server: {detail}"),
        _ => detail,
    };
    format!("odbc {target}: {specific}")
}

fn query_error(e: &odbc_api::Error, interrupt: &Interrupt) -> DriverError {
    match state(e) {
        // Operation canceled; timeout expired.
        Some("HY008") | Some("HYT00") => interrupt.stopped(),
        _ if interrupt.check().is_err() => interrupt.stopped(),
        _ => DriverError::Query(message(e)),
    }
}

impl Driver for OdbcDb {
    fn ping(&self) -> Result<(), DriverError> {
        self.pool.check_health()
    }

    fn pool_status(&self) -> crate::PoolStatus {
        self.pool.status()
    }

    fn query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let params = crate::query::convert_params(params, to_param)?;
        let mut pooled = self.pool.acquire(interrupt.remaining())?;
        // ODBC hides the server's session id behind the driver; no dialect is asked for it.
        sink.started(None)?;
        run(&mut pooled, sql, &params, interrupt, sink)
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        let mut rows = OdbcText { db: self };
        match self.dialect.catalog_sql() {
            Some(sql) => {
                crate::catalog::assemble(&mut rows, sql, self.dialect, connection, DbKind::Odbc, progress)
            }
            None => {
                let mut pooled = self.pool.acquire(None)?;
                let mut rows = generic_catalog(&pooled.conn.conn).inspect_err(|_| pooled.broken = true)?;
                drop(pooled);
                crate::catalog::assemble(
                    &mut rows,
                    &GENERIC_CATALOG,
                    self.dialect,
                    connection,
                    DbKind::Odbc,
                    progress,
                )
            }
        }
    }

    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        crate::privileges::check(&mut OdbcText { db: self }, self.dialect, &self.database)
    }

    fn sql_dialect(&self) -> OdbcDialect {
        self.dialect
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn to_param(p: &serde_json::Value) -> Result<Box<dyn InputParameter>, &'static str> {
    use serde_json::Value as J;
    Ok(match p {
        J::Null => Box::new(Nullable::<i64>::null()),
        J::Bool(b) => Box::new(i64::from(*b)),
        J::Number(n) => match n.as_i64() {
            Some(i) => Box::new(i),
            None if n.is_u64() => return Err("integer out of range for a 64-bit signed integer"),
            None => Box::new(n.as_f64().ok_or("unsupported number")?),
        },
        J::String(s) => Box::new(VarWCharBox::from_str_slice(s)),
        J::Array(_) => return Err("arrays are not supported"),
        J::Object(_) => return Err("objects are not supported"),
    })
}

fn run(
    pooled: &mut Pooled<OdbcSession>,
    sql: &str,
    params: &[Box<dyn InputParameter>],
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let dialect = pooled.conn.dialect;
    let conn = &pooled.conn.conn;
    if let Some(begin) = dialect.odbc_begin_read_only()
        && let Err(e) = conn.execute(begin, (), None)
    {
        pooled.broken = true;
        return Err(query_error(&e, interrupt));
    }
    let outcome = stream(conn, dialect, sql, params, interrupt, sink);
    let conn = &pooled.conn.conn;
    let ended = if dialect.odbc_begin_read_only().is_some() {
        if outcome.is_ok() { conn.commit() } else { conn.rollback() }
    } else {
        Ok(())
    };
    if ended.is_err() || matches!(outcome, Err(DriverError::Cancelled | DriverError::Timeout)) {
        // A cancelled statement may leave driver state behind: do not reuse the connection.
        pooled.broken = true;
    }
    outcome
}

/// How a result column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Float,
    Decimal,
    Text(WireType),
    Bytes,
    Date,
    Timestamp,
}

fn kind_of(data_type: DataType) -> (Kind, String) {
    let len = |l: Option<std::num::NonZeroUsize>| l.map(|n| format!("({n})")).unwrap_or_default();
    match data_type {
        DataType::Integer => (Kind::Int, "INTEGER".into()),
        DataType::SmallInt => (Kind::Int, "SMALLINT".into()),
        DataType::TinyInt => (Kind::Int, "TINYINT".into()),
        DataType::BigInt => (Kind::Int, "BIGINT".into()),
        DataType::Bit => (Kind::Bool, "BIT".into()),
        DataType::Real => (Kind::Float, "REAL".into()),
        DataType::Float { .. } => (Kind::Float, "FLOAT".into()),
        DataType::Double => (Kind::Float, "DOUBLE".into()),
        DataType::Numeric { precision, scale } => (Kind::Decimal, format!("NUMERIC({precision},{scale})")),
        DataType::Decimal { precision, scale } => (Kind::Decimal, format!("DECIMAL({precision},{scale})")),
        DataType::Char { length } => (Kind::Text(WireType::Text), format!("CHAR{}", len(length))),
        DataType::WChar { length } => (Kind::Text(WireType::Text), format!("WCHAR{}", len(length))),
        DataType::Varchar { length } => (Kind::Text(WireType::Text), format!("VARCHAR{}", len(length))),
        DataType::WVarchar { length } => (Kind::Text(WireType::Text), format!("WVARCHAR{}", len(length))),
        DataType::LongVarchar { length } => {
            (Kind::Text(WireType::Text), format!("LONGVARCHAR{}", len(length)))
        }
        DataType::WLongVarchar { length } => {
            (Kind::Text(WireType::Text), format!("WLONGVARCHAR{}", len(length)))
        }
        DataType::Binary { length } => (Kind::Bytes, format!("BINARY{}", len(length))),
        DataType::Varbinary { length } => (Kind::Bytes, format!("VARBINARY{}", len(length))),
        DataType::LongVarbinary { length } => (Kind::Bytes, format!("LONGVARBINARY{}", len(length))),
        DataType::Date => (Kind::Date, "DATE".into()),
        DataType::Time { .. } => (Kind::Text(WireType::Time), "TIME".into()),
        DataType::Timestamp { .. } => (Kind::Timestamp, "TIMESTAMP".into()),
        // SQL_GUID
        DataType::Other { data_type, .. } if data_type.0 == -11 => {
            (Kind::Text(WireType::Uuid), "GUID".into())
        }
        // SQL Server datetimeoffset
        DataType::Other { data_type, .. } if data_type.0 == -155 => {
            (Kind::Text(WireType::TimestampTz), "DATETIMEOFFSET".into())
        }
        DataType::Other { data_type, .. } => {
            (Kind::Text(WireType::Unknown), format!("SQL_TYPE({})", data_type.0))
        }
        DataType::Unknown => (Kind::Text(WireType::Unknown), String::new()),
    }
}

impl Kind {
    fn wire_type(self) -> WireType {
        match self {
            Kind::Int => WireType::Integer,
            Kind::Bool => WireType::Boolean,
            Kind::Float => WireType::Float,
            Kind::Decimal => WireType::Decimal,
            Kind::Text(w) => w,
            Kind::Bytes => WireType::Bytes,
            Kind::Date => WireType::Date,
            Kind::Timestamp => WireType::Timestamp,
        }
    }
}

/// One fetched value, before it becomes a cell.
enum Val {
    Null,
    Int(i64),
    Bool(bool),
    Float(f64),
    /// UTF-8 in the column's buffer.
    Text,
    Decimal,
    Bytes,
    Date(Date),
    Timestamp(Timestamp),
}

fn stream(
    conn: &Connection<'static>,
    dialect: OdbcDialect,
    sql: &str,
    params: &[Box<dyn InputParameter>],
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let mut prepared = conn.prepare(sql).map_err(|e| query_error(&e, interrupt))?;
    if let Ok(n) = prepared.num_params()
        && usize::from(n) != params.len()
    {
        return Err(DriverError::Bind(format!("query takes {n} parameters, {} given", params.len())));
    }
    if let Some(left) = interrupt.remaining() {
        // Whole seconds; the alarm below cancels at the exact deadline.
        let _ = prepared.set_query_timeout_sec(left.as_secs().max(1) as usize + 1);
    }
    let handle = ffi::CancelHandle::new(prepared.as_stmt_ref().as_sys());
    let hook = interrupt.cancel.on_cancel(move || handle.cancel());
    let alarm = interrupt.deadline.map(|deadline| Alarm::arm(deadline, move || handle.cancel()));
    let outcome = fetch(&mut prepared, params, dialect.odbc_narrow_text(), interrupt, sink);
    // Both are disarmed (waiting for a running SQLCancel) before `prepared` is freed.
    let fired = hook.disarm() | alarm.is_some_and(Alarm::disarm);
    drop(prepared);
    match outcome {
        Err(_) if fired => Err(interrupt.stopped()),
        other => other,
    }
}

fn fetch(
    prepared: &mut odbc_api::Prepared<StatementImpl<'_>>,
    params: &[Box<dyn InputParameter>],
    narrow: bool,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let Some(mut cursor) = prepared.execute(params).map_err(|e| query_error(&e, interrupt))? else {
        sink.columns(&[])?;
        return Ok(QueryStats { rows: 0, columns: 0 });
    };
    let result = read(&mut cursor, narrow, interrupt, sink);
    // Never close the cursor through odbc-api's `Drop`, which panics when SQLCloseCursor fails
    // (drivers do fail it after SQLCancel); freeing the statement handle closes it anyway.
    let _ = cursor.into_stmt();
    result
}

fn read(
    cursor: &mut odbc_api::CursorImpl<odbc_api::handles::StatementRef<'_>>,
    narrow: bool,
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let width = cursor.num_result_cols().map_err(|e| query_error(&e, interrupt))?.max(0) as u16;
    let mut kinds = Vec::with_capacity(usize::from(width));
    let mut columns = Vec::with_capacity(usize::from(width));
    for i in 1..=width {
        let name = cursor.col_name(i).map_err(|e| query_error(&e, interrupt))?;
        let data_type = cursor.col_data_type(i).map_err(|e| query_error(&e, interrupt))?;
        let nullable = match cursor.col_nullability(i) {
            Ok(odbc_api::Nullability::Nullable) => Some(true),
            Ok(odbc_api::Nullability::NoNulls) => Some(false),
            _ => None,
        };
        let (kind, db_type) = kind_of(data_type);
        kinds.push(kind);
        columns.push(ColumnMeta { name, wire_type: kind.wire_type(), db_type, nullable });
    }
    sink.columns(&columns)?;

    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); kinds.len()];
    let mut wide: Vec<u16> = Vec::new();
    let mut vals: Vec<Val> = Vec::with_capacity(kinds.len());
    let mut rowbuf = RowBuf::default();
    let mut count = 0u64;
    loop {
        interrupt.check_row(count)?;
        let Some(mut row) = cursor.next_row().map_err(|e| query_error(&e, interrupt))? else { break };
        vals.clear();
        for (i, kind) in kinds.iter().enumerate() {
            let col = (i + 1) as u16;
            let err = |e: odbc_api::Error| query_error(&e, interrupt);
            let val = match kind {
                Kind::Int => {
                    let mut v = Nullable::<i64>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Val::Null, Val::Int)
                }
                Kind::Bool => {
                    let mut v = Nullable::<Bit>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Val::Null, |b| Val::Bool(b.as_bool()))
                }
                Kind::Float => {
                    let mut v = Nullable::<f64>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Val::Null, Val::Float)
                }
                Kind::Date => {
                    let mut v = Nullable::<Date>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Val::Null, Val::Date)
                }
                Kind::Timestamp => {
                    let mut v = Nullable::<Timestamp>::null();
                    row.get_data(col, &mut v).map_err(err)?;
                    v.into_opt().map_or(Val::Null, Val::Timestamp)
                }
                Kind::Bytes => {
                    if row.get_binary(col, &mut bufs[i]).map_err(err)? {
                        Val::Bytes
                    } else {
                        Val::Null
                    }
                }
                Kind::Decimal | Kind::Text(_) if narrow => {
                    let buf = &mut bufs[i];
                    if row.get_text(col, buf).map_err(err)? {
                        if std::str::from_utf8(buf).is_err() {
                            let fixed = String::from_utf8_lossy(buf).into_owned();
                            *buf = fixed.into_bytes();
                        }
                        if *kind == Kind::Decimal { Val::Decimal } else { Val::Text }
                    } else {
                        Val::Null
                    }
                }
                Kind::Decimal | Kind::Text(_) => {
                    if row.get_wide_text(col, &mut wide).map_err(err)? {
                        let buf = &mut bufs[i];
                        buf.clear();
                        let mut tmp = [0u8; 4];
                        for c in char::decode_utf16(wide.iter().copied()) {
                            buf.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut tmp).as_bytes());
                        }
                        if *kind == Kind::Decimal { Val::Decimal } else { Val::Text }
                    } else {
                        Val::Null
                    }
                }
            };
            vals.push(val);
        }
        rowbuf.emit(sink, |f| {
            for (i, val) in vals.iter().enumerate() {
                let text = || std::str::from_utf8(&bufs[i]).unwrap_or_default();
                match val {
                    Val::Null => f.cell(Cell::Null),
                    Val::Int(v) => f.cell(Cell::Int(*v)),
                    Val::Bool(v) => f.cell(Cell::Bool(*v)),
                    Val::Float(v) => f.cell(Cell::Float(*v)),
                    Val::Text => f.cell(Cell::Text(text())),
                    Val::Decimal => f.cell(Cell::Decimal(text())),
                    Val::Bytes => f.cell(Cell::Bytes(&bufs[i])),
                    Val::Date(d) => {
                        f.text_with(|s| write_ymd(s, i64::from(d.year), u32::from(d.month), u32::from(d.day)))
                    }
                    Val::Timestamp(t) => f.text_with(|s| {
                        write_ymd(s, i64::from(t.year), u32::from(t.month), u32::from(t.day));
                        s.push('T');
                        write_hms(
                            s,
                            u32::from(t.hour),
                            u32::from(t.minute),
                            u32::from(t.second),
                            t.fraction / 1000,
                        );
                    }),
                }
            }
            Ok(())
        })?;
        count += 1;
    }
    Ok(QueryStats { rows: count, columns: kinds.len() })
}

/// Markers for the row sets of [`generic_catalog`] (not SQL: catalog functions fill them).
static GENERIC_CATALOG: crate::CatalogSql = crate::CatalogSql {
    tables: "SQLTables",
    columns: "SQLColumns",
    primary_keys: "SQLPrimaryKeys",
    foreign_keys: "SQLForeignKeys",
    enums: None,
};

/// Catalogue rows of a generic ODBC source from the ODBC catalog functions, in the layout of
/// [`crate::CatalogSql`]: `SQLTables` and `SQLColumns` once, `SQLPrimaryKeys` and
/// `SQLForeignKeys` per table (the standard offers no bulk form).
fn generic_catalog(conn: &Connection<'static>) -> Result<crate::catalog::MemRows, DriverError> {
    let err = |e: odbc_api::Error| DriverError::Query(message(&e));
    let text = |v: &odbc_api::parameter::VarCharArray<128>| v.as_str().ok().flatten().map(str::to_owned);
    let mut rows = crate::catalog::MemRows::default();
    let mut tables = Vec::new();
    for row in conn.tables("", "", "", "TABLE,VIEW").map_err(err)? {
        let row = row.map_err(err)?;
        let schema = text(&row.schema).unwrap_or_default();
        let name = row.table.as_str().ok().flatten().unwrap_or_default().to_owned();
        let kind = row.table_type.as_str().ok().flatten().unwrap_or("TABLE").to_owned();
        tables.push((schema.clone(), name.clone()));
        rows.push("SQLTables", vec![Some(schema), Some(name), Some(kind), None]);
    }
    for row in conn.columns("", "", "", "").map_err(err)? {
        let row = row.map_err(err)?;
        let type_name = row.type_name.as_str().ok().flatten().unwrap_or_default().to_owned();
        rows.push(
            "SQLColumns",
            vec![
                Some(text(&row.schema).unwrap_or_default()),
                row.table.as_str().ok().flatten().map(str::to_owned),
                row.column_name.as_str().ok().flatten().map(str::to_owned),
                Some(row.ordinal_position.to_string()),
                Some(type_name),
                Some(if row.nullable == 0 { "NO" } else { "YES" }.to_owned()),
                row.column_default.as_str().ok().flatten().map(str::to_owned),
            ],
        );
    }
    for (schema, table) in &tables {
        let schema_filter = (!schema.is_empty()).then_some(schema.as_str());
        for row in conn.primary_keys(None, schema_filter, table).map_err(err)? {
            let row = row.map_err(err)?;
            rows.push(
                "SQLPrimaryKeys",
                vec![
                    Some(schema.clone()),
                    Some(table.clone()),
                    row.column.as_str().ok().flatten().map(str::to_owned),
                    Some(row.key_seq.to_string()),
                ],
            );
        }
        // Drivers that cannot list foreign keys (or views) answer with an error: no keys.
        let Ok(fks) = conn.foreign_keys("", "", "", "", schema, table) else { continue };
        for row in fks {
            let Ok(row) = row else { break };
            rows.push(
                "SQLForeignKeys",
                vec![
                    Some(schema.clone()),
                    Some(table.clone()),
                    Some(format!(
                        "{}:{}",
                        row.fk_name.as_str().ok().flatten().unwrap_or_default(),
                        row.pk_table.as_str().ok().flatten().unwrap_or_default()
                    )),
                    row.fk_column.as_str().ok().flatten().map(str::to_owned),
                    Some(row.key_seq.to_string()),
                    Some(text(&row.pk_schema).unwrap_or_default()),
                    row.pk_table.as_str().ok().flatten().map(str::to_owned),
                    row.pk_column.as_str().ok().flatten().map(str::to_owned),
                ],
            );
        }
    }
    Ok(rows)
}

struct OdbcText<'a> {
    db: &'a OdbcDb,
}

impl TextRows for OdbcText<'_> {
    fn each_row(&mut self, sql: &str, row: &mut crate::catalog::RowFn<'_>) -> Result<(), DriverError> {
        let interrupt = Interrupt::new(&crate::QueryOptions::default(), std::time::Instant::now());
        let mut pooled = self.db.pool.acquire(None)?;
        let mut sink = TextSink { row, error: None };
        match run(&mut pooled, sql, &[], &interrupt, &mut sink) {
            Ok(_) => Ok(()),
            Err(e) => Err(sink.unwrap_error(e)),
        }
    }
}

#[allow(dead_code)]
const _: Duration = Duration::ZERO;
