//! `connector-gateway keys ...` (a second process writing `gateway.db`) while the real
//! `connector-gateway serve` runs: a key created, rotated or revoked by the CLI takes effect in
//! the serving process at once, without a restart.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use protocol::{ErrorCode, Inbound};
use rustls::ClientConfig;

use crate::common::{FakeAgent, temp_dir, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

/// `connector-gateway serve` on port 0; killed on drop (its stderr is kept in the data dir).
struct Served {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    ws_url: String,
    tls: Arc<ClientConfig>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Starts `serve` on `dir`, with the admin API on loopback or (`admin == false`) without
    /// one, so that `keys revoke` cannot tell the gateway and writes the database itself.
    fn start(dir: &Path, admin: bool) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(dir).args(["serve", "--listen", "127.0.0.1:0"]);
        if admin {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        } else {
            cmd.arg("--no-admin");
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut ws_url, mut ca) = (None, None);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "serve exited before it listened");
            if let Some(url) = line.trim().strip_prefix("agent cloudUrl:") {
                ws_url = Some(url.trim().to_owned());
            }
            if let Some(path) = line.trim().strip_prefix("agent caCertPath:") {
                ca = Some(PathBuf::from(path.trim()));
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        // The rest of its stdout (the shutdown lines) is read and dropped.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let ws_url = ws_url.expect("serve printed no cloudUrl");
        let addr = ws_url.trim_start_matches("wss://").trim_end_matches("/ws").parse().unwrap();
        let tls =
            mini_connector::tls::client_config(Some(&ca.expect("serve printed no caCertPath"))).unwrap();
        if admin {
            // `keys revoke` finds the running gateway through admin.json.
            let deadline = std::time::Instant::now() + crate::common::WAIT;
            while !dir.join("admin.json").exists() {
                assert!(std::time::Instant::now() < deadline, "no admin.json");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Self { child, dir: dir.to_owned(), addr, ws_url, tls }
    }

    fn open(&self) -> FakeAgent {
        FakeAgent::open_at(self.addr, &self.ws_url, self.tls.clone())
    }

    /// Authenticates with `key`; panics (with the gateway's log) unless `connected` comes back.
    fn connect(&self, key: &str, name: &str) -> FakeAgent {
        let mut agent = self.open();
        match agent.auth(key, name) {
            Inbound::Connected(c) => agent.connected = Some(c),
            other => panic!(
                "`{name}`: expected connected, got {other:?}\ngateway log:\n{}",
                std::fs::read_to_string(self.dir.with_extension("stderr")).unwrap_or_default()
            ),
        }
        agent
    }

    /// Expects `key` to be refused with `AUTH_FAILED`.
    fn refused(&self, key: &str, name: &str) {
        let mut agent = self.open();
        match agent.auth(key, name) {
            Inbound::Error(e) if e.code == ErrorCode::AuthFailed => {}
            other => panic!("`{name}`: expected AUTH_FAILED, got {other:?}"),
        }
        agent.expect_closed();
    }
}

/// Runs the CLI on `dir`; panics unless it succeeds.
fn cli(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN).arg("--data-dir").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `keys create --json` (or `keys rotate --json`); returns (id, plaintext).
fn new_key(dir: &Path, args: &[&str]) -> (String, String) {
    let out = cli(dir, &[args, &["--json"]].concat());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc = &doc["data"];
    (doc["id"].as_str().unwrap().to_owned(), doc["apiKey"].as_str().unwrap().to_owned())
}

/// `keys list --json`: the state of the key with this id.
fn state(dir: &Path, id: &str) -> String {
    let out = cli(dir, &["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = list["data"]["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).expect("key listed");
    key["state"].as_str().unwrap().to_owned()
}

/// The harness's sequence (issue 12): `serve` on a new data dir, a key created by the CLI,
/// its agent connected and talking, then a second key created by the CLI: the second agent is
/// accepted (it was reported refused with `AUTH_FAILED` although `keys list` showed the key
/// active). Then both are rotated and the old key of one revoked, all by the CLI.
#[test]
fn keys_created_and_rotated_by_the_cli_are_accepted_by_a_serving_gateway() {
    let _w = watchdog("cli-keys-create");
    let dir = temp_dir();
    let gw = Served::start(&dir, true);

    let (_, key_a) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "A"]);
    let mut a = gw.connect(&key_a, "A");
    a.heartbeat(0);
    a.expect_silence(std::time::Duration::from_millis(200));

    let (id_b, key_b) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "B"]);
    assert_eq!(state(&dir, &id_b), "active");
    let mut b = gw.connect(&key_b, "B");
    b.heartbeat(0);
    a.heartbeat(0);
    b.expect_silence(std::time::Duration::from_millis(200));

    // A third tenant's key, while both sessions are live.
    let (_, key_c) = new_key(&dir, &["keys", "create", "--tenant", "other", "--name", "C"]);
    gw.connect(&key_c, "C").close();

    // Rotation by the CLI: the new key works at once, the old one through its grace period.
    let (_, key_b2) = new_key(&dir, &["keys", "rotate", "B"]);
    assert_eq!(state(&dir, &id_b), "expiring");
    b.close();
    gw.connect(&key_b2, "B").close();
    gw.connect(&key_b, "B").close();
    // The old key revoked (through the admin API): refused, the new one still good.
    cli(&dir, &["keys", "revoke", &id_b]);
    gw.refused(&key_b, "B");
    gw.connect(&key_b2, "B").close();
    a.close();
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("stderr"));
}

/// `keys revoke` while serving: through the admin API the session is kicked at once
/// (`AUTH_FAILED`, then close) and the key refused from then on.
#[test]
fn a_key_revoked_by_the_cli_disconnects_its_agent_at_once() {
    let _w = watchdog("cli-keys-revoke");
    let dir = temp_dir();
    let gw = Served::start(&dir, true);
    let (_, key_a) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "A"]);
    let (id_b, key_b) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "B"]);
    let mut a = gw.connect(&key_a, "A");
    let mut b = gw.connect(&key_b, "B");
    b.heartbeat(0);

    let out = cli(&dir, &["keys", "revoke", "B"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("revoked {id_b}"));
    // No heartbeat needed: the kick comes by itself.
    let message = b.expect_error(ErrorCode::AuthFailed);
    assert!(message.contains("revoked"), "{message}");
    b.expect_closed();
    assert_eq!(state(&dir, &id_b), "revoked");
    gw.refused(&key_b, "B");
    // The other agent is untouched.
    a.heartbeat(0);
    a.expect_silence(std::time::Duration::from_millis(200));
    a.close();
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("stderr"));
}

/// `keys revoke` when the gateway cannot be told (no admin API): the CLI writes the database
/// itself; the serving gateway refuses the key on the next `auth` and ends the live session at
/// its next heartbeat (docs/PROTOCOL.md §3). Keys created meanwhile are accepted.
#[test]
fn a_key_revoked_in_the_database_is_refused_and_kicked_at_the_next_heartbeat() {
    let _w = watchdog("cli-keys-revoke-db");
    let dir = temp_dir();
    let gw = Served::start(&dir, false);
    let (_, key_a) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "A"]);
    let mut a = gw.connect(&key_a, "A");
    a.heartbeat(0);
    a.expect_silence(std::time::Duration::from_millis(200));
    let (_, key_b) = new_key(&dir, &["keys", "create", "--tenant", "bench", "--name", "B"]);
    let mut b = gw.connect(&key_b, "B");
    b.heartbeat(0);
    b.expect_silence(std::time::Duration::from_millis(200));

    let out = cli(&dir, &["keys", "revoke", "B"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("revoked key_"));
    gw.refused(&key_b, "B");
    b.heartbeat(0);
    let message = b.expect_error(ErrorCode::AuthFailed);
    assert!(message.contains("revoked"), "{message}");
    b.expect_closed();
    a.heartbeat(0);
    a.expect_silence(std::time::Duration::from_millis(200));
    a.close();
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("stderr"));
}
