//! The local control channel: `status`, `pause`, `resume`, `reconnect`, `stop` against the real
//! running agent, and `start --daemon`.

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{AgentStatus, ErrorCode, Outbound};
use serde_json::{Value, json};

use crate::e2e_query::request;
use crate::support::{AgentProc, World, cli, connected_agent, wait_event};

fn control(agent_config: &std::path::Path, verb: &str) -> (Option<i32>, Value) {
    let config = agent_config.to_str().unwrap();
    let (code, stdout, stderr) = cli(&[verb, "--json", "--config", config]);
    assert!(stdout.lines().count() == 1, "{verb}: {stdout:?} {stderr:?}");
    (code, crate::support::json_answer(&stdout))
}

#[test]
fn status_pause_resume_reconnect_and_stop_reach_the_running_agent() {
    let world = World::new("control");
    let mut agent = connected_agent(&world, "Ctl", json!({}));
    let events = world.gateway.subscribe();

    let (code, status) = control(&agent.config, "status");
    assert_eq!(code, Some(0));
    assert_eq!(status["state"], "connected");
    assert_eq!(status["indicator"], "connected");
    assert_eq!(status["connectorName"], "Ctl");
    assert_eq!(status["connected"], true);
    assert_eq!(status["databases"][0]["name"], "erp");

    assert_eq!(control(&agent.config, "pause").0, Some(0));
    let paused = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::Status(s), .. } => Some(s.status),
        _ => None,
    });
    assert_eq!(paused, AgentStatus::Paused);
    match world.gateway.query("Ctl", request("SELECT 1")) {
        Err(QueryError::Remote(body)) => assert_eq!(body.code, ErrorCode::AgentPaused),
        other => panic!("expected AGENT_PAUSED, got {other:?}"),
    }
    assert_eq!(control(&agent.config, "status").1["state"], "paused");

    assert_eq!(control(&agent.config, "resume").0, Some(0));
    assert_eq!(world.gateway.query("Ctl", request("SELECT 1 AS one")).unwrap().rows, vec![vec![json!(1)]]);

    assert_eq!(control(&agent.config, "reconnect").0, Some(0));
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    // The gateway sees the new session a moment before the agent's supervisor does.
    let deadline = std::time::Instant::now() + crate::support::WATCHDOG;
    let status = loop {
        let status = control(&agent.config, "status").1;
        if status["reconnects"] == 1 || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status["reconnects"], 1);
    assert_eq!(status["state"], "connected");
    assert_eq!(status["commandsCompleted"], 1, "{status}");
    assert_eq!(status["commandsFailed"], 1);

    let activity = control(&agent.config, "activity").1["commands"].clone();
    let entries = activity.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{activity}");
    assert_eq!(entries[0]["outcome"], json!({ "status": "inline" }), "newest first");
    assert_eq!(entries[0]["rows"], 1);
    assert_eq!(entries[1]["outcome"], json!({ "status": "failed", "code": "AGENT_PAUSED" }));
    assert!(!activity.to_string().contains("SELECT"), "query text is not kept");

    assert_eq!(control(&agent.config, "stop").0, Some(0));
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.log_text());
    let (code, answer) = control(&agent.config, "status");
    assert_eq!(code, Some(3), "no agent running any more");
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"]["code"], "NOT_RUNNING");
}

#[test]
fn a_second_agent_on_the_same_config_refuses_to_start() {
    let world = World::new("control-twice");
    let agent = connected_agent(&world, "Once", json!({}));
    let mut second = AgentProc::start(&agent.config);
    assert_eq!(second.wait_exit(), Some(1));
    assert!(second.log_text().contains("another agent is running"), "{}", second.log_text());
}

#[test]
fn daemon_mode_starts_in_the_background_and_stops_on_request() {
    let world = World::new("daemon");
    let events = world.gateway.subscribe();
    let key = world.key("Bg");
    let config = world.agent_config("Bg", key.expose(), json!({}));
    let config_str = config.to_str().unwrap();
    let (code, stdout, stderr) = cli(&["start", "--daemon", "--config", config_str]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("running in the background"), "{stdout}");
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    assert_eq!(control(&config, "stop").0, Some(0));
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentDisconnected { .. }).then_some(()));
    // The gateway sees the close a moment before the agent writes its last line.
    let deadline = std::time::Instant::now() + crate::support::WATCHDOG;
    let log = loop {
        let log = std::fs::read_to_string(config.with_file_name("agent.log")).unwrap_or_default();
        if log.contains("agent stopped") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(log.contains("agent stopped"), "{log}");
}
