//! Against the real servers: specific connection errors that never show the password,
//! the read-only user check, and every PostgreSQL / MariaDB type mapped to its cell.

use drivers::{
    Cell, ColumnMeta, ConnectionSpec, Database, DbKind, DriverError, OdbcDialect, Password, Secret, WireType,
};

use crate::common::{Owned, run};
use crate::servers::{env_or_skip, odbc_spec, parse_url, shared, url_spec};

/// Why the database cannot be used: a setting refused at open (`Open`), or — the server
/// being contacted only once the pool needs a connection — what the first connection attempt
/// met (`Unavailable`, from `check_health`).
fn open_err(spec: &ConnectionSpec) -> String {
    match Database::open(spec).map(|db| db.check_health()) {
        Err(DriverError::Open(message)) | Ok(Err(DriverError::Unavailable(message))) => message,
        Err(other) | Ok(Err(other)) => panic!("expected an open or unavailable error, got {other:?}"),
        Ok(Ok(())) => panic!("expected an error, connection succeeded"),
    }
}

#[test]
fn connection_errors_are_specific_and_never_show_the_password() {
    let (Some(pg), Some(my)) = (env_or_skip("MC_TEST_PG_URL"), env_or_skip("MC_TEST_MYSQL_URL")) else {
        return;
    };
    let _servers = shared();
    for (kind, url) in [(DbKind::Postgres, parse_url(&pg)), (DbKind::Mysql, parse_url(&my))] {
        let secret = "Wr0ng-Pa55-7731";
        let bad_password =
            ConnectionSpec { password: Password::Value(Secret::new(secret)), ..url_spec(kind, &url) };
        let message = open_err(&bad_password);
        assert!(message.contains("authentication failed"), "{kind}: {message}");
        assert!(!message.contains(secret), "{kind}: {message}");

        let unknown_db = ConnectionSpec { database: Some("no_such_db".into()), ..url_spec(kind, &url) };
        let message = open_err(&unknown_db);
        assert!(message.contains("no_such_db"), "{kind}: {message}");
        assert!(!message.contains(&url.password), "{kind}: {message}");

        // A port nothing listens on.
        let unreachable = ConnectionSpec { port: Some(1), ..url_spec(kind, &url) };
        let message = open_err(&unreachable);
        assert!(message.contains("cannot reach the server"), "{kind}: {message}");

        // The test servers' certificate is from a private CA the public roots do not know.
        let tls = ConnectionSpec { ssl_mode: drivers::SslMode::VerifyFull, ..url_spec(kind, &url) };
        let message = open_err(&tls);
        assert!(message.contains("TLS") && message.contains("UnknownIssuer"), "{kind}: {message}");
        assert!(!message.contains(&url.password), "{kind}: {message}");

        let missing_ref = ConnectionSpec {
            password: Password::Reference("env:MC_NO_SUCH_PASSWORD_VAR".into()),
            ..url_spec(kind, &url)
        };
        assert!(open_err(&missing_ref).contains("env:MC_NO_SUCH_PASSWORD_VAR"), "{kind}");
    }
}

#[test]
fn odbc_errors_name_the_missing_driver_or_dsn() {
    let Some(cs) = env_or_skip("MC_TEST_ODBC_PG") else { return };
    let _servers = shared();
    let message = open_err(&odbc_spec("Driver={No Such Driver};Server=x".into(), OdbcDialect::Generic));
    assert!(message.contains("not found") || message.contains("could not be loaded"), "{message}");
    let message = open_err(&odbc_spec("DSN=no_such_dsn".into(), OdbcDialect::Generic));
    assert!(message.contains("data source name or driver not found"), "{message}");
    let secret = "Wr0ng-Pa55-7731";
    let bad = cs.replace("PWD=ro-test-pw", &format!("PWD={secret}"));
    let message = open_err(&odbc_spec(bad, OdbcDialect::Postgres));
    assert!(!message.contains(secret), "{message}");
    assert!(message.contains("authentication failed") || message.contains("password"), "{message}");
}

#[test]
fn owners_are_reported_as_able_to_write() {
    let (Some(pg), Some(my)) = (env_or_skip("MC_TEST_PG_OWNER_URL"), env_or_skip("MC_TEST_MYSQL_OWNER_URL"))
    else {
        return;
    };
    let _servers = shared();
    for (kind, url) in [(DbKind::Postgres, parse_url(&pg)), (DbKind::Mysql, parse_url(&my))] {
        let db = Database::open(&url_spec(kind, &url)).unwrap();
        let report = db.write_privileges().unwrap();
        assert!(report.can_write, "{kind}: {report:?}");
        assert!(!report.superuser, "{kind}: {report:?}");
        assert!(report.findings.iter().any(|f| f.contains("INSERT")), "{kind}: {report:?}");
        if kind == DbKind::Postgres {
            assert!(report.findings.iter().any(|f| f == "owns table public.orders"), "{report:?}");
        }
        assert!(report.suggested_sql.contains("mc_readonly"));
    }
}

fn one_row(db: &Database, sql: &str) -> (Vec<ColumnMeta>, Vec<Owned>, String) {
    let (sink, _) = run(db, sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    (sink.columns.unwrap(), sink.rows[0].clone(), sink.json[0].clone())
}

#[test]
fn postgres_types_map_exactly() {
    let Some(url) = env_or_skip("MC_TEST_PG_URL") else { return };
    let _servers = shared();
    let db = Database::open(&url_spec(DbKind::Postgres, &parse_url(&url))).unwrap();
    let (columns, row, json) = one_row(
        &db,
        "SELECT 1::int2 AS a, 2::int4 AS b, 9007199254740993::int8 AS c, 1.5::float4 AS d, \
         0.1::float8 AS e, 123456789012345678901234.5678::numeric AS f, true AS g, 'Grüße'::text AS h, \
         '\\x00ff'::bytea AS i, date '2024-02-29' AS j, time '13:14:15.5' AS k, \
         timestamp '2024-01-02 03:04:05.123456' AS l, timestamptz '2024-01-02 03:04:05+02' AS m, \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS n, '{\"k\": [1, 2]}'::jsonb AS o, \
         '{\"k\":1}'::json AS p, interval '1 year 2 days 03:00:00.5' AS q, ARRAY[1, NULL, 3] AS r, \
         NULL::int AS s, 'open'::text AS t, 'infinity'::timestamp AS u, '12.50'::money AS v, \
         time with time zone '10:00:00-05:30' AS w, date '0044-03-15' AS x",
    );
    let wire: Vec<WireType> = columns.iter().map(|c| c.wire_type).collect();
    use WireType::*;
    assert_eq!(
        wire,
        [
            Integer,
            Integer,
            Integer,
            Float,
            Float,
            Decimal,
            Boolean,
            Text,
            Bytes,
            Date,
            Time,
            Timestamp,
            TimestampTz,
            Uuid,
            Json,
            Json,
            Text,
            Json,
            Integer,
            Text,
            Timestamp,
            Decimal,
            Time,
            Date
        ]
    );
    assert_eq!(
        row,
        [
            Owned::Int(1),
            Owned::Int(2),
            Owned::Int(9_007_199_254_740_993),
            Owned::Float(1.5),
            Owned::Float(0.1),
            Owned::Decimal("123456789012345678901234.5678".into()),
            Owned::Bool(true),
            Owned::Text("Grüße".into()),
            Owned::Bytes(vec![0, 255]),
            Owned::Text("2024-02-29".into()),
            Owned::Text("13:14:15.5".into()),
            Owned::Text("2024-01-02T03:04:05.123456".into()),
            Owned::Text("2024-01-02T01:04:05Z".into()),
            Owned::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            Owned::Text(r#"{"k": [1, 2]}"#.into()),
            Owned::Text(r#"{"k":1}"#.into()),
            Owned::Text("P1Y2DT3H0.5S".into()),
            Owned::Text("[1,null,3]".into()),
            Owned::Null,
            Owned::Text("open".into()),
            Owned::Text("infinity".into()),
            Owned::Decimal("12.50".into()),
            Owned::Text("10:00:00-05:30".into()),
            Owned::Text("0044-03-15".into()),
        ]
    );
    assert!(json.contains(r#""123456789012345678901234.5678""#), "decimals are strings: {json}");
    assert_eq!(columns[13].db_type, "uuid");
}

#[test]
fn mariadb_types_map_exactly() {
    let Some(url) = env_or_skip("MC_TEST_MYSQL_URL") else { return };
    let _servers = shared();
    let db = Database::open(&url_spec(DbKind::Mysql, &parse_url(&url))).unwrap();
    let (columns, row, _) = one_row(
        &db,
        "SELECT CAST(1 AS SIGNED) AS a, CAST(18446744073709551615 AS UNSIGNED) AS b, \
         CAST(123456789012345678.5678 AS DECIMAL(30,4)) AS c, CAST(0.1 AS DOUBLE) AS d, \
         CAST('2024-02-29' AS DATE) AS e, CAST('13:14:15.5' AS TIME(1)) AS f, \
         CAST('2024-01-02 03:04:05.123456' AS DATETIME(6)) AS g, _utf8mb4'Grüße' AS h, \
         X'00FF' AS i, NULL AS j, CAST('-838:59:59' AS TIME) AS k",
    );
    let wire: Vec<WireType> = columns.iter().map(|c| c.wire_type).collect();
    use WireType::*;
    assert_eq!(
        wire[..11],
        [Integer, Decimal, Decimal, Float, Date, Time, Timestamp, Text, Bytes, wire[9], Time]
    );
    assert_eq!(
        row[..11],
        [
            Owned::Int(1),
            Owned::Decimal("18446744073709551615".into()),
            Owned::Decimal("123456789012345678.5678".into()),
            Owned::Float(0.1),
            Owned::Text("2024-02-29".into()),
            Owned::Text("13:14:15.5".into()),
            Owned::Text("2024-01-02T03:04:05.123456".into()),
            Owned::Text("Grüße".into()),
            Owned::Bytes(vec![0, 255]),
            Owned::Null,
            Owned::Text("-838:59:59".into()),
        ]
    );
    assert_eq!(columns[1].db_type, "BIGINT UNSIGNED");
    let (columns, row, _) = one_row(
        &db,
        "SELECT is_active, status, credit_limit FROM customers c, orders o WHERE c.id = 1 AND o.id = 1",
    );
    assert_eq!(row[0], Owned::Bool(true), "BOOLEAN (tinyint(1)) is a boolean");
    assert!(matches!(&row[1], Owned::Text(_)), "ENUM is text");
    assert_eq!(row[2], Owned::Decimal("10000.00".into()));
    assert_eq!((columns[0].db_type.as_str(), columns[0].nullable), ("TINYINT(1)", Some(false)));
    assert_eq!(columns[1].db_type, "ENUM");
    let _ = Cell::Null;
}

#[test]
fn generic_odbc_discovery_uses_catalog_functions() {
    let (Some(pg), Some(sqlite)) = (env_or_skip("MC_TEST_ODBC_PG"), env_or_skip("MC_TEST_ODBC_SQLITE"))
    else {
        return;
    };
    let _servers = shared();
    for cs in [pg, sqlite] {
        let db = Database::open(&odbc_spec(cs.clone(), OdbcDialect::Generic)).unwrap();
        let schema = db.discover().unwrap();
        let orders =
            schema.tables.iter().find(|t| t.name == "orders").unwrap_or_else(|| panic!("{cs}: {schema:?}"));
        assert_eq!(orders.primary_key, ["id"], "{cs}");
        assert_eq!(orders.columns.len(), 5, "{cs}");
        assert_eq!(orders.columns[0].wire_type, WireType::Integer, "{cs}");
        assert_eq!(orders.foreign_keys.len(), 1, "{cs}: {:?}", orders.foreign_keys);
        assert_eq!(orders.foreign_keys[0].ref_table, "customers", "{cs}");
        assert!(
            schema.tables.iter().any(|t| t.name == "v_open_orders" && t.kind == drivers::TableKind::View),
            "{cs}"
        );
        let report = db.write_privileges().unwrap();
        assert!(!report.can_write && report.findings[0].contains("cannot be inspected"));
    }
}
