//! Views over private objects are private too (issue 8, hole 5), against the real PostgreSQL
//! and MariaDB (natively and through ODBC): the owner creates views over a private table, over
//! a table with a private column, over such a view, with a CTE, over a stored function and over
//! a system catalogue. Discovery (as the read-only user) resolves what each view reads, and the
//! agent's effective policy leaves those views out of the broadcast and the gate refuses them
//! with `SCHEMA_ACCESS_DENIED`; a view over public tables stays visible and runs.
//!
//! Needs `scripts/db-servers.sh`; skips without it unless `MC_REQUIRE_DB_SERVERS=1`.

use std::collections::BTreeSet;

use drivers::{
    Cell, ColumnMeta, ConnectionSpec, Database, DbKind, OdbcDialect, Password, QueryOptions, RelationName,
    RowSink, Secret, SinkError, ViewReads,
};
use mini_connector::policy::{effective_policy, visible_schema};

use crate::support::{DbUrl, server_url as env};

/// `scheme://user:password@host:port/database` as a connection spec.
fn url_spec(kind: DbKind, url: &str) -> ConnectionSpec {
    let u = DbUrl::parse(url);
    ConnectionSpec {
        name: "erp".into(),
        kind,
        host: Some(u.host),
        port: Some(u.port),
        database: Some(u.database),
        user: Some(u.user),
        password: Password::Value(Secret::new(u.password)),
        ..ConnectionSpec::default()
    }
}

fn odbc_spec(connection_string: String, dialect: OdbcDialect) -> ConnectionSpec {
    ConnectionSpec {
        name: "erp".into(),
        kind: DbKind::Odbc,
        connection_string: Some(Secret::new(connection_string)),
        dialect: Some(dialect),
        ..ConnectionSpec::default()
    }
}

/// Runs `teardown` when dropped (also when an assertion fails), so no object is left behind
/// for the golden discovery tests.
struct Cleanup<F: FnMut()>(F);

impl<F: FnMut()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn policy(private_table: &str, table_with_private_column: &str) -> gate::Policy {
    let mut p = gate::Policy::default();
    p.private_tables.insert(private_table.into());
    p.private_columns.entry(table_with_private_column.into()).or_default().insert("ssn".into());
    p
}

#[derive(Default)]
struct Count(u64);

impl RowSink for Count {
    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        Ok(())
    }
    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        self.0 += 1;
        Ok(())
    }
}

/// Discovery, broadcast and gate on one connection. `q` qualifies a test object's name.
fn check(
    db: &Database,
    label: &str,
    dialect: gate::Dialect,
    configured: &gate::Policy,
    q: &dyn Fn(&str) -> String,
) {
    let schema = db.discover().unwrap_or_else(|e| panic!("{label}: {e}"));
    let find = |name: &str| {
        schema
            .tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{label}: {name} not discovered"))
    };
    let private = ["v_pay", "v_people", "v_pay_total", "v_cte", "v_sub", "v_fn", "v_catalog"];

    // What discovery resolved (local only).
    let total = find(&q("v_pay_total").replace("vp.", ""));
    let reads: BTreeSet<String> = match &total.reads {
        Some(ViewReads::Resolved(r)) => r.iter().map(RelationName::to_string).collect(),
        other => panic!("{label}: v_pay_total: {other:?}"),
    };
    assert!(reads.contains(&q("payroll")) && reads.contains(&q("v_pay")), "{label}: {reads:?}");
    for unresolved in ["v_fn", "v_catalog"] {
        let t = find(&q(unresolved).replace("vp.", ""));
        assert!(matches!(t.reads, Some(ViewReads::Unresolved(_))), "{label}: {unresolved}: {:?}", t.reads);
    }
    let things = find(&q("v_things").replace("vp.", ""));
    assert_eq!(
        things
            .reads
            .as_ref()
            .and_then(ViewReads::relations)
            .map(|r| r.iter().map(RelationName::to_string).collect()),
        Some(vec![q("things")]),
        "{label}"
    );
    // The dependency list never reaches the wire.
    let json = serde_json::to_string(&schema).unwrap();
    assert!(!json.contains("reads") && !json.contains("Resolved"), "{label}: {json}");

    // The hole: with the configured policy alone, views over private objects were broadcast.
    let leaked = visible_schema(&schema, configured);
    assert!(leaked.tables.iter().any(|t| t.name.ends_with("v_pay")), "{label}: the hole is not reproduced");

    let effective = effective_policy(configured, &schema);
    let visible = visible_schema(&schema, &effective);
    let shown: Vec<&str> = visible.tables.iter().map(|t| t.name.as_str()).collect();
    for name in private {
        let bare = q(name).replace("vp.", "");
        assert!(!shown.contains(&bare.as_str()), "{label}: {bare} was broadcast: {shown:?}");
    }
    assert!(!shown.iter().any(|n| n.ends_with("payroll")), "{label}: {shown:?}");
    for public in ["v_things", "things", "v_open_orders", "orders"] {
        let bare = q(public).replace("vp.", "");
        assert!(shown.contains(&bare.as_str()), "{label}: {bare} missing: {shown:?}");
    }
    let people = visible.tables.iter().find(|t| t.name.ends_with("people")).unwrap();
    assert!(!people.columns.iter().any(|c| c.name == "ssn"), "{label}");

    for name in private {
        let sql = format!("SELECT * FROM {}", q(name));
        // The database itself serves the data: the view really leaks without the policy.
        if !name.ends_with("catalog") {
            let mut rows = Count::default();
            query_unpoliced(db, &sql, &mut rows).unwrap_or_else(|e| panic!("{label}: {sql}: {e}"));
            assert!(rows.0 > 0, "{label}: {sql} returned nothing");
        }
        let rejection = gate::check(&sql, dialect, &effective).expect_err(&sql);
        assert_eq!(
            rejection.code,
            gate::RejectCode::SchemaAccessDenied,
            "{label}: {sql}: {}",
            rejection.reason
        );
        assert!(!rejection.reason.contains(name), "{label}: the reason names the view: {}", rejection.reason);
    }
    for sql in [format!("SELECT id, label FROM {}", q("v_things")), "SELECT * FROM v_open_orders".to_owned()]
    {
        assert!(gate::check(&sql, dialect, &effective).is_ok(), "{label}: {sql}");
        let mut rows = Count::default();
        query_unpoliced(db, &sql, &mut rows).unwrap_or_else(|e| panic!("{label}: {sql}: {e}"));
    }
}

const PG_TEARDOWN: &str = "DROP SCHEMA IF EXISTS vp CASCADE";

const PG_SETUP: &str = "
    CREATE SCHEMA vp;
    CREATE TABLE vp.payroll (id int PRIMARY KEY, salary int);
    CREATE TABLE vp.people (id int PRIMARY KEY, name text, ssn text);
    CREATE TABLE vp.things (id int PRIMARY KEY, label text);
    INSERT INTO vp.payroll VALUES (1, 5000), (2, 7000);
    INSERT INTO vp.people VALUES (1, 'Ann', '078-05-1120');
    INSERT INTO vp.things VALUES (1, 'bolt');
    ANALYZE vp.payroll;
    CREATE VIEW vp.v_pay AS SELECT id, salary FROM vp.payroll;
    CREATE VIEW vp.v_people AS SELECT id, name FROM vp.people;
    CREATE VIEW vp.v_pay_total AS SELECT sum(salary) AS total FROM vp.v_pay;
    CREATE VIEW vp.v_cte AS WITH p AS (SELECT * FROM vp.payroll) SELECT count(*) AS n FROM p;
    CREATE VIEW vp.v_sub AS SELECT id, (SELECT max(salary) FROM vp.payroll) AS m FROM vp.things
        UNION ALL SELECT 0, 0;
    CREATE FUNCTION vp.top_salary() RETURNS int LANGUAGE sql AS 'SELECT max(salary) FROM vp.payroll';
    CREATE VIEW vp.v_fn AS SELECT vp.top_salary() AS s;
    CREATE VIEW vp.v_catalog AS SELECT attname, histogram_bounds::text AS bounds FROM pg_stats
        WHERE schemaname = 'vp';
    CREATE VIEW vp.v_things AS SELECT id, label FROM vp.things;
    GRANT USAGE ON SCHEMA vp TO mc_ro;
    GRANT SELECT ON ALL TABLES IN SCHEMA vp TO mc_ro;
";

#[test]
fn postgres_views_over_private_objects_are_hidden_and_refused() {
    let (Some(ro), Some(owner)) = (env("MC_TEST_PG_URL"), env("MC_TEST_PG_OWNER_URL")) else { return };
    let mut admin = postgres::Client::connect(&owner, postgres::NoTls).unwrap();
    admin.batch_execute(PG_TEARDOWN).unwrap();
    admin.batch_execute(PG_SETUP).unwrap();
    let _cleanup = Cleanup(move || {
        let _ = admin.batch_execute(PG_TEARDOWN);
    });
    let configured = policy("vp.payroll", "vp.people");
    let q = |name: &str| {
        if name == "v_open_orders" || name == "orders" { name.to_owned() } else { format!("vp.{name}") }
    };
    let native = Database::open(&url_spec(DbKind::Postgres, &ro)).unwrap();
    check(&native, "postgres", gate::Dialect::Postgres, &configured, &q);
    if let Some(cs) = env("MC_TEST_ODBC_PG") {
        let odbc = Database::open(&odbc_spec(cs, OdbcDialect::Postgres)).unwrap();
        check(&odbc, "odbc postgres", gate::Dialect::Postgres, &configured, &q);
    }
}

const MY_TEARDOWN: &[&str] = &[
    "DROP VIEW IF EXISTS vp_v_pay_total, vp_v_pay, vp_v_people, vp_v_cte, vp_v_sub, vp_v_fn, vp_v_catalog, \
     vp_v_things",
    "DROP FUNCTION IF EXISTS vp_top_salary",
    "DROP TABLE IF EXISTS vp_payroll, vp_people, vp_things",
];

const MY_SETUP: &[&str] = &[
    "CREATE TABLE vp_payroll (id int PRIMARY KEY, salary int)",
    "CREATE TABLE vp_people (id int PRIMARY KEY, name text, ssn text)",
    "CREATE TABLE vp_things (id int PRIMARY KEY, label text)",
    "INSERT INTO vp_payroll VALUES (1, 5000), (2, 7000)",
    "INSERT INTO vp_people VALUES (1, 'Ann', '078-05-1120')",
    "INSERT INTO vp_things VALUES (1, 'bolt')",
    "CREATE VIEW vp_v_pay AS SELECT id, salary FROM vp_payroll",
    "CREATE VIEW vp_v_people AS SELECT id, name FROM vp_people",
    "CREATE VIEW vp_v_pay_total AS SELECT sum(salary) AS total FROM vp_v_pay",
    "CREATE VIEW vp_v_cte AS WITH p AS (SELECT * FROM vp_payroll) SELECT count(*) AS n FROM p",
    "CREATE VIEW vp_v_sub AS SELECT id, (SELECT max(salary) FROM vp_payroll) AS m FROM vp_things \
     UNION ALL SELECT 0, 0",
    "CREATE FUNCTION vp_top_salary() RETURNS int READS SQL DATA RETURN (SELECT max(salary) FROM vp_payroll)",
    "CREATE VIEW vp_v_fn AS SELECT vp_top_salary() AS s",
    "CREATE VIEW vp_v_catalog AS SELECT table_name FROM information_schema.tables",
    "CREATE VIEW vp_v_things AS SELECT id, label FROM vp_things",
];

#[test]
fn mariadb_views_over_private_objects_are_hidden_and_refused() {
    use mysql::prelude::Queryable as _;
    let (Some(ro), Some(owner)) = (env("MC_TEST_MYSQL_URL"), env("MC_TEST_MYSQL_OWNER_URL")) else { return };
    let mut admin = mysql::Conn::new(mysql::Opts::from_url(&owner).unwrap()).unwrap();
    for sql in MY_TEARDOWN.iter().chain(MY_SETUP) {
        admin.query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let _cleanup = Cleanup(move || {
        for sql in MY_TEARDOWN {
            let _ = admin.query_drop(sql);
        }
    });
    let configured = policy("vp_payroll", "vp_people");
    let q = |name: &str| {
        if name == "v_open_orders" || name == "orders" { name.to_owned() } else { format!("vp_{name}") }
    };
    let native = Database::open(&url_spec(DbKind::Mysql, &ro)).unwrap();
    check(&native, "mariadb", gate::Dialect::Mysql, &configured, &q);
    if let Some(cs) = env("MC_TEST_ODBC_MYSQL") {
        let odbc = Database::open(&odbc_spec(cs, OdbcDialect::Mysql)).unwrap();
        check(&odbc, "odbc mariadb", gate::Dialect::Mysql, &configured, &q);
    }
}

/// Through the real agent and gateway on the sample SQLite database: `v_open_orders` reads
/// `customers`, which has a private column, so the view is neither broadcast nor runnable.
#[test]
fn the_agent_hides_and_refuses_a_view_over_a_table_with_a_private_column() {
    use gateway::{GatewayEvent, QueryError};
    use mini_connector::protocol::{ErrorCode, Outbound};

    use crate::e2e_query::request;
    use crate::support::{World, connected_agent, wait_event};

    let world = World::new("view-privacy");
    let events = world.gateway.subscribe();
    let policy =
        serde_json::json!({ "schemaPolicy": { "erp": { "privateColumns": { "customers": ["email"] } } } });
    let _agent = connected_agent(&world, "Views", policy);
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => Some(s.schema.clone()),
        _ => None,
    });
    let names: Vec<&str> = schema[0].tables.iter().map(|t| t.name.as_str()).collect();
    assert!(!names.contains(&"v_open_orders"), "the view was broadcast: {names:?}");
    assert!(names.contains(&"orders") && names.contains(&"customers"), "{names:?}");

    for sql in ["SELECT * FROM v_open_orders", "SELECT order_id FROM main.v_open_orders LIMIT 1"] {
        match world.gateway.query("Views", request(sql)) {
            Err(QueryError::Remote(body)) => {
                assert_eq!(body.code, ErrorCode::SchemaAccessDenied, "{sql}: {}", body.message);
                assert!(!body.message.contains("v_open_orders"), "{}", body.message);
            }
            other => panic!("{sql}: expected SCHEMA_ACCESS_DENIED, got {other:?}"),
        }
    }
    let ok = world.gateway.query("Views", request("SELECT id FROM orders ORDER BY id LIMIT 1")).unwrap();
    assert_eq!(ok.row_count, 1);
}

/// Runs `sql` through the gate with no privacy policy (what the database serves), then the driver.
fn query_unpoliced(
    db: &drivers::Database,
    sql: &str,
    rows: &mut Count,
) -> Result<drivers::QueryStats, drivers::DriverError> {
    let checked =
        gate::check_with(sql, 0, db.gate_target(), &gate::Policy::default(), &gate::Limits::default())
            .map_err(|r| drivers::DriverError::WriteRejected(r.to_string()))?;
    db.query(&checked, &[], &QueryOptions::default(), rows)
}
