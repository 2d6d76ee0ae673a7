//! Schema privacy: which tables and columns a query may name.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What the local operator keeps away from the cloud (spec §4.3), and the approved schema.
///
/// Names are dot-separated (`customers`, `public.customers`, `erp.dbo.customers`), compared
/// case-insensitively part by part, and match when one is a suffix of the other: a policy entry
/// `customers` covers `public.customers` and `archive.customers`; an entry `public.customers`
/// covers `customers` (it may resolve to `public` through the search path) but not
/// `archive.customers`. Quotes around a part (`"x"`, `` `x` ``, `[x]`) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Tables marked private: a query that names one is denied.
    pub private_tables: BTreeSet<String>,
    /// Private columns per table: a query that names one (qualified or not, when the table is
    /// in the query), selects `*`/`t.*` over the table, or uses the table's whole row (`t`,
    /// `row_to_json(t)`) is denied.
    pub private_columns: BTreeMap<String, BTreeSet<String>>,
    /// When set, only these tables may be named (CTE names and derived tables are not tables).
    pub approved_tables: Option<BTreeSet<String>>,
    /// Functions outside the built-in allow-list that the customer declares free of side effects
    /// (their own functions, extensions). Matched like table names: case-insensitive, by common
    /// trailing parts. Never-allowed functions (sleeps, locks, files...) stay refused. Not part of
    /// [`Policy::is_empty`], which is about privacy.
    pub approved_functions: BTreeSet<String>,
}

impl Policy {
    /// Whether the policy restricts nothing (the privacy layer is skipped).
    pub fn is_empty(&self) -> bool {
        self.private_tables.is_empty()
            && self.private_columns.values().all(BTreeSet::is_empty)
            && self.approved_tables.is_none()
    }

    pub(crate) fn has_private_columns(&self) -> bool {
        self.private_columns.values().any(|c| !c.is_empty())
    }

    /// Whether the table named `parts` may not be named at all.
    pub(crate) fn table_denied(&self, parts: &[String]) -> bool {
        self.private_tables.iter().any(|t| suffix_match(t, parts))
            || self.approved_tables.as_ref().is_some_and(|ok| !ok.iter().any(|t| suffix_match(t, parts)))
    }

    /// The private columns of the table named `parts` (several entries may match).
    pub(crate) fn private_columns_of<'a>(
        &'a self,
        parts: &'a [String],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.private_columns
            .iter()
            .filter(move |(t, _)| suffix_match(t, parts))
            .flat_map(|(_, cols)| cols.iter().map(String::as_str))
    }

    pub(crate) fn table_has_private_columns(&self, parts: &[String]) -> bool {
        self.private_columns_of(parts).next().is_some()
    }
}

/// Case-insensitive equality (ASCII fast path, Unicode lower-casing otherwise).
pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// A policy name part as compared: trimmed, unquoted, lower case.
pub(crate) fn normalize(name: &str) -> String {
    strip_quotes(name.trim()).to_lowercase()
}

fn strip_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && matches!((b[0], b[b.len() - 1]), (b'"', b'"') | (b'`', b'`') | (b'[', b']')) {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Questions the agent asks when it filters a schema broadcast (spec §4.3: private tables and
/// columns are left out of what the cloud sees).
impl Policy {
    /// Whether the table `schema.table` is hidden from the cloud (private, or not approved).
    pub fn hides_table(&self, schema: Option<&str>, table: &str) -> bool {
        self.table_denied(&name_parts(schema, table))
    }

    /// Whether `column` of `schema.table` is hidden from the cloud.
    pub fn hides_column(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        let parts = name_parts(schema, table);
        let column = normalize(column);
        self.private_columns_of(&parts).any(|c| normalize(c) == column)
    }
}

fn name_parts(schema: Option<&str>, table: &str) -> Vec<String> {
    schema.into_iter().chain(std::iter::once(table)).map(str::to_owned).collect()
}

/// Whether the dotted policy name and the name `parts` agree on their common trailing parts.
pub(crate) fn suffix_match(policy_name: &str, parts: &[impl AsRef<str>]) -> bool {
    let mut p = policy_name.rsplit('.');
    let mut q = parts.iter().rev();
    let mut compared = 0;
    loop {
        match (p.next(), q.next()) {
            (Some(a), Some(b)) => {
                if !eq_ci(strip_quotes(a.trim()), b.as_ref()) {
                    return false;
                }
                compared += 1;
            }
            _ => return compared > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn names_match_by_common_suffix_ignoring_case_and_quotes() {
        assert!(suffix_match("customers", &parts("customers")));
        assert!(suffix_match("Customers", &parts("public.CUSTOMERS")));
        assert!(suffix_match("public.customers", &parts("customers")));
        assert!(suffix_match("public.customers", &parts("erp.public.customers")));
        assert!(suffix_match("\"public\".[customers]", &parts("public.customers")));
        assert!(!suffix_match("public.customers", &parts("archive.customers")));
        assert!(!suffix_match("customers", &parts("customer")));
        assert!(!suffix_match("", &parts("customers")));
    }

    #[test]
    fn approved_and_private() {
        let mut p = Policy::default();
        assert!(p.is_empty());
        p.private_tables.insert("payroll".into());
        p.private_columns.entry("public.customers".into()).or_default().insert("SSN".into());
        assert!(p.table_denied(&parts("hr.payroll")));
        assert!(!p.table_denied(&parts("customers")));
        assert_eq!(p.private_columns_of(&parts("customers")).map(normalize).collect::<Vec<_>>(), ["ssn"]);
        assert!(p.private_columns_of(&parts("orders")).next().is_none());
        p.approved_tables = Some(["orders".to_owned()].into());
        assert!(p.table_denied(&parts("customers")));
        assert!(!p.table_denied(&parts("public.orders")));
    }
}
