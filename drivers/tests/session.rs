//! The session settings the gate relies on are pinned on every pooled connection, whatever
//! the server's defaults say, and no session state (locks, settings, variables) left by one
//! query reaches the next query on the same pooled connection.
//!
//! The server defaults are changed through raw clients (the fixture owner for PostgreSQL, the
//! MariaDB root account over its socket) under the exclusive server guard, and restored by a
//! drop guard even when an assertion fails.

use std::time::Duration;

use drivers::{Database, DbKind, OdbcDialect};
use mysql::prelude::Queryable;

use crate::common::{Owned, Recorder, run, scalar};
use crate::servers::{env_or_skip, exclusive, odbc_spec, parse_url, shared, url_spec};

fn single(kind: DbKind, url: &str) -> Database {
    let spec = url_spec(kind, &parse_url(url));
    Database::open(&drivers::ConnectionSpec {
        pool: drivers::PoolSettings {
            min_connections: 1,
            max_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            ..drivers::PoolSettings::default()
        },
        ..spec
    })
    .unwrap()
}

/// Runs `sql` with `functions` approved by name (as a customer would approve a function in
/// `approvedFunctions`) and returns its single value. The session-state tests need a query that
/// leaves something behind — the gate refuses every built-in that does — so each server gets
/// wrapper functions (`mc_leak_*`) whose side effects the customer "did not know about"; the
/// reset on return must clean up after them.
fn leaky(db: &Database, sql: &str) -> Owned {
    let policy = gate::Policy {
        approved_functions: ["mc_leak_lock", "mc_leak_set", "mc_leak_var"].map(String::from).into(),
        ..gate::Policy::default()
    };
    let checked = gate::check_with(sql, 0, db.gate_target(), &policy, &gate::Limits::default())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut sink = Recorder::default();
    db.query(&checked, &[], &drivers::QueryOptions::default(), &mut sink)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    sink.rows[0][0].clone()
}

/// The PostgreSQL wrappers, made by the fixture owner (executable by everyone, as PostgreSQL
/// functions are by default).
fn postgres_leak_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(make_postgres_leak_functions);
}

fn make_postgres_leak_functions() {
    let Some(url) = env_or_skip("MC_TEST_PG_OWNER_URL") else { return };
    let mut owner = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    owner
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.mc_leak_lock(bigint) RETURNS boolean LANGUAGE sql \
               AS 'SELECT pg_try_advisory_lock($1)';
             CREATE OR REPLACE FUNCTION public.mc_leak_set(text, text) RETURNS text LANGUAGE sql \
               AS 'SELECT set_config($1, $2, false)';",
        )
        .unwrap();
}

/// The MariaDB wrappers, made by root over the socket, with EXECUTE for the read-only user.
fn mariadb_leak_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(make_mariadb_leak_functions);
}

/// Who holds the named lock, as root sees it (the gate refuses lock functions to a console).
fn lock_holder(name: &str) -> Option<u64> {
    let mut root = mariadb_root()?;
    root.query_first::<Option<u64>, _>(format!("SELECT IS_USED_LOCK('{name}')")).unwrap().flatten()
}

fn make_mariadb_leak_functions() {
    let Some(mut root) = mariadb_root() else { return };
    for sql in [
        "CREATE OR REPLACE FUNCTION mc_test.mc_leak_lock(n VARCHAR(64)) RETURNS INT NOT DETERMINISTIC \
         RETURN GET_LOCK(n, 0)",
        "CREATE OR REPLACE FUNCTION mc_test.mc_leak_var() RETURNS INT NOT DETERMINISTIC \
         BEGIN SET @mc_leftover = 7; RETURN 7; END",
        "GRANT EXECUTE ON mc_test.* TO 'mc_ro'@'127.0.0.1'",
        "GRANT EXECUTE ON mc_test.* TO 'mc_ro'@'localhost'",
    ] {
        root.query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn text(value: Owned) -> String {
    match value {
        Owned::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// Runs `undo` on drop (restores a server default).
struct Restore<F: FnMut()>(F);

impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn mariadb_root() -> Option<mysql::Conn> {
    let url = env_or_skip("MC_TEST_MYSQL_URL")?;
    // The admin socket sits next to the data: `db-servers.sh` keeps it at $DIR/mysql/s.sock,
    // and MC_DB_CA is $DIR/tls/ca.pem.
    let ca = std::path::PathBuf::from(env_or_skip("MC_DB_CA")?);
    let socket = ca.parent()?.parent()?.join("mysql").join("s.sock");
    let _ = url;
    let opts = mysql::OptsBuilder::new()
        .socket(Some(socket.display().to_string()))
        .user(Some("root"))
        .prefer_socket(true);
    Some(mysql::Conn::new(opts).expect("root over the MariaDB socket (tests run as root)"))
}

#[test]
fn mariadb_sessions_drop_a_global_sql_mode_that_changes_lexing() {
    let Some(url) = env_or_skip("MC_TEST_MYSQL_URL") else { return };
    let Some(mut root) = mariadb_root() else { return };
    let _servers = exclusive();
    let original: String = root.query_first("SELECT @@GLOBAL.sql_mode").unwrap().unwrap();
    let mut undo = mariadb_root().unwrap();
    let undo_mode = original.clone();
    let _restore = Restore(move || {
        undo.exec_drop("SET GLOBAL sql_mode = ?", (undo_mode.as_str(),)).unwrap();
    });
    for global in
        [format!("{original},NO_BACKSLASH_ESCAPES,ANSI_QUOTES"), "ANSI,NO_BACKSLASH_ESCAPES".to_owned()]
    {
        root.exec_drop("SET GLOBAL sql_mode = ?", (global.as_str(),)).unwrap();
        // A fresh raw session does get the modes.
        let mut raw = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        let raw_mode: String = raw.query_first("SELECT @@SESSION.sql_mode").unwrap().unwrap();
        assert!(raw_mode.contains("ANSI_QUOTES") && raw_mode.contains("NO_BACKSLASH_ESCAPES"), "{raw_mode}");

        let db = single(DbKind::Mysql, &url);
        // Twice: at connect, and after the reset on return re-applied the setup.
        for round in 0..2 {
            let mode = text(scalar(&db, "SELECT @@SESSION.sql_mode"));
            assert!(
                !mode.contains("ANSI_QUOTES") && !mode.contains("NO_BACKSLASH_ESCAPES"),
                "{global}: {mode}"
            );
            assert!(!mode.split(',').any(|m| m == "ANSI"), "{global}: {mode}");
            // With NO_BACKSLASH_ESCAPES this would be a string, a SLEEP call and a comment.
            let (rows, stats) = run(&db, r"SELECT 'a\' , sleep(1) -- '", &[]).unwrap();
            assert_eq!(stats.columns, 1, "{global} round {round}");
            assert_eq!(rows.rows[0][0], Owned::Text("a' , sleep(1) -- ".into()));
            // With ANSI_QUOTES this would be a column name.
            assert_eq!(scalar(&db, r#"SELECT "abc""#), Owned::Text("abc".into()), "{global}");
        }
        // Other modes of the server are kept.
        if global.starts_with(&original) {
            let mode = text(scalar(&db, "SELECT @@SESSION.sql_mode"));
            assert!(mode.contains("STRICT_TRANS_TABLES"), "{mode}");
        }
    }
}

#[test]
fn postgres_sessions_keep_standard_conforming_strings_whatever_the_database_default() {
    let (Some(url), Some(owner)) = (env_or_skip("MC_TEST_PG_URL"), env_or_skip("MC_TEST_PG_OWNER_URL"))
    else {
        return;
    };
    let _servers = exclusive();
    let database = parse_url(&url).database;
    let mut admin = postgres::Client::connect(&owner, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("ALTER DATABASE {database} SET standard_conforming_strings = off")).unwrap();
    let mut undo = postgres::Client::connect(&owner, postgres::NoTls).unwrap();
    let _restore = Restore(move || {
        undo.batch_execute(&format!("ALTER DATABASE {database} RESET standard_conforming_strings")).unwrap();
    });
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let raw_value: String = raw.query_one("SHOW standard_conforming_strings", &[]).unwrap().get(0);
    assert_eq!(raw_value, "off", "a fresh raw session gets the database default");

    let db = single(DbKind::Postgres, &url);
    for _ in 0..2 {
        assert_eq!(
            scalar(&db, "SELECT current_setting('standard_conforming_strings')"),
            Owned::Text("on".into())
        );
        // With backslash escapes on, `\'` would end the literal early and `2 AS injected`
        // would be a second column.
        let (rows, stats) = run(&db, r"SELECT 'a\'' , 2 AS injected -- '", &[]).unwrap();
        assert_eq!(stats.columns, 1);
        assert_eq!(rows.rows[0][0], Owned::Text(r"a\' , 2 AS injected -- ".into()));
    }
}

#[test]
fn postgres_locks_and_settings_do_not_outlive_their_query() {
    let Some(url) = env_or_skip("MC_TEST_PG_URL") else { return };
    let _servers = shared();
    postgres_leak_functions();
    let db = single(DbKind::Postgres, &url);
    let pid = scalar(&db, "SELECT pg_backend_pid()");
    let search_path = scalar(&db, "SELECT current_setting('search_path')");
    let advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()";

    assert_eq!(leaky(&db, "SELECT mc_leak_lock(424242)"), Owned::Bool(true));
    assert_eq!(scalar(&db, advisory), Owned::Int(0), "advisory lock released on return");
    leaky(&db, "SELECT mc_leak_set('search_path', 'pg_catalog')");
    assert_eq!(scalar(&db, "SELECT current_setting('search_path')"), search_path);
    leaky(&db, "SELECT mc_leak_set('standard_conforming_strings', 'off')");
    assert_eq!(
        scalar(&db, "SELECT current_setting('standard_conforming_strings')"),
        Owned::Text("on".into())
    );
    leaky(&db, "SELECT mc_leak_set('default_transaction_read_only', 'off')");
    assert_eq!(
        scalar(&db, "SELECT current_setting('default_transaction_read_only')"),
        Owned::Text("on".into())
    );
    assert_eq!(scalar(&db, "SELECT pg_backend_pid()"), pid, "the same pooled connection all along");
}

#[test]
fn mariadb_locks_and_variables_do_not_outlive_their_query() {
    let Some(url) = env_or_skip("MC_TEST_MYSQL_URL") else { return };
    let _servers = shared();
    mariadb_leak_functions();
    let db = single(DbKind::Mysql, &url);
    let id = scalar(&db, "SELECT CONNECTION_ID()");

    assert_eq!(leaky(&db, "SELECT mc_leak_lock('mc_session_test')"), Owned::Int(1));
    assert_eq!(lock_holder("mc_session_test"), None, "GET_LOCK released on return");
    assert_eq!(leaky(&db, "SELECT mc_leak_var()"), Owned::Int(7));
    assert_eq!(scalar(&db, "SELECT @mc_leftover"), Owned::Null, "user variables dropped on return");
    assert_eq!(scalar(&db, "SELECT @@SESSION.tx_read_only"), Owned::Int(1), "read-only again after reset");
    assert_eq!(scalar(&db, "SELECT @@SESSION.time_zone"), Owned::Text("+00:00".into()));
    assert_eq!(scalar(&db, "SELECT CONNECTION_ID()"), id, "the same pooled connection all along");
}

#[test]
fn odbc_sessions_release_locks_and_keep_the_pins() {
    let (Some(pg), Some(my)) = (env_or_skip("MC_TEST_ODBC_PG"), env_or_skip("MC_TEST_ODBC_MYSQL")) else {
        return;
    };
    let _servers = shared();
    let single = |cs: String, dialect| {
        Database::open(&drivers::ConnectionSpec {
            pool: drivers::PoolSettings {
                min_connections: 1,
                max_connections: 1,
                ..drivers::PoolSettings::default()
            },
            ..odbc_spec(cs, dialect)
        })
        .unwrap()
    };
    postgres_leak_functions();
    mariadb_leak_functions();
    let db = single(pg, OdbcDialect::Postgres);
    leaky(&db, "SELECT mc_leak_lock(424243)");
    let advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()";
    assert_eq!(scalar(&db, advisory), Owned::Int(0));
    leaky(&db, "SELECT mc_leak_set('standard_conforming_strings', 'off')");
    assert_eq!(
        scalar(&db, "SELECT current_setting('standard_conforming_strings')"),
        Owned::Text("on".into())
    );
    leaky(&db, "SELECT mc_leak_set('search_path', 'pg_catalog')");
    assert_eq!(scalar(&db, "SELECT current_setting('search_path')"), Owned::Text("\"$user\", public".into()));

    let db = single(my, OdbcDialect::Mysql);
    leaky(&db, "SELECT mc_leak_lock('mc_odbc_session_test')");
    assert_eq!(lock_holder("mc_odbc_session_test"), None);
    let mode = text(scalar(&db, "SELECT @@SESSION.sql_mode"));
    assert!(!mode.contains("ANSI_QUOTES") && !mode.contains("NO_BACKSLASH_ESCAPES"), "{mode}");
}
