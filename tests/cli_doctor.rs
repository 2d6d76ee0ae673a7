//! `mini-connector doctor` against real parts: the in-process gateway (TLS 1.3 on loopback), the
//! sample SQLite ERP, PostgreSQL and MariaDB from `scripts/db-servers.sh`, a real tinyproxy with
//! Basic auth, and a running agent that must keep its session while doctor probes the key.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::GatewayEvent;
use mini_connector::protocol::control::{Backend as _, ControlReply, ControlRequest, StepStatus, Verdict};
use serde_json::{Value, json};

use crate::support::{AgentProc, DbUrl, TempDir, WATCHDOG, World, cli, net_tool, server_url};

/// `doctor --json` for `config`: (exit code, report, stderr).
fn doctor_json(config: &Path) -> (Option<i32>, Value, String) {
    let (code, stdout, stderr) = cli(&["doctor", "--json", "--config", config.to_str().unwrap()]);
    assert_eq!(stdout.lines().count(), 1, "{stdout}\n{stderr}");
    let report: Value = crate::support::json_answer(&stdout);
    (code, report, stderr)
}

/// `doctor` (text) for `config`: (exit code, stdout, stderr). Never a terminal here: ASCII.
fn doctor_text(config: &Path) -> (Option<i32>, String, String) {
    cli(&["doctor", "--config", config.to_str().unwrap()])
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    step(report, name)["status"].as_str().unwrap()
}

/// Every step's keys, in the stable shape tickets rely on.
fn assert_shape(report: &Value) {
    assert!(["ok", "warn", "fail"].contains(&report["verdict"].as_str().unwrap()), "{report:#}");
    for s in report["steps"].as_array().unwrap() {
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["data", "detail", "hint", "name", "status"], "{s:#}");
    }
}

/// None of `secrets` appears in any of `texts`.
fn assert_no_secret(texts: &[&str], secrets: &[&str]) {
    for text in texts {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret ({}…) leaked into:\n{text}", &secret[..3]);
        }
    }
}

/// A database connection entry with its password in a 0600 file.
fn db_connection(dir: &Path, name: &str, kind: &str, url: &str) -> Value {
    let u = DbUrl::parse(url);
    let secret = dir.join(format!("{name}-password"));
    std::fs::write(&secret, &u.password).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    json!({
        "name": name, "type": kind, "host": u.host, "port": u.port, "database": u.database,
        "user": u.user, "passwordRef": format!("file:{}", secret.display()),
    })
}

#[test]
fn all_checks_pass_with_a_good_key_and_real_databases_while_the_agent_keeps_its_session() {
    let world = World::new("doctor-ok");
    let mut connections =
        vec![json!({ "name": "erp", "type": "sqlite", "path": crate::support::sample_erp() })];
    let mut db_passwords = Vec::new();
    for (var, kind, name) in [("MC_TEST_PG_URL", "postgres", "pg"), ("MC_TEST_MYSQL_URL", "mysql", "maria")] {
        if let Some(url) = server_url(var) {
            db_passwords.push(DbUrl::parse(&url).password);
            connections.push(db_connection(&world.dir.0, name, kind, &url));
        }
    }
    let key = world.key("Doctor");
    let config = world.agent_config("Doctor", key.expose(), json!({ "connections": connections }));
    let events = world.gateway.subscribe();
    let _agent = AgentProc::start(&config);
    let connection_id = crate::support::wait_event(&events, |e| match e {
        GatewayEvent::AgentConnected { connector, connection_id } if connector == "Doctor" => {
            Some(connection_id.clone())
        }
        _ => None,
    });

    let (code, report, stderr) = doctor_json(&config);
    assert_shape(&report);
    for name in ["config", "dns", "proxy", "tcp", "tls", "websocket", "auth", "clock"] {
        assert_eq!(status(&report, name), "ok", "{name}: {:#}", step(&report, name));
    }
    // The read-only logins are read-only; the SQLite file is writable by this OS user (a warning).
    for s in report["steps"].as_array().unwrap().iter().filter(|s| s["name"] != "database:erp") {
        assert_eq!(s["status"], "ok", "{s:#}");
    }
    assert_ne!(report["verdict"], "fail", "{report:#}");
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    let tls = step(&report, "tls");
    assert!(tls["detail"].as_str().unwrap().contains("certificate 0: subject"), "{tls:#}");
    let chain = tls["data"]["chain"].as_array().unwrap();
    assert!(!chain.is_empty() && chain[0]["spkiSha256"].as_str().unwrap().len() == 44, "{tls:#}");
    assert_eq!(step(&report, "auth")["data"]["tenant"], "acme");
    assert!(step(&report, "clock")["data"]["skewMs"].as_i64().unwrap().abs() < 5_000);
    for s in report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("database:"))
    {
        // The running agent answered on its control socket: its pool use is shown.
        assert!(s["detail"].as_str().unwrap().contains("pool of the running agent"), "{s:#}");
        assert!(s["data"]["pool"]["max"].as_u64().unwrap() >= 1, "{s:#}");
    }
    assert_eq!(report["steps"].as_array().unwrap().len(), 8 + connections.len());

    // The probe did not touch the running agent's session.
    let info = world.gateway.connectors().into_iter().find(|c| c.name == "Doctor").unwrap();
    assert!(info.connected);
    assert_eq!(info.connection_id.as_deref(), Some(connection_id.as_str()));
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&event, GatewayEvent::AgentDisconnected { connector, .. } if connector == "Doctor")
                && !matches!(&event, GatewayEvent::AgentConnected { connector, .. } if connector == "Doctor"),
            "doctor disturbed the agent: {event:?}"
        );
    }
    let mut query = gateway::QueryRequest::new("SELECT count(*) AS n FROM customers");
    query.connection = Some("erp".into());
    query.wait = WATCHDOG;
    world.gateway.query("Doctor", query).expect("the agent still answers queries");

    let (code, text, stderr) = doctor_text(&config);
    assert_eq!(code, Some(0), "{text}\n{stderr}");
    assert!(text.lines().next().unwrap().starts_with("[ok]   config"), "{text}");
    assert!(text.contains("[ok]   auth") && text.contains("verdict: "), "{text}");
    // The running agent serves the same checks on its control socket (the GUI's Run checks).
    let socket = mini_connector::control::socket_path(&config, None);
    match mini_connector::control::call(&socket, &ControlRequest::Doctor).unwrap() {
        ControlReply::Doctor(served) => {
            assert_ne!(served.verdict, Verdict::Fail, "{served:#?}");
            let auth = served.steps.iter().find(|s| s.name == "auth").unwrap();
            assert_eq!(auth.status, StepStatus::Ok, "{auth:#?}");
            assert_no_secret(&[&serde_json::to_string(&served).unwrap()], &[key.expose()]);
        }
        other => panic!("expected a doctor reply, got {other:?}"),
    }
    assert_eq!(
        world.gateway.connectors().into_iter().find(|c| c.name == "Doctor").unwrap().connection_id,
        Some(connection_id.clone())
    );

    let mut secrets = vec![key.expose()];
    secrets.extend(db_passwords.iter().map(String::as_str));
    assert_no_secret(&[&text, &stderr, &report.to_string()], &secrets);
}

#[test]
fn a_revoked_key_fails_the_auth_step() {
    let world = World::new("doctor-revoked");
    let (id, key) = world.gateway.keys().create("acme", "Revoked").unwrap();
    let config = world.agent_config("Revoked", key.expose(), json!({}));
    world.gateway.keys().revoke(&id).unwrap();

    let (code, report, stderr) = doctor_json(&config);
    assert_shape(&report);
    assert_eq!(code, Some(1), "{report:#}\n{stderr}");
    assert_eq!(report["verdict"], "fail");
    for name in ["config", "dns", "proxy", "tcp", "tls", "websocket"] {
        assert_eq!(status(&report, name), "ok", "{name}: {report:#}");
    }
    let auth = step(&report, "auth");
    assert_eq!(auth["status"], "fail");
    assert!(auth["detail"].as_str().unwrap().contains("AUTH_FAILED"), "{auth:#}");
    assert!(auth["hint"].as_str().unwrap().contains("key rotate"), "{auth:#}");
    assert_eq!(status(&report, "clock"), "skipped");
    // The databases are checked all the same.
    assert_eq!(status(&report, "database:erp"), "warn", "{report:#}");

    let (code, text, stderr) = doctor_text(&config);
    assert_eq!(code, Some(1));
    assert!(text.contains("[FAIL] auth") && text.contains("verdict: FAIL"), "{text}");
    assert!(text.contains(&key.masked()), "the masked key names which key: {text}");
    assert_no_secret(&[&text, &stderr, &report.to_string()], &[key.expose()]);
}

#[test]
fn a_host_that_does_not_resolve_fails_dns() {
    let world = World::new("doctor-dns");
    let key = world.key("Nowhere");
    let config =
        world.agent_config("Nowhere", key.expose(), json!({ "cloudUrl": "wss://no-such-host.invalid/ws" }));
    let (code, report, _) = doctor_json(&config);
    assert_eq!(code, Some(1), "{report:#}");
    let dns = step(&report, "dns");
    assert_eq!(dns["status"], "fail", "{dns:#}");
    assert!(dns["detail"].as_str().unwrap().contains("no-such-host.invalid does not resolve"), "{dns:#}");
    assert!(dns["hint"].as_str().unwrap().contains("DNS"), "{dns:#}");
    for name in ["proxy", "tcp", "tls", "websocket", "auth", "clock"] {
        assert_eq!(status(&report, name), "skipped", "{name}: {report:#}");
    }
}

#[test]
fn a_closed_port_fails_tcp() {
    let world = World::new("doctor-tcp");
    let key = world.key("Closed");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = world.agent_config(
        "Closed",
        key.expose(),
        json!({ "cloudUrl": format!("wss://127.0.0.1:{port}/ws") }),
    );
    let (code, report, _) = doctor_json(&config);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(status(&report, "dns"), "ok");
    let tcp = step(&report, "tcp");
    assert_eq!(tcp["status"], "fail", "{tcp:#}");
    assert!(
        tcp["detail"].as_str().unwrap().contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{tcp:#}"
    );
    assert!(tcp["hint"].as_str().unwrap().contains("firewall"), "{tcp:#}");
    assert_eq!(status(&report, "tls"), "skipped");
}

#[test]
fn an_untrusted_certificate_fails_tls_with_the_inspection_hint_and_the_chain() {
    let world = World::new("doctor-tls");
    let key = world.key("Inspected");
    // Without caCertPath the gateway's self-signed certificate is not trusted: what a
    // TLS-inspecting proxy's re-signed certificate looks like to the agent.
    let config = world.agent_config("Inspected", key.expose(), json!({ "caCertPath": null }));
    let (code, report, _) = doctor_json(&config);
    assert_eq!(code, Some(1), "{report:#}");
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "fail", "{tls:#}");
    let detail = tls["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("TLS inspection suspected: the certificate for 127.0.0.1 is issued by "),
        "{tls:#}"
    );
    assert!(detail.contains("not a public CA") && detail.contains("certificate 0: subject"), "{tls:#}");
    assert!(detail.contains("SPKI sha256/"), "{tls:#}");
    let hint = tls["hint"].as_str().unwrap();
    assert!(hint.contains("caCertPath") && hint.contains("configure --ca-cert FILE"), "{tls:#}");
    assert!(!tls["data"]["chain"].as_array().unwrap().is_empty(), "{tls:#}");
    for name in ["websocket", "auth", "clock"] {
        assert_eq!(status(&report, name), "skipped", "{name}: {report:#}");
    }
    // With the gateway's CA the same check passes (the chain is the same).
    let trusted = world.agent_config("Inspected", key.expose(), json!({}));
    let (code, again, _) = doctor_json(&trusted);
    assert_eq!(status(&again, "tls"), "ok", "{again:#}");
    assert_eq!(step(&again, "tls")["data"]["chain"], tls["data"]["chain"]);
    assert_eq!(code, Some(0), "{again:#}");
}

/// A tinyproxy on a free loopback port with Basic auth; killed on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Tinyproxy {
    fn start(binary: &Path, user: &str, password: &str) -> Self {
        let dir = TempDir::new("tinyproxy");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf: PathBuf = dir.0.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Info\n\
                 LogFile \"{log}\"\nPidFile \"{pid}\"\nAllow 127.0.0.1\nBasicAuth {user} {password}\n",
                log = dir.0.join("tinyproxy.log").display(),
                pid = dir.0.join("tinyproxy.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WATCHDOG;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, _dir: dir }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn wrong_proxy_credentials_fail_the_proxy_step_with_a_proxy_auth_message() {
    let Some(binary) = net_tool("tinyproxy") else { return };
    let proxy = Tinyproxy::start(&binary, "alice", "right-Proxy-pw");
    let world = World::new("doctor-proxy");
    let key = world.key("Proxied");
    let wrong = "wr0ng-Proxy-pw";
    let proxy_url = format!("http://alice:{wrong}@127.0.0.1:{}", proxy.port);
    let config = world.agent_config("Proxied", key.expose(), json!({}));
    // `configure` moves the user and the (wrong) password out of the URL into the vault.
    let (code, out, err) = cli(&["configure", "--config", config.to_str().unwrap(), "--proxy", &proxy_url]);
    assert_eq!(code, Some(0), "{out}\n{err}");

    let (code, report, stderr) = doctor_json(&config);
    assert_eq!(code, Some(1), "{report:#}\n{stderr}");
    let step_ = step(&report, "proxy");
    assert_eq!(step_["status"], "fail", "{step_:#}");
    assert!(step_["detail"].as_str().unwrap().starts_with("proxy authentication required"), "{step_:#}");
    assert_eq!(step_["data"]["status"], 407, "{step_:#}");
    assert!(step_["hint"].as_str().unwrap().contains("proxyUser"), "{step_:#}");
    for name in ["tcp", "tls", "websocket", "auth", "clock"] {
        assert_eq!(status(&report, name), "skipped", "{name}: {report:#}");
    }
    // The proxy is named without its credentials.
    let shown = step(&report, "config")["data"]["proxyUrl"].as_str().unwrap().to_owned();
    assert_eq!(shown, format!("http://127.0.0.1:{}", proxy.port));

    let (_, text, stderr_text) = doctor_text(&config);
    assert!(text.contains("[FAIL] proxy"), "{text}");
    assert_no_secret(&[&text, &stderr, &stderr_text, &report.to_string()], &[wrong, "alice:", key.expose()]);
}

#[test]
fn a_configuration_that_does_not_load_exits_2() {
    let dir = TempDir::new("doctor-config");
    let missing = dir.0.join("config.json");
    let (code, report, _) = doctor_json(&missing);
    assert_eq!(code, Some(2), "{report:#}");
    assert_eq!(status(&report, "config"), "fail");
    assert_eq!(status(&report, "dns"), "skipped");
    // The desktop app's in-process backend runs the same checks (no agent starts without a
    // configuration).
    let backend = mini_connector::handle::LocalBackend::new(missing.clone());
    match backend.request(ControlRequest::Doctor) {
        ControlReply::Doctor(local) => {
            assert_eq!(local.verdict, Verdict::Fail);
            assert_eq!((local.steps[0].name.as_str(), local.steps[0].status), ("config", StepStatus::Fail));
        }
        other => panic!("expected a doctor reply, got {other:?}"),
    }
    std::fs::write(&missing, "{ not json").unwrap();
    let (code, text, _) = doctor_text(&missing);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.starts_with("[FAIL] config"), "{text}");
}

/// A TLS 1.3 server on loopback that answers every request with `403 Forbidden`: what a proxy or
/// filter that strips WebSocket upgrades looks like. Returns its port and its certificate (PEM).
fn upgrade_refusing_server(dir: &Path) -> (u16, PathBuf) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;

    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.join("refusing-cert.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(WATCHDOG));
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, cert_path)
}

#[test]
fn a_refused_websocket_upgrade_warns_that_the_agent_uses_the_https_fallback() {
    let world = World::new("doctor-ws");
    let key = world.key("Filtered");
    let (port, cert) = upgrade_refusing_server(&world.dir.0);
    let config = world.agent_config(
        "Filtered",
        key.expose(),
        json!({ "cloudUrl": format!("wss://127.0.0.1:{port}/ws"), "caCertPath": cert }),
    );
    let (code, report, _) = doctor_json(&config);
    for name in ["config", "dns", "proxy", "tcp", "tls"] {
        assert_eq!(status(&report, name), "ok", "{name}: {report:#}");
    }
    let ws = step(&report, "websocket");
    assert_eq!(ws["status"], "warn", "{ws:#}");
    let detail = ws["detail"].as_str().unwrap();
    assert!(detail.contains("403 Forbidden"), "{ws:#}");
    assert!(
        detail.contains("the WebSocket upgrade is blocked; the agent will use the HTTPS fallback"),
        "{ws:#}"
    );
    assert_eq!(ws["data"]["status"], 403);
    assert_eq!(status(&report, "auth"), "skipped");
    assert_eq!(report["verdict"], "warn", "{report:#}");
    assert_eq!(code, Some(0), "a warning is not a failure: {report:#}");
}

#[test]
fn a_pin_that_no_certificate_of_the_chain_carries_fails_tls() {
    let world = World::new("doctor-pin");
    let key = world.key("Pinned");
    // A well-formed pin of some other key: the gateway's chain (trusted through caCertPath)
    // does not carry it, as when a TLS-inspecting proxy with a trusted CA re-signs.
    let other = format!("sha256/{}", "A".repeat(43) + "=");
    let config = world.agent_config("Pinned", key.expose(), json!({ "pinnedSpki": [other] }));

    let (code, report, stderr) = doctor_json(&config);
    assert_eq!(code, Some(1), "{report:#}\n{stderr}");
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "fail", "{tls:#}");
    let detail = tls["detail"].as_str().unwrap();
    assert!(detail.contains("does not match pinnedSpki"), "{tls:#}");
    // The chain's own pin is shown, so the admin can compare it with the configured one.
    let shown = tls["data"]["chain"][0]["spkiSha256"].as_str().unwrap();
    assert!(detail.contains(&format!("sha256/{shown}")), "{tls:#}");
    for name in ["websocket", "auth", "clock"] {
        assert_eq!(status(&report, name), "skipped", "{name}: {report:#}");
    }
}
