//! Several gateway URLs (`cloudUrlFallbacks`, issue 14): the agent binary against real
//! gateways (in process, TLS 1.3 on loopback) and the sample SQLite ERP.
//!
//! - `cloudUrl` names a port nothing listens on: the agent moves on to the fallback, and both an
//!   inline and an uploaded result (the upload goes to the fallback's host and port) come back.
//! - Two gateways sharing one certificate and one API key: the agent is on A, A shuts down, the
//!   agent is on B within a few seconds and runs the command B queued meanwhile exactly once
//!   (the agent's audit log); then B goes and A is back on its old address: the agent goes round
//!   to `cloudUrl` again.
//!
//! The gateways share the key the way a cluster shares its key store: the test copies A's key
//! rows into B's `gateway.db` before B starts (the reference gateway has no import API; the
//! rows are its own, created by `KeyStore::create`).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayEvent};
use serde_json::json;

use crate::e2e_query::{big_query, request};
use crate::support::{AgentProc, TempDir, World, cli, connected_agent, json_answer, wait_event};

/// A loopback address nothing listens on (bound, then released): a dial is refused at once.
fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until `connector` has a session on the gateway whose events `events` are.
fn wait_connected(events: &crossbeam_channel::Receiver<GatewayEvent>, connector: &str) {
    wait_event(events, |e| match e {
        GatewayEvent::AgentConnected { connector: c, .. } if c == connector => Some(()),
        _ => None,
    });
}

/// The audit records of the agent whose configuration is `config`, for `command_id`, by event.
fn audit_events(config: &Path, command_id: &str) -> Vec<String> {
    let (code, out, err) = cli(&["audit", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let doc = json_answer(&out);
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["commandId"] == command_id)
        .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Copies every key row of the gateway data dir `from` into the one of `to` (not started yet).
fn share_keys(from: &Path, to: &Path) {
    // The gateway's own code creates `to`'s database and table.
    drop(gateway::KeyStore::open(to).unwrap());
    let db = rusqlite::Connection::open(to.join("gateway.db")).unwrap();
    db.execute("ATTACH DATABASE ?1 AS source", [from.join("gateway.db").to_str().unwrap()]).unwrap();
    let copied = db.execute("INSERT INTO api_keys SELECT * FROM source.api_keys", []).unwrap();
    assert!(copied >= 1, "no key to share");
}

#[test]
fn a_dead_cloud_url_fails_over_to_the_fallback() {
    let world = World::new("failover-dead");
    let dead_addr = dead_addr();
    let dead = format!("wss://{dead_addr}/ws");
    let started = Instant::now();
    let agent = connected_agent(
        &world,
        "Fallback",
        json!({ "cloudUrl": dead, "cloudUrlFallbacks": [world.gateway.ws_url()] }),
    );
    // One refused dial, one hop of at most 100 ms: no growing backoff in between.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "connected only after {took:?}");
    // The link logs the session right after it sends `connected` on (the gateway's event may
    // come first).
    agent.wait_log("session on gateway 2 of 2");
    let log = agent.log_text();
    assert!(log.contains("dialling gateway 2 of 2"), "{log}");
    assert!(
        log.contains(&format!("(gateway wss://{dead_addr})")),
        "the failed dial names its gateway:\n{log}"
    );

    let outcome = world.gateway.query("Fallback", request("SELECT 1 AS one")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(1)]]);
    // The fallback's upload URL (its own host and port) is accepted.
    let outcome = world.gateway.query("Fallback", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert!(outcome.buffered.as_ref().is_some_and(|b| b.chunk_count >= 1), "the result was uploaded");

    // `status` still names the configured cloudUrl, and the gateway the session is on.
    let (code, out, err) = cli(&["status", "--json", "--config", agent.config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let status = json_answer(&out);
    assert_eq!(status["cloudUrl"], dead.as_str());
    assert_eq!(status["connected"], true);
    let fallback_origin = world.gateway.ws_url().trim_end_matches("/ws").to_owned();
    assert_eq!(status["gatewayUrl"], fallback_origin.as_str(), "{status}");
}

#[test]
fn when_its_gateway_stops_the_agent_moves_to_the_next_one_and_round_again() {
    let dir = TempDir::new("failover-ab");
    let (a_dir, b_dir) = (dir.0.join("gateway-a"), dir.0.join("gateway-b"));
    let start = |data_dir: &Path, listen: Option<SocketAddr>, cert: Option<(&Path, &Path)>| {
        let mut config = GatewayConfig::new(data_dir);
        if let Some(addr) = listen {
            config.listen = addr;
        }
        config.cert = cert.map(|(c, k)| (c.to_owned(), k.to_owned()));
        config.shutdown_grace = Duration::from_millis(500);
        Gateway::start(config).unwrap()
    };
    let a = start(&a_dir, None, None);
    let a_addr = a.local_addr();
    let key = a.keys().create("acme", "Cluster").unwrap().1;
    // B: its own data dir, A's certificate (one CA for the cluster) and A's key rows.
    let (cert, tls_key) = (a_dir.join("tls").join("cert.pem"), a_dir.join("tls").join("key.pem"));
    share_keys(&a_dir, &b_dir);
    let b = start(&b_dir, None, Some((&cert, &tls_key)));
    assert_eq!(b.ca_cert_path(), a.ca_cert_path());

    let world = World { dir, gateway: a };
    let a_events = world.gateway.subscribe();
    let b_events = b.subscribe();
    let config = world.agent_config("Cluster", key.expose(), json!({ "cloudUrlFallbacks": [b.ws_url()] }));
    let World { dir, gateway: a } = world;
    let agent = AgentProc::start(&config);
    wait_connected(&a_events, "Cluster");
    let outcome = a.query("Cluster", request("SELECT 'on A' AS node")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!("on A")]]);

    // A command that only B knows about, queued while the agent is on A.
    let mut on_b = request("SELECT 'on B' AS node");
    on_b.wait = Duration::from_secs(30);
    on_b.idempotency_key = Some("failover-on-b".into());
    let pending = b.submit("Cluster", on_b).unwrap();

    // A goes away: it tells the agent it restarts; the agent's next dial goes to B.
    let stopped = Instant::now();
    a.shutdown();
    wait_connected(&b_events, "Cluster");
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(10), "on B only {took:?} after A began to stop");
    let outcome = pending.wait().unwrap();
    assert_eq!(outcome.rows, vec![vec![json!("on B")]]);
    // An uploaded result goes to B's host and port (a cloudUrlFallbacks entry).
    let big = b.query("Cluster", big_query()).unwrap();
    assert_eq!(big.row_count, 60_000);
    assert!(big.buffered.is_some_and(|b| b.chunk_count >= 1), "the result was uploaded to B");
    let events = audit_events(&config, &outcome.command_id);
    let count = |event: &str| events.iter().filter(|e| *e == event).count();
    assert_eq!((count("started"), count("executed")), (1, 1), "ran exactly once: {events:?}");
    agent.wait_log("session on gateway 2 of 2");

    // A is back on its address, B goes: round-robin brings the agent back to cloudUrl.
    let a = start(&a_dir, Some(a_addr), None);
    let a_events = a.subscribe();
    b.shutdown();
    wait_connected(&a_events, "Cluster");
    let outcome = a.query("Cluster", request("SELECT 'on A again' AS node")).unwrap();
    assert_eq!(outcome.rows, vec![vec![json!("on A again")]]);
    agent.wait_log("session on gateway 1 of 2");
    drop(agent);
    a.shutdown();
    drop(dir);
}

/// What `config check` says about a bad `cloudUrlFallbacks`, and what `configure` does with
/// `--cloud-url-fallback` (repeatable, in order, "" clears).
#[test]
fn configure_sets_and_clears_the_fallbacks_and_refuses_bad_ones() {
    let sandbox = crate::cli_configure::Sandbox::new("failover-configure");
    sandbox.configure("wss://gw1.example.com/ws");
    let run = sandbox
        .run(
            &[
                "configure",
                "--cloud-url-fallback",
                "wss://gw2.example.com/ws",
                "--cloud-url-fallback",
                "wss://gw3.example.com:8443/ws",
                "--json",
            ],
            None,
        )
        .ok();
    let want = json!(["wss://gw2.example.com/ws", "wss://gw3.example.com:8443/ws"]);
    assert_eq!(run.json()["cloudUrlFallbacks"], want);
    assert_eq!(sandbox.config_json()["cloudUrlFallbacks"], want);
    let text = sandbox.run(&["configure", "--name", "Warehouse"], None).ok();
    assert!(text.stdout.contains("fallback:   wss://gw3.example.com:8443/ws"), "{text:?}");
    assert_eq!(sandbox.config_json()["cloudUrlFallbacks"], want, "other changes keep the list");

    // Refused, nothing written.
    for (bad, why) in [
        ("ws://gw4.example.com/ws", "must start with wss://"),
        ("wss://GW1.example.com:443/ws", "repeats cloudUrl"),
    ] {
        let run = sandbox.run(&["configure", "--cloud-url-fallback", bad], None);
        assert_eq!(run.code, Some(2), "{bad}: {run:?}");
        assert!(run.stderr.contains("cloudUrlFallbacks") && run.stderr.contains(why), "{bad}: {run:?}");
        assert_eq!(sandbox.config_json()["cloudUrlFallbacks"], want);
    }
    let mut file = sandbox.config_json();
    file["cloudUrlFallbacks"] = json!(["wss://gw2.example.com/ws", "https://gw5.example.com/ws"]);
    let bad_file = sandbox.path("bad.json");
    std::fs::write(&bad_file, file.to_string()).unwrap();
    let run = sandbox.run(&["config", "check", "--config", bad_file.to_str().unwrap()], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("`cloudUrlFallbacks`: entry 2 (https://gw5.example.com:443)"), "{run:?}");

    sandbox.run(&["configure", "--cloud-url-fallback", ""], None).ok();
    let saved = sandbox.config_json();
    assert!(saved.get("cloudUrlFallbacks").is_none(), "cleared: {saved}");
    assert_eq!(saved["cloudUrl"], "wss://gw1.example.com/ws");
}
