//! Only single read-only queries run; the connection refuses writes regardless
//! (see also the unit test `pooled_connection_refuses_writes_even_without_the_checks`).

use drivers::DriverError;

use crate::common::{Owned, run, sample_db, scalar};

#[test]
fn non_queries_are_rejected_before_running() {
    let db = sample_db();
    for sql in [
        "INSERT INTO orders (customer_id, order_date) VALUES (1, '2024-01-01')",
        "UPDATE customers SET name = 'x'",
        "DELETE FROM order_lines",
        "DROP TABLE invoices",
        "CREATE TABLE t (a INTEGER)",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA query_only = 0",
        "WITH c AS (SELECT 1) DELETE FROM orders",
    ] {
        match run(&db, sql, &[]) {
            Err(DriverError::WriteRejected(reason)) => {
                assert!(reason.contains("WRITE_"), "{sql}: {reason}");
            }
            other => panic!("{sql}: expected WriteRejected, got {other:?}"),
        }
    }
    assert_ne!(scalar(&db, "SELECT count(*) FROM order_lines"), Owned::Int(0));
}

#[test]
fn multiple_statements_are_rejected() {
    let db = sample_db();
    for sql in ["SELECT 1; DELETE FROM orders", "SELECT 1; SELECT 2", "DELETE FROM orders; SELECT 1"] {
        let err = run(&db, sql, &[]).unwrap_err();
        assert!(matches!(&err, DriverError::WriteRejected(r) if r.contains("WRITE_")), "{sql}: {err}");
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM orders"), Owned::Int(2000));
}

#[test]
fn unparseable_sql_is_rejected_and_one_trailing_semicolon_is_fine() {
    let db = sample_db();
    let err = run(&db, "SELEC * FROM orders", &[]).unwrap_err();
    assert!(matches!(&err, DriverError::WriteRejected(r) if r.contains("could not parse")), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(scalar(&db, "SELECT count(*) FROM products;"), Owned::Int(200));
}

#[test]
fn database_errors_are_query_errors() {
    let db = sample_db();
    let err = run(&db, "SELECT no_such_column FROM orders", &[]).unwrap_err();
    assert!(matches!(&err, DriverError::Query(m) if m.contains("no_such_column")), "{err}");
}
