//! The HTTPS fallback: behind a real proxy (mitmproxy) that refuses WebSocket upgrades, the
//! agent falls back to the HTTPS long-poll transport, says so in `status`, and queries complete
//! (inline and chunked) with nothing lost or doubled across cuts of the proxy.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gateway::GatewayEvent;
use serde_json::json;

use crate::e2e_query::{big_query, request};
use crate::support::{AgentProc, TempDir, WATCHDOG, World, cli, net_tool};

/// The addon: any request asking for a WebSocket upgrade gets `403`, as a corporate policy would.
const BLOCK_WS: &str = r#"
from mitmproxy import http

def requestheaders(flow: http.HTTPFlow) -> None:
    if flow.request.headers.get("upgrade", "").lower() == "websocket":
        flow.response = http.Response.make(403, b"websocket blocked by policy")
"#;

/// Another policy: the connection is dropped after the upgrade request, without an answer.
const DROP_WS: &str = r#"
from mitmproxy import http

def requestheaders(flow: http.HTTPFlow) -> None:
    if flow.request.headers.get("upgrade", "").lower() == "websocket":
        flow.kill()
"#;

/// `mitmdump` in regular (forward proxy) mode, intercepting TLS, refusing WebSocket upgrades.
struct Mitm {
    exe: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Mitm {
    fn start(exe: PathBuf, dir: &Path) -> Self {
        Self::start_with(exe, dir, BLOCK_WS)
    }

    /// With `addon` as the policy script.
    fn start_with(exe: PathBuf, dir: &Path, addon: &str) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        std::fs::write(dir.join("block_ws.py"), addon).unwrap();
        let mut mitm = Self { exe, dir: dir.to_owned(), addr, child: None };
        mitm.spawn();
        mitm
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.exe)
            .args(["--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port"])
            .arg(self.addr.port().to_string())
            .arg("--ssl-insecure")
            .arg("--set")
            .arg(format!("confdir={}", self.dir.join("conf").display()))
            .arg("-s")
            .arg(self.dir.join("block_ws.py"))
            .stdout(std::fs::File::create(self.dir.join("mitm.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.join("mitm.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + WATCHDOG;
        while TcpStream::connect(self.addr).is_err() || !self.ca().exists() {
            assert!(Instant::now() < deadline, "mitmdump did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("conf").join("mitmproxy-ca-cert.pem")
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mitm.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("mitm.out")).unwrap_or_default()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent_behind(world: &World, mitm: &Mitm, name: &str, heartbeat_ms: u64) -> AgentProc {
    let events = world.gateway.subscribe();
    let key = world.key(name);
    let config = world.agent_config(
        name,
        key.expose(),
        json!({ "proxyUrl": mitm.url(), "caCertPath": mitm.ca(), "heartbeatIntervalMs": heartbeat_ms }),
    );
    let agent = AgentProc::start(&config);
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match events.recv_deadline(deadline) {
            Ok(GatewayEvent::AgentConnected { connector, .. }) if connector == name => return agent,
            Ok(_) => {}
            Err(_) => panic!("the agent did not connect:\n{}\nmitmdump:\n{}", agent.log_text(), mitm.log()),
        }
    }
}

fn status(agent: &AgentProc) -> serde_json::Value {
    let (code, out, err) = cli(&["status", "--json", "--config", agent.config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    crate::support::json_answer(&out)
}

#[test]
fn a_proxy_that_refuses_websocket_upgrades_gets_the_https_fallback() {
    let Some(exe) = net_tool("mitmdump") else { return };
    let world = World::new("fallback");
    let scratch = TempDir::new("mitm");
    let mitm = Mitm::start(exe, &scratch.0);
    let agent = agent_behind(&world, &mitm, "Fallback", 30_000);

    agent.wait_log("falling back to HTTPS long-poll");
    let log = agent.log_text();
    assert!(log.contains("HTTP 403"), "the refusal is named:\n{log}");
    let status = status(&agent);
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["transport"], "https-long-poll", "{status}");
    let (_, text, _) = cli(&["status", "--config", agent.config.to_str().unwrap()]);
    assert!(text.contains("HTTPS fallback"), "{text}");

    // An inline result and a chunked one.
    let outcome = world.gateway.query("Fallback", request("SELECT 1 AS one")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(1)]]);
    let outcome = world.gateway.query("Fallback", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert_eq!(outcome.rows.len(), 60_000);
    assert_eq!(outcome.rows[59_999], vec![json!(60_000), json!("row-60000")]);
    assert!(mitm.log().is_empty() || !mitm.log().contains("Traceback"), "{}", mitm.log());
}

#[test]
fn commands_over_long_poll_are_answered_once_across_proxy_restarts() {
    let Some(exe) = net_tool("mitmdump") else { return };
    let world = World::new("fallback-cuts");
    let scratch = TempDir::new("mitm-cuts");
    let mut mitm = Mitm::start(exe, &scratch.0);
    // Short heartbeats: a cut is noticed within seconds.
    let agent = agent_behind(&world, &mitm, "Cut", 2_000);
    agent.wait_log("falling back to HTTPS long-poll");

    let events = world.gateway.subscribe();
    let total = 40u64;
    let mut pending = Vec::new();
    for i in 0..total {
        let mut req = request(&format!("SELECT {i} AS n"));
        req.idempotency_key = Some(format!("cut-{i}"));
        req.wait = Duration::from_secs(120);
        pending.push(world.gateway.submit("Cut", req).unwrap());
        if i % 10 == 5 {
            // Cut every long-poll connection mid-way, then bring the proxy back on the same port.
            mitm.kill();
            std::thread::sleep(Duration::from_millis(300));
            mitm.spawn();
        }
    }
    // Lost: a command without an answer; doubled: a command id answering two keys, or an
    // answer carrying another command's rows (as tests/e2e_faults.rs counts them).
    let mut answers = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, p) in pending.into_iter().enumerate() {
        let outcome = p.wait().unwrap_or_else(|e| panic!("command {i}: {e:?}\n{}", agent.log_text()));
        ids.insert(outcome.command_id.clone());
        answers.push(outcome.rows[0][0].as_u64().unwrap());
    }
    let expected: Vec<u64> = (0..total).collect();
    let lost = 0; // every wait above returned an answer (or the test failed there)
    let doubled = total as usize - ids.len() + answers.iter().zip(&expected).filter(|(a, e)| a != e).count();

    // Result frames per command as the gateway received them (its `Frame` event follows the
    // answer, so wait until every command's is in).
    let mut received = std::collections::HashMap::<String, u32>::new();
    let mut sessions = 0;
    let deadline = Instant::now() + WATCHDOG;
    while received.len() < ids.len() {
        match events.recv_deadline(deadline) {
            Ok(GatewayEvent::Frame {
                frame: mini_connector::protocol::Outbound::ExecutionResult(result),
                ..
            }) => *received.entry(result.command_id.clone()).or_default() += 1,
            Ok(GatewayEvent::AgentConnected { .. }) => sessions += 1,
            Ok(_) => {}
            Err(_) => panic!("result frames missing: {received:?}"),
        }
    }
    let resent: u32 = received.values().map(|n| n.saturating_sub(1)).sum();
    eprintln!(
        "long-poll cuts: {total} commands, 4 proxy restarts, {sessions} new sessions, {lost} lost, \
         {doubled} doubled, {resent} result frames received twice"
    );
    assert_eq!(answers, expected, "every command answered with its own result");
    assert_eq!(doubled, 0);
    // Within one long-poll session a `send` retried after a cut is applied once, so a result
    // frame arrives twice only when the agent re-sends unacknowledged answers after a new
    // session (by design; the gateway keeps the first).
    if sessions == 0 {
        assert_eq!(resent, 0, "{received:?}");
    }
}

#[test]
fn a_proxy_that_drops_the_upgrade_request_gets_the_https_fallback_too() {
    let Some(exe) = net_tool("mitmdump") else { return };
    let world = World::new("fallback-drop");
    let scratch = TempDir::new("mitm-drop");
    let mitm = Mitm::start_with(exe, &scratch.0, DROP_WS);
    let agent = agent_behind(&world, &mitm, "Dropped", 30_000);
    agent.wait_log("falling back to HTTPS long-poll");
    let log = agent.log_text();
    assert!(log.contains("closed after the upgrade request"), "{log}");
    assert_eq!(status(&agent)["transport"], "https-long-poll");
    let outcome = world.gateway.query("Dropped", request("SELECT 2 AS two")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(2)]]);
}

#[test]
fn without_a_blocking_proxy_the_websocket_is_used() {
    let world = World::new("fallback-none");
    let agent = crate::support::connected_agent(&world, "Direct", json!({}));
    assert_eq!(status(&agent)["transport"], "websocket");
    assert!(!agent.log_text().contains("long-poll"), "{}", agent.log_text());
}
