//! Message compression (`auth.compression: ["deflate"]`, `connected.compression: "deflate"`):
//! negotiated only when offered (an agent without the offer gets plain text both ways and its
//! binary frames stay `MALFORMED_MESSAGE`), large frames travel as raw deflate both ways, and a
//! deflate bomb is refused as `MALFORMED_MESSAGE` while the session goes on.

use protocol::wsio::{deflate, inflate};
use protocol::{
    DatabaseSchema, ErrorCode, Frame as _, Inbound, MAX_FRAME_BYTES, Outbound, SchemaDiscovery, now_rfc3339,
};
use serde_json::json;
use tungstenite::Message;

use gateway::{GatewayEvent, QueryRequest};

use crate::common::{FakeAgent, TestGateway, start, start_with, watchdog};

/// A schema of `tables` tables with `columns` columns each.
pub fn big_schema(tables: usize, columns: usize) -> DatabaseSchema {
    let tables: Vec<_> = (0..tables)
        .map(|t| {
            json!({
                "name": format!("erp_table_{t:05}"), "kind": "table", "primaryKey": ["id"], "foreignKeys": [],
                "columns": (0..columns).map(|c| json!({
                    "name": format!("column_{c:02}"), "dataType": "VARCHAR(80)", "wireType": "text", "nullable": true
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::from_value(json!({"connection": "erp", "dbType": "sqlite", "tables": tables})).unwrap()
}

/// Opens a session; `offer` goes into `auth.compression` when given.
fn connect(gw: &TestGateway, key: &str, offer: Option<&[&str]>) -> (FakeAgent, serde_json::Value) {
    let mut agent = FakeAgent::open(gw);
    let mut auth = json!({
        "type": "auth", "apiKey": key, "connectorName": "Warehouse", "agentVersion": "test-0", "protocolVersion": 1
    });
    if let Some(offer) = offer {
        auth["compression"] = json!(offer);
    }
    agent.send_text(auth.to_string());
    let text = agent.recv_text().unwrap();
    let connected: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(connected["type"], "connected", "{text}");
    (agent, connected)
}

/// The next frame, text or (inflated) binary, and whether it came compressed.
fn recv_any(agent: &mut FakeAgent) -> (String, bool) {
    loop {
        match agent.ws.read().unwrap() {
            Message::Text(t) => return (t.as_str().to_owned(), false),
            Message::Binary(b) => return (inflate(&b, MAX_FRAME_BYTES).unwrap(), true),
            _ => {}
        }
    }
}

fn schema_frame(tables: usize) -> String {
    Outbound::SchemaDiscovery(SchemaDiscovery {
        timestamp: now_rfc3339(),
        schema: vec![big_schema(tables, 15)],
    })
    .encode()
}

fn wait_schema(gw: &TestGateway) -> Vec<DatabaseSchema> {
    gw.wait_event(|e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(d), .. } => Some(d.schema.clone()),
        _ => None,
    })
}

#[test]
fn an_offered_deflate_is_accepted_and_large_frames_travel_compressed_both_ways() {
    let _w = watchdog("compression-on");
    let gw = start();
    let key = gw.key("Warehouse");
    let (mut agent, connected) = connect(&gw, &key, Some(&["zstd", "deflate"]));
    assert_eq!(connected["compression"], "deflate");

    // Agent → gateway: a 500-table schema as one deflated binary frame arrives intact.
    let text = schema_frame(500);
    let packed = deflate(text.as_bytes());
    assert!(packed.len() * 5 < text.len(), "{} -> {}", text.len(), packed.len());
    agent.ws.send(Message::binary(packed)).unwrap();
    assert_eq!(wait_schema(&gw), vec![big_schema(500, 15)]);

    // Gateway → agent: a command over 8 KiB comes deflated; a small one as text.
    let long_sql = format!("SELECT 1 /* {} */", "x".repeat(20_000));
    let _big = gw.submit("Warehouse", QueryRequest::new(long_sql.clone())).unwrap();
    let (text, compressed) = recv_any(&mut agent);
    assert!(compressed, "a 20 KB command came as text");
    match Inbound::decode(&text).unwrap() {
        Inbound::Command(cmd) => assert_eq!(cmd.payload.query, long_sql),
        other => panic!("{other:?}"),
    }
    let _small = gw.submit("Warehouse", QueryRequest::new("SELECT 2")).unwrap();
    let (text, compressed) = recv_any(&mut agent);
    assert!(!compressed && text.contains("SELECT 2"), "{text}");
}

#[test]
fn an_agent_without_the_offer_gets_plain_text_and_its_binary_frames_are_refused() {
    let _w = watchdog("compression-old-agent");
    let gw = start();
    for (name, offer) in [("Old", None), ("Other", Some(&["brotli"][..]))] {
        let key = gw.key(name);
        let (mut agent, connected) = connect(&gw, &key, offer);
        assert!(connected.get("compression").is_none(), "{connected}");
        // Large frames still work, as text.
        agent.send_text(schema_frame(200));
        assert_eq!(wait_schema(&gw), vec![big_schema(200, 15)]);
        let long_sql = format!("SELECT 1 /* {} */", "y".repeat(20_000));
        let _q = gw.submit(name, QueryRequest::new(long_sql)).unwrap();
        let (text, compressed) = recv_any(&mut agent);
        assert!(!compressed && text.len() > 20_000);
        // A deflated frame is not understood: MALFORMED_MESSAGE, as any binary frame.
        agent.ws.send(Message::binary(deflate(schema_frame(10).as_bytes()))).unwrap();
        let message = agent.expect_error(ErrorCode::MalformedMessage);
        assert!(message.contains("binary frame"), "{message}");
        agent.close();
    }
}

#[test]
fn a_gateway_that_declines_compression_answers_without_it() {
    let _w = watchdog("compression-declined");
    let gw = start_with(|c| c.compression = false);
    let key = gw.key("Warehouse");
    let (mut agent, connected) = connect(&gw, &key, Some(&["deflate"]));
    assert!(connected.get("compression").is_none(), "{connected}");
    agent.ws.send(Message::binary(deflate(schema_frame(10).as_bytes()))).unwrap();
    agent.expect_error(ErrorCode::MalformedMessage);
}

#[test]
fn a_deflate_bomb_is_refused_as_malformed_and_the_session_goes_on() {
    let _w = watchdog("compression-bomb");
    let gw = start();
    let key = gw.key("Warehouse");
    let (mut agent, _) = connect(&gw, &key, Some(&["deflate"]));
    // 64 MiB of spaces in ~64 KiB: four times the frame limit once inflated.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &vec![b' '; 64 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    agent.ws.send(Message::binary(bomb)).unwrap();
    let message = agent.expect_error(ErrorCode::MalformedMessage);
    assert!(message.contains("inflates beyond 16777216 bytes"), "{message}");
    // Not UTF-8 after inflating: refused the same way.
    agent.ws.send(Message::binary(deflate(&[0xff; 20_000]))).unwrap();
    let message = agent.expect_error(ErrorCode::MalformedMessage);
    assert!(message.contains("UTF-8"), "{message}");
    // The session is still alive and takes frames.
    agent.ws.send(Message::binary(deflate(schema_frame(50).as_bytes()))).unwrap();
    assert_eq!(wait_schema(&gw), vec![big_schema(50, 15)]);
}
