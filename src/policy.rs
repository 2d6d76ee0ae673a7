//! Per-connection schema policy: what the operator keeps private, what is approved, and how the
//! agent applies it — to commands (through the `gate` crate) and to schema broadcasts.
//!
//! The configured policy names tables and columns; a view reading them would leak them, so the
//! agent gates and broadcasts with the [`effective_policy`], derived from the configured one and
//! the discovered schema (the view dependencies `drivers` resolves): views over private objects,
//! and views whose dependencies are unknown, are private too. Until a connection with private
//! objects is discovered, [`before_discovery`] lets nothing named through.

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

/// Whether `policy` keeps anything private (private tables or columns). Approval alone hides
/// names but keeps nothing from being read through a view.
pub fn has_private_objects(policy: &gate::Policy) -> bool {
    !policy.private_tables.is_empty() || policy.private_columns.values().any(|c| !c.is_empty())
}

/// The gate policy of a connection whose schema is not discovered yet. Without private objects
/// it is the configured one. With private objects no view is known to be safe yet, so nothing
/// that names a table or view may run (fail closed; `SCHEMA_ACCESS_DENIED`) until
/// [`effective_policy`] replaces it after the first discovery.
pub fn before_discovery(configured: &gate::Policy) -> gate::Policy {
    if !has_private_objects(configured) {
        return configured.clone();
    }
    gate::Policy { approved_tables: Some(BTreeSet::new()), ..configured.clone() }
}

/// A view the policy keeps private although the operator did not mark it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateView {
    /// `schema.view`, or `view` in the implicit namespace.
    pub name: String,
    /// Local explanation (for the log; names what is private, so never sent to the cloud).
    pub reason: String,
    /// Private because its dependencies are unknown (fail closed), not because of what it reads.
    pub unresolved: bool,
}

/// The views of `schema` that read something private under `configured`: a private table, a
/// table with a private column (the whole view: column use is not resolved), a view that is
/// private itself — at any depth — or whose dependencies discovery could not resolve (fail
/// closed: it may read anything). Empty when the policy has no private objects.
pub fn private_views(configured: &gate::Policy, schema: &drivers::DatabaseSchema) -> Vec<PrivateView> {
    if !has_private_objects(configured) {
        return Vec::new();
    }
    // Every name a view may not read: private tables, tables with private columns, private
    // views (growing below). Matched the gate's way (case-insensitive name suffixes).
    let mut private = gate::Policy {
        private_tables: configured
            .private_tables
            .iter()
            .cloned()
            .chain(configured.private_columns.iter().filter(|(_, c)| !c.is_empty()).map(|(t, _)| t.clone()))
            .collect(),
        ..gate::Policy::default()
    };
    let mut out: Vec<PrivateView> = Vec::new();
    let views: Vec<&drivers::Table> =
        schema.tables.iter().filter(|t| t.kind == drivers::TableKind::View).collect();
    // The reads are transitive already; repeating until nothing changes also covers a view
    // that is private only through another derived one.
    loop {
        let mut changed = false;
        for view in &views {
            let name = qualified(view.schema.as_deref(), &view.name);
            if private.private_tables.contains(&name) {
                continue;
            }
            if private.hides_table(view.schema.as_deref(), &view.name) {
                // Marked private by the operator: already in the configured policy.
                private.private_tables.insert(name);
                changed = true;
                continue;
            }
            let reason = match &view.reads {
                None => Some("its dependencies are unknown (not discovered)".to_owned()),
                Some(drivers::ViewReads::Unresolved(why)) => {
                    Some(format!("its dependencies could not be resolved: {why}"))
                }
                Some(drivers::ViewReads::Resolved(reads)) => reads
                    .iter()
                    .find(|r| private.hides_table(r.schema.as_deref(), &r.name))
                    .map(|r| format!("it reads `{r}`, which is private or has private columns")),
            };
            if let Some(reason) = reason {
                private.private_tables.insert(name.clone());
                let unresolved = !matches!(view.reads, Some(drivers::ViewReads::Resolved(_)));
                out.push(PrivateView { name, reason, unresolved });
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    out
}

/// The gate policy of a connection once its schema is discovered: the configured policy plus
/// every view of [`private_views`] as a private table; and, when the connection has private
/// objects and the operator approved no list, only the discovered tables and views may be
/// named at all — a relation discovery did not see (a view created since, a system catalogue
/// such as `pg_stats` or `information_schema`) could read something private. Without private
/// objects the configured policy is returned unchanged. Logs the views made private.
pub fn effective_policy(configured: &gate::Policy, schema: &drivers::DatabaseSchema) -> gate::Policy {
    if !has_private_objects(configured) {
        return configured.clone();
    }
    let mut policy = configured.clone();
    let views = private_views(configured, schema);
    // One line per kind (a catalogue without dependency support may have thousands of views),
    // with a few names and reasons; every view at debug level.
    for unresolved in [true, false] {
        let of_kind: Vec<&PrivateView> = views.iter().filter(|v| v.unresolved == unresolved).collect();
        let Some(first) = of_kind.first() else { continue };
        let names: Vec<&str> = of_kind.iter().take(5).map(|v| v.name.as_str()).collect();
        if unresolved {
            tracing::warn!(connection = %schema.connection, count = of_kind.len(), views = ?names,
                example = %first.reason, "views treated as private: their dependencies could not be resolved");
        } else {
            tracing::info!(connection = %schema.connection, count = of_kind.len(), views = ?names,
                example = %first.reason, "views treated as private: they read private tables or columns");
        }
        for view in of_kind {
            tracing::debug!(connection = %schema.connection, view = %view.name, reason = %view.reason,
                "view treated as private");
        }
    }
    policy.private_tables.extend(views.into_iter().map(|v| v.name));
    if policy.approved_tables.is_none() {
        policy.approved_tables =
            Some(schema.tables.iter().map(|t| qualified(t.schema.as_deref(), &t.name)).collect());
    }
    policy
}

fn qualified(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(schema) => format!("{schema}.{name}"),
        None => name.to_owned(),
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
        gate::RejectCode::SqlSyntaxError => ErrorCode::SqlSyntaxError,
        gate::RejectCode::WriteOperationRejected => ErrorCode::WriteOperationRejected,
    }
}

/// The schema as the cloud may see it: private tables, private columns and tables outside the
/// approved set are left out, and so are foreign keys that point at what was left out. Pass
/// the [`effective_policy`] so that views over private objects are left out too.
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

#[cfg(test)]
mod tests {
    use drivers::{DatabaseSchema, DbKind, RelationName, Table, TableKind, ViewReads};

    use super::*;

    fn table(name: &str, kind: TableKind, reads: Option<ViewReads>) -> Table {
        Table {
            schema: Some("public".into()),
            name: name.into(),
            kind,
            columns: Vec::new(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            row_count_estimate: None,
            indexes: Vec::new(),
            reads,
        }
    }

    fn view(name: &str, reads: &[&str]) -> Table {
        let reads = reads.iter().map(|r| RelationName::new(Some("public"), r)).collect();
        table(name, TableKind::View, Some(ViewReads::Resolved(reads)))
    }

    fn schema() -> DatabaseSchema {
        DatabaseSchema {
            connection: "erp".into(),
            db_type: DbKind::Postgres,
            tables: vec![
                table("payroll", TableKind::Table, None),
                table("people", TableKind::Table, None),
                table("orders", TableKind::Table, None),
                view("v_pay", &["payroll"]),
                view("v_people", &["people"]),
                view("v_over_pay", &["v_pay", "payroll", "orders"]),
                view("v_orders", &["orders"]),
                table("v_unknown", TableKind::View, Some(ViewReads::Unresolved("no definition".into()))),
                table("v_saved", TableKind::View, None),
            ],
        }
    }

    fn configured() -> gate::Policy {
        let mut p = gate::Policy::default();
        p.private_tables.insert("payroll".into());
        p.private_columns.entry("public.people".into()).or_default().insert("ssn".into());
        p
    }

    #[test]
    fn views_over_private_tables_and_columns_are_private_and_unknown_ones_fail_closed() {
        let names: Vec<String> =
            private_views(&configured(), &schema()).into_iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            ["public.v_pay", "public.v_people", "public.v_over_pay", "public.v_unknown", "public.v_saved"]
        );
        // Nothing private: no view is.
        assert!(private_views(&gate::Policy::default(), &schema()).is_empty());
    }

    #[test]
    fn a_view_the_operator_marks_private_makes_views_over_it_private() {
        let mut p = gate::Policy::default();
        p.private_tables.insert("v_orders".into());
        let mut s = schema();
        s.tables.push(view("v_over_orders", &["v_orders", "orders"]));
        s.tables.retain(|t| !matches!(t.name.as_str(), "v_unknown" | "v_saved"));
        let names: Vec<String> = private_views(&p, &s).into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["public.v_over_orders"]);
    }

    #[test]
    fn effective_policy_hides_and_denies_private_views_and_unknown_relations() {
        let effective = effective_policy(&configured(), &schema());
        let visible = visible_schema(&schema(), &effective);
        let names: Vec<&str> = visible.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["people", "orders", "v_orders"]);

        let pg = gate::Dialect::Postgres;
        for sql in [
            "SELECT * FROM v_pay",
            "SELECT id FROM public.v_people",
            "SELECT 1 FROM orders JOIN v_over_pay USING (id)",
            "SELECT * FROM v_unknown",
            "SELECT * FROM v_saved",
            // Not discovered: a view created since, or a system catalogue.
            "SELECT * FROM v_created_later",
            "SELECT * FROM pg_stats",
        ] {
            let rejection = gate::check(sql, pg, &effective).expect_err(sql);
            assert_eq!(rejection.code, gate::RejectCode::SchemaAccessDenied, "{sql}");
        }
        for sql in
            ["SELECT * FROM v_orders", "SELECT o.id FROM public.orders o", "SELECT id, name FROM people"]
        {
            assert!(gate::check(sql, pg, &effective).is_ok(), "{sql}");
        }
    }

    #[test]
    fn without_private_objects_nothing_changes() {
        let approved =
            gate::Policy { approved_tables: Some(["v_pay".to_owned()].into()), ..Default::default() };
        assert_eq!(effective_policy(&approved, &schema()), approved);
        assert_eq!(before_discovery(&approved), approved);
        assert_eq!(effective_policy(&gate::Policy::default(), &schema()), gate::Policy::default());
    }

    #[test]
    fn before_discovery_nothing_named_runs_on_a_connection_with_private_objects() {
        let policy = before_discovery(&configured());
        let pg = gate::Dialect::Postgres;
        let rejection = gate::check("SELECT * FROM orders", pg, &policy).unwrap_err();
        assert_eq!(rejection.code, gate::RejectCode::SchemaAccessDenied);
        assert!(gate::check("SELECT 1", pg, &policy).is_ok());
    }
}
