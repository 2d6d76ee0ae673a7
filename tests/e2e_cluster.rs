//! The gateway as a cluster (issue 14): a real `redis-server`, three `connector-gateway serve
//! --redis` processes on loopback behind a real haproxy (TCP), and the real agent binary dialing
//! the balancer, its database a real PostgreSQL whose statement log counts every execution.
//!
//! One test walks the whole story, so the cluster is started once: a query submitted on a node
//! other than the agent's reaches it; a second agent with the same key on another node gets
//! `DUPLICATE_CONNECTION`; the agent's node is killed with `kill -9` while commands wait and the
//! agent reconnects through the balancer to another node, where they complete, each run exactly
//! once; commands queued while the agent is offline survive a node restart; a key revoked on any
//! node disconnects the agent within a second.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::AdminClient;
use serde_json::{Value, json};

use crate::e2e_faults::{GatewayProc, PgLog, agent_extra, gateway_bin, pg_urls, run_id, wait_until};
use crate::support::{AgentProc, TempDir, WATCHDOG, net_tool};

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str) {
    wait_until(WATCHDOG, what, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// `redis-server` on a free loopback port, no persistence (the cluster's state is what the
/// nodes put there; Redis durability is its own deployment's business).
fn start_redis(bin: &Path, dir: &Path) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "redis-server listening");
    (proc, format!("redis://127.0.0.1:{port}"))
}

/// haproxy in TCP mode in front of the nodes, with health checks every 200 ms.
fn start_haproxy(bin: &Path, dir: &Path, nodes: &[u16]) -> (Proc, u16) {
    let port = free_port();
    let mut cfg = format!(
        "global\n  maxconn 512\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10m\n  timeout server 10m\n\
         frontend agents\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n  option redispatch\n  retries 3\n"
    );
    for (i, node) in nodes.iter().enumerate() {
        cfg.push_str(&format!("  server n{i} 127.0.0.1:{node} check inter 200ms fall 1 rise 1\n"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let check = Command::new(bin).arg("-c").arg("-f").arg(&path).output().unwrap();
    assert!(check.status.success(), "haproxy config: {}", String::from_utf8_lossy(&check.stderr));
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "haproxy listening");
    (proc, port)
}

struct Node {
    id: String,
    dir: PathBuf,
    port: u16,
    proc: GatewayProc,
}

fn node_args(redis: &str, id: &str, port: u16, tls: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "--redis".into(),
        redis.into(),
        "--node-id".into(),
        id.into(),
        // Each node names itself for uploads: they are reassembled where the session is.
        "--upload-url".into(),
        format!("https://127.0.0.1:{port}/upload"),
        "--takeover-probe-ms".into(),
        "1000".into(),
    ];
    if let Some(tls) = tls {
        // One certificate for the cluster's name, as behind a real balancer.
        args.extend(["--cert".into(), tls.join("cert.pem").display().to_string()]);
        args.extend(["--key".into(), tls.join("key.pem").display().to_string()]);
    }
    args
}

impl Node {
    fn start(root: &Path, redis: &str, id: &str, port: u16, tls: Option<&Path>) -> Self {
        let dir = root.join(id);
        let proc = GatewayProc::start_with(&dir, port, "6s", &node_args(redis, id, port, tls));
        Self { id: id.to_owned(), dir, port, proc }
    }

    fn restart(&mut self, redis: &str, tls: &Path) {
        self.proc = GatewayProc::start_with(
            &self.dir,
            self.port,
            "6s",
            &node_args(redis, &self.id, self.port, Some(tls)),
        );
    }

    fn admin(&self) -> &AdminClient {
        &self.proc.admin
    }
}

fn home_index(nodes: &[Node], id: &str) -> usize {
    nodes.iter().position(|n| n.id == id).unwrap()
}

fn gateway_cli(redis: &str, args: &[&str]) -> Value {
    let out = Command::new(gateway_bin()).args(["--redis", redis]).args(args).output().unwrap();
    assert!(out.status.success(), "connector-gateway {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["data"].clone()
}

/// The node holding `name` as `connectors` on `admin` reports it.
fn holder(admin: &AdminClient, name: &str) -> Option<String> {
    let (status, list) = admin.call("GET", "/admin/connectors", None, Duration::from_secs(5)).ok()?;
    assert_eq!(status, 200, "{list}");
    let entry = list.as_array()?.iter().find(|c| c["name"] == json!(name))?.clone();
    entry["connected"].as_bool().filter(|c| *c)?;
    entry["node"].as_str().map(str::to_owned)
}

/// The agent's config; `nodes` are the gateway ports it may upload to (each node names itself).
fn agent_config(
    dir: &Path,
    name: &str,
    key: &str,
    cloud_url: &str,
    ca: &Path,
    pg: &str,
    nodes: &[u16],
) -> PathBuf {
    let agent_dir = dir.join(format!("agent-{name}-{}", run_id("")));
    std::fs::create_dir_all(&agent_dir).unwrap();
    let key_path = agent_dir.join("api-key");
    std::fs::write(&key_path, key).unwrap();
    let mut config = json!({
        "connectorName": name,
        "apiKeyRef": format!("file:{}", key_path.display()),
        "caCertPath": ca,
        "logLevel": "info",
        "logDir": agent_dir.join("logs"),
        "reconnectMaxMs": 1000,
        "uploadHosts": nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>(),
    });
    for (k, v) in agent_extra(&agent_dir, pg, cloud_url).as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = agent_dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn query(admin: &AdminClient, name: &str, sql: &str, key: &str) -> Value {
    let body = json!({ "connector": name, "sql": sql, "waitMs": 60_000, "idempotencyKey": key });
    let (status, answer) = admin.call("POST", "/admin/query", Some(&body), Duration::from_secs(70)).unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

fn submit(admin: &AdminClient, name: &str, sql: &str, key: &str) -> String {
    let body = json!({ "connector": name, "sql": sql, "ttlMs": 600_000, "idempotencyKey": key });
    let (status, answer) = admin.call("POST", "/admin/submit", Some(&body), WATCHDOG).unwrap();
    assert_eq!(status, 202, "{answer}");
    answer["commandId"].as_str().unwrap().to_owned()
}

/// Waits (on `admin`) until the command is answered; returns its outcome's rows.
fn answered_rows(admin: &AdminClient, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let path = format!("/admin/commands/{id}?waitMs=5000");
        if let Ok((200, doc)) = admin.call("GET", &path, None, Duration::from_secs(15))
            && doc["state"] == json!("answered")
        {
            assert!(doc.get("error").is_none(), "{doc}");
            return doc["outcome"]["rows"].clone();
        }
        assert!(Instant::now() < deadline, "command {id} not answered");
    }
}

#[test]
fn a_cluster_of_three_nodes_routes_refuses_duplicates_survives_kill9_and_revokes() {
    let Some((logged, owner)) = pg_urls() else { return };
    let (Some(redis_bin), Some(haproxy_bin)) = (net_tool("redis-server"), net_tool("haproxy")) else {
        return;
    };
    let dir = TempDir::new("cluster");
    let (_redis, redis) = start_redis(&redis_bin, &dir.0);
    let ports = [free_port(), free_port(), free_port()];
    let a = Node::start(&dir.0, &redis, "a", ports[0], None);
    let tls = a.dir.join("tls");
    let b = Node::start(&dir.0, &redis, "b", ports[1], Some(&tls));
    let c = Node::start(&dir.0, &redis, "c", ports[2], Some(&tls));
    let mut nodes = vec![a, b, c];
    let (_haproxy, lb) = start_haproxy(&haproxy_bin, &dir.0, &ports);
    let key = gateway_cli(&redis, &["keys", "create", "--tenant", "acme", "--name", "Plant", "--json"]);
    let key = key["apiKey"].as_str().unwrap().to_owned();
    let ca = tls.join("cert.pem");
    let mut pg = PgLog::open(&owner);
    let run = run_id("mcc");

    // 1. Through the balancer to some node; a query submitted on another node reaches it.
    let config =
        agent_config(&dir.0, "Plant", &key, &format!("wss://127.0.0.1:{lb}/ws"), &ca, &logged, &ports);
    let mut agent = AgentProc::start(&config);
    let mut home = String::new();
    wait_until(WATCHDOG, "the agent registered in the cluster", || {
        holder(nodes[0].admin(), "Plant").map(|h| home = h).is_some()
    });
    let other = nodes.iter().position(|n| n.id != home).unwrap();
    let answer = query(
        nodes[other].admin(),
        "Plant",
        &format!("SELECT '{run}-1' AS tag, 41 + 1 AS n"),
        &format!("{run}-1"),
    );
    assert_eq!(answer["rows"], json!([[format!("{run}-1"), 42]]), "{answer}");
    // A result too large to travel inline is uploaded in chunks to the agent's node, and
    // served to the caller on the other node through Redis (its stream in parts).
    let big = format!(
        "SELECT '{run}-big' AS tag, g AS n, repeat('x', 240) AS pad FROM generate_series(1, 5000) AS g"
    );
    let answer = query(nodes[other].admin(), "Plant", &big, &format!("{run}-big"));
    assert!(
        answer["buffered"]["chunkCount"].as_u64().unwrap_or(0) >= 1,
        "not chunked: {}",
        answer["buffered"]
    );
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999], json!([format!("{run}-big"), 5000, "x".repeat(240)]));
    // Handed to its caller, the outcome is released (§7.2): its parts leave Redis, and only the
    // fact that it was answered stays.
    let big_id = answer["commandId"].as_str().unwrap();
    let (_, status) = nodes[home_index(&nodes, &home)]
        .admin()
        .call("GET", &format!("/admin/commands/{big_id}"), None, WATCHDOG)
        .unwrap();
    assert_eq!(status["state"], json!("answered"), "{status}");
    assert_eq!(status["error"]["code"], json!("RESULT_UNAVAILABLE"), "{status}");
    let cli = redis_bin.with_file_name("redis-cli");
    let parts = Command::new(&cli)
        .args(["-u", &redis, "--scan", "--pattern", &format!("mc:res:{big_id}:*")])
        .output()
        .unwrap();
    assert!(
        parts.status.success() && parts.stdout.is_empty(),
        "parts left in Redis: {}",
        String::from_utf8_lossy(&parts.stdout)
    );
    // The schema it broadcast (metadata) is visible on every node.
    wait_until(WATCHDOG, "the schema broadcast visible on another node", || {
        let (_, list) =
            nodes[other].admin().call("GET", "/admin/connectors", None, Duration::from_secs(5)).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == json!("Plant") && c["schema"].as_array().is_some_and(|s| !s.is_empty()))
    });
    // Every node sees where it is.
    for node in &nodes {
        assert_eq!(
            holder(node.admin(), "Plant").as_deref(),
            Some(home.as_str()),
            "as node {} sees it",
            node.id
        );
    }

    // 2. A second agent (another instance) with the same key, dialing a third node directly:
    // the first one's session answers the forwarded ping, so it is refused.
    let third = nodes.iter().position(|n| n.id != home && n.id != nodes[other].id).unwrap();
    let twin_config = agent_config(
        &dir.0,
        "Plant",
        &key,
        &format!("wss://127.0.0.1:{}/ws", nodes[third].port),
        &ca,
        &logged,
        &ports,
    );
    let mut twin = AgentProc::start(&twin_config);
    twin.wait_log("DUPLICATE_CONNECTION");
    twin.child.kill().unwrap();
    twin.child.wait().unwrap();
    assert_eq!(
        holder(nodes[other].admin(), "Plant").as_deref(),
        Some(home.as_str()),
        "the first session kept its place"
    );

    // 3. kill -9 of the agent's node while commands wait for it: they were submitted on the
    // surviving nodes, so the agent, reconnecting through the balancer, gets them elsewhere.
    // Some commands are running on the agent when its node dies: their answers cannot reach
    // it, and go to the next node on the agent's next session (re-sent, not re-run).
    let home_index = nodes.iter().position(|n| n.id == home).unwrap();
    let mut running = Vec::new();
    for n in 0..3 {
        // About a second of work on the server.
        let sql =
            format!("SELECT '{run}-r{n}' AS tag, {n} AS n, count(*) AS c FROM generate_series(1, 5000000) g");
        running.push((other, n, submit(nodes[other].admin(), "Plant", &sql, &format!("{run}-r{n}"))));
    }
    wait_until(WATCHDOG, "a slow command running on the agent", || {
        !pg.running(&format!("{run}-r")).is_empty()
    });
    nodes[home_index].proc.kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != home_index).collect();
    let mut ids = Vec::new();
    for n in 0..6 {
        let admin = nodes[survivors[n % 2]].admin();
        ids.push((
            survivors[n % 2],
            n,
            submit(admin, "Plant", &format!("SELECT '{run}-k{n}' AS tag, {n} AS n"), &format!("{run}-k{n}")),
        ));
    }
    let mut new_home = String::new();
    wait_until(Duration::from_secs(60), "the agent reconnected to a surviving node", || {
        holder(nodes[survivors[0]].admin(), "Plant").filter(|h| *h != home).map(|h| new_home = h).is_some()
    });
    for (node, n, id) in &ids {
        let rows = answered_rows(nodes[*node].admin(), id);
        assert_eq!(rows, json!([[format!("{run}-k{n}"), n]]));
    }
    for (node, n, id) in &running {
        let rows = answered_rows(nodes[*node].admin(), id);
        assert_eq!(rows, json!([[format!("{run}-r{n}"), n, 5_000_000]]));
    }

    // 4. The agent offline: commands wait in Redis, survive a restart of the node they were
    // submitted on, and are delivered when the agent comes back (to whichever node).
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let origin = survivors[0];
    wait_until(Duration::from_secs(30), "the agent's session ended", || {
        holder(nodes[origin].admin(), "Plant").is_none()
    });
    let mut queued = Vec::new();
    for n in 0..3 {
        queued.push((
            n,
            submit(
                nodes[origin].admin(),
                "Plant",
                &format!("SELECT '{run}-q{n}' AS tag, {n} AS n"),
                &format!("{run}-q{n}"),
            ),
        ));
    }
    nodes[origin].proc.kill9();
    nodes[origin].restart(&redis, &tls);
    nodes[home_index].restart(&redis, &tls);
    let agent_again = AgentProc::start(&config);
    for (n, id) in &queued {
        let rows = answered_rows(nodes[origin].admin(), id);
        assert_eq!(rows, json!([[format!("{run}-q{n}"), n]]));
    }

    // Nothing ran twice, nothing was lost.
    let executions = pg.executions(&run);
    let mut expected: Vec<String> = vec![format!("{run}-1"), format!("{run}-big")];
    expected.extend((0..6).map(|n| format!("{run}-k{n}")));
    expected.extend((0..3).map(|n| format!("{run}-r{n}")));
    expected.extend((0..3).map(|n| format!("{run}-q{n}")));
    for tag in &expected {
        assert_eq!(
            executions.get(tag),
            Some(&1),
            "{tag} ran {:?} times: {executions:?}",
            executions.get(tag)
        );
    }

    // 5. Revoked through one node: the agent is disconnected by its own node within a second.
    let mut at = String::new();
    wait_until(WATCHDOG, "the agent connected again", || {
        holder(nodes[0].admin(), "Plant").map(|h| at = h).is_some()
    });
    let revoker = nodes.iter().position(|n| n.id != at).unwrap();
    let holder_index = nodes.iter().position(|n| n.id == at).unwrap();
    let started = Instant::now();
    let (status, answer) = nodes[revoker]
        .admin()
        .call("POST", "/admin/keys/revoke", Some(&json!({ "key": "Plant" })), WATCHDOG)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    wait_until(Duration::from_secs(5), "the revoked agent disconnected", || {
        holder(nodes[holder_index].admin(), "Plant").is_none()
    });
    let took = started.elapsed();
    eprintln!("revoke on node {} → agent on node {at} disconnected after {took:?}", nodes[revoker].id);
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    agent_again.wait_log("AUTH_FAILED");
}

#[test]
fn without_a_balancer_the_agents_url_list_fails_over_to_another_node() {
    let Some((logged, owner)) = pg_urls() else { return };
    let Some(redis_bin) = net_tool("redis-server") else { return };
    let dir = TempDir::new("cluster-urls");
    let (_redis, redis) = start_redis(&redis_bin, &dir.0);
    let ports = [free_port(), free_port()];
    let mut a = Node::start(&dir.0, &redis, "a", ports[0], None);
    let tls = a.dir.join("tls");
    let b = Node::start(&dir.0, &redis, "b", ports[1], Some(&tls));
    let key = gateway_cli(&redis, &["keys", "create", "--tenant", "acme", "--name", "Mill", "--json"]);
    let key = key["apiKey"].as_str().unwrap().to_owned();
    let mut pg = PgLog::open(&owner);
    let run = run_id("mcu");
    let config = agent_config(
        &dir.0,
        "Mill",
        &key,
        &format!("wss://127.0.0.1:{}/ws", ports[0]),
        &tls.join("cert.pem"),
        &logged,
        &ports,
    );
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    doc["cloudUrlFallbacks"] = json!([format!("wss://127.0.0.1:{}/ws", ports[1])]);
    std::fs::write(&config, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let _agent = AgentProc::start(&config);
    wait_until(WATCHDOG, "the agent on node a", || holder(b.admin(), "Mill").as_deref() == Some("a"));
    // Node a dies with a command waiting for the agent; node b took it.
    a.proc.kill9();
    let id = submit(b.admin(), "Mill", &format!("SELECT '{run}-1' AS tag, 7 AS n"), &format!("{run}-1"));
    wait_until(Duration::from_secs(30), "the agent on node b", || {
        holder(b.admin(), "Mill").as_deref() == Some("b")
    });
    assert_eq!(answered_rows(b.admin(), &id), json!([[format!("{run}-1"), 7]]));
    assert_eq!(pg.executions(&run).get(&format!("{run}-1")), Some(&1));
}
