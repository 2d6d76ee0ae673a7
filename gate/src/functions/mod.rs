//! Which functions a query may call: a per-dialect **allow-list** of built-in functions known to
//! be free of side effects, plus the functions the customer approves by name
//! ([`Policy::approved_functions`](crate::Policy::approved_functions)). Everything else —
//! user-defined functions, extensions, built-ins not reviewed — is refused with
//! `WRITE_OPERATION_REJECTED` and a reason naming the function.
//!
//! A call is judged in this order:
//!
//! 1. **Never allowed** (`gate/src/deny.rs`): sleeps, locks, signals, server files and large
//!    objects, settings, sequences, notifications, remote and dynamic SQL, replication admin.
//!    Refused with the category's reason even when the customer approved the name.
//! 2. **Approved by the customer**: the name matches an entry of `approved_functions`
//!    (case-insensitive; matched like table names, by common trailing parts: `my_fn` covers
//!    `my_fn` and `app.my_fn`, `app.my_fn` covers `my_fn` and `app.my_fn` but not `x.my_fn`).
//! 3. **Built-in and on the allow-list** of the dialect, called by its bare name (PostgreSQL also
//!    `pg_catalog.name`; Oracle also the read-only `DBMS_LOB`/`DBMS_RANDOM`/`DBMS_UTILITY`
//!    functions). A schema-qualified name is a user's function, never the built-in.
//!
//! # The lists
//!
//! One file per dialect, one lower-case name per line (`#` starts a comment), sorted:
//!
//! | file | source |
//! |------|--------|
//! | `postgres.txt` | generated from PostgreSQL 15's `pg_proc` by `postgres.sql` |
//! | `mysql.txt` | generated from MariaDB 10.11's `information_schema.SQL_FUNCTIONS` by `mysql.sql` |
//! | `sqlite.txt` | generated from the bundled SQLite's `pragma_function_list` by `sqlite.sql` |
//! | `postgres.extra.txt`, `mysql.extra.txt`, `sqlite.extra.txt` | hand-reviewed: functions the catalogue does not list (grammar keywords such as `coalesce`, `if`, `day`; MariaDB's GIS functions) |
//! | `mssql.txt`, `oracle.txt`, `hana.txt`, `generic.txt` | hand-curated (no server to generate from) |
//!
//! `scripts/gen-function-allowlist.sh` regenerates the three generated files from running
//! servers (`scripts/db-servers.sh`); the gate's catalogue test (`tests/catalogue.rs`, run in CI
//! against the same servers) fails when a committed file differs from what the catalogue query
//! returns, when a listed name does not exist on the server, or when a listed name is denied.
//! The `.sql` files hold the queries, including the reviewed deny set, so that the script and
//! the test run the same text.
//!
//! # Allocation-heavy calls
//!
//! Calls whose result size is set by an argument are refused when the arguments are constants
//! and the result would be larger than [`MAX_RESULT_BYTES`] (1 MiB) or, for
//! `generate_series`, yield more than [`MAX_SERIES_ROWS`] (10,000,000) rows:
//!
//! | call | refused when |
//! |------|--------------|
//! | `repeat(s, n)`, `replicate(s, n)` (T-SQL) | `len(s) * n` > 1 MiB; with `s` not constant, `n` > 1 MiB |
//! | `lpad(s, n, ..)`, `rpad(s, n, ..)` (and MariaDB's `*_oracle`) | `n` > 1 MiB |
//! | `space(n)`, `randomblob(n)`, `zeroblob(n)` | `n` > 1 MiB |
//! | `concat(..)` of constant-length parts | the sum > 1 MiB |
//! | `generate_series(a, b [, step])` with integer bounds, in FROM or as a value | more than 10,000,000 rows |
//!
//! "Constant" means literals and expressions of them (unary minus, `+ - * /` on integers,
//! `||` on strings, parentheses, casts, and the calls above, so nesting is measured as a whole).
//! Arguments that are not constants (columns, parameters) are left to the database's own
//! limits and the agent's result-size cap; series over dates or timestamps are not measured.
//!
//! # Limits
//!
//! The allow-list is applied to the calls in sqlparser's tree. The lexer's text backstop
//! (`lex.rs`) re-checks only the never-allowed list. What a call can reach *indirectly* is not
//! judged here: a user-defined operator, cast or type input function runs whatever its owner
//! wrote, and on PostgreSQL a user's overload of a built-in name in a schema on the search path
//! can be chosen over the built-in; only roles that may create objects in the database can set
//! those up, not the text of a query.
//!
//! Lookup is a binary search in a sorted slice built once per dialect from the embedded files.

mod cost;

use std::sync::OnceLock;

use crate::deny;
use crate::policy::suffix_match;
use crate::{Dialect, Policy};

pub use cost::{MAX_RESULT_BYTES, MAX_SERIES_ROWS};
pub(crate) use cost::{check as cost_check, check_call as cost_check_call};

/// The generated list of `dialect` (from its catalogue), if it has one.
fn generated_text(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Postgres => Some(include_str!("postgres.txt")),
        Dialect::Mysql => Some(include_str!("mysql.txt")),
        Dialect::Sqlite => Some(include_str!("sqlite.txt")),
        _ => None,
    }
}

/// The hand-reviewed list of `dialect`: additions to a generated list, or the whole list.
fn hand_text(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => include_str!("postgres.extra.txt"),
        Dialect::Mysql => include_str!("mysql.extra.txt"),
        Dialect::Sqlite => include_str!("sqlite.extra.txt"),
        Dialect::Mssql => include_str!("mssql.txt"),
        Dialect::Oracle => include_str!("oracle.txt"),
        Dialect::Hana => include_str!("hana.txt"),
        Dialect::Generic => include_str!("generic.txt"),
    }
}

fn sources(dialect: Dialect) -> impl Iterator<Item = &'static str> {
    generated_text(dialect).into_iter().chain(std::iter::once(hand_text(dialect)))
}

/// The names in one list file: lines without comments and blanks.
fn names_in(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).filter(|l| !l.is_empty())
}

/// The names of the generated list of `dialect` (PostgreSQL, MySQL/MariaDB, SQLite), as
/// committed; empty for the hand-curated dialects. For the catalogue test.
pub fn generated_names(dialect: Dialect) -> Vec<&'static str> {
    generated_text(dialect).map(|t| names_in(t).collect()).unwrap_or_default()
}

/// The hand-reviewed names of `dialect` (additions to the generated list, or the whole list).
pub fn hand_added_names(dialect: Dialect) -> Vec<&'static str> {
    names_in(hand_text(dialect)).collect()
}

/// The allow-list of built-in functions of `dialect`, lower case, sorted, without duplicates.
pub fn allow_list(dialect: Dialect) -> &'static [&'static str] {
    static LISTS: [OnceLock<Vec<&'static str>>; Dialect::ALL.len()] = [const { OnceLock::new() }; 7];
    LISTS[dialect as usize].get_or_init(|| {
        let mut names: Vec<&'static str> = sources(dialect).flat_map(names_in).collect();
        names.sort_unstable();
        names.dedup();
        names
    })
}

/// Whether the built-in `name` (any case) is on the allow-list of `dialect`.
pub fn is_allowed_builtin(name: &str, dialect: Dialect) -> bool {
    with_lower(name, |low| allow_list(dialect).binary_search(&low).is_ok())
}

/// Runs `f` on `s` in lower case (no allocation for short ASCII names).
fn with_lower<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    if s.is_ascii() && s.len() <= buf.len() {
        for (d, b) in buf.iter_mut().zip(s.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        f(std::str::from_utf8(&buf[..s.len()]).unwrap_or_default())
    } else {
        f(&s.to_lowercase())
    }
}

/// The schema a built-in may be qualified with, besides no schema at all.
fn builtin_schema(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Postgres => Some("pg_catalog"),
        _ => None,
    }
}

/// Decides whether the function named `parts` (e.g. `["pg_catalog", "lower"]`) may be called in
/// `dialect` under `policy`. `Err` is the `WRITE_OPERATION_REJECTED` reason; `display` is the
/// name as written, for the reason.
pub(crate) fn check(
    parts: &[&str],
    display: impl std::fmt::Display,
    dialect: Dialect,
    policy: &Policy,
) -> Result<(), String> {
    let Some(&last) = parts.last() else { return Ok(()) };
    if let Some(why) = deny::function(parts, dialect) {
        return Err(format!("function {display} is not allowed: {why}"));
    }
    if policy.approved_functions.iter().any(|a| suffix_match(a, parts)) {
        return Ok(());
    }
    let builtin = match parts {
        [_] => true,
        [schema, _] => builtin_schema(dialect).is_some_and(|s| schema.eq_ignore_ascii_case(s)),
        _ => false,
    };
    if builtin && is_allowed_builtin(last, dialect) {
        return Ok(());
    }
    if dialect == Dialect::Oracle && deny::oracle_package_function(parts) {
        return Ok(());
    }
    Err(format!(
        "function `{display}` is not on the read-only allow-list for {dialect}; approve it by name in \
         approvedFunctions if it has no side effects"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(approved: &[&str]) -> Policy {
        Policy { approved_functions: approved.iter().map(|s| s.to_string()).collect(), ..Policy::default() }
    }

    fn ok(parts: &[&str], d: Dialect, p: &Policy) -> bool {
        check(parts, parts.join("."), d, p).is_ok()
    }

    #[test]
    fn list_files_are_sorted_lower_case_and_unique() {
        for d in Dialect::ALL {
            assert!(allow_list(d).len() > 50, "{d}");
            for text in sources(d) {
                let names: Vec<&str> = names_in(text).collect();
                for pair in names.windows(2) {
                    assert!(pair[0] < pair[1], "{d}: {} / {} (sorted, unique)", pair[0], pair[1]);
                }
                for n in names {
                    assert!(
                        n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                        "{d}: {n:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_listed_function_is_denied() {
        for d in Dialect::ALL {
            for name in allow_list(d) {
                assert_eq!(deny::function(&[name], d), None, "{d}: {name} is allow-listed and denied");
            }
        }
    }

    #[test]
    fn never_allowed_categories_are_off_every_list() {
        let never = [
            "pg_sleep",
            "sleep",
            "benchmark",
            "lo_import",
            "lo_from_bytea",
            "lo_put",
            "lo_unlink",
            "lo_get",
            "pg_advisory_lock",
            "pg_try_advisory_xact_lock",
            "get_lock",
            "release_lock",
            "is_free_lock",
            "release_all_locks",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_read_file",
            "pg_ls_dir",
            "pg_stat_file",
            "pg_read_binary_file",
            "load_file",
            "readfile",
            "writefile",
            "set_config",
            "nextval",
            "setval",
            "currval",
            "lastval",
            "txid_current",
            "pg_notify",
            "dblink",
            "query_to_xml",
            "table_to_xml",
            "cursor_to_xml",
            "ts_stat",
            "load_extension",
            "fts3_tokenizer",
            "master_pos_wait",
            "last_insert_id",
            "setseed",
            "pg_switch_wal",
            "pg_backup_start",
        ];
        for d in Dialect::ALL {
            for name in never {
                assert!(!is_allowed_builtin(name, d), "{d}: {name}");
            }
        }
    }

    #[test]
    fn builtins_unknown_and_approved() {
        let empty = Policy::default();
        assert!(ok(&["lower"], Dialect::Postgres, &empty));
        assert!(ok(&["PG_CATALOG", "Lower"], Dialect::Postgres, &empty));
        assert!(ok(&["string_agg"], Dialect::Postgres, &empty));
        assert!(ok(&["row_number"], Dialect::Postgres, &empty));
        assert!(ok(&["coalesce"], Dialect::Postgres, &empty));
        assert!(ok(&["date_format"], Dialect::Mysql, &empty));
        assert!(ok(&["IF"], Dialect::Mysql, &empty));
        assert!(ok(&["strftime"], Dialect::Sqlite, &empty));
        // A schema-qualified name is a user's function, not the built-in.
        assert!(!ok(&["public", "lower"], Dialect::Postgres, &empty));
        assert!(!ok(&["mc_test", "lower"], Dialect::Mysql, &empty));
        let err = check(&["my_func"], "my_func", Dialect::Postgres, &empty).unwrap_err();
        assert_eq!(
            err,
            "function `my_func` is not on the read-only allow-list for postgres; approve it by name in \
             approvedFunctions if it has no side effects"
        );
        // Approved: by bare or qualified name, any case, matched by common trailing parts.
        let p = policy(&["Public.My_Func", "calc_tax"]);
        assert!(ok(&["my_func"], Dialect::Postgres, &p));
        assert!(ok(&["public", "MY_FUNC"], Dialect::Postgres, &p));
        assert!(!ok(&["other", "my_func"], Dialect::Postgres, &p));
        assert!(ok(&["erp", "calc_tax"], Dialect::Mysql, &p));
        // Never allowed, even when approved.
        let p = policy(&["pg_sleep", "lo_put", "get_lock", "set_config", "nextval", "pg_terminate_backend"]);
        for f in ["pg_sleep", "lo_put", "get_lock", "set_config", "nextval", "pg_terminate_backend"] {
            let err = check(&[f], f, Dialect::Postgres, &p).unwrap_err();
            assert!(err.starts_with(&format!("function {f} is not allowed: it ")), "{err}");
        }
        // Oracle's read-only package functions.
        assert!(ok(&["DBMS_LOB", "GETLENGTH"], Dialect::Oracle, &empty));
        assert!(!ok(&["DBMS_LOCK", "SLEEP"], Dialect::Oracle, &empty));
    }
}
