//! Query options, cancellation, statistics and the statement-kind check.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::parser::Parser;

use crate::{DriverError, OdbcDialect};

/// Shared flag that cancels a running query from another thread.
///
/// Clones share the flag. Cancelling is sticky: a token stays cancelled. Drivers whose query
/// blocks inside a network call register a hook (PostgreSQL cancel request, MySQL
/// `KILL QUERY`, ODBC `SQLCancel`) that [`cancel`](Self::cancel) runs on the calling thread.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Shared>);

#[derive(Default)]
struct Shared {
    cancelled: AtomicBool,
    hooks: Mutex<Hooks>,
}

type Hook = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Hooks {
    next_id: u64,
    list: Vec<(u64, Hook)>,
}

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the query using this token to stop; it ends with [`DriverError::Cancelled`].
    ///
    /// Runs the stop hooks of the running query (if any) before returning; that may take a
    /// network round trip.
    pub fn cancel(&self) {
        if self.0.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        // Hooks run under the lock: a query that finishes meanwhile waits in `HookGuard::drop`
        // until its hook returned, so a hook never acts on a connection already handed back.
        let hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, hook) in &hooks.list {
            hook();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Registers `hook` to run on [`cancel`](Self::cancel) until the guard is dropped; runs it
    /// at once when the token is already cancelled.
    pub(crate) fn on_cancel(&self, hook: impl Fn() + Send + 'static) -> HookGuard {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let hook: Hook = Box::new(move || {
            flag.store(true, Ordering::SeqCst);
            hook();
        });
        let id = {
            let mut hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
            let id = hooks.next_id;
            hooks.next_id += 1;
            if self.is_cancelled() {
                hook();
            }
            hooks.list.push((id, hook));
            id
        };
        HookGuard { token: self.clone(), id, fired }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelToken").field(&self.is_cancelled()).finish()
    }
}

/// Keeps a cancel hook registered; dropping it removes the hook (waiting for a hook that is
/// running right now).
pub(crate) struct HookGuard {
    token: CancelToken,
    id: u64,
    fired: Arc<AtomicBool>,
}

impl HookGuard {
    /// Unregisters the hook (waiting for it if it is running) and says whether it ran.
    pub(crate) fn disarm(self) -> bool {
        let fired = self.fired.clone();
        drop(self);
        fired.load(Ordering::SeqCst)
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let mut hooks = self.token.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks.list.retain(|(id, _)| *id != self.id);
    }
}

/// Per-query limits.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Bound on the whole call, including the wait for a pooled connection; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Cancels the query when set from another thread.
    pub cancel: CancelToken,
}

/// What a finished query delivered to its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Rows pushed to the sink.
    pub rows: u64,
    /// Columns in the result set.
    pub columns: usize,
}

/// Deadline and cancel token of one running query, checked by drivers between steps.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt {
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: CancelToken,
}

impl Interrupt {
    pub(crate) fn new(opts: &QueryOptions, start: Instant) -> Self {
        Self {
            // A timeout too large to represent is no timeout.
            deadline: opts.timeout.and_then(|t| start.checked_add(t)),
            cancel: opts.cancel.clone(),
        }
    }

    /// Time left before the deadline, `None` without a deadline.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whole milliseconds left, at least 1; `None` without a deadline (for server-side limits).
    pub(crate) fn remaining_ms(&self) -> Option<u64> {
        self.remaining().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// The error for a query the server stopped: `Cancelled` if the token says so, else `Timeout`.
    pub(crate) fn stopped(&self) -> DriverError {
        if self.cancel.is_cancelled() { DriverError::Cancelled } else { DriverError::Timeout }
    }

    /// Whether the query must stop now; cancellation wins over the deadline.
    pub(crate) fn check(&self) -> Result<(), DriverError> {
        if self.cancel.is_cancelled() {
            Err(DriverError::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(DriverError::Timeout)
        } else {
            Ok(())
        }
    }
}

/// Checks that `sql` is exactly one read-only query (`SELECT`, `WITH ... SELECT`, `VALUES`).
///
/// One trailing `;` is accepted. Anything else fails with [`DriverError::WriteRejected`] and a
/// reason naming what was found. This is a statement-kind check only; drivers additionally run
/// queries on read-only connections, so a write fails in the database even if it slips past.
///
/// ```
/// use drivers::check_read_only_statement;
/// assert!(check_read_only_statement("SELECT * FROM customers;").is_ok());
/// assert!(check_read_only_statement("DELETE FROM customers").is_err());
/// ```
pub fn check_read_only_statement(sql: &str) -> Result<(), DriverError> {
    check_read_only_statement_in(sql, OdbcDialect::Sqlite)
}

/// [`check_read_only_statement`] in the SQL dialect of the target engine (backticks for
/// MySQL, `::` casts and `$1` for PostgreSQL, brackets for SQL Server...).
///
/// ```
/// use drivers::{OdbcDialect, check_read_only_statement_in};
/// assert!(check_read_only_statement_in("SELECT `order` FROM t", OdbcDialect::Mysql).is_ok());
/// assert!(check_read_only_statement_in("SELECT 1; DELETE FROM t", OdbcDialect::Postgres).is_err());
/// ```
pub fn check_read_only_statement_in(sql: &str, dialect: OdbcDialect) -> Result<(), DriverError> {
    // PostgreSQL takes `?` placeholders too (rewritten to `$n` by the driver); sqlparser's
    // PostgreSQL dialect reads `?` as the jsonb operator only.
    let rewritten;
    let sql = match Parser::parse_sql(dialect.parser().as_ref(), sql) {
        Err(_) if dialect == OdbcDialect::Postgres && crate::placeholders::count_question(sql) > 0 => {
            rewritten = crate::placeholders::question_to_dollar(sql, usize::MAX);
            rewritten.as_ref()
        }
        _ => sql,
    };
    let statements = Parser::parse_sql(dialect.parser().as_ref(), sql)
        .map_err(|e| DriverError::WriteRejected(format!("could not parse query: {e}")))?;
    match statements.as_slice() {
        [] => Err(DriverError::WriteRejected("no statement found".into())),
        [Statement::Query(query)] => match write_in_query(query) {
            None => Ok(()),
            Some(found) => Err(rejected(found)),
        },
        [other] => Err(rejected(&statement_keyword(other))),
        many => Err(DriverError::WriteRejected(format!(
            "only a single read-only query is allowed; found {} statements",
            many.len()
        ))),
    }
}

fn rejected(found: &str) -> DriverError {
    DriverError::WriteRejected(format!("only a single read-only query is allowed; found {found}"))
}

/// Names a data-changing part of a query (`WITH x AS (...) INSERT ...`, `SELECT ... INTO`).
fn write_in_query(query: &Query) -> Option<&'static str> {
    if let Some(with) = &query.with
        && let Some(found) = with.cte_tables.iter().find_map(|cte| write_in_query(&cte.query))
    {
        return Some(found);
    }
    write_in_set_expr(&query.body)
}

fn write_in_set_expr(body: &SetExpr) -> Option<&'static str> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => Some("SELECT INTO"),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => None,
        SetExpr::Query(query) => write_in_query(query),
        SetExpr::SetOperation { left, right, .. } => {
            write_in_set_expr(left).or_else(|| write_in_set_expr(right))
        }
        SetExpr::Insert(_) => Some("INSERT"),
        SetExpr::Update(_) => Some("UPDATE"),
        SetExpr::Delete(_) => Some("DELETE"),
        SetExpr::Merge(_) => Some("MERGE"),
    }
}

/// The leading keyword(s) of a statement, e.g. `INSERT`, `CREATE TABLE`, `PRAGMA`.
fn statement_keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => {
            // Skip modifiers so `CREATE OR REPLACE TEMPORARY VIEW` reads `CREATE VIEW`.
            const MODIFIERS: &[&str] = &["OR", "REPLACE", "TEMP", "TEMPORARY", "UNIQUE", "IF"];
            match words.map(str::to_ascii_uppercase).find(|w| !MODIFIERS.contains(&w.as_str())) {
                Some(object) => format!("{first} {object}"),
                None => first,
            }
        }
        _ => first,
    }
}

/// Converts every bound parameter with `convert`, naming the first bad one (1-based) in a
/// `Bind` error. Parameters are always bound, never spliced into the text.
pub(crate) fn convert_params<T>(
    params: &[serde_json::Value],
    convert: impl Fn(&serde_json::Value) -> Result<T, &'static str>,
) -> Result<Vec<T>, DriverError> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| convert(p).map_err(|what| DriverError::Bind(format!("parameter {}: {what}", i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(sql: &str) -> String {
        match check_read_only_statement(sql) {
            Err(DriverError::WriteRejected(reason)) => reason,
            other => panic!("{sql:?} was not rejected: {other:?}"),
        }
    }

    #[test]
    fn accepts_single_queries() {
        for sql in [
            "SELECT 1",
            "select * from customers;",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c",
            "VALUES (1, 2), (3, 4)",
            "SELECT 1 UNION SELECT 2",
            "  -- comment\n SELECT 'a;b' ; ",
        ] {
            assert!(check_read_only_statement(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn rejects_writes_naming_what_was_found() {
        assert_eq!(
            reason("INSERT INTO t VALUES (1)"),
            "only a single read-only query is allowed; found INSERT"
        );
        assert!(reason("update t set a = 1").ends_with("found UPDATE"));
        assert!(reason("DELETE FROM t").ends_with("found DELETE"));
        assert!(reason("CREATE TABLE t (a INT)").ends_with("found CREATE TABLE"));
        assert!(reason("CREATE TEMP VIEW v AS SELECT 1").ends_with("found CREATE VIEW"));
        assert!(reason("DROP TABLE IF EXISTS t").ends_with("found DROP TABLE"));
        assert!(reason("PRAGMA query_only = 0").ends_with("found PRAGMA"));
        // Not valid for sqlparser, still rejected.
        assert!(reason("PRAGMA query_only = OFF").starts_with("could not parse query"));
        assert!(reason("ATTACH DATABASE 'x.db' AS x").ends_with("found ATTACH"));
        assert!(reason("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x").ends_with("found INSERT"));
    }

    #[test]
    fn rejects_multiple_and_unparseable_statements() {
        assert!(reason("SELECT 1; DELETE FROM t").ends_with("found 2 statements"));
        assert!(reason("SELECT 1; SELECT 2").ends_with("found 2 statements"));
        assert!(reason("SELEC 1").starts_with("could not parse query: "));
        assert_eq!(reason(""), "no statement found");
    }

    #[test]
    fn cancel_runs_registered_hooks_once_and_guards_unregister() {
        use std::sync::atomic::AtomicUsize;
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let guard = token.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let c = calls.clone();
        drop(token.on_cancel(move || {
            c.fetch_add(100, Ordering::SeqCst);
        }));
        token.cancel();
        token.cancel();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(guard.disarm());
        // Registering on a cancelled token runs the hook at once.
        let c = calls.clone();
        let late = token.on_cancel(move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 11);
        assert!(late.disarm());
        assert_eq!(format!("{token:?}"), "CancelToken(true)");
    }

    #[test]
    fn cancel_is_shared_by_clones() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!token.is_cancelled());
        clone.cancel();
        assert!(token.is_cancelled());
    }
}
