//! The cloud-side offline queue: commands for a disconnected connector.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gateway::{QueryError, QueryRequest};
use protocol::ErrorCode;
use serde_json::json;

use crate::common::{FakeAgent, WAIT, col, start, watchdog};

#[test]
fn query_issued_while_offline_is_delivered_after_connect() {
    let _w = watchdog("offline_delivered");
    let gw = Arc::new(start());
    let key = gw.key("Warehouse");
    let gw2 = gw.clone();
    let asker = thread::spawn(move || {
        let mut req = QueryRequest::new("SELECT 42");
        req.wait = WAIT;
        gw2.query("Warehouse", req)
    });
    thread::sleep(Duration::from_millis(200));
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let cmd = agent.expect_command();
    assert_eq!(cmd.payload.query, "SELECT 42");
    agent.answer_inline(&cmd, vec![col("x", "integer")], vec![vec![json!(42)]]);
    let outcome = asker.join().unwrap().unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(42)]]);
}

#[test]
fn expired_offline_command_gets_command_expired_and_is_never_delivered() {
    let _w = watchdog("offline_expired");
    let gw = Arc::new(start());
    let key = gw.key("Warehouse");
    let mut req = QueryRequest::new("SELECT 1");
    req.wait = WAIT;
    req.ttl = Some(Duration::from_millis(200));
    let pending = gw.submit("Warehouse", req).unwrap();
    thread::sleep(Duration::from_millis(400));
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    match pending.wait() {
        Err(QueryError::Remote(body)) => assert_eq!(body.code, ErrorCode::CommandExpired),
        other => panic!("expected COMMAND_EXPIRED, got {other:?}"),
    }
    agent.expect_silence(Duration::from_millis(300));

    // The waiter itself notices expiry while the connector stays away.
    let mut req = QueryRequest::new("SELECT 2");
    req.wait = WAIT;
    req.ttl = Some(Duration::from_millis(200));
    agent.close();
    gw.wait_disconnected("Warehouse");
    let started = std::time::Instant::now();
    assert!(
        matches!(gw.query("Warehouse", req), Err(QueryError::Remote(b)) if b.code == ErrorCode::CommandExpired)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn unanswered_command_is_redelivered_after_reconnect() {
    let _w = watchdog("redeliver");
    let gw = Arc::new(start());
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let gw2 = gw.clone();
    let asker = thread::spawn(move || {
        let mut req = QueryRequest::new("SELECT 7");
        req.wait = WAIT;
        gw2.query("Warehouse", req)
    });
    let first = agent.expect_command();
    agent.close();
    gw.wait_disconnected("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let again = agent.expect_command();
    assert_eq!(again.command_id, first.command_id);
    assert_eq!(again.payload.idempotency_key, first.payload.idempotency_key);
    agent.answer_inline(&again, vec![], vec![vec![json!(7)]]);
    assert_eq!(asker.join().unwrap().unwrap().rows, vec![vec![json!(7)]]);
}
