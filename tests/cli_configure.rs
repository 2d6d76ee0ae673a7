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
    /// The `--json` envelope (one line of stdout, `ok` a boolean).
    #[track_caller]
    pub fn envelope(&self) -> Value {
        assert_eq!(self.stdout.lines().count(), 1, "--json prints one line: {self:?}");
        let value: Value =
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert!(value["ok"].is_boolean(), "no envelope: {self:?}");
        value
    }

    /// A `--json` answer: the envelope's `data` on success, else the whole failure envelope
    /// (`{"ok": false, "error": {"code", "message"}}`).
    #[track_caller]
    pub fn json(&self) -> Value {
        let value = self.envelope();
        if value["ok"] == true { value["data"].clone() } else { value }
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
        // MC_CLI_BIN runs these tests against another build (e.g. to show a test failing
        // on an older binary).
        let bin =
            std::env::var_os("MC_CLI_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mini-connector").into());
        let mut child = Command::new(bin)
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

/// The sandbox user's default key directory (`$XDG_STATE_HOME/mini-connector/vault-keys`).
const KEY_DIR: &str = "home/.local/state/mini-connector/vault-keys";

/// Issue 8, hole 6: the vault directory plus `/etc/machine-id` used to decrypt every credential.
/// Now the install secret lives in the user's state directory, outside the vault directory; a
/// copy of the vault directory on this very machine fails with a message naming the missing
/// file (never the secret), and `vault status` says where the key material is.
#[test]
fn a_copied_vault_directory_without_its_install_secret_does_not_open() {
    let sandbox = Sandbox::new("vault-copy");
    let key = sandbox.configure(URL);
    let status = sandbox.run(&["vault", "status", "--json"], None).ok().json();
    let key_dir = sandbox.path(KEY_DIR);
    assert_eq!(status["keyDir"], key_dir.to_string_lossy().as_ref());
    let install_id = std::fs::read_to_string(sandbox.path("etc/vault/install-id")).unwrap();
    let secret_file = key_dir.join(format!("{}.key", install_id.trim()));
    assert_eq!(status["installSecret"], secret_file.to_string_lossy().as_ref());
    assert_eq!(status["hardwareBound"], false, "no product_uuid readable in this sandbox");
    assert!(secret_file.is_file());
    assert!(
        !files_under(&sandbox.path("etc/vault")).iter().any(|f| f.extension().is_some_and(|e| e == "key"))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_dir), 0o700);
        assert_eq!(mode(&secret_file), 0o600);
    }
    let secret = std::fs::read(&secret_file).unwrap();

    // The same vault directory and config, as another user on this machine (or a restored
    // backup of the directory) would have them: a new HOME, so no install secret.
    let thief = Sandbox::new("vault-copy-thief");
    std::fs::create_dir_all(thief.path("etc")).unwrap();
    std::fs::copy(&sandbox.config, &thief.config).unwrap();
    for file in files_under(&sandbox.path("etc/vault")) {
        let to = thief.path("etc/vault").join(file.file_name().unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let out = thief.run(&["key", "show"], None);
    assert_eq!(out.code, Some(4), "{out:?}");
    let expected = thief.path(KEY_DIR).join(format!("{}.key", install_id.trim()));
    assert!(out.stderr.contains("install secret is missing"), "{out:?}");
    assert!(out.stderr.contains(&expected.display().to_string()), "{out:?}");
    assert!(out.stderr.contains("VAULT_DECRYPT_ERROR"), "{out:?}");
    assert!(!out.stderr.contains(key.expose()) && !out.stdout.contains(key.expose()));
    let hex: String = secret[9..].iter().map(|b| format!("{b:02x}")).collect();
    assert!(!out.stderr.contains(&hex));
    assert!(!thief.path(KEY_DIR).exists(), "no secret invented for a copied vault");

    // With the key file restored next to it, the copy reads again.
    std::fs::create_dir_all(thief.path(KEY_DIR)).unwrap();
    std::fs::copy(&secret_file, &expected).unwrap();
    assert_eq!(thief.run(&["key", "show", "--json"], None).ok().json()["masked"], key.masked());
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
    // Keep the agent's logs in the sandbox; the agent runs without the sandbox's HOME, so it is
    // told where the vault's install secret is (the sandbox user's state directory).
    let mut config = sandbox.config_json();
    config["logDir"] = sandbox.path("logs").to_string_lossy().into();
    config["vaultKeyDir"] = sandbox.path(KEY_DIR).to_string_lossy().into();
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
