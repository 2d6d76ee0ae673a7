//! A large schema broadcast travels compressed: the real agent binary discovers an SQLite ERP
//! of 2,000 tables × 15 columns and broadcasts it through the fault relay (which counts the
//! bytes on the wire) to the real gateway. The schema arrives intact, and the agent sent
//! fewer bytes in total than the broadcast's JSON alone: it went as one deflated frame.

use std::path::Path;

use gateway::GatewayEvent;
use mini_connector::protocol::{Frame as _, Outbound, SchemaDiscovery};
use serde_json::json;

use crate::relay::Relay;
use crate::support::{AgentProc, World, wait_event};

/// An SQLite database of `tables` tables with 15 columns each.
pub fn wide_erp(path: &Path, tables: usize) {
    let db = rusqlite::Connection::open(path).unwrap();
    let columns: Vec<String> = (1..15).map(|c| format!("attribute_{c:02} VARCHAR(80)")).collect();
    let mut sql = String::from("BEGIN;");
    for t in 0..tables {
        sql.push_str(&format!(
            "CREATE TABLE erp_table_{t:05} (id INTEGER PRIMARY KEY, {});",
            columns.join(", ")
        ));
    }
    sql.push_str("COMMIT;");
    db.execute_batch(&sql).unwrap();
}

#[test]
fn a_large_schema_broadcast_arrives_intact_and_compressed() {
    let world = World::new("compression");
    let db = world.dir.0.join("wide.db");
    wide_erp(&db, 2_000);
    let relay = Relay::start(world.gateway.local_addr());
    let events = world.gateway.subscribe();
    let key = world.key("Wide");
    let extra = json!({
        "cloudUrl": relay.ws_url(),
        "connections": [{ "name": "erp", "type": "sqlite", "path": db }],
    });
    let _agent = AgentProc::start(&world.agent_config("Wide", key.expose(), extra));
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => Some(s.clone()),
        _ => None,
    });
    let tables = &schema.schema[0].tables;
    assert_eq!(tables.len(), 2_000);
    assert!(tables.iter().all(|t| t.columns.len() == 15));
    assert_eq!(tables[1234].name, "erp_table_01234");
    assert_eq!(tables[1234].columns[7].name, "attribute_07");
    let json_bytes = Outbound::SchemaDiscovery(SchemaDiscovery { ..schema }).encode().len();
    // Everything the agent sent (TLS handshake, auth, status, the broadcast) on the wire.
    let up = relay.stats().bytes_up;
    assert!(json_bytes > 1_000_000, "{json_bytes}");
    assert!(up * 5 < json_bytes as u64, "{up} bytes up for a {json_bytes}-byte broadcast: not compressed");
}
