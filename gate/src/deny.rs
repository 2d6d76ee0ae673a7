//! Functions that are **never** allowed, whatever the allow-lists say and even when the customer
//! approves them by name ([`crate::functions`]): they have side effects that a read-only
//! transaction does not stop. They sleep, take advisory locks, signal other sessions, read
//! server files or large objects, change settings, notify, reach other servers, run SQL given as
//! text, administer replication or advance sequences. The lexer's text backstop checks this list
//! too, on calls the parser may not have seen.
//!
//! Names are matched case-insensitively on the last part of the (possibly qualified) name, so
//! `pg_catalog.pg_sleep` and `"PG_SLEEP"` are both caught. Oracle's `DBMS_*` and `UTL_*`
//! packages are denied whole (any part of the name), except a few read-only functions.
//! Most names apply to every dialect: they are system names nobody reuses for a harmless
//! function, and a `generic` check must deny them all anyway.

use crate::Dialect;

const ALL: u8 = 0xff;
const MSSQL_OR_GENERIC: u8 = (1 << Dialect::Mssql as u8) | (1 << Dialect::Generic as u8);

const SLEEPS: &str = "it sleeps or waits";
const LOCKS: &str = "it takes or releases locks";
const SIGNALS: &str = "it signals or stops other sessions";
const FILES: &str = "it reads or writes server files or large objects";
const SETTINGS: &str = "it changes settings or session state";
const NOTIFY: &str = "it sends notifications";
const REMOTE: &str = "it connects to another server or runs remote SQL";
const DYNAMIC: &str = "it runs SQL given as text or reads tables by name";
const ADMIN: &str = "it administers replication, WAL or backups";
const SEQUENCE: &str = "it advances a sequence or assigns a transaction id";
const CODE: &str = "it loads code into the server or runs commands";
const MAINT: &str = "it modifies indexes or statistics";
const PROCS: &str = "system procedures (xp_*, sp_*) have side effects";
const ORACLE_PKG: &str =
    "Oracle DBMS_*/UTL_* packages can sleep, lock, run dynamic SQL or reach files and the network";
const CRON: &str = "it schedules jobs";

/// Exact function names (lower case, sorted for binary search), the dialects they apply to,
/// and why.
const EXACT: &[(&str, u8, &str)] = &[
    ("benchmark", ALL, SLEEPS),
    ("connectby", ALL, DYNAMIC),
    ("dburitype", ALL, DYNAMIC),
    ("edit", ALL, FILES),
    ("eval", ALL, DYNAMIC),
    ("fn_get_audit_file", ALL, FILES),
    ("fn_trace_gettable", ALL, FILES),
    ("fn_xe_file_target_read_file", ALL, FILES),
    ("fsdir", ALL, FILES),
    ("fts3_tokenizer", ALL, CODE),
    ("get_lock", ALL, LOCKS),
    ("gin_clean_pending_list", ALL, MAINT),
    ("http", ALL, REMOTE),
    ("httpuritype", ALL, REMOTE),
    ("is_free_lock", ALL, LOCKS),
    ("is_used_lock", ALL, LOCKS),
    ("last_insert_id", ALL, SETTINGS),
    ("load_extension", ALL, CODE),
    ("load_file", ALL, FILES),
    ("loread", ALL, FILES),
    ("lowrite", ALL, FILES),
    ("master_gtid_wait", ALL, SLEEPS),
    ("master_pos_wait", ALL, SLEEPS),
    ("nextval", ALL, SEQUENCE),
    ("opendatasource", ALL, REMOTE),
    ("openquery", ALL, REMOTE),
    ("openrowset", ALL, REMOTE),
    ("pg_cancel_backend", ALL, SIGNALS),
    ("pg_current_xact_id", ALL, SEQUENCE),
    ("pg_drop_replication_slot", ALL, ADMIN),
    ("pg_extension_config_dump", ALL, SETTINGS),
    ("pg_import_system_collations", ALL, MAINT),
    ("pg_log_backend_memory_contexts", ALL, SETTINGS),
    ("pg_log_standby_snapshot", ALL, ADMIN),
    ("pg_logdir_ls", ALL, FILES),
    ("pg_notify", ALL, NOTIFY),
    ("pg_promote", ALL, ADMIN),
    ("pg_read_binary_file", ALL, FILES),
    ("pg_read_file", ALL, FILES),
    ("pg_read_file_old", ALL, FILES),
    ("pg_reload_conf", ALL, SETTINGS),
    ("pg_replication_slot_advance", ALL, ADMIN),
    ("pg_rotate_logfile", ALL, SETTINGS),
    ("pg_rotate_logfile_old", ALL, SETTINGS),
    ("pg_signal_backend", ALL, SIGNALS),
    ("pg_sleep", ALL, SLEEPS),
    ("pg_sleep_for", ALL, SLEEPS),
    ("pg_sleep_until", ALL, SLEEPS),
    ("pg_start_backup", ALL, ADMIN),
    ("pg_stat_file", ALL, FILES),
    ("pg_stat_statements_reset", ALL, MAINT),
    ("pg_stop_backup", ALL, ADMIN),
    ("pg_switch_wal", ALL, ADMIN),
    ("pg_switch_xlog", ALL, ADMIN),
    ("pg_sync_replication_slots", ALL, ADMIN),
    ("pg_terminate_backend", ALL, SIGNALS),
    ("readfile", ALL, FILES),
    ("release_all_locks", ALL, LOCKS),
    ("release_lock", ALL, LOCKS),
    ("set_config", ALL, SETTINGS),
    ("setval", ALL, SEQUENCE),
    ("sleep", ALL, SLEEPS),
    ("sleep_seconds", ALL, SLEEPS),
    ("source_pos_wait", ALL, SLEEPS),
    ("sys_eval", ALL, CODE),
    ("sys_exec", ALL, CODE),
    ("ts_rewrite", ALL, DYNAMIC),
    ("ts_stat", ALL, DYNAMIC),
    ("txid_current", ALL, SEQUENCE),
    ("wait_for_executed_gtid_set", ALL, SLEEPS),
    ("wait_until_sql_thread_after_gtids", ALL, SLEEPS),
    ("wakeup_connection", ALL, SIGNALS),
    ("writefile", ALL, FILES),
    ("xdburitype", ALL, FILES),
    ("zipfile", ALL, FILES),
];

/// Name prefixes (lower case).
const PREFIX: &[(&str, u8, &str)] = &[
    ("pg_advisory_", ALL, LOCKS),
    ("pg_try_advisory_", ALL, LOCKS),
    ("lo_", ALL, FILES),
    ("pg_ls_", ALL, FILES),
    ("pg_file_", ALL, FILES),
    ("dblink", ALL, REMOTE),
    ("http_", ALL, REMOTE),
    ("pg_logical_", ALL, ADMIN),
    ("pg_replication_origin_", ALL, ADMIN),
    ("pg_create_", ALL, ADMIN),
    ("pg_copy_", ALL, ADMIN),
    ("pg_wal_replay_", ALL, ADMIN),
    ("pg_xlog_replay_", ALL, ADMIN),
    ("pg_backup_", ALL, ADMIN),
    ("pg_stat_reset", ALL, MAINT),
    ("pg_restore_", ALL, MAINT),
    ("pg_clear_", ALL, MAINT),
    ("brin_", ALL, MAINT),
    ("pg_background_", ALL, DYNAMIC),
    ("query_to_xml", ALL, DYNAMIC),
    ("table_to_xml", ALL, DYNAMIC),
    ("cursor_to_xml", ALL, DYNAMIC),
    ("crosstab", ALL, DYNAMIC),
    ("schema_to_xml", ALL, DYNAMIC),
    ("database_to_xml", ALL, DYNAMIC),
    ("xp_", MSSQL_OR_GENERIC, PROCS),
    ("sp_", MSSQL_OR_GENERIC, PROCS),
];

/// Read-only functions of Oracle packages, allowed although the package prefix is denied.
const ORACLE_ALLOWED: &[(&str, &[&str])] = &[
    ("dbms_lob", &["substr", "getlength", "instr", "compare", "get_storage_limit", "getchunksize"]),
    ("dbms_random", &["value", "string", "normal", "random"]),
    ("dbms_utility", &["get_hash_value", "get_time"]),
];

/// Whether `parts` names one of the read-only functions of an Oracle package
/// (`DBMS_LOB.SUBSTR`, `SYS.DBMS_LOB.SUBSTR`).
pub(crate) fn oracle_package_function(parts: &[&str]) -> bool {
    let n = parts.len();
    if !(2..=3).contains(&n) || (n == 3 && !parts[0].eq_ignore_ascii_case("sys")) {
        return false;
    }
    let (pkg, f) = (parts[n - 2], parts[n - 1]);
    ORACLE_ALLOWED
        .iter()
        .any(|(p, fns)| pkg.eq_ignore_ascii_case(p) && fns.iter().any(|x| f.eq_ignore_ascii_case(x)))
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Why calling the function named `parts` (e.g. `["pg_catalog", "pg_sleep"]`) is denied in
/// `dialect`, or `None` when it is allowed.
pub(crate) fn function(parts: &[&str], dialect: Dialect) -> Option<&'static str> {
    let last = *parts.last()?;
    let bit = dialect.bit();
    let mut buf = [0u8; 64];
    let lowered;
    let low: &str = if last.is_ascii() && last.len() <= buf.len() {
        for (d, b) in buf.iter_mut().zip(last.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        std::str::from_utf8(&buf[..last.len()]).unwrap_or_default()
    } else {
        lowered = last.to_lowercase();
        &lowered
    };
    for (i, part) in parts.iter().enumerate() {
        if starts_with_ci(part, "dbms_") || starts_with_ci(part, "utl_") {
            let allowed = i + 2 == parts.len()
                && ORACLE_ALLOWED.iter().any(|(pkg, fns)| {
                    part.eq_ignore_ascii_case(pkg) && fns.iter().any(|f| last.eq_ignore_ascii_case(f))
                });
            return if allowed { None } else { Some(ORACLE_PKG) };
        }
    }
    if let Ok(i) = EXACT.binary_search_by(|(name, _, _)| (*name).cmp(low))
        && EXACT[i].1 & bit != 0
    {
        return Some(EXACT[i].2);
    }
    if let Some((_, _, why)) =
        PREFIX.iter().find(|(prefix, mask, _)| mask & bit != 0 && low.starts_with(prefix))
    {
        return Some(why);
    }
    if parts.len() > 1 && parts[0].eq_ignore_ascii_case("cron") {
        return Some(CRON);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_are_sorted_lower_case_and_unique() {
        for pair in EXACT.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} / {}", pair[0].0, pair[1].0);
        }
        for (name, _, _) in EXACT.iter().chain(PREFIX) {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }

    #[test]
    fn denies_by_name_prefix_and_package() {
        let d = |p: &[&str]| function(p, Dialect::Postgres);
        assert_eq!(d(&["pg_sleep"]), Some(SLEEPS));
        assert_eq!(d(&["PG_CATALOG", "PG_SLEEP"]), Some(SLEEPS));
        assert_eq!(d(&["pg_advisory_xact_lock_shared"]), Some(LOCKS));
        assert_eq!(d(&["lo_import"]), Some(FILES));
        assert_eq!(d(&["dblink_exec"]), Some(REMOTE));
        assert_eq!(d(&["cron", "schedule"]), Some(CRON));
        assert_eq!(function(&["SYS", "DBMS_LOCK", "SLEEP"], Dialect::Oracle), Some(ORACLE_PKG));
        assert_eq!(function(&["UTL_HTTP", "REQUEST"], Dialect::Oracle), Some(ORACLE_PKG));
        assert_eq!(function(&["DBMS_LOB", "SUBSTR"], Dialect::Oracle), None);
        assert_eq!(function(&["xp_cmdshell"], Dialect::Mssql), Some(PROCS));
    }

    #[test]
    fn allows_ordinary_functions() {
        for d in Dialect::ALL {
            for f in
                ["coalesce", "date_trunc", "lower", "locate", "sum", "row_number", "substr", "now", "replace"]
            {
                assert_eq!(function(&[f], d), None, "{f} {d}");
            }
        }
        // A user's MySQL stored function named sp_* is not a SQL Server system procedure.
        assert_eq!(function(&["sp_price"], Dialect::Mysql), None);
    }
}
