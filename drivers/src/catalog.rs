//! Schema discovery from catalogue rows, shared by every network driver.
//!
//! A driver runs the [`CatalogSql`] of its dialect through [`TextRows`] (cells as text) and
//! [`assemble`] builds the sorted [`DatabaseSchema`], then has `views` resolve what each view
//! reads (one more catalogue query). Rows are consumed as they stream in; only the schema
//! itself is held, so catalogues of tens of thousands of tables finish in six queries whatever
//! their size.

use std::collections::BTreeMap;

use crate::dialect::CatalogSql;
use crate::{
    Column, DatabaseSchema, DbKind, DiscoveryProgress, DriverError, ForeignKey, OdbcDialect, Table, TableKind,
};

/// Receives one catalogue row as text cells (`None` = NULL).
pub(crate) type RowFn<'f> = dyn FnMut(&[Option<&str>]) -> Result<(), DriverError> + 'f;

/// Runs a catalogue query and hands every row over as text cells.
pub(crate) trait TextRows {
    fn each_row(&mut self, sql: &str, row: &mut RowFn<'_>) -> Result<(), DriverError>;
}

/// A [`RowSink`](crate::RowSink) that hands each row on as text cells (for catalogue and
/// privilege queries, which drivers run through their normal row path).
pub(crate) struct TextSink<'f> {
    pub(crate) row: &'f mut RowFn<'f>,
    pub(crate) error: Option<DriverError>,
}

impl crate::RowSink for TextSink<'_> {
    fn columns(&mut self, _: &[crate::ColumnMeta]) -> Result<(), crate::SinkError> {
        Ok(())
    }

    fn row(&mut self, cells: &[crate::Cell<'_>]) -> Result<(), crate::SinkError> {
        use crate::Cell;
        let owned: Vec<Option<std::borrow::Cow<'_, str>>> = cells
            .iter()
            .map(|c| match *c {
                Cell::Null => None,
                Cell::Bool(b) => Some(if b { "true" } else { "false" }.into()),
                Cell::Int(i) => Some(i.to_string().into()),
                Cell::Float(f) => Some(f.to_string().into()),
                Cell::Text(t) | Cell::Decimal(t) => Some(t.into()),
                Cell::Bytes(b) => Some(String::from_utf8_lossy(b)),
            })
            .collect();
        let refs: Vec<Option<&str>> = owned.iter().map(|c| c.as_deref()).collect();
        (self.row)(&refs).map_err(|e| {
            let message = e.to_string();
            self.error = Some(e);
            crate::SinkError(message)
        })
    }
}

impl TextSink<'_> {
    /// The callback's own error rather than its `Sink` wrapper.
    pub(crate) fn unwrap_error(&mut self, e: DriverError) -> DriverError {
        match e {
            DriverError::Sink(_) => self.error.take().unwrap_or(e),
            other => other,
        }
    }
}

/// Catalogue rows already in memory (ODBC catalog functions), keyed by the marker "SQL" of
/// their row set.
#[derive(Default)]
#[cfg_attr(not(feature = "odbc"), allow(dead_code))]
pub(crate) struct MemRows {
    sets: Vec<(&'static str, Vec<Option<String>>)>,
}

#[cfg_attr(not(feature = "odbc"), allow(dead_code))]
impl MemRows {
    pub(crate) fn push(&mut self, set: &'static str, row: Vec<Option<String>>) {
        self.sets.push((set, row));
    }
}

impl TextRows for MemRows {
    fn each_row(&mut self, sql: &str, row: &mut RowFn<'_>) -> Result<(), DriverError> {
        for (set, cells) in &self.sets {
            if *set == sql {
                let refs: Vec<Option<&str>> = cells.iter().map(|c| c.as_deref()).collect();
                row(&refs)?;
            }
        }
        Ok(())
    }
}

type Key = (String, String);

struct Building {
    kind: TableKind,
    rows: Option<u64>,
    columns: Vec<(i64, Column)>,
    pk: Vec<(i64, String)>,
    fks: BTreeMap<String, Vec<(i64, String, String, String)>>,
}

fn text(row: &[Option<&str>], i: usize) -> String {
    row.get(i).copied().flatten().unwrap_or_default().to_owned()
}

fn number(row: &[Option<&str>], i: usize) -> Option<i64> {
    let t = row.get(i).copied().flatten()?.trim();
    t.parse::<i64>().ok().or_else(|| t.parse::<f64>().ok().map(|f| f as i64))
}

pub(crate) fn is_yes(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "YES" | "Y" | "TRUE" | "T" | "1")
}

/// Builds the schema of one connection from its catalogue queries.
pub(crate) fn assemble(
    rows: &mut dyn TextRows,
    sql: &CatalogSql,
    dialect: OdbcDialect,
    connection: &str,
    db_type: DbKind,
    progress: &mut dyn FnMut(DiscoveryProgress),
) -> Result<DatabaseSchema, DriverError> {
    let mut tables: BTreeMap<Key, Building> = BTreeMap::new();
    rows.each_row(sql.tables, &mut |r| {
        let kind = if text(r, 2).eq_ignore_ascii_case("VIEW") { TableKind::View } else { TableKind::Table };
        let estimate = number(r, 3).filter(|_| kind == TableKind::Table).map(|n| n.max(0) as u64);
        tables.insert(
            (text(r, 0), text(r, 1)),
            Building { kind, rows: estimate, columns: Vec::new(), pk: Vec::new(), fks: BTreeMap::new() },
        );
        Ok(())
    })?;
    let total = tables.len();
    progress(DiscoveryProgress { done: 0, total: Some(total) });

    rows.each_row(sql.columns, &mut |r| {
        let Some(table) = tables.get_mut(&(text(r, 0), text(r, 1))) else {
            return Ok(()); // a relation the user cannot read, or created meanwhile
        };
        let data_type = text(r, 4);
        let default = r.get(6).copied().flatten().map(str::trim).filter(|d| !d.is_empty() && *d != "NULL");
        let enum_values =
            if dialect == OdbcDialect::Mysql { mysql_enum_values(&data_type) } else { Vec::new() };
        table.columns.push((
            number(r, 3).unwrap_or(0),
            Column {
                name: text(r, 2),
                wire_type: dialect.wire_type(&data_type),
                data_type,
                nullable: is_yes(r.get(5).copied().flatten().unwrap_or("YES")),
                default: default.map(str::to_owned),
                enum_values,
                presence: None,
            },
        ));
        Ok(())
    })?;

    rows.each_row(sql.primary_keys, &mut |r| {
        if let Some(table) = tables.get_mut(&(text(r, 0), text(r, 1))) {
            table.pk.push((number(r, 3).unwrap_or(0), text(r, 2)));
        }
        Ok(())
    })?;

    rows.each_row(sql.foreign_keys, &mut |r| {
        let schema = text(r, 0);
        if let Some(table) = tables.get_mut(&(schema.clone(), text(r, 1))) {
            let ref_schema = text(r, 5);
            let ref_table = if ref_schema == schema || ref_schema.is_empty() {
                text(r, 6)
            } else {
                format!("{ref_schema}.{}", text(r, 6))
            };
            table.fks.entry(text(r, 2)).or_default().push((
                number(r, 4).unwrap_or(0),
                text(r, 3),
                ref_table,
                text(r, 7),
            ));
        }
        Ok(())
    })?;

    if let Some(enums) = sql.enums {
        let mut labels: BTreeMap<(String, String, String), Vec<(f64, String)>> = BTreeMap::new();
        rows.each_row(enums, &mut |r| {
            let order = r.get(4).copied().flatten().and_then(|o| o.trim().parse().ok()).unwrap_or(0.0);
            labels.entry((text(r, 0), text(r, 1), text(r, 2))).or_default().push((order, text(r, 3)));
            Ok(())
        })?;
        for ((schema, table, column), mut values) in labels {
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some(t) = tables.get_mut(&(schema, table))
                && let Some((_, c)) = t.columns.iter_mut().find(|(_, c)| c.name == column)
            {
                c.enum_values = values.into_iter().map(|(_, v)| v).collect();
                if c.wire_type == crate::WireType::Unknown {
                    c.wire_type = crate::WireType::Text;
                }
            }
        }
    }

    let mut out = Vec::with_capacity(tables.len());
    for (i, ((schema, name), mut b)) in tables.into_iter().enumerate() {
        b.columns.sort_by_key(|(pos, _)| *pos);
        b.pk.sort();
        let mut foreign_keys: Vec<ForeignKey> = b
            .fks
            .into_values()
            .map(|mut cols| {
                cols.sort();
                ForeignKey {
                    columns: cols.iter().map(|c| c.1.clone()).collect(),
                    ref_table: cols.first().map(|c| c.2.clone()).unwrap_or_default(),
                    ref_columns: cols.iter().map(|c| c.3.clone()).collect(),
                }
            })
            .collect();
        foreign_keys.sort();
        out.push(Table {
            schema: (!schema.is_empty()).then_some(schema),
            name,
            kind: b.kind,
            columns: b.columns.into_iter().map(|(_, c)| c).collect(),
            primary_key: b.pk.into_iter().map(|(_, c)| c).collect(),
            foreign_keys,
            row_count_estimate: b.rows,
            indexes: Vec::new(),
            reads: None,
        });
        if (i + 1) % 100 == 0 || i + 1 == total {
            progress(DiscoveryProgress { done: i + 1, total: Some(total) });
        }
    }
    out.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    crate::views::resolve(rows, dialect, &mut out);
    Ok(DatabaseSchema { connection: connection.to_owned(), db_type, tables: out })
}

/// `enum('a','it''s')` → `["a", "it's"]`; anything else → empty.
pub(crate) fn mysql_enum_values(column_type: &str) -> Vec<String> {
    let Some(body) = column_type
        .strip_prefix("enum(")
        .or_else(|| column_type.strip_prefix("ENUM("))
        .and_then(|b| b.strip_suffix(')'))
    else {
        return Vec::new();
    };
    let mut values = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                }
                _ => value.push(c),
            }
        }
        values.push(value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_enums_parse_with_quotes() {
        assert_eq!(mysql_enum_values("enum('open','it''s','a,b')"), ["open", "it's", "a,b"]);
        assert!(mysql_enum_values("varchar(20)").is_empty());
    }

    /// Feeds canned rows, standing in for a database (the SQL text selects the row set).
    struct Canned(Vec<(&'static str, Vec<Vec<Option<&'static str>>>)>);

    impl TextRows for Canned {
        fn each_row(&mut self, sql: &str, row: &mut RowFn<'_>) -> Result<(), DriverError> {
            for (query, rows) in &self.0 {
                if *query == sql {
                    for r in rows {
                        row(r)?;
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn assembles_sorted_tables_keys_and_progress() {
        let sql = OdbcDialect::SqlServer.catalog_sql().unwrap();
        let mut rows = Canned(vec![
            (
                sql.tables,
                vec![
                    vec![Some("dbo"), Some("orders"), Some("TABLE"), Some("20")],
                    vec![Some("dbo"), Some("customers"), Some("TABLE"), Some("5")],
                    vec![Some("dbo"), Some("v"), Some("VIEW"), None],
                ],
            ),
            (
                sql.columns,
                vec![
                    vec![
                        Some("dbo"),
                        Some("orders"),
                        Some("customer_id"),
                        Some("2"),
                        Some("int"),
                        Some("NO"),
                        None,
                    ],
                    vec![Some("dbo"), Some("orders"), Some("id"), Some("1"), Some("int"), Some("NO"), None],
                    vec![
                        Some("dbo"),
                        Some("orders"),
                        Some("total"),
                        Some("3"),
                        Some("decimal(12,2)"),
                        Some("YES"),
                        Some("((0))"),
                    ],
                ],
            ),
            (sql.primary_keys, vec![vec![Some("dbo"), Some("orders"), Some("id"), Some("1")]]),
            (
                sql.foreign_keys,
                vec![vec![
                    Some("dbo"),
                    Some("orders"),
                    Some("fk_c"),
                    Some("customer_id"),
                    Some("1"),
                    Some("sales"),
                    Some("customers"),
                    Some("id"),
                ]],
            ),
        ]);
        let mut seen = Vec::new();
        let schema =
            assemble(&mut rows, sql, OdbcDialect::SqlServer, "erp", DbKind::Odbc, &mut |p| seen.push(p))
                .unwrap();
        let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["customers", "orders", "v"]);
        let orders = &schema.tables[1];
        assert_eq!(
            orders.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["id", "customer_id", "total"]
        );
        assert_eq!(orders.columns[2].wire_type, crate::WireType::Decimal);
        assert_eq!(orders.columns[2].default.as_deref(), Some("((0))"));
        assert_eq!(orders.primary_key, ["id"]);
        assert_eq!(orders.foreign_keys[0].ref_table, "sales.customers");
        assert_eq!(orders.row_count_estimate, Some(20));
        assert_eq!(schema.tables[2].row_count_estimate, None);
        assert_eq!(seen.last(), Some(&DiscoveryProgress { done: 3, total: Some(3) }));
    }
}
