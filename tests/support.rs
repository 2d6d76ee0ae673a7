//! Shared harness: temp dirs, a sample ERP, an in-process gateway and the agent binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayEvent};
use mini_connector::protocol::ApiKey;

/// How long any single wait in a test may take before the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// A fresh scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mc-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sample ERP, created once per test process and shared read-only.
pub fn sample_erp() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("mc-test-erp-{}.db", std::process::id()));
        drivers::fixture::create_sample_erp(&path, 1).unwrap();
        path
    })
    .clone()
}

/// A running gateway plus a scratch dir.
pub struct World {
    pub dir: TempDir,
    pub gateway: Gateway,
}

impl World {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let gateway = Gateway::start(GatewayConfig::new(dir.0.join("gateway"))).unwrap();
        Self { dir, gateway }
    }

    /// Creates a key for `name` and returns it.
    pub fn key(&self, name: &str) -> ApiKey {
        self.gateway.keys().create("acme", name).unwrap().1
    }

    /// Writes an agent config (and key file) for `name`, returns the config path.
    pub fn agent_config(&self, name: &str, key: &str, extra: serde_json::Value) -> PathBuf {
        let dir = self.dir.0.join(format!("agent-{name}-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("api-key");
        std::fs::write(&key_path, key).unwrap();
        let mut config = serde_json::json!({
            "connectorName": name,
            "apiKeyRef": format!("file:{}", key_path.display()),
            "cloudUrl": self.gateway.ws_url(),
            "caCertPath": self.gateway.ca_cert_path(),
            "heartbeatIntervalMs": 30000,
            "logLevel": "info",
            "reconnectMaxMs": 2000,
            "logDir": dir.join("logs"),
            "connections": [{ "name": "erp", "type": "sqlite", "path": sample_erp() }]
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        path
    }
}

fn rand_suffix() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The agent binary as a child process; killed on drop. Its stderr goes to a log file.
pub struct AgentProc {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl AgentProc {
    pub fn start(config: &Path) -> Self {
        let log = config.with_file_name("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
            .args(["start", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log, config: config.to_owned() }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WATCHDOG;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent log never contained {needle:?}:\n{}", self.log_text());
    }

    /// The exit code if the process has ended, without waiting (`Some(-1)` for a signal).
    pub fn try_exit(&mut self) -> Option<i32> {
        self.child.try_wait().unwrap().map(|status| status.code().unwrap_or(-1))
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WATCHDOG;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not exit:\n{}", self.log_text());
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the first event matching `pick`, failing after the watchdog.
pub fn wait_event<T>(
    events: &crossbeam_channel::Receiver<GatewayEvent>,
    mut pick: impl FnMut(&GatewayEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Err(_) => panic!("timed out waiting for a gateway event"),
        }
    }
}

/// Starts an agent for a fresh connector and waits until it is connected.
pub fn connected_agent(world: &World, name: &str, extra: serde_json::Value) -> AgentProc {
    let events = world.gateway.subscribe();
    let key = world.key(name);
    let agent = AgentProc::start(&world.agent_config(name, key.expose(), extra));
    wait_event(&events, |e| match e {
        GatewayEvent::AgentConnected { connector, .. } if connector == name => Some(()),
        _ => None,
    });
    agent
}

/// Runs `mini-connector <args>` to completion and returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `--json` answer (docs/CLI.md): one line, `{"ok": true, "data": D}` gives D, a failure
/// envelope `{"ok": false, "error": {"code", "message"}}` is returned whole.
#[track_caller]
pub fn json_answer(stdout: &str) -> serde_json::Value {
    assert_eq!(stdout.lines().count(), 1, "--json prints one line: {stdout:?}");
    let value: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"));
    match value["ok"].as_bool() {
        Some(true) => value["data"].clone(),
        Some(false) => value,
        None => panic!("no envelope: {stdout}"),
    }
}

/// Runs `mini-connector <args>` with `stdin` piped in; returns (exit code, stdout, stderr).
pub fn cli_stdin(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A database server URL from the environment `scripts/db-servers.sh env` prints; `None` (the
/// test skips) when it is not set, a failure when `MC_REQUIRE_DB_SERVERS=1` (CI).
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("MC_REQUIRE_DB_SERVERS").as_deref() != Ok("1"),
                "MC_REQUIRE_DB_SERVERS=1 but {var} is not set: start scripts/db-servers.sh"
            );
            eprintln!("skipping: {var} not set (run scripts/db-servers.sh start)");
            None
        }
    }
}

/// `scheme://user:password@host:port/database`, as `scripts/db-servers.sh env` prints them.
pub struct DbUrl {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl DbUrl {
    pub fn parse(url: &str) -> Self {
        let rest = url.split_once("://").unwrap().1;
        let (credentials, rest) = rest.rsplit_once('@').unwrap();
        let (user, password) = credentials.split_once(':').unwrap();
        let (host_port, database) = rest.split_once('/').unwrap();
        let (host, port) = host_port.rsplit_once(':').unwrap();
        DbUrl {
            user: user.into(),
            password: password.into(),
            host: host.into(),
            port: port.parse().unwrap(),
            database: database.into(),
        }
    }
}

/// A network test tool (`tinyproxy`, `mitmdump`, …) found on `PATH`; `None` (the test skips)
/// when it is missing, a failure when `MC_REQUIRE_NET_TOOLS=1` (CI installs them with
/// `scripts/net-tools.sh`).
pub fn net_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("MC_REQUIRE_NET_TOOLS").as_deref() != Ok("1"),
            "MC_REQUIRE_NET_TOOLS=1 but {name} is not on PATH: run scripts/net-tools.sh"
        );
        eprintln!("skipping: {name} not on PATH (run scripts/net-tools.sh)");
    }
    found
}
