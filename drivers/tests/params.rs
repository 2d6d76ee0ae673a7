//! Positional parameters.

use drivers::DriverError;
use serde_json::json;

use crate::common::{Owned, run, sample_db, scalar};

#[test]
fn json_values_bind_positionally() {
    let db = sample_db();
    let (sink, _) = run(
        &db,
        "SELECT ?, ?, ?, ?, ?, ?",
        &[json!(null), json!(true), json!(42), json!(-2.5), json!("héllo"), json!(i64::MIN)],
    )
    .unwrap();
    assert_eq!(
        sink.rows[0],
        [
            Owned::Null,
            Owned::Int(1),
            Owned::Int(42),
            Owned::Float(-2.5),
            Owned::Text("héllo".into()),
            Owned::Int(i64::MIN)
        ]
    );
}

#[test]
fn parameters_filter_like_literals() {
    let db = sample_db();
    let literal = scalar(&db, "SELECT count(*) FROM customers WHERE country = 'DE'");
    let (sink, _) = run(&db, "SELECT count(*) FROM customers WHERE country = ?1", &[json!("DE")]).unwrap();
    assert_eq!(sink.rows[0][0], literal);
    assert!(matches!(literal, Owned::Int(n) if n > 0));

    let (sink, _) = run(
        &db,
        "SELECT count(*) FROM orders WHERE status = :status AND customer_id = :customer",
        &[json!("open"), json!(3)],
    )
    .unwrap();
    assert!(matches!(sink.rows[0][0], Owned::Int(_)));
}

#[test]
fn wrong_count_or_type_is_a_bind_error() {
    let db = sample_db();
    let bind = |sql: &str, params: &[serde_json::Value]| match run(&db, sql, params) {
        Err(DriverError::Bind(reason)) => reason,
        other => panic!("{sql}: expected a bind error, got {other:?}"),
    };
    assert_eq!(bind("SELECT ?", &[]), "query takes 1 parameters, 0 given");
    assert_eq!(bind("SELECT 1", &[json!(1)]), "query takes 0 parameters, 1 given");
    assert_eq!(bind("SELECT ?, ?", &[json!(1), json!([1, 2])]), "parameter 2: arrays are not supported");
    assert_eq!(bind("SELECT ?", &[json!({"a": 1})]), "parameter 1: objects are not supported");
    assert!(bind("SELECT ?", &[json!(u64::MAX)]).contains("out of range"));
}
