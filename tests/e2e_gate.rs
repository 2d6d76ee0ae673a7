//! The read-only gate and schema privacy, end to end: the real agent with a schema policy,
//! behind the real gateway.

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{ErrorCode, Outbound};
use serde_json::json;

use crate::e2e_query::request;
use crate::support::{World, connected_agent, wait_event};

fn policy() -> serde_json::Value {
    json!({ "schemaPolicy": { "erp": {
        "privateTables": ["invoices"],
        "privateColumns": { "customers": ["email", "credit_limit"] }
    } } })
}

fn rejected(world: &World, sql: &str) -> mini_connector::protocol::ErrorBody {
    match world.gateway.query("Private", request(sql)) {
        Err(QueryError::Remote(body)) => body,
        other => panic!("{sql}: expected a rejection, got {other:?}"),
    }
}

#[test]
fn private_tables_and_columns_never_leave_the_machine() {
    let world = World::new("privacy");
    let events = world.gateway.subscribe();
    let _agent = connected_agent(&world, "Private", policy());
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => Some(s.schema.clone()),
        _ => None,
    });
    let text = serde_json::to_string(&schema).unwrap();
    assert!(!text.contains("invoices"), "a private table was broadcast");
    assert!(!text.contains("credit_limit") && !text.contains("\"email\""), "a private column was broadcast");
    let customers = schema[0].tables.iter().find(|t| t.name == "customers").unwrap();
    assert!(customers.columns.iter().any(|c| c.name == "name"));

    for sql in [
        "SELECT email FROM customers",
        "SELECT c.credit_limit FROM customers c",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT total FROM invoices",
        "WITH x AS (SELECT * FROM invoices) SELECT count(*) FROM x",
    ] {
        let body = rejected(&world, sql);
        assert_eq!(body.code, ErrorCode::SchemaAccessDenied, "{sql}: {}", body.message);
        for name in ["email", "credit_limit", "invoices"] {
            assert!(!body.message.contains(name), "{sql}: the reason reveals `{name}`: {}", body.message);
        }
    }
    let allowed = world
        .gateway
        .query("Private", request("SELECT name, country FROM customers ORDER BY id LIMIT 2"))
        .unwrap();
    assert_eq!(allowed.row_count, 2);
}

#[test]
fn the_gate_rejects_writes_and_side_effects_with_their_codes() {
    let world = World::new("gate");
    let _agent = connected_agent(&world, "Private", json!({}));
    assert_eq!(rejected(&world, "DeLeTe FROM customers").code, ErrorCode::WriteKeywordDetected);
    assert_eq!(rejected(&world, "SELECT 1; /**/DROP TABLE orders").code, ErrorCode::WriteKeywordDetected);
    let body = rejected(&world, "SELECT load_extension('/tmp/evil.so')");
    assert_eq!(body.code, ErrorCode::WriteOperationRejected, "{}", body.message);
    // Issue 13: a text that does not parse has its own code (it is still never run).
    let body = rejected(&world, "SELEC name FROM customers");
    assert_eq!(body.code, ErrorCode::SqlSyntaxError, "{}", body.message);
    assert!(body.message.contains("could not parse the query"), "{}", body.message);
    assert!(!body.retryable);
    // A write keyword in an unparseable text is still reported as the write it is.
    assert_eq!(rejected(&world, "SELEC 1; DELETE FROM customers").code, ErrorCode::WriteKeywordDetected);
    // Keywords inside literals, identifiers and comments are fine.
    let ok = world
        .gateway
        .query(
            "Private",
            request(
                "SELECT 'please delete' AS note, name AS \"update_time\" FROM customers -- DROP\n LIMIT 1",
            ),
        )
        .unwrap();
    assert_eq!(ok.rows[0][0], json!("please delete"));
}
