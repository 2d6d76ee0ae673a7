//! Only single read-only queries run; the connection refuses writes regardless
//! (see also the unit test `pooled_connection_refuses_writes_even_without_the_checks`).

use drivers::{DriverError, check_read_only_statement};

use crate::common::{Owned, run, sample_db, scalar};

#[test]
fn non_queries_are_rejected_before_running() {
    let db = sample_db();
    for (sql, found) in [
        ("INSERT INTO orders (customer_id, order_date) VALUES (1, '2024-01-01')", "INSERT"),
        ("UPDATE customers SET name = 'x'", "UPDATE"),
        ("DELETE FROM order_lines", "DELETE"),
        ("DROP TABLE invoices", "DROP TABLE"),
        ("CREATE TABLE t (a INTEGER)", "CREATE TABLE"),
        ("ATTACH DATABASE 'other.db' AS other", "ATTACH"),
        ("PRAGMA query_only = 0", "PRAGMA"),
        ("WITH c AS (SELECT 1) DELETE FROM orders", "DELETE"),
    ] {
        match run(&db, sql, &[]) {
            Err(DriverError::WriteRejected(reason)) => assert_eq!(
                reason,
                format!("only a single read-only query is allowed; found {found}"),
                "{sql}"
            ),
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
        assert!(
            matches!(&err, DriverError::WriteRejected(r) if r.ends_with("found 2 statements")),
            "{sql}: {err}"
        );
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM orders"), Owned::Int(2000));
}

#[test]
fn unparseable_sql_is_rejected_and_one_trailing_semicolon_is_fine() {
    let err = check_read_only_statement("SELEC * FROM orders").unwrap_err();
    assert!(matches!(&err, DriverError::WriteRejected(r) if r.starts_with("could not parse query: ")));
    assert!(!err.is_retryable());
    check_read_only_statement("SELECT * FROM orders;").unwrap();
    let db = sample_db();
    assert_eq!(scalar(&db, "SELECT count(*) FROM products;"), Owned::Int(200));
}

#[test]
fn database_errors_are_query_errors() {
    let db = sample_db();
    let err = run(&db, "SELECT no_such_column FROM orders", &[]).unwrap_err();
    assert!(matches!(&err, DriverError::Query(m) if m.contains("no_such_column")), "{err}");
}
