//! The function allow-lists against the real catalogues (`src/functions`): run in CI against
//! the servers of `scripts/db-servers.sh` (`MC_TEST_PG_URL`, `MC_TEST_MYSQL_URL`; without them
//! the PostgreSQL and MariaDB checks are skipped, unless `MC_REQUIRE_DB_SERVERS=1`), and always
//! against the bundled SQLite.
//!
//! Each generated list must equal what its catalogue query returns now (regenerate with
//! `scripts/gen-function-allowlist.sh`), every listed function must exist on the server, and
//! no function of a never-allowed category that the server has may be listed.

use std::collections::BTreeSet;

use gate::Dialect;
use gate::functions::{allow_list, generated_names, hand_added_names, is_allowed_builtin};

fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("MC_REQUIRE_DB_SERVERS").as_deref() == Ok("1") => panic!(
            "{var} is not set but MC_REQUIRE_DB_SERVERS=1: run scripts/db-servers.sh start and \
             eval \"$(scripts/db-servers.sh env)\""
        ),
        _ => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    names.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

/// Fails with the names only one side has.
fn assert_same_names(dialect: Dialect, committed: Vec<&str>, catalogue: Vec<String>) {
    let committed = sorted(committed.into_iter().map(str::to_owned));
    let only_committed: Vec<&String> = committed.iter().filter(|n| !catalogue.contains(n)).collect();
    let only_catalogue: Vec<&String> = catalogue.iter().filter(|n| !committed.contains(n)).collect();
    assert!(
        only_committed.is_empty() && only_catalogue.is_empty(),
        "the committed {dialect} list differs from the catalogue (run scripts/gen-function-allowlist.sh): \
         only committed {only_committed:?}, only in the catalogue {only_catalogue:?}"
    );
}

/// Names that must never be allowed, by the deny categories, among the server's functions.
fn assert_none_allowed(dialect: Dialect, denied_on_server: &[String]) {
    assert!(!denied_on_server.is_empty(), "{dialect}: the deny-category query found nothing");
    let allowed: Vec<&String> = denied_on_server.iter().filter(|n| is_allowed_builtin(n, dialect)).collect();
    assert!(allowed.is_empty(), "{dialect}: never-allowed functions on the allow-list: {allowed:?}");
}

#[test]
fn postgres_list_matches_pg_proc() {
    let Some(url) = env_or_skip("MC_TEST_PG_URL") else { return };
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect to PostgreSQL");
    let version: String = client.query_one("SHOW server_version_num", &[]).unwrap().get(0);
    assert!(version.starts_with("15"), "the list is generated from PostgreSQL 15, the server is {version}");
    let rows = client.query(include_str!("../src/functions/postgres.sql"), &[]).unwrap();
    let catalogue = sorted(rows.iter().map(|r| r.get::<_, String>(0)));
    assert_same_names(Dialect::Postgres, generated_names(Dialect::Postgres), catalogue);

    // Every generated name exists in pg_proc (the hand-added ones are grammar, not pg_proc).
    let rows = client
        .query("SELECT DISTINCT lower(proname) FROM pg_catalog.pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace", &[])
        .unwrap();
    let all: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    for name in generated_names(Dialect::Postgres) {
        assert!(all.contains(name), "postgres: {name} is listed but not in pg_proc");
    }
    for name in hand_added_names(Dialect::Postgres) {
        assert!(!all.contains(name), "postgres: {name} is in pg_proc: let the generator list it");
    }

    // The deny categories, as the server has them: large objects, locks, signals, files,
    // settings, sequences, sleeps, notifications, dynamic SQL; and every volatile function but
    // the reviewed ones.
    let rows = client
        .query(
            r"SELECT DISTINCT proname::text FROM pg_catalog.pg_proc
              WHERE proname ~ '^(lo_|pg_advisory|pg_try_advisory|pg_sleep|pg_read_|pg_ls_|pg_stat_file|pg_terminate_backend|pg_cancel_backend|pg_signal_backend|set_config|nextval|setval|currval|lastval|setseed|txid_current$|pg_current_xact_id$|pg_notify|query_to_xml|table_to_xml|cursor_to_xml|schema_to_xml|database_to_xml|ts_stat|ts_rewrite|pg_backup_|pg_switch_wal|pg_create_|pg_drop_replication_slot|pg_reload_conf)'
                 OR (provolatile = 'v' AND proname NOT IN ('random', 'clock_timestamp', 'timeofday',
                     'gen_random_uuid', 'pg_database_size', 'pg_relation_size', 'pg_total_relation_size',
                     'pg_table_size', 'pg_indexes_size', 'pg_tablespace_size', 'pg_is_in_recovery',
                     'pg_jit_available', 'pg_partition_tree', 'pg_partition_ancestors', 'pg_blocking_pids'))",
            &[],
        )
        .unwrap();
    let denied: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for must in ["lo_put", "lo_from_bytea", "pg_advisory_lock", "pg_sleep", "set_config", "nextval"] {
        assert!(denied.iter().any(|d| d == must), "{must} not found on the server");
    }
    assert_none_allowed(Dialect::Postgres, &denied);
}

/// Whether MariaDB knows `name` as a function: preparing a call with 0–3 arguments does not
/// fail with "FUNCTION does not exist" (1305) or "execute command denied for routine" (1370,
/// what an unknown name gives a user without EXECUTE).
fn mariadb_knows(conn: &mut mysql::Conn, name: &str) -> bool {
    use mysql::prelude::Queryable;
    ["", "NULL", "NULL, NULL", "NULL, NULL, NULL"].iter().any(|args| {
        match conn.prep(format!("SELECT {name}({args})")) {
            Ok(stmt) => {
                conn.close(stmt).ok();
                true
            }
            Err(mysql::Error::MySqlError(e)) => e.code != 1305 && e.code != 1370,
            Err(e) => panic!("mariadb: {e}"),
        }
    })
}

#[test]
fn mysql_list_matches_mariadb_catalogue() {
    use mysql::prelude::Queryable;
    let Some(url) = env_or_skip("MC_TEST_MYSQL_URL") else { return };
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).expect("connect to MariaDB");
    let version: String = conn.query_first("SELECT VERSION()").unwrap().unwrap();
    assert!(
        version.starts_with("10.11"),
        "the list is generated from MariaDB 10.11, the server is {version}"
    );
    let catalogue = sorted(conn.query::<String, _>(include_str!("../src/functions/mysql.sql")).unwrap());
    assert_same_names(Dialect::Mysql, generated_names(Dialect::Mysql), catalogue);

    let missing: Vec<&str> =
        allow_list(Dialect::Mysql).iter().copied().filter(|n| !mariadb_knows(&mut conn, n)).collect();
    assert!(missing.is_empty(), "mysql: listed but unknown to the server: {missing:?}");
    // The probe itself tells known from unknown.
    assert!(!mariadb_knows(&mut conn, "no_such_function_here"));

    let mut denied: Vec<String> = conn
        .query(
            "SELECT LOWER(FUNCTION) FROM information_schema.SQL_FUNCTIONS WHERE LOWER(FUNCTION) IN \
             ('sleep', 'benchmark', 'get_lock', 'release_lock', 'release_all_locks', 'is_free_lock', \
             'is_used_lock', 'load_file', 'master_pos_wait', 'master_gtid_wait', 'last_insert_id', \
             'uuid_short', 'row_count', 'found_rows')",
        )
        .unwrap();
    assert_eq!(denied.len(), 14, "{denied:?}");
    denied.extend(["lastval", "nextval", "setval"].map(String::from));
    assert_none_allowed(Dialect::Mysql, &denied);
}

#[test]
fn sqlite_list_matches_the_bundled_library() {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let mut stmt = db.prepare(include_str!("../src/functions/sqlite.sql")).unwrap();
    let names = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    let catalogue = sorted(names.map(Result::unwrap));
    assert_same_names(Dialect::Sqlite, generated_names(Dialect::Sqlite), catalogue);

    let mut stmt = db.prepare("SELECT DISTINCT lower(name) FROM pragma_function_list").unwrap();
    let all: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    for name in generated_names(Dialect::Sqlite) {
        assert!(all.iter().any(|a| a == name), "sqlite: {name} is listed but not in the library");
    }
    // The table-valued functions added by hand can be queried.
    for name in hand_added_names(Dialect::Sqlite) {
        let arg = if name.starts_with("json") {
            "'[1]'"
        } else if name.contains("table") || name.contains("index") || name.contains("foreign") {
            "'sqlite_master'"
        } else {
            ""
        };
        db.prepare(&format!("SELECT * FROM {name}({arg})"))
            .unwrap_or_else(|e| panic!("sqlite: {name} is listed but cannot be queried: {e}"));
    }
    let denied: Vec<String> =
        ["load_extension", "fts3_tokenizer", "changes", "total_changes", "last_insert_rowid"]
            .iter()
            .filter(|n| all.iter().any(|a| a == *n))
            .map(|n| n.to_string())
            .collect();
    assert!(denied.len() >= 2, "{denied:?}");
    for never in ["readfile", "writefile", "edit", "fsdir", "zipfile"] {
        assert!(!is_allowed_builtin(never, Dialect::Sqlite), "{never}");
    }
    assert_none_allowed(Dialect::Sqlite, &denied);
}
