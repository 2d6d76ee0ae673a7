//! View dependencies: which tables and views each view reads, so that the agent can treat a
//! view over something private as private too (spec §4.3).
//!
//! Each engine yields the relations a view reads *directly*; [`close`] follows views through
//! views (recursively) and [`attach`] stores the result on every discovered view as
//! [`ViewReads`]. Anything discovery cannot vouch for becomes [`ViewReads::Unresolved`], which
//! the policy treats as private (fail closed):
//!
//! * PostgreSQL: the relations of the view's rewrite rule (`pg_rewrite.ev_action`, every
//!   `:relid` of its range tables, system catalogues included — `pg_depend` does not record
//!   those, they are pinned), cross-checked against `pg_depend`; a dependency on a function or
//!   operator recorded in `pg_depend` (only user-defined ones are: built-ins are pinned) makes
//!   the view unresolved, as does reading `pg_catalog`/`information_schema`.
//! * MySQL/MariaDB: `INFORMATION_SCHEMA.VIEWS.VIEW_DEFINITION` parsed (MariaDB 10.11 has no
//!   `VIEW_TABLE_USAGE`); an empty definition (no `SHOW VIEW`), a call of a stored function
//!   (the canonical text quotes those, and only those: `` `f`() ``, `` `db`.`f`() ``) or a
//!   system database make it unresolved.
//! * SQLite: the view's `CREATE VIEW` text from `sqlite_schema`, parsed; CTE names are not
//!   relations (with their scope: a CTE does not hide a table of the same name inside its own
//!   body unless it is recursive); `sqlite_*` tables and `pragma_*` table functions are
//!   catalogues.
//! * Other ODBC dialects: not resolved.
//!
//! Only table-level dependencies are recorded: a view over a table with a private column is
//! private as a whole (column use cannot be resolved exactly from these catalogues).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::{Dialect, MySqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::catalog::{RowFn, TextRows};
use crate::{DriverError, OdbcDialect, RelationName, Table, TableKind, ViewReads};

/// The relations one view reads directly, or why they are not known.
pub(crate) type Direct = Result<Vec<RelationName>, String>;

/// Resolves the dependencies of every view in `tables` through the engine's catalogue and
/// stores them on the views. A failing catalogue query leaves every view unresolved (logged);
/// discovery itself goes on.
pub(crate) fn resolve(rows: &mut dyn TextRows, dialect: OdbcDialect, tables: &mut [Table]) {
    if !tables.iter().any(|t| t.kind == TableKind::View) {
        return;
    }
    let direct = match dialect {
        OdbcDialect::Postgres => postgres(rows),
        OdbcDialect::Mysql => mysql(rows),
        OdbcDialect::Sqlite => sqlite(rows),
        other => {
            attach(tables, &BTreeMap::new(), &format!("view dependencies are not resolved for {other}"));
            return;
        }
    };
    match direct {
        Ok(direct) => attach(tables, &close(&direct), "the view has no dependency record"),
        Err(e) => {
            tracing::warn!(error = %e, "reading view dependencies failed; every view is treated as unresolved");
            attach(tables, &BTreeMap::new(), &format!("reading view dependencies failed: {e}"));
        }
    }
}

/// [`resolve`] for the native SQLite driver.
pub(crate) fn resolve_sqlite(conn: &rusqlite::Connection, tables: &mut [Table]) {
    resolve(&mut SqliteRows(conn), OdbcDialect::Sqlite, tables);
}

struct SqliteRows<'c>(&'c rusqlite::Connection);

impl TextRows for SqliteRows<'_> {
    fn each_row(&mut self, sql: &str, row: &mut RowFn<'_>) -> Result<(), DriverError> {
        let err = |e: rusqlite::Error| DriverError::Query(e.to_string());
        let mut stmt = self.0.prepare(sql).map_err(err)?;
        let width = stmt.column_count();
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let cells = (0..width).map(|i| r.get::<_, Option<String>>(i)).collect::<Result<Vec<_>, _>>();
            let cells = cells.map_err(err)?;
            let refs: Vec<Option<&str>> = cells.iter().map(|c| c.as_deref()).collect();
            row(&refs)?;
        }
        Ok(())
    }
}

/// Stores on every view its entry of `closed` (matched exactly, then case-insensitively);
/// a view without one is unresolved for `missing`.
pub(crate) fn attach(tables: &mut [Table], closed: &BTreeMap<RelationName, ViewReads>, missing: &str) {
    let folded: BTreeMap<RelationName, &ViewReads> = closed.iter().map(|(k, v)| (fold(k), v)).collect();
    for table in tables.iter_mut().filter(|t| t.kind == TableKind::View) {
        let key = RelationName { schema: table.schema.clone(), name: table.name.clone() };
        let reads = closed.get(&key).or_else(|| folded.get(&fold(&key)).copied());
        let reads = reads.cloned().unwrap_or_else(|| ViewReads::Unresolved(missing.to_owned()));
        if let ViewReads::Unresolved(reason) = &reads {
            tracing::debug!(view = %key, reason = %reason, "view dependencies not resolved");
        }
        table.reads = Some(reads);
    }
}

fn fold(r: &RelationName) -> RelationName {
    RelationName { schema: r.schema.as_ref().map(|s| s.to_lowercase()), name: r.name.to_lowercase() }
}

/// Follows views through the views they read: every view's full set of relations, or the
/// first reason one of them (or a view it reads, at any depth) is unresolved.
pub(crate) fn close(direct: &BTreeMap<RelationName, Direct>) -> BTreeMap<RelationName, ViewReads> {
    // Names are matched case-insensitively (parsed SQL may spell them differently from the
    // catalogue); several views folding to one key are all followed.
    let mut by_folded: BTreeMap<RelationName, Vec<&RelationName>> = BTreeMap::new();
    for view in direct.keys() {
        by_folded.entry(fold(view)).or_default().push(view);
    }
    let mut done: BTreeMap<RelationName, ViewReads> = BTreeMap::new();
    for view in direct.keys() {
        let mut visiting = BTreeSet::new();
        close_one(view, direct, &by_folded, &mut done, &mut visiting);
    }
    done
}

fn close_one(
    view: &RelationName,
    direct: &BTreeMap<RelationName, Direct>,
    by_folded: &BTreeMap<RelationName, Vec<&RelationName>>,
    done: &mut BTreeMap<RelationName, ViewReads>,
    visiting: &mut BTreeSet<RelationName>,
) -> ViewReads {
    if let Some(known) = done.get(view) {
        return known.clone();
    }
    if !visiting.insert(view.clone()) {
        return ViewReads::Unresolved(format!("the view `{view}` reads itself through other views"));
    }
    let result = match &direct[view] {
        Err(reason) => ViewReads::Unresolved(reason.clone()),
        Ok(reads) => {
            let mut all: BTreeSet<RelationName> = BTreeSet::new();
            let mut unresolved = None;
            for read in reads {
                all.insert(read.clone());
                for inner in by_folded.get(&fold(read)).into_iter().flatten() {
                    if *inner == view {
                        continue;
                    }
                    match close_one(inner, direct, by_folded, done, visiting) {
                        ViewReads::Resolved(more) => all.extend(more),
                        ViewReads::Unresolved(reason) => {
                            unresolved.get_or_insert(format!("reads the view `{inner}`: {reason}"));
                        }
                    }
                }
            }
            match unresolved {
                Some(reason) => ViewReads::Unresolved(reason),
                None => ViewReads::Resolved(all.into_iter().collect()),
            }
        }
    };
    visiting.remove(view);
    done.insert(view.clone(), result.clone());
    result
}

fn text(row: &[Option<&str>], i: usize) -> String {
    row.get(i).copied().flatten().unwrap_or_default().to_owned()
}

fn schema_of(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// One row per view (`view`), per relation in its rewrite rule (`rule`), per relation
/// `pg_depend` records for the rule (`depend`), and per function or operator it records
/// (`function`): view schema, view name, kind, object schema, object name.
pub(crate) const POSTGRES_VIEW_DEPENDENCIES: &str = "\
    WITH v AS (SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
      WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')), \
    r AS (SELECT v.*, w.oid AS rule, w.ev_action FROM v \
      JOIN pg_catalog.pg_rewrite w ON w.ev_class = v.oid AND w.rulename = '_RETURN') \
    SELECT v.nspname, v.relname, 'view', NULL, NULL FROM v \
    UNION ALL \
    SELECT r.nspname, r.relname, 'rule', dn.nspname, d.relname FROM r \
      CROSS JOIN LATERAL (SELECT DISTINCT m[1]::oid AS relid \
        FROM regexp_matches(r.ev_action::text, ':relid ([0-9]+)', 'g') AS m) x \
      JOIN pg_catalog.pg_class d ON d.oid = x.relid \
      JOIN pg_catalog.pg_namespace dn ON dn.oid = d.relnamespace \
      WHERE d.oid <> r.oid \
    UNION ALL \
    SELECT DISTINCT r.nspname, r.relname, 'depend', dn.nspname, d.relname FROM r \
      JOIN pg_catalog.pg_depend dep ON dep.classid = 'pg_catalog.pg_rewrite'::regclass \
        AND dep.objid = r.rule AND dep.refclassid = 'pg_catalog.pg_class'::regclass \
      JOIN pg_catalog.pg_class d ON d.oid = dep.refobjid \
      JOIN pg_catalog.pg_namespace dn ON dn.oid = d.relnamespace \
      WHERE d.oid <> r.oid \
    UNION ALL \
    SELECT r.nspname, r.relname, 'function', pn.nspname, p.proname FROM r \
      JOIN pg_catalog.pg_depend dep ON dep.classid = 'pg_catalog.pg_rewrite'::regclass \
        AND dep.objid = r.rule AND dep.refclassid = 'pg_catalog.pg_proc'::regclass \
      JOIN pg_catalog.pg_proc p ON p.oid = dep.refobjid \
      JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
    UNION ALL \
    SELECT r.nspname, r.relname, 'function', pn.nspname, o.oprname FROM r \
      JOIN pg_catalog.pg_depend dep ON dep.classid = 'pg_catalog.pg_rewrite'::regclass \
        AND dep.objid = r.rule AND dep.refclassid = 'pg_catalog.pg_operator'::regclass \
      JOIN pg_catalog.pg_operator o ON o.oid = dep.refobjid \
      JOIN pg_catalog.pg_namespace pn ON pn.oid = o.oprnamespace";

fn postgres_catalog(r: &RelationName) -> bool {
    r.schema.as_deref().is_some_and(|s| {
        s == "pg_catalog"
            || s == "information_schema"
            || s.starts_with("pg_toast")
            || s.starts_with("pg_temp")
    })
}

#[derive(Default)]
struct PgView {
    rule: BTreeSet<RelationName>,
    depend: BTreeSet<RelationName>,
    problem: Option<String>,
}

fn postgres(rows: &mut dyn TextRows) -> Result<BTreeMap<RelationName, Direct>, DriverError> {
    let mut views: BTreeMap<RelationName, PgView> = BTreeMap::new();
    rows.each_row(POSTGRES_VIEW_DEPENDENCIES, &mut |r| {
        let view = views.entry(RelationName { schema: schema_of(text(r, 0)), name: text(r, 1) }).or_default();
        let object = RelationName { schema: schema_of(text(r, 3)), name: text(r, 4) };
        match text(r, 2).as_str() {
            "rule" => {
                if postgres_catalog(&object) {
                    view.problem.get_or_insert(format!("reads the system catalogue (`{object}`)"));
                }
                view.rule.insert(object);
            }
            "depend" => {
                view.depend.insert(object);
            }
            "function" => {
                view.problem.get_or_insert(format!("calls the user-defined function or operator `{object}`"));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(views
        .into_iter()
        .map(|(name, v)| {
            let direct = match v.problem {
                Some(problem) => Err(problem),
                // pg_depend must agree with what was read from the rule tree: if it names a
                // relation the `:relid` scan missed, the tree's format is not what we expect.
                None if !v.depend.is_subset(&v.rule) => {
                    Err("the view's rewrite rule was not understood".to_owned())
                }
                None => Ok(v.rule.into_iter().collect()),
            };
            (name, direct)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

/// Views of every database the user can see (views may read across databases): schema (empty
/// for the connection's own database), name, definition, the connection's database.
pub(crate) const MYSQL_VIEW_DEFINITIONS: &str = "SELECT IF(TABLE_SCHEMA = DATABASE(), '', TABLE_SCHEMA), \
    TABLE_NAME, VIEW_DEFINITION, DATABASE() FROM INFORMATION_SCHEMA.VIEWS \
    WHERE TABLE_SCHEMA NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema')";

fn mysql_catalog(r: &RelationName) -> bool {
    r.schema.as_deref().is_some_and(|s| {
        matches!(
            s.to_ascii_lowercase().as_str(),
            "mysql" | "sys" | "information_schema" | "performance_schema"
        )
    })
}

fn mysql(rows: &mut dyn TextRows) -> Result<BTreeMap<RelationName, Direct>, DriverError> {
    let mut out = BTreeMap::new();
    rows.each_row(MYSQL_VIEW_DEFINITIONS, &mut |r| {
        let view = RelationName { schema: schema_of(text(r, 0)), name: text(r, 1) };
        let definition = text(r, 2);
        let current = text(r, 3);
        let view_db = view.schema.clone().unwrap_or_else(|| current.clone());
        let direct = if definition.trim().is_empty() {
            Err("the view's definition is not visible to this user (it needs SHOW VIEW)".to_owned())
        } else {
            parse_reads(&definition, &MySqlDialect {}, Source::Query, true).and_then(|names| {
                let mut reads = Vec::with_capacity(names.len());
                for parts in names {
                    let (schema, name) = match parts.as_slice() {
                        [name] => (view_db.clone(), name.clone()),
                        [schema, name] => (schema.clone(), name.clone()),
                        _ => return Err(format!("reads `{}`, a name of unexpected form", parts.join("."))),
                    };
                    let schema = (!schema.eq_ignore_ascii_case(&current)).then_some(schema);
                    let read = RelationName { schema, name };
                    if mysql_catalog(&read) {
                        return Err(format!("reads the system catalogue (`{read}`)"));
                    }
                    reads.push(read);
                }
                Ok(reads)
            })
        };
        out.insert(view, direct);
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SQLite

/// Views of the main database with their `CREATE VIEW` text.
pub(crate) const SQLITE_VIEW_DEFINITIONS: &str =
    "SELECT '', name, sql FROM sqlite_master WHERE type = 'view'";

fn sqlite_catalog(r: &RelationName) -> bool {
    let name = r.name.to_ascii_lowercase();
    name.starts_with("sqlite_") || name.starts_with("pragma_")
}

fn sqlite(rows: &mut dyn TextRows) -> Result<BTreeMap<RelationName, Direct>, DriverError> {
    let mut out = BTreeMap::new();
    rows.each_row(SQLITE_VIEW_DEFINITIONS, &mut |r| {
        let view = RelationName { schema: None, name: text(r, 1) };
        out.insert(view, sqlite_direct(&text(r, 2)));
        Ok(())
    })?;
    Ok(out)
}

/// The relations a SQLite `CREATE VIEW` statement reads directly.
pub(crate) fn sqlite_direct(create_view: &str) -> Direct {
    let names = parse_reads(create_view, &SQLiteDialect {}, Source::CreateView, false)?;
    let mut reads = Vec::with_capacity(names.len());
    for parts in names {
        let read = match parts.as_slice() {
            [name] => RelationName { schema: None, name: name.clone() },
            [schema, name] if schema.eq_ignore_ascii_case("main") => {
                RelationName { schema: None, name: name.clone() }
            }
            [schema, name] => RelationName { schema: Some(schema.clone()), name: name.clone() },
            _ => return Err(format!("reads `{}`, a name of unexpected form", parts.join("."))),
        };
        if sqlite_catalog(&read) {
            return Err(format!("reads the system catalogue (`{read}`)"));
        }
        reads.push(read);
    }
    Ok(reads)
}

// ---------------------------------------------------------------------------------------------
// Parsing view definitions

/// What the parsed text is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A whole `CREATE VIEW ... AS <query>` statement (SQLite's stored text).
    CreateView,
    /// The query alone (MySQL's `VIEW_DEFINITION`).
    Query,
}

/// The relation names (as name parts) a view's query reads, CTE names excluded, in order of
/// appearance; or why they cannot be told. `qualified_calls_are_user`: a function called by a
/// qualified or quoted name is a stored (user-defined) function, which may read anything —
/// MariaDB's canonical view text prints stored functions quoted (and qualified when in another
/// database) and built-ins bare.
pub(crate) fn parse_reads(
    sql: &str,
    dialect: &dyn Dialect,
    source: Source,
    qualified_calls_are_user: bool,
) -> Result<Vec<Vec<String>>, String> {
    on_deep_stack(sql, || parse_reads_here(sql, dialect, source, qualified_calls_are_user))
        .unwrap_or_else(|| Err(format!("the view's SQL is longer than {MAX_PARSED_BYTES} bytes; not parsed")))
}

/// The longest SQL text discovery parses (view definitions, `CHECK` constraints); longer
/// ones are not parsed and the view stays unresolved (fail closed).
pub(crate) const MAX_PARSED_BYTES: usize = 1 << 20;

/// Texts longer than this are parsed on a stack sized for them, as the gate does: sqlparser
/// builds long operator and `UNION` chains as left-deep trees without hitting its recursion
/// limit (which bounds bracket nesting), and walking or dropping such a tree recurses once per
/// level (~80 bytes of stack per level in a debug build), which would overflow a worker's
/// 2 MiB stack for a 200 KB `SELECT 1+1+…`.
const DEEP_TEXT_BYTES: usize = 8 << 10;

/// Runs `parse` — which parses `sql`, walks the tree and drops it — on a stack large enough
/// for the deepest tree `sql` can produce; `None` (not run) for a text over
/// [`MAX_PARSED_BYTES`].
pub(crate) fn on_deep_stack<R>(sql: &str, parse: impl FnOnce() -> R) -> Option<R> {
    if sql.len() > MAX_PARSED_BYTES {
        return None;
    }
    if sql.len() <= DEEP_TEXT_BYTES {
        return Some(parse());
    }
    // At most one tree level per two bytes of text, at most ~80 bytes of stack per level:
    // 64 bytes per byte of text plus 1 MiB (the pages are touched only as deep as the tree goes).
    let stack = sql.len().saturating_mul(64).saturating_add(1 << 20);
    Some(stacker::grow(stack, parse))
}

fn parse_reads_here(
    sql: &str,
    dialect: &dyn Dialect,
    source: Source,
    qualified_calls_are_user: bool,
) -> Result<Vec<Vec<String>>, String> {
    let parsed = match source {
        Source::CreateView => Parser::parse_sql(dialect, sql),
        Source::Query => Parser::new(dialect)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_query())
            .map(|q| vec![Statement::Query(q)]),
    }
    .map_err(|e| format!("the view's SQL does not parse: {e}"))?;
    let query = match parsed.as_slice() {
        [Statement::CreateView(view)] => &view.query,
        [Statement::Query(query)] => query,
        _ => return Err("the view's SQL is not one CREATE VIEW statement".to_owned()),
    };
    let mut reads = Reads { scopes: Vec::new(), found: Vec::new(), problem: None, qualified_calls_are_user };
    let _ = query.visit(&mut reads);
    match reads.problem {
        Some(problem) => Err(problem),
        None => Ok(reads.found),
    }
}

/// The CTE names one query introduces and which of them are visible at the current point.
struct Scope {
    names: Vec<String>,
    /// The CTE bodies, to recognise when the walk enters one (identity, never dereferenced).
    bodies: Vec<*const Query>,
    recursive: bool,
    /// How many of `names` are in scope: inside the body of CTE `i` only those before it (and
    /// itself when recursive); in the main query all of them.
    visible: usize,
}

struct Reads {
    scopes: Vec<Scope>,
    found: Vec<Vec<String>>,
    problem: Option<String>,
    qualified_calls_are_user: bool,
}

impl Reads {
    fn is_cte(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.names[..s.visible].iter().any(|n| n.eq_ignore_ascii_case(name)))
    }

    fn relation(&mut self, parts: Vec<String>) {
        if let [name] = parts.as_slice()
            && self.is_cte(name)
        {
            return;
        }
        if !self.found.contains(&parts) {
            self.found.push(parts);
        }
    }

    /// `TABLE name` (a set operand that is not visited as a relation).
    fn table_commands(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => match (&t.schema_name, &t.table_name) {
                (Some(schema), Some(table)) => self.relation(vec![schema.value.clone(), table.value.clone()]),
                (None, Some(table)) => self.relation(vec![table.value.clone()]),
                _ => {}
            },
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left);
                self.table_commands(right);
            }
            _ => {}
        }
    }
}

fn parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0.iter().map(|p| p.as_ident().map(|i| i.value.clone())).collect()
}

impl Visitor for Reads {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(parent) = self.scopes.last_mut()
            && let Some(i) = parent.bodies.iter().position(|b| std::ptr::eq(*b, query))
        {
            parent.visible = if parent.recursive { i + 1 } else { i };
        }
        let (names, bodies, recursive) = match &query.with {
            Some(with) => (
                with.cte_tables.iter().map(|c| c.alias.name.value.clone()).collect::<Vec<_>>(),
                with.cte_tables.iter().map(|c| &*c.query as *const Query).collect(),
                with.recursive,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        let visible = names.len();
        self.scopes.push(Scope { names, bodies, recursive, visible });
        self.table_commands(&query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        if let Some(parent) = self.scopes.last_mut()
            && parent.bodies.iter().any(|b| std::ptr::eq(*b, query))
        {
            parent.visible = parent.names.len();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        match parts(relation) {
            Some(p) => self.relation(p),
            None => {
                self.problem.get_or_insert_with(|| format!("reads `{relation}`, a computed name"));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Function { name, .. } = factor {
            self.problem.get_or_insert_with(|| format!("reads the table function `{name}`"));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.qualified_calls_are_user
            && let Expr::Function(f) = expr
            && (f.name.0.len() > 1
                || f.name.0.iter().any(|p| p.as_ident().is_none_or(|i| i.quote_style.is_some())))
        {
            self.problem.get_or_insert_with(|| format!("calls the stored function `{}`", f.name));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relations read, sorted.
    fn reads(create_view: &str) -> Vec<String> {
        let mut names: Vec<String> =
            sqlite_direct(create_view).unwrap().into_iter().map(|r| r.to_string()).collect();
        names.sort();
        names
    }

    fn rel(name: &str) -> RelationName {
        RelationName::new(None, name)
    }

    #[test]
    fn sqlite_views_read_their_from_clauses_joins_and_subqueries() {
        assert_eq!(reads("CREATE VIEW v AS SELECT * FROM customers"), ["customers"]);
        assert_eq!(
            reads(
                "CREATE VIEW v(a, b) AS SELECT o.id, (SELECT max(x) FROM lines l WHERE l.o = o.id) \
                 FROM orders o JOIN \"Customers\" c ON c.id = o.customer_id \
                 WHERE EXISTS (SELECT 1 FROM main.payroll) AND o.id IN (SELECT id FROM aux.t) \
                 UNION SELECT 1, 2 FROM orders"
            ),
            ["Customers", "aux.t", "lines", "orders", "payroll"]
        );
        assert!(reads("CREATE VIEW v AS SELECT 1 AS one").is_empty());
    }

    #[test]
    fn cte_names_are_not_tables_but_a_cte_does_not_hide_a_table_in_its_own_body() {
        assert_eq!(
            reads("CREATE VIEW v AS WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT * FROM big"),
            ["orders"]
        );
        // Non-recursive: the inner `payroll` is the real table.
        assert_eq!(
            reads("CREATE VIEW v AS WITH payroll AS (SELECT id FROM payroll) SELECT * FROM payroll"),
            ["payroll"]
        );
        // A later CTE sees an earlier one; the earlier one does not see the later.
        assert_eq!(
            reads("CREATE VIEW v AS WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b"),
            ["b"]
        );
        // Recursive: the CTE names itself.
        assert!(
            reads(
                "CREATE VIEW v AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) \
                 SELECT n FROM c"
            )
            .is_empty()
        );
        // A CTE is scoped to its query: the same name outside it is a table.
        assert_eq!(
            reads("CREATE VIEW v AS SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) JOIN t"),
            ["t"]
        );
    }

    #[test]
    fn sqlite_catalogues_and_unparsable_views_are_unresolved() {
        for sql in [
            "CREATE VIEW v AS SELECT sql FROM sqlite_master",
            "CREATE VIEW v AS SELECT * FROM main.sqlite_schema",
            "CREATE VIEW v AS SELECT * FROM pragma_table_info('customers')",
            "CREATE VIEW v AS SELECT * FROM sqlite_stat1",
            "CREATE VIEW v AS SELECT FROM WHERE",
            "CREATE TABLE t (a)",
        ] {
            assert!(sqlite_direct(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn mysql_definitions_resolve_with_databases_and_stored_functions_are_unresolved() {
        let d = MySqlDialect {};
        assert_eq!(
            parse_reads(
                "select `o`.`id` AS `id` from (`shop`.`orders` `o` join `other`.`c` on(`o`.`c` = `c`.`id`))",
                &d,
                Source::Query,
                true,
            )
            .unwrap(),
            [vec!["shop".to_owned(), "orders".to_owned()], vec!["other".to_owned(), "c".to_owned()]]
        );
        assert!(parse_reads("select `shop`.`secret_of`(1) AS `x`", &d, Source::Query, true).is_err());
        assert!(parse_reads("select `secret_of`(1) AS `x`", &d, Source::Query, true).is_err());
        assert!(parse_reads("select concat('a', 'b') AS `x`", &d, Source::Query, true).is_ok());
    }

    /// A worker thread's default stack (2 MiB) survives view definitions built to be deep: a
    /// 200 KB `1+1+…` chain (a left-deep tree sqlparser's recursion limit does not bound) and
    /// 5,000 nested brackets, in both engines' sources; the deep one resolves, the nested one
    /// and a text past the parse limit stay unresolved.
    #[test]
    fn deep_view_definitions_do_not_overflow_a_worker_stack() {
        let chain = format!("1{}", "+1".repeat(100_000));
        let nested = format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000));
        let huge = format!("1{}", "+1".repeat(MAX_PARSED_BYTES / 2 + 1));
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let my = MySqlDialect {};
                let sql = format!("select {chain} AS `x` from `shop`.`orders`");
                assert!(sql.len() > 200_000);
                assert_eq!(
                    parse_reads(&sql, &my, Source::Query, true).unwrap(),
                    [vec!["shop".to_owned(), "orders".to_owned()]]
                );
                let sql = format!("CREATE VIEW v AS SELECT {chain} AS x FROM orders");
                assert_eq!(sqlite_direct(&sql).unwrap(), [rel("orders")]);
                // A long UNION chain is left-deep too (MariaDB itself refuses deep expressions
                // with "Thread stack overrun", but stores long unions).
                let union = format!(
                    "select 1 AS `x` from `t`{}",
                    " union all select 1 AS `x` from `t`".repeat(6_000)
                );
                assert!(union.len() > 200_000);
                assert_eq!(parse_reads(&union, &my, Source::Query, true).unwrap(), [vec!["t".to_owned()]]);
                let err =
                    parse_reads(&format!("select {nested} AS `x`"), &my, Source::Query, true).unwrap_err();
                assert!(err.contains("does not parse"), "{err}");
                assert!(sqlite_direct(&format!("CREATE VIEW v AS SELECT {nested} AS x")).is_err());
                let err =
                    parse_reads(&format!("select {huge} AS `x`"), &my, Source::Query, true).unwrap_err();
                assert!(err.contains("not parsed"), "{err}");
            })
            .unwrap()
            .join()
            .expect("parsing deep view definitions must not crash the thread");
    }

    #[test]
    fn views_over_views_close_transitively_and_unresolved_propagates() {
        let mut direct: BTreeMap<RelationName, Direct> = BTreeMap::new();
        direct.insert(rel("v1"), Ok(vec![rel("payroll")]));
        direct.insert(rel("v2"), Ok(vec![rel("V1"), rel("orders")]));
        direct.insert(rel("v3"), Ok(vec![rel("v2")]));
        direct.insert(rel("bad"), Err("no definition".into()));
        direct.insert(rel("over_bad"), Ok(vec![rel("bad"), rel("orders")]));
        direct.insert(rel("loop_a"), Ok(vec![rel("loop_b")]));
        direct.insert(rel("loop_b"), Ok(vec![rel("loop_a")]));
        let closed = close(&direct);
        assert_eq!(
            closed[&rel("v3")],
            ViewReads::Resolved(vec![rel("V1"), rel("orders"), rel("payroll"), rel("v2")])
        );
        assert!(matches!(&closed[&rel("over_bad")], ViewReads::Unresolved(r) if r.contains("no definition")));
        assert!(matches!(closed[&rel("loop_a")], ViewReads::Unresolved(_)));
    }

    #[test]
    fn discovery_records_view_reads_and_leaves_tables_alone() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE payroll (id INTEGER PRIMARY KEY, salary INTEGER); \
             CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL); \
             CREATE VIEW v_pay AS SELECT id FROM payroll; \
             CREATE VIEW v_over AS SELECT o.id FROM orders o JOIN v_pay p ON p.id = o.id; \
             CREATE VIEW v_cat AS SELECT name FROM sqlite_master;",
        )
        .unwrap();
        let tables = crate::sqlite::discover_tables(&conn, &mut |_| {}).unwrap();
        let get = |n: &str| tables.iter().find(|t| t.name == n).unwrap().reads.clone();
        assert_eq!(get("payroll"), None);
        assert_eq!(
            get("v_over"),
            Some(ViewReads::Resolved(vec![rel("orders"), rel("payroll"), rel("v_pay")]))
        );
        assert!(matches!(get("v_cat"), Some(ViewReads::Unresolved(_))));
    }
}
