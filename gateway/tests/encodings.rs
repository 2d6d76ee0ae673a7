//! Chunk encodings (`auth.chunkEncodings`, `connected.upload.contentEncoding`, each chunk's
//! `content-encoding`): the grant picks the gateway's first preferred encoding the agent offered
//! and names none for an old agent (or as an old gateway); chunks in LZ4 and zlib are taken,
//! mixed within one result, verified byte-exact, and survive a restart; an unknown encoding is
//! `415 MALFORMED_MESSAGE`; an LZ4 bomb is `413` and a broken LZ4 chunk `400`, nothing kept.

use std::io::Write as _;

use gateway::CommandStatus;
use protocol::{ContentEncoding, Inbound, chunk_signature};
use serde_json::json;

use crate::chunks::{buffered, pending, stream};
use crate::common::{Chunk, FakeAgent, TestGateway, http_request, start, start_with, tls_connect, watchdog};

/// Opens a session offering `offer` as `auth.chunkEncodings` (none: an old agent).
fn connect(gw: &TestGateway, key: &str, offer: Option<&[&str]>) -> FakeAgent {
    let mut agent = FakeAgent::open(gw);
    let mut auth = json!({
        "type": "auth", "apiKey": key, "connectorName": "Warehouse", "agentVersion": "test-0", "protocolVersion": 2
    });
    if let Some(offer) = offer {
        auth["chunkEncodings"] = json!(offer);
    }
    agent.send_text(auth.to_string());
    match agent.recv() {
        Inbound::Connected(c) => agent.connected = Some(c),
        other => panic!("expected connected, got {other:?}"),
    }
    agent
}

fn granted(agent: &FakeAgent) -> Option<String> {
    agent.connected.as_ref().unwrap().upload.content_encoding.clone()
}

/// The grant of a session offering `offer`; the session ends before this returns.
fn grant_for(gw: &TestGateway, key: &str, offer: Option<&[&str]>) -> Option<String> {
    let agent = connect(gw, key, offer);
    let grant = granted(&agent);
    drop(agent);
    gw.wait_disconnected("Warehouse");
    grant
}

/// A signed chunk whose body is `body` as given, sent with `content-encoding: <encoding>`.
struct Raw<'a> {
    chunk: Chunk<'a>,
    encoding: Option<&'a str>,
}

impl<'a> Raw<'a> {
    fn new(
        key: &[u8],
        conn: &'a str,
        cmd: &'a str,
        seq: u32,
        last: bool,
        body: Vec<u8>,
        encoding: Option<&'a str>,
    ) -> Self {
        let mut chunk = Chunk::signed(key, conn, cmd, seq, last, b"");
        chunk.signature = hex::encode(chunk_signature(key, conn, cmd, seq, last, &body));
        chunk.body = body;
        Self { chunk, encoding }
    }

    /// `plain` compressed with `encoding`, labelled so.
    fn encoded(
        key: &[u8],
        conn: &'a str,
        cmd: &'a str,
        seq: u32,
        last: bool,
        plain: &[u8],
        encoding: ContentEncoding,
    ) -> Self {
        Self::new(key, conn, cmd, seq, last, encoding.encode(plain).unwrap(), Some(encoding.as_str()))
    }

    fn post(&self, gw: &TestGateway) -> (u16, serde_json::Value) {
        let mut head = self.chunk.head(false);
        if let Some(encoding) = self.encoding {
            head = head.replacen("\r\n", &format!("\r\nContent-Encoding: {encoding}\r\n"), 1);
        }
        http_request(&mut tls_connect(gw), &head, &self.chunk.body)
    }
}

#[test]
fn the_grant_names_the_gateways_first_preferred_encoding_the_agent_offered_and_none_for_old_peers() {
    let _w = watchdog("grant");
    let gw = start();
    let key = gw.key("Warehouse");
    assert_eq!(grant_for(&gw, &key, Some(&["lz4", "deflate"])).as_deref(), Some("lz4"));
    assert_eq!(grant_for(&gw, &key, Some(&["zstd", "deflate"])).as_deref(), Some("deflate"));
    assert_eq!(grant_for(&gw, &key, Some(&["zstd"])), None, "nothing it reads: deflate implied");
    assert_eq!(grant_for(&gw, &key, None), None, "an old agent offers nothing and gets no field");

    // A gateway that prefers zlib (slow agent uplinks) and one that predates the grant.
    let zlib_first = start_with(|c| c.chunk_encodings = vec![ContentEncoding::Deflate, ContentEncoding::Lz4]);
    let key = zlib_first.key("Warehouse");
    assert_eq!(grant_for(&zlib_first, &key, Some(&["lz4", "deflate"])).as_deref(), Some("deflate"));
    let old_gateway = start_with(|c| c.chunk_encodings = Vec::new());
    let key = old_gateway.key("Warehouse");
    let agent = connect(&old_gateway, &key, Some(&["lz4", "deflate"]));
    assert_eq!(granted(&agent), None);
    // The wire form of that grant has no field at all (what an old gateway sends).
    let text = serde_json::to_value(agent.connected.as_ref().unwrap()).unwrap();
    assert!(text["upload"].get("contentEncoding").is_none(), "{text}");
}

#[test]
fn lz4_and_zlib_chunks_of_one_result_are_verified_byte_exact_and_survive_a_restart() {
    let _w = watchdog("lz4-result");
    let mut gw = start();
    let key = gw.key("Warehouse");
    let mut agent = connect(&gw, &key, Some(&["lz4", "deflate"]));
    let raw = stream(6_000);
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 4 + 1).collect();
    assert_eq!(pieces.len(), 4);
    let (pending_query, cmd) = pending(&gw, &mut agent, "Warehouse");
    let id = cmd.command_id.clone();
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    // Chunk 0 as LZ4, chunk 1 as zlib named `deflate` (a chunk re-sent on a session that
    // negotiated otherwise), then the gateway restarts.
    let (status, body) = Raw::encoded(&hmac, &conn, &id, 0, false, pieces[0], ContentEncoding::Lz4).post(&gw);
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        Raw::encoded(&hmac, &conn, &id, 1, false, pieces[1], ContentEncoding::Deflate).post(&gw);
    assert_eq!(status, 200, "{body}");
    let held = gw.buffered_bytes();
    assert_eq!(held, (pieces[0].len() + pieces[1].len()) as u64, "caps count decompressed bytes");
    // An identical LZ4 re-send is a duplicate.
    let (status, body) = Raw::encoded(&hmac, &conn, &id, 0, false, pieces[0], ContentEncoding::Lz4).post(&gw);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    drop(agent);
    gw.wait_disconnected("Warehouse");
    gw.restart_with(|_| {});
    drop(pending_query);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (1, held), "restored from the plain lengths");

    let mut agent = connect(&gw, &key, Some(&["lz4", "deflate"]));
    assert_eq!(agent.expect_command().command_id, id);
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    let (status, body) =
        Raw::encoded(&hmac, &conn, &id, 1, false, pieces[1], ContentEncoding::Deflate).post(&gw);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    let (status, body) = Raw::encoded(&hmac, &conn, &id, 2, false, pieces[2], ContentEncoding::Lz4).post(&gw);
    assert_eq!(status, 200, "{body}");
    // No header at all: an agent from before chunk encodings (zlib).
    let (status, body) = Chunk::signed(&hmac, &conn, &id, 3, true, pieces[3]).post(&gw);
    assert_eq!(status, 200, "{body}");
    agent.send(&buffered(&cmd, &format!("Warehouse:{id}"), 4, &raw, 6_000));
    agent.expect_ack(&id);
    match gw.command_status(&id) {
        CommandStatus::Answered(Some(Ok(outcome))) => {
            assert_eq!(outcome.buffered.unwrap().raw, raw, "byte-exact from LZ4 and zlib chunks");
            assert_eq!(outcome.rows.len(), 6_000);
        }
        other => panic!("expected the result, got {other:?}"),
    }
}

#[test]
fn unknown_encodings_lz4_bombs_and_broken_lz4_chunks_are_refused_and_nothing_is_kept() {
    let _w = watchdog("lz4-refused");
    let gw = start();
    let key = gw.key("Warehouse");
    let mut agent = connect(&gw, &key, Some(&["lz4", "deflate"]));
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    let raw = stream(500);

    // An encoding the gateway does not know: 415, the spec's MALFORMED_MESSAGE, final.
    let (_q1, cmd) = pending(&gw, &mut agent, "Warehouse");
    let zstd = Raw::new(&hmac, &conn, &cmd.command_id, 0, true, raw.clone(), Some("zstd"));
    let (status, body) = zstd.post(&gw);
    assert_eq!(
        (status, body["code"].as_str(), &body["retryable"]),
        (415, Some("MALFORMED_MESSAGE"), &json!(false))
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`zstd`") && message.contains("lz4, deflate"), "{message}");
    assert_eq!(gw.buffered_results(), 0, "no buffer for it");

    // An LZ4 bomb: 8 MiB of zeros in ~33 KiB, far beyond 4 x maxChunkBytes + 64 KiB.
    let (_q2, cmd) = pending(&gw, &mut agent, "Warehouse");
    let bomb = vec![0u8; 8 << 20];
    let chunk = Raw::encoded(&hmac, &conn, &cmd.command_id, 0, true, &bomb, ContentEncoding::Lz4);
    assert!(chunk.chunk.body.len() < 64 << 10, "{}", chunk.chunk.body.len());
    let (status, body) = chunk.post(&gw);
    assert_eq!(
        (status, body["code"].as_str(), &body["retryable"]),
        (413, Some("PAYLOAD_TOO_LARGE"), &json!(false))
    );
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0), "nothing kept");

    // Broken LZ4, signed (the agent's bug, not an attacker): 400, the result's buffer freed.
    let (_q3, cmd) = pending(&gw, &mut agent, "Warehouse");
    let id = cmd.command_id.as_str();
    let good = ContentEncoding::Lz4.encode(&raw).unwrap();
    assert_eq!(Raw::encoded(&hmac, &conn, id, 0, false, &raw, ContentEncoding::Lz4).post(&gw).0, 200);
    let mut corrupt = good.clone();
    corrupt.truncate(good.len() - 9);
    let (status, body) = Raw::new(&hmac, &conn, id, 1, true, corrupt, Some("lz4")).post(&gw);
    assert_eq!((status, body["code"].as_str()), (400, Some("MALFORMED_MESSAGE")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("is not LZ4 frame data"), "{body}");
    assert_eq!(gw.buffered_results(), 0, "the result's buffer is freed");
    // Zlib bytes labelled lz4, and an LZ4 frame of 4 MiB blocks (not taken: unbounded blocks).
    let (_q4, cmd) = pending(&gw, &mut agent, "Warehouse");
    let id = cmd.command_id.as_str();
    let mislabelled = Raw::new(&hmac, &conn, id, 0, true, crate::common::compress(&raw), Some("lz4"));
    assert_eq!(mislabelled.post(&gw).0, 400);
    let (_q5, cmd) = pending(&gw, &mut agent, "Warehouse");
    let id = cmd.command_id.as_str();
    let mut big_blocks = lz4_flex::frame::FrameEncoder::new(Vec::new());
    big_blocks.write_all(&stream(20_000)).unwrap();
    let big_blocks = big_blocks.finish().unwrap();
    let (status, body) = Raw::new(&hmac, &conn, id, 0, true, big_blocks, Some("lz4")).post(&gw);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("64 KiB"), "{body}");
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0));
}
