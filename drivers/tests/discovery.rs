//! The sample ERP fixture and schema discovery.

use std::path::Path;

use drivers::fixture::{FixtureStats, create_sample_erp};
use drivers::{
    Database, DbKind, DriverError, ForeignKey, PoolSettings, RelationName, Table, TableKind, ViewReads,
    WireType,
};

use crate::common::{Owned, Scratch, sample_db, scalar, spec};

fn table<'a>(tables: &'a [Table], name: &str) -> &'a Table {
    tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("table {name} not discovered"))
}

fn fk(columns: &[&str], ref_table: &str, ref_columns: &[&str]) -> ForeignKey {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    ForeignKey { columns: owned(columns), ref_table: ref_table.to_owned(), ref_columns: owned(ref_columns) }
}

#[test]
fn fixture_has_the_documented_size_and_replaces_old_files() {
    let dir = Scratch::new("fixture");
    let path = dir.path("erp.sqlite");
    std::fs::write(&path, b"an old file that is not a database").unwrap();

    let stats = create_sample_erp(&path, 1).unwrap();
    assert_eq!((stats.customers, stats.products, stats.orders), (500, 200, 2000));
    assert!((5000..=7000).contains(&stats.order_lines), "{stats:?}");
    assert!((1300..=1700).contains(&stats.invoices), "{stats:?}");
    assert!(!dir.path("erp.sqlite.tmp").exists());

    // Deterministic: a second run gives the same counts and the same rows.
    let again = create_sample_erp(&dir.path("again.sqlite"), 1).unwrap();
    assert_eq!(stats, again);
    let db = Database::open(&spec(&path, PoolSettings::default())).unwrap();
    let db2 = Database::open(&spec(&dir.path("again.sqlite"), PoolSettings::default())).unwrap();
    let fingerprint = "SELECT group_concat(id || ':' || total || ':' || paid, ',') FROM invoices";
    assert_eq!(scalar(&db, fingerprint), scalar(&db2, fingerprint));
}

#[test]
fn fixture_scales_to_empty() {
    let dir = Scratch::new("fixture-empty");
    let stats = create_sample_erp(&dir.path("empty.sqlite"), 0).unwrap();
    assert_eq!(stats, FixtureStats::default());
}

#[test]
fn fixture_data_has_nulls_unicode_and_photos() {
    let db = sample_db();
    assert_eq!(scalar(&db, "SELECT name FROM customers WHERE id = 1"), Owned::Text("Müller GmbH".into()));
    assert_eq!(scalar(&db, "SELECT name FROM customers WHERE id = 2"), Owned::Text("東京商事".into()));
    for sql in [
        "SELECT count(*) > 0 FROM customers WHERE email IS NULL",
        "SELECT count(*) > 0 FROM orders WHERE notes IS NULL",
        "SELECT count(*) > 0 FROM orders WHERE notes IS NOT NULL",
        "SELECT count(*) BETWEEN 3 AND 10 FROM products WHERE photo IS NOT NULL",
        "SELECT count(*) > 0 FROM v_open_orders",
        "SELECT count(*) = 0 FROM orders o LEFT JOIN customers c ON c.id = o.customer_id \
         WHERE c.id IS NULL",
    ] {
        assert_eq!(scalar(&db, sql), Owned::Int(1), "{sql}");
    }
}

#[test]
fn discovery_is_sorted_with_keys_views_and_counts() {
    let schema = sample_db().discover().unwrap();
    assert_eq!(schema.connection, "erp");
    assert_eq!(schema.db_type, DbKind::Sqlite);
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["customers", "invoices", "order_lines", "orders", "products", "v_open_orders"]);
    assert!(schema.tables.iter().all(|t| t.schema.is_none()));

    let customers = table(&schema.tables, "customers");
    assert_eq!(customers.kind, TableKind::Table);
    assert_eq!(customers.primary_key, ["id"]);
    assert_eq!(customers.row_count_estimate, Some(500));
    let column_names: Vec<&str> = customers.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        column_names,
        ["id", "code", "name", "email", "country", "credit_limit", "created_at", "is_active"],
        "declaration order"
    );
    let wire: Vec<WireType> = customers.columns.iter().map(|c| c.wire_type).collect();
    assert_eq!(
        wire,
        [
            WireType::Integer,
            WireType::Text,
            WireType::Text,
            WireType::Text,
            WireType::Text,
            WireType::Decimal,
            WireType::Timestamp,
            WireType::Boolean
        ]
    );
    let nullable: Vec<bool> = customers.columns.iter().map(|c| c.nullable).collect();
    assert_eq!(nullable, [false, false, false, true, true, true, false, false]);
    assert_eq!(customers.columns[7].default.as_deref(), Some("1"));

    let orders = table(&schema.tables, "orders");
    assert_eq!(orders.foreign_keys, [fk(&["customer_id"], "customers", &["id"])]);
    let status = orders.columns.iter().find(|c| c.name == "status").unwrap();
    assert_eq!(status.enum_values, ["open", "shipped", "invoiced", "cancelled"]);
    assert_eq!(status.default.as_deref(), Some("'open'"));
    assert_eq!(orders.columns[2].wire_type, WireType::Date);

    // `product_id REFERENCES products` has no column list: resolved to the primary key.
    let lines = table(&schema.tables, "order_lines");
    assert_eq!(
        lines.foreign_keys,
        [fk(&["order_id"], "orders", &["id"]), fk(&["product_id"], "products", &["id"])]
    );

    let products = table(&schema.tables, "products");
    let photo = products.columns.iter().find(|c| c.name == "photo").unwrap();
    assert_eq!((photo.data_type.as_str(), photo.wire_type), ("BLOB", WireType::Bytes));
    assert!(photo.nullable);

    let view = table(&schema.tables, "v_open_orders");
    assert_eq!(view.kind, TableKind::View);
    assert_eq!(view.row_count_estimate, None);
    assert!(view.primary_key.is_empty() && view.foreign_keys.is_empty());
    assert_eq!(view.columns[0].name, "order_id");
}

#[test]
fn discovery_counts_rows_without_statistics() {
    let dir = Scratch::new("no-stat1");
    let path = dir.path("erp.sqlite");
    create_sample_erp(&path, 1).unwrap();
    // The crate never hands out a writable connection; the test opens its own.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE sqlite_stat1").unwrap();
    conn.close().unwrap();

    let schema = Database::open(&spec(&path, PoolSettings::default())).unwrap().discover().unwrap();
    assert_eq!(table(&schema.tables, "products").row_count_estimate, Some(200));
    assert_eq!(table(&schema.tables, "orders").row_count_estimate, Some(2000));
}

#[test]
fn discovered_schema_matches_golden_file() {
    let schema = sample_db().discover().unwrap();
    let json = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sqlite_schema.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&golden, &json).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", golden.display()));
    assert!(
        json == expected,
        "discovered schema differs from {}; rerun with UPDATE_GOLDEN=1 if intended\n{json}",
        golden.display()
    );
    // The golden file also deserializes back to the same value, but for the view dependencies,
    // which stay local (never serialized).
    let parsed: drivers::DatabaseSchema = serde_json::from_str(&expected).unwrap();
    let mut schema = schema;
    let view = schema.tables.iter_mut().find(|t| t.name == "v_open_orders").unwrap();
    let reads = view.reads.take();
    assert_eq!(parsed, schema);
    assert_eq!(
        reads,
        Some(ViewReads::Resolved(vec![
            RelationName::new(None, "customers"),
            RelationName::new(None, "order_lines"),
            RelationName::new(None, "orders"),
        ]))
    );
}

#[test]
fn open_fails_clearly() {
    let dir = Scratch::new("open");
    let missing = dir.path("missing.sqlite");
    let err = Database::open(&spec(&missing, PoolSettings::default())).unwrap_err();
    assert!(matches!(&err, DriverError::Open(m) if m.starts_with("database file not found: ")));
    assert!(!missing.exists(), "open must never create a file");

    let junk = dir.path("junk.sqlite");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = Database::open(&spec(&junk, PoolSettings::default())).unwrap_err();
    assert!(matches!(&err, DriverError::Open(m) if m.contains("not a database")), "{err}");

    let bad_pool = PoolSettings { max_connections: 0, ..PoolSettings::default() };
    let err = Database::open(&spec(crate::common::sample_path(), bad_pool)).unwrap_err();
    assert!(matches!(err, DriverError::Open(_)));
}

#[test]
fn database_handle_is_shareable_and_quiet() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Database>();
    assert_send_sync::<drivers::CancelToken>();
    assert_send_sync::<drivers::QueryOptions>();

    let db = sample_db();
    assert_eq!(db.name(), "erp");
    assert_eq!(db.kind(), DbKind::Sqlite);
    assert_eq!(format!("{db:?}"), r#"Database { name: "erp", kind: Sqlite, .. }"#);
    db.ping().unwrap();
    db.clone().ping().unwrap();
}
