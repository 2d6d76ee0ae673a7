//! Authentication, keys and the session loop.

use std::time::Duration;

use gateway::GatewayEvent;
use protocol::{ApiKey, ErrorCode, Inbound, Outbound};

use crate::common::{FakeAgent, start, start_with, watchdog};

#[test]
fn auth_ok_sends_connected_with_upload_grant() {
    let _w = watchdog("auth_ok");
    let gw = start();
    let key = gw.key("Warehouse");
    let agent = FakeAgent::connect(&gw, &key, "Whatever the agent calls itself");
    let c = agent.connected.as_ref().unwrap();
    assert_eq!(agent.ws.get_ref().conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.tenant_id, "acme");
    assert_eq!(c.connector_name, "Warehouse", "the name comes from the key row");
    assert!(humantime::parse_rfc3339(&c.server_time).is_ok(), "{}", c.server_time);
    assert!(uuid::Uuid::parse_str(&c.connection_id).is_ok());
    assert_eq!(c.upload.url, format!("https://127.0.0.1:{}/upload", gw.local_addr().port()));
    assert_eq!(c.upload.hmac_key.expose().len(), 32);
    assert_eq!(c.upload.max_chunk_bytes, 1024 * 1024);
    assert_eq!(c.upload.max_inline_bytes, 256 * 1024);
    let id = gw.wait_event(|e| match e {
        GatewayEvent::AgentConnected { connector, connection_id } if connector == "Warehouse" => {
            Some(connection_id.clone())
        }
        _ => None,
    });
    assert_eq!(id, c.connection_id);
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert!(info.connected);
    assert_eq!(info.tenant, "acme");
    assert_eq!(info.agent_version.as_deref(), Some("test-0"));
}

#[test]
fn bad_wrong_checksum_unknown_and_revoked_keys_are_auth_failed() {
    let _w = watchdog("bad_keys");
    let gw = start();
    let key = gw.key("Warehouse");
    let mut flipped = key.clone();
    let pos = 9;
    let c = if &flipped[pos..=pos] == "a" { "b" } else { "a" };
    flipped.replace_range(pos..=pos, c);
    let unknown = ApiKey::generate("acme").unwrap().expose().to_owned();
    let other_tenant = ApiKey::generate("globex").unwrap().expose().to_owned();
    for bad in ["nope", flipped.as_str(), unknown.as_str(), other_tenant.as_str()] {
        let mut agent = FakeAgent::open(&gw);
        let message = match agent.auth(bad, "Warehouse") {
            Inbound::Error(e) => {
                assert_eq!(e.code, ErrorCode::AuthFailed, "{bad}");
                e.message
            }
            other => panic!("expected AUTH_FAILED for {bad}, got {other:?}"),
        };
        assert!(!message.contains(bad), "the error must not echo the key");
        agent.expect_closed();
        gw.wait_event(|e| {
            matches!(e, GatewayEvent::AgentRejected { code: ErrorCode::AuthFailed }).then_some(())
        });
    }
    gw.keys().revoke("Warehouse").unwrap();
    let mut agent = FakeAgent::open(&gw);
    assert!(matches!(agent.auth(&key, "Warehouse"), Inbound::Error(e) if e.code == ErrorCode::AuthFailed));
    agent.expect_closed();
}

#[test]
fn a_probe_is_answered_without_registering_or_taking_over() {
    let _w = watchdog("probe");
    let gw = start();
    let key = gw.key("Warehouse");
    let probe = |key: &str| {
        let mut agent = FakeAgent::open(&gw);
        agent.send_text(
            serde_json::json!({
                "type": "auth", "apiKey": key, "connectorName": "W", "agentVersion": "doctor",
                "protocolVersion": 2, "probe": true
            })
            .to_string(),
        );
        let answer = agent.recv();
        agent.expect_closed();
        answer
    };
    // Nobody connected: `connected`, yet no session is registered.
    match probe(&key) {
        Inbound::Connected(c) => assert_eq!(c.connector_name, "Warehouse"),
        other => panic!("expected connected, got {other:?}"),
    }
    assert!(!gw.connectors().into_iter().any(|c| c.name == "Warehouse" && c.connected));
    // A live agent keeps its session while a probe with the same key is answered.
    let live = FakeAgent::connect(&gw, &key, "Warehouse");
    let id = live.connected.as_ref().unwrap().connection_id.clone();
    assert!(matches!(probe(&key), Inbound::Connected(_)));
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert!(info.connected);
    assert_eq!(info.connection_id.as_deref(), Some(id.as_str()));
    while let Ok(event) = gw.events.try_recv() {
        assert!(
            !matches!(event, GatewayEvent::AgentDisconnected { .. }),
            "the probe disturbed the live session: {event:?}"
        );
    }
    // A revoked key is refused as usual.
    gw.keys().revoke("Warehouse").unwrap();
    assert!(matches!(probe(&key), Inbound::Error(e) if e.code == ErrorCode::AuthFailed));
}

#[test]
fn first_frame_other_than_auth_is_refused() {
    let _w = watchdog("first_frame");
    let gw = start();
    let mut agent = FakeAgent::open(&gw);
    agent.heartbeat(0);
    agent.expect_error(ErrorCode::AuthFailed);
    agent.expect_closed();
}

#[test]
fn no_auth_within_the_timeout_is_refused() {
    let _w = watchdog("auth_timeout");
    let gw = start_with(|c| c.auth_timeout = Duration::from_millis(300));
    let mut agent = FakeAgent::open(&gw);
    let message = agent.expect_error(ErrorCode::AuthFailed);
    assert!(message.contains("no auth"), "{message}");
    agent.expect_closed();
}

#[test]
fn second_connection_while_the_first_answers_is_duplicate_and_first_survives() {
    let _w = watchdog("duplicate");
    let gw = start_with(|c| c.takeover_probe = Duration::from_millis(1500));
    let key = gw.key("Warehouse");
    let mut first = FakeAgent::connect(&gw, &key, "Warehouse");
    // The first agent keeps reading, so it answers the gateway's probe ping with a pong.
    let reader = std::thread::spawn(move || {
        first.answer_pings_for(Duration::from_millis(2500));
        first
    });
    let mut second = FakeAgent::open(&gw);
    assert!(
        matches!(second.auth(&key, "Warehouse"), Inbound::Error(e) if e.code == ErrorCode::DuplicateConnection)
    );
    second.expect_closed();
    let mut first = reader.join().unwrap();
    first.heartbeat(2);
    gw.wait_event(|e| matches!(e, GatewayEvent::Frame { frame: Outbound::Heartbeat(_), .. }).then_some(()));
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert!(info.connected);
    assert_eq!(info.active_commands, 2);
    assert_eq!(info.connection_id.unwrap(), first.connection_id());
}

#[test]
fn revoking_a_key_disconnects_its_agent_at_once() {
    let _w = watchdog("revoke_kicks");
    let gw = start();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let ids = gw.keys().revoke("Warehouse").unwrap();
    assert_eq!(ids.len(), 1);
    agent.expect_error(ErrorCode::AuthFailed);
    agent.expect_closed();
    gw.wait_disconnected("Warehouse");
    assert!(!gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap().connected);
    let mut again = FakeAgent::open(&gw);
    assert!(matches!(again.auth(&key, "Warehouse"), Inbound::Error(e) if e.code == ErrorCode::AuthFailed));
}

#[test]
fn rotation_keeps_the_old_key_working_and_the_new_one_too() {
    let _w = watchdog("rotate");
    let gw = start();
    let old = gw.key("Warehouse");
    let (_, new) = gw.keys().rotate("Warehouse").unwrap();
    let list = gw.keys().list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].state, gateway::KeyState::Expiring);
    let expires = humantime::parse_rfc3339(list[0].expires_at.as_deref().unwrap()).unwrap();
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600), "{left:?}");
    let agent = FakeAgent::connect(&gw, &old, "Warehouse");
    agent.close();
    gw.wait_disconnected("Warehouse");
    let agent = FakeAgent::connect(&gw, new.expose(), "Warehouse");
    agent.close();
    gw.wait_disconnected("Warehouse");
    // Revoking the old key by id leaves the new one alone.
    gw.keys().revoke(&list[0].id).unwrap();
    let mut agent = FakeAgent::open(&gw);
    assert!(matches!(agent.auth(&old, "Warehouse"), Inbound::Error(e) if e.code == ErrorCode::AuthFailed));
    FakeAgent::connect(&gw, new.expose(), "Warehouse");
}

#[test]
fn undecodable_frames_get_error_frames_and_the_session_continues() {
    let _w = watchdog("malformed");
    let gw = start();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let cases = [
        ("{not json", ErrorCode::MalformedMessage, None),
        (r#"{"type":"telepathy"}"#, ErrorCode::UnknownMessageType, None),
        (r#"{"type":"heartbeat","status":"ready"}"#, ErrorCode::MalformedMessage, None),
        (r#"{"type":"execution_result","commandId":"c-9"}"#, ErrorCode::MalformedMessage, Some("c-9")),
        ("[1,2]", ErrorCode::MalformedMessage, None),
    ];
    for (text, code, command_id) in cases {
        agent.send_text(text.into());
        match agent.recv() {
            Inbound::Error(e) => {
                assert_eq!(e.code, code, "{text}");
                assert_eq!(e.command_id.as_deref(), command_id, "{text}");
            }
            other => panic!("expected error for {text}, got {other:?}"),
        }
        gw.wait_event(|e| {
            matches!(e, GatewayEvent::DecodeFailed { code: c, .. } if *c == code).then_some(())
        });
    }
    agent.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3])).unwrap();
    agent.expect_error(ErrorCode::MalformedMessage);
    agent.heartbeat(1);
    gw.wait_event(|e| matches!(e, GatewayEvent::Frame { frame: Outbound::Heartbeat(_), .. }).then_some(()));
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert!(info.connected && info.last_heartbeat.is_some());
}

#[test]
fn idle_session_times_out() {
    let _w = watchdog("idle");
    let gw = start_with(|c| c.session_idle_timeout = Duration::from_millis(400));
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    agent.expect_closed();
    let reason = gw.wait_event(|e| match e {
        GatewayEvent::AgentDisconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("idle"), "{reason}");
}

#[test]
fn shutdown_tells_live_agents() {
    let _w = watchdog("shutdown");
    let gw = start();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let started = std::time::Instant::now();
    let dir = gw.dir.clone();
    // Shut down on another thread while the agent reads.
    let handle = std::thread::spawn(move || drop(gw));
    match agent.recv() {
        Inbound::Shutdown(s) => assert!(s.grace_period > 0),
        other => panic!("expected shutdown, got {other:?}"),
    }
    agent.expect_closed();
    handle.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.exists());
}
