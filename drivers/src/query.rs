//! Query options, cancellation, statistics and the statement-kind check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::DriverError;

/// Shared flag that cancels a running query from another thread.
///
/// Clones share the flag. Cancelling is sticky: a token stays cancelled.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the query using this token to stop; it ends with [`DriverError::Cancelled`].
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql)
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
    fn cancel_is_shared_by_clones() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!token.is_cancelled());
        clone.cancel();
        assert!(token.is_cancelled());
    }
}
