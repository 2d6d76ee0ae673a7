//! The `connector-gateway` binary as a real process: its resident memory under a zlib bomb.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway::AdminClient;
use protocol::Inbound;

use crate::common::{FakeAgent, Proc, await_admin, temp_dir, watchdog};
use crate::limits::{BOMB, bomb};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

/// Resident memory of a process, in bytes (Linux `/proc`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A `connector-gateway serve` process (key "A" created by its CLI first) with a fake agent
/// authenticated on it.
struct Served {
    gw: Proc,
    /// Its data directory.
    dir: std::path::PathBuf,
    pid: u32,
    admin: AdminClient,
    /// The gateway's `admin.json`.
    doc: serde_json::Value,
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
    agent: FakeAgent,
    conn: String,
    hmac: Vec<u8>,
}

/// Creates key "A" with `bin keys create`, starts `bin serve` with `limits` added, waits for its
/// `admin.json` and connects a fake agent with the key.
fn serve_and_connect(bin: &str, limits: &[&str]) -> Served {
    let dir = temp_dir();
    let out = Command::new(bin)
        .args(["--data-dir"])
        .arg(&dir)
        .args(["keys", "create", "--tenant", "acme", "--name", "A", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = key["data"]["apiKey"].as_str().unwrap().to_owned();
    let gw = Proc::quiet(
        Command::new(bin)
            .args(["--data-dir"])
            .arg(&dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(limits),
    );
    let pid = gw.0.id();
    let (admin, doc) = await_admin(&dir);
    let ws_url = doc["wsUrl"].as_str().unwrap().to_owned();
    let addr: SocketAddr = ws_url.trim_start_matches("wss://").trim_end_matches("/ws").parse().unwrap();
    let tls =
        mini_connector::tls::client_config(Some(std::path::Path::new(doc["caCertPath"].as_str().unwrap())))
            .unwrap();
    let mut agent = FakeAgent::open_at(addr, &ws_url, tls.clone());
    let connected = match agent.auth(&key, "A") {
        Inbound::Connected(c) => c,
        other => panic!("expected connected, got {other:?}"),
    };
    let conn = connected.connection_id.clone();
    let hmac = connected.upload.hmac_key.expose().to_vec();
    Served { gw, dir, pid, admin, doc, addr, tls, agent, conn, hmac }
}

#[cfg(target_os = "linux")]
#[test]
fn sixty_small_zlib_bombs_do_not_pin_memory_in_the_gateway_process() {
    let _w = watchdog("process-bomb");
    let Served { gw, dir, pid, admin, doc: _, addr, tls, mut agent, conn, hmac } =
        serve_and_connect(BIN, &["--max-buffer-bytes", "16MiB"]);
    // Warm up: one refused chunk, so TLS and thread buffers exist before the baseline.
    assert_eq!(bomb(&hmac, &conn, "warm-up", 0, BOMB).post_to(addr, tls.clone()).0, 404);
    let before = rss(pid);

    // Sixty ~4 KB POSTs of compressed zeros under command ids the gateway never sent: each was
    // a fresh 4 MiB buffer kept for 24 h (251 MiB in all); now 404, nothing inflated.
    for i in 0..60 {
        let (status, _) = bomb(&hmac, &conn, &format!("made-up-{i}"), 0, BOMB).post_to(addr, tls.clone());
        assert_eq!(status, 404);
    }
    let after_unknown = rss(pid);

    // The same sixty under a real pending command: four fit the 16 MiB cap, the fifth is
    // refused and the buffer freed, the rest find no buffer.
    let asker = std::thread::spawn(move || {
        let body = serde_json::json!({ "connector": "A", "sql": "SELECT 1", "waitMs": 30_000 });
        admin.call("POST", "/admin/query", Some(&body), Duration::from_secs(40))
    });
    let cmd = agent.expect_command();
    let mut statuses = Vec::new();
    for seq in 0..60 {
        statuses.push(bomb(&hmac, &conn, &cmd.command_id, seq, BOMB).post_to(addr, tls.clone()).0);
    }
    assert_eq!(&statuses[..5], &[200, 200, 200, 200, 413]);
    assert!(statuses[5..].iter().all(|s| *s == 409), "{statuses:?}");
    let after_pending = rss(pid);

    let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
    eprintln!(
        "gateway RSS: {:.1} MiB before, {:.1} MiB after 60 bombs under unknown ids, {:.1} MiB after 60 under a pending command",
        mib(before),
        mib(after_unknown),
        mib(after_pending)
    );
    assert!(
        after_unknown < before + (8 << 20),
        "unknown ids grew RSS by {:.1} MiB",
        mib(after_unknown - before)
    );
    assert!(
        after_pending < before + (48 << 20),
        "a capped result grew RSS by {:.1} MiB",
        mib(after_pending.saturating_sub(before))
    );
    drop(agent);
    drop(gw);
    let _ = asker.join();
    let _ = std::fs::remove_dir_all(dir);
}

/// Peak resident memory (`VmHWM`) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A buffered result of `GW_SPOOL_MB` MiB (16 unless set) uploaded in 1 MiB chunks and fetched
/// through `POST /admin/query`: the gateway process's peak RSS grows by a few chunks, not by
/// the result. `GW_SPOOL_BIN` runs another `connector-gateway` binary (to measure a build
/// side by side); the numbers are printed (`docs/BENCHMARKS.md`, "Gateway memory").
#[cfg(target_os = "linux")]
#[test]
fn a_large_buffered_result_does_not_grow_the_gateway_process() {
    use std::io::Write as _;

    use flate2::{Compression, write::ZlibEncoder};
    use protocol::{ExecutionResult, Outbound, ResultPayload, chunk_signature, headers};
    use sha2::{Digest, Sha256};

    // A measurement (GW_SPOOL_MB) of a debug build may take minutes: no watchdog then.
    let measuring = std::env::var_os("GW_SPOOL_MB").is_some();
    let _w = (!measuring).then(|| watchdog("process-spool"));
    let bin = std::env::var("GW_SPOOL_BIN").unwrap_or_else(|_| BIN.to_owned());
    let mib_wanted: u64 = std::env::var("GW_SPOOL_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let Served { gw, dir, pid, admin, doc, addr, tls, mut agent, conn, hmac } = serve_and_connect(
        &bin,
        &[
            "--max-buffer-bytes",
            "4GiB",
            "--max-connection-buffer-bytes",
            "4GiB",
            "--max-total-buffer-bytes",
            "4GiB",
        ],
    );

    let admin_addr: SocketAddr = doc["addr"].as_str().unwrap().parse().unwrap();
    let admin_token = doc["token"].as_str().unwrap().to_owned();
    let asker = std::thread::spawn(move || {
        let body = serde_json::json!({ "connector": "A", "sql": "SELECT * FROM big", "waitMs": 600_000 });
        if mib_wanted > 200 {
            // Too large to parse here: the body is read and counted, its rows are not checked.
            return (None, raw_admin_query(admin_addr, &admin_token, &body), Instant::now());
        }
        let (status, answer) =
            admin.call("POST", "/admin/query", Some(&body), Duration::from_secs(900)).unwrap();
        let done = Instant::now();
        assert_eq!(status, 200, "{}", answer["error"]);
        (answer["rows"].as_array().map(Vec::len), answer["rows"][7].clone(), done)
    });
    let cmd = agent.expect_command();
    let before = rss(pid);

    // Chunks of ~1 MiB of NDJSON rows, made and hashed as they go.
    let target = mib_wanted << 20;
    let mut sha = Sha256::new();
    let (mut bytes, mut rows, mut seq) = (0u64, 0u64, 0u32);
    let header = br#"{"columns":[{"name":"id","type":"integer","dbType":"INTEGER"},{"name":"note","type":"text","dbType":"TEXT"}]}"#;
    let mut plain = header.to_vec();
    plain.push(b'\n');
    let upload_started = Instant::now();
    loop {
        while plain.len() < 1_000_000 && bytes + (plain.len() as u64) < target {
            plain.extend_from_slice(
                format!("[{rows},\"row {rows} {}\"]\n", "x".repeat((rows % 50) as usize)).as_bytes(),
            );
            rows += 1;
        }
        let last = bytes + plain.len() as u64 >= target;
        sha.update(&plain);
        bytes += plain.len() as u64;
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(&plain).unwrap();
        let body = z.finish().unwrap();
        let signature = hex::encode(chunk_signature(&hmac, &conn, &cmd.command_id, seq, last, &body));
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{}: {conn}\r\n{}: {}\r\n{}: {seq}\r\n{}: {}\r\n{}: {signature}\r\nConnection: close\r\n\r\n",
            body.len(),
            headers::CONNECTION,
            headers::COMMAND,
            cmd.command_id,
            headers::SEQ,
            headers::FINAL,
            u8::from(last),
            headers::SIGNATURE,
        );
        let mut tls_stream = crate::common::tls_connect_to(addr, tls.clone());
        let (status, answer) = crate::common::http_request(&mut tls_stream, &head, &body);
        assert_eq!(status, 200, "chunk {seq}: {answer}");
        seq += 1;
        if seq % 16 == 0 {
            // A long upload: the session must not look idle meanwhile.
            agent.heartbeat(1);
        }
        plain.clear();
        if last {
            break;
        }
    }
    let uploaded = upload_started.elapsed();
    let sent = Instant::now();
    agent.send(&Outbound::ExecutionResult(ExecutionResult {
        command_id: cmd.command_id.clone(),
        execution_id: cmd.execution_id.clone(),
        activity_id: cmd.activity_id.clone(),
        result: ResultPayload::Buffered {
            buffer_key: format!("A:{}", cmd.command_id),
            chunk_count: seq,
            byte_count: bytes,
            sha256: hex::encode(sha.finalize()),
        },
        row_count: rows,
        duration_ms: 1,
    }));
    if !measuring {
        agent.expect_ack(&cmd.command_id);
    }
    let (got_rows, row7, done) = asker.join().unwrap();
    let to_caller = done.saturating_duration_since(sent);
    let peak = peak_rss(pid);
    if mib_wanted <= 200 {
        assert_eq!(got_rows, Some(rows as usize));
        assert_eq!(row7, serde_json::json!([7, format!("row 7 {}", "x".repeat(7))]));
    }
    let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
    eprintln!(
        "spool bench: result {:.1} MiB ({rows} rows, {seq} chunks): gateway RSS {:.1} MiB before, peak (VmHWM) {:.1} MiB; upload {:.2} s; result frame to caller {:.2} s",
        mib(bytes),
        mib(before),
        mib(peak),
        uploaded.as_secs_f64(),
        to_caller.as_secs_f64()
    );
    if std::env::var_os("GW_SPOOL_BIN").is_none() {
        assert!(
            peak < before + (32 << 20),
            "a {:.0} MiB result grew the gateway's peak RSS by {:.1} MiB",
            mib(bytes),
            mib(peak.saturating_sub(before))
        );
    }
    drop(agent);
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}

/// `POST /admin/query` read as bytes: the body is counted against its `Content-Length`, not
/// parsed (for results too large to hold as values in the test process); returns the length.
fn raw_admin_query(addr: SocketAddr, token: &str, body: &serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead as _, BufReader, Write as _};

    let body = serde_json::to_vec(body).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "POST /admin/query HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    tcp.write_all(&body).unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, tcp);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<u64>().ok();
        }
    }
    let n = std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    assert_eq!(Some(n), length, "the whole body, as announced");
    serde_json::json!(n)
}
