//! The gateway's limits: chunks only for pending commands, memory caps measured decompressed,
//! connection limit, slow clients cut, owner-only files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gateway::{GatewayEvent, QueryError};
use protocol::{ErrorBody, ErrorCode, ExecutionError, Outbound};

use crate::chunks::{buffered, pending, stream};
use crate::common::{Chunk, FakeAgent, http_request, start_with, tls_connect, watchdog};

/// 4 MiB of zeros: about 4 KB once compressed, just under the per-chunk inflate cap of a
/// 1 MiB `maxChunkBytes` (4 MiB + 64 KiB).
pub const BOMB: usize = 4 << 20;

/// A chunk of `len` zeros, compressed as hard as zlib can (about 1:1000).
pub fn bomb<'a>(hmac: &[u8], conn: &'a str, cmd: &'a str, seq: u32, len: usize) -> Chunk<'a> {
    static CACHE: std::sync::Mutex<Vec<(usize, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let body = match cache.iter().find(|(n, _)| *n == len) {
        Some((_, body)) => body.clone(),
        None => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&vec![0u8; len]).unwrap();
            let body = enc.finish().unwrap();
            cache.push((len, body.clone()));
            body
        }
    };
    let signature = hex::encode(protocol::chunk_signature(hmac, conn, cmd, seq, false, &body));
    Chunk { connection: conn, command: cmd, seq, last: false, body, signature }
}

#[test]
fn chunks_are_taken_only_for_pending_commands_sent_to_that_connection() {
    let _w = watchdog("pending-only");
    let gw = start_with(|_| {});
    let (key_a, key_b) = (gw.key("A"), gw.key("B"));
    let mut a = FakeAgent::connect(&gw, &key_a, "A");
    let mut b = FakeAgent::connect(&gw, &key_b, "B");
    let (conn, hmac) = (a.connection_id(), a.hmac_key());
    let raw = stream(2_000);

    // A command id the gateway never sent: 404, nothing inflated, no buffer.
    let (status, body) = bomb(&hmac, &conn, "made-up-command", 0, BOMB).post(&gw);
    assert_eq!(
        (status, body["code"].as_str(), &body["retryable"]),
        (404, Some("MALFORMED_MESSAGE"), &false.into())
    );
    // A command sent to another connection (B's): 404 for A.
    let (_qb, cmd_b) = pending(&gw, &mut b, "B");
    let (status, _) = Chunk::signed(&hmac, &conn, &cmd_b.command_id, 0, true, &raw).post(&gw);
    assert_eq!(status, 404);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0));

    // A normal buffered result, acknowledged.
    let (q, cmd) = pending(&gw, &mut a, "A");
    let chunk = Chunk::signed(&hmac, &conn, &cmd.command_id, 0, true, &raw);
    let (status, body) = chunk.post(&gw);
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.buffered_bytes(), raw.len() as u64);
    a.send(&buffered(&cmd, body["bufferKey"].as_str().unwrap(), 1, &raw, 2_000));
    a.expect_ack(&cmd.command_id);
    assert_eq!(q.wait().unwrap().rows.len(), 2_000);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0));

    // The same chunk replayed after the ack: 409, and no new buffer.
    for _ in 0..3 {
        let (status, body) = chunk.post(&gw);
        assert_eq!(status, 409, "{body}");
        assert!(body["message"].as_str().unwrap().contains("already answered"), "{body}");
        assert_eq!(body["retryable"], false);
    }
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0), "memory not grown");

    // A command answered with an error frees its half-uploaded buffer at once.
    let (q, cmd) = pending(&gw, &mut a, "A");
    assert_eq!(Chunk::signed(&hmac, &conn, &cmd.command_id, 0, false, &raw).post(&gw).0, 200);
    assert_eq!(gw.buffered_results(), 1);
    a.send(&Outbound::ExecutionError(ExecutionError {
        command_id: Some(cmd.command_id.clone()),
        execution_id: Some(cmd.execution_id.clone()),
        activity_id: Some(cmd.activity_id.clone()),
        error: ErrorBody::new(ErrorCode::QueryFailed, "boom"),
    }));
    assert!(matches!(q.wait(), Err(QueryError::Remote(e)) if e.code == ErrorCode::QueryFailed));
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0), "freed with the answer");
    let (status, _) = Chunk::signed(&hmac, &conn, &cmd.command_id, 1, true, &raw).post(&gw);
    assert_eq!(status, 409);
    assert_eq!(gw.buffered_results(), 0);
}

#[test]
fn zlib_bomb_is_refused_not_retryable_and_its_buffer_freed() {
    let _w = watchdog("bomb");
    let gw = start_with(|c| c.max_buffer_bytes = 2 * BOMB as u64);
    let key = gw.key("A");
    let mut a = FakeAgent::connect(&gw, &key, "A");
    let (conn, hmac) = (a.connection_id(), a.hmac_key());

    // One chunk that inflates past the per-chunk cap: refused while inflating.
    let (_q1, cmd1) = pending(&gw, &mut a, "A");
    let huge = bomb(&hmac, &conn, &cmd1.command_id, 0, 64 << 20);
    assert!(huge.body.len() < 128 * 1024, "a bomb: {} bytes", huge.body.len());
    let (status, body) = huge.post(&gw);
    assert_eq!((status, body["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{body}");
    assert_eq!(body["retryable"], false);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0));

    // Small bombs, each ~4 KB on the wire and 4 MiB inflated: two fit the per-result cap.
    let (q2, cmd2) = pending(&gw, &mut a, "A");
    let id = cmd2.command_id.as_str();
    for seq in 0..2 {
        let chunk = bomb(&hmac, &conn, id, seq, BOMB);
        assert!(chunk.body.len() < 8 * 1024, "{}", chunk.body.len());
        assert_eq!(chunk.post(&gw).0, 200);
    }
    assert_eq!(gw.buffered_bytes(), 2 * BOMB as u64);
    let (status, body) = bomb(&hmac, &conn, id, 2, BOMB).post(&gw);
    assert_eq!((status, body["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("per-result cap"), "{body}");
    assert_eq!(body["retryable"], false);
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0), "the refused buffer is freed at once");
    gw.wait_event(|e| {
        matches!(e, GatewayEvent::ChunkRejected { code: ErrorCode::PayloadTooLarge, command_id } if command_id == id)
            .then_some(())
    });
    // The rest of that result finds no buffer and creates none.
    for seq in 3..60 {
        assert_eq!(bomb(&hmac, &conn, id, seq, BOMB).post(&gw).0, 409);
    }
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (0, 0));
    drop(q2);
}

#[test]
fn per_connection_and_total_caps_hold() {
    let _w = watchdog("caps");
    let mib4 = BOMB as u64;
    let gw = start_with(|c| {
        c.max_buffer_bytes = 2 * mib4;
        c.max_connection_buffer_bytes = 3 * mib4;
        c.max_total_buffer_bytes = 4 * mib4 + mib4 / 2;
    });
    let (key_a, key_b) = (gw.key("A"), gw.key("B"));
    let mut a = FakeAgent::connect(&gw, &key_a, "A");
    let mut b = FakeAgent::connect(&gw, &key_b, "B");
    let post = |agent: &FakeAgent, cmd: &str, seq: u32| {
        bomb(&agent.hmac_key(), &agent.connection_id(), cmd, seq, BOMB).post(&gw)
    };

    let (_qa1, a1) = pending(&gw, &mut a, "A");
    let (_qa2, a2) = pending(&gw, &mut a, "A");
    assert_eq!(post(&a, &a1.command_id, 0).0, 200);
    assert_eq!(post(&a, &a1.command_id, 1).0, 200);
    assert_eq!(post(&a, &a2.command_id, 0).0, 200);
    assert_eq!(gw.buffered_bytes(), 3 * mib4);
    // A's fourth 4 MiB breaks its per-connection cap (12 MiB): a2's buffer goes, a1's stays.
    let (status, body) = post(&a, &a2.command_id, 1);
    assert_eq!((status, &body["retryable"]), (413, &false.into()), "{body}");
    assert!(body["message"].as_str().unwrap().contains("per-connection cap"), "{body}");
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (1, 2 * mib4));

    // B may still use the room left in total (18 MiB): 8 + 8 fits, 8 + 8 + 4 does not.
    let (_qb1, b1) = pending(&gw, &mut b, "B");
    let (_qb2, b2) = pending(&gw, &mut b, "B");
    assert_eq!(post(&b, &b1.command_id, 0).0, 200);
    assert_eq!(post(&b, &b1.command_id, 1).0, 200);
    assert_eq!(gw.buffered_bytes(), 4 * mib4);
    let (status, body) = post(&b, &b2.command_id, 0);
    assert_eq!((status, &body["retryable"]), (413, &false.into()), "{body}");
    assert!(body["message"].as_str().unwrap().contains("total cap"), "{body}");
    assert_eq!((gw.buffered_results(), gw.buffered_bytes()), (2, 4 * mib4));
    assert!(gw.buffered_bytes() <= 4 * mib4 + mib4 / 2);
}

/// Opens a TLS connection and finishes the handshake.
fn handshaken(gw: &crate::common::TestGateway) -> crate::common::Tls {
    let mut tls = tls_connect(gw);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let _w = watchdog("max-connections");
    let gw = start_with(|c| c.max_connections = 3);
    let key = gw.key("A");
    // A WebSocket session and two plain HTTPS connections fill the three places.
    let agent = FakeAgent::connect(&gw, &key, "A");
    let first = handshaken(&gw);
    let _second = handshaken(&gw);
    assert_eq!(gw.open_connections(), 3);

    let mut extra = TcpStream::connect(gw.local_addr()).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    gw.wait_event(|e| matches!(e, GatewayEvent::ConnectionRefused { .. }).then_some(()));
    let _ = extra.write_all(b"\x16\x03\x01\x00\x05hello");
    let mut byte = [0u8; 1];
    match extra.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the fourth connection should be closed, got {other:?}"),
    }
    assert_eq!(gw.open_connections(), 3);

    // A place frees up when a connection ends.
    drop(first);
    wait_until("a place frees up", || gw.open_connections() == 2);
    let mut s = handshaken(&gw);
    assert_eq!(http_request(&mut s, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"").0, 404);
    drop(agent);
}

/// Sends one byte every 100 ms until the server cuts the connection; returns how long it
/// took. `io` writes a byte (false = cut) and polls for the close (true = cut).
fn trickle(mut write: impl FnMut() -> bool, mut closed: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(15), "the slow client was never cut");
        if !write() || closed() {
            return started.elapsed();
        }
    }
}

fn is_close(result: std::io::Result<usize>) -> bool {
    match result {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn slow_clients_are_cut_at_the_handshake_head_and_body_deadlines() {
    let _w = watchdog("slowloris");
    let limit = Duration::from_secs(1);
    let gw = start_with(|c| {
        c.handshake_timeout = limit;
        c.header_timeout = limit;
        c.body_timeout = limit;
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let within = |took: Duration, what: &str| {
        assert!(took >= limit - Duration::from_millis(150), "{what}: cut too early ({took:?})");
        assert!(took < limit + Duration::from_millis(1500), "{what}: cut late ({took:?})");
    };

    // The TLS handshake, trickled: a ClientHello record header, then a byte at a time.
    let tcp = TcpStream::connect(gw.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut w, mut r) = (tcp.try_clone().unwrap(), tcp);
    w.write_all(b"\x16\x03\x01\x40\x00").unwrap();
    let took = trickle(|| w.write_all(b"\x01").is_ok(), || is_close(r.read(&mut [0u8; 64])));
    within(took, "handshake");

    // A request head, trickled after a fast handshake.
    let mut tls = handshaken(&gw);
    tls.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    tls.write_all(b"POST /upload HTTP/1.1\r\n").unwrap();
    tls.flush().unwrap();
    let cell = std::cell::RefCell::new(tls);
    let took = trickle(
        || {
            let mut t = cell.borrow_mut();
            t.write_all(b"x").is_ok() && t.flush().is_ok()
        },
        || is_close(cell.borrow_mut().read(&mut [0u8; 64])),
    );
    within(took, "head");

    // A body, trickled after a complete head.
    let mut tls = handshaken(&gw);
    tls.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let cell = std::cell::RefCell::new(tls);
    let took = trickle(
        || {
            let mut t = cell.borrow_mut();
            t.write_all(b"x").is_ok() && t.flush().is_ok()
        },
        || is_close(cell.borrow_mut().read(&mut [0u8; 64])),
    );
    within(took, "body");
    wait_until("every slow connection is gone", || gw.open_connections() == 0);

    // The admin API (plain HTTP) has the same head deadline.
    let tcp = TcpStream::connect(gw.admin_addr().unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut w, mut r) = (tcp.try_clone().unwrap(), tcp);
    w.write_all(b"GET /admin/health HTTP/1.1\r\n").unwrap();
    let took = trickle(|| w.write_all(b"x").is_ok(), || is_close(r.read(&mut [0u8; 64])));
    within(took, "admin head");
}

#[cfg(unix)]
#[test]
fn gateway_db_its_journal_and_its_directories_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let _w = watchdog("modes");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = crate::common::temp_dir();
    let dir = root.join("nested").join("data");
    let mut config = crate::common::config(&dir);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let gw = gateway::Gateway::start(config).unwrap();
    gw.keys().create("acme", "A").unwrap();
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&dir.join("tls")), 0o700, "tls dir");
    for file in ["gateway.db", "admin.json", "tls/key.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    // gateway.db runs in WAL mode (the command queue); its WAL and shared-memory files have
    // the database's mode.
    for file in ["gateway.db-wal", "gateway.db-shm"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    gw.shutdown();

    // A database (and WAL) left readable by others is made owner-only when the gateway opens it.
    let conn = rusqlite::Connection::open(dir.join("gateway.db")).unwrap();
    conn.execute_batch("INSERT INTO api_keys (id, tenant, connector, salt, key_hash, masked, created_at) VALUES ('k', 't', 'c', 's', 'h', 'm', 0);").unwrap();
    for file in ["gateway.db", "gateway.db-wal"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    gateway::KeyStore::open(&dir).unwrap();
    assert_eq!(mode(&dir.join("gateway.db")), 0o600);
    assert_eq!(mode(&dir.join("gateway.db-wal")), 0o600);
    drop(conn);
    let _ = std::fs::remove_dir_all(root);
}
