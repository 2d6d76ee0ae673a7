//! The Schema Browser: tree rows (connection → table → column) with types, nullability,
//! private marks and the changes against the last approved schema; details of a selection;
//! the wizard's review list.

use protocol::control::{SchemaChange, SchemaView};
use protocol::schema::{Column, Table, TableKind};

/// How a row differs from the last approved schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Unchanged (or nothing approved yet).
    Same,
    /// New since the last approval.
    Added,
    /// Gone since the last approval (shown so the user sees it).
    Removed,
    /// Type or nullability changed: before → after.
    Changed(String, String),
}

/// One row of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRow {
    /// Path for the tree widget: `table` or `table/column`, each part escaped.
    pub path: String,
    /// What the row says.
    pub label: String,
    /// The table's qualified name.
    pub table: String,
    /// The column, for a column row.
    pub column: Option<String>,
    /// Private itself, or inside a private table.
    pub private: bool,
    /// Difference against the approved schema.
    pub mark: Mark,
}

/// `schema.name`, or `name` in the implicit namespace (as discovery and privacy name it).
pub fn qualified(t: &Table) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

/// Escapes `/` and `\` for a tree path part.
pub fn escape(part: &str) -> String {
    part.replace('\\', "\\\\").replace('/', "\\/")
}

/// `integer not null`, `text null`.
pub fn column_type(c: &Column) -> String {
    let ty = if c.data_type.is_empty() { "unknown type" } else { c.data_type.as_str() };
    format!("{} {}", ty.to_lowercase(), if c.nullable { "null" } else { "not null" })
}

fn table_mark(changes: &[SchemaChange], table: &str) -> Mark {
    if changes.iter().any(|c| matches!(c, SchemaChange::TableAdded { table: t } if t == table)) {
        Mark::Added
    } else {
        Mark::Same
    }
}

fn column_mark(changes: &[SchemaChange], table: &str, column: &str) -> Mark {
    for c in changes {
        match c {
            SchemaChange::ColumnAdded { table: t, column: col } if t == table && col == column => {
                return Mark::Added;
            }
            SchemaChange::ColumnChanged { table: t, column: col, before, after }
                if t == table && col == column =>
            {
                return Mark::Changed(before.clone(), after.clone());
            }
            _ => {}
        }
    }
    Mark::Same
}

fn suffix(private: bool, mark: &Mark) -> String {
    let mut s = String::new();
    if private {
        s.push_str("  [private]");
    }
    match mark {
        Mark::Same => {}
        Mark::Added => s.push_str("  [new]"),
        Mark::Removed => s.push_str("  [removed]"),
        Mark::Changed(before, after) => s.push_str(&format!("  [was {before}, now {after}]")),
    }
    s
}

/// Whether a table is private in a view.
pub fn table_private(view: &SchemaView, table: &str) -> bool {
    view.private_tables.iter().any(|t| t == table)
}

/// Whether a column is private (itself or through its table).
pub fn column_private(view: &SchemaView, table: &str, column: &str) -> bool {
    table_private(view, table) || view.private_columns.iter().any(|c| c == &format!("{table}.{column}"))
}

/// Every row of the tree, tables in discovery order, each followed by its columns; tables
/// and columns removed since the last approval come last, marked.
pub fn tree_rows(view: &SchemaView) -> Vec<TreeRow> {
    let mut rows = Vec::new();
    for t in &view.schema.tables {
        let table = qualified(t);
        let private = table_private(view, &table);
        let mark = table_mark(&view.changes, &table);
        let kind = if t.kind == TableKind::View { " (view)" } else { "" };
        rows.push(TreeRow {
            path: escape(&table),
            label: format!("{table}{kind}{}", suffix(private, &mark)),
            table: table.clone(),
            column: None,
            private,
            mark,
        });
        for c in &t.columns {
            let private = column_private(view, &table, &c.name);
            let mark = column_mark(&view.changes, &table, &c.name);
            rows.push(TreeRow {
                path: format!("{}/{}", escape(&table), escape(&c.name)),
                label: format!("{}  {}{}", c.name, column_type(c), suffix(private, &mark)),
                table: table.clone(),
                column: Some(c.name.clone()),
                private,
                mark,
            });
        }
    }
    for change in &view.changes {
        let (table, column) = match change {
            SchemaChange::TableRemoved { table } => (table, None),
            SchemaChange::ColumnRemoved { table, column } => (table, Some(column)),
            _ => continue,
        };
        let name = column.map_or_else(|| table.clone(), |c| format!("{table}.{c}"));
        rows.push(TreeRow {
            path: format!("Removed since approval/{}", escape(&name)),
            label: format!("{name}{}", suffix(false, &Mark::Removed)),
            table: table.clone(),
            column: column.cloned(),
            private: false,
            mark: Mark::Removed,
        });
    }
    rows
}

/// The tree row for a tree path (the widget hands back paths).
pub fn row_for_path<'a>(rows: &'a [TreeRow], path: &str) -> Option<&'a TreeRow> {
    rows.iter().find(|r| r.path == path)
}

/// The diff against the last approved schema, one line per change.
pub fn diff_lines(view: &SchemaView) -> Vec<String> {
    if !view.approved_before {
        return vec!["Nothing was approved for this connection yet: everything below is new.".to_owned()];
    }
    if view.changes.is_empty() {
        return vec!["No changes since the last approved schema.".to_owned()];
    }
    view.changes
        .iter()
        .map(|c| match c {
            SchemaChange::TableAdded { table } => format!("+ table {table}"),
            SchemaChange::TableRemoved { table } => format!("- table {table}"),
            SchemaChange::ColumnAdded { table, column } => format!("+ column {table}.{column}"),
            SchemaChange::ColumnRemoved { table, column } => format!("- column {table}.{column}"),
            SchemaChange::ColumnChanged { table, column, before, after } => {
                format!("~ column {table}.{column}: {before} → {after}")
            }
        })
        .collect()
}

/// The details panel for a row: label/value pairs.
pub fn details(view: &SchemaView, row: &TreeRow) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(t) = view.schema.tables.iter().find(|t| qualified(t) == row.table) else {
        out.push(("Status".to_owned(), "removed since the last approval".to_owned()));
        return out;
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    match &row.column {
        None => {
            out.push(("Table".into(), row.table.clone()));
            out.push(("Kind".into(), if t.kind == TableKind::View { "view" } else { "table" }.into()));
            out.push(("Columns".into(), t.columns.len().to_string()));
            if let Some(n) = t.row_count_estimate {
                out.push(("Rows (estimate)".into(), super::format::thousands(n)));
            }
            if !t.primary_key.is_empty() {
                out.push(("Primary key".into(), t.primary_key.join(", ")));
            }
            for fk in &t.foreign_keys {
                out.push((
                    "Foreign key".into(),
                    format!("({}) → {}({})", fk.columns.join(", "), fk.ref_table, fk.ref_columns.join(", ")),
                ));
            }
            out.push(("Private".into(), yes_no(row.private)));
        }
        Some(col) => {
            let Some(c) = t.columns.iter().find(|c| &c.name == col) else {
                out.push(("Status".into(), "removed since the last approval".into()));
                return out;
            };
            out.push(("Column".into(), format!("{}.{}", row.table, c.name)));
            out.push((
                "Type".into(),
                if c.data_type.is_empty() { "unknown".into() } else { c.data_type.clone() },
            ));
            out.push(("Nullable".into(), yes_no(c.nullable)));
            if let Some(d) = &c.default {
                out.push(("Default".into(), d.clone()));
            }
            if t.primary_key.contains(&c.name) {
                out.push(("Key".into(), "primary key".into()));
            }
            for fk in t.foreign_keys.iter().filter(|fk| fk.columns.contains(&c.name)) {
                out.push(("References".into(), format!("{}({})", fk.ref_table, fk.ref_columns.join(", "))));
            }
            out.push(("Private".into(), yes_no(row.private)));
        }
    }
    if let Mark::Changed(before, after) = &row.mark {
        out.push(("Changed".into(), format!("{before} → {after}")));
    } else if row.mark == Mark::Added {
        out.push(("Changed".into(), "new since the last approval".into()));
    }
    out
}

/// The note shown above sample values.
pub const SAMPLE_NOTE: &str = "Sample values are fetched from your database and shown only on this computer. They are never sent to the cloud.";

/// One line of the wizard's review list: a table, its column count, and whether it starts
/// private.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewItem {
    /// Qualified table name.
    pub table: String,
    /// `12 columns`, `view, 3 columns`.
    pub summary: String,
    /// Already private.
    pub private: bool,
}

/// The tables the wizard's step 4 lists, each with a "make private" checkbox.
pub fn review_items(view: &SchemaView) -> Vec<ReviewItem> {
    view.schema
        .tables
        .iter()
        .map(|t| {
            let table = qualified(t);
            let n = super::format::count(t.columns.len() as u64, "column", "columns");
            ReviewItem {
                private: table_private(view, &table),
                summary: if t.kind == TableKind::View { format!("view, {n}") } else { n },
                table,
            }
        })
        .collect()
}

/// How many tables will be shared after marking `make_private` private.
pub fn shared_count(items: &[ReviewItem], make_private: &[bool]) -> usize {
    items
        .iter()
        .zip(make_private.iter().chain(std::iter::repeat(&false)))
        .filter(|(i, p)| !i.private && !**p)
        .count()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::schema::{DatabaseSchema, DbKind, ForeignKey, WireType};

    fn col(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: ty.into(),
            wire_type: WireType::Text,
            nullable,
            default: None,
            enum_values: vec![],
            presence: None,
        }
    }

    pub(crate) fn view() -> SchemaView {
        let customers = Table {
            schema: Some("public".into()),
            name: "customers".into(),
            kind: TableKind::Table,
            columns: vec![
                col("id", "INTEGER", false),
                col("email", "TEXT", true),
                col("tax_id", "TEXT", true),
            ],
            primary_key: vec!["id".into()],
            foreign_keys: vec![],
            row_count_estimate: Some(1284),
            indexes: Vec::new(),
            reads: None,
        };
        let orders = Table {
            schema: Some("public".into()),
            name: "orders".into(),
            kind: TableKind::Table,
            columns: vec![
                col("id", "INTEGER", false),
                col("customer_id", "INTEGER", false),
                col("total", "NUMERIC", true),
            ],
            primary_key: vec!["id".into()],
            foreign_keys: vec![ForeignKey {
                columns: vec!["customer_id".into()],
                ref_table: "public.customers".into(),
                ref_columns: vec!["id".into()],
            }],
            row_count_estimate: None,
            indexes: Vec::new(),
            reads: None,
        };
        let salaries = Table {
            schema: Some("hr".into()),
            name: "salaries".into(),
            kind: TableKind::Table,
            columns: vec![col("employee", "TEXT", false), col("amount", "NUMERIC", false)],
            primary_key: vec![],
            foreign_keys: vec![],
            row_count_estimate: None,
            indexes: Vec::new(),
            reads: None,
        };
        SchemaView {
            schema: DatabaseSchema {
                connection: "erp".into(),
                db_type: DbKind::Postgres,
                tables: vec![customers, orders, salaries],
            },
            private_tables: vec!["hr.salaries".into()],
            private_columns: vec!["public.customers.tax_id".into()],
            changes: vec![
                SchemaChange::TableAdded { table: "public.orders".into() },
                SchemaChange::ColumnChanged {
                    table: "public.customers".into(),
                    column: "email".into(),
                    before: "varchar(80) null".into(),
                    after: "text null".into(),
                },
                SchemaChange::ColumnRemoved { table: "public.customers".into(), column: "fax".into() },
            ],
            approved_before: true,
        }
    }

    #[test]
    fn tree_rows_show_types_nullability_private_marks_and_changes() {
        let rows = tree_rows(&view());
        let labels: Vec<_> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "public.customers",
                "id  integer not null",
                "email  text null  [was varchar(80) null, now text null]",
                "tax_id  text null  [private]",
                "public.orders  [new]",
                "id  integer not null",
                "customer_id  integer not null",
                "total  numeric null",
                "hr.salaries  [private]",
                "employee  text not null  [private]",
                "amount  numeric not null  [private]",
                "public.customers.fax  [removed]",
            ]
        );
        assert_eq!(rows[3].path, "public.customers/tax_id");
        assert!(rows[9].private, "a column of a private table is private too");
        assert_eq!(rows[11].mark, Mark::Removed);
        assert_eq!(row_for_path(&rows, "public.orders").unwrap().mark, Mark::Added);
    }

    #[test]
    fn slashes_in_names_are_escaped_for_the_tree() {
        assert_eq!(escape("a/b\\c"), "a\\/b\\\\c");
    }

    #[test]
    fn diff_lines_read_as_a_change_list() {
        let v = view();
        assert_eq!(
            diff_lines(&v),
            [
                "+ table public.orders",
                "~ column public.customers.email: varchar(80) null → text null",
                "- column public.customers.fax",
            ]
        );
        let mut fresh = v.clone();
        fresh.approved_before = false;
        assert!(diff_lines(&fresh)[0].starts_with("Nothing was approved"));
        let mut same = v;
        same.changes.clear();
        assert_eq!(diff_lines(&same), ["No changes since the last approved schema."]);
    }

    #[test]
    fn details_of_tables_and_columns() {
        let v = view();
        let rows = tree_rows(&v);
        let orders = details(&v, &rows[4]);
        assert!(
            orders.contains(&("Foreign key".into(), "(customer_id) → public.customers(id)".into())),
            "{orders:?}"
        );
        assert!(orders.contains(&("Changed".into(), "new since the last approval".into())));
        let email = details(&v, &rows[2]);
        assert!(email.contains(&("Nullable".into(), "yes".into())));
        assert!(email.contains(&("Changed".into(), "varchar(80) null → text null".into())));
        let tax = details(&v, &rows[3]);
        assert!(tax.contains(&("Private".into(), "yes".into())));
    }

    #[test]
    fn the_review_list_counts_what_will_be_shared() {
        let items = review_items(&view());
        assert_eq!(items.len(), 3);
        assert!(items[2].private);
        assert_eq!(items[0].summary, "3 columns");
        assert_eq!(shared_count(&items, &[false, false, false]), 2);
        assert_eq!(shared_count(&items, &[true]), 1);
    }
}
