//! The read-only gate: decides whether a SQL text from the cloud may run on a customer database.
//!
//! Every text is hostile until proven otherwise. [`check`] runs three layers, cheapest first,
//! and the first that objects decides the verdict:
//!
//! 1. **Keyword pre-filter** (spec layer "regex", [`keyword_prefilter`]): a lexer that knows the
//!    target's comments, string literals and quoted identifiers looks for write keywords
//!    (`INSERT`, `UPDATE`, `DELETE`, `DROP`, ... `INTO`) in the code → `WRITE_KEYWORD_DETECTED`.
//!    MySQL executable comments (`/*!`, `/*M!`) and optimizer hints (`/*+`) are refused here too.
//! 2. **AST check**: the text must parse (sqlparser, in the target's dialect) as exactly one
//!    query (`SELECT`/`WITH`/`VALUES`) or an `EXPLAIN` of one (never `EXPLAIN ANALYZE`), and
//!    nothing in the whole tree may write, lock rows, sleep, take advisory locks, signal
//!    sessions, read files, change settings, notify, reach other servers, run SQL given as text,
//!    assign variables or advance sequences → `WRITE_OPERATION_REJECTED`. A text scan then
//!    re-checks function calls and lock clauses on the lexer's tokens, in case sqlparser and
//!    the server disagree about where a string or comment ends.
//! 3. **Schema privacy** ([`Policy`]): private tables, private columns (named, or reached through
//!    `*`, `t.*` or a whole-row reference) and tables outside the approved schema →
//!    `SCHEMA_ACCESS_DENIED`, with a reason that never names what is private.
//!
//! The gate is pure: no I/O, no knowledge of the network or the drivers. Parameters are bound
//! by the drivers, never spliced, so the gate only ever sees the text. The database session is
//! read-only as well (layer 3 of the spec's stack); the gate does not rely on it.
//!
//! ```
//! use gate::{check, Dialect, Policy, RejectCode};
//!
//! let policy = Policy::default();
//! let ok = check("SELECT id, total FROM orders WHERE total > $1", Dialect::Postgres, &policy).unwrap();
//! assert_eq!(ok.tables, ["orders"]);
//!
//! let err = check("SELECT pg_sleep(60)", Dialect::Postgres, &policy).unwrap_err();
//! assert_eq!(err.code, RejectCode::WriteOperationRejected);
//! let err = check("DELETE FROM orders", Dialect::Mysql, &policy).unwrap_err();
//! assert_eq!(err.code.as_str(), "WRITE_KEYWORD_DETECTED");
//! ```
#![forbid(unsafe_code)]

mod ast;
mod deny;
mod dialect;
mod lex;
mod policy;

use std::fmt;

use serde::Serialize;
use sqlparser::parser::Parser;

pub use dialect::{Dialect, UnknownDialect};
pub use policy::Policy;

/// Texts longer than this are rejected without being parsed.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Texts longer than this are checked on a stack sized for them. sqlparser builds long operator
/// and UNION chains as left-deep trees without hitting its recursion limit, and dropping such a
/// tree recurses once per level (50 000 `+ 1` overflow a 2 MiB thread stack in a debug build,
/// ~80 bytes per level). Below this size the depth is bounded well within any thread's stack.
const DEEP_TEXT_BYTES: usize = 8 << 10;

/// Why a text was refused: one of the protocol's error codes.
///
/// Deliberately exhaustive (not `#[non_exhaustive]`): callers map it onto the wire codes with
/// a `match` that must stay total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectCode {
    /// The keyword pre-filter found a write keyword in the code.
    WriteKeywordDetected,
    /// The text is not exactly one read-only query, or something in it has side effects.
    WriteOperationRejected,
    /// The query names a private table or column, or a table outside the approved schema.
    SchemaAccessDenied,
}

impl RejectCode {
    /// The wire spelling, e.g. `WRITE_KEYWORD_DETECTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::WriteKeywordDetected => "WRITE_KEYWORD_DETECTED",
            RejectCode::WriteOperationRejected => "WRITE_OPERATION_REJECTED",
            RejectCode::SchemaAccessDenied => "SCHEMA_ACCESS_DENIED",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused text: the code and a short reason naming what was found (for
/// `SCHEMA_ACCESS_DENIED`, without naming anything private).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The protocol error code.
    pub code: RejectCode,
    /// What was found, lower-case sentence without a final period.
    pub reason: String,
}

impl Rejection {
    fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Rejection { code, reason: reason.into() }
    }

    fn write(reason: impl Into<String>) -> Self {
        Rejection::new(RejectCode::WriteOperationRejected, reason)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// The reason given for every `SCHEMA_ACCESS_DENIED`.
pub const SCHEMA_DENIED_REASON: &str =
    "the query references a table or column that is private or not approved";

/// An accepted query, with what the audit log wants to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The tables the query names (CTE names excluded), as written, first occurrence first.
    pub tables: Vec<String>,
    /// The statement is an `EXPLAIN` of a query.
    pub explain: bool,
}

/// Decides whether `sql` may run on a `dialect` database under `policy`.
///
/// Returns the referenced tables when the text is exactly one read-only query with no side
/// effects that names nothing private. See the crate documentation for the layers.
pub fn check(sql: &str, dialect: Dialect, policy: &Policy) -> Result<Checked, Rejection> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_large());
    }
    if sql.len() <= DEEP_TEXT_BYTES {
        check_text(sql, dialect, policy)
    } else {
        // At most one tree level per two bytes of text, at most ~80 bytes of stack per level
        // (debug build): 64 bytes of stack per byte of text, plus 1 MiB. The pages are only
        // touched as deep as the tree actually goes.
        let stack = sql.len().saturating_mul(64).saturating_add(1 << 20);
        stacker::grow(stack, || check_text(sql, dialect, policy))
    }
}

fn check_text(sql: &str, dialect: Dialect, policy: &Policy) -> Result<Checked, Rejection> {
    // Layer 1.
    let lexed = lex::lex(sql, &lex::Rules::of(dialect));
    let scan = lex::scan(sql, &lexed, dialect, true);
    prefilter(&lexed, &scan)?;

    // Layer 2: one statement, by the tokens first (a clearer reason), then by the parser.
    let semicolons = lexed.tokens.iter().filter(|t| t.kind == lex::Kind::Punct(';')).count();
    if semicolons == lexed.tokens.len() {
        return Err(Rejection::write("no statement found"));
    }
    let trailing_only = lexed.tokens.last().is_some_and(|t| t.kind == lex::Kind::Punct(';'));
    if semicolons > 1 || (semicolons == 1 && !trailing_only) {
        return Err(Rejection::write("only one statement is allowed (at most one trailing `;`)"));
    }
    let statements = dialect.with_sqlparser_dialect(|d| Parser::parse_sql(d, sql)).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("sql parser error: ").unwrap_or(&msg);
        Rejection::write(format!("could not parse the query as {dialect} SQL: {msg}"))
    })?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err(Rejection::write("no statement found")),
        many => {
            return Err(Rejection::write(format!("only one statement is allowed; found {}", many.len())));
        }
    };
    let outcome = ast::check(statement, dialect, policy).map_err(Rejection::write)?;
    if let Some(reason) = scan.backstop {
        return Err(Rejection::write(reason));
    }

    // Layer 3.
    if outcome.privacy_denied {
        return Err(Rejection::new(RejectCode::SchemaAccessDenied, SCHEMA_DENIED_REASON));
    }
    Ok(Checked { tables: outcome.tables, explain: outcome.explain })
}

/// The keyword pre-filter alone (spec layer "regex"), lexing like sqlparser's generic dialect
/// but conservatively: no nested comments, no backslash escapes, no dollar quoting, so that it
/// never hides what any server reads as code. Use [`keyword_prefilter_for`] when the target is
/// known; [`check`] does.
///
/// Keywords give `WRITE_KEYWORD_DETECTED`; executable comments and optimizer hints give
/// `WRITE_OPERATION_REJECTED`.
pub fn keyword_prefilter(sql: &str) -> Result<(), Rejection> {
    keyword_prefilter_for(sql, Dialect::Generic)
}

/// The keyword pre-filter with the comment, string and identifier rules of `dialect`.
pub fn keyword_prefilter_for(sql: &str, dialect: Dialect) -> Result<(), Rejection> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_large());
    }
    let lexed = lex::lex(sql, &lex::Rules::of(dialect));
    prefilter(&lexed, &lex::scan(sql, &lexed, dialect, false))
}

fn too_large() -> Rejection {
    Rejection::write(format!("query text is larger than {MAX_SQL_BYTES} bytes"))
}

fn prefilter(lexed: &lex::Lexed, scan: &lex::Scan) -> Result<(), Rejection> {
    if let Some(found) = lexed.exec_comment {
        return Err(Rejection::write(format!("executable comment {found} is not allowed")));
    }
    if let Some(found) = lexed.hint {
        return Err(Rejection::write(format!("optimizer hint comment {found} is not allowed")));
    }
    if let Some(keyword) = scan.keyword {
        return Err(Rejection::new(
            RejectCode::WriteKeywordDetected,
            format!("write keyword {keyword} found outside strings and comments"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<Rejection>();
        is::<Checked>();
        is::<Policy>();
        is::<Dialect>();
    }

    #[test]
    fn rejection_stays_small() {
        assert!(std::mem::size_of::<Rejection>() <= 32);
        assert!(std::mem::size_of::<Result<Checked, Rejection>>() <= 40);
    }

    #[test]
    fn rejection_displays_code_and_reason() {
        let r = check("SELECT 1; SELECT 2", Dialect::Postgres, &Policy::default()).unwrap_err();
        assert_eq!(r.to_string(), format!("WRITE_OPERATION_REJECTED: {}", r.reason));
    }

    #[test]
    fn empty_and_semicolon_only_texts_are_rejected() {
        for sql in ["", "  ", ";", "-- nothing\n", "/* */ ;"] {
            let r = check(sql, Dialect::Generic, &Policy::default()).unwrap_err();
            assert_eq!(r.reason, "no statement found", "{sql:?}");
        }
    }

    #[test]
    fn oversized_text_is_rejected_unparsed() {
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(check(&sql, Dialect::Generic, &Policy::default()).unwrap_err().reason.contains("larger"));
    }
}
