//! Signed updates (spec §9.3, docs/UPDATES.md) with real processes: the reference gateway
//! publishes `--updates-dir` files at `/updates/…` over its TLS listener, the files are signed
//! with the minisign CLI and the test key (`tests/fixtures/update/test.key`, trusted by debug
//! builds only), and the real `mini-connector` binary runs `update check|apply` or, as an
//! agent with `autoUpdate`, updates itself.
//!
//! The binary being replaced is a small stand-in (`MC_TEST_UPDATE_EXE`, debug builds only): a
//! shell script that execs the real test binary. Copying the 300 MB debug binary three times per
//! test would cost gigabytes of disk; the swap, the trial run (`update probe` against the
//! gateway) and the rollback are the same code either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};

use crate::support::{TempDir, WATCHDOG, World, net_tool};

const BIN: &str = env!("CARGO_BIN_EXE_mini-connector");
const TEST_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/update/test.key");

/// A gateway publishing an updates directory, an agent configuration for it, and an
/// "installed" binary to update.
struct Setup {
    world: World,
    updates: PathBuf,
    exe: PathBuf,
    config: PathBuf,
    old: Vec<u8>,
    minisign: PathBuf,
}

/// A stand-in binary: execs the real one; `tag` makes each version's bytes differ.
fn script(tag: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# {tag}\nexec \"{BIN}\" \"$@\"\n").into_bytes()
}

impl Setup {
    fn new(tag: &str) -> Option<Self> {
        let minisign = net_tool("minisign")?;
        let dir = TempDir::new(tag);
        let updates = dir.0.join("updates");
        std::fs::create_dir_all(&updates).unwrap();
        let mut config = GatewayConfig::new(dir.0.join("gateway"));
        config.updates_dir = Some(updates.clone());
        let world = World { gateway: Gateway::start(config).unwrap(), dir };
        let key = world.key("Updater");
        let config = world.agent_config("Updater", key.expose(), json!({ "autoUpdate": false }));
        let bin = world.dir.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("mini-connector");
        let old = script("version 0.1.0");
        write_exe(&exe, &old);
        Some(Self { world, updates, exe, config, old, minisign })
    }

    /// Signs `path` with `key` (writes `<path>.minisig`).
    fn sign_with(&self, path: &Path, key: &str) {
        let status = Command::new(&self.minisign)
            .args(["-S", "-s", key, "-m"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "minisign -S failed");
    }

    /// Publishes `artefact` as version `version` in `dir` (signed manifest + signed file).
    fn publish_in(&self, dir: &Path, version: &str, artefact: &[u8]) -> PathBuf {
        let name = format!("mini-connector-{version}-{}-{}", std::env::consts::OS, std::env::consts::ARCH);
        let file = dir.join(&name);
        std::fs::write(&file, artefact).unwrap();
        self.sign_with(&file, TEST_KEY);
        let manifest = json!({
            "product": "mini-connector",
            "version": version,
            "released": "2026-12-02",
            "artefacts": [{
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "kind": "binary",
                "url": name,
                "sha256": sha256_hex(artefact),
                "size": artefact.len(),
            }]
        });
        let path = dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        self.sign_with(&path, TEST_KEY);
        file
    }

    fn publish(&self, version: &str, artefact: &[u8]) -> PathBuf {
        self.publish_in(&self.updates, version, artefact)
    }

    /// Runs the real binary with the stand-in as the binary to update.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("MC_TEST_UPDATE_EXE", &self.exe)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn apply(&self) -> (Option<i32>, Value, String) {
        let (code, out, err) = self.run(&["update", "apply", "--yes", "--json"], &[]);
        let value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("not one JSON line ({e}): {out}\n{err}"));
        (code, value, err)
    }

    fn installed(&self) -> Vec<u8> {
        std::fs::read(&self.exe).unwrap()
    }

    fn previous(&self) -> PathBuf {
        self.exe.with_file_name("mini-connector.previous")
    }

    fn marker(&self) -> PathBuf {
        self.exe.with_file_name("mini-connector.update-pending")
    }

    /// Only the stand-in (no `.previous`, marker or download left behind) is in its directory.
    fn assert_untouched(&self) {
        assert_eq!(self.installed(), self.old, "the installed binary changed");
        assert!(!self.marker().exists(), "update marker left behind");
        let left: Vec<_> = std::fs::read_dir(self.exe.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".download-") || n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

fn write_exe(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn error_code(value: &Value) -> &str {
    assert_eq!(value["ok"], false, "{value}");
    value["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn check_then_apply_installs_the_new_version_keeps_the_previous_and_it_runs() {
    let Some(s) = Setup::new("update-apply") else { return };
    let new = script("version 9.9.9");
    s.publish("9.9.9", &new);

    // The manifest URL is derived from cloudUrl: https://<host:port>/updates/manifest.json.
    let (code, out, err) = s.run(&["update", "check", "--json"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let check: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["data"]["latest"], "9.9.9");
    assert_eq!(check["data"]["current"], env!("CARGO_PKG_VERSION"));
    assert_eq!(check["data"]["updateAvailable"], true);

    // Without --yes and without a terminal to confirm on: a usage error, nothing changed.
    let (code, _, err) = s.run(&["update", "apply"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--yes"), "{err}");
    s.assert_untouched();

    let (code, value, err) = s.apply();
    assert_eq!(code, Some(0), "{value}\n{err}");
    assert_eq!(value["ok"], true, "{value}");
    assert_eq!(value["data"]["to"], "9.9.9");
    assert_eq!(s.installed(), new, "the new binary is in place");
    assert_eq!(std::fs::read(s.previous()).unwrap(), s.old, "the previous binary is kept");
    assert!(!s.marker().exists(), "the marker is cleared once the trial passed");
    // The new binary runs.
    let out = Command::new(&s.exe).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("mini-connector"));

    // Applying again: the same version is not newer (exit 6, UPDATE_NOT_NEWER).
    let (code, value, _) =
        s.run(&["update", "apply", "--yes", "--json"], &[("MC_TEST_VERSION_OVERRIDE", "9.9.9")]);
    let value: Value = serde_json::from_str(value.trim()).unwrap();
    assert_eq!((code, error_code(&value)), (Some(6), "UPDATE_NOT_NEWER"));
}

#[test]
fn a_tampered_or_unsigned_artefact_is_refused_and_the_binary_is_untouched() {
    let Some(s) = Setup::new("update-tampered") else { return };
    let file = s.publish("9.9.9", &script("version 9.9.9"));
    // Same size, other bytes: the SHA-256 no longer matches the signed manifest.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let (code, value, err) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(5), "UPDATE_INTEGRITY"), "{value}\n{err}");
    s.assert_untouched();
    assert!(!s.previous().exists());

    // The artefact's own signature missing.
    let file = s.publish("9.9.9", &script("version 9.9.9"));
    std::fs::remove_file(format!("{}.minisig", file.display())).unwrap();
    let (code, value, _) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(5), "UPDATE_BAD_SIGNATURE"), "{value}");
    s.assert_untouched();
}

#[test]
fn a_bad_manifest_signature_is_refused() {
    let Some(s) = Setup::new("update-badsig") else { return };
    s.publish("9.9.9", &script("version 9.9.9"));
    let manifest = s.updates.join("manifest.json");
    // Edited after signing.
    let text = std::fs::read_to_string(&manifest).unwrap().replace("2026-12-02", "2026-12-03");
    std::fs::write(&manifest, text).unwrap();
    let (code, value, _) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(5), "UPDATE_BAD_SIGNATURE"), "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("does not match"), "{value}");
    s.assert_untouched();

    // Signed by a key the binary does not trust.
    let other = s.world.dir.0.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let status = Command::new(&s.minisign)
        .args(["-G", "-W", "-f", "-p"])
        .arg(other.join("k.pub"))
        .arg("-s")
        .arg(other.join("k.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    s.sign_with(&manifest, other.join("k.key").to_str().unwrap());
    let (code, value, _) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(5), "UPDATE_BAD_SIGNATURE"), "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("does not trust"), "{value}");

    // No signature at all.
    std::fs::remove_file(s.updates.join("manifest.json.minisig")).unwrap();
    let (code, value, _) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(5), "UPDATE_BAD_SIGNATURE"), "{value}");
    s.assert_untouched();
}

#[test]
fn a_downgrade_is_refused() {
    let Some(s) = Setup::new("update-downgrade") else { return };
    s.publish("1.0.0", &script("version 1.0.0"));
    let (code, out, err) =
        s.run(&["update", "apply", "--yes", "--json"], &[("MC_TEST_VERSION_OVERRIDE", "1.2.0")]);
    let value: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}\n{err}"));
    assert_eq!((code, error_code(&value)), (Some(6), "UPDATE_NOT_NEWER"), "{value}");
    assert!(
        value["error"]["message"].as_str().unwrap().contains("1.0.0 is not newer than the installed 1.2.0")
    );
    s.assert_untouched();
    // `check` says so without failing.
    let (code, out, _) = s.run(&["update", "check"], &[("MC_TEST_VERSION_OVERRIDE", "1.2.0")]);
    assert_eq!(code, Some(0));
    assert!(out.contains("up to date"), "{out}");
}

#[test]
fn a_new_binary_that_fails_to_start_is_rolled_back() {
    let Some(s) = Setup::new("update-rollback") else { return };
    // Correctly signed, but it exits 1 at once.
    s.publish("9.9.9", b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    let (code, value, err) = s.apply();
    assert_eq!((code, error_code(&value)), (Some(7), "UPDATE_ROLLED_BACK"), "{value}\n{err}");
    assert!(value["error"]["message"].as_str().unwrap().contains("broken build"), "{value}");
    s.assert_untouched();
    assert_eq!(std::fs::read(s.previous()).unwrap(), s.old);

    // One that hangs instead of connecting: rolled back at the trial's bound.
    s.publish("9.9.9", b"#!/bin/sh\nexec sleep 600\n");
    let started = Instant::now();
    let (code, out, _) =
        s.run(&["update", "apply", "--yes", "--json"], &[("MC_TEST_TRIAL_TIMEOUT_MS", "1500")]);
    let value: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((code, error_code(&value)), (Some(7), "UPDATE_ROLLED_BACK"), "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("within 1 s"), "{value}");
    assert!(started.elapsed() < WATCHDOG);
    s.assert_untouched();
}

#[test]
fn the_offline_package_applies_with_file() {
    let Some(s) = Setup::new("update-offline") else { return };
    let package = s.world.dir.0.join("package");
    std::fs::create_dir_all(&package).unwrap();
    let new = script("version 9.9.9 offline");
    s.publish_in(&package, "9.9.9", &new);
    let manifest = package.join("manifest.json");
    let (code, out, err) = s.run(&["update", "apply", "--yes", "--file", manifest.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("→ 9.9.9"), "{out}");
    assert_eq!(s.installed(), new);

    // A tampered offline package is refused like a download.
    let s2 = Setup::new("update-offline-bad").unwrap();
    let file = s2.publish_in(&package, "9.9.9", &script("version 9.9.9 offline"));
    std::fs::write(&file, script("version 9.9.9 offlinX")).unwrap();
    let (code, _, err) = s2.run(&["update", "apply", "--yes", "--file", package.to_str().unwrap()], &[]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("UPDATE_INTEGRITY"), "{err}");
    s2.assert_untouched();
}

#[test]
fn an_agent_with_auto_update_installs_and_exits_for_its_restart() {
    let Some(s) = Setup::new("update-auto") else { return };
    let new = script("version 9.9.9 auto");
    s.publish("9.9.9", &new);
    let mut config: Value = serde_json::from_slice(&std::fs::read(&s.config).unwrap()).unwrap();
    config["autoUpdate"] = json!(true);
    std::fs::write(&s.config, serde_json::to_vec(&config).unwrap()).unwrap();
    let log = s.world.dir.0.join("auto.log");
    let mut agent = Command::new(BIN)
        .args(["start", "--config"])
        .arg(&s.config)
        .env("MC_TEST_UPDATE_EXE", &s.exe)
        .env("MC_TEST_UPDATE_DELAY_MS", "0")
        .env("MC_RESTART_BY_EXIT", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent did not restart for the update:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(75), "{text}");
    assert!(text.contains("update installed"), "{text}");
    assert_eq!(s.installed(), new);
    assert_eq!(std::fs::read(s.previous()).unwrap(), s.old);
}

#[test]
fn an_update_cut_off_before_its_trial_is_rolled_back_at_the_next_start() {
    let Some(s) = Setup::new("update-interrupted") else { return };
    // What `install` leaves when it dies between the swap and the end of the trial.
    std::fs::copy(&s.exe, s.previous()).unwrap();
    write_exe(&s.exe, &script("version 9.9.9 unproven"));
    std::fs::write(s.marker(), r#"{"from":"0.1.0","to":"9.9.9"}"#).unwrap();
    let out = Command::new(BIN)
        .args(["start", "--config"])
        .arg(&s.config)
        .env("MC_TEST_UPDATE_EXE", &s.exe)
        .env("MC_RESTART_BY_EXIT", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    s.assert_untouched();
}

#[test]
fn updates_are_fetched_through_the_configured_proxy() {
    let Some(s) = Setup::new("update-proxy") else { return };
    let Some(tinyproxy) = net_tool("tinyproxy") else { return };
    let dir = TempDir::new("update-tinyproxy");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.0.join("tinyproxy.conf");
    let proxy_log = dir.0.join("tinyproxy.log");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Connect\nLogFile \"{}\"\nPidFile \"{}\"\nAllow 127.0.0.1\n",
            proxy_log.display(),
            dir.0.join("tinyproxy.pid").display()
        ),
    )
    .unwrap();
    let mut proxy = Command::new(tinyproxy)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tinyproxy did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut config: Value = serde_json::from_slice(&std::fs::read(&s.config).unwrap()).unwrap();
    config["proxyUrl"] = json!(format!("http://127.0.0.1:{port}"));
    std::fs::write(&s.config, serde_json::to_vec(&config).unwrap()).unwrap();
    let new = script("version 9.9.9 proxied");
    s.publish("9.9.9", &new);
    let (code, out, err) = s.run(&["update", "apply", "--yes"], &[("NO_PROXY", ""), ("no_proxy", "")]);
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(s.installed(), new);
    let log = std::fs::read_to_string(&proxy_log).unwrap_or_default();
    let gateway_port = s.world.gateway.local_addr().port();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{gateway_port}")), "the proxy saw no CONNECT:\n{log}");
}

#[test]
fn the_gateway_serves_update_files_read_only_and_refuses_traversal() {
    let Some(s) = Setup::new("update-serve") else { return };
    s.publish("9.9.9", &script("x"));
    std::fs::write(s.world.dir.0.join("secret.txt"), "TOPSECRET-CONTENT").unwrap();
    let tls = mini_connector::tls::client_config(Some(s.world.gateway.ca_cert_path().as_path())).unwrap();
    let http = mini_connector::https::agent(
        tls,
        mini_connector::proxy::ProxySettings::direct(),
        Duration::from_secs(10),
    )
    .unwrap();
    let base = format!("https://{}", s.world.gateway.local_addr());
    let get = |path: &str| {
        let mut response = http.get(&format!("{base}{path}")).call().unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, body) = get("/updates/manifest.json");
    assert_eq!(status, 200);
    assert!(body.contains("\"version\": \"9.9.9\""), "{body}");
    for path in [
        "/updates/../secret.txt",
        "/updates/%2e%2e/secret.txt",
        "/updates/..%2fsecret.txt",
        "/updates/.hidden",
    ] {
        let (status, body) = get(path);
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains("TOPSECRET"), "{path}: {body}");
    }
    let (status, _) = get("/updates/missing.json");
    assert_eq!(status, 404);
    let status = http.post(&format!("{base}/updates/manifest.json")).send("x").unwrap().status().as_u16();
    assert_eq!(status, 405);
}
