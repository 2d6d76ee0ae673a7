//! A hostile console, end to end: the real gateway sends commands to the real agent, which runs
//! them on real PostgreSQL 15 and MariaDB servers **as the owner account** (every privilege on
//! the data), so that only our own layers stand between the console and a write. Each attack
//! below got through at some point; after it is refused, the owner checks on a side connection
//! that nothing happened on the server (no lock held, no large object made, no setting kept).
//!
//! Needs `scripts/db-servers.sh start`; with `MC_REQUIRE_DB_SERVERS=1` (CI) a missing server
//! fails the test instead of skipping it.

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{ErrorBody, ErrorCode, Outbound};
use serde_json::{Value, json};

use crate::e2e_query::request;
use crate::support::{AgentProc, DbUrl, World, connected_agent, server_url, wait_event};

/// An agent whose one connection `erp` is the server at `url` (owner account), with `extra`
/// merged into its config. The password goes through a 0600 file reference.
fn owner_agent(world: &World, name: &str, kind: &str, url: &str, extra: Value) -> AgentProc {
    let u = DbUrl::parse(url);
    let secret = world.dir.0.join(format!("{name}-password"));
    std::fs::write(&secret, &u.password).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut config = json!({
        "connections": [{
            "name": "erp",
            "type": kind,
            "host": u.host,
            "port": u.port,
            "database": u.database,
            "user": u.user,
            "passwordRef": format!("file:{}", secret.display()),
            // One pooled connection: whatever a command leaves on it, the next one meets.
            "poolMin": 1,
            "poolMax": 1,
        }]
    });
    if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    connected_agent(world, name, config)
}

/// The `invoices` table and `customers.email` are private on connection `erp`.
fn private_policy() -> Value {
    json!({ "schemaPolicy": { "erp": {
        "privateTables": ["invoices"],
        "privateColumns": { "customers": ["email"] }
    } } })
}

fn with_params(sql: &str, params: Vec<Value>) -> gateway::QueryRequest {
    gateway::QueryRequest { params, ..request(sql) }
}

fn refused(world: &World, name: &str, req: gateway::QueryRequest) -> ErrorBody {
    let sql = req.sql.clone();
    match world.gateway.query(name, req) {
        Err(QueryError::Remote(body)) => body,
        other => panic!("{sql:?}: expected a refusal, got {other:?}"),
    }
}

fn pg_owner(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn pg_count(owner: &mut postgres::Client, sql: &str) -> i64 {
    owner.query_one(sql, &[]).unwrap().get(0)
}

fn mysql_owner(url: &str) -> mysql::PooledConn {
    mysql::Pool::new(url).unwrap().get_conn().unwrap()
}

#[test]
fn postgres_placeholder_rewriting_cannot_smuggle_code_past_the_gate() {
    let Some(url) = server_url("MC_TEST_PG_OWNER_URL") else { return };
    let world = World::new("hostile-pg");
    let _agent = owner_agent(&world, "PgOwner", "postgres", &url, json!({}));
    let mut owner = pg_owner(&url);
    let objects_before = pg_count(&mut owner, "SELECT count(*) FROM pg_largeobject_metadata");

    // One string literal to a lexer that sees the text before `?` becomes `$1`; after the
    // rewrite `$$1 ' $$` is a dollar-quoted string and the rest is live code.
    // Payloads carry no `'` (that would end the literal the gate saw); `$q$` quotes are text
    // inside it and live quoting after the rewrite.
    for payload in [
        "pg_advisory_lock(424242)",
        "set_config($q$search_path$q$, $q$pg_temp$q$, false)",
        "lo_create(424242)",
        "pg_terminate_backend(pg_backend_pid())",
    ] {
        let sql = format!("SELECT $? ' $$ , {payload}, $1::text -- '");
        let body = refused(&world, "PgOwner", with_params(&sql, vec![json!("x")]));
        assert_eq!(body.code, ErrorCode::WriteOperationRejected, "{sql}: {}", body.message);
        assert!(!body.retryable, "{sql}");
    }
    // Nothing ran: no advisory lock held, no large object made, the pooled session's
    // search_path is the default, and the agent's session still answers.
    assert_eq!(pg_count(&mut owner, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    assert_eq!(pg_count(&mut owner, "SELECT count(*) FROM pg_largeobject_metadata"), objects_before);
    let path = world.gateway.query("PgOwner", request("SELECT current_setting('search_path')")).unwrap();
    assert_eq!(path.rows[0][0], json!("\"$user\", public"));

    // `?` placeholders are what the README documents: they bind on PostgreSQL.
    let ok = world
        .gateway
        .query("PgOwner", with_params("SELECT name FROM customers WHERE id = ?", vec![json!(2)]))
        .unwrap();
    assert_eq!(ok.rows, [[json!("東京商事")]]);
}

#[test]
fn mariadb_comments_and_sql_mode_cannot_hide_code_from_the_gate() {
    let Some(url) = server_url("MC_TEST_MYSQL_OWNER_URL") else { return };
    let world = World::new("hostile-my");
    let _agent = owner_agent(&world, "MyOwner", "mysql", &url, json!({}));
    let mut owner = mysql_owner(&url);
    let lock_free = |owner: &mut mysql::PooledConn, name: &str| -> bool {
        use mysql::prelude::Queryable as _;
        let holder: Option<Option<u64>> =
            owner.query_first(format!("SELECT IS_USED_LOCK('{name}')")).unwrap();
        holder.flatten().is_none()
    };

    // `--` followed by a non-ASCII space is no comment to MariaDB: the space is an identifier
    // character, the derived table gives it a value, and GET_LOCK runs.
    for space in ['\u{a0}', '\u{85}', '\u{3000}', '\u{2028}'] {
        let sql =
            format!("SELECT 1 --{space}, GET_LOCK('mc_e2e_space', 0) AS l FROM (SELECT 1 AS `{space}`) AS t");
        let body = refused(&world, "MyOwner", request(&sql));
        assert_eq!(body.code, ErrorCode::WriteOperationRejected, "{sql:?}: {}", body.message);
    }
    assert!(lock_free(&mut owner, "mc_e2e_space"), "a lock hidden behind a non-ASCII space was taken");
}

/// Sets MariaDB's global `sql_mode` for the test's lifetime (new sessions inherit it), as root
/// over the server's Unix socket, and restores it on drop.
struct GlobalSqlMode {
    socket: std::path::PathBuf,
    previous: String,
}

impl GlobalSqlMode {
    fn set(mode: &str) -> Option<Self> {
        let dir = std::env::var("MC_DB_DIR").unwrap_or_else(|_| "/tmp/mc-db-servers".into());
        let socket = std::path::Path::new(&dir).join("mysql/s.sock");
        let previous = root_sql(&socket, "SELECT @@GLOBAL.sql_mode")?;
        root_sql(&socket, &format!("SET GLOBAL sql_mode = '{mode}'"))?;
        Some(Self { socket, previous: previous.trim().to_owned() })
    }
}

impl Drop for GlobalSqlMode {
    fn drop(&mut self) {
        let _ = root_sql(&self.socket, &format!("SET GLOBAL sql_mode = '{}'", self.previous));
    }
}

fn root_sql(socket: &std::path::Path, sql: &str) -> Option<String> {
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "-N", "-B"])
        .arg(format!("--socket={}", socket.display()))
        .args(["-e", sql])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn mariadb_server_sql_mode_cannot_change_what_a_string_is() {
    let Some(url) = server_url("MC_TEST_MYSQL_OWNER_URL") else { return };
    let Some(_mode) = GlobalSqlMode::set("NO_BACKSLASH_ESCAPES,ANSI_QUOTES") else {
        assert!(
            std::env::var("MC_REQUIRE_DB_SERVERS").as_deref() != Ok("1"),
            "cannot reach MariaDB as root over its socket to set sql_mode"
        );
        return;
    };
    let world = World::new("hostile-mode");
    let _agent = owner_agent(&world, "ModeOwner", "mysql", &url, json!({}));
    let mut owner = mysql_owner(&url);
    // With NO_BACKSLASH_ESCAPES `'a\'` is a whole string and GET_LOCK is code; the agent pins
    // the mode the gate lexes by, so to the server it is one literal again.
    // (0x6d63... is 'mc_e2e_mode': no quote may end the gate's literal early.)
    let sql = "SELECT 'a\\' , GET_LOCK(0x6d635f6532655f6d6f6465, 0) AS l -- '";
    match world.gateway.query("ModeOwner", request(sql)) {
        Ok(outcome) => assert_eq!(outcome.row_count, 1, "{sql}"),
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::WriteOperationRejected, "{}", body.message);
        }
        Err(other) => panic!("{sql}: {other:?}"),
    }
    use mysql::prelude::Queryable as _;
    let holder: Option<Option<u64>> = owner.query_first("SELECT IS_USED_LOCK('mc_e2e_mode')").unwrap();
    assert!(holder.flatten().is_none(), "sql_mode let GET_LOCK run");
    // `"x"` is a string to the gate (MySQL rules) and stays one under ANSI_QUOTES.
    let ok = world.gateway.query("ModeOwner", request("SELECT \"x\" AS s")).unwrap();
    assert_eq!(ok.rows, [[json!("x")]]);
}

/// Creates views over the private objects as the owner, in their own schema; dropped at the end.
struct PgViews {
    url: String,
}

impl PgViews {
    fn create(url: &str) -> Self {
        let mut owner = pg_owner(url);
        owner
            .batch_execute(
                "DROP SCHEMA IF EXISTS mc_e2e_views CASCADE;
                 CREATE SCHEMA mc_e2e_views;
                 CREATE VIEW mc_e2e_views.invoice_copy AS SELECT * FROM public.invoices;
                 CREATE VIEW mc_e2e_views.contact_list AS SELECT name, email FROM public.customers;
                 CREATE VIEW mc_e2e_views.nested AS SELECT * FROM mc_e2e_views.contact_list;
                 CREATE VIEW mc_e2e_views.harmless AS SELECT id, status FROM public.orders;
                 ANALYZE public.customers;",
            )
            .unwrap();
        Self { url: url.into() }
    }
}

impl Drop for PgViews {
    fn drop(&mut self) {
        let _ = pg_owner(&self.url).batch_execute("DROP SCHEMA IF EXISTS mc_e2e_views CASCADE");
    }
}

#[test]
fn postgres_private_data_does_not_leak_through_statistics_views_or_catalogues() {
    let Some(url) = server_url("MC_TEST_PG_OWNER_URL") else { return };
    let _views = PgViews::create(&url);
    let world = World::new("hostile-privacy");
    let events = world.gateway.subscribe();
    let _agent = owner_agent(&world, "PgPrivate", "postgres", &url, private_policy());
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => Some(s.schema.clone()),
        _ => None,
    });
    let text = serde_json::to_string(&schema).unwrap();
    for hidden in ["invoices", "\"email\"", "invoice_copy", "contact_list", "nested"] {
        assert!(!text.contains(hidden), "`{hidden}` was broadcast");
    }
    // A view over a table with no private column is still broadcast. (A view over only the
    // public columns of `customers` is private too: views are judged by the tables they read.)
    assert!(text.contains("harmless"), "a view over public data is still broadcast");

    for sql in [
        // Statistics views carry real column values.
        "SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
        "SELECT most_common_vals::text FROM pg_catalog.pg_stats",
        "SELECT * FROM pg_statistic",
        // Views over private objects are private too, however deep.
        "SELECT * FROM mc_e2e_views.invoice_copy",
        "SELECT email FROM mc_e2e_views.contact_list",
        "SELECT name FROM mc_e2e_views.nested",
        // With private objects, the catalogues are off limits (they list private names).
        "SELECT table_name FROM information_schema.tables",
        "SELECT relname FROM pg_class",
        "SELECT attname FROM pg_catalog.pg_attribute",
        // Catalogue functions tell private names too (a view's definition, a table's existence).
        "SELECT pg_get_viewdef('mc_e2e_views.invoice_copy'::regclass)",
        "SELECT to_regclass('public.invoices') IS NOT NULL",
    ] {
        let body = refused(&world, "PgPrivate", request(sql));
        assert_eq!(body.code, ErrorCode::SchemaAccessDenied, "{sql}: {}", body.message);
        assert!(!body.message.contains("email") && !body.message.contains("invoice"), "{}", body.message);
    }
    let ok = world
        .gateway
        .query("PgPrivate", request("SELECT status FROM mc_e2e_views.harmless LIMIT 1"))
        .unwrap();
    assert_eq!(ok.row_count, 1);
}

#[test]
fn mariadb_private_data_does_not_leak_through_statistics_or_catalogues() {
    let Some(url) = server_url("MC_TEST_MYSQL_OWNER_URL") else { return };
    let world = World::new("hostile-my-privacy");
    let _agent = owner_agent(&world, "MyPrivate", "mysql", &url, private_policy());
    for sql in [
        "SELECT min_value, max_value FROM mysql.column_stats",
        "SELECT HISTOGRAM FROM information_schema.COLUMN_STATISTICS",
        "SELECT column_name FROM information_schema.columns",
        "SELECT * FROM performance_schema.events_statements_history",
    ] {
        let body = refused(&world, "MyPrivate", request(sql));
        assert_eq!(body.code, ErrorCode::SchemaAccessDenied, "{sql}: {}", body.message);
    }
}

#[test]
fn queries_the_gate_used_to_refuse_run_end_to_end() {
    let Some(url) = server_url("MC_TEST_PG_OWNER_URL") else { return };
    let world = World::new("hostile-allowed");
    let _agent = owner_agent(&world, "PgAllowed", "postgres", &url, json!({}));
    for sql in [
        "EXPLAIN SELECT id FROM customers",
        "EXPLAIN ANALYZE SELECT id FROM customers",
        "SELECT t.update, t.call FROM (SELECT 1 AS \"update\", 2 AS \"call\") AS t",
        "TABLE customers",
    ] {
        let outcome = world.gateway.query("PgAllowed", request(sql));
        assert!(outcome.is_ok(), "{sql}: {outcome:?}");
    }
    let body = refused(&world, "PgAllowed", request("EXPLAIN ANALYZE DELETE FROM customers"));
    assert!(body.code.as_str().starts_with("WRITE_"), "{}", body.message);
}
