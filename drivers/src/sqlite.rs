//! SQLite: an r2d2 pool of read-only connections.
//!
//! Three independent things keep it read-only: the gate's verdict ([`gate::Checked`]), the
//! `sqlite3_stmt_readonly` check after `prepare`, and the connection itself (opened with
//! `SQLITE_OPEN_READ_ONLY` and `PRAGMA query_only = ON`), which refuses writes even when both
//! checks are bypassed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use r2d2::{ManageConnection, Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Statement};
use serde_json::Value;
use sqlparser::ast::{
    ColumnOption, Expr, InTarget, Statement as SqlStatement, TableConstraint, Value as SqlValue,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::database::Driver;
use crate::query::Interrupt;
use crate::rowbuf::recycle_cells as recycle;
use crate::{
    Cell, Column, ColumnMeta, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, ForeignKey,
    OdbcDialect, PoolSettings, PrivilegeReport, QueryStats, RowSink, Table, TableKind, WireType,
};

/// How long a statement waits on a lock held by a writer in another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Virtual-machine instructions between two deadline/cancel checks.
const PROGRESS_OPS: i32 = 1000;
type Conn = PooledConnection<SqliteConnectionManager>;

pub(crate) struct SqliteDb {
    pool: Pool<SqliteConnectionManager>,
    acquire_timeout: Duration,
    path: std::path::PathBuf,
}

impl SqliteDb {
    pub(crate) fn open(path: &Path, settings: &PoolSettings) -> Result<Self, DriverError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(DriverError::Open(format!("not a file: {}", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::Open(format!("database file not found: {}", path.display())));
            }
            Err(e) => {
                return Err(DriverError::Open(format!("{}: {e}", path.display())));
            }
        }
        crate::pool::validate(settings)?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_init(|c| {
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.execute_batch("PRAGMA query_only = ON;")
            });
        // One connection up front, so a file that is not a database fails now and clearly,
        // not after r2d2 retried for the whole acquire timeout. SQLite opens lazily; reading
        // the schema makes it look at the file.
        manager
            .connect()
            .and_then(|c| c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
            .map_err(|e| DriverError::Open(format!("{}: {e}", path.display())))?;
        let non_zero = |d: Duration| (!d.is_zero()).then_some(d);
        let pool = Pool::builder()
            .max_size(settings.max_connections)
            .min_idle(Some(settings.min_connections.min(settings.max_connections)))
            .connection_timeout(settings.acquire_timeout)
            .max_lifetime(non_zero(settings.max_lifetime))
            .idle_timeout(non_zero(settings.idle_timeout))
            .build(manager)
            .map_err(|e| DriverError::Open(format!("{}: {e}", path.display())))?;
        Ok(Self { pool, acquire_timeout: settings.acquire_timeout, path: path.to_owned() })
    }

    /// Takes a pooled connection, waiting at most the acquire timeout or the time left
    /// before `deadline_left`, whichever is shorter (the latter ends in `Timeout`).
    fn acquire(&self, deadline_left: Option<Duration>) -> Result<Conn, DriverError> {
        crate::pool::acquire_within(&self.pool, self.acquire_timeout, deadline_left)
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> Conn {
        self.acquire(None).expect("pooled connection")
    }
}

impl Driver for SqliteDb {
    fn ping(&self) -> Result<(), DriverError> {
        let conn = self.acquire(None)?;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err)?;
        Ok(())
    }

    fn query(
        &self,
        sql: &str,
        params: &[Value],
        interrupt: &Interrupt,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        let conn = self.acquire(interrupt.remaining())?;
        // In-process: the statement dies with the agent, there is nothing to stop from outside.
        sink.started(None)?;
        run_query(&conn, sql, params, interrupt, sink)
    }

    fn pool_status(&self) -> crate::PoolStatus {
        let state = self.pool.state();
        crate::PoolStatus { connections: state.connections, idle: state.idle_connections }
    }

    fn discover(
        &self,
        connection: &str,
        progress: &mut dyn FnMut(DiscoveryProgress),
    ) -> Result<DatabaseSchema, DriverError> {
        let conn = self.acquire(None)?;
        let tables = discover_tables(&conn, progress).map_err(db_err)?;
        Ok(DatabaseSchema { connection: connection.to_owned(), db_type: DbKind::Sqlite, tables })
    }

    /// SQLite has no users: the agent's OS user can write if the file is writable. The pool
    /// opens it read-only regardless.
    fn write_privileges(&self) -> Result<PrivilegeReport, DriverError> {
        let writable = std::fs::metadata(&self.path).map(|m| !m.permissions().readonly()).unwrap_or(false);
        let findings = if writable {
            vec![format!("the database file is writable by the agent's OS user: {}", self.path.display())]
        } else {
            Vec::new()
        };
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_default();
        Ok(crate::privileges::report(
            user,
            false,
            findings,
            crate::privileges::suggested_sql(OdbcDialect::Sqlite, ""),
        ))
    }

    fn sql_dialect(&self) -> OdbcDialect {
        OdbcDialect::Sqlite
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn db_err(e: rusqlite::Error) -> DriverError {
    DriverError::Query(e.to_string())
}

/// Like [`db_err`], but an interrupt becomes `Cancelled` or `Timeout`.
fn run_err(e: rusqlite::Error, interrupt: &Interrupt) -> DriverError {
    if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
        interrupt.check().err().unwrap_or_else(|| db_err(e))
    } else {
        db_err(e)
    }
}

/// Installs the deadline/cancel progress handler for one query; dropping it restores the
/// connection, so the pool hands out a clean one afterwards.
struct InterruptGuard<'c> {
    conn: &'c Connection,
}

impl<'c> InterruptGuard<'c> {
    fn install(conn: &'c Connection, interrupt: &Interrupt) -> Result<Self, DriverError> {
        let check = interrupt.clone();
        conn.progress_handler(PROGRESS_OPS, Some(move || check.check().is_err())).map_err(db_err)?;
        let guard = Self { conn };
        // A lock wait must not outlast the deadline either.
        if let Some(left) = interrupt.remaining() {
            conn.busy_timeout(left.min(BUSY_TIMEOUT)).map_err(db_err)?;
        }
        Ok(guard)
    }
}

impl Drop for InterruptGuard<'_> {
    fn drop(&mut self) {
        let removed = self.conn.progress_handler(0, None::<fn() -> bool>);
        let reset = self.conn.busy_timeout(BUSY_TIMEOUT);
        if let Err(e) = removed.and(reset) {
            tracing::warn!(error = %e, "could not reset sqlite connection after query");
        }
    }
}

fn run_query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    interrupt: &Interrupt,
    sink: &mut dyn RowSink,
) -> Result<QueryStats, DriverError> {
    let _guard = InterruptGuard::install(conn, interrupt)?;
    let mut stmt = conn.prepare(sql).map_err(|e| run_err(e, interrupt))?;
    if !stmt.readonly() {
        return Err(DriverError::WriteRejected("the database reports the statement is not read-only".into()));
    }
    bind_params(&mut stmt, params)?;
    let columns = column_meta(&stmt);
    let width = columns.len();
    sink.columns(&columns)?;

    let mut rows = stmt.raw_query();
    // One buffer for all rows; `recycle` re-types it so each row can borrow afresh.
    let mut buffer: Vec<Cell<'static>> = Vec::with_capacity(width);
    let mut count = 0u64;
    loop {
        interrupt.check_row(count)?;
        let Some(row) = rows.next().map_err(|e| run_err(e, interrupt))? else {
            break;
        };
        let mut cells = recycle(buffer);
        for i in 0..width {
            cells.push(to_cell(row.get_ref(i).map_err(db_err)?));
        }
        sink.row(&cells)?;
        count += 1;
        buffer = recycle(cells);
    }
    Ok(QueryStats { rows: count, columns: width })
}

fn to_cell(value: ValueRef<'_>) -> Cell<'_> {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Float(f),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Cell::Text(text),
            Err(_) => Cell::Bytes(bytes),
        },
        ValueRef::Blob(bytes) => Cell::Bytes(bytes),
    }
}

fn bind_params(stmt: &mut Statement<'_>, params: &[Value]) -> Result<(), DriverError> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(DriverError::Bind(format!("query takes {expected} parameters, {} given", params.len())));
    }
    for (i, param) in params.iter().enumerate() {
        let index = i + 1;
        let value =
            json_to_sql(param).map_err(|what| DriverError::Bind(format!("parameter {index}: {what}")))?;
        stmt.raw_bind_parameter(index, ToSqlOutput::Borrowed(value))
            .map_err(|e| DriverError::Bind(format!("parameter {index}: {e}")))?;
    }
    Ok(())
}

fn json_to_sql(value: &Value) -> Result<ValueRef<'_>, &'static str> {
    match value {
        Value::Null => Ok(ValueRef::Null),
        Value::Bool(b) => Ok(ValueRef::Integer(i64::from(*b))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(ValueRef::Integer(i))
            } else if n.is_u64() {
                Err("integer out of range for a 64-bit signed integer")
            } else {
                n.as_f64().map(ValueRef::Real).ok_or("unsupported number")
            }
        }
        Value::String(s) => Ok(ValueRef::Text(s.as_bytes())),
        Value::Array(_) => Err("arrays are not supported"),
        Value::Object(_) => Err("objects are not supported"),
    }
}

fn column_meta(stmt: &Statement<'_>) -> Vec<ColumnMeta> {
    stmt.columns()
        .iter()
        .map(|c| {
            let decl = c.decl_type().unwrap_or_default();
            ColumnMeta {
                name: c.name().to_owned(),
                wire_type: wire_type(decl),
                db_type: decl.to_owned(),
                nullable: None,
            }
        })
        .collect()
}

/// Maps a declared type to a wire type, following SQLite's affinity rules first
/// (INT, then CHAR/CLOB/TEXT, BLOB, REAL/FLOA/DOUB), then the common names of NUMERIC columns.
pub(crate) fn wire_type(declared: &str) -> WireType {
    let t = declared.to_ascii_uppercase();
    let has = |needle: &str| t.contains(needle);
    if t.trim().is_empty() {
        WireType::Unknown
    } else if has("INT") {
        WireType::Integer
    } else if has("CHAR") || has("CLOB") || has("TEXT") {
        WireType::Text
    } else if has("BLOB") {
        WireType::Bytes
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        WireType::Float
    } else if has("BOOL") {
        WireType::Boolean
    } else if has("TIMESTAMPTZ") || (has("TIMESTAMP") && has("TIME ZONE") && !has("WITHOUT")) {
        WireType::TimestampTz
    } else if has("DATETIME") || has("TIMESTAMP") {
        WireType::Timestamp
    } else if has("DATE") {
        WireType::Date
    } else if has("TIME") {
        WireType::Time
    } else if has("UUID") {
        WireType::Uuid
    } else if has("JSON") {
        WireType::Json
    } else if has("DECIMAL") || has("NUMERIC") {
        WireType::Decimal
    } else {
        WireType::Unknown
    }
}

struct Listed {
    schema: String,
    name: String,
    kind: TableKind,
    without_rowid: bool,
}

pub(crate) fn discover_tables(
    conn: &Connection,
    progress: &mut dyn FnMut(DiscoveryProgress),
) -> rusqlite::Result<Vec<Table>> {
    let mut listed = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT schema, name, type, wr FROM pragma_table_list")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let schema: String = row.get(0)?;
            let name: String = row.get(1)?;
            let kind = match row.get_ref(2)?.as_str()? {
                "table" | "virtual" => TableKind::Table,
                "view" => TableKind::View,
                _ => continue, // shadow tables of virtual tables
            };
            if schema == "temp" || name.starts_with("sqlite_") {
                continue;
            }
            listed.push(Listed { schema, name, kind, without_rowid: row.get(3)? });
        }
    }
    let has_stat1: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'",
        [],
        |r| r.get(0),
    )?;

    let total = listed.len();
    progress(DiscoveryProgress { done: 0, total: Some(total) });
    let mut tables = Vec::with_capacity(total);
    for (i, t) in listed.iter().enumerate() {
        tables.push(describe_table(conn, t, has_stat1)?);
        progress(DiscoveryProgress { done: i + 1, total: Some(total) });
    }
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    crate::views::resolve_sqlite(conn, &mut tables);
    Ok(tables)
}

fn describe_table(conn: &Connection, t: &Listed, has_stat1: bool) -> rusqlite::Result<Table> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
    )?;
    let raw = stmt
        .query_map([&t.name, &t.schema], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let mut pk: Vec<(u32, &str, &str)> =
        raw.iter().filter(|c| c.4 > 0).map(|c| (c.4, c.0.as_str(), c.1.as_str())).collect();
    pk.sort_unstable();
    // A lone INTEGER PRIMARY KEY is the rowid and can never be NULL; so is every key column
    // of a WITHOUT ROWID table. Other SQLite key columns accept NULL unless NOT NULL.
    let rowid_alias = match pk.as_slice() {
        [(_, name, ty)] if ty.eq_ignore_ascii_case("INTEGER") => Some(*name),
        _ => None,
    };
    let enums = if t.kind == TableKind::Table && t.schema == "main" {
        enum_values(conn, &t.name)?
    } else {
        BTreeMap::new()
    };

    let columns = raw
        .iter()
        .map(|(name, ty, not_null, default, key)| Column {
            name: name.clone(),
            data_type: ty.clone(),
            wire_type: wire_type(ty),
            nullable: !(*not_null || (*key > 0 && t.without_rowid) || rowid_alias == Some(name.as_str())),
            default: default.clone(),
            enum_values: enums.get(&name.to_ascii_lowercase()).cloned().unwrap_or_default(),
            presence: None,
        })
        .collect();

    let (foreign_keys, row_count_estimate) = match t.kind {
        TableKind::View => (Vec::new(), None),
        TableKind::Table => (foreign_keys(conn, t)?, Some(row_count(conn, t, has_stat1)?)),
    };
    Ok(Table {
        schema: (t.schema != "main").then(|| t.schema.clone()),
        name: t.name.clone(),
        kind: t.kind,
        columns,
        primary_key: pk.iter().map(|(_, name, _)| (*name).to_owned()).collect(),
        foreign_keys,
        row_count_estimate,
        indexes: Vec::new(),
        reads: None,
    })
}

fn foreign_keys(conn: &Connection, t: &Listed) -> rusqlite::Result<Vec<ForeignKey>> {
    let mut stmt = conn.prepare(
        "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1, ?2) \
         ORDER BY id, seq",
    )?;
    // id → (parent table, child columns, parent columns; `None` = the parent's primary key)
    type Key = (String, Vec<String>, Vec<Option<String>>);
    let mut by_id: BTreeMap<i64, Key> = BTreeMap::new();
    let mut rows = stmt.query([&t.name, &t.schema])?;
    while let Some(row) = rows.next()? {
        let entry = by_id.entry(row.get(0)?).or_insert_with(|| (String::new(), Vec::new(), Vec::new()));
        entry.0 = row.get(1)?;
        entry.1.push(row.get(2)?);
        entry.2.push(row.get(3)?);
    }
    let mut keys = Vec::with_capacity(by_id.len());
    for (ref_table, columns, to) in by_id.into_values() {
        // `REFERENCES parent` without columns means the parent's primary key.
        let ref_columns = if to.iter().all(Option::is_some) {
            to.into_iter().flatten().collect()
        } else {
            primary_key_of(conn, &ref_table, &t.schema)?
        };
        keys.push(ForeignKey { columns, ref_table, ref_columns });
    }
    keys.sort();
    Ok(keys)
}

fn primary_key_of(conn: &Connection, table: &str, schema: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, ?2) WHERE pk > 0 ORDER BY pk")?;
    stmt.query_map([table, schema], |r| r.get(0))?.collect()
}

/// Row count from `sqlite_stat1` (written by `ANALYZE`) when it knows the table, else `count(*)`.
fn row_count(conn: &Connection, t: &Listed, has_stat1: bool) -> rusqlite::Result<u64> {
    if has_stat1 && t.schema == "main" {
        let stat: Option<String> = conn
            .query_row("SELECT stat FROM main.sqlite_stat1 WHERE tbl = ?1 LIMIT 1", [&t.name], |r| r.get(0))
            .optional()?;
        if let Some(n) =
            stat.as_deref().and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok())
        {
            return Ok(n);
        }
    }
    let sql = format!("SELECT count(*) FROM {}.{}", quote_ident(&t.schema), quote_ident(&t.name));
    let count: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(count.max(0) as u64)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Columns restricted to a list of string literals by a `CHECK (col IN ('a', 'b'))`,
/// keyed by lowercase column name. Best effort: SQL that does not parse yields nothing.
fn enum_values(conn: &Connection, table: &str) -> rusqlite::Result<BTreeMap<String, Vec<String>>> {
    let sql: Option<String> = conn
        .query_row("SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    let mut found = BTreeMap::new();
    let Some(sql) = sql else {
        return Ok(found);
    };
    // A long CHECK expression is a deep tree: parse, walk and drop it on a stack sized for it.
    let found = crate::views::on_deep_stack(&sql, || {
        let Ok(statements) = Parser::parse_sql(&SQLiteDialect {}, &sql) else {
            return found;
        };
        let Some(SqlStatement::CreateTable(create)) = statements.first() else {
            return found;
        };
        for column in &create.columns {
            for option in &column.options {
                if let ColumnOption::Check(check) = &option.option
                    && let Some((_, values)) = in_list(&check.expr)
                {
                    found.insert(column.name.value.to_ascii_lowercase(), values);
                }
            }
        }
        for constraint in &create.constraints {
            if let TableConstraint::Check(check) = constraint
                && let Some((column, values)) = in_list(&check.expr)
            {
                found.insert(column.to_ascii_lowercase(), values);
            }
        }
        found
    });
    Ok(found.unwrap_or_default())
}

/// `col IN ('a', 'b', ...)` → `(col, [a, b, ...])`.
fn in_list(expr: &Expr) -> Option<(String, Vec<String>)> {
    match expr {
        Expr::Nested(inner) => in_list(inner),
        Expr::In { expr, target: InTarget::List(list), negated: false, .. } => {
            let Expr::Identifier(column) = expr.as_ref() else {
                return None;
            };
            let values = list
                .iter()
                .map(|item| match item {
                    Expr::Value(v) => match &v.value {
                        SqlValue::SingleQuotedString(s) => Some(s.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((column.value.clone(), values))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionSpec, Database, QueryOptions, SinkError};
    use std::time::Instant;

    /// A fresh, empty sample database and its directory; removed on drop.
    struct Scratch {
        dir: std::path::PathBuf,
        db: Database,
    }

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "drivers-unit-{tag}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("erp.sqlite");
            crate::fixture::create_sample_erp(&path, 0).unwrap();
            let db = Database::open(&ConnectionSpec {
                name: "unit".into(),
                kind: DbKind::Sqlite,
                path,
                ..ConnectionSpec::default()
            })
            .unwrap();
            Self { dir, db }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    struct Discard;
    impl RowSink for Discard {
        fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
            Ok(())
        }
        fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn is_read_only_failure(e: &rusqlite::Error) -> bool {
        e.sqlite_error_code() == Some(ErrorCode::ReadOnly)
    }

    #[test]
    fn pooled_connection_refuses_writes_even_without_the_checks() {
        let scratch = Scratch::new("readonly");
        let conn = scratch.db.sqlite().connection();
        let insert = "INSERT INTO products (sku, name, unit_price, category) VALUES ('x', 'x', 1, 'x')";

        let mut stmt = conn.prepare(insert).unwrap();
        assert!(!stmt.readonly());
        let err = stmt.raw_execute().unwrap_err();
        assert!(is_read_only_failure(&err), "{err}");
        drop(stmt);

        // Turning `query_only` off does not help: the file itself is opened read-only.
        conn.execute_batch("PRAGMA query_only = OFF").unwrap();
        let err = conn.execute(insert, []).unwrap_err();
        assert!(is_read_only_failure(&err), "{err}");
        let err = conn.execute_batch("CREATE TABLE t (a)").unwrap_err();
        assert!(is_read_only_failure(&err), "{err}");
    }

    #[test]
    fn statement_readonly_flag_rejects_writes_that_skip_the_parser_check() {
        let scratch = Scratch::new("stmt-readonly");
        let conn = scratch.db.sqlite().connection();
        let interrupt = Interrupt::new(&QueryOptions::default(), Instant::now());
        let err = run_query(&conn, "DELETE FROM orders", &[], &interrupt, &mut Discard).unwrap_err();
        assert!(matches!(err, DriverError::WriteRejected(_)), "{err}");
    }

    #[test]
    fn progress_handler_interrupts_and_is_removed_after_the_query() {
        let scratch = Scratch::new("handler");
        let conn = scratch.db.sqlite().connection();
        let count_to = |n: u64| {
            format!(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) \
                 SELECT count(*) FROM c"
            )
        };
        // One aggregate row: only the progress handler can stop this.
        let opts = QueryOptions { timeout: Some(Duration::from_millis(50)), ..QueryOptions::default() };
        let interrupt = Interrupt::new(&opts, Instant::now());
        let started = Instant::now();
        let err = run_query(&conn, &count_to(1_000_000_000), &[], &interrupt, &mut Discard).unwrap_err();
        assert!(matches!(err, DriverError::Timeout), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The guard is gone: the same connection now runs a long query to the end.
        let n: i64 = conn.query_row(&count_to(300_000), [], |r| r.get(0)).unwrap();
        assert_eq!(n, 300_000);
    }

    #[test]
    fn declared_types_map_to_wire_types() {
        for (decl, wire) in [
            ("INTEGER", WireType::Integer),
            ("bigint", WireType::Integer),
            ("VARCHAR(20)", WireType::Text),
            ("TEXT", WireType::Text),
            ("CLOB", WireType::Text),
            ("BLOB", WireType::Bytes),
            ("REAL", WireType::Float),
            ("DOUBLE PRECISION", WireType::Float),
            ("FLOAT", WireType::Float),
            ("BOOLEAN", WireType::Boolean),
            ("DATE", WireType::Date),
            ("DATETIME", WireType::Timestamp),
            ("TIMESTAMP", WireType::Timestamp),
            ("TIMESTAMP WITH TIME ZONE", WireType::TimestampTz),
            ("TIME", WireType::Time),
            ("UUID", WireType::Uuid),
            ("JSON", WireType::Json),
            ("NUMERIC", WireType::Decimal),
            ("DECIMAL(10,2)", WireType::Decimal),
            ("", WireType::Unknown),
            ("MONEY", WireType::Unknown),
        ] {
            assert_eq!(wire_type(decl), wire, "{decl}");
        }
    }

    #[test]
    fn check_in_list_becomes_enum_values() {
        let sql = "CREATE TABLE t (a TEXT CHECK (a IN ('x', 'y')), b INT, CHECK (b IN (1, 2)))";
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(sql).unwrap();
        let found = enum_values(&conn, "t").unwrap();
        assert_eq!(found.get("a"), Some(&vec!["x".to_owned(), "y".to_owned()]));
        assert!(!found.contains_key("b"), "numbers are not an enum of strings");
    }
}
