//! Crashes and restarts (issue 9): `kill -9` of the agent mid-query and mid-upload, `kill -9`
//! of the gateway mid-stream and with queued commands, gateway stop/start, a database down at
//! agent start, a queue over its cap.
//!
//! Real processes: the agent binary, the `connector-gateway` binary where the gateway must die
//! (in process otherwise), PostgreSQL, and the relay of `tests/relay.rs` (it also stands in
//! front of PostgreSQL as a "database server that is down": it refuses connections). Executions
//! on the database are counted from PostgreSQL's statement log (see `e2e_faults`).

use std::time::{Duration, Instant};

use gateway::{AdminClient, KeyStore, QueryError};
use serde_json::{Value, json};

use crate::e2e_faults::{
    GatewayProc, Load, PgLog, Rig, agent_alive, agent_extra, find_queue_db, finish_report, integrity,
    pg_connection, pg_urls, run_id, run_load, wait_until,
};
use crate::relay::Relay;
use crate::support::{AgentProc, TempDir, WATCHDOG, sample_erp};

/// A query that runs for minutes on PostgreSQL unless cancelled (3·10⁹ rows counted).
fn slow_sql(tag: &str) -> String {
    format!("SELECT '{tag}' AS tag, count(*) FROM generate_series(1, 3000000) a, generate_series(1, 1000) b")
}

/// Answers the gateway may give for a command whose run was cut short by a crash.
const REPORTED: &[&str] = &["COMMAND_INTERRUPTED", "COMMAND_EXPIRED", "QUERY_TIMEOUT", "COMMAND_CANCELLED"];

fn kill9(agent: &mut AgentProc) {
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
}

#[test]
fn agent_killed_mid_query_never_runs_it_twice_at_once_and_reports_it() {
    let Some((logged, owner)) = pg_urls() else { return };
    let rig = Rig::new("kill-mid-query", "Crashy");
    let mut log = PgLog::open(&owner);
    let config = rig.agent_config(&logged, json!({}));
    let mut agent = rig.start_agent(&config);
    let tag = run_id("mck");

    let mut req = gateway::QueryRequest::new(slow_sql(&tag));
    // Long enough to kill the agent mid-query; short enough that the run the restarted agent
    // resumes (after stopping the first one on the server) ends, with QUERY_TIMEOUT, well within
    // the wait.
    req.timeout_ms = Some(20_000);
    req.wait = Duration::from_secs(90);
    let pending = rig.gateway.submit("Crashy", req).unwrap();
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(pending.wait());
    });
    wait_until(WATCHDOG, "the slow query running on the server", || !log.running(&tag).is_empty());
    let first_pid = log.running(&tag)[0].0;
    kill9(&mut agent);
    // The server still runs it: nobody told it to stop (kill -9).
    assert_eq!(log.running(&tag).len(), 1, "the first run should outlive a kill -9 of its client");

    let queue = find_queue_db(&config).expect("the agent keeps a queue database next to its config");
    assert_eq!(integrity(&queue), "ok", "queue database after kill -9");

    let restarted = AgentProc::start(&config);
    // Until the command is settled, never two runs at once, and a second run only after the
    // first is gone from the server.
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        // At most one backend runs the tag: a second run (another pid) while the first still
        // runs would show two.
        let running = log.running(&tag);
        assert!(
            running.len() <= 1,
            "two runs of one command on the server at once (first pid {first_pid}): {running:?}"
        );
        if let Ok(answer) = done.try_recv() {
            break answer;
        }
        assert!(Instant::now() < deadline, "the interrupted command was never answered nor reported");
        std::thread::sleep(Duration::from_millis(50));
    };
    match &answer {
        Ok(o) => assert_eq!(o.row_count, 1),
        Err(QueryError::Remote(body)) => {
            assert!(
                REPORTED.contains(&body.code.as_str()),
                "unexpected code for an interrupted command: {body:?}"
            )
        }
        Err(e) => panic!("no coded answer: {e}"),
    }
    // Settled: nothing of it runs on the server any more.
    if answer.is_err() {
        wait_until(WATCHDOG, "the interrupted run gone from the server", || log.running(&tag).is_empty());
    }
    let runs = log.executions(&tag).get(&tag).copied().unwrap_or(0);
    assert!((1..=2).contains(&runs), "runs on the server: {runs}");
    assert!(agent_alive(&restarted));
    log.cancel_all(&tag);
    drop(restarted);
    assert_eq!(integrity(&queue), "ok");
}

#[test]
fn agent_killed_mid_upload_resumes_or_reports_every_command() {
    let Some((logged, owner)) = pg_urls() else { return };
    let rig = Rig::new("kill-mid-upload", "Uploader");
    let mut log = PgLog::open(&owner);
    let config = rig.agent_config(&logged, json!({}));
    let mut agent = rig.start_agent(&config);
    // Slow the link so an upload of ~13 MB takes a while.
    rig.relay.set_latency(Duration::from_millis(30));
    let tag = run_id("mcu");
    let sql =
        format!("SELECT '{tag}' AS tag, g, repeat('y', 240) AS pad FROM generate_series(1, 50000) AS g");
    let mut req = gateway::QueryRequest::new(sql);
    req.wait = Duration::from_secs(120);
    req.idempotency_key = Some(format!("key-{tag}"));
    let pending = rig.gateway.submit("Uploader", req).unwrap();
    // Mid-upload: the gateway holds part of the result.
    wait_until(WATCHDOG, "part of the upload at the gateway", || rig.gateway.buffered_bytes() > 0);
    kill9(&mut agent);
    let queue = find_queue_db(&config).expect("queue database");
    assert_eq!(integrity(&queue), "ok");
    rig.relay.set_latency(Duration::ZERO);
    let _restarted = AgentProc::start(&config);
    match pending.wait() {
        Ok(o) => {
            assert_eq!(o.row_count, 50_000);
            assert!(o.rows.iter().all(|r| r[0] == json!(tag)));
        }
        Err(QueryError::Remote(body)) => {
            assert!(
                REPORTED.contains(&body.code.as_str()) || body.code.as_str() == "RESULT_UNAVAILABLE",
                "{body:?}"
            )
        }
        Err(e) => panic!("the command was neither completed nor reported: {e}"),
    }
    let runs = log.executions(&tag).get(&tag).copied().unwrap_or(0);
    assert!(runs <= 2, "ran {runs} times");
}

/// A binary gateway on `dir` with a key for `name`; returns (gateway, key).
fn binary_gateway(dir: &std::path::Path, name: &str) -> (GatewayProc, String) {
    // The key first: a running gateway knows the connectors of the keys it loaded.
    std::fs::create_dir_all(dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let key = KeyStore::open(dir).unwrap().create("acme", name).unwrap().1.expose().to_owned();
    let gw = GatewayProc::start(dir, 0, "3s");
    (gw, key)
}

/// Agent config for a binary gateway behind `relay`.
fn config_for(
    dir: &std::path::Path,
    name: &str,
    key: &str,
    gw_dir: &std::path::Path,
    pg: &str,
    relay: &Relay,
) -> std::path::PathBuf {
    let agent_dir = dir.join(format!("agent-{name}"));
    std::fs::create_dir_all(&agent_dir).unwrap();
    let key_path = agent_dir.join("api-key");
    std::fs::write(&key_path, key).unwrap();
    let mut config = json!({
        "connectorName": name,
        "apiKeyRef": format!("file:{}", key_path.display()),
        "caCertPath": gw_dir.join("tls").join("cert.pem"),
        "logLevel": "info",
        "logDir": agent_dir.join("logs"),
    });
    for (k, v) in agent_extra(&agent_dir, pg, &relay.ws_url()).as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = agent_dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn connected(admin: &AdminClient, name: &str) -> bool {
    matches!(admin.call("GET", "/admin/connectors", None, Duration::from_secs(5)),
        Ok((200, Value::Array(list))) if list.iter().any(|c| c["name"] == json!(name) && c["connected"] == json!(true)))
}

#[test]
fn gateway_killed_with_queued_commands_delivers_them_after_restart() {
    let Some((logged, owner)) = pg_urls() else { return };
    let dir = TempDir::new("gw-kill-queued");
    let gw_dir = dir.0.join("gateway");
    let (mut gw, key) = binary_gateway(&gw_dir, "Queued");
    let relay = Relay::start(gw.addr);
    let mut log = PgLog::open(&owner);
    let config = config_for(&dir.0, "Queued", &key, &gw_dir, &logged, &relay);
    // The agent is offline: commands wait in the gateway's queue. `POST /admin/submit`
    // answers 202 once the command is persisted.
    let load = Load {
        run: run_id("mcq"),
        commands: 20,
        chunked_per_mille: 200,
        callers: 1,
        deadline: Duration::from_secs(120),
    };
    let mut ids = Vec::new();
    for n in 0..load.commands {
        let body = json!({ "connector": "Queued", "sql": load.sql(n),
            "idempotencyKey": format!("key-{}", load.tag(n)), "ttlMs": 600_000 });
        let (status, answer) = gw.admin.call("POST", "/admin/submit", Some(&body), WATCHDOG).unwrap();
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["commandId"].as_str().unwrap().to_owned());
    }
    gw.kill9();
    let gw2 = GatewayProc::start(&gw_dir, 0, "3s");
    relay.set_upstream(gw2.addr);
    let agent = AgentProc::start(&config);
    wait_until(WATCHDOG, "agent connected to the restarted gateway", || connected(&gw2.admin, "Queued"));
    // Every queued command is answered, without anybody asking again, and ran exactly once.
    let mut states = Vec::new();
    wait_until(Duration::from_secs(90), "every queued command answered", || {
        states = ids
            .iter()
            .map(|id| {
                let path = format!("/admin/commands/{id}");
                match gw2.admin.call("GET", &path, None, Duration::from_secs(10)) {
                    Ok((_, v)) => v["state"].as_str().unwrap_or("?").to_owned(),
                    Err(e) => format!("admin call failed: {e}"),
                }
            })
            .collect();
        states.iter().all(|s| s == "answered")
    });
    for id in &ids {
        let (_, v) = gw2.admin.call("GET", &format!("/admin/commands/{id}"), None, WATCHDOG).unwrap();
        assert!(v["error"].is_null(), "a queued command failed after the restart: {v}");
    }
    let ex = log.executions(&load.run);
    for n in 0..load.commands {
        assert_eq!(
            ex.get(&load.tag(n)),
            Some(&1),
            "{}: executions {:?} (states {states:?})",
            load.tag(n),
            ex.get(&load.tag(n))
        );
    }
    assert!(agent_alive(&agent));
}

#[test]
fn gateway_killed_mid_stream_answers_every_command_once_after_restart() {
    let Some((logged, owner)) = pg_urls() else { return };
    let dir = TempDir::new("gw-kill-stream");
    let gw_dir = dir.0.join("gateway");
    let (gw, key) = binary_gateway(&gw_dir, "Streamy");
    let relay = Relay::start(gw.addr);
    let mut log = PgLog::open(&owner);
    let config = config_for(&dir.0, "Streamy", &key, &gw_dir, &logged, &relay);
    let agent = AgentProc::start(&config);
    wait_until(WATCHDOG, "agent connected", || connected(&gw.admin, "Streamy"));
    let load = Load {
        run: run_id("mcg"),
        commands: 120,
        chunked_per_mille: 216,
        callers: 8,
        deadline: Duration::from_secs(150),
    };
    // The callers follow the gateway through its restart: admin.json names the new admin API.
    let gw = std::sync::Mutex::new(gw);
    let log_start = log.start();
    let report = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            // Mid-stream: a third of the commands have run on the database.
            let mut watch = PgLog::open_at(&owner, log_start);
            wait_until(Duration::from_secs(120), "a third of the commands run", || {
                watch.executions(&load.run).len() >= load.commands / 3
            });
            let mut g = gw.lock().unwrap();
            g.kill9();
            let g2 = GatewayProc::start(&gw_dir, 0, "3s");
            relay.set_upstream(g2.addr);
            *g = g2;
        });
        let report = run_load_following(&gw_dir, "Streamy", &load);
        killer.join().unwrap();
        report
    });
    let mut report = report;
    finish_report(&mut report, &load, &mut log);
    eprintln!("gateway kill mid-stream: {}", report.summary());
    report.assert_exactly_once();
    assert!(agent_alive(&agent), "the agent exited after a gateway crash:\n{}", agent.log_text());
}

/// [`run_load`] with an admin client re-read from `admin.json` whenever a call fails (the
/// gateway restarted on a new admin port).
fn run_load_following(gw_dir: &std::path::Path, name: &str, load: &Load) -> crate::e2e_faults::LoadReport {
    let admin = Following { dir: gw_dir.to_owned() };
    crate::e2e_faults::run_load_with(&|body, timeout| admin.call(body, timeout), name, load)
}

struct Following {
    dir: std::path::PathBuf,
}

impl Following {
    fn call(&self, body: &Value, timeout: Duration) -> Result<(u16, Value), String> {
        let admin =
            AdminClient::from_data_dir(&self.dir).map_err(|e| e.to_string())?.ok_or("no admin.json")?;
        admin.call("POST", "/admin/query", Some(body), timeout).map_err(|e| e.to_string())
    }
}

#[test]
fn gateway_stop_and_start_the_agent_reconnects_by_itself_and_keeps_running() {
    let dir = TempDir::new("gw-restart");
    let gw_dir = dir.0.join("gateway");
    let (mut gw, key) = binary_gateway(&gw_dir, "Loyal");
    let relay = Relay::start(gw.addr);
    // SQLite only: this test needs no database server.
    let agent_dir = dir.0.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    std::fs::write(agent_dir.join("api-key"), &key).unwrap();
    let config = agent_dir.join("config.json");
    let doc = json!({
        "connectorName": "Loyal",
        "apiKeyRef": format!("file:{}", agent_dir.join("api-key").display()),
        "cloudUrl": relay.ws_url(),
        "caCertPath": gw_dir.join("tls").join("cert.pem"),
        "heartbeatIntervalMs": 1000,
        "reconnectMaxMs": 2000,
        "logLevel": "info",
        "logDir": agent_dir.join("logs"),
        "connections": [{ "name": "erp", "type": "sqlite", "path": sample_erp() }]
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let agent = AgentProc::start(&config);
    wait_until(WATCHDOG, "agent connected", || connected(&gw.admin, "Loyal"));

    assert_eq!(gw.terminate(), Some(0), "gateway SIGTERM:\n{}", gw.log_text());
    // The agent keeps trying (through the relay) and does not exit.
    let tries = relay.stats().accepted;
    wait_until(WATCHDOG, "the agent retrying, or exiting", || {
        relay.stats().accepted > tries || !agent_alive(&agent)
    });
    assert!(agent_alive(&agent), "the agent exited when the gateway stopped:\n{}", agent.log_text());

    let gw2 = GatewayProc::start(&gw_dir, 0, "3s");
    relay.set_upstream(gw2.addr);
    wait_until(Duration::from_secs(30), "agent reconnected by itself", || connected(&gw2.admin, "Loyal"));
    let (status, answer) = gw2
        .admin
        .call(
            "POST",
            "/admin/query",
            Some(&json!({ "connector": "Loyal", "sql": "SELECT 1 AS one" })),
            WATCHDOG,
        )
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(agent_alive(&agent), "agent log:\n{}", agent.log_text());
}

#[test]
fn a_database_down_at_start_is_unavailable_then_served_once_back() {
    let Some((logged, _owner)) = pg_urls() else { return };
    let rig = Rig::new("db-down", "HalfUp");
    // PostgreSQL behind a relay that refuses connections: "the server is down".
    let pg = crate::support::DbUrl::parse(&logged);
    let pg_relay = Relay::start(format!("{}:{}", pg.host, pg.port).parse().unwrap());
    pg_relay.refuse(true);
    let down_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        pg.user,
        pg.password,
        pg_relay.addr().port(),
        pg.database
    );
    let agent_dir = rig.dir.0.join("conns");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let config = rig.agent_config(
        &logged,
        json!({ "connections": [
            { "name": "erp", "type": "sqlite", "path": sample_erp() },
            pg_connection(&agent_dir, "pg", &down_url),
        ] }),
    );
    let agent = rig.start_agent(&config);

    let mut sqlite = gateway::QueryRequest::new("SELECT count(*) AS n FROM customers");
    sqlite.connection = Some("erp".into());
    assert!(rig.gateway.query("HalfUp", sqlite.clone()).is_ok(), "the healthy database is served");

    let mut down = gateway::QueryRequest::new("SELECT 1 AS one");
    down.connection = Some("pg".into());
    match rig.gateway.query("HalfUp", down.clone()) {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code.as_str(), "DATABASE_UNAVAILABLE", "{body:?}");
            assert!(body.retryable, "a down database is worth retrying: {body:?}");
        }
        other => panic!("expected DATABASE_UNAVAILABLE, got {other:?}"),
    }
    pg_relay.refuse(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rig.gateway.query("HalfUp", down.clone()) {
            Ok(o) => {
                assert_eq!(o.row_count, 1);
                break;
            }
            Err(QueryError::Remote(body)) if body.retryable && Instant::now() < deadline => {
                // The agent retries the server on its own schedule; ask again like a console.
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("the database came back but is not served: {other:?}"),
        }
    }
    assert!(agent_alive(&agent));
}

#[test]
fn a_queue_over_its_cap_gives_a_clear_error_and_stays_intact() {
    let Some((logged, owner)) = pg_urls() else { return };
    let rig = Rig::new("queue-cap", "Capped");
    let mut log = PgLog::open(&owner);
    let config = rig.agent_config(&logged, json!({ "offlineQueueMaxMB": 1 }));
    let agent = rig.start_agent(&config);
    // Many commands at once, each with a ~1.3 MB result: far over a 1 MB queue.
    let load = Load {
        run: run_id("mcc"),
        commands: 40,
        chunked_per_mille: 500,
        callers: 20,
        deadline: Duration::from_secs(120),
    };
    let events = rig.gateway.subscribe();
    let mut report = run_load(&rig.admin, "Capped", &load, Some(&events));
    finish_report(&mut report, &load, &mut log);
    eprintln!("queue cap: {}", report.summary());
    // Every command is answered or refused with a code that says why; none is lost or doubled.
    assert!(
        report.lost.is_empty() && report.doubled.is_empty() && report.double_executed.is_empty(),
        "{}",
        report.summary()
    );
    for (tag, error) in &report.failed {
        // AGENT_BUSY (retryable: no room for new work) or RESULT_UNAVAILABLE (an answer purged
        // for space), each saying why.
        assert!(
            (error.contains("AGENT_BUSY") || error.contains("RESULT_UNAVAILABLE"))
                && error.to_lowercase().contains("queue"),
            "{tag}: unclear error {error}"
        );
    }
    assert!(agent_alive(&agent));
    let queue = find_queue_db(&config).expect("queue database");
    drop(agent);
    assert_eq!(integrity(&queue), "ok");
}

/// A 2 MiB tmpfs at `<dir>/small` (needs root); unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_tmpfs(dir: &std::path::Path) -> Result<Tmpfs, String> {
    let mount_point = dir.join("small");
    std::fs::create_dir_all(&mount_point).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
        .arg(&mount_point)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(Tmpfs(mount_point))
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_the_queue_intact() {
    let Some((logged, owner)) = pg_urls() else { return };
    let rig = Rig::new("disk-full", "DiskFull");
    let tmpfs = match small_tmpfs(&rig.dir.0) {
        Ok(t) => t,
        Err(why) => {
            // Mounting a 2 MiB tmpfs needs root (CAP_SYS_ADMIN).
            eprintln!("SKIPPED a_full_disk_gives_a_clear_error_and_leaves_the_queue_intact: {why}");
            return;
        }
    };
    let mut log = PgLog::open(&owner);
    // The config (and so the queue database next to it) on the 2 MiB disk; logs elsewhere.
    let built = rig.agent_config(&logged, json!({ "logDir": rig.dir.0.join("disk-full-logs") }));
    let config = tmpfs.0.join("config.json");
    std::fs::copy(&built, &config).unwrap();
    let agent = rig.start_agent(&config);
    // 200 KB inline answers: a dozen fill the disk.
    let run = run_id("mcd");
    let (mut rows, mut errors) = (0, Vec::new());
    for n in 0..30 {
        let tag = format!("{run}-{n}");
        let mut req =
            gateway::QueryRequest::new(format!("SELECT '{tag}' AS tag, repeat('z', 200000) AS pad"));
        req.wait = WATCHDOG;
        req.idempotency_key = Some(format!("key-{tag}"));
        match rig.gateway.query("DiskFull", req) {
            Ok(o) => {
                assert_eq!(o.rows[0][0], json!(tag));
                rows += 1;
            }
            Err(QueryError::Remote(body)) => errors.push(format!("{}: {}", body.code.as_str(), body.message)),
            Err(e) => {
                let log = agent.log_text();
                let tail: Vec<&str> =
                    log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                panic!(
                    "command {n} got no coded answer on a full disk: {e}\nagent log (tail):\n{}",
                    tail.join("\n")
                )
            }
        }
    }
    eprintln!("disk full: {rows} answered, errors {errors:?}");
    assert!(agent_alive(&agent), "the agent died on a full disk:\n{}", agent.log_text());
    assert!(!errors.is_empty(), "30 answers of 200 KB fit on a 2 MiB disk?");
    for e in &errors {
        assert!(
            e.to_lowercase().contains("disk") || e.starts_with("AGENT_BUSY"),
            "unclear error on a full disk: {e}"
        );
    }
    let runs = log.executions(&run);
    assert!(runs.values().all(|c| *c == 1), "ran twice: {runs:?}");
    let queue = find_queue_db(&config).expect("queue database on the small disk");
    drop(agent);
    assert_eq!(integrity(&queue), "ok");
}
