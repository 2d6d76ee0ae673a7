//! Per-connection schema policy: what the operator keeps private, what is approved, and how the
//! agent applies it — to commands (through the `gate` crate) and to schema broadcasts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The `schemaPolicy.<connection>` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SchemaPolicy {
    /// Tables the cloud may neither see nor query.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub private_tables: BTreeSet<String>,
    /// Columns per table the cloud may neither see nor query.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub private_columns: BTreeMap<String, BTreeSet<String>>,
    /// When set (by `schema approve`), the only tables the cloud may see and query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_tables: Option<BTreeSet<String>>,
}

impl SchemaPolicy {
    /// The gate's form of this policy.
    pub fn to_gate(&self) -> gate::Policy {
        gate::Policy {
            private_tables: self.private_tables.clone(),
            private_columns: self.private_columns.clone(),
            approved_tables: self.approved_tables.clone(),
        }
    }
}

/// The gate dialect for a database.
pub fn gate_dialect(dialect: drivers::OdbcDialect) -> gate::Dialect {
    dialect.gate_dialect()
}

/// Maps a gate rejection to the wire code.
pub fn rejection_code(code: gate::RejectCode) -> crate::protocol::ErrorCode {
    use crate::protocol::ErrorCode;
    match code {
        gate::RejectCode::WriteKeywordDetected => ErrorCode::WriteKeywordDetected,
        gate::RejectCode::SchemaAccessDenied => ErrorCode::SchemaAccessDenied,
        _ => ErrorCode::WriteOperationRejected,
    }
}

/// The schema as the cloud may see it: private tables, private columns and tables outside the
/// approved set are left out, and so are foreign keys that point at what was left out.
pub fn visible_schema(schema: &drivers::DatabaseSchema, policy: &gate::Policy) -> drivers::DatabaseSchema {
    let mut out = schema.clone();
    if policy.is_empty() {
        return out;
    }
    let hidden_table = |schema: Option<&str>, name: &str| policy.hides_table(schema, name);
    out.tables.retain(|t| !hidden_table(t.schema.as_deref(), &t.name));
    for table in &mut out.tables {
        let schema_name = table.schema.clone();
        let name = table.name.clone();
        let hidden_column = |column: &str| policy.hides_column(schema_name.as_deref(), &name, column);
        table.columns.retain(|c| !hidden_column(&c.name));
        table.primary_key.retain(|c| !hidden_column(c));
        table.foreign_keys.retain(|fk| {
            !fk.columns.iter().any(|c| hidden_column(c))
                && !hidden_table(None, &fk.ref_table)
                && !fk.ref_columns.iter().any(|c| policy.hides_column(None, &fk.ref_table, c))
        });
    }
    out
}
