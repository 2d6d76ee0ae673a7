//! The read-only gate: decides whether a SQL text from the cloud may run on a customer database.
//!
//! Every text is hostile until proven otherwise. [`check`] runs three layers, cheapest first,
//! and the first that objects decides the verdict:
//!
//! 0. **Cost** ([`Limits`]): longer than `max_sql_bytes`, more than `max_tokens` code tokens or
//!    brackets nested deeper than `max_depth` → `WRITE_OPERATION_REJECTED` before anything is
//!    parsed. Within the limits every step is linear in the text (CTE names, aliases and
//!    column checks are hash lookups), so one text cannot hold the supervisor for seconds.
//! 1. **Keyword pre-filter** (spec layer "regex", [`keyword_prefilter`]): a lexer that knows the
//!    target's comments, string literals and quoted identifiers looks for write keywords
//!    (`INSERT`, `UPDATE`, `DELETE`, `DROP`, ... `INTO`) in the code → `WRITE_KEYWORD_DETECTED`
//!    (not a member name right after a dot, `t.update`, except in T-SQL). MySQL executable
//!    comments (`/*!`, `/*M!`) are refused here, and optimizer hints (`/*+`) except in MySQL and
//!    Oracle, where a hint body may hold only names, numbers, `( ) , . @` and spaces and no hint
//!    that changes settings (`SET_VAR`, `RESOURCE_GROUP`). The same lexer **fails closed on
//!    characters engines lex differently**: outside string literals and quoted identifiers
//!    only printable ASCII, tab, line feed, carriage return and non-ASCII letters and digits
//!    may appear (no U+00A0 or other Unicode space, no BOM or zero-width character, no control
//!    character, `\v` and `\f` included); inside comments no control character or Unicode line
//!    break, nor a carriage return without a line feed in a line comment, and the character
//!    right after `--` must be plain (MariaDB reads `--<U+00A0>` as code); NUL nowhere →
//!    `WRITE_OPERATION_REJECTED`, "character U+00A0 outside strings is not allowed".
//! 2. **AST check**: the text must parse (sqlparser, in the target's dialect; a text that does
//!    not → `SQL_SYNTAX_ERROR`, never run) as exactly one
//!    query (`SELECT`/`WITH`/`VALUES`, PostgreSQL and MySQL `TABLE t`, judged as `SELECT *
//!    FROM t`) or an `EXPLAIN` of one (`EXPLAIN ANALYZE` only on PostgreSQL, where it runs the
//!    checked query), and nothing in the whole tree may write, lock rows, assign variables, or
//!    call a function that is not on the dialect's allow-list of side-effect-free built-ins or
//!    approved by the customer ([`functions`]; sleeps, locks, signals, files, large objects,
//!    settings and sequences are never allowed), or ask for more than the bound with constant
//!    arguments (`repeat`, `lpad`, `generate_series`...) → `WRITE_OPERATION_REJECTED`. Oracle
//!    flashback (`AS OF TIMESTAMP`/`AS OF SCN`) is parsed as a table version. A text scan then
//!    re-checks calls to never-allowed functions and lock clauses on the lexer's tokens, in
//!    case sqlparser and the server disagree about where a string or comment ends.
//! 3. **Schema privacy** ([`Policy`]): private tables, private columns (named, or reached through
//!    `*`, `t.*` or a whole-row reference) and tables outside the approved schema →
//!    `SCHEMA_ACCESS_DENIED`, with a reason that never names what is private. Statistics views
//!    and other catalogues that show values, other sessions' SQL or credentials (`pg_stats`,
//!    `pg_statistic`, `pg_stat_activity`, `mysql.column_stats`, `sqlite_stat1`..`4`, ...) are
//!    denied on **every** connection; when the policy restricts anything, every system
//!    catalogue (`pg_catalog`, `information_schema`, `mysql`, `performance_schema`, `sys`,
//!    `sqlite_schema`, SQL Server `sys.*`, Oracle `ALL_*`/`V$*`, ...) and the table functions
//!    that read them are denied too (module `catalog` has the lists).
//!
//! **Other query languages** ([`Language`], chosen by the [`Target`]): a MongoDB query is a JSON
//! document judged by its own allow-lists and privacy rules (module `mongo`,
//! [`Target::MONGO`]); a Tally query passes the SQL layers in the generic dialect and is then
//! translated exactly into an export plan or refused (module `tally`, [`Target::TALLY`]). Both
//! verdicts carry canonical JSON as their text: what the driver runs. `docs/PROTOCOL.md` has
//! the forms and codes.
//!
//! The gate is pure: no I/O, no knowledge of the network or the drivers. Parameters are bound
//! by the drivers, never spliced, so the gate only ever sees the text. The database session is
//! read-only as well (layer 3 of the spec's stack); the gate does not rely on it.
//!
//! **The gate judges exactly the text the server runs.** Any rewrite happens here, *before*
//! the layers run: for PostgreSQL, `?` placeholders become `$1`, `$2`... (by the same lexer the
//! layers use), and the layers then judge the rewritten text. The verdict, [`Checked`], carries
//! that text and can only be made by this crate; the drivers take a `&Checked` and run
//! [`Checked::sql`] unchanged, so no text the gate did not see can reach a database.
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
mod catalog;
mod deny;
mod dialect;
pub mod functions;
mod judged;
mod lex;
mod mongo;
mod placeholders;
mod policy;
mod tally;

use std::fmt;

use serde::Serialize;
use sqlparser::parser::Parser;

pub use dialect::{Dialect, Language, Placeholders, Target, UnknownDialect};
pub use policy::Policy;

/// The largest text any configuration may allow ([`Limits::max_sql_bytes`] is capped to it).
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The default [`Limits::max_sql_bytes`]: 256 KiB.
pub const DEFAULT_MAX_SQL_BYTES: usize = 256 << 10;

/// The default [`Limits::max_tokens`]: 50 000 code tokens (an `IN` list of 25 000 values).
pub const DEFAULT_MAX_TOKENS: usize = 50_000;

/// The default [`Limits::max_depth`]: 32 levels of brackets.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// What one text may cost the gate. Texts over a limit are refused with
/// `WRITE_OPERATION_REJECTED` and a reason naming the limit (`query text is larger than N
/// bytes`, `query has more than N tokens`, `query nests brackets deeper than N levels`) before
/// it is parsed: only the lexer has run, which is linear in the text and allocates at most
/// 12 bytes per token it keeps.
///
/// Within the limits every step of the gate is linear in the text (or `n log n`), so the
/// limits bound time and memory together: the parsed tree is at most a few hundred bytes per
/// token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Longest text, in bytes (capped at [`MAX_SQL_BYTES`]). Default [`DEFAULT_MAX_SQL_BYTES`].
    pub max_sql_bytes: usize,
    /// Most code tokens (words, quoted names, literals, operators; not comments or
    /// whitespace), the measure of the tree's size. Default [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: usize,
    /// Deepest nesting of `(` and `[` (subqueries, calls, expressions), the measure of the
    /// tree's depth. Default [`DEFAULT_MAX_DEPTH`]; sqlparser itself refuses nesting much
    /// deeper than 50.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

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
    /// The text does not parse as SQL of the target's dialect (it is never run: a text the
    /// gate cannot read is refused, only the code says why).
    SqlSyntaxError,
    /// The query names a private table or column, or a table outside the approved schema.
    SchemaAccessDenied,
}

impl RejectCode {
    /// The wire spelling, e.g. `WRITE_KEYWORD_DETECTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::WriteKeywordDetected => "WRITE_KEYWORD_DETECTED",
            RejectCode::WriteOperationRejected => "WRITE_OPERATION_REJECTED",
            RejectCode::SqlSyntaxError => "SQL_SYNTAX_ERROR",
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

/// An accepted query: the exact text to run, its dialect, and what the audit log wants to know.
///
/// Only [`check`] and [`check_with`] make one (the text and dialect fields are private), so a
/// value of this type is proof that its [`sql`](Checked::sql) passed every layer. Drivers take
/// it instead of a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The tables the query names (CTE names excluded), as written, first occurrence first.
    pub tables: Vec<String>,
    /// The statement is an `EXPLAIN` of a query.
    pub explain: bool,
    #[serde(skip)]
    sql: String,
    #[serde(skip)]
    target: Target,
}

impl Checked {
    /// The text the gate judged, to be run as is (for PostgreSQL with `?` already turned into
    /// `$n`).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The dialect the text was judged in.
    pub fn dialect(&self) -> Dialect {
        self.target.dialect
    }

    /// The dialect and placeholder style the text was judged for; a driver for another target
    /// must refuse it.
    pub fn target(&self) -> Target {
        self.target
    }
}

/// Decides whether `sql`, without parameters, may run on a `dialect` database under `policy`,
/// with the default [`Limits`].
///
/// Returns the referenced tables when the text is exactly one read-only query with no side
/// effects that names nothing private. See the crate documentation for the layers.
pub fn check(sql: &str, dialect: Dialect, policy: &Policy) -> Result<Checked, Rejection> {
    check_with(sql, 0, dialect, policy, &Limits::default())
}

/// [`check`] for a text that will be run with `params` positional parameters by a driver for
/// `target`, under `limits`.
///
/// For a [`Placeholders::Dollar`] target (the PostgreSQL wire protocol), when `params > 0` and
/// the text has no `$n` placeholder of its own, every `?` outside literals, quoted identifiers
/// and comments becomes `$1`, `$2`... first, and the rewritten text is what is judged and
/// returned (without parameters `?` stays the jsonb operator).
pub fn check_with(
    sql: &str,
    params: usize,
    target: impl Into<Target>,
    policy: &Policy,
    limits: &Limits,
) -> Result<Checked, Rejection> {
    let target = target.into();
    let dialect = target.dialect;
    let max = limits.max_sql_bytes.min(MAX_SQL_BYTES);
    if sql.len() > max {
        return Err(too_large(max));
    }
    match target.language {
        Language::Sql => {}
        Language::Mongo => {
            let outcome = mongo::check(sql, params, policy, limits)?;
            return Ok(Checked { target, ..outcome });
        }
        Language::Tally => {
            // The SQL layers first (generic dialect), then the exact translation.
            check_text(sql, Dialect::Generic, policy, limits)?;
            let outcome = tally::check(sql, params, policy)?;
            return Ok(Checked { target, ..outcome });
        }
    }
    // PostgreSQL parses only `$n` placeholders. The native driver runs the `$n` text; an ODBC
    // driver gets the original and rewrites `?` itself, so the `$n` form is what both judge.
    let original = sql;
    let sql = match dialect {
        Dialect::Postgres if params > 0 => placeholders::question_to_dollar(sql, dialect),
        _ => std::borrow::Cow::Borrowed(sql),
    };
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_large(MAX_SQL_BYTES));
    }
    if sql != original && !placeholders::stable(original, &sql, dialect) {
        return Err(Rejection::write(
            "a `?` placeholder next to `$` changes how the text is read; add a space",
        ));
    }
    let outcome = if sql.len() <= DEEP_TEXT_BYTES {
        check_text(&sql, dialect, policy, limits)
    } else {
        // At most one tree level per two bytes of text, at most ~80 bytes of stack per level
        // (debug build): 64 bytes of stack per byte of text, plus 1 MiB. The pages are only
        // touched as deep as the tree actually goes.
        let stack = sql.len().saturating_mul(64).saturating_add(1 << 20);
        stacker::grow(stack, || check_text(&sql, dialect, policy, limits))
    }?;
    let sql = match target.placeholders {
        Placeholders::Dollar => sql.into_owned(),
        Placeholders::Question => original.to_owned(),
    };
    Ok(Checked { sql, target, ..outcome })
}

fn check_text(sql: &str, dialect: Dialect, policy: &Policy, limits: &Limits) -> Result<Checked, Rejection> {
    // Cost: the token limit stops the lexer; the depth is counted on its tokens.
    let lexed = lex::lex_bounded(sql, &lex::Rules::of(dialect), limits.max_tokens);
    if lexed.truncated {
        return Err(Rejection::write(format!("query has more than {} tokens", limits.max_tokens)));
    }
    if let Some(depth) = too_deep(&lexed.tokens, limits.max_depth) {
        return Err(Rejection::write(format!("query nests brackets deeper than {depth} levels")));
    }

    // Layer 1.
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
    let judged = judged::text(sql, &lexed, dialect);
    let statements = dialect.with_sqlparser_dialect(|d| Parser::parse_sql(d, &judged)).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("sql parser error: ").unwrap_or(&msg);
        Rejection::new(
            RejectCode::SqlSyntaxError,
            format!("could not parse the query as {dialect} SQL: {msg}"),
        )
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
    Ok(Checked {
        tables: outcome.tables,
        explain: outcome.explain,
        sql: String::new(),
        target: dialect.into(),
    })
}

/// Parses `sql` as the gate's AST layer does: with [`Dialect::with_sqlparser_dialect`], after
/// reading `TABLE t` as `SELECT * FROM t` (PostgreSQL, MySQL) and Oracle `AS OF TIMESTAMP` /
/// `AS OF SCN` as `FOR SYSTEM_TIME AS OF`. For tools and tests that want to see the tree the
/// gate judged.
pub fn parse(
    sql: &str,
    dialect: Dialect,
) -> Result<Vec<sqlparser::ast::Statement>, sqlparser::parser::ParserError> {
    let lexed = lex::lex(sql, &lex::Rules::of(dialect));
    let judged = judged::text(sql, &lexed, dialect);
    dialect.with_sqlparser_dialect(|d| Parser::parse_sql(d, &judged))
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
        return Err(too_large(MAX_SQL_BYTES));
    }
    let lexed = lex::lex(sql, &lex::Rules::of(dialect));
    prefilter(&lexed, &lex::scan(sql, &lexed, dialect, false))
}

/// `Some(max)` when `(`/`[` nest deeper than `max`.
fn too_deep(tokens: &[lex::Token], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    for t in tokens {
        match t.kind {
            lex::Kind::Punct('(' | '[') => {
                depth += 1;
                if depth > max {
                    return Some(max);
                }
            }
            lex::Kind::Punct(')' | ']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn too_large(max: usize) -> Rejection {
    Rejection::write(format!("query text is larger than {max} bytes"))
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
    if let Some((ch, place)) = lexed.bad_char {
        return Err(Rejection::write(place.reason(ch)));
    }
    if let Some(reason) = &lexed.bad_hint {
        return Err(Rejection::write(reason.clone()));
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
        assert!(std::mem::size_of::<Result<Checked, Rejection>>() <= 64);
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
        let sql = format!("SELECT '{}'", "x".repeat(DEFAULT_MAX_SQL_BYTES));
        let err = check(&sql, Dialect::Generic, &Policy::default()).unwrap_err();
        assert_eq!(err.reason, format!("query text is larger than {DEFAULT_MAX_SQL_BYTES} bytes"));
        // A configured maximum above the hard ceiling is capped to it.
        let limits = Limits { max_sql_bytes: usize::MAX, ..Limits::default() };
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        let err = check_with(&sql, 0, Dialect::Generic, &Policy::default(), &limits).unwrap_err();
        assert!(err.reason.contains(&MAX_SQL_BYTES.to_string()), "{err}");
    }

    #[test]
    fn a_text_that_does_not_parse_is_a_syntax_error_not_a_write() {
        let policy = Policy::default();
        for sql in ["SELEC 1", "SELECT FROM WHERE", "SELECT (1"] {
            let err = check(sql, Dialect::Postgres, &policy).unwrap_err();
            assert_eq!(err.code, RejectCode::SqlSyntaxError, "{sql}: {err}");
            assert!(err.reason.starts_with("could not parse the query as"), "{err}");
        }
        // The write check still comes first.
        let err = check("SELEC 1; DROP TABLE t", Dialect::Postgres, &policy).unwrap_err();
        assert_eq!(err.code, RejectCode::WriteKeywordDetected);
    }

    #[test]
    fn postgres_question_placeholders_are_rewritten_before_the_layers_judge() {
        let pg = Target {
            dialect: Dialect::Postgres,
            placeholders: Placeholders::Dollar,
            language: Language::Sql,
        };
        let (policy, limits) = (Policy::default(), Limits::default());
        let ok = check_with("SELECT id FROM orders WHERE id = ? AND note <> '?'", 1, pg, &policy, &limits)
            .unwrap();
        assert_eq!(ok.sql(), "SELECT id FROM orders WHERE id = $1 AND note <> '?'");
        assert_eq!(ok.target(), pg);
        // One string literal before the rewrite; after it, `$$1 ' $$` is a dollar-quoted string
        // and what followed is code, which is what the gate must judge.
        let attack = "SELECT $? ' $$ , pg_advisory_lock(1), $1::text -- '";
        let err = check_with(attack, 1, pg, &policy, &limits).unwrap_err();
        assert_eq!(err.code, RejectCode::WriteOperationRejected, "{err}");
        assert!(err.reason.contains("placeholder"), "{err}");
        // The ODBC driver rewrites `?` itself: the `$n` form is judged, the original handed on,
        // and a rewrite that changes the lexing is refused for it too.
        let ok = check_with("SELECT ? + 1", 1, Dialect::Postgres, &policy, &limits).unwrap();
        assert_eq!(ok.sql(), "SELECT ? + 1");
        let err = check_with("SELECT $? ' $$ , 1, $1::text -- '", 1, Dialect::Postgres, &policy, &limits)
            .unwrap_err();
        assert!(err.reason.contains("placeholder"), "{err}");
        let ok = check_with("SELECT ? + 1", 1, Dialect::Mysql, &policy, &limits).unwrap();
        assert_eq!(ok.sql(), "SELECT ? + 1");
        let ok = check_with("SELECT data ? 'k' FROM t", 0, pg, &policy, &limits).unwrap();
        assert_eq!(ok.sql(), "SELECT data ? 'k' FROM t");
    }
}
