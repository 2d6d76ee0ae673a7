//! Issue 13, "a CLI that tells the truth": each defect an admin met, against the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TempDir, WATCHDOG, World, cli, connected_agent};

const BIN: &str = env!("CARGO_BIN_EXE_mini-connector");

/// Rewrites the JSON config at `path` with `edit`.
fn edit_config(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

#[test]
fn start_daemon_refuses_when_an_agent_already_runs_for_the_config() {
    let world = World::new("truth-daemon-twice");
    let agent = connected_agent(&world, "Twice", json!({}));
    let config = agent.config.to_str().unwrap();
    let (code, stdout, stderr) = cli(&["start", "--daemon", "--config", config]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("running in the background"), "{stdout}");
    assert!(stderr.contains("another agent is already running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", agent.child.id())), "{stderr}");
}

#[test]
fn start_daemon_reports_the_childs_error_and_exit_code() {
    let world = World::new("truth-daemon-fails");
    let key = world.key("Broken");
    // The queue cannot be created: its directory is a regular file.
    let config = world.agent_config("Broken", key.expose(), json!({}));
    let blocker = config.with_file_name("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    edit_config(&config, |v| v["queuePath"] = json!(blocker.join("queue.db")));
    let (code, stdout, stderr) = cli(&["start", "--daemon", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("running in the background"), "{stdout}");
    assert!(stderr.contains("exited at once"), "{stderr}");
    // The child's own error line, not only "see the log".
    assert!(stderr.lines().any(|l| l.starts_with("error:") && l.contains("not-a-dir")), "{stderr}");
}

#[test]
fn config_check_and_start_refuse_unknown_fields_and_bad_enum_values() {
    let world = World::new("truth-config");
    let key = world.key("Strict");
    let config = world.agent_config("Strict", key.expose(), json!({}));
    let path = config.to_str().unwrap();
    assert_eq!(cli(&["config", "check", "--config", path]).0, Some(0));

    let original = std::fs::read(&config).unwrap();
    let cases: [(&str, Value, &[&str]); 4] = [
        (
            "a typo of a known field",
            json!({"heartbeatIntervalMS": 15000}),
            &["unknown field `heartbeatIntervalMS`", "did you mean `heartbeatIntervalMs`?"],
        ),
        (
            "a log level that logs nothing",
            json!({"logLevel": "verbose"}),
            &["logLevel", "`verbose`", "error, warn, info, debug, trace"],
        ),
        (
            "a password in a connection",
            json!({"connections": [{"name": "erp", "type": "sqlite", "path": "/x.db", "password": "s3cret-value"}]}),
            &["connections[0].password", "vault", "db edit --name erp --password"],
        ),
        (
            "a database type that does not exist",
            json!({"connections": [{"name": "erp", "type": "oracle-db", "path": "/x.db"}]}),
            &["oracle-db", "`postgres`"],
        ),
    ];
    for (what, extra, needles) in cases {
        std::fs::write(&config, &original).unwrap();
        edit_config(&config, |v| {
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
        });
        for verb in [&["config", "check", "--config", path][..], &["start", "--config", path][..]] {
            let (code, stdout, stderr) = cli(verb);
            assert_eq!(code, Some(2), "{what}: {verb:?}: {stdout}{stderr}");
            for needle in needles {
                assert!(stderr.contains(needle), "{what}: {verb:?}: {needle:?} not in {stderr}");
            }
            assert!(!stderr.contains("s3cret-value"), "{stderr}");
        }
    }
}

#[test]
fn ctrl_c_at_a_password_prompt_exits_130_with_the_echo_restored() {
    let dir = TempDir::new("truth-ctrlc");
    let config = dir.0.join("config.json");
    std::fs::write(
        &config,
        json!({"connectorName": "t", "apiKeyRef": "env:MC_NO_KEY", "cloudUrl": "wss://example.com/ws"})
            .to_string(),
    )
    .unwrap();
    // A real terminal (python3's pty module): wait for the prompt, then Ctrl-C (^C → SIGINT).
    let script = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, deadline = b"", time.time() + 30
while b"password:" not in out and time.time() < deadline:
    out += os.read(fd, 1024)
os.write(fd, b"\x03")
status = os.waitpid(pid, 0)[1]
try:
    while True:
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        out += chunk
except OSError:
    pass
print(os.waitstatus_to_exitcode(status))
print(out.decode(errors="replace"))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, BIN, "db", "add", "--config"])
        .arg(&config)
        .args(["--name", "x", "--type", "postgres", "--host", "h", "--user", "u", "--password", "--no-test"])
        .output()
        .expect("python3 runs the pty harness");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next(), Some("130"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("error:"), "{text}");
}

#[test]
fn empty_values_remove_optional_fields() {
    let world = World::new("truth-empty");
    let key = world.key("Empty");
    let config = world.agent_config("Empty", key.expose(), json!({}));
    let path = config.to_str().unwrap();
    let read = || -> Value { serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap() };
    assert!(read()["caCertPath"].is_string());

    let (code, stdout, stderr) = cli(&["configure", "--config", path, "--ca-cert", ""]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(read().get("caCertPath").is_none(), "{}", read());

    let (code, stdout, stderr) = cli(&["configure", "--config", path, "--proxy", "http://proxy.test:3128"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(read()["proxyUrl"], "http://proxy.test:3128");
    let (code, stdout, stderr) =
        cli(&["configure", "--config", path, "--proxy", "", "--vault-dir", "", "--vault-key-dir", ""]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(read()["proxyUrl"].is_null(), "{}", read());
    assert!(read().get("vaultDir").is_none(), "{}", read());

    let root = world.gateway.ca_cert_path();
    let root = root.to_str().unwrap();
    let (code, stdout, stderr) = cli(&[
        "db",
        "add",
        "--config",
        path,
        "--name",
        "pg",
        "--type",
        "postgres",
        "--host",
        "db.test",
        "--port",
        "5433",
        "--user",
        "ro",
        "--ssl-mode",
        "verify-ca",
        "--ssl-root-cert",
        root,
        "--no-test",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(read()["connections"][1]["port"], 5433);
    let (code, stdout, stderr) = cli(&[
        "db",
        "edit",
        "--config",
        path,
        "pg",
        "--port",
        "",
        "--ssl-mode",
        "",
        "--ssl-root-cert",
        "",
        "--no-test",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let pg = &read()["connections"][1];
    for field in ["port", "sslMode", "sslRootCert"] {
        assert!(pg.get(field).is_none(), "{field}: {pg}");
    }
}

/// Waits until `path` contains `needle`.
fn wait_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_config_has_its_own_default_log_dir_and_logs_follows() {
    let world = World::new("truth-logs");
    // Both agents without `logDir`, in one HOME: they used to share one directory.
    let home = world.dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut agents = Vec::new();
    for name in ["LogA", "LogB"] {
        let key = world.key(name);
        let config = world.agent_config(name, key.expose(), json!({}));
        edit_config(&config, |v| {
            v.as_object_mut().unwrap().remove("logDir");
        });
        let child = std::process::Command::new(BIN)
            .args(["start", "--config"])
            .arg(&config)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        agents.push((
            name,
            config,
            crate::support::AgentProc {
                child,
                log: home.join("unused.log"),
                config: home.join("unused.json"),
            },
        ));
    }
    let logs = |config: &Path, extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["logs", "--config"])
            .arg(config)
            .args(extra)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for (name, config, _) in &agents {
        let deadline = Instant::now() + WATCHDOG;
        let text = loop {
            let (_, text) = logs(config, &["-n", "1000"]);
            if text.contains("agent started") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(text.contains(&format!("name={name}")), "{name}: {text}");
        let other = if *name == "LogA" { "LogB" } else { "LogA" };
        assert!(!text.contains(&format!("name={other}")), "{name} shows {other}'s lines: {text}");
    }
    let dirs: Vec<_> = std::fs::read_dir(home.join("state/mini-connector/logs")).unwrap().collect();
    assert_eq!(dirs.len(), 2, "one log directory per configuration");

    // `logs -f`: new lines appear, Ctrl-C ends it with 130.
    let (_, config_a, agent_a) = &agents[0];
    let out_path = world.dir.0.join("follow.out");
    let mut follow = std::process::Command::new(BIN)
        .args(["logs", "-n", "0", "-f", "--config"])
        .arg(config_a)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    // Give `logs -f` its starting point, then make the agent log a new line: a pause.
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = cli(&["pause", "--config", config_a.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let text = wait_file(&out_path, "paused");
    assert!(text.contains("paused"), "{text}");
    assert!(!text.contains("agent started"), "-n 0 starts at the end: {text}");
    let _ = agent_a;
    std::process::Command::new("kill").args(["-INT", &follow.id().to_string()]).status().unwrap();
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn status_shows_version_pid_retry_and_per_database_health() {
    let world = World::new("truth-status");
    let agent = connected_agent(&world, "Stat", json!({}));
    let config = agent.config.to_str().unwrap();
    // The first schema discovery (the first check of each database) runs right after connecting.
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        let (code, stdout, stderr) = cli(&["status", "--json", "--config", config]);
        assert_eq!(code, Some(0), "{stderr}");
        let status: Value = serde_json::from_str::<Value>(&stdout).unwrap()["data"].clone();
        if status["databases"][0]["checkedAt"].is_string() || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["cloudUrl"], world.gateway.ws_url());
    assert_eq!(status["connectorName"], "Stat");
    assert_eq!(status["agentVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], agent.child.id());
    assert!(status["uptimeSecs"].is_u64());
    let db = &status["databases"][0];
    assert_eq!(db["healthy"], true);
    assert!(db["checkedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{db}");

    let (code, text, _) = cli(&["status", "--config", config]);
    assert_eq!(code, Some(0));
    for needle in [
        "connector:      Stat".to_owned(),
        format!("cloud:          {}", world.gateway.ws_url()),
        format!("version:        {} (pid {})", env!("CARGO_PKG_VERSION"), agent.child.id()),
        "  erp (sqlite): ok, checked ".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in\n{text}");
    }
}

#[test]
fn status_of_a_disconnected_agent_shows_the_next_retry() {
    let world = World::new("truth-retry");
    let key = world.key("Retry");
    // Nothing listens on this port: the agent keeps dialling.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = world.agent_config(
        "Retry",
        key.expose(),
        json!({ "cloudUrl": format!("wss://127.0.0.1:{port}/ws") }),
    );
    let _agent = crate::support::AgentProc::start(&config);
    let config = config.to_str().unwrap();
    let deadline = Instant::now() + WATCHDOG;
    let text = loop {
        let (code, text, _) = cli(&["status", "--config", config]);
        if (code == Some(0) && text.contains("next retry:")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("next retry:     in "), "{text}");
    let (_, json_text, _) = cli(&["status", "--json", "--config", config]);
    let status: Value = serde_json::from_str::<Value>(&json_text).unwrap()["data"].clone();
    assert!(status["nextRetryMs"].is_u64() || status["connected"] == true, "{status}");
}

#[test]
fn reload_applies_a_new_database_and_privacy_without_dropping_the_link() {
    use gateway::{GatewayEvent, QueryError};
    use mini_connector::protocol::ErrorCode;

    let world = World::new("truth-reload");
    let agent = connected_agent(&world, "Reload", json!({}));
    let events = world.gateway.subscribe();
    let config = agent.config.to_str().unwrap();
    let status = |key: &str| -> Value {
        let (_, out, _) = cli(&["status", "--json", "--config", config]);
        serde_json::from_str::<Value>(&out).unwrap()["data"][key].clone()
    };
    let session = status("connectionId");
    assert!(session.is_string());
    let copy = world.dir.0.join("erp-copy.db");
    std::fs::copy(crate::support::sample_erp(), &copy).unwrap();

    // Both commands reload the running agent themselves.
    let (code, stdout, stderr) = cli(&[
        "db",
        "add",
        "--config",
        config,
        "--name",
        "erp2",
        "--type",
        "sqlite",
        "--path",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("connections added: erp2"), "{stdout}");
    let (code, stdout, stderr) =
        cli(&["schema", "private", "add", "--config", config, "--connection", "erp", "--table", "customers"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("schema privacy changed"), "{stdout}");
    // By hand: nothing new to apply.
    let (code, stdout, _) = cli(&["reload", "--config", config]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("added: -; changed: -; removed: -; schema privacy unchanged"), "{stdout}");

    let mut request = crate::e2e_query::request("SELECT count(*) AS n FROM orders");
    request.connection = Some("erp2".into());
    let answer = world.gateway.query("Reload", request).unwrap();
    assert!(answer.rows[0][0].as_i64().unwrap() > 0, "{:?}", answer.rows);
    match world.gateway.query("Reload", crate::e2e_query::request("SELECT name FROM customers")) {
        Err(QueryError::Remote(body)) => assert_eq!(body.code, ErrorCode::SchemaAccessDenied),
        other => panic!("expected SCHEMA_ACCESS_DENIED, got {other:?}"),
    }

    // The same session throughout.
    assert_eq!(status("connectionId"), session);
    assert_eq!(status("reconnects"), 0);
    assert!(
        !events.try_iter().any(|e| matches!(e, GatewayEvent::AgentDisconnected { .. })),
        "the gateway saw the agent disconnect"
    );

    // A configuration that does not load changes nothing: exit 2.
    edit_config(&agent.config, |v| v["logLevel"] = json!("verbose"));
    let (code, _, stderr) = cli(&["reload", "--config", config]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nothing changed") && stderr.contains("logLevel"), "{stderr}");
}

#[test]
fn sighup_reloads_the_configuration() {
    let world = World::new("truth-sighup");
    let agent = connected_agent(&world, "Hup", json!({}));
    edit_config(&agent.config, |v| {
        v["connections"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "erp3", "type": "sqlite", "path": crate::support::sample_erp()}));
    });
    std::process::Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap();
    agent.wait_log("connections added: erp3");
    let (_, out, _) = cli(&["status", "--json", "--config", agent.config.to_str().unwrap()]);
    let status: Value = serde_json::from_str::<Value>(&out).unwrap()["data"].clone();
    let names: Vec<&str> =
        status["databases"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["erp", "erp3"]);
    assert_eq!(status["reconnects"], 0);
}
