//! Cluster mode pieces against a real `redis-server` (the whole cluster, with the agent, three
//! nodes and haproxy, is `tests/e2e_cluster.rs` at the workspace root): the API keys in Redis,
//! one node id per live node, a decommission forwarded to the node holding the agent, and a
//! clear error when Redis cannot be reached.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayError, KeyState, KeyStore};

use crate::common::{config, temp_dir};

/// `redis-server` on a free loopback port, killed on drop; `None` (skip) when it is not
/// installed, a failure when `MC_REQUIRE_NET_TOOLS=1` (CI installs it with scripts/net-tools.sh).
struct Redis(Child, String);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<Redis> {
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("redis-server")).find(|p| p.is_file()));
    let Some(bin) = found else {
        assert!(
            std::env::var("MC_REQUIRE_NET_TOOLS").as_deref() != Ok("1"),
            "MC_REQUIRE_NET_TOOLS=1 but redis-server is not on PATH: run scripts/net-tools.sh"
        );
        eprintln!("skipping: redis-server not on PATH");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Redis(child, format!("redis://127.0.0.1:{port}")))
}

#[test]
fn keys_in_redis_are_shared_hashed_rotated_and_revoked() {
    let Some(redis) = redis() else { return };
    let one = KeyStore::open_redis(&redis.1).unwrap();
    let two = KeyStore::open_redis(&redis.1).unwrap();
    let (id, key) = one.create("acme", "Warehouse").unwrap();
    // Another node's store sees it at once.
    assert_eq!(two.authenticate(&key).unwrap().unwrap().id, id);
    assert!(two.has_connector("Warehouse").unwrap());
    assert!(!two.has_connector("Nope").unwrap());
    assert!(matches!(two.create("acme", "Warehouse"), Err(GatewayError::KeyConflict(_))));
    assert!(matches!(two.create("other", "Warehouse"), Err(GatewayError::KeyConflict(_))));
    let (id2, key2) = two.rotate("Warehouse").unwrap();
    assert!(one.authenticate(&key).unwrap().is_some(), "the old key works during the grace period");
    assert_eq!(one.authenticate(&key2).unwrap().unwrap().id, id2);
    let list = one.list().unwrap();
    assert_eq!(list.iter().map(|k| k.state).collect::<Vec<_>>(), [KeyState::Expiring, KeyState::Active]);
    assert_eq!(one.revoke("Warehouse").unwrap().len(), 2);
    assert!(two.authenticate(&key).unwrap().is_none());
    assert!(two.authenticate(&key2).unwrap().is_none());
    assert!(!two.is_usable(&id2).unwrap());
    assert!(matches!(two.revoke("nope"), Err(GatewayError::KeyNotFound(_))));
    // Never the plaintext: Redis holds a salted hash and the mask only.
    let dump = Command::new("redis-cli")
        .args(["-u", &redis.1, "--no-raw", "HGETALL", "mc:keys"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !dump.is_empty() {
        assert!(!dump.contains(key.expose()) && !dump.contains(key2.expose()), "a plaintext key is in Redis");
        assert!(dump.contains(&key.masked()));
    }
}

#[test]
fn a_node_id_is_taken_while_its_node_lives_and_redis_down_is_a_clear_error() {
    let Some(redis) = redis() else { return };
    let start = |id: &str| {
        let mut c = config(&temp_dir());
        c.redis_url = Some(redis.1.clone());
        c.node_id = Some(id.to_owned());
        Gateway::start(c)
    };
    let first = start("n1").unwrap();
    let started = Instant::now();
    match start("n1") {
        Err(GatewayError::Invalid(message)) => assert!(message.contains("in use"), "{message}"),
        other => panic!("a second live node n1 was not refused: {other:?}"),
    }
    // It waited out one beat's lifetime (a restarted node would have got its id back).
    assert!(started.elapsed() >= Duration::from_secs(3));
    first.shutdown();
    // Its id is free once it stopped.
    start("n1").unwrap().shutdown();
    let mut c = config(&temp_dir());
    c.redis_url = Some("redis://127.0.0.1:1".into());
    match Gateway::start(c) {
        Err(GatewayError::Redis(message)) => assert!(!message.is_empty()),
        other => panic!("an unreachable Redis was not a Redis error: {other:?}"),
    }
}

#[test]
fn the_cli_names_cluster_mistakes() {
    let bin = env!("CARGO_BIN_EXE_connector-gateway");
    let dir = temp_dir();
    let out =
        Command::new(bin).arg("--data-dir").arg(&dir).args(["serve", "--node-id", "a"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-id needs --redis"));
    let out = Command::new(bin)
        .args(["--redis", "redis://127.0.0.1:1", "keys", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "REDIS_UNAVAILABLE", "{doc}");
}

#[test]
fn with_redis_gone_an_agent_is_told_to_retry_not_that_its_key_is_bad() {
    let Some(mut redis) = redis() else { return };
    let gw = crate::common::start_with(|c| {
        c.redis_url = Some(redis.1.clone());
        c.node_id = Some("solo".into());
    });
    let key = gw.key("Depot");
    let mut agent = crate::common::FakeAgent::connect(&gw, &key, "Depot");
    agent.heartbeat(0);
    agent.close();
    let _ = redis.0.kill();
    let _ = redis.0.wait();
    let mut agent = crate::common::FakeAgent::open(&gw);
    match agent.auth(&key, "Depot") {
        protocol::Inbound::Error(e) => {
            assert_eq!(e.code, protocol::ErrorCode::InternalError, "{}", e.message);
            assert!(e.code.retryable());
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_decommission_on_one_node_reaches_the_agent_on_another() {
    let _w = crate::common::watchdog("cluster-decommission");
    let Some(redis) = redis() else { return };
    let node = |id: &str| {
        crate::common::start_with(|c| {
            c.redis_url = Some(redis.1.clone());
            c.node_id = Some(id.into());
            c.shutdown_grace = Duration::from_millis(300);
        })
    };
    let (a, b) = (node("a"), node("b"));
    let key = a.key("Depot");
    let mut agent = crate::common::FakeAgent::connect(&a, &key, "Depot");
    b.decommission("Depot").unwrap();
    match agent.recv() {
        protocol::Inbound::Shutdown(s) => {
            assert_eq!(s.mode, protocol::ShutdownMode::Decommission);
            assert_eq!(s.grace_period, 300, "the grace of the node that asked");
        }
        other => panic!("expected shutdown, got {other:?}"),
    }
    // The holder closes the session after the grace; then nobody holds it, on either node.
    agent.expect_closed();
    a.wait_disconnected("Depot");
    let deadline = Instant::now() + crate::common::WAIT;
    while !matches!(b.decommission("Depot"), Err(GatewayError::ConnectorOffline(_))) {
        assert!(Instant::now() < deadline, "node b still sees a holder of Depot");
        std::thread::sleep(Duration::from_millis(20));
    }
}
