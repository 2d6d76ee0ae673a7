//! `configure`, `key show|rotate`, `vault status|reset` against the real binary, in a sandbox
//! (own HOME/XDG dirs, config in a temp dir), plus one run of the real agent authenticating
//! with the key from the vault.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gateway::GatewayEvent;
use mini_connector::protocol::ApiKey;
use serde_json::Value;

use crate::support::{AgentProc, TempDir, World, sample_erp, wait_event};

/// A scratch machine for one test: HOME, XDG dirs and the configuration under one temp dir.
pub struct Sandbox {
    pub dir: TempDir,
    pub config: PathBuf,
}

/// What one run printed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }
}

impl Sandbox {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let config = dir.0.join("etc").join("config.json");
        Self { dir, config }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel)
    }

    /// Runs `mini-connector <args>` with this sandbox's config (MINI_CONNECTOR_CONFIG) and
    /// home, feeding `stdin` (or nothing).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let home = self.dir.0.join("home");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
            .args(args)
            .env("MINI_CONNECTOR_CONFIG", &self.config)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `configure` with a fresh key; returns the key.
    pub fn configure(&self, url: &str) -> ApiKey {
        let key = ApiKey::generate("acme").unwrap();
        self.run(
            &["configure", "--name", "Warehouse", "--cloud-url", url, "--api-key-stdin"],
            Some(&format!("{}\n", key.expose())),
        )
        .ok();
        key
    }

    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap()
    }

    /// Fails if any file in the sandbox contains `needle`.
    #[track_caller]
    pub fn assert_nowhere(&self, needle: &str) {
        let files = files_under(&self.dir.0);
        assert!(files.len() >= 3, "expected config, vault and install id: {files:?}");
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains the secret",
                file.display()
            );
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                found.push(path);
            }
        }
    }
    found
}

const URL: &str = "wss://console.example.com/ws";

#[test]
fn configure_keeps_the_key_in_the_vault_and_only_a_reference_in_the_config() {
    let sandbox = Sandbox::new("configure");
    let key = ApiKey::generate("acme").unwrap();
    let out = sandbox
        .run(
            &["configure", "--name", "Warehouse", "--cloud-url", URL, "--api-key-stdin"],
            Some(&format!("{}\n", key.expose())),
        )
        .ok();
    assert!(out.stdout.contains(&key.masked()), "{out:?}");
    assert!(!out.stdout.contains(key.expose()) && !out.stderr.contains(key.expose()));

    let config = sandbox.config_json();
    assert_eq!(config["apiKeyRef"], "vault://apikey");
    assert_eq!(config["connectorName"], "Warehouse");
    assert_eq!(config["cloudUrl"], URL);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&sandbox.config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "config must be owner-only");
    }
    assert!(sandbox.path("etc/vault/vault.bin").exists(), "vault next to the config");

    let check = sandbox.run(&["config", "check"], None).ok();
    assert!(check.stdout.contains(&key.masked()), "{check:?}");
    let shown = sandbox.run(&["key", "show", "--json"], None).ok().json();
    assert_eq!(shown["reference"], "vault://apikey");
    assert_eq!(shown["masked"], key.masked());
    assert_eq!(shown["tenant"], "acme");
    let status = sandbox.run(&["vault", "status", "--json"], None).ok().json();
    assert_eq!(status["readable"], true);
    assert_eq!(status["apiKeyStored"], true);
    assert_eq!(status["credentials"], serde_json::json!([]));

    // Updating leaves the key alone and keeps other settings.
    sandbox.run(&["configure", "--proxy", "http://proxy.local:3128", "--heartbeat-ms", "15000"], None).ok();
    let config = sandbox.config_json();
    assert_eq!(config["proxyUrl"], "http://proxy.local:3128");
    assert_eq!(config["heartbeatIntervalMs"], 15000);
    assert_eq!(config["connectorName"], "Warehouse");
    assert_eq!(sandbox.run(&["key", "show", "--json"], None).ok().json()["masked"], key.masked());

    sandbox.assert_nowhere(key.expose());
}

#[test]
fn a_malformed_key_is_refused_before_anything_is_written() {
    let sandbox = Sandbox::new("configure-bad-key");
    let out = sandbox.run(
        &["configure", "--name", "W", "--cloud-url", URL, "--api-key-stdin"],
        Some("vmc_acme_abcdefghijklmnop_00000\n"),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("malformed API key"), "{out:?}");
    assert!(!sandbox.config.exists());
    assert!(!sandbox.path("etc/vault").exists());
}

#[test]
fn a_new_configuration_needs_a_name_a_url_and_a_key() {
    let sandbox = Sandbox::new("configure-missing");
    let key = ApiKey::generate("acme").unwrap();
    let out = sandbox.run(&["configure", "--cloud-url", URL, "--api-key-stdin"], Some(key.expose()));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--name"), "{out:?}");
    let out = sandbox.run(&["configure", "--name", "W", "--cloud-url", URL], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("API key"), "{out:?}");
    let out = sandbox.run(
        &["configure", "--name", "W", "--cloud-url", "ws://plain.example.com/ws", "--api-key-stdin"],
        Some(key.expose()),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("cloudUrl"), "{out:?}");
    assert!(!sandbox.config.exists());
    // Commands that need a configuration say how to make one.
    let out = sandbox.run(&["key", "show"], None);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("mini-connector configure"), "{out:?}");
}

#[test]
fn key_rotate_replaces_the_stored_key_and_refuses_a_malformed_one() {
    let sandbox = Sandbox::new("rotate");
    let old = sandbox.configure(URL);
    let new = ApiKey::generate("acme").unwrap();
    let out = sandbox.run(&["key", "rotate", "--api-key-stdin"], Some(new.expose())).ok();
    assert!(out.stdout.contains(&new.masked()), "{out:?}");
    assert_eq!(sandbox.run(&["key", "show", "--json"], None).ok().json()["masked"], new.masked());

    let out = sandbox.run(&["key", "rotate", "--api-key-stdin"], Some("not-a-key"));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(sandbox.run(&["key", "show", "--json"], None).ok().json()["masked"], new.masked());
    // Without a terminal there is nobody to ask.
    let out = sandbox.run(&["key", "rotate"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--api-key-stdin"), "{out:?}");

    sandbox.assert_nowhere(old.expose());
    sandbox.assert_nowhere(new.expose());
}

#[test]
fn a_vault_that_cannot_be_decrypted_here_says_vault_decrypt_error_and_how_to_reenter() {
    let sandbox = Sandbox::new("decrypt");
    sandbox.configure(URL);
    // Another install id = another machine's vault, as far as the key derivation goes.
    std::fs::write(sandbox.path("etc/vault/install-id"), "00000000-0000-4000-8000-000000000000").unwrap();

    let out = sandbox.run(&["key", "show"], None);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("VAULT_DECRYPT_ERROR"), "{out:?}");
    assert!(out.stderr.contains("vault reset"), "{out:?}");
    let out = sandbox.run(&["config", "check"], None);
    assert_eq!(out.code, Some(4), "{out:?}");
    let out = sandbox.run(&["vault", "status", "--json"], None);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(out.json()["readable"], false);

    let out = sandbox.run(&["vault", "reset"], None).ok();
    assert!(out.stdout.contains("key rotate"), "{out:?}");
    assert!(
        files_under(&sandbox.path("etc/vault")).iter().any(|f| f.to_string_lossy().contains("unreadable"))
    );
    let key = ApiKey::generate("acme").unwrap();
    sandbox.run(&["key", "rotate", "--api-key-stdin"], Some(key.expose())).ok();
    assert_eq!(sandbox.run(&["key", "show", "--json"], None).ok().json()["masked"], key.masked());
    // A readable vault is never reset.
    let out = sandbox.run(&["vault", "reset"], None).ok();
    assert!(out.stdout.contains("nothing to reset"), "{out:?}");
}

#[test]
fn the_agent_authenticates_with_the_key_stored_by_configure() {
    let world = World::new("configure-e2e");
    let key = world.key("Vaulted");
    let sandbox = Sandbox::new("configure-e2e");
    let ca = world.gateway.ca_cert_path();
    let out = sandbox.run(
        &[
            "configure",
            "--name",
            "Vaulted",
            "--cloud-url",
            &world.gateway.ws_url(),
            "--ca-cert",
            ca.to_str().unwrap(),
            "--api-key-stdin",
        ],
        Some(key.expose()),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let erp = sample_erp();
    sandbox
        .run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", erp.to_str().unwrap()], None)
        .ok();
    // Keep the agent's logs in the sandbox.
    let mut config = sandbox.config_json();
    config["logDir"] = sandbox.path("logs").to_string_lossy().into();
    std::fs::write(&sandbox.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let events = world.gateway.subscribe();
    let mut agent = AgentProc::start(&sandbox.config);
    wait_event(&events, |e| match e {
        GatewayEvent::AgentConnected { connector, .. } if connector == "Vaulted" => Some(()),
        _ => None,
    });
    let status = sandbox.run(&["status", "--json"], None).ok().json();
    assert_eq!(status["connected"], true, "{status}");
    sandbox.run(&["stop"], None).ok();
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.log_text());
    assert!(!agent.log_text().contains(key.expose()));
    sandbox.assert_nowhere(key.expose());
}
