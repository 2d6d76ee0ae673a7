//! The `connector-gateway serve` process stopped with SIGKILL and with SIGTERM while commands
//! are queued and running: after the restart every one is delivered again; SIGTERM sends
//! `shutdown {mode: "restart"}` and exits 0; `decommission` sends `mode: "decommission"`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::AdminClient;
use protocol::{Inbound, ShutdownMode};
use rustls::ClientConfig;
use serde_json::json;

use crate::common::{FakeAgent, WAIT, col, temp_dir, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

/// A `serve` process; killed on drop.
struct Serve {
    child: Child,
    admin: AdminClient,
    addr: SocketAddr,
    ws_url: String,
    tls: Arc<ClientConfig>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(dir: &Path, extra: &[&str]) -> Serve {
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // admin.json names the process that wrote it: wait for this one's (a killed gateway
        // leaves its own behind).
        let deadline = Instant::now() + Duration::from_secs(20);
        let doc = loop {
            let doc: Option<serde_json::Value> = std::fs::read_to_string(dir.join("admin.json"))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok());
            if let Some(doc) = doc.filter(|d| d["pid"] == child.id()) {
                break doc;
            }
            assert!(Instant::now() < deadline, "the gateway never wrote admin.json");
            std::thread::sleep(Duration::from_millis(20));
        };
        let admin = AdminClient::from_data_dir(dir).unwrap().unwrap();
        let ws_url = doc["wsUrl"].as_str().unwrap().to_owned();
        let addr = ws_url.trim_start_matches("wss://").trim_end_matches("/ws").parse().unwrap();
        let ca = PathBuf::from(doc["caCertPath"].as_str().unwrap());
        let tls = mini_connector::tls::client_config(Some(&ca)).unwrap();
        Serve { child, admin, addr, ws_url, tls }
    }

    fn agent(&self, key: &str, max_in_flight: Option<u32>) -> FakeAgent {
        let mut agent = FakeAgent::open_at(self.addr, &self.ws_url, self.tls.clone());
        match agent.auth_as(key, "A", Some("inst-1"), max_in_flight) {
            Inbound::Connected(c) => agent.connected = Some(c),
            other => panic!("expected connected, got {other:?}"),
        }
        agent
    }

    fn submit(&self, sql: &str) -> String {
        let body = json!({ "connector": "A", "sql": sql });
        let (status, answer) = self.admin.call("POST", "/admin/submit", Some(&body), WAIT).unwrap();
        assert_eq!(status, 202, "{answer}");
        answer["commandId"].as_str().unwrap().to_owned()
    }

    fn status(&self, id: &str) -> serde_json::Value {
        let (status, answer) = self.admin.call("GET", &format!("/admin/commands/{id}"), None, WAIT).unwrap();
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn create_key(dir: &Path) -> String {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["keys", "create", "--tenant", "acme", "--name", "A", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    key["data"]["apiKey"].as_str().unwrap().to_owned()
}

fn integrity_ok(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("gateway.db")).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

/// Sends SIGTERM, as `systemctl stop` does.
fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[cfg(target_os = "linux")]
#[test]
fn sigkill_with_a_sent_and_a_queued_command_then_restart_delivers_both() {
    let _w = watchdog("sigkill-restart");
    let dir = temp_dir();
    let key = create_key(&dir);
    let gw = Serve::start(&dir, &[]);
    // The agent takes one command at a time: one is sent, one waits in the queue.
    let mut agent = gw.agent(&key, Some(1));
    let sent = gw.submit("SELECT 'sent'");
    let queued = gw.submit("SELECT 'queued'");
    assert_eq!(agent.expect_command().command_id, sent);
    assert_eq!(gw.status(&queued)["state"], "queued");
    drop(gw); // SIGKILL
    drop(agent);
    integrity_ok(&dir);

    let gw = Serve::start(&dir, &[]);
    let mut agent = gw.agent(&key, Some(8));
    let first = agent.expect_command();
    let second = agent.expect_command();
    assert_eq!((first.command_id.as_str(), second.command_id.as_str()), (sent.as_str(), queued.as_str()));
    for cmd in [&first, &second] {
        agent.answer_inline(cmd, vec![col("x", "text")], vec![vec![json!(cmd.payload.query)]]);
        agent.expect_ack(&cmd.command_id);
    }
    let status = gw.status(&queued);
    assert_eq!(status["state"], "answered");
    assert_eq!(status["outcome"]["rows"], json!([["SELECT 'queued'"]]));
    drop(gw);
    integrity_ok(&dir);
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn sigterm_sends_shutdown_restart_exits_0_and_the_commands_come_again_then_decommission() {
    let _w = watchdog("sigterm-restart");
    let dir = temp_dir();
    let key = create_key(&dir);
    let mut gw = Serve::start(&dir, &["--shutdown-grace", "1s"]);
    let mut agent = gw.agent(&key, Some(1));
    let sent = gw.submit("SELECT 'sent'");
    let queued = gw.submit("SELECT 'queued'");
    assert_eq!(agent.expect_command().command_id, sent);

    let stopped = Instant::now();
    sigterm(&gw.child);
    match agent.recv() {
        Inbound::Shutdown(s) => assert_eq!((s.mode, s.grace_period), (ShutdownMode::Restart, 1000)),
        other => panic!("expected shutdown, got {other:?}"),
    }
    // The agent does not answer: the gateway waits the grace period (plus at most as much
    // again), then closes and exits 0.
    agent.expect_closed();
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let took = stopped.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "stopped in {took:?}");
    integrity_ok(&dir);

    let gw = Serve::start(&dir, &["--shutdown-grace", "1s"]);
    let mut agent = gw.agent(&key, Some(8));
    let first = agent.expect_command();
    let second = agent.expect_command();
    assert_eq!((first.command_id.as_str(), second.command_id.as_str()), (sent.as_str(), queued.as_str()));

    // Only `decommission` tells the agent to exit.
    let out = Command::new(BIN).arg("--data-dir").arg(&dir).args(["decommission", "A"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    match agent.recv() {
        Inbound::Shutdown(s) => assert_eq!(s.mode, ShutdownMode::Decommission),
        other => panic!("expected shutdown, got {other:?}"),
    }
    let out =
        Command::new(BIN).arg("--data-dir").arg(&dir).args(["decommission", "Nobody"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "not found");
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}
