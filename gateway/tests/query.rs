//! Queries answered inline, errors, timeouts, schema and raw frames.

use std::thread;
use std::time::Duration;

use gateway::{GatewayEvent, QueryError, QueryRequest};
use protocol::{ErrorBody, ErrorCode, ExecutionError, Inbound, Outbound, SchemaDiscovery, now_rfc3339};
use serde_json::json;

use crate::common::{FakeAgent, WAIT, col, schema as db_schema, start, watchdog};

fn request(sql: &str) -> QueryRequest {
    let mut req = QueryRequest::new(sql);
    req.wait = WAIT;
    req
}

#[test]
fn query_answered_inline() {
    let _w = watchdog("inline");
    let gw = std::sync::Arc::new(start());
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let gw2 = gw.clone();
    let asker = thread::spawn(move || {
        let mut req = request("SELECT id, name FROM customers WHERE id > ?");
        req.params = vec![json!(10)];
        req.timeout_ms = Some(5000);
        req.connection = Some("erp".into());
        req.idempotency_key = Some("idem-1".into());
        gw2.query("Warehouse", req)
    });
    let cmd = agent.expect_command();
    assert_eq!(cmd.payload.query, "SELECT id, name FROM customers WHERE id > ?");
    assert_eq!(cmd.payload.params, vec![json!(10)]);
    assert_eq!(cmd.payload.timeout, Some(5000));
    assert_eq!(cmd.payload.connection.as_deref(), Some("erp"));
    assert_eq!(cmd.payload.idempotency_key, "idem-1");
    assert!(humantime::parse_rfc3339(cmd.payload.expires_at.as_deref().unwrap()).is_ok());
    let columns = vec![col("id", "integer"), col("name", "text")];
    let rows = vec![vec![json!(11), json!("Ada")], vec![json!(12), json!(null)]];
    agent.answer_inline(&cmd, columns.clone(), rows.clone());
    agent.expect_ack(&cmd.command_id);
    let outcome = asker.join().unwrap().unwrap();
    assert_eq!(outcome.command_id, cmd.command_id);
    assert_eq!(outcome.columns, columns);
    assert_eq!(outcome.rows, rows);
    assert_eq!(outcome.row_count, 2);
    assert_eq!(outcome.duration_ms, 3);
    assert!(outcome.buffered.is_none());
    assert!(outcome.round_trip < WAIT);
}

#[test]
fn execution_error_is_a_remote_error() {
    let _w = watchdog("exec_error");
    let gw = std::sync::Arc::new(start());
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let gw2 = gw.clone();
    let asker = thread::spawn(move || gw2.query("Warehouse", request("DELETE FROM customers")));
    let cmd = agent.expect_command();
    agent.send(&Outbound::ExecutionError(ExecutionError {
        command_id: Some(cmd.command_id.clone()),
        execution_id: Some(cmd.execution_id.clone()),
        activity_id: None,
        error: ErrorBody::new(ErrorCode::WriteOperationRejected, "DELETE is not allowed"),
    }));
    match asker.join().unwrap() {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::WriteOperationRejected);
            assert!(!body.retryable);
        }
        other => panic!("expected remote error, got {other:?}"),
    }
}

#[test]
fn a_result_from_another_connector_does_not_complete_the_query() {
    let _w = watchdog("cross_connector");
    let gw = std::sync::Arc::new(start());
    let k1 = gw.key("Warehouse");
    let k2 = gw.key("Shop");
    let mut a1 = FakeAgent::connect(&gw, &k1, "Warehouse");
    let mut a2 = FakeAgent::connect(&gw, &k2, "Shop");
    let gw2 = gw.clone();
    let asker = thread::spawn(move || {
        let mut req = request("SELECT 1");
        req.wait = Duration::from_millis(1500);
        gw2.query("Warehouse", req)
    });
    let cmd = a1.expect_command();
    a2.answer_inline(&cmd, vec![col("x", "text")], vec![vec![json!("forged")]]);
    a2.expect_ack(&cmd.command_id);
    a1.answer_inline(&cmd, vec![col("x", "text")], vec![vec![json!("real")]]);
    let outcome = asker.join().unwrap().unwrap();
    assert_eq!(outcome.rows, vec![vec![json!("real")]]);
}

#[test]
fn unknown_connector_and_timeout() {
    let _w = watchdog("unknown_timeout");
    let gw = start();
    assert!(matches!(gw.query("Nobody", request("SELECT 1")), Err(QueryError::UnknownConnector(_))));
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let mut req = request("SELECT 1");
    req.wait = Duration::from_millis(300);
    assert_eq!(gw.query("Warehouse", req), Err(QueryError::Timeout));
    let cmd = agent.expect_command();
    // A late answer for a forgotten command is still acknowledged.
    agent.answer_inline(&cmd, vec![], vec![]);
    agent.expect_ack(&cmd.command_id);
}

#[test]
fn schema_request_raw_frames_and_cancel_reach_the_agent() {
    let _w = watchdog("schema");
    let gw = start();
    let key = gw.key("Warehouse");
    assert!(gw.request_schema("Warehouse").is_err(), "offline");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    gw.request_schema("Warehouse").unwrap();
    assert!(matches!(agent.recv(), Inbound::SchemaRequest(_)));
    let schema = vec![db_schema("erp")];
    agent.send(&Outbound::SchemaDiscovery(SchemaDiscovery {
        timestamp: now_rfc3339(),
        schema: schema.clone(),
    }));
    gw.wait_event(|e| {
        matches!(e, GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(_), .. }).then_some(())
    });
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert_eq!(info.schema, Some(schema));

    gw.send_raw("Warehouse", r#"{"type":"mystery"}"#.into()).unwrap();
    assert_eq!(agent.recv_text().unwrap(), r#"{"type":"mystery"}"#);

    let pending = gw.submit("Warehouse", request("SELECT pg_sleep(100)")).unwrap();
    let cmd = agent.expect_command();
    assert_eq!(cmd.execution_id, pending.execution_id());
    gw.cancel(pending.execution_id()).unwrap();
    match agent.recv() {
        Inbound::Cancel(c) => assert_eq!(c.execution_id, cmd.execution_id),
        other => panic!("expected cancel, got {other:?}"),
    }
    agent.send(&Outbound::ExecutionError(ExecutionError {
        command_id: Some(cmd.command_id.clone()),
        execution_id: None,
        activity_id: None,
        error: ErrorBody::new(ErrorCode::CommandCancelled, "cancelled"),
    }));
    assert!(matches!(pending.wait(), Err(QueryError::Remote(b)) if b.code == ErrorCode::CommandCancelled));
}
