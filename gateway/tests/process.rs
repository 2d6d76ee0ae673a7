//! The `connector-gateway` binary as a real process: its resident memory under a zlib bomb.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::AdminClient;
use protocol::Inbound;

use crate::common::{FakeAgent, temp_dir, watchdog};
use crate::limits::{BOMB, bomb};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

/// The gateway process; killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

#[cfg(target_os = "linux")]
#[test]
fn sixty_small_zlib_bombs_do_not_pin_memory_in_the_gateway_process() {
    let _w = watchdog("process-bomb");
    let dir = temp_dir();
    let out = Command::new(BIN)
        .args(["--data-dir"])
        .arg(&dir)
        .args(["keys", "create", "--tenant", "acme", "--name", "A", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = key["apiKey"].as_str().unwrap().to_owned();

    let child = Command::new(BIN)
        .args(["--data-dir"])
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--max-buffer-bytes", "16MiB"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gw = Proc(child);
    let pid = gw.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        if let Ok(Some(client)) = AdminClient::from_data_dir(&dir) {
            break client;
        }
        assert!(Instant::now() < deadline, "the gateway never wrote admin.json");
        std::thread::sleep(Duration::from_millis(20));
    };
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("admin.json")).unwrap()).unwrap();
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
