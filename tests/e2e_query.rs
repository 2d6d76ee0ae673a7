//! Queries end to end: rows and types, large chunked results, rejected writes, bad frames.

use std::time::Duration;

use gateway::{GatewayEvent, QueryError, QueryRequest};
use mini_connector::protocol::{ErrorCode, Outbound};
use rusqlite::types::ValueRef;
use serde_json::{Value, json};

use crate::support::{World, connected_agent, sample_erp, wait_event};

/// A query request with defaults suitable for tests.
pub fn request(sql: &str) -> QueryRequest {
    QueryRequest {
        sql: sql.to_owned(),
        params: Vec::new(),
        timeout_ms: None,
        connection: None,
        ttl: None,
        wait: crate::support::WATCHDOG,
        idempotency_key: None,
    }
}

/// A result far above `maxInlineBytes` (60,000 rows of the sample ERP's SQLite): it travels as
/// uploaded chunks.
pub fn big_query() -> QueryRequest {
    let mut req = request(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60000) \
         SELECT x, 'row-' || x AS label FROM c",
    );
    req.wait = Duration::from_secs(60);
    req
}

/// What SQLite itself returns for `sql`, mapped the way the protocol documents it.
fn sqlite_rows(sql: &str) -> Vec<Vec<Value>> {
    use base64::Engine as _;
    let conn = rusqlite::Connection::open(sample_erp()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let columns = stmt.column_count();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        out.push(
            (0..columns)
                .map(|i| match row.get_ref(i).unwrap() {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => json!(v),
                    ValueRef::Real(v) => json!(v),
                    ValueRef::Text(t) => json!(std::str::from_utf8(t).unwrap()),
                    ValueRef::Blob(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
                })
                .collect(),
        );
    }
    out
}

#[test]
fn rows_arrive_exactly_as_sqlite_has_them() {
    let world = World::new("rows");
    let _agent = connected_agent(&world, "Rows", json!({}));
    let sql = "SELECT c.id, c.name, c.email, c.credit_limit, p.unit_price, p.photo, o.order_date \
               FROM customers c JOIN orders o ON o.customer_id = c.id \
               JOIN order_lines l ON l.order_id = o.id JOIN products p ON p.id = l.product_id \
               ORDER BY l.id LIMIT 300";
    let outcome = world.gateway.query("Rows", request(sql)).unwrap();
    let expected = sqlite_rows(sql);
    assert_eq!(outcome.row_count, 300);
    assert_eq!(outcome.rows, expected);
    // Types survive: integers stay integers, reals stay reals.
    assert!(outcome.rows[0][0].is_i64());
    assert!(outcome.rows[0][4].is_f64());
    assert!(outcome.buffered.is_none(), "a small result travels inline");
    let names: Vec<_> = outcome.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name", "email", "credit_limit", "unit_price", "photo", "order_date"]);
}

#[test]
fn parameters_are_bound_not_spliced() {
    let world = World::new("params");
    let _agent = connected_agent(&world, "Params", json!({}));
    let mut req = request("SELECT name FROM customers WHERE id = ? OR name = ?");
    req.params = vec![json!(1), json!("x' OR '1'='1")];
    let outcome = world.gateway.query("Params", req).unwrap();
    assert_eq!(outcome.rows, sqlite_rows("SELECT name FROM customers WHERE id = 1"));
}

#[test]
fn large_result_travels_in_chunks_and_is_reassembled_byte_exact() {
    let world = World::new("chunks");
    let _agent = connected_agent(&world, "Big", json!({}));
    let n = 200_000;
    let sql = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
         SELECT x, 'row-' || x AS label, x * 0.5 AS half FROM c"
    );
    let mut req = request(&sql);
    req.wait = Duration::from_secs(120);
    let outcome = world.gateway.query("Big", req).unwrap();
    assert_eq!(outcome.row_count, n);
    let buffered = outcome.buffered.as_ref().expect("200,000 rows must be chunked");
    assert!(buffered.chunk_count > 2, "expected several ~1 MB chunks, got {}", buffered.chunk_count);
    // Byte-exact: the stream is the columns line, then one compact JSON array per row.
    let mut lines = buffered.raw.split(|b| *b == b'\n');
    let header: Value = serde_json::from_slice(lines.next().unwrap()).unwrap();
    assert_eq!(header["columns"].as_array().unwrap().len(), 3);
    let mut expected = Vec::with_capacity(buffered.raw.len());
    expected.extend_from_slice(serde_json::to_string(&header).unwrap().as_bytes());
    expected.push(b'\n');
    for x in 1..=n {
        let row = json!([x, format!("row-{x}"), x as f64 * 0.5]);
        expected.extend_from_slice(row.to_string().as_bytes());
        expected.push(b'\n');
    }
    assert_eq!(buffered.raw.len(), expected.len());
    assert!(buffered.raw == expected, "reassembled stream differs from what SQLite produced");
    assert_eq!(outcome.rows.len() as u64, n);
}

#[test]
fn writes_are_rejected_before_reaching_the_database() {
    let world = World::new("writes");
    let _agent = connected_agent(&world, "Writes", json!({}));
    let cases = [
        ("DELETE FROM customers", ErrorCode::WriteKeywordDetected),
        ("UPDATE products SET unit_price = 0", ErrorCode::WriteKeywordDetected),
        ("SELECT 1; DROP TABLE orders", ErrorCode::WriteKeywordDetected),
        ("SELECT * FROM customers FOR UPDATE", ErrorCode::WriteKeywordDetected),
        ("SELECT * FROM customers FOR SHARE", ErrorCode::WriteOperationRejected),
        ("PRAGMA query_only = OFF", ErrorCode::WriteKeywordDetected),
        ("SELECT sqlite_version() FROM customers WHERE", ErrorCode::SqlSyntaxError),
    ];
    for (sql, code) in cases {
        match world.gateway.query("Writes", request(sql)) {
            Err(QueryError::Remote(body)) => {
                assert_eq!(body.code, code, "{sql}: {}", body.message);
                assert!(!body.retryable);
            }
            other => panic!("{sql}: expected {code}, got {other:?}"),
        }
    }
    assert_eq!(sqlite_rows("SELECT count(*) FROM customers")[0][0], json!(500));
}

#[test]
fn malformed_frames_get_an_error_and_the_session_continues() {
    let world = World::new("malformed");
    let _agent = connected_agent(&world, "Sturdy", json!({}));
    let events = world.gateway.subscribe();
    let cases = [
        ("{not json", ErrorCode::MalformedMessage, None),
        (r#"{"type":"teleport"}"#, ErrorCode::UnknownMessageType, None),
        (r#"{"type":"command","commandId":"c-missing"}"#, ErrorCode::MalformedMessage, Some("c-missing")),
        (
            r#"{"type":"command","commandId":"c-types","executionId":1,"activityId":"a","operation":"query","payload":{}}"#,
            ErrorCode::MalformedMessage,
            Some("c-types"),
        ),
    ];
    for (text, code, command_id) in cases {
        world.gateway.send_raw("Sturdy", text.to_owned()).unwrap();
        let error = wait_event(&events, |e| match e {
            GatewayEvent::Frame { frame: Outbound::ExecutionError(err), .. } => Some(err.clone()),
            _ => None,
        });
        assert_eq!(error.error.code, code, "{text}");
        assert_eq!(error.command_id.as_deref(), command_id, "{text}");
    }
    let outcome = world.gateway.query("Sturdy", request("SELECT count(*) AS n FROM products")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(200)]]);
}

#[test]
fn database_errors_and_unknown_connections_have_codes() {
    let world = World::new("dberr");
    let _agent = connected_agent(&world, "Errs", json!({}));
    match world.gateway.query("Errs", request("SELECT * FROM no_such_table")) {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::QueryFailed);
            assert!(body.message.contains("no_such_table"), "{}", body.message);
        }
        other => panic!("expected QUERY_FAILED, got {other:?}"),
    }
    let mut req = request("SELECT 1");
    req.connection = Some("nope".into());
    match world.gateway.query("Errs", req) {
        Err(QueryError::Remote(body)) => assert_eq!(body.code, ErrorCode::UnknownConnection),
        other => panic!("expected UNKNOWN_CONNECTION, got {other:?}"),
    }
}

#[test]
fn slow_query_times_out_and_the_agent_keeps_working() {
    let world = World::new("timeout");
    let _agent = connected_agent(&world, "Slow", json!({}));
    let mut req =
        request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c");
    req.timeout_ms = Some(300);
    match world.gateway.query("Slow", req) {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::QueryTimeout);
            assert!(body.retryable);
        }
        other => panic!("expected QUERY_TIMEOUT, got {other:?}"),
    }
    let outcome = world.gateway.query("Slow", request("SELECT 3 AS three")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(3)]]);
}
