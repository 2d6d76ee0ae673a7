//! System catalogues and the statistics views that expose values, per dialect.
//!
//! Two kinds of names:
//!
//! - [`Catalog::Values`]: views and tables that show real column values or other sessions'
//!   SQL text with its literals: optimizer statistics (PostgreSQL `pg_stats`, `pg_statistic`,
//!   `pg_stats_ext`, `pg_stats_ext_exprs`, `pg_statistic_ext_data`; MariaDB
//!   `mysql.column_stats`; MySQL `information_schema.COLUMN_STATISTICS`; SQLite
//!   `sqlite_stat1`..`sqlite_stat4`; Oracle `*_TAB_HISTOGRAMS`, `*_TAB_COL_STATISTICS`,
//!   `*_TAB_COLUMNS` (low/high values); SQL Server `sys.dm_db_stats_histogram`; HANA data
//!   statistics), statement texts (`pg_stat_activity`, `pg_stat_statements`,
//!   `performance_schema.events_statements_*`, `sys.statement*`/`processlist`/`session`,
//!   `information_schema.PROCESSLIST`, `mysql.general_log`/`slow_log`, Oracle `V$SQL*`,
//!   SQL Server `sys.dm_exec_sql_text`..., HANA `M_SQL_PLAN_CACHE`...), raw pages and logs
//!   (SQLite `sqlite_dbpage`, SQL Server `fn_dblog`), and credentials (`pg_authid`,
//!   `pg_user_mappings`, `mysql.user`, `mysql.global_priv`, `mysql.servers`, SQL Server
//!   `sys.sql_logins`, Oracle `SYS.USER$`, `SYS.LINK$`). Refused on every connection: a column
//!   can be private only if its values cannot be read around the policy.
//! - [`Catalog::System`]: every other system catalogue (`pg_catalog`, unqualified `pg_*`,
//!   `pg_toast`, `information_schema`, `mysql`, `performance_schema`, `sys`, `sqlite_schema`
//!   and the other `sqlite_*` tables, SQL Server `sys.*` and the old `sysobjects`-style views,
//!   Oracle `SYS`, `ALL_*`/`DBA_*`/`USER_*`/`V$*` views, HANA `SYS`, `_SYS_*` and its public
//!   system views) and table functions that read them (`pg_*` and `pragma_*` functions, SQL
//!   Server `sys.*`/`fn_*`). Refused when the policy keeps anything private: catalogues list
//!   private names, and some (view definitions, defaults, comments) show values.
//!
//! Names compare case-insensitively. An unqualified name is taken as the catalogue's when the
//! engine would resolve it there first (`pg_class`, `sqlite_master`, `ALL_TABLES`), or when a
//! user table of that name would be rare (HANA `TABLES`); a name qualified with a user schema
//! is not a catalogue (`public.pg_stats` is a user table). Unknown dialect: every rule.

use crate::Dialect;

/// What kind of system object a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Catalog {
    /// A catalogue: refused when the policy keeps something private.
    System,
    /// Shows values, SQL text or credentials: refused on every connection.
    Values,
}

/// A name split into its lower-case schema (the part before the last, if any) and last part.
struct Name {
    schema: Option<String>,
    last: String,
}

impl Name {
    fn new<S: AsRef<str>>(parts: &[S]) -> Option<Name> {
        let (last, rest) = parts.split_last()?;
        // T-SQL `db..t`: an empty schema part is the default schema.
        let schema = rest.last().map(|s| s.as_ref().to_lowercase()).filter(|s| !s.is_empty());
        Some(Name { schema, last: last.as_ref().to_lowercase() })
    }

    fn schema_is(&self, any: &[&str]) -> bool {
        self.schema.as_deref().is_some_and(|s| any.contains(&s))
    }

    /// Unqualified, or qualified with one of `any`.
    fn in_schema_or_bare(&self, any: &[&str]) -> bool {
        self.schema.is_none() || self.schema_is(any)
    }
}

/// The catalogue kind of the table or view named `parts` in `dialect`.
pub(crate) fn relation<S: AsRef<str>>(parts: &[S], dialect: Dialect) -> Option<Catalog> {
    let name = Name::new(parts)?;
    let one = |d: Dialect| match d {
        Dialect::Postgres => postgres(&name, false),
        Dialect::Mysql => mysql(&name),
        Dialect::Sqlite => sqlite(&name, false),
        Dialect::Mssql => mssql(&name, false),
        Dialect::Oracle => oracle(&name),
        Dialect::Hana => hana(&name),
        Dialect::Generic => None,
    };
    match dialect {
        Dialect::Generic => Dialect::ALL.iter().filter_map(|&d| one(d)).max(),
        d => one(d),
    }
}

/// The catalogue kind of the table function named `parts` (`FROM f(...)`) in `dialect`.
pub(crate) fn function<S: AsRef<str>>(parts: &[S], dialect: Dialect) -> Option<Catalog> {
    let name = Name::new(parts)?;
    let one = |d: Dialect| match d {
        Dialect::Postgres => postgres(&name, true),
        Dialect::Sqlite => sqlite(&name, true),
        Dialect::Mssql => mssql(&name, true),
        Dialect::Mysql | Dialect::Oracle | Dialect::Hana | Dialect::Generic => None,
    };
    match dialect {
        Dialect::Generic => Dialect::ALL.iter().filter_map(|&d| one(d)).max(),
        d => one(d),
    }
}

/// Whether a function called in an expression reads the catalogues by name — a relation's
/// existence, definition, size, comment or privileges (`pg_get_viewdef`, `to_regclass`,
/// `has_table_privilege`, `obj_description`, `OBJECT_DEFINITION`, ...). Harmless on a connection
/// with nothing private; with private objects it would tell their names, so it is refused there.
/// Every function that is a catalogue in `FROM` counts too (PostgreSQL: every `pg_*`).
pub(crate) fn introspects<S: AsRef<str>>(parts: &[S], dialect: Dialect) -> bool {
    if function(parts, dialect).is_some() {
        return true;
    }
    let Some(n) = Name::new(parts) else { return false };
    let last = n.last.as_str();
    let postgres = || {
        (last.starts_with("has_") && last.ends_with("_privilege"))
            || last.starts_with("to_reg")
            || ["obj_description", "col_description", "shobj_description"].contains(&last)
    };
    let mssql = || {
        last.starts_with("object")
            || last.starts_with("col_")
            || last.starts_with("type_")
            || last.starts_with("schema_")
            || last.ends_with("property")
            || last.ends_with("propertyex")
            || ["has_perms_by_name", "permissions", "index_col", "ident_current", "db_name", "db_id"]
                .contains(&last)
    };
    match dialect {
        Dialect::Postgres => postgres(),
        Dialect::Mssql => mssql(),
        Dialect::Generic => postgres() || mssql(),
        Dialect::Mysql | Dialect::Sqlite | Dialect::Oracle | Dialect::Hana => false,
    }
}

/// Whether a cast to `type_name` looks a name up in the catalogues (PostgreSQL `regclass`,
/// `regproc`, ...: `'payroll'::regclass` tells whether `payroll` exists).
pub(crate) fn lookup_type(type_name: &str, dialect: Dialect) -> bool {
    matches!(dialect, Dialect::Postgres | Dialect::Generic)
        && type_name.to_ascii_lowercase().starts_with("reg")
}

fn postgres(n: &Name, function: bool) -> Option<Catalog> {
    const VALUES: &[&str] = &[
        "pg_stats",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_statistic",
        "pg_statistic_ext_data",
        "pg_stat_activity",
        "pg_stat_get_activity",
        "pg_mcv_list_items",
        // Credentials.
        "pg_authid",
        "pg_shadow",
        "pg_user_mapping",
        "pg_user_mappings",
    ];
    let catalog = n.in_schema_or_bare(&["pg_catalog"]);
    // An extension: installed in any schema, `public` usually.
    if (catalog && VALUES.contains(&n.last.as_str())) || n.last == "pg_stat_statements" {
        return Some(Catalog::Values);
    }
    let system = n.schema_is(&["pg_catalog", "information_schema", "pg_toast"])
        || (catalog && n.last.starts_with("pg_"))
        || (function && n.schema.is_none() && n.last.starts_with("_pg_"));
    system.then_some(Catalog::System)
}

fn mysql(n: &Name) -> Option<Catalog> {
    let schema = n.schema.as_deref().unwrap_or_default();
    let last = n.last.as_str();
    let values = match schema {
        "mysql" => {
            matches!(last, "column_stats" | "general_log" | "slow_log" | "user" | "global_priv" | "servers")
        }
        "information_schema" => matches!(last, "column_statistics" | "processlist" | "optimizer_trace"),
        "performance_schema" => {
            last.starts_with("events_statements")
                || last.starts_with("prepared_statements")
                || matches!(last, "threads" | "processlist")
        }
        "sys" => {
            let view = last.strip_prefix("x$").unwrap_or(last);
            view.starts_with("statement") || view.starts_with("processlist") || view.starts_with("session")
        }
        _ => false,
    };
    if values {
        return Some(Catalog::Values);
    }
    n.schema_is(&["mysql", "information_schema", "performance_schema", "sys"]).then_some(Catalog::System)
}

fn sqlite(n: &Name, function: bool) -> Option<Catalog> {
    let last = n.last.as_str();
    if matches!(last, "sqlite_stat1" | "sqlite_stat2" | "sqlite_stat3" | "sqlite_stat4" | "sqlite_dbpage") {
        return Some(Catalog::Values);
    }
    let system = last.starts_with("sqlite_") || last == "dbstat" || (function && last.starts_with("pragma_"));
    system.then_some(Catalog::System)
}

fn mssql(n: &Name, function: bool) -> Option<Catalog> {
    const VALUES: &[&str] = &[
        "dm_db_stats_histogram",
        "dm_exec_sql_text",
        "dm_exec_input_buffer",
        "dm_exec_query_plan",
        "dm_exec_text_query_plan",
        "dm_exec_query_statistics_xml",
        "dm_exec_cached_plans",
        "query_store_query_text",
        "syscacheobjects",
        "fn_dblog",
        "fn_dump_dblog",
        "fn_get_sql",
        "fn_get_audit_file",
        "fn_xe_file_target_read_file",
        "sql_logins",
        "syslogins",
        "credentials",
    ];
    const COMPAT_VIEWS: &[&str] = &[
        "sysaltfiles",
        "syscharsets",
        "syscolumns",
        "syscomments",
        "sysconfigures",
        "sysconstraints",
        "syscurconfigs",
        "sysdatabases",
        "sysdepends",
        "sysdevices",
        "sysfilegroups",
        "sysfiles",
        "sysforeignkeys",
        "sysfulltextcatalogs",
        "sysindexes",
        "sysindexkeys",
        "syslanguages",
        "syslockinfo",
        "syslogins",
        "sysmembers",
        "sysmessages",
        "sysobjects",
        "sysoledbusers",
        "sysperfinfo",
        "syspermissions",
        "sysprocesses",
        "sysprotects",
        "sysreferences",
        "sysremotelogins",
        "sysservers",
        "systypes",
        "sysusers",
    ];
    let last = n.last.as_str();
    // Catalogue views and DMVs need `sys.`; the old `sys*` views and `fn_*` functions resolve
    // without it.
    let reachable =
        n.schema_is(&["sys"]) || (n.schema.is_none() && (last.starts_with("sys") || last.starts_with("fn_")));
    if reachable && VALUES.contains(&last) {
        return Some(Catalog::Values);
    }
    let system = n.schema_is(&["sys", "information_schema"])
        || (n.in_schema_or_bare(&["dbo"]) && COMPAT_VIEWS.contains(&last))
        || (function && n.schema.is_none() && last.starts_with("fn_"));
    system.then_some(Catalog::System)
}

fn oracle(n: &Name) -> Option<Catalog> {
    const VALUE_VIEWS: &[&str] = &[
        "tab_histograms",
        "histograms",
        "part_histograms",
        "subpart_histograms",
        "tab_col_statistics",
        "part_col_statistics",
        "subpart_col_statistics",
        "tab_columns",
        "tab_cols",
        "hist_sqltext",
        "hist_sqlbind",
        "sqlset_statements",
        "sqlset_binds",
    ];
    const SYNONYMS: &[&str] = &[
        "cat",
        "clu",
        "col",
        "cols",
        "dict",
        "dict_columns",
        "dictionary",
        "ind",
        "obj",
        "publicsyn",
        "seq",
        "syn",
        "syscatalog",
        "sysfiles",
        "tab",
        "tabquotas",
        "tabs",
    ];
    let last = n.last.as_str();
    if last == "dual" {
        return None;
    }
    let dictionary = ["all_", "dba_", "user_", "cdb_"].iter().find_map(|p| last.strip_prefix(p));
    let sql_view = ["v$sql", "gv$sql", "v_$sql", "gv_$sql"].iter().any(|p| last.starts_with(p));
    let base_table = n.in_schema_or_bare(&["sys"])
        && matches!(
            last,
            "histgrm$"
                | "hist_head$"
                | "wri$_optstat_histgrm_history"
                | "wri$_optstat_histhead_history"
                | "user$"
                | "link$"
        );
    if dictionary.is_some_and(|v| VALUE_VIEWS.contains(&v)) || sql_view || base_table || last == "cols" {
        return Some(Catalog::Values);
    }
    let system = n.schema_is(&["sys", "system", "audsys", "xdb", "ctxsys", "mdsys", "lbacsys", "outln"])
        || (n.schema.is_none()
            && (dictionary.is_some()
                || ["v$", "gv$", "v_$", "gv_$", "x$"].iter().any(|p| last.starts_with(p))
                || SYNONYMS.contains(&last)));
    system.then_some(Catalog::System)
}

fn hana(n: &Name) -> Option<Catalog> {
    const VALUES: &[&str] = &[
        "m_sql_plan_cache",
        "m_sql_plan_cache_parameters",
        "m_sql_plan_statistics",
        "m_active_statements",
        "m_expensive_statements",
        "m_prepared_statements",
        "m_executed_statements",
        "m_data_statistics",
        "data_statistics",
    ];
    const SYSTEM_VIEWS: &[&str] = &[
        "columns",
        "constraints",
        "functions",
        "granted_privileges",
        "granted_roles",
        "index_columns",
        "indexes",
        "object_dependencies",
        "objects",
        "procedures",
        "referential_constraints",
        "roles",
        "schemas",
        "sequences",
        "synonyms",
        "table_columns",
        "tables",
        "triggers",
        "users",
        "view_columns",
        "views",
    ];
    let last = n.last.as_str();
    if last == "dummy" {
        return None;
    }
    if (n.in_schema_or_bare(&["sys"]) && VALUES.contains(&last)) || n.schema_is(&["_sys_statistics"]) {
        return Some(Catalog::Values);
    }
    let system = n.schema.as_deref().is_some_and(|s| s == "sys" || s.starts_with("_sys"))
        || (n.schema.is_none() && (last.starts_with("m_") || SYSTEM_VIEWS.contains(&last)));
    system.then_some(Catalog::System)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(name: &str, d: Dialect) -> Option<Catalog> {
        relation(&name.split('.').collect::<Vec<_>>(), d)
    }

    #[test]
    fn value_views_and_catalogues_per_dialect() {
        use Catalog::{System, Values};
        let cases: &[(&str, Dialect, Option<Catalog>)] = &[
            ("pg_stats", Dialect::Postgres, Some(Values)),
            ("PG_CATALOG.PG_STATISTIC", Dialect::Postgres, Some(Values)),
            ("public.pg_stat_statements", Dialect::Postgres, Some(Values)),
            ("public.pg_stats", Dialect::Postgres, None),
            ("pg_class", Dialect::Postgres, Some(System)),
            ("information_schema.columns", Dialect::Postgres, Some(System)),
            ("mydb.pg_catalog.pg_namespace", Dialect::Postgres, Some(System)),
            ("pg_toast.pg_toast_16384", Dialect::Postgres, Some(System)),
            ("orders", Dialect::Postgres, None),
            ("mysql.column_stats", Dialect::Mysql, Some(Values)),
            ("information_schema.COLUMN_STATISTICS", Dialect::Mysql, Some(Values)),
            ("performance_schema.events_statements_history", Dialect::Mysql, Some(Values)),
            ("sys.x$statement_analysis", Dialect::Mysql, Some(Values)),
            ("sys.processlist", Dialect::Mysql, Some(Values)),
            ("mysql.user", Dialect::Mysql, Some(Values)),
            ("mysql.proc", Dialect::Mysql, Some(System)),
            ("information_schema.tables", Dialect::Mysql, Some(System)),
            ("shop.orders", Dialect::Mysql, None),
            ("sqlite_stat4", Dialect::Sqlite, Some(Values)),
            ("main.sqlite_stat1", Dialect::Sqlite, Some(Values)),
            ("sqlite_master", Dialect::Sqlite, Some(System)),
            ("temp.sqlite_schema", Dialect::Sqlite, Some(System)),
            ("sys.dm_db_stats_histogram", Dialect::Mssql, Some(Values)),
            ("sys.tables", Dialect::Mssql, Some(System)),
            ("master..sysobjects", Dialect::Mssql, Some(System)),
            ("INFORMATION_SCHEMA.COLUMNS", Dialect::Mssql, Some(System)),
            ("dbo.Orders", Dialect::Mssql, None),
            ("credentials", Dialect::Mssql, None),
            ("sys.credentials", Dialect::Mssql, Some(Values)),
            ("syslogins", Dialect::Mssql, Some(Values)),
            ("ALL_TAB_HISTOGRAMS", Dialect::Oracle, Some(Values)),
            ("user_tab_columns", Dialect::Oracle, Some(Values)),
            ("V$SQL", Dialect::Oracle, Some(Values)),
            ("all_tables", Dialect::Oracle, Some(System)),
            ("SYS.OBJ$", Dialect::Oracle, Some(System)),
            ("dual", Dialect::Oracle, None),
            ("hr.emp", Dialect::Oracle, None),
            ("M_SQL_PLAN_CACHE", Dialect::Hana, Some(Values)),
            ("TABLE_COLUMNS", Dialect::Hana, Some(System)),
            ("SYS.TABLES", Dialect::Hana, Some(System)),
            ("DUMMY", Dialect::Hana, None),
            ("SAPABAP1.VBAK", Dialect::Hana, None),
            ("pg_stats", Dialect::Generic, Some(Values)),
            ("sqlite_master", Dialect::Generic, Some(System)),
            ("orders", Dialect::Generic, None),
        ];
        for (name, d, want) in cases {
            assert_eq!(rel(name, *d), *want, "{name} in {d}");
        }
        assert_eq!(function(&["pragma_table_info"], Dialect::Sqlite), Some(Catalog::System));
        assert_eq!(function(&["pg_get_keywords"], Dialect::Postgres), Some(Catalog::System));
        assert_eq!(function(&["pg_stat_get_activity"], Dialect::Postgres), Some(Catalog::Values));
        assert_eq!(function(&["sys", "dm_exec_sql_text"], Dialect::Mssql), Some(Catalog::Values));
        assert_eq!(function(&["generate_series"], Dialect::Postgres), None);
    }
}
