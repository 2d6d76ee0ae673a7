//! What changed between two discoveries of the same database (spec §4.3 "compare the current
//! schema against the last-synced cloud version", §11.1 schema change detection).
//!
//! Row-count estimates are ignored: they drift with every insert.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Column, DatabaseSchema, Table};

/// Differences between an old and a new schema; every list is sorted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaDiff {
    /// Tables and views only in the new schema (`schema.name`, or `name` without a schema).
    pub added_tables: Vec<String>,
    /// Tables and views only in the old schema.
    pub removed_tables: Vec<String>,
    /// Tables in both whose definition changed.
    pub changed_tables: Vec<TableChange>,
}

impl SchemaDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added_tables.is_empty() && self.removed_tables.is_empty() && self.changed_tables.is_empty()
    }
}

/// How one table changed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableChange {
    /// Qualified table name.
    pub table: String,
    /// Columns only in the new table.
    pub added_columns: Vec<String>,
    /// Columns only in the old table.
    pub removed_columns: Vec<String>,
    /// Columns in both whose definition changed.
    pub changed_columns: Vec<ColumnChange>,
    /// Table-level properties that changed: `kind`, `primaryKey`, `foreignKeys`, `columnOrder`.
    pub changed_properties: Vec<String>,
}

/// How one column changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnChange {
    /// Column name.
    pub column: String,
    /// Changed fields, in JSON spelling: `dataType`, `wireType`, `nullable`, `default`,
    /// `enumValues`.
    pub fields: Vec<String>,
    /// The old definition.
    pub before: Column,
    /// The new definition.
    pub after: Column,
}

fn qualified(t: &Table) -> String {
    match &t.schema {
        Some(schema) => format!("{schema}.{}", t.name),
        None => t.name.clone(),
    }
}

/// Compares two discoveries; tables match by schema and name, columns by name.
pub fn diff(old: &DatabaseSchema, new: &DatabaseSchema) -> SchemaDiff {
    fn index(s: &DatabaseSchema) -> BTreeMap<String, &Table> {
        s.tables.iter().map(|t| (qualified(t), t)).collect()
    }
    let (old_tables, new_tables) = (index(old), index(new));
    let mut out = SchemaDiff::default();
    for (name, new_table) in &new_tables {
        match old_tables.get(name) {
            None => out.added_tables.push(name.clone()),
            Some(old_table) => {
                if let Some(change) = table_change(name, old_table, new_table) {
                    out.changed_tables.push(change);
                }
            }
        }
    }
    out.removed_tables = old_tables.keys().filter(|k| !new_tables.contains_key(*k)).cloned().collect();
    out
}

fn table_change(name: &str, old: &Table, new: &Table) -> Option<TableChange> {
    let mut change = TableChange { table: name.to_owned(), ..TableChange::default() };
    let old_cols: BTreeMap<&str, &Column> = old.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_cols: BTreeMap<&str, &Column> = new.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    for (col, after) in &new_cols {
        match old_cols.get(col) {
            None => change.added_columns.push((*col).to_owned()),
            Some(before) => {
                let mut fields = Vec::new();
                if before.data_type != after.data_type {
                    fields.push("dataType");
                }
                if before.wire_type != after.wire_type {
                    fields.push("wireType");
                }
                if before.nullable != after.nullable {
                    fields.push("nullable");
                }
                if before.default != after.default {
                    fields.push("default");
                }
                if before.enum_values != after.enum_values {
                    fields.push("enumValues");
                }
                if !fields.is_empty() {
                    change.changed_columns.push(ColumnChange {
                        column: (*col).to_owned(),
                        fields: fields.into_iter().map(str::to_owned).collect(),
                        before: (*before).clone(),
                        after: (*after).clone(),
                    });
                }
            }
        }
    }
    change.removed_columns =
        old_cols.keys().filter(|k| !new_cols.contains_key(*k)).map(|k| (*k).to_owned()).collect();
    if old.kind != new.kind {
        change.changed_properties.push("kind".into());
    }
    if old.primary_key != new.primary_key {
        change.changed_properties.push("primaryKey".into());
    }
    if old.foreign_keys != new.foreign_keys {
        change.changed_properties.push("foreignKeys".into());
    }
    fn order<'t>(t: &'t Table, keep: &BTreeMap<&str, &Column>) -> Vec<&'t str> {
        t.columns.iter().map(|c| c.name.as_str()).filter(|n| keep.contains_key(n)).collect()
    }
    if order(old, &new_cols) != order(new, &old_cols) {
        change.changed_properties.push("columnOrder".into());
    }
    let unchanged = change.added_columns.is_empty()
        && change.removed_columns.is_empty()
        && change.changed_columns.is_empty()
        && change.changed_properties.is_empty();
    (!unchanged).then_some(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbKind, ForeignKey, TableKind, WireType};

    fn col(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: ty.into(),
            wire_type: WireType::Integer,
            nullable,
            default: None,
            enum_values: Vec::new(),
            presence: None,
        }
    }

    fn table(name: &str, columns: Vec<Column>) -> Table {
        Table {
            schema: Some("public".into()),
            name: name.into(),
            kind: TableKind::Table,
            columns,
            primary_key: vec!["id".into()],
            foreign_keys: Vec::new(),
            row_count_estimate: Some(1),
            indexes: Vec::new(),
            reads: None,
        }
    }

    fn schema(tables: Vec<Table>) -> DatabaseSchema {
        DatabaseSchema { connection: "erp".into(), db_type: DbKind::Postgres, tables }
    }

    #[test]
    fn finds_added_removed_and_changed_tables_and_columns() {
        let old = schema(vec![
            table("a", vec![col("id", "int", false), col("x", "int", true)]),
            table("gone", vec![col("id", "int", false)]),
        ]);
        let mut changed = table("a", vec![col("id", "bigint", false), col("y", "int", true)]);
        changed.row_count_estimate = Some(1000);
        changed.foreign_keys.push(ForeignKey {
            columns: vec!["y".into()],
            ref_table: "b".into(),
            ref_columns: vec!["id".into()],
        });
        let new = schema(vec![changed, table("b", vec![col("id", "int", false)])]);

        let d = diff(&old, &new);
        assert_eq!(d.added_tables, ["public.b"]);
        assert_eq!(d.removed_tables, ["public.gone"]);
        assert_eq!(d.changed_tables.len(), 1);
        let a = &d.changed_tables[0];
        assert_eq!(
            (a.added_columns.as_slice(), a.removed_columns.as_slice()),
            (&["y".to_owned()][..], &["x".to_owned()][..])
        );
        assert_eq!(a.changed_columns[0].column, "id");
        assert_eq!(a.changed_columns[0].fields, ["dataType"]);
        assert_eq!(a.changed_properties, ["foreignKeys"]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["changedTables"][0]["changedColumns"][0]["before"]["dataType"], "int");
        assert!(diff(&new, &new).is_empty(), "row counts alone are no change");
    }
}
