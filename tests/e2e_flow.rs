//! Flow control end to end: a burst larger than the workers waits in the agent's durable queue
//! instead of being refused, and repeats of an idempotency key are answered from it.

use std::time::Instant;

use gateway::QueryError;
use mini_connector::protocol::ErrorCode;

use crate::e2e_query::request;
use crate::support::{World, connected_agent};

/// A query that keeps SQLite busy for a while (tens of milliseconds in a debug build).
const SLOW: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) \
                    SELECT count(*) AS n FROM c";

#[test]
fn fifty_concurrent_slow_queries_with_default_settings_all_run_none_busy() {
    // Before: 4 workers × 8 queue slots; 50 concurrent 20 ms queries got 10–14 AGENT_BUSY.
    let world = World::new("flow-burst");
    let _agent = connected_agent(&world, "Burst", serde_json::json!({}));
    let started = Instant::now();
    let results: Vec<Result<_, QueryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..50).map(|_| scope.spawn(|| world.gateway.query("Burst", request(SLOW)))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut busy = 0;
    for result in &results {
        match result {
            Ok(outcome) => assert_eq!(outcome.rows, vec![vec![serde_json::json!(100000)]]),
            Err(QueryError::Remote(body)) if body.code == ErrorCode::AgentBusy => busy += 1,
            Err(e) => panic!("unexpected failure: {e:?}"),
        }
    }
    assert_eq!(busy, 0, "AGENT_BUSY answers in a burst of 50");
    eprintln!("50 concurrent slow queries answered in {:?}", started.elapsed());
}

#[test]
fn a_repeated_idempotency_key_is_answered_from_the_queue_not_run_again() {
    let world = World::new("flow-repeat");
    let agent = connected_agent(&world, "Repeat", serde_json::json!({}));
    let mut first = request("SELECT count(*) AS n FROM customers");
    first.idempotency_key = Some("wf-1:run-1:act-1".into());
    let one = world.gateway.query("Repeat", first.clone()).unwrap();
    let two = world.gateway.query("Repeat", first).unwrap();
    assert_eq!(one.rows, two.rows);
    // The agent log says where the second answer came from.
    agent.wait_log("answering from the offline queue");
    let executed = agent.log_text().matches("command done").count();
    assert_eq!(executed, 1, "{}", agent.log_text());
}
