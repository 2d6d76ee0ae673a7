//! Proxies and TLS against real tools on loopback: tinyproxy (a forward proxy, with and without
//! Basic auth) and mitmproxy (a TLS-intercepting proxy). The agent's link and its chunk
//! uploads both go through the proxy; refusals are reported as the proxy's, not as TLS errors;
//! `pinnedSpki` refuses a re-signed certificate even when its CA is trusted.

use crate::support::cli_stdin;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::GatewayEvent;
use serde_json::json;

use crate::e2e_query::big_query;
use crate::support::{AgentProc, WATCHDOG, World, net_tool, wait_event};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn gateway_port(world: &World) -> u16 {
    let url = world.gateway.ws_url();
    let authority = url.trim_start_matches("wss://").split('/').next().unwrap().to_owned();
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Waits until something listens on `port`, or `child` exits.
fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + WATCHDOG;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} never listened on {port}");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tinyproxy on loopback, allowing CONNECT to `connect_port` only.
struct Tinyproxy {
    _proc: Proc,
    port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    fn start(dir: &Path, connect_port: u16, basic_auth: Option<(&str, &str)>) -> Option<Self> {
        let binary = net_tool("tinyproxy")?;
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nConnectPort {connect_port}\n\
             MaxClients 50\nLogLevel Info\nLogFile \"{}\"\n",
            log.display()
        );
        if let Some((user, password)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("tinyproxy.stderr")).unwrap())
            .spawn()
            .unwrap();
        wait_listening(&mut child, port, "tinyproxy", &dir.join("tinyproxy.stderr"));
        Some(Self { _proc: Proc(child), port, log })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many CONNECT requests it logged.
    fn connects(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches("Request (file descriptor").count()
    }
}

/// An agent started with extra environment variables (the proxy variables are always cleared
/// first, so the machine's own settings do not leak in).
fn start_agent_env(config: &Path, env: &[(&str, &str)]) -> AgentProc {
    let log = config.with_file_name("agent.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mini-connector"));
    command.args(["start", "--config"]).arg(config).env_remove("RUST_LOG");
    for name in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    AgentProc { child, log, config: config.to_owned() }
}

fn wait_connected(events: &crossbeam_channel::Receiver<GatewayEvent>, name: &str) {
    wait_event(events, |e| match e {
        GatewayEvent::AgentConnected { connector, .. } if connector == name => Some(()),
        _ => None,
    });
}

/// The agent's config for `name` plus a vault in its directory, for proxy passwords.
fn config_with_vault(world: &World, name: &str, extra: serde_json::Value) -> PathBuf {
    let key = world.key(name);
    let config = world.agent_config(name, key.expose(), extra);
    let dir = config.parent().unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    value["vaultDir"] = dir.join("vault").to_string_lossy().into();
    value["vaultKeyDir"] = dir.join("vault-keys").to_string_lossy().into();
    std::fs::write(&config, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    config
}

/// Every file under `dir`, as text.
fn all_text_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

#[test]
fn link_and_uploads_go_through_tinyproxy() {
    let world = World::new("proxy-plain");
    let Some(proxy) = Tinyproxy::start(&world.dir.0, gateway_port(&world), None) else { return };
    let events = world.gateway.subscribe();
    let config = config_with_vault(&world, "Proxied", json!({ "proxyUrl": proxy.url() }));
    let _agent = start_agent_env(&config, &[]);
    wait_connected(&events, "Proxied");
    let link_connects = proxy.connects();
    assert!(link_connects >= 1, "the link did not go through the proxy");

    let outcome = world.gateway.query("Proxied", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert!(outcome.buffered.as_ref().is_some_and(|b| b.chunk_count >= 1), "the result was uploaded");
    assert!(proxy.connects() > link_connects, "the uploads did not go through the proxy");
}

#[test]
fn basic_auth_credentials_live_in_the_vault_and_a_wrong_password_is_a_proxy_error() {
    const PASSWORD: &str = "pr0xy-S3cret";
    let world = World::new("proxy-auth");
    let Some(proxy) = Tinyproxy::start(&world.dir.0, gateway_port(&world), Some(("alice", PASSWORD))) else {
        return;
    };
    let config = config_with_vault(&world, "Authed", json!({}));
    let config_arg = config.to_str().unwrap();
    let url_with_password = format!("http://alice:{PASSWORD}@127.0.0.1:{}", proxy.port);
    let (code, out, err) =
        cli_stdin(&["configure", "--config", config_arg, "--proxy", &url_with_password], "");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "configure printed the password:\n{out}{err}"
    );
    assert!(out.contains(&format!("proxy:      {} (user alice", proxy.url())), "{out}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(!saved.contains(PASSWORD), "the password is in config.json:\n{saved}");
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["proxyUrl"], json!(proxy.url()));
    assert_eq!(saved["proxyUser"], json!("alice"));

    let events = world.gateway.subscribe();
    let mut agent = start_agent_env(&config, &[]);
    wait_connected(&events, "Authed");
    let outcome = world.gateway.query("Authed", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert!(outcome.buffered.as_ref().is_some_and(|b| b.chunk_count >= 1), "the result was uploaded");
    let _ = agent.child.kill();
    let _ = agent.child.wait();

    // A wrong password (given on stdin this time): the agent says the proxy refused it.
    let (code, out, err) = cli_stdin(
        &[
            "configure",
            "--config",
            config_arg,
            "--proxy",
            &format!("http://alice@127.0.0.1:{}", proxy.port),
            "--proxy-password-stdin",
        ],
        "not-the-password\n",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("proxy authentication required");
    let log = agent.log_text();
    let line = log.lines().find(|l| l.contains("proxy authentication required")).unwrap();
    assert!(line.contains("refused the user/password"), "{line}");
    assert!(!line.contains("TLS"), "a proxy refusal is not a TLS error: {line}");
    drop(agent);

    let dir = config.parent().unwrap();
    let everything = all_text_under(dir);
    assert!(!everything.contains(PASSWORD), "the password is in a file under {}", dir.display());
    assert!(!everything.contains("not-the-password"), "the wrong password is in a file");
}

#[test]
fn a_proxy_that_forbids_the_port_is_reported_as_forbidding_it() {
    let world = World::new("proxy-forbidden");
    // CONNECT is allowed to another port only: tinyproxy answers 403.
    let other = gateway_port(&world).wrapping_add(1).max(1);
    let Some(proxy) = Tinyproxy::start(&world.dir.0, other, None) else { return };
    let config = config_with_vault(&world, "Forbidden", json!({ "proxyUrl": proxy.url() }));
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("forbids CONNECT to 127.0.0.1:");
    let log = agent.log_text();
    let line = log.lines().find(|l| l.contains("forbids CONNECT")).unwrap();
    assert!(line.contains(&format!("the proxy {} forbids CONNECT", proxy.url())), "{line}");
    assert!(!line.contains("TLS"), "{line}");
}

#[test]
fn an_existing_config_with_inline_credentials_is_refused_until_configure_moves_them() {
    let world = World::new("proxy-inline");
    let config =
        config_with_vault(&world, "Inline", json!({ "proxyUrl": "http://bob:hunter22@127.0.0.1:9" }));
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("holds a user or password");
    assert!(!agent.log_text().contains("hunter22"), "{}", agent.log_text());
    drop(agent);
    let (code, out, err) = cli_stdin(&["configure", "--config", config.to_str().unwrap()], "");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(user bob, password in the vault)"), "{out}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(!saved.contains("hunter22"), "{saved}");
    assert!(saved.contains("\"proxyUser\": \"bob\""), "{saved}");

    // Another user does not inherit bob's password.
    let (code, out, err) = cli_stdin(
        &["configure", "--config", config.to_str().unwrap(), "--proxy", "http://carol@127.0.0.1:9"],
        "",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(user carol)") && out.contains("no proxy password is stored yet"), "{out}");
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("no proxy password is stored");
}

#[test]
fn https_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it() {
    let world = World::new("proxy-env");
    let Some(proxy) = Tinyproxy::start(&world.dir.0, gateway_port(&world), None) else { return };
    let events = world.gateway.subscribe();
    let config = config_with_vault(&world, "EnvProxied", json!({}));
    let agent = start_agent_env(&config, &[("HTTPS_PROXY", &proxy.url())]);
    wait_connected(&events, "EnvProxied");
    assert!(proxy.connects() >= 1, "HTTPS_PROXY was not used");
    drop(agent);

    // NO_PROXY names the gateway: a proxy that does not exist is never dialled.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = config_with_vault(&world, "Bypass", json!({}));
    let before = proxy.connects();
    let _agent = start_agent_env(&config, &[("HTTPS_PROXY", &dead), ("NO_PROXY", "localhost,127.0.0.0/8")]);
    wait_connected(&events, "Bypass");
    let outcome = world.gateway.query("Bypass", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert_eq!(proxy.connects(), before);
}

/// mitmdump on loopback; its CA appears in `confdir` after the first start.
struct Mitm {
    _proc: Proc,
    port: u16,
    ca: PathBuf,
}

impl Mitm {
    fn start(dir: &Path) -> Option<Self> {
        let binary = net_tool("mitmdump")?;
        let port = free_port();
        let confdir = dir.join("mitm");
        std::fs::create_dir_all(&confdir).unwrap();
        let log = dir.join("mitmdump.log");
        let mut child = Command::new(binary)
            .args(["--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", &port.to_string()])
            .arg("--set")
            .arg(format!("confdir={}", confdir.display()))
            .arg("--ssl-insecure")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&mut child, port, "mitmdump", &log);
        let ca = confdir.join("mitmproxy-ca-cert.pem");
        let deadline = Instant::now() + WATCHDOG;
        while !ca.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ca.exists(), "mitmdump wrote no CA in {}", confdir.display());
        Some(Self { _proc: Proc(child), port, ca })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The `sha256/…` pin of the first certificate in a PEM file.
fn pem_pin(path: &Path) -> String {
    use base64::Engine as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let cert = CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
    format!("sha256/{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

#[test]
fn a_tls_inspecting_proxy_needs_its_ca_and_is_refused_by_a_pin() {
    let world = World::new("proxy-mitm");
    let Some(mitm) = Mitm::start(&world.dir.0) else { return };
    let events = world.gateway.subscribe();

    // Without its CA: refused, and the error names the issuer.
    let config = config_with_vault(&world, "NoCa", json!({ "proxyUrl": mitm.url(), "caCertPath": null }));
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("which is not trusted here");
    let log = agent.log_text();
    let line = log.lines().find(|l| l.contains("which is not trusted here")).unwrap();
    assert!(line.contains("mitmproxy"), "the issuer is named: {line}");
    assert!(line.contains("caCertPath"), "{line}");
    drop(agent);

    // With its CA: connects, and a chunked query completes through it.
    let ca = mitm.ca.to_string_lossy().into_owned();
    let config = config_with_vault(&world, "WithCa", json!({ "proxyUrl": mitm.url(), "caCertPath": ca }));
    let agent = start_agent_env(&config, &[]);
    wait_connected(&events, "WithCa");
    let outcome = world.gateway.query("WithCa", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    drop(agent);

    // With its CA and a pin of the gateway's real key: refused again.
    let pin = pem_pin(&world.gateway.ca_cert_path());
    let config = config_with_vault(
        &world,
        "Pinned",
        json!({ "proxyUrl": mitm.url(), "caCertPath": ca, "pinnedSpki": [pin.clone()] }),
    );
    let agent = start_agent_env(&config, &[]);
    agent.wait_log("certificate does not match pinnedSpki");
    drop(agent);

    // The same pin, direct: connects.
    let config = config_with_vault(&world, "PinnedDirect", json!({ "pinnedSpki": [pin] }));
    let _agent = start_agent_env(&config, &[]);
    wait_connected(&events, "PinnedDirect");
}

#[test]
fn configure_pin_spki_sets_and_removes_pins() {
    let world = World::new("proxy-pins");
    let config = config_with_vault(&world, "Pins", json!({}));
    let arg = config.to_str().unwrap();
    let pin = pem_pin(&world.gateway.ca_cert_path());
    let (code, out, err) = cli_stdin(&["configure", "--config", arg, "--pin-spki", &pin], "");
    assert_eq!(code, Some(0), "{out}{err}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(saved["pinnedSpki"], json!([pin]));
    let (code, _, err) = cli_stdin(&["configure", "--config", arg, "--pin-spki", "sha256/short"], "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sha256/BASE64"), "{err}");
    let (code, out, err) = cli_stdin(&["configure", "--config", arg, "--pin-spki", ""], "");
    assert_eq!(code, Some(0), "{out}{err}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(saved.get("pinnedSpki").is_none(), "{saved}");
}
