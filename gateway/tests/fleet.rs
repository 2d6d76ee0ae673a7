//! `connector-fleet`, the simulated fleet (issue 14's load tool), as a real process against a
//! real gateway: its keys are minted in the gateway's store, every agent authenticates and
//! heartbeats, and a query to any of them is answered by that one agent. And what an idle
//! session costs the `connector-gateway` process in file descriptors (the cap that stopped a
//! node at ~2,900 sessions under a 20,000 limit when each session held six or seven).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::QueryRequest;

use crate::common::{WAIT, start, watchdog};

const FLEET: &str = env!("CARGO_BIN_EXE_connector-fleet");

#[test]
fn a_simulated_fleet_connects_heartbeats_and_answers_its_own_commands() {
    let _w = watchdog("fleet");
    let gw = start();
    let agents = 40;
    let mut fleet = Command::new(FLEET)
        .args(["--url", &gw.ws_url(), "--ca-cert"])
        .arg(gw.ca_cert_path())
        .arg("--data-dir")
        .arg(&gw.dir)
        .args([
            "--agents",
            &agents.to_string(),
            "--heartbeat-secs",
            "1",
            "--duration-secs",
            "30",
            "--prefix",
            "sim",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT * 3;
    while gw.connectors().iter().filter(|c| c.connected).count() < agents {
        assert!(
            Instant::now() < deadline,
            "only {:?} connected",
            gw.connectors().iter().filter(|c| c.connected).count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in [0, 17, agents - 1] {
        let mut req = QueryRequest::new("SELECT 1");
        req.wait = WAIT;
        let outcome = gw.query(&format!("sim-{i}"), req).unwrap();
        assert_eq!(outcome.rows, [vec![serde_json::json!(i)]], "agent {i} answered its own command");
    }
    // Heartbeats arrive (every second here).
    let before: Vec<Option<String>> = gw.connectors().into_iter().map(|c| c.last_heartbeat).collect();
    let deadline = Instant::now() + WAIT;
    while gw.connectors().into_iter().map(|c| c.last_heartbeat).collect::<Vec<_>>() == before {
        assert!(Instant::now() < deadline, "no heartbeat within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its own count, printed every 5 s (the first line after the queries above).
    let mut lines = BufReader::new(fleet.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = fleet.kill();
    let _ = fleet.wait();
    let stats: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
    assert_eq!(stats["connected"], agents, "{first}");
    assert_eq!(stats["failures"], 0, "{first}");
    assert!(stats["commandsAnswered"].as_u64() >= Some(3), "{first}");
}

// Counts descriptors through Linux `/proc`.
#[cfg(target_os = "linux")]
mod descriptors {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use gateway::AdminClient;

    use super::FLEET;
    use crate::common::{Proc, WAIT, await_admin, temp_dir, watchdog};

    const GATEWAY: &str = env!("CARGO_BIN_EXE_connector-gateway");

    /// Open file descriptors of a process (Linux `/proc`).
    fn open_fds(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
    }

    /// Sessions the gateway shows connected.
    fn connected(admin: &AdminClient) -> usize {
        let (status, body) = admin.call("GET", "/admin/connectors", None, WAIT).unwrap();
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().iter().filter(|c| c["connected"] == true).count()
    }

    #[test]
    fn an_idle_session_holds_one_file_descriptor_in_the_gateway_process() {
        let _w = watchdog("fleet-fds");
        // The gateway in a process of its own: every descriptor of that process is the gateway's.
        let dir = temp_dir();
        let gw = Proc::quiet(Command::new(GATEWAY).arg("--data-dir").arg(&dir).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]));
        let pid = gw.0.id();
        let (admin, doc) = await_admin(&dir);
        assert_eq!(connected(&admin), 0);
        let before = open_fds(pid);

        let agents = 50;
        let fleet = Proc(
            Command::new(FLEET)
                .args([
                    "--url",
                    doc["wsUrl"].as_str().unwrap(),
                    "--ca-cert",
                    doc["caCertPath"].as_str().unwrap(),
                ])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--agents", &agents.to_string(), "--heartbeat-secs", "30", "--prefix", "fd"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + WAIT * 3;
        while connected(&admin) < agents {
            assert!(Instant::now() < deadline, "only {} of {agents} connected", connected(&admin));
            std::thread::sleep(Duration::from_millis(50));
        }
        let during = open_fds(pid);
        eprintln!("gateway descriptors: {before} idle, {during} with {agents} sessions");
        // One per session (its socket) and a few to spare (the admin call counting them, SQLite).
        // Each session held six before: two clones of its socket, the hub's third, and a poller of
        // its own (epoll, eventfd, timerfd).
        assert!(
            during - before <= agents + 8,
            "{} descriptors for {agents} sessions ({before} before, {during} with them)",
            during - before
        );

        // The sessions end with the fleet and give their descriptors back.
        drop(fleet);
        let deadline = Instant::now() + WAIT * 2;
        while connected(&admin) > 0 || open_fds(pid) > before + 2 {
            assert!(
                Instant::now() < deadline,
                "{} descriptors left after the fleet went ({before} before it)",
                open_fds(pid)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(gw);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The soft and hard limits on open files of a process.
    fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut numbers =
            line["Max open files".len()..].split_whitespace().map(|n| n.parse().unwrap_or(u64::MAX));
        Some((numbers.next()?, numbers.next()?))
    }

    #[test]
    fn the_gateway_raises_its_soft_open_file_limit_to_the_hard_one() {
        let _w = watchdog("fleet-rlimit");
        let dir = temp_dir();
        // The shell lowers its soft limit and becomes the gateway (same pid).
        let gw = Proc::quiet(
            Command::new("sh")
                .args(["-c", "ulimit -Sn 256 && exec \"$0\" --data-dir \"$1\" serve --listen 127.0.0.1:0"])
                .arg(GATEWAY)
                .arg(&dir),
        );
        let pid = gw.0.id();
        let deadline = Instant::now() + WAIT * 2;
        loop {
            // Once the shell has become the gateway (before, its limits are the shell's).
            let exec = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let limits = exec.filter(|exe| exe.ends_with("connector-gateway")).and(open_file_limits(pid));
            match limits {
                Some((_, hard)) if hard <= 256 => {
                    eprintln!("hard open-file limit {hard}: nothing to raise here");
                    break;
                }
                Some((soft, hard)) if soft == hard => break,
                limits => assert!(Instant::now() < deadline, "not raised: {limits:?}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(gw);
        let _ = std::fs::remove_dir_all(dir);
    }
}
