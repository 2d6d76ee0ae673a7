//! The typed local control API end to end: a subscriber on the real agent binary's control
//! socket, and the in-process `LocalBackend`, both against the real gateway. Each sees the
//! indicator go red (the gateway is not up yet) → green (it came up) → grey (paused), and an
//! activity entry for a query.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use gateway::{Gateway, GatewayConfig};
use mini_connector::handle::{LocalBackend, attach_or_local, control_socket};
use mini_connector::protocol::control::{
    ActivityEntry, AgentEvent, Backend as _, ControlReply, ControlRequest, Indicator, Outcome, StatusSnapshot,
};

use crate::support::{AgentProc, TempDir, WATCHDOG};

/// A configuration for a connector whose gateway is not running yet; start it with
/// [`Late::gateway_up`].
struct Late {
    _dir: TempDir,
    config: GatewayConfig,
    addr: SocketAddr,
    agent_config: PathBuf,
}

impl Late {
    fn new(tag: &str, name: &str) -> Self {
        let dir = TempDir::new(tag);
        // Reserve a port, then free it: nothing listens there when the agent starts.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // A first gateway only to obtain a certificate and a key in the data dir.
        let mut config = GatewayConfig::new(dir.0.join("gw"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        let probe = Gateway::start(config.clone()).unwrap();
        let key = probe.keys().create("acme", name).unwrap().1;
        let ca = probe.ca_cert_path();
        probe.shutdown();
        let agent_dir = dir.0.join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(agent_dir.join("api-key"), key.expose()).unwrap();
        let agent_config = agent_dir.join("config.json");
        let json = serde_json::json!({
            "connectorName": name,
            "apiKeyRef": format!("file:{}", agent_dir.join("api-key").display()),
            "cloudUrl": format!("wss://127.0.0.1:{}/ws", addr.port()),
            "caCertPath": ca,
            "reconnectMaxMs": 1000,
            "heartbeatIntervalMs": 1000,
            "logDir": agent_dir.join("logs"),
            "connections": [{ "name": "erp", "type": "sqlite", "path": crate::support::sample_erp() }]
        });
        std::fs::write(&agent_config, serde_json::to_vec(&json).unwrap()).unwrap();
        Self { _dir: dir, config, addr, agent_config }
    }

    fn gateway_up(&self) -> Gateway {
        let mut config = self.config.clone();
        config.listen = self.addr;
        Gateway::start(config).unwrap()
    }
}

/// The next status that satisfies `pred` (intermediate ones are skipped).
fn status_where(events: &Receiver<AgentEvent>, pred: impl Fn(&StatusSnapshot) -> bool) -> StatusSnapshot {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match events.recv_deadline(deadline) {
            Ok(AgentEvent::Status(status)) if pred(&status) => return *status,
            Ok(_) => {}
            Err(_) => panic!("no such status within {WATCHDOG:?}"),
        }
    }
}

/// The next activity entry for `command` in a finished state.
fn finished_activity(events: &Receiver<AgentEvent>) -> (ActivityEntry, bool) {
    let deadline = Instant::now() + WATCHDOG;
    let mut saw_running = false;
    loop {
        match events.recv_deadline(deadline) {
            Ok(AgentEvent::Activity(entry)) if entry.outcome == Outcome::Running => saw_running = true,
            Ok(AgentEvent::Activity(entry)) => return (entry, saw_running),
            Ok(_) => {}
            Err(_) => panic!("no finished activity within {WATCHDOG:?}"),
        }
    }
}

/// Subscribes over the control socket once the agent listens; events go to the receiver.
fn subscribe_socket(socket: &Path) -> Receiver<AgentEvent> {
    let deadline = Instant::now() + WATCHDOG;
    let stream = loop {
        match mini_connector::control::events(socket, Some(Duration::from_secs(5))) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("cannot subscribe: {e}"),
            // The agent creates its socket a moment after it starts.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for event in stream {
            if tx.send(event.expect("an event line")).is_err() {
                return;
            }
        }
    });
    rx
}

/// Red before the gateway is up, green once it is, an activity entry for a query, grey when
/// paused. `request` sends a control request the way the test's client does. Returns the
/// gateway (it stops when dropped).
fn walk(
    late: &Late,
    name: &str,
    events: &Receiver<AgentEvent>,
    request: &dyn Fn(ControlRequest) -> ControlReply,
) -> Gateway {
    let red = status_where(events, |s| s.indicator == Indicator::Disconnected);
    assert!(red.reason.as_deref().unwrap_or_default().contains("cannot reach the cloud"), "{red:?}");
    assert_eq!(red.connector_name, name);
    assert!(red.disconnected_since.is_some() && !red.connected);

    let gateway = late.gateway_up();
    let green = status_where(events, |s| s.indicator == Indicator::Connected);
    assert!(green.connected && green.connection_id.is_some(), "{green:?}");

    let outcome = gateway.query(name, crate::e2e_query::request("SELECT 2 AS two")).unwrap();
    assert_eq!(outcome.rows, vec![vec![serde_json::json!(2)]]);
    let (done, saw_running) = finished_activity(events);
    assert!(saw_running, "an entry when the command is received");
    assert_eq!(
        (&done.outcome, done.rows, done.connection.as_deref()),
        (&Outcome::Inline, Some(1), Some("erp"))
    );
    let counted = status_where(events, |s| s.commands_completed == 1);
    assert_eq!(counted.commands_today, 1);
    // The command frame came in, the result went out.
    assert!(counted.bytes_received > green.bytes_received, "{green:?} -> {counted:?}");
    assert!(counted.bytes_sent > green.bytes_sent && counted.bytes_sent_today == counted.bytes_sent);
    // The heartbeat's ping gives the latency (heartbeatIntervalMs is 1 s here).
    status_where(events, |s| s.latency_ms.is_some_and(|ms| ms > 0.0));

    assert_eq!(request(ControlRequest::Pause), ControlReply::Paused(true));
    let grey = status_where(events, |s| s.indicator == Indicator::Paused);
    assert!(grey.paused);
    assert_eq!(request(ControlRequest::Resume), ControlReply::Paused(false));
    status_where(events, |s| s.indicator == Indicator::Connected);
    match request(ControlRequest::Activity { limit: None }) {
        ControlReply::Activity(entries) => assert_eq!(entries, vec![done]),
        other => panic!("{other:?}"),
    }
    gateway
}

#[test]
fn a_subscriber_on_the_socket_sees_red_green_activity_and_grey() {
    let late = Late::new("ctl-socket", "Sock");
    let mut agent = AgentProc::start(&late.agent_config);
    let socket = control_socket(&late.agent_config);
    let events = subscribe_socket(&socket);
    let _gateway = walk(&late, "Sock", &events, &|r| mini_connector::control::call(&socket, &r).unwrap());

    // A GUI started now attaches to the running agent instead of starting a second one.
    let backend = attach_or_local(&late.agent_config);
    assert!(!backend.in_process());
    assert!(matches!(backend.request(ControlRequest::Status), ControlReply::Status(_)));
    assert!(matches!(
        backend.request(ControlRequest::Setup(Box::new(
            mini_connector::protocol::control::SetupRequest::Settings
        ))),
        ControlReply::Error { .. } | ControlReply::Settings(_)
    ));

    assert_eq!(
        mini_connector::control::call(&socket, &ControlRequest::Stop).unwrap(),
        ControlReply::Stopping
    );
    let deadline = Instant::now() + WATCHDOG;
    let last = loop {
        match events.recv_deadline(deadline) {
            Ok(AgentEvent::Stopped { reason }) => break reason,
            Ok(_) => {}
            Err(e) => panic!("no Stopped event: {e}"),
        }
    };
    assert!(last.contains("stopped by the operator"), "{last}");
    assert_eq!(agent.wait_exit(), Some(0));
}

#[test]
fn the_in_process_local_backend_drives_the_agent_the_same_way() {
    let late = Late::new("ctl-local", "Local");
    let backend = LocalBackend::new(late.agent_config.clone());
    assert!(backend.in_process());
    let (tx, events) = crossbeam_channel::unbounded();
    backend.subscribe(Box::new(move |event| {
        let _ = tx.send(event);
    }));
    let _gateway = walk(&late, "Local", &events, &|r| backend.request(r));

    // The in-process agent serves its control socket too: the CLI and a second GUI reach it.
    let socket = control_socket(&late.agent_config);
    assert!(matches!(
        mini_connector::control::call(&socket, &ControlRequest::Status),
        Ok(ControlReply::Status(_))
    ));
    assert!(!attach_or_local(&late.agent_config).in_process(), "no second agent");

    assert_eq!(backend.request(ControlRequest::Stop), ControlReply::Stopping);
    assert!(matches!(
        backend.request(ControlRequest::Status),
        ControlReply::Error { code, .. } if code == "NOT_RUNNING"
    ));
    assert!(mini_connector::control::call(&socket, &ControlRequest::Status).is_err(), "socket gone");
    assert_eq!(backend.request(ControlRequest::Start), ControlReply::Ok, "started again");
    status_where(&events, |s| s.indicator == Indicator::Connected);
}

#[test]
fn the_remote_backend_follows_a_service_that_restarts() {
    use mini_connector::handle::RemoteBackend;
    let late = Late::new("ctl-remote", "Svc");
    let _gateway = late.gateway_up();
    let mut agent = AgentProc::start(&late.agent_config);
    let socket = control_socket(&late.agent_config);
    let backend = RemoteBackend::new(socket.clone());
    assert!(!backend.in_process());
    let (tx, events) = crossbeam_channel::unbounded();
    backend.subscribe(Box::new(move |event| {
        let _ = tx.send(event);
    }));
    status_where(&events, |s| s.indicator == Indicator::Connected);

    // The service stops: the subscriber hears it, then nothing answers.
    assert_eq!(backend.request(ControlRequest::Stop), ControlReply::Stopping);
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match events.recv_deadline(deadline) {
            Ok(AgentEvent::Stopped { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("no Stopped event: {e}"),
        }
    }
    assert_eq!(agent.wait_exit(), Some(0));
    assert!(matches!(
        backend.request(ControlRequest::Status),
        ControlReply::Error { code, .. } if code == "NOT_RUNNING"
    ));
    assert!(
        matches!(backend.request(ControlRequest::Start), ControlReply::Error { code, .. } if code == "NOT_RUNNING")
    );

    // It comes back (the service manager restarts it): the same subscription resumes.
    let _agent = AgentProc::start(&late.agent_config);
    let back = status_where(&events, |s| s.indicator == Indicator::Connected);
    assert_eq!(back.connector_name, "Svc");
    assert_eq!(backend.request(ControlRequest::Start), ControlReply::Ok, "a running service is started");
}

#[test]
fn without_a_complete_configuration_the_local_backend_waits_for_start() {
    let dir = TempDir::new("ctl-incomplete");
    let config = dir.0.join("config.json");
    // Nothing answers on its socket: the GUI gets an in-process backend, which does not start
    // an agent without a configuration (the wizard writes one first).
    let backend = attach_or_local(&config);
    assert!(backend.in_process());
    assert!(matches!(
        backend.request(ControlRequest::Status),
        ControlReply::Error { code, .. } if code == "NOT_RUNNING"
    ));
    match backend.request(ControlRequest::Start) {
        ControlReply::Error { code, message } => {
            assert_eq!(code, "NOT_RUNNING");
            assert!(message.contains("cannot start"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        backend.request(ControlRequest::Subscribe),
        ControlReply::Error { code, .. } if code == "BAD_REQUEST"
    ));
}

/// The desktop app of the real binary (`mini-connector gui`, in-process agent) under Xvfb,
/// driven with real input events: red while the gateway is down (title and status-dot pixel),
/// green once it starts, every section photographed (`target/screenshots/real-*`), grey on
/// Pause, green again on Resume. Skips, saying why, without Xvfb/xdotool/ImageMagick unless
/// `MC_REQUIRE_GUI` is set (CI sets it).
#[test]
fn the_desktop_app_of_the_real_binary_goes_red_green_grey() {
    use gui::harness::{self, XServer};
    if harness::skip_or_fail().is_err() {
        return;
    }
    let late = Late::new("gui-real", "Desktop");
    let xs = XServer::start().expect("Xvfb");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots").join("real");
    std::fs::create_dir_all(&shots).unwrap();
    let log = late.agent_config.with_file_name("gui.log");
    let config = late.agent_config.to_str().unwrap().to_owned();
    let mut app = xs
        .launch(env!("CARGO_BIN_EXE_mini-connector"), &["gui", "--config", &config], &[], &log)
        .expect("launch the desktop app");
    let mut gateway = None;
    let report = harness::walk_dashboard(&xs, &shots, true, &mut || gateway = Some(late.gateway_up()))
        .unwrap_or_else(|e| panic!("{e}\napp log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let labels: Vec<&str> = report.states.iter().map(|(t, _)| t.split(" · ").next().unwrap_or("")).collect();
    assert_eq!(
        labels,
        [
            "Mini Connector — Disconnected",
            "Mini Connector — Connected",
            "Mini Connector — Paused",
            "Mini Connector — Connected"
        ]
    );
    // The window's agent is the one the CLI sees: a second agent would be refused.
    let socket = control_socket(&late.agent_config);
    let Ok(ControlReply::Status(status)) = mini_connector::control::call(&socket, &ControlRequest::Status)
    else {
        panic!("the in-process agent answers on its control socket");
    };
    assert!(status.connected && status.connector_name == "Desktop", "{status:?}");
    app.kill();
    drop(gateway);
}

/// The first run of the real binary's desktop app under Xvfb, against the real gateway and
/// the real PostgreSQL: the wizard opens (no key stored yet), the key is pasted and checked
/// against the gateway, the connector named, the database added and tested, the schema
/// approved; then the dashboard opens and the in-process agent is connected with the new
/// database, whose password is in the vault and nowhere in the configuration.
#[test]
fn the_first_run_wizard_of_the_real_binary_sets_up_a_working_agent() {
    use gui::harness::{self, WizardInputs, XServer};
    if harness::skip_or_fail().is_err() {
        return;
    }
    let Some(pg) = crate::support::server_url("MC_TEST_PG_URL") else { return };
    let pg = crate::support::DbUrl::parse(&pg);
    let late = Late::new("gui-wizard", "Wizard");
    let _gateway = late.gateway_up();
    let dir = late.agent_config.parent().unwrap().to_owned();
    let key = std::fs::read_to_string(dir.join("api-key")).unwrap();
    std::fs::remove_file(dir.join("api-key")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&late.agent_config).unwrap()).unwrap();
    config["apiKeyRef"] = "vault://apikey".into();
    config["vaultDir"] = dir.join("vault").to_str().unwrap().into();
    config["vaultKeyDir"] = dir.join("vault-keys").to_str().unwrap().into();
    config["connections"] = serde_json::json!([]);
    std::fs::write(&late.agent_config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let xs = XServer::start().expect("Xvfb");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots").join("real");
    std::fs::create_dir_all(&shots).unwrap();
    let log = dir.join("gui.log");
    let path = late.agent_config.to_str().unwrap().to_owned();
    let mut app = xs
        .launch(env!("CARGO_BIN_EXE_mini-connector"), &["gui", "--config", &path], &[], &log)
        .expect("launch the desktop app");
    let input = WizardInputs {
        api_key: key.trim().to_owned(),
        connector_name: "Warehouse".into(),
        connection: "erp".into(),
        host: pg.host.clone(),
        port: pg.port.to_string(),
        database: pg.database.clone(),
        user: pg.user.clone(),
        password: pg.password.clone(),
    };
    harness::walk_wizard(&xs, &shots, &input, None)
        .unwrap_or_else(|e| panic!("{e}\napp log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));

    // The agent the wizard set up: connected, serving the new database.
    let socket = control_socket(&late.agent_config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(ControlReply::Status(s)) = mini_connector::control::call(&socket, &ControlRequest::Status)
            && s.connected
            && s.databases.iter().any(|d| d.name == "erp" && d.healthy)
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not connect with the new database\napp log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.connector_name, "Warehouse");
    let written = std::fs::read_to_string(&late.agent_config).unwrap();
    assert!(written.contains("\"erp\"") && written.contains(&pg.host), "{written}");
    assert!(
        !written.contains(&pg.password) && !written.contains(key.trim()),
        "no secret in the config: {written}"
    );
    app.kill();
}
