//! The HTTPS long-poll transport (`/lp/...`): tokens, send sequence numbers, re-sent
//! unacknowledged frames, bounds.

use std::time::Duration;

use protocol::headers;
use serde_json::{Value, json};

use crate::common::{TestGateway, start, watchdog};

fn client(gw: &TestGateway) -> ureq::Agent {
    mini_connector::https::agent(
        gw.tls(),
        mini_connector::proxy::ProxySettings::direct(),
        Duration::from_secs(30),
    )
    .unwrap()
}

fn base(gw: &TestGateway) -> String {
    gw.ws_url().replace("wss://", "https://").trim_end_matches("/ws").to_owned()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn auth(key: &str) -> String {
    json!({"type": "auth", "apiKey": key, "connectorName": "Warehouse", "agentVersion": "test-0", "protocolVersion": 1})
        .to_string()
}

/// Opens a session; returns the token.
fn open(gw: &TestGateway, http: &ureq::Agent) -> String {
    let key = gw.key("Warehouse");
    let (status, body) = answer(http.post(format!("{}/lp/open", base(gw))).send(auth(&key).as_bytes()));
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(body["frames"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["type"], "connected", "{body}");
    body["token"].as_str().unwrap().to_owned()
}

fn send(gw: &TestGateway, http: &ureq::Agent, token: &str, seq: u64, frames: &str) -> (u16, Value) {
    answer(
        http.post(format!("{}/lp/send", base(gw)))
            .header(headers::LP_TOKEN, token)
            .header(headers::LP_SEQ, &seq.to_string())
            .send(frames.as_bytes()),
    )
}

fn recv(gw: &TestGateway, http: &ureq::Agent, token: &str, ack: u64, wait_ms: u64) -> (u16, Value) {
    answer(
        http.get(format!("{}/lp/recv", base(gw)))
            .header(headers::LP_TOKEN, token)
            .header(headers::LP_ACK, &ack.to_string())
            .header(headers::LP_WAIT, &wait_ms.to_string())
            .call(),
    )
}

#[test]
fn open_answers_connected_and_a_wrong_key_gets_the_error_frame_without_a_token() {
    let _w = watchdog("lp-open");
    let gw = start();
    let http = client(&gw);
    let token = open(&gw, &http);
    assert_eq!(token.len(), 64);
    let (status, body) =
        answer(http.post(format!("{}/lp/open", base(&gw))).send(auth("mc_live_acme_nope").as_bytes()));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("token").is_none(), "{body}");
    let first: Value = serde_json::from_str(body["frames"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["type"], "error");
    assert_eq!(first["code"], "AUTH_FAILED");
}

#[test]
fn a_bad_token_is_refused_with_auth_failed() {
    let _w = watchdog("lp-token");
    let gw = start();
    let http = client(&gw);
    let (status, body) = send(&gw, &http, "00ff", 1, "");
    assert_eq!(status, 401);
    assert_eq!(body["code"], "AUTH_FAILED");
    let (status, body) = recv(&gw, &http, &"a".repeat(64), 0, 10);
    assert_eq!(status, 401);
    assert_eq!(body["code"], "AUTH_FAILED");
    let (status, _) = answer(http.get(format!("{}/lp/recv", base(&gw))).call());
    assert_eq!(status, 401, "no token at all");
}

#[test]
fn a_replayed_send_is_not_applied_twice_and_a_gap_is_refused() {
    let _w = watchdog("lp-seq");
    let gw = start();
    let http = client(&gw);
    let token = open(&gw, &http);
    let heartbeat = json!({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z", "status": "ready", "activeCommands": 0}).to_string();
    let (status, body) = send(&gw, &http, &token, 1, &format!("{heartbeat}\n{heartbeat}"));
    assert_eq!((status, &body["applied"]), (200, &json!(true)), "{body}");
    // The same request again (its answer was lost): acknowledged, not applied.
    let (status, body) = send(&gw, &http, &token, 1, &format!("{heartbeat}\n{heartbeat}"));
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let (status, body) = send(&gw, &http, &token, 3, &heartbeat);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["expectedSeq"], 2);
    let mut heartbeats = 0;
    while let Ok(event) = gw.events.recv_timeout(Duration::from_millis(500)) {
        if matches!(event, gateway::GatewayEvent::Frame { frame: protocol::Outbound::Heartbeat(_), .. }) {
            heartbeats += 1;
        }
    }
    assert_eq!(heartbeats, 2, "two heartbeats in the one applied request");
}

#[test]
fn recv_sends_unacknowledged_frames_again() {
    let _w = watchdog("lp-recv");
    let gw = start();
    let http = client(&gw);
    let token = open(&gw, &http);
    // A command for the connector: the gateway writes it to the session.
    let pending = gw
        .submit(
            "Warehouse",
            gateway::QueryRequest {
                sql: "SELECT 1".into(),
                params: Vec::new(),
                timeout_ms: None,
                connection: None,
                ttl: None,
                wait: Duration::from_secs(5),
                idempotency_key: None,
            },
        )
        .unwrap();
    let (status, batch) = recv(&gw, &http, &token, 1, 5_000);
    assert_eq!(status, 200, "{batch}");
    let first = batch["first"].as_u64().unwrap();
    assert_eq!(first, 2, "connected was frame 1, answered by open: {batch}");
    let frame: Value = serde_json::from_str(batch["frames"][0].as_str().unwrap()).unwrap();
    assert_eq!(frame["type"], "command");
    // That response was "lost": the next recv acknowledges only frame 1 and gets it again.
    let (_, again) = recv(&gw, &http, &token, 1, 5_000);
    assert_eq!(again["first"], first);
    assert_eq!(again["frames"][0], batch["frames"][0]);
    // Acknowledged: nothing left, the request is held and answers empty.
    let (_, empty) = recv(&gw, &http, &token, first, 200);
    assert_eq!(empty["frames"], json!([]), "{empty}");
    drop(pending);
}

#[test]
fn a_session_that_is_sent_too_much_is_told_to_wait() {
    let _w = watchdog("lp-bounds");
    let gw = start();
    let http = client(&gw);
    let token = open(&gw, &http);
    // More frames in one request than the inbox holds: refused as busy, nothing applied.
    let heartbeat = json!({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z", "status": "ready", "activeCommands": 0}).to_string();
    let many = vec![heartbeat.as_str(); 1025].join("\n");
    let (status, body) = send(&gw, &http, &token, 1, &many);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "AGENT_BUSY");
    assert_eq!(body["retryable"], true);
    // The first request is still sequence 1: nothing was applied.
    let (status, body) = send(&gw, &http, &token, 1, &heartbeat);
    assert_eq!((status, &body["applied"]), (200, &json!(true)), "{body}");
}
