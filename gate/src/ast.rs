//! Layer 2: the statement must be one query (or an `EXPLAIN` of one), and nothing anywhere in
//! its tree may write, lock, sleep, assign or reach outside the database. The same walk
//! collects what schema privacy needs (tables, aliases, column names, wildcards).
//!
//! **Invariant:** the walk uses sqlparser's derived [`Visitor`], which reaches every node of the
//! tree (subqueries in any clause, CTE bodies, function arguments, join conditions, ...); checks
//! are attached to node kinds, never to the clause a node sits in.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, DescribeAlias, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableAlias, TableFactor, TableWithJoins, Visit,
    Visitor,
};

use crate::Dialect;
use crate::catalog::{self, Catalog};
use crate::functions;
use crate::lex::TSQL_LOCK_HINTS;
use crate::policy::{Policy, eq_ci, normalize};

/// What a successful walk found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Tables named by the query (CTE names excluded), as written, without duplicates.
    pub(crate) tables: Vec<String>,
    /// The statement is an `EXPLAIN`.
    pub(crate) explain: bool,
    /// The query names something the policy keeps private (or unapproved).
    pub(crate) privacy_denied: bool,
}

/// Checks one parsed statement. `Err` is a `WRITE_OPERATION_REJECTED` reason.
pub(crate) fn check(stmt: &Statement, dialect: Dialect, policy: &Policy) -> Result<Outcome, String> {
    let explain = root_kind(stmt, dialect)?;
    let mut w = Walker {
        dialect,
        policy,
        privacy: !policy.is_empty(),
        columns: policy.has_private_columns(),
        frames: Vec::new(),
        depth: 0,
        explain,
        tables: Vec::new(),
        aliases: Vec::new(),
        colrefs: Vec::new(),
        deferred_wildcards: Vec::new(),
        privacy_denied: false,
        values_denied: false,
    };
    if let ControlFlow::Break(reason) = stmt.visit(&mut w) {
        return Err(reason);
    }
    let privacy_denied =
        w.values_denied || (w.privacy && (w.privacy_denied || (w.columns && w.columns_denied(stmt))));
    let mut seen = HashSet::new();
    let mut tables: Vec<String> = Vec::with_capacity(w.tables.len());
    for parts in &w.tables {
        let name = parts.join(".");
        if seen.insert(name.to_lowercase()) {
            tables.push(name);
        }
    }
    Ok(Outcome { tables, explain, privacy_denied })
}

/// Accepts a query, or an `EXPLAIN` of a query where `EXPLAIN` only plans (PostgreSQL: also
/// `EXPLAIN ANALYZE`).
fn root_kind(stmt: &Statement, dialect: Dialect) -> Result<bool, String> {
    match stmt {
        Statement::Query(_) => Ok(false),
        Statement::Explain { describe_alias, analyze, options, statement, .. } => {
            if matches!(dialect, Dialect::Oracle | Dialect::Hana | Dialect::Mssql) {
                return Err(format!(
                    "EXPLAIN is not allowed on {dialect} (it writes a plan table or is not a query there)"
                ));
            }
            let analyze_option = options.iter().flatten().any(|o| {
                o.name.value.eq_ignore_ascii_case("analyze") || o.name.value.eq_ignore_ascii_case("analyse")
            });
            // PostgreSQL's EXPLAIN ANALYZE runs the query: as safe as the query, which the
            // walk checks like any other. Elsewhere it is refused (MySQL's runs it too, but is
            // not needed; MariaDB's ANALYZE is a statement of its own).
            if (*analyze || analyze_option) && dialect != Dialect::Postgres {
                return Err("EXPLAIN ANALYZE is not allowed: it runs the query".into());
            }
            match statement.as_ref() {
                Statement::Query(_) => Ok(true),
                other => {
                    let verb = match describe_alias {
                        DescribeAlias::Explain => "EXPLAIN",
                        DescribeAlias::Describe => "DESCRIBE",
                        DescribeAlias::Desc => "DESC",
                    };
                    Err(format!("{verb} is only allowed for a query; found {}", statement_keyword(other)))
                }
            }
        }
        other => Err(format!("only read-only queries are allowed; found {}", statement_keyword(other))),
    }
}

/// The leading keyword(s) of a statement, e.g. `INSERT`, `CREATE TABLE`, `SET`.
pub(crate) fn statement_keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => {
            const MODIFIERS: &[&str] =
                &["OR", "REPLACE", "TEMP", "TEMPORARY", "UNIQUE", "IF", "MATERIALIZED", "GLOBAL", "LOCAL"];
            match words.map(str::to_ascii_uppercase).find(|w| !MODIFIERS.contains(&w.as_str())) {
                Some(object) => format!("{first} {object}"),
                None => first,
            }
        }
        "" => "an empty statement".into(),
        _ => first,
    }
}

/// Lock hints that only relax locking or pick an index: allowed in T-SQL `WITH (...)`.
const READ_HINTS: &[&str] = &[
    "NOLOCK",
    "READUNCOMMITTED",
    "READCOMMITTED",
    "READPAST",
    "NOEXPAND",
    "INDEX",
    "FORCESEEK",
    "FORCESCAN",
    "NOWAIT",
];

/// T-SQL reserved words (sorted, binary search). Unquoted as an alias they cannot be valid
/// T-SQL; sqlparser reads them as aliases, the server as the start of a second statement
/// (`SELECT a FROM t SHUTDOWN`).
#[rustfmt::skip]
const TSQL_RESERVED: [&str; 184] = [
    "ADD", "ALL", "ALTER", "AND", "ANY", "AS", "ASC", "AUTHORIZATION", "BACKUP", "BEGIN", "BETWEEN",
    "BREAK", "BROWSE", "BULK", "BY", "CASCADE", "CASE", "CHECK", "CHECKPOINT", "CLOSE", "CLUSTERED",
    "COALESCE", "COLLATE", "COLUMN", "COMMIT", "COMPUTE", "CONSTRAINT", "CONTAINS", "CONTAINSTABLE",
    "CONTINUE", "CONVERT", "CREATE", "CROSS", "CURRENT", "CURRENT_DATE", "CURRENT_TIME",
    "CURRENT_TIMESTAMP", "CURRENT_USER", "CURSOR", "DATABASE", "DBCC", "DEALLOCATE", "DECLARE", "DEFAULT",
    "DELETE", "DENY", "DESC", "DISK", "DISTINCT", "DISTRIBUTED", "DOUBLE", "DROP", "DUMP", "ELSE", "END",
    "ERRLVL", "ESCAPE", "EXCEPT", "EXEC", "EXECUTE", "EXISTS", "EXIT", "EXTERNAL", "FETCH", "FILE",
    "FILLFACTOR", "FOR", "FOREIGN", "FREETEXT", "FREETEXTTABLE", "FROM", "FULL", "FUNCTION", "GOTO",
    "GRANT", "GROUP", "HAVING", "HOLDLOCK", "IDENTITY", "IDENTITYCOL", "IDENTITY_INSERT", "IF", "IN",
    "INDEX", "INNER", "INSERT", "INTERSECT", "INTO", "IS", "JOIN", "KEY", "KILL", "LEFT", "LIKE", "LINENO",
    "LOAD", "MERGE", "NATIONAL", "NOCHECK", "NONCLUSTERED", "NOT", "NULL", "NULLIF", "OF", "OFF", "OFFSETS",
    "ON", "OPEN", "OPENDATASOURCE", "OPENQUERY", "OPENROWSET", "OPENXML", "OPTION", "OR", "ORDER", "OUTER",
    "OVER", "PERCENT", "PIVOT", "PLAN", "PRECISION", "PRIMARY", "PRINT", "PROC", "PROCEDURE", "PUBLIC",
    "RAISERROR", "READ", "READTEXT", "RECONFIGURE", "REFERENCES", "REPLICATION", "RESTORE", "RESTRICT",
    "RETURN", "REVERT", "REVOKE", "RIGHT", "ROLLBACK", "ROWCOUNT", "ROWGUIDCOL", "RULE", "SAVE", "SCHEMA",
    "SECURITYAUDIT", "SELECT", "SEMANTICKEYPHRASETABLE", "SEMANTICSIMILARITYDETAILSTABLE",
    "SEMANTICSIMILARITYTABLE", "SESSION_USER", "SET", "SETUSER", "SHUTDOWN", "SOME", "STATISTICS",
    "SYSTEM_USER", "TABLE", "TABLESAMPLE", "TEXTSIZE", "THEN", "TO", "TOP", "TRAN", "TRANSACTION",
    "TRIGGER", "TRUNCATE", "TRY_CONVERT", "TSEQUAL", "UNION", "UNIQUE", "UNPIVOT", "UPDATE", "UPDATETEXT",
    "USE", "USER", "VALUES", "VARYING", "VIEW", "WAITFOR", "WHEN", "WHERE", "WHILE", "WITH", "WRITETEXT",
];

/// CTE names visible while walking one query's `WITH`. Hash lookups: a text may define
/// thousands of CTEs, each naming the one before.
#[derive(Default)]
struct Frame {
    /// CTE name (lower case) and the position of the first CTE of that name.
    names: HashMap<String, usize>,
    /// The address of each body and its position (to know which body the walk is in).
    bodies: HashMap<*const Query, usize>,
    /// How many CTEs.
    len: usize,
    /// `WITH RECURSIVE`: every name is visible in every body.
    recursive: bool,
    /// How many CTEs, in order, are visible now (the walk may be inside the body of one).
    visible: usize,
}

impl Frame {
    fn sees(&self, name: &str) -> bool {
        with_lower(name, |name| self.names.get(name).is_some_and(|&i| i < self.visible))
    }
}

struct Walker<'p> {
    dialect: Dialect,
    policy: &'p Policy,
    /// The policy restricts something.
    privacy: bool,
    /// The policy has private columns: check column references.
    columns: bool,
    frames: Vec<Frame>,
    /// Statement nesting depth (1 = the root).
    depth: usize,
    explain: bool,
    /// Real tables named by the query, as name parts.
    tables: Vec<Vec<String>>,
    /// Aliases (and bare CTE names) and the real table they stand for, if any.
    aliases: Vec<(String, Option<usize>)>,
    /// Column names outside expressions (`USING (...)`): qualifier parts and name.
    colrefs: Vec<(Vec<String>, String)>,
    /// `q.*` (as a select item or function argument) resolved after the walk.
    deferred_wildcards: Vec<Vec<String>>,
    privacy_denied: bool,
    /// A statistics view or other value-exposing catalogue is named (denied on every
    /// connection).
    values_denied: bool,
}

/// Most parts a table name may have (T-SQL four-part names are refused for another reason).
const MAX_NAME_PARTS: usize = 4;

fn ident_parts(name: &ObjectName) -> Result<Vec<String>, String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => Ok(id.value.clone()),
            ObjectNamePart::Function(_) => Err(format!("computed object names ({name}) are not allowed")),
        })
        .collect()
}

/// `s` (ASCII, at most `buf.len()` bytes) in upper case.
fn ascii_upper<'b>(s: &str, buf: &'b mut [u8; 40]) -> &'b str {
    let n = s.len().min(buf.len());
    for (d, b) in buf.iter_mut().zip(s.bytes()) {
        *d = b.to_ascii_uppercase();
    }
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// The parts of a name as strings (a computed part reads as empty).
fn name_strings(name: &ObjectName) -> Vec<String> {
    name.0.iter().map(|p| p.as_ident().map(|i| i.value.clone()).unwrap_or_default()).collect()
}

fn alias_of(tf: &TableFactor) -> Option<&TableAlias> {
    match tf {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::JsonTable { alias, .. }
        | TableFactor::OpenJsonTable { alias, .. }
        | TableFactor::NestedJoin { alias, .. }
        | TableFactor::Pivot { alias, .. }
        | TableFactor::Unpivot { alias, .. }
        | TableFactor::MatchRecognize { alias, .. }
        | TableFactor::XmlTable { alias, .. }
        | TableFactor::SemanticView { alias, .. } => alias.as_ref(),
        TableFactor::UnpivotExpr { .. } => None,
    }
}

/// One entry of a SELECT's FROM list, for `*` and `t.*`.
struct Local {
    /// The alias, or the bare name for an unaliased CTE reference.
    alias: Option<String>,
    /// The real table behind it, if it is one.
    table: Option<Vec<String>>,
}

impl Walker<'_> {
    fn is_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else { return false };
        self.cte_visible(&id.value)
    }

    fn cte_visible(&self, name: &str) -> bool {
        self.frames.iter().rev().any(|f| f.sees(name))
    }

    /// Dialects where a CTE may refer to itself without `RECURSIVE`.
    fn implicit_recursion(&self) -> bool {
        matches!(self.dialect, Dialect::Mssql | Dialect::Oracle | Dialect::Sqlite | Dialect::Hana)
    }

    fn alias_rule(&self, alias: &Ident) -> Result<(), String> {
        if alias.quote_style.is_none() && alias.value.starts_with('@') {
            return Err(format!("assignment to the variable {} is not allowed", alias.value));
        }
        let mut buf = [0u8; 40];
        if self.dialect == Dialect::Mssql
            && alias.quote_style.is_none()
            && alias.value.len() <= buf.len()
            && alias.value.is_ascii()
            && TSQL_RESERVED.binary_search(&ascii_upper(&alias.value, &mut buf)).is_ok()
        {
            return Err(format!(
                "T-SQL reserved word {} used as an alias (the server would start a second statement)",
                alias.value.to_ascii_uppercase()
            ));
        }
        Ok(())
    }

    /// Names that reach another server: T-SQL four-part names (a linked server) and Oracle
    /// database links (`emp@remote`).
    fn remote_name_rule(&self, name: &ObjectName) -> Result<(), String> {
        if self.dialect == Dialect::Mssql && name.0.len() >= 4 {
            return Err(format!("{name}: four-part names reach a linked server"));
        }
        let link = name
            .0
            .iter()
            .any(|p| p.as_ident().is_some_and(|i| i.quote_style.is_none() && i.value.contains('@')));
        if link {
            return Err(format!("{name}: database links (@) reach another server"));
        }
        Ok(())
    }

    fn deny_call(&self, name: &ObjectName) -> Result<(), String> {
        self.remote_name_rule(name)?;
        let mut parts: Vec<&str> = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(id) => parts.push(&id.value),
                ObjectNamePart::Function(_) => {
                    return Err(format!("computed object names ({name}) are not allowed"));
                }
            }
        }
        functions::check(&parts, name, self.dialect, self.policy)
    }

    fn add_table(&mut self, parts: Vec<String>) -> Result<usize, String> {
        if parts.len() > MAX_NAME_PARTS {
            return Err(format!("table names have at most {MAX_NAME_PARTS} parts; found {}", parts.len()));
        }
        if self.privacy && self.policy.table_denied(&parts) {
            self.privacy_denied = true;
        }
        self.catalog(catalog::relation(&parts, self.dialect));
        self.tables.push(parts);
        Ok(self.tables.len() - 1)
    }

    /// Statistics views are denied on every connection, other catalogues under a policy.
    fn catalog(&mut self, kind: Option<Catalog>) {
        match kind {
            Some(Catalog::Values) => self.values_denied = true,
            Some(Catalog::System) if self.privacy => self.privacy_denied = true,
            _ => {}
        }
    }

    /// A table function in FROM (`FROM pg_get_keywords()`, `pragma_table_info('t')`).
    fn table_function(&mut self, tf: &TableFactor) {
        let name = match tf {
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => name,
            _ => return,
        };
        let parts = name_strings(name);
        self.catalog(catalog::function(&parts, self.dialect).max(catalog::relation(&parts, self.dialect)));
    }

    fn set_expr_tables(&mut self, body: &SetExpr) -> Result<(), String> {
        match body {
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let parts: Vec<String> =
                        t.schema_name.iter().chain(Some(name)).map(|i| i.value.clone()).collect();
                    let is_cte = t.schema_name.is_none() && self.cte_visible(&name.value);
                    if !is_cte {
                        if self.privacy && self.policy.table_has_private_columns(&parts) {
                            self.privacy_denied = true; // `TABLE t` is `SELECT * FROM t`
                        }
                        self.add_table(parts)?;
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr_tables(left)?;
                self.set_expr_tables(right)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The FROM entries of one SELECT (joins and nested joins flattened).
    fn locals(&self, from: &[TableWithJoins], out: &mut Vec<Local>) {
        for twj in from {
            self.local(&twj.relation, out);
            for join in &twj.joins {
                self.local(&join.relation, out);
            }
        }
    }

    fn local(&self, tf: &TableFactor, out: &mut Vec<Local>) {
        let alias = alias_of(tf).map(|a| a.name.value.clone());
        match tf {
            TableFactor::Table { name, args: None, .. } => {
                let parts = name_strings(name);
                if self.is_cte(name) {
                    out.push(Local { alias: alias.or_else(|| parts.last().cloned()), table: None });
                } else {
                    out.push(Local { alias, table: Some(parts) });
                }
            }
            TableFactor::NestedJoin { table_with_joins, .. } => {
                self.locals(std::slice::from_ref(table_with_joins), out);
                out.push(Local { alias, table: None });
            }
            TableFactor::Pivot { table, .. }
            | TableFactor::Unpivot { table, .. }
            | TableFactor::MatchRecognize { table, .. } => {
                // The output carries the inner table's columns.
                let mut inner = Vec::new();
                self.local(table, &mut inner);
                for mut l in inner {
                    l.alias = alias.clone().or(l.alias);
                    out.push(l);
                }
            }
            _ => out.push(Local { alias, table: None }),
        }
    }

    /// `*` and `t.*` in one SELECT, NATURAL joins and USING columns.
    fn select_privacy(&mut self, select: &Select) {
        let mut locals = Vec::new();
        self.locals(&select.from, &mut locals);
        let private = |l: &Local| l.table.as_ref().is_some_and(|t| self.policy.table_has_private_columns(t));
        let private_locals: Vec<bool> = locals.iter().map(private).collect();
        let any_private = private_locals.iter().any(|&p| p);
        // FROM entries by alias, or by last name part when unaliased (lower case), built on the
        // first `q.*`: `SELECT a.*, b.*, ...` over a long FROM list stays linear.
        let mut by_name: Option<HashMap<String, Vec<usize>>> = None;
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) if any_private => self.privacy_denied = true,
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                    let q = name_strings(name);
                    let by_name = by_name.get_or_insert_with(|| {
                        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
                        for (i, l) in locals.iter().enumerate() {
                            let key = l.alias.as_ref().or_else(|| l.table.as_ref().and_then(|t| t.last()));
                            if let Some(key) = key {
                                map.entry(key.to_lowercase()).or_default().push(i);
                            }
                        }
                        map
                    });
                    let candidates = q.last().and_then(|last| by_name.get(&last.to_lowercase()));
                    let mut matching =
                        candidates.into_iter().flatten().filter(|&&i| local_matches(&locals[i], &q));
                    match matching.next() {
                        None => self.deferred_wildcards.push(q),
                        Some(&first) => {
                            if private_locals[first] || matching.any(|&i| private_locals[i]) {
                                self.privacy_denied = true;
                            }
                        }
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(_), _) => {
                    self.deferred_wildcards.push(Vec::new());
                }
                _ => {}
            }
        }
        for twj in &select.from {
            for join in &twj.joins {
                match join_constraint(&join.join_operator) {
                    Some(JoinConstraint::Natural) if any_private => self.privacy_denied = true,
                    Some(JoinConstraint::Using(names) | JoinConstraint::UsingAlias(names, _)) => {
                        for n in names {
                            if let Some(col) = n.0.last().and_then(|p| p.as_ident()) {
                                self.colrefs.push((Vec::new(), col.value.clone()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The column checks, once the walk knows every table and alias of the statement.
    fn columns_denied(&self, stmt: &Statement) -> bool {
        let index = Index::new(self);
        if index.all.is_empty() && !index.any_private {
            return false; // no table of the query has private columns
        }
        if self.colrefs.iter().any(|(q, name)| index.denies(q, name)) {
            return true;
        }
        if self.deferred_wildcards.iter().any(|q| q.is_empty() || index.qualifier_private(q) != Some(false)) {
            return true;
        }
        // Every column reference in the tree, in a second walk.
        stmt.visit(&mut ColumnPass { index: &index }).is_break()
    }
}

/// Second walk: each column reference against the [`Index`].
struct ColumnPass<'i> {
    index: &'i Index,
}

impl Visitor for ColumnPass<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let denied = match expr {
            Expr::Identifier(id) => self.index.denies::<&str>(&[], &id.value),
            Expr::CompoundIdentifier(ids) => match ids.split_last() {
                Some((last, qualifier)) => {
                    let mut small = [""; 4];
                    let long: Vec<&str>;
                    let q: &[&str] = if qualifier.len() <= small.len() {
                        for (d, i) in small.iter_mut().zip(qualifier) {
                            *d = &i.value;
                        }
                        &small[..qualifier.len()]
                    } else {
                        long = qualifier.iter().map(|i| i.value.as_str()).collect();
                        &long
                    };
                    self.index.denies(q, &last.value)
                }
                None => false,
            },
            Expr::MatchAgainst { columns, .. } => columns.iter().any(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| self.index.denies::<&str>(&[], &i.value))
            }),
            _ => false,
        };
        if denied { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

/// Runs `f` with `s` in lower case, without allocating for short ASCII text.
fn with_lower<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    if s.len() <= buf.len() && s.is_ascii() {
        for (d, b) in buf.iter_mut().zip(s.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        f(std::str::from_utf8(&buf[..s.len()]).unwrap_or_default())
    } else {
        f(&s.to_lowercase())
    }
}

/// What the real tables behind a name have.
#[derive(Debug, Default)]
struct Info {
    /// One of them has private columns.
    has_private: bool,
    /// Their private column names, lower case.
    cols: HashSet<String>,
}

impl Info {
    fn add(&mut self, cols: &[String]) {
        self.has_private |= !cols.is_empty();
        self.cols.extend(cols.iter().cloned());
    }
}

/// Lookups for the column checks, built once after the walk: every question is one or two
/// hash lookups, so a query with thousands of tables and column references stays linear.
struct Index {
    /// Every private column name (lower case) of every table of the query.
    all: HashSet<String>,
    /// Some table of the query has private columns.
    any_private: bool,
    /// Alias (lower case) and the real tables behind it (CTEs and derived tables add none).
    aliases: HashMap<String, Info>,
    /// Every trailing part sequence of every table name (lower case: `c`, `b.c`, `a.b.c`).
    suffixes: HashMap<Vec<String>, Info>,
}

fn lower_parts<S: AsRef<str>>(parts: &[S]) -> Vec<String> {
    parts.iter().map(|p| p.as_ref().to_lowercase()).collect()
}

impl Index {
    fn new(w: &Walker<'_>) -> Self {
        let mut index = Index {
            all: HashSet::new(),
            any_private: false,
            aliases: HashMap::new(),
            suffixes: HashMap::new(),
        };
        // Each distinct table name (lower case) once, with its private columns.
        let mut ids: HashMap<Vec<String>, usize> = HashMap::new();
        let mut distinct: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        let id_of: Vec<usize> = w
            .tables
            .iter()
            .map(|parts| {
                let key = lower_parts(parts);
                *ids.entry(key.clone()).or_insert_with(|| {
                    distinct.push((key, w.policy.private_columns_of(parts).map(normalize).collect()));
                    distinct.len() - 1
                })
            })
            .collect();
        for (key, private) in &distinct {
            index.any_private |= !private.is_empty();
            index.all.extend(private.iter().cloned());
            // Names have at most MAX_NAME_PARTS parts: a bounded number of suffixes each.
            for k in 0..key.len() {
                index.suffixes.entry(key[k..].to_vec()).or_default().add(private);
            }
        }
        for (alias, target) in &w.aliases {
            let info = index.aliases.entry(alias.to_lowercase()).or_default();
            if let Some(t) = target {
                info.add(&distinct[id_of[*t]].1);
            }
        }
        index
    }

    /// What the qualifier `q` may stand for: an alias (one part) and every table it is a
    /// trailing part of. Empty when it matches nothing known.
    fn infos<S: AsRef<str>>(&self, q: &[S]) -> impl Iterator<Item = &Info> {
        let alias = match q {
            [one] => with_lower(one.as_ref(), |a| self.aliases.get(a)),
            _ => None,
        };
        let table =
            if q.is_empty() || q.len() > MAX_NAME_PARTS { None } else { self.suffixes.get(&lower_parts(q)) };
        alias.into_iter().chain(table)
    }

    /// Whether `q` stands for a table with private columns: `None` when it matches nothing
    /// known (the caller then assumes any table), `Some(false)` also when it stands only for
    /// CTEs or derived tables.
    fn qualifier_private<S: AsRef<str>>(&self, q: &[S]) -> Option<bool> {
        let mut found = false;
        let mut any = false;
        for info in self.infos(q) {
            found = true;
            any |= info.has_private;
        }
        found.then_some(any)
    }

    /// Whether the column reference `q.name` (bare when `q` is empty) may name a private
    /// column, or be a whole-row reference to a table with private columns
    /// (`SELECT c FROM customers c`, `row_to_json(c)`).
    fn denies<S: AsRef<str>>(&self, q: &[S], name: &str) -> bool {
        with_lower(name, |name| {
            if q.is_empty() {
                return self.all.contains(name)
                    || self.aliases.get(name).is_some_and(|i| i.has_private)
                    || self.suffixes.get([name.to_owned()].as_slice()).is_some_and(|i| i.has_private);
            }
            let mut found = false;
            for info in self.infos(q) {
                found = true;
                if info.cols.contains(name) {
                    return true;
                }
            }
            // A qualifier that matches nothing known: any table of the query.
            if !found && self.all.contains(name) {
                return true;
            }
            // `schema.table` or `table` used as a value.
            if q.len() < MAX_NAME_PARTS {
                let mut whole: Vec<String> = lower_parts(q);
                whole.push(name.to_owned());
                return self.suffixes.get(&whole).is_some_and(|i| i.has_private);
            }
            false
        })
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        JoinOperator::CrossApply
        | JoinOperator::OuterApply
        | JoinOperator::ArrayJoin
        | JoinOperator::LeftArrayJoin
        | JoinOperator::InnerArrayJoin => None,
    }
}

/// Whether `q` (1..n parts) names `parts`: equal trailing parts, `q` not longer.
fn is_suffix<S: AsRef<str>>(q: &[S], parts: &[String]) -> bool {
    !q.is_empty()
        && q.len() <= parts.len()
        && q.iter().rev().zip(parts.iter().rev()).all(|(a, b)| eq_ci(a.as_ref(), b))
}

fn local_matches(l: &Local, q: &[String]) -> bool {
    match (&l.alias, &l.table) {
        (Some(alias), _) => q.len() == 1 && eq_ci(alias, &q[0]),
        (None, Some(parts)) => is_suffix(q, parts),
        (None, None) => false,
    }
}

impl Visitor for Walker<'_> {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        self.depth += 1;
        let allowed =
            self.depth == 1 || (self.depth == 2 && self.explain && matches!(statement, Statement::Query(_)));
        if allowed {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(format!(
                "{} inside the query is not allowed (data-modifying CTE or subquery)",
                statement_keyword(statement)
            ))
        }
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let implicit = self.implicit_recursion();
        if let Some(top) = self.frames.last_mut()
            && let Some(&i) = top.bodies.get(&(query as *const Query))
        {
            top.visible = if top.recursive {
                top.len
            } else if implicit {
                i + 1
            } else {
                i
            };
        }
        if let Some(lock) = query.locks.first() {
            return ControlFlow::Break(format!("locking clause {lock} is not allowed"));
        }
        if query.settings.is_some() || query.format_clause.is_some() || !query.pipe_operators.is_empty() {
            return ControlFlow::Break("SETTINGS, FORMAT and pipe clauses are not allowed".into());
        }
        let mut frame = Frame::default();
        if let Some(with) = &query.with {
            frame.recursive = with.recursive;
            for (i, cte) in with.cte_tables.iter().enumerate() {
                if let Err(reason) = self.alias_rule(&cte.alias.name) {
                    return ControlFlow::Break(reason);
                }
                frame.names.entry(cte.alias.name.value.to_lowercase()).or_insert(i);
                frame.bodies.insert(&*cte.query as *const Query, i);
            }
            frame.len = with.cte_tables.len();
            frame.visible = frame.len;
        }
        self.frames.push(frame);
        if let Err(reason) = self.set_expr_tables(&query.body) {
            return ControlFlow::Break(reason);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        self.frames.pop();
        if let Some(top) = self.frames.last_mut()
            && top.bodies.contains_key(&(query as *const Query))
        {
            top.visible = top.len;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break(
                "SELECT ... INTO is not allowed: it writes a table or variables".into(),
            );
        }
        // MySQL and Oracle: the lexer has checked every `/*+ ... */` body (plain names only).
        if !select.optimizer_hints.is_empty() && !matches!(self.dialect, Dialect::Mysql | Dialect::Oracle) {
            return ControlFlow::Break("optimizer hints are not allowed".into());
        }
        for item in &select.projection {
            let aliases: &[Ident] = match item {
                SelectItem::ExprWithAlias { alias, .. } => std::slice::from_ref(alias),
                SelectItem::ExprWithAliases { aliases, .. } => aliases,
                _ => &[],
            };
            for alias in aliases {
                if let Err(reason) = self.alias_rule(alias) {
                    return ControlFlow::Break(reason);
                }
            }
        }
        if self.privacy {
            self.select_privacy(select);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<String> {
        if let Some(alias) = alias_of(tf)
            && let Err(reason) = self.alias_rule(&alias.name)
        {
            return ControlFlow::Break(reason);
        }
        let alias = alias_of(tf).map(|a| a.name.value.clone());
        self.table_function(tf);
        match tf {
            TableFactor::Table { name, args, with_hints, alias: table_alias, .. } => {
                let parts = match ident_parts(name) {
                    Ok(p) => p,
                    Err(reason) => return ControlFlow::Break(reason),
                };
                if let Err(reason) = self.remote_name_rule(name) {
                    return ControlFlow::Break(reason);
                }
                // T-SQL `FROM t (NOLOCK)`: a table with old-style hints, parsed as a call.
                let legacy_hints: Option<Vec<Expr>> = match args {
                    Some(a) if self.dialect == Dialect::Mssql => a
                        .args
                        .iter()
                        .map(|arg| match arg {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(
                                e @ (Expr::Identifier(_) | Expr::Function(_)),
                            )) => Some(e.clone()),
                            _ => None,
                        })
                        .collect(),
                    _ => None,
                };
                if let Some(call_args) = args.as_ref().filter(|_| legacy_hints.is_none()) {
                    if let Err(reason) =
                        self.deny_call(name).and_then(|()| functions::cost_check_call(name, &call_args.args))
                    {
                        return ControlFlow::Break(reason);
                    }
                    if let Some(a) = alias {
                        self.aliases.push((a, None));
                    }
                } else if self.is_cte(name) {
                    let a = alias.or_else(|| parts.last().cloned()).unwrap_or_default();
                    self.aliases.push((a, None));
                } else {
                    // `customers AS c(a, b, x)` renames columns by position: `x` may be private.
                    let renames_columns = table_alias.as_ref().is_some_and(|a| !a.columns.is_empty());
                    if self.privacy && renames_columns && self.policy.table_has_private_columns(&parts) {
                        self.privacy_denied = true;
                    }
                    let idx = match self.add_table(parts) {
                        Ok(idx) => idx,
                        Err(reason) => return ControlFlow::Break(reason),
                    };
                    if let Some(a) = alias {
                        self.aliases.push((a, Some(idx)));
                    }
                }
                for hint in with_hints.iter().chain(legacy_hints.iter().flatten()) {
                    let hint_name = match hint {
                        Expr::Identifier(id) => id.value.clone(),
                        Expr::Function(f) => f.name.to_string(),
                        other => other.to_string(),
                    };
                    if !READ_HINTS.iter().any(|h| h.eq_ignore_ascii_case(&hint_name)) {
                        let up = hint_name.to_ascii_uppercase();
                        let why = if TSQL_LOCK_HINTS.contains(&up.as_str()) {
                            "it takes or holds locks"
                        } else {
                            "only NOLOCK, READUNCOMMITTED, READCOMMITTED, READPAST, NOEXPAND, INDEX, \
                             FORCESEEK, FORCESCAN and NOWAIT are"
                        };
                        return ControlFlow::Break(format!("table hint {up} is not allowed: {why}"));
                    }
                }
            }
            TableFactor::Function { name, args, .. } => {
                if let Err(reason) =
                    self.deny_call(name).and_then(|()| functions::cost_check_call(name, args))
                {
                    return ControlFlow::Break(reason);
                }
                if let Some(a) = alias {
                    self.aliases.push((a, None));
                }
            }
            TableFactor::SemanticView { name, .. } => match ident_parts(name).and_then(|p| self.add_table(p))
            {
                Ok(idx) => {
                    if let Some(a) = alias {
                        self.aliases.push((a, Some(idx)));
                    }
                }
                Err(reason) => return ControlFlow::Break(reason),
            },
            _ => {
                if let Some(a) = alias {
                    self.aliases.push((a, None));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => {
                if let Err(reason) = self.deny_call(&f.name).and_then(|()| functions::cost_check(f)) {
                    return ControlFlow::Break(reason);
                }
                if self.privacy && catalog::introspects(&name_strings(&f.name), self.dialect) {
                    self.privacy_denied = true;
                }
                if self.privacy
                    && let FunctionArguments::List(list) = &f.args
                {
                    for arg in &list.args {
                        let arg_expr = match arg {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        if let FunctionArgExpr::QualifiedWildcard(name) = arg_expr {
                            self.deferred_wildcards.push(name_strings(name));
                        }
                    }
                }
            }
            Expr::CompoundIdentifier(ids)
                if ids.len() > 1 && ids.last().is_some_and(|i| i.value.eq_ignore_ascii_case("nextval")) =>
            {
                let name: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
                return ControlFlow::Break(format!(
                    "{} is not allowed: it advances a sequence",
                    name.join(".")
                ));
            }
            Expr::Cast { data_type, .. }
                if self.privacy && catalog::lookup_type(&data_type.to_string(), self.dialect) =>
            {
                self.privacy_denied = true;
            }
            Expr::BinaryOp { op: BinaryOperator::Assignment, .. } => {
                return ControlFlow::Break("assignment to a variable (`:=`) is not allowed".into());
            }
            Expr::QualifiedWildcard(name, _) if self.privacy => {
                self.deferred_wildcards.push(name_strings(name))
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_are_sorted() {
        for pair in TSQL_RESERVED.windows(2) {
            assert!(pair[0] < pair[1], "{} / {}", pair[0], pair[1]);
        }
    }
}
