//! What a query hands to its sink: column metadata, cell types, JSON.

use drivers::fixture::LARGE_RESULT_SQL;
use drivers::{Cell, ColumnMeta, QueryOptions, RowSink, SinkError, WireType};
use serde_json::json;

use crate::common::{Owned, QueryText, run, sample_db};

#[test]
fn cells_keep_the_engine_types() {
    let db = sample_db();
    let (sink, stats) = run(&db, "SELECT 42, 1.5, 'text', x'00ff', NULL", &[]).unwrap();
    assert_eq!((stats.rows, stats.columns), (1, 5));
    assert_eq!(
        sink.rows[0],
        [
            Owned::Int(42),
            Owned::Float(1.5),
            Owned::Text("text".into()),
            Owned::Bytes(vec![0x00, 0xff]),
            Owned::Null
        ]
    );
    assert_eq!(sink.json[0], r#"[42,1.5,"text","AP8=",null]"#);
}

#[test]
fn table_columns_carry_declared_and_wire_types() {
    let db = sample_db();
    let (sink, stats) = run(
        &db,
        "SELECT id, name, unit_price, photo, weight_kg, unit_price * 2 AS doubled \
         FROM products WHERE photo IS NOT NULL ORDER BY id LIMIT 1",
        &[],
    )
    .unwrap();
    assert_eq!(stats.rows, 1);
    let meta = |name: &str, wire_type, db_type: &str| ColumnMeta {
        name: name.into(),
        wire_type,
        db_type: db_type.into(),
        nullable: None,
    };
    assert_eq!(
        sink.columns.unwrap(),
        [
            meta("id", WireType::Integer, "INTEGER"),
            meta("name", WireType::Text, "TEXT"),
            meta("unit_price", WireType::Float, "REAL"),
            meta("photo", WireType::Bytes, "BLOB"),
            meta("weight_kg", WireType::Float, "REAL"),
            meta("doubled", WireType::Unknown, ""),
        ]
    );
    let row = &sink.rows[0];
    assert!(matches!(row[0], Owned::Int(40)), "{row:?}");
    assert!(matches!(row[1], Owned::Text(_)));
    assert!(matches!(row[2], Owned::Float(_)));
    assert!(matches!(&row[3], Owned::Bytes(b) if b.starts_with(b"\x89PNG")));
    assert!(matches!(row[4], Owned::Float(_) | Owned::Null));
}

#[test]
fn unicode_text_and_invalid_utf8() {
    let db = sample_db();
    let (sink, _) = run(&db, "SELECT name FROM customers WHERE id IN (1, 2) ORDER BY id", &[]).unwrap();
    assert_eq!(sink.json, [r#"["Müller GmbH"]"#, r#"["東京商事"]"#]);

    // Text that is not UTF-8 is passed on as bytes rather than mangled.
    let (sink, _) = run(&db, "SELECT CAST(x'ff41' AS TEXT)", &[]).unwrap();
    assert_eq!(sink.rows[0], [Owned::Bytes(vec![0xff, 0x41])]);
}

#[test]
fn non_finite_floats_never_become_null() {
    let db = sample_db();
    let (sink, _) = run(&db, "SELECT 1e999, -1e999", &[]).unwrap();
    assert_eq!(sink.json[0], r#"["Infinity","-Infinity"]"#);
    assert_eq!(
        serde_json::to_string(&[Cell::Float(f64::NAN), Cell::Decimal("1.10")]).unwrap(),
        r#"["NaN","1.10"]"#
    );
}

#[test]
fn empty_result_still_announces_columns() {
    let db = sample_db();
    let (sink, stats) = run(&db, "SELECT id, code FROM customers WHERE 0", &[]).unwrap();
    assert_eq!((stats.rows, stats.columns), (0, 2));
    assert_eq!(sink.columns.unwrap().len(), 2);
    assert!(sink.rows.is_empty());
}

#[test]
fn large_results_stream_through_the_sink() {
    /// Checks order and counts without keeping anything.
    struct Counter {
        rows: u64,
    }
    impl RowSink for Counter {
        fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError> {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["n", "label", "amount", "even"]);
            Ok(())
        }
        fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
            self.rows += 1;
            let n = i64::try_from(self.rows).unwrap();
            assert_eq!(cells[0], Cell::Int(n));
            assert_eq!(cells[1], Cell::Text(&format!("row {n}")));
            Ok(())
        }
    }
    let db = sample_db();
    let mut sink = Counter { rows: 0 };
    let stats =
        db.query_text(LARGE_RESULT_SQL, &[json!(200_000)], &QueryOptions::default(), &mut sink).unwrap();
    assert_eq!((stats.rows, stats.columns), (200_000, 4));
    assert_eq!(sink.rows, 200_000);
}

#[test]
fn view_rows_come_out_like_table_rows() {
    let db = sample_db();
    let (sink, stats) = run(
        &db,
        "SELECT order_id, customer_name, line_count, amount FROM v_open_orders ORDER BY order_id LIMIT 5",
        &[],
    )
    .unwrap();
    assert_eq!(stats.rows, 5);
    for row in &sink.rows {
        assert!(matches!(row[0], Owned::Int(_)));
        assert!(matches!(row[1], Owned::Text(_)));
        assert!(matches!(row[2], Owned::Int(n) if (1..=5).contains(&n)));
        assert!(matches!(row[3], Owned::Float(_) | Owned::Int(_)));
    }
}
