//! `connector-fleet`, the simulated fleet (issue 14's load tool), as a real process against a
//! real gateway: its keys are minted in the gateway's store, every agent authenticates and
//! heartbeats, and a query to any of them is answered by that one agent.

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
