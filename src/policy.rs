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
    /// Functions outside the gate's built-in allow-list that the operator declares free of side
    /// effects (their own functions, extensions), e.g. `["public.calc_tax"]`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub approved_functions: BTreeSet<String>,
}

impl SchemaPolicy {
    /// The gate's form of this policy.
    pub fn to_gate(&self) -> gate::Policy {
        gate::Policy {
            private_tables: self.private_tables.clone(),
            private_columns: self.private_columns.clone(),
            approved_tables: self.approved_tables.clone(),
            approved_functions: self.approved_functions.clone(),
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

#[cfg(test)]
mod approved_functions_tests {
    use super::SchemaPolicy;

    #[test]
    fn approved_functions_reach_the_gate() {
        let policy: SchemaPolicy =
            serde_json::from_str(r#"{"approvedFunctions": ["public.calc_tax", "pg_sleep"]}"#).unwrap();
        let gate_policy = policy.to_gate();
        assert!(gate_policy.is_empty(), "approved functions are not a privacy restriction");
        let check = |sql: &str| gate::check(sql, gate::Dialect::Postgres, &gate_policy);
        assert!(check("SELECT calc_tax(total) FROM orders").is_ok());
        assert!(check("SELECT public.calc_tax(total) FROM orders").is_ok());
        let err = check("SELECT other_fn(1)").unwrap_err();
        assert!(err.reason.contains("`other_fn` is not on the read-only allow-list"), "{err}");
        // Never-allowed functions stay refused even when approved.
        assert!(check("SELECT pg_sleep(1)").unwrap_err().reason.contains("it sleeps"));
        // Round trip: written back under the same camelCase key, left out when empty.
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["approvedFunctions"], serde_json::json!(["pg_sleep", "public.calc_tax"]));
        assert!(serde_json::to_value(SchemaPolicy::default()).unwrap().get("approvedFunctions").is_none());
    }
}
