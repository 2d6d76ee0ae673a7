//! Buffered results: signed chunk uploads, reassembly, rejection.

use std::sync::Arc;
use std::thread;

use gateway::{GatewayEvent, QueryError, QueryRequest};
use protocol::{ErrorCode, ExecutionResult, Outbound, ResultPayload};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::{Chunk, FakeAgent, TestGateway, WAIT, http_request, start, tls_connect, watchdog};

/// An NDJSON result stream of `n` rows.
pub fn stream(n: usize) -> Vec<u8> {
    let mut out = br#"{"columns":[{"name":"id","type":"integer","dbType":"INTEGER"},{"name":"note","type":"text","dbType":"TEXT"}]}"#.to_vec();
    out.push(b'\n');
    for i in 0..n {
        out.extend_from_slice(format!("[{i},\"row {i} \u{e9}t\u{e9} {}\"]\n", "x".repeat(i % 50)).as_bytes());
    }
    out
}

pub fn setup() -> (Arc<TestGateway>, FakeAgent) {
    let gw = Arc::new(start());
    let key = gw.key("Warehouse");
    let agent = FakeAgent::connect(&gw, &key, "Warehouse");
    (gw, agent)
}

fn ask(gw: &Arc<TestGateway>) -> thread::JoinHandle<Result<gateway::QueryOutcome, QueryError>> {
    let gw = gw.clone();
    thread::spawn(move || {
        let mut req = QueryRequest::new("SELECT * FROM big");
        req.wait = WAIT;
        gw.query("Warehouse", req)
    })
}

pub fn buffered(cmd: &protocol::Command, key: &str, chunks: u32, raw: &[u8], rows: u64) -> Outbound {
    Outbound::ExecutionResult(ExecutionResult {
        command_id: cmd.command_id.clone(),
        execution_id: cmd.execution_id.clone(),
        activity_id: cmd.activity_id.clone(),
        result: ResultPayload::Buffered {
            buffer_key: key.to_owned(),
            chunk_count: chunks,
            byte_count: raw.len() as u64,
            sha256: hex::encode(Sha256::digest(raw)),
        },
        row_count: rows,
        duration_ms: 42,
    })
}

#[test]
fn buffered_result_in_several_signed_chunks_is_reassembled_byte_exact() {
    let _w = watchdog("buffered");
    let (gw, mut agent) = setup();
    let asker = ask(&gw);
    let cmd = agent.expect_command();
    let raw = stream(20_000);
    assert!(raw.len() > 3 * 100_000);
    let (conn, key) = (agent.connection_id(), agent.hmac_key());
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 3 + 1).collect();
    assert_eq!(pieces.len(), 3);
    let mut buffer_key = String::new();
    // Chunks 0 and 1 on one keep-alive connection, the last one on a fresh connection.
    let mut stream = tls_connect(&gw);
    for (seq, piece) in pieces.iter().enumerate() {
        let chunk = Chunk::signed(&key, &conn, &cmd.command_id, seq as u32, seq == 2, piece);
        let (status, body) =
            if seq < 2 { http_request(&mut stream, &chunk.head(true), &chunk.body) } else { chunk.post(&gw) };
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["seq"], seq);
        buffer_key = body["bufferKey"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        buffer_key,
        format!("Warehouse:{}", cmd.command_id),
        "bound to the connector, not the session"
    );
    // A retried chunk with the same bytes is accepted again (idempotent).
    let again = Chunk::signed(&key, &conn, &cmd.command_id, 1, false, pieces[1]);
    assert_eq!(again.post(&gw).0, 200);
    assert_eq!(gw.buffered_results(), 1);
    agent.send(&buffered(&cmd, &buffer_key, 3, &raw, 20_000));
    agent.expect_ack(&cmd.command_id);
    let outcome = asker.join().unwrap().unwrap();
    let info = outcome.buffered.as_ref().unwrap();
    assert_eq!(info.raw, raw, "byte-exact");
    assert_eq!(info.chunk_count, 3);
    assert_eq!(info.buffer_key, buffer_key);
    assert_eq!(outcome.rows.len(), 20_000);
    assert_eq!(outcome.rows[7], vec![json!(7), json!(format!("row 7 \u{e9}t\u{e9} {}", "x".repeat(7)))]);
    assert_eq!(serde_json::to_value(&outcome.columns[0]).unwrap()["name"], "id");
    assert_eq!(outcome.row_count, 20_000);
    assert_eq!(gw.buffered_results(), 0, "released after the ack");
}

#[test]
fn tampered_wrong_key_and_wrong_seq_chunks_are_401_and_not_stored() {
    let _w = watchdog("tampered");
    let (gw, agent) = setup();
    let (conn, key) = (agent.connection_id(), agent.hmac_key());
    let raw = stream(100);

    let mut chunk = Chunk::signed(&key, &conn, "cmd-1", 0, true, &raw);
    let last = chunk.body.len() - 1;
    chunk.body[last] ^= 0x01;
    let (status, body) = chunk.post(&gw);
    assert_eq!(status, 401);
    assert_eq!(body["code"], "CHUNK_SIGNATURE_INVALID");
    assert!(body["message"].is_string());
    gw.wait_event(|e| {
        matches!(e, GatewayEvent::ChunkRejected { code: ErrorCode::ChunkSignatureInvalid, .. }).then_some(())
    });

    let wrong_key = Chunk::signed(&[9u8; 32], &conn, "cmd-1", 0, true, &raw);
    assert_eq!(wrong_key.post(&gw).0, 401);

    let mut wrong_seq = Chunk::signed(&key, &conn, "cmd-1", 0, false, &raw);
    wrong_seq.seq = 1;
    let (status, body) = wrong_seq.post(&gw);
    assert_eq!((status, body["code"].as_str()), (401, Some("CHUNK_SIGNATURE_INVALID")));

    let mut wrong_final = Chunk::signed(&key, &conn, "cmd-1", 0, false, &raw);
    wrong_final.last = true;
    assert_eq!(wrong_final.post(&gw).0, 401);

    let unknown = Chunk::signed(&key, "no-such-connection", "cmd-1", 0, true, &raw);
    assert_eq!(unknown.post(&gw).0, 401);
    assert_eq!(gw.buffered_results(), 0, "nothing stored");
}

/// Sends a query without waiting and returns it with the command the agent received.
pub fn pending(
    gw: &TestGateway,
    agent: &mut FakeAgent,
    connector: &str,
) -> (gateway::PendingQuery, protocol::Command) {
    let mut req = QueryRequest::new("SELECT * FROM big");
    req.wait = WAIT;
    let pending = gw.submit(connector, req).unwrap();
    let cmd = agent.expect_command();
    assert_eq!(cmd.command_id, pending.command_id());
    (pending, cmd)
}

#[test]
fn gaps_are_409_and_bad_requests_are_refused() {
    let _w = watchdog("gaps");
    let (gw, mut agent) = setup();
    let (conn, key) = (agent.connection_id(), agent.hmac_key());
    let (_q2, cmd2) = pending(&gw, &mut agent, "Warehouse");
    let (_q3, cmd3) = pending(&gw, &mut agent, "Warehouse");
    let (_q4, cmd4) = pending(&gw, &mut agent, "Warehouse");
    let (c2, c3, c4) = (cmd2.command_id.as_str(), cmd3.command_id.as_str(), cmd4.command_id.as_str());
    let raw = stream(10);
    // A gap names the chunk the gateway expects next; the buffer is kept.
    let (status, body) = Chunk::signed(&key, &conn, c2, 1, false, &raw).post(&gw);
    assert_eq!((status, &body["nextSeq"], &body["retryable"]), (409, &json!(0), &json!(true)), "{body}");
    assert_eq!(Chunk::signed(&key, &conn, c2, 0, false, &raw).post(&gw).0, 200);
    let (status, body) = Chunk::signed(&key, &conn, c2, 2, true, &raw).post(&gw);
    assert_eq!((status, &body["nextSeq"]), (409, &json!(1)), "{body}");
    assert_eq!(gw.buffered_results(), 1, "a gap keeps the buffer: the agent resumes at nextSeq");
    let (status, body) = Chunk::signed(&key, &conn, c2, 0, false, &raw).post(&gw);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    // Same seq, different bytes: conflict; the result starts over.
    let (status, body) = Chunk::signed(&key, &conn, c2, 0, false, b"other").post(&gw);
    assert_eq!((status, &body["nextSeq"]), (409, &json!(0)), "{body}");
    assert_eq!(gw.buffered_results(), 0);

    // Not zlib.
    let mut plain = Chunk::signed(&key, &conn, c3, 0, true, b"");
    plain.body = b"not zlib at all".to_vec();
    plain.signature = hex::encode(protocol::chunk_signature(&key, &conn, c3, 0, true, &plain.body));
    assert_eq!(plain.post(&gw).0, 400);

    // A zip bomb: decompresses far beyond 4 x max_chunk_bytes.
    let bomb_plain = vec![0u8; 8 * 1024 * 1024];
    let bomb = Chunk::signed(&key, &conn, c4, 0, true, &bomb_plain);
    let (status, body) = bomb.post(&gw);
    assert_eq!((status, body["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    assert_eq!(body["retryable"], false);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0), "nothing kept");

    // No Content-Length.
    let mut s = tls_connect(&gw);
    let (status, _) = http_request(&mut s, "POST /upload HTTP/1.1\r\nHost: x\r\n\r\n", b"");
    assert_eq!(status, 411);
    // Too large a Content-Length: refused before the body is read.
    let mut s = tls_connect(&gw);
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n";
    assert_eq!(http_request(&mut s, head, b"").0, 413);
    // Other routes.
    let mut s = tls_connect(&gw);
    assert_eq!(http_request(&mut s, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"").0, 404);
    let mut s = tls_connect(&gw);
    assert_eq!(http_request(&mut s, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", b"").0, 426);
    let mut s = tls_connect(&gw);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http_request(&mut s, &huge, b"").0, 431);
    let mut s = tls_connect(&gw);
    assert_eq!(http_request(&mut s, "\x01\x02garbage\r\n\r\n", b"").0, 400);
}

#[test]
fn sha256_mismatch_is_an_integrity_error_without_ack() {
    let _w = watchdog("integrity");
    let (gw, mut agent) = setup();
    let asker = ask(&gw);
    let cmd = agent.expect_command();
    let raw = stream(50);
    let (conn, key) = (agent.connection_id(), agent.hmac_key());
    let (status, body) = Chunk::signed(&key, &conn, &cmd.command_id, 0, true, &raw).post(&gw);
    assert_eq!(status, 200);
    let mut claimed = raw.clone();
    claimed[20] ^= 1;
    agent.send(&buffered(&cmd, body["bufferKey"].as_str().unwrap(), 1, &claimed, 50));
    assert!(matches!(asker.join().unwrap(), Err(QueryError::Integrity(m)) if m.contains("sha256")));
    agent.expect_silence(std::time::Duration::from_millis(300));
    assert_eq!(gw.buffered_results(), 0);
}
