//! The names of the gateway's certificate and its listeners' errors, through the real
//! `connector-gateway` binary where the operator sees them: `--listen 127.0.0.2:0` gives a
//! certificate for that address (the agent's real link connects), `--tls-name` adds names and a
//! stored certificate is issued again with the same key when one is missing, an operator's
//! certificate that misses the advertised host is warned about, and a port clash names the
//! address once.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use mini_connector::link::{Link, LinkSettings};
use mini_connector::supervisor::SupMsg;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::common::{WAIT, temp_dir, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

/// `serve` as a child process; killed on drop.
struct Serve {
    child: Child,
    cloud_url: String,
    ca_cert: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `serve` with `args` and reads the `cloudUrl` and `caCertPath` it prints.
    fn start(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut cloud_url, mut ca_cert) = (None, None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("  agent cloudUrl:") {
                cloud_url = Some(url.trim().to_owned());
            }
            if let Some(path) = line.strip_prefix("  agent caCertPath:") {
                ca_cert = Some(PathBuf::from(path.trim()));
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let (Some(cloud_url), Some(ca_cert)) = (cloud_url, ca_cert) else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve did not start: {}", String::from_utf8_lossy(&out.stderr));
        };
        Self { child, cloud_url, ca_cert }
    }

    /// Stops the process and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut text = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut text).unwrap();
        text
    }
}

fn create_key(dir: &Path, name: &str) -> String {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["keys", "create", "--tenant", "acme", "--name", name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["data"]["apiKey"].as_str().unwrap().to_owned()
}

/// A TLS 1.3 handshake to `addr` checking the certificate for `name`, as an agent does.
fn handshake(addr: SocketAddr, name: &str, tls: Arc<ClientConfig>) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut conn = ClientConnection::new(tls, ServerName::try_from(name.to_owned()).unwrap())
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn an_agent_connects_to_a_gateway_listening_on_127_0_0_2() {
    let _w = watchdog("tls-127.0.0.2");
    let dir = temp_dir();
    let key = create_key(&dir, "Warehouse");
    let serve = Serve::start(&dir, &["--listen", "127.0.0.2:0", "--no-admin"]);
    assert!(serve.cloud_url.starts_with("wss://127.0.0.2:"), "{}", serve.cloud_url);

    // The agent's real link, with its real TLS configuration trusting the printed caCertPath.
    let (tx, rx) = crossbeam_channel::unbounded();
    let link = Link::start(
        LinkSettings {
            url: serve.cloud_url.clone(),
            fallback_urls: Vec::new(),
            connector_name: "Warehouse".into(),
            proxy: mini_connector::proxy::ProxySettings::direct(),
            tls: mini_connector::tls::client_config(Some(&serve.ca_cert)).unwrap(),
            reconnect_max: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(20),
            instance_id: None,
            max_in_flight: None,
        },
        Box::new(move || mini_connector::protocol::ApiKey::parse(&key).map_err(|e| e.to_string())),
        tx,
    )
    .unwrap();
    let mut downs = Vec::new();
    let connected = loop {
        match rx.recv_timeout(WAIT).expect("the link neither connected nor failed") {
            SupMsg::LinkUp(connected) => break connected,
            SupMsg::LinkDown { reason, .. } => {
                downs.push(reason);
                assert!(downs.len() < 3, "the link cannot connect: {downs:?}");
            }
            _ => {}
        }
    };
    assert_eq!(connected.connector_name, "Warehouse");
    assert!(downs.is_empty(), "{downs:?}");
    link.stop();
    let stderr = serve.stop();
    assert!(!stderr.contains("WARNING"), "{stderr}");
    let names = std::fs::read_to_string(dir.join("tls/names.txt")).unwrap();
    assert!(names.lines().any(|l| l == "127.0.0.2"), "{names}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_clash_names_the_address_and_the_cause_once() {
    let _w = watchdog("tls-port-clash");
    let dir = temp_dir();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (args, role) in [
        (vec!["--listen", addr.as_str(), "--no-admin"], "agent port"),
        (vec!["--listen", "127.0.0.1:0", "--admin-listen", addr.as_str()], "admin API"),
    ] {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .arg("serve")
            .args(&args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "a port in use is a runtime failure");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected =
            format!("cannot listen on {addr} ({role}): address already in use (another gateway running?)");
        assert!(stderr.contains(&expected), "{stderr}");
        assert_eq!(stderr.to_lowercase().matches("already in use").count(), 1, "{stderr}");
        assert!(!stderr.contains("os error"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_operator_certificate_without_the_advertised_host_is_warned_about() {
    let _w = watchdog("tls-warning");
    let dir = temp_dir();
    let own = dir.join("own");
    std::fs::create_dir_all(&own).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(own.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(own.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (own.join("cert.pem"), own.join("key.pem"));
    let cert_args = ["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];

    let mut args = vec!["--listen", "127.0.0.2:0", "--no-admin"];
    args.extend(cert_args);
    let serve = Serve::start(&dir, &args);
    let stderr = serve.stop();
    assert!(stderr.contains("WARNING: the certificate"), "{stderr}");
    assert!(stderr.contains("does not cover `127.0.0.2`"), "{stderr}");
    assert_eq!(stderr.matches("WARNING").count(), 1, "{stderr}");

    // Advertised under a name the certificate covers: no warning.
    let mut args = vec!["--listen", "127.0.0.2:0", "--no-admin", "--public-url", "wss://localhost:8443/ws"];
    args.extend(cert_args);
    let serve = Serve::start(&dir, &args);
    assert_eq!(serve.cloud_url, "wss://localhost:8443/ws");
    let stderr = serve.stop();
    assert!(!stderr.contains("WARNING"), "{stderr}");

    // The library says the same to embedders; the operator's files are never rewritten.
    let mut config = GatewayConfig::new(&dir);
    config.cert = Some((cert.clone(), key.clone()));
    config.public_url = Some("wss://gw.example.test/ws".into());
    let gw = Gateway::start(config).unwrap();
    assert!(gw.tls_warning().is_some_and(|w| w.contains("`gw.example.test`")), "{:?}", gw.tls_warning());
    gw.shutdown();
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), certified.cert.pem());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stored_certificate_missing_a_name_is_issued_again_with_the_same_key() {
    let _w = watchdog("tls-reissue");
    let dir = temp_dir();
    let start = |names: &[&str], public: Option<&str>| {
        let mut config = GatewayConfig::new(&dir);
        config.tls_names = names.iter().map(|n| (*n).to_owned()).collect();
        config.public_url = public.map(str::to_owned);
        Gateway::start(config).unwrap()
    };
    let read = |name: &str| std::fs::read_to_string(dir.join("tls").join(name)).unwrap();

    let gw = start(&[], None);
    let tls = || mini_connector::tls::client_config(Some(&dir.join("tls/cert.pem"))).unwrap();
    assert!(handshake(gw.local_addr(), "localhost", tls()).is_ok());
    let refused = handshake(gw.local_addr(), "gw.example.test", tls()).unwrap_err();
    assert!(refused.to_lowercase().contains("not valid for name"), "{refused}");
    gw.shutdown();
    let (key1, cert1) = (read("key.pem"), read("cert.pem"));

    // A new name: issued again, same key, old names kept.
    let gw = start(&["GW.example.test", "10.1.2.3"], Some("wss://agents.example.test:9443/ws"));
    assert_eq!(gw.ws_url(), "wss://agents.example.test:9443/ws");
    assert!(gw.tls_warning().is_none(), "{:?}", gw.tls_warning());
    for name in ["gw.example.test", "agents.example.test", "localhost", "127.0.0.1", "10.1.2.3"] {
        handshake(gw.local_addr(), name, tls()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    gw.shutdown();
    assert_eq!(read("key.pem"), key1, "the key pair is kept (SPKI pins stay valid)");
    let cert2 = read("cert.pem");
    assert_ne!(cert2, cert1);

    // Names already covered: the certificate is reused as it is, whatever subset is asked.
    let gw = start(&["gw.example.test"], None);
    gw.shutdown();
    assert_eq!(read("cert.pem"), cert2);

    // A bad name is refused before anything is written.
    let mut config = GatewayConfig::new(&dir);
    config.tls_names = vec!["not a name".into()];
    let err = Gateway::start(config).unwrap_err().to_string();
    assert!(err.contains("TLS name `not a name`"), "{err}");
    let mut config = GatewayConfig::new(&dir);
    config.public_url = Some("https://x".into());
    let err = Gateway::start(config).unwrap_err().to_string();
    assert!(err.contains("expected wss://"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
