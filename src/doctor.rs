//! `mini-connector doctor`: why does (or doesn't) this agent connect?
//!
//! [`run`] checks, in order, what the link needs and what the databases need, and answers a
//! [`DoctorReport`] (the same type the control API and the desktop app's Diagnostics use):
//!
//! 1. `config`: the configuration loads, `cloudUrl` parses, `caCertPath` reads;
//! 2. `dns`: the cloud host's addresses (behind a proxy a local failure only warns: the proxy
//!    resolves it);
//! 3. `proxy`: `proxyUrl` reachable and its `CONNECT` accepted (407/403 said as proxy errors);
//! 4. `tcp`: a connection to the cloud host (through the proxy's tunnel when there is one);
//! 5. `tls`: the TLS 1.3 handshake with the chain the server presented (subject, issuer,
//!    validity, SPKI SHA-256 of each certificate), verified against the same roots as the
//!    agent ([`crate::tls::root_store`]); an unknown issuer says "TLS inspection suspected";
//! 6. `websocket`: the upgrade (a refusal warns: the agent falls back to HTTPS);
//! 7. `auth`: the API key, sent in an `auth` frame with `probe: true` so the gateway checks it
//!    without touching a running agent's session;
//! 8. `clock`: skew against `connected.serverTime` (warn above 2 min, fail above 5 min);
//! 9. `database:<name>`: each connection opened as `db test` does (read-only session, write
//!    privileges of the login), with the running agent's pool use when one answers.
//!
//! A network step after a failed one is `skipped`. Nothing secret appears in the report: the
//! proxy URL is shown without its credentials, and every text is scrubbed of the API key, the
//! proxy credentials and the database passwords before it is returned.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

use crate::config::AgentConfig;
use crate::protocol::control::{ControlReply, ControlRequest, DoctorReport, DoctorStep, StepStatus};
use crate::protocol::{Auth, ErrorCode, Frame as _, Inbound, Outbound, PROTOCOL_VERSION};

/// How long each network step (DNS excepted: the system resolver decides) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a database may take to answer (as `db test`).
const DB_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew that warns.
const SKEW_WARN: Duration = Duration::from_secs(120);
/// Clock skew that fails.
const SKEW_FAIL: Duration = Duration::from_secs(300);

/// The network steps, in order: after a failure the rest are skipped.
const NETWORK_STEPS: [&str; 7] = ["dns", "proxy", "tcp", "tls", "websocket", "auth", "clock"];

/// Runs every check for the configuration at `config_path`.
pub fn run(config_path: &Path) -> DoctorReport {
    let mut doctor = Doctor { steps: Vec::new(), secrets: Vec::new() };
    doctor.run(config_path);
    let Doctor { steps, secrets } = doctor;
    DoctorReport::new(steps.into_iter().map(|step| scrub(step, &secrets)).collect())
}

struct Doctor {
    steps: Vec<DoctorStep>,
    /// Texts that must not appear in the report.
    secrets: Vec<zeroize::Zeroizing<String>>,
}

/// A step.
fn step(
    name: &str,
    status: StepStatus,
    detail: impl Into<String>,
    hint: Option<String>,
    data: Value,
) -> DoctorStep {
    DoctorStep { name: name.to_owned(), status, detail: detail.into(), hint, data }
}

fn ok(name: &str, detail: impl Into<String>, data: Value) -> DoctorStep {
    step(name, StepStatus::Ok, detail, None, data)
}

fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>, data: Value) -> DoctorStep {
    step(name, StepStatus::Fail, detail, Some(hint.into()), data)
}

fn warn(name: &str, detail: impl Into<String>, hint: impl Into<String>, data: Value) -> DoctorStep {
    step(name, StepStatus::Warn, detail, Some(hint.into()), data)
}

fn skipped(name: &str, because: &str) -> DoctorStep {
    step(name, StepStatus::Skipped, format!("skipped: {because}"), None, Value::Null)
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Where the link dials.
struct Target {
    url: String,
    host: String,
    port: u16,
}

/// What the TLS step leaves for the next ones.
type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;

impl Doctor {
    fn push(&mut self, step: DoctorStep) -> StepStatus {
        let status = step.status;
        self.steps.push(step);
        status
    }

    /// Skips the network steps from `from` on.
    fn skip_rest(&mut self, from: &str, because: &str) {
        let start = NETWORK_STEPS.iter().position(|s| *s == from).unwrap_or(NETWORK_STEPS.len());
        for name in &NETWORK_STEPS[start..] {
            self.steps.push(skipped(name, because));
        }
    }

    fn run(&mut self, config_path: &Path) {
        let Some((config, target)) = self.config(config_path) else {
            self.skip_rest("dns", "the configuration did not load");
            return;
        };
        self.network(&config, &target);
        self.databases(config_path, &config);
    }

    /// Step 1.
    fn config(&mut self, path: &Path) -> Option<(AgentConfig, Target)> {
        const NAME: &str = "config";
        let hint = "fix the file, or write it again with `mini-connector configure`";
        if !path.exists() {
            self.push(fail(
                NAME,
                format!("no configuration at {}", path.display()),
                "create one with `mini-connector configure --name NAME --cloud-url wss://... --api-key-stdin`",
                Value::Null,
            ));
            return None;
        }
        let config = match AgentConfig::load(path) {
            Ok(config) => config,
            Err(e) => {
                self.push(fail(NAME, format!("{} does not load: {e}", path.display()), hint, Value::Null));
                return None;
            }
        };
        // Whatever secrets the configuration leads to, none may show up in the report.
        if let Some(proxy) = &config.proxy_url
            && let Some((userinfo, password)) = proxy_userinfo(proxy)
        {
            self.secrets.push(zeroize::Zeroizing::new(userinfo));
            if let Some(password) = password {
                self.secrets.push(zeroize::Zeroizing::new(password));
            }
        }
        if let Ok(key) = config.load_api_key() {
            self.secrets.push(zeroize::Zeroizing::new(key.expose().to_owned()));
        }
        for connection in &config.connections {
            let password = match config.resolved_connection_spec(connection).map(|spec| spec.password) {
                Ok(drivers::Password::Value(secret)) => Some(secret),
                Ok(drivers::Password::Reference(reference)) => {
                    drivers::Secret::from_reference(&reference).ok()
                }
                _ => None,
            };
            if let Some(password) = password {
                self.secrets.push(zeroize::Zeroizing::new(password.expose().to_owned()));
            }
        }
        let target = match parse_target(&config.cloud_url) {
            Ok(target) => target,
            Err(e) => {
                self.push(fail(
                    NAME,
                    format!("cloudUrl {}: {e}", redact_url(&config.cloud_url)),
                    hint,
                    Value::Null,
                ));
                return None;
            }
        };
        // The agent's own TLS configuration must build (caCertPath readable).
        match crate::tls::for_agent(&config) {
            Ok(_) => {}
            Err(e) => {
                self.push(fail(
                    NAME,
                    e.to_string(),
                    "caCertPath must name a readable PEM file with the CA certificate \
                     (mini-connector configure --ca-cert FILE)",
                    Value::Null,
                ));
                return None;
            }
        }
        let proxy = config.proxy_url.as_deref().map(redact_url);
        let mut detail = format!(
            "{} loads: connector `{}`, cloud {}",
            path.display(),
            config.connector_name,
            redact_url(&config.cloud_url)
        );
        let fallbacks: Vec<String> = config.cloud_url_fallbacks.iter().map(|url| redact_url(url)).collect();
        if !fallbacks.is_empty() {
            // The network steps below check cloudUrl; the link dials these when it fails.
            detail.push_str(&format!("\nfallback gateways {} (not checked below)", fallbacks.join(", ")));
        }
        if let Some(proxy) = &proxy {
            detail.push_str(&format!("\nproxy {proxy}"));
        }
        if let Some(ca) = &config.ca_cert_path {
            detail.push_str(&format!("\ncaCertPath {}", ca.display()));
        }
        self.push(ok(
            NAME,
            detail,
            json!({
                "path": path.display().to_string(),
                "connector": config.connector_name,
                "cloudUrl": redact_url(&config.cloud_url),
                "cloudUrlFallbacks": fallbacks,
                "proxyUrl": proxy,
                "caCertPath": config.ca_cert_path,
                "connections": config.connections.len(),
            }),
        ));
        Some((config, target))
    }

    /// Steps 2 to 8.
    fn network(&mut self, config: &AgentConfig, target: &Target) {
        // The same route the link takes: proxyUrl, else HTTPS_PROXY, minus NO_PROXY.
        let route = match crate::proxy::ProxySettings::from_config(config) {
            Ok(settings) => settings.route(&target.host, target.port),
            Err(e) => {
                self.push(fail(
                    "proxy",
                    e.to_string(),
                    "proxyUrl (or HTTPS_PROXY) is http://host:port; credentials go to the vault \
                     (mini-connector configure --proxy URL --proxy-password-stdin)",
                    Value::Null,
                ));
                self.skip_rest("tcp", "the proxy settings are unusable");
                return;
            }
        };
        let proxy = match &route {
            crate::proxy::Route::Via(proxy) => Some(proxy.clone()),
            crate::proxy::Route::Direct => None,
        };
        // 2. DNS.
        if self.dns(target, proxy.is_some()) == StepStatus::Fail {
            self.skip_rest("proxy", "the cloud host does not resolve");
            return;
        }
        // 3. Proxy, 4. TCP.
        let tcp = match &proxy {
            Some(proxy) => match self.proxy(proxy, &route, target) {
                Some(tunnel) => {
                    self.push(ok(
                        "tcp",
                        format!("{}:{} reached through the proxy's tunnel", target.host, target.port),
                        json!({ "viaProxy": true }),
                    ));
                    tunnel
                }
                None => {
                    self.skip_rest("tcp", "the proxy did not open a tunnel");
                    return;
                }
            },
            None => {
                self.push(ok("proxy", "none configured: the agent dials the cloud directly", Value::Null));
                match self.tcp(target) {
                    Some(tcp) => tcp,
                    None => {
                        self.skip_rest("tls", "no TCP connection to the cloud host");
                        return;
                    }
                }
            }
        };
        // 5. TLS.
        let Some(tls) = self.tls(config, target, tcp) else {
            self.skip_rest("websocket", "the TLS handshake failed");
            return;
        };
        // 6. WebSocket.
        let Some(ws) = self.websocket(target, tls) else {
            self.skip_rest("auth", "the WebSocket upgrade did not succeed");
            return;
        };
        // 7. Authentication, 8. clock.
        let Some((server_time, round_trip)) = self.auth(config, ws) else {
            self.skip_rest("clock", "the gateway did not answer `auth` with `connected`");
            return;
        };
        self.clock(&server_time, round_trip);
    }

    fn dns(&mut self, target: &Target, proxied: bool) -> StepStatus {
        const NAME: &str = "dns";
        let started = Instant::now();
        let resolved = (target.host.as_str(), target.port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
        match resolved {
            Ok(addrs) if !addrs.is_empty() => {
                let mut ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                ips.dedup();
                self.push(ok(
                    NAME,
                    format!("{} → {} ({} ms)", target.host, ips.join(", "), millis(started)),
                    json!({ "host": target.host, "addresses": ips }),
                ))
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "no address".to_owned(),
                };
                let detail = format!("{} does not resolve here: {why}", target.host);
                let data = json!({ "host": target.host, "addresses": [] });
                if proxied {
                    self.push(warn(
                        NAME,
                        detail,
                        "the proxy resolves the name for the tunnel; this only matters without the proxy",
                        data,
                    ))
                } else {
                    self.push(fail(
                        NAME,
                        detail,
                        "check the host name in cloudUrl and this machine's DNS servers; \
                         if the network only reaches the internet through a proxy, set proxyUrl \
                         (mini-connector configure --proxy URL)",
                        data,
                    ))
                }
            }
        }
    }

    /// Step 3: the proxy answers and opens a tunnel to the cloud host.
    fn proxy(
        &mut self,
        proxy: &crate::proxy::Proxy,
        route: &crate::proxy::Route,
        target: &Target,
    ) -> Option<TcpStream> {
        use crate::proxy::DialError;
        const NAME: &str = "proxy";
        let shown = proxy.url();
        let data = json!({ "proxy": shown, "user": proxy.user() });
        let started = Instant::now();
        match crate::proxy::dial(route, &target.host, target.port, Instant::now() + STEP_TIMEOUT) {
            Ok(tunnel) => {
                self.push(ok(
                    NAME,
                    format!(
                        "{shown}: CONNECT {}:{} accepted ({} ms)",
                        target.host,
                        target.port,
                        millis(started)
                    ),
                    data,
                ));
                Some(tunnel)
            }
            Err(e) => {
                let (status, hint) = match &e {
                    DialError::AuthRequired { .. } => (
                        Some(407),
                        "the user is proxyUser in the configuration, the password is in the vault; a \
                         proxy that speaks only NTLM/Negotiate needs an exception or a local relay \
                         (docs/NETWORK.md, NTLM)",
                    ),
                    DialError::Forbidden { .. } => (
                        Some(403),
                        "the proxy's policy blocks this destination: ask IT to allow CONNECT to the \
                         cloud host on its port",
                    ),
                    DialError::LoginPage { .. } => (
                        None,
                        "the proxy wants a browser sign-in: ask IT for an exception for the cloud host",
                    ),
                    DialError::ProxyUnreachable { .. } | DialError::ProxyTimeout { .. } => (
                        None,
                        "check proxyUrl (host and port) and that the proxy runs; ask IT for the proxy's address",
                    ),
                    _ => (None, "check that proxyUrl names an HTTP proxy that allows CONNECT"),
                };
                let mut data = data;
                data["status"] = json!(status);
                self.push(fail(NAME, e.to_string(), hint, data));
                None
            }
        }
    }

    /// Step 4 without a proxy.
    fn tcp(&mut self, target: &Target) -> Option<TcpStream> {
        const NAME: &str = "tcp";
        let started = Instant::now();
        match crate::proxy::connect_tcp(&target.host, target.port, Instant::now() + STEP_TIMEOUT) {
            Ok(tcp) => {
                let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                self.push(ok(
                    NAME,
                    format!("connected to {peer} in {} ms", millis(started)),
                    json!({ "peer": peer, "ms": millis(started) }),
                ));
                Some(tcp)
            }
            Err(e) => {
                self.push(fail(
                    NAME,
                    format!("cannot connect to {}:{}: {e}", target.host, target.port),
                    "the gateway is down, or a firewall blocks outbound connections to this port; \
                     if the network only reaches the internet through a proxy, set proxyUrl",
                    json!({ "host": target.host, "port": target.port }),
                ));
                None
            }
        }
    }

    /// Step 5: the handshake, recording the chain the server presents.
    fn tls(&mut self, config: &AgentConfig, target: &Target, tcp: TcpStream) -> Option<TlsStream> {
        const NAME: &str = "tls";
        let setup = (|| -> Result<(Arc<Recorder>, ClientConnection), String> {
            let roots = crate::tls::root_store(config.ca_cert_path.as_deref()).map_err(|e| e.to_string())?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
            let recorder = Arc::new(Recorder { inner, chain: Mutex::new(Vec::new()) });
            let tls = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth();
            let name = ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
            let conn = ClientConnection::new(Arc::new(tls), name).map_err(|e| e.to_string())?;
            Ok((recorder, conn))
        })();
        let (recorder, mut conn) = match setup {
            Ok(pair) => pair,
            Err(e) => {
                self.push(fail(NAME, format!("TLS setup: {e}"), "check caCertPath", Value::Null));
                return None;
            }
        };
        let _ = tcp.set_read_timeout(Some(STEP_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(STEP_TIMEOUT));
        let mut sock = tcp;
        let started = Instant::now();
        let mut result = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                result = Err(e);
                break;
            }
        }
        let chain: Vec<Value> = recorder.chain().iter().map(|der| describe_cert(der)).collect();
        let chain_text = chain_lines(&chain);
        let leaf_issuer =
            chain.first().and_then(|c| c["issuer"].as_str()).unwrap_or("an unknown issuer").to_owned();
        // The agent also requires a pinned key somewhere in the chain (pinnedSpki).
        if result.is_ok()
            && let Some(mismatch) = pin_mismatch(&config.pinned_spki, &recorder.chain())
        {
            let data = json!({ "chain": chain, "pinnedSpki": config.pinned_spki });
            self.push(fail(
                NAME,
                format!("{mismatch}\n{chain_text}"),
                "a TLS-inspecting proxy re-signs the connection, or the gateway's key changed: \
                 compare the chain's pins with pinnedSpki (mini-connector configure --pin-spki)",
                data,
            ));
            return None;
        }
        match result {
            Ok(()) => {
                let version = conn.protocol_version().map(tls_version_name).unwrap_or_default();
                let suite =
                    conn.negotiated_cipher_suite().map(|s| cipher_suite_name(s.suite())).unwrap_or_default();
                self.push(ok(
                    NAME,
                    format!(
                        "{version} {suite}, certificate for {} verified ({} ms)\n{chain_text}",
                        target.host,
                        millis(started)
                    ),
                    json!({ "version": version, "cipherSuite": suite, "chain": chain }),
                ));
                Some(rustls::StreamOwned::new(conn, sock))
            }
            Err(e) => {
                let rustls_error =
                    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
                let data = json!({ "chain": chain, "error": e.to_string() });
                let (detail, hint) = match rustls_error {
                    Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => (
                        format!(
                            "TLS inspection suspected: the certificate for {} is issued by {leaf_issuer}, not a public CA",
                            target.host
                        ),
                        "if your company inspects TLS, set caCertPath to its CA \
                         (mini-connector configure --ca-cert FILE)"
                            .to_owned(),
                    ),
                    Some(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                    )) => (
                        format!("the certificate presented does not cover the name {}", target.host),
                        "use the host name the gateway's certificate was issued for in cloudUrl, or a \
                         TLS-inspecting proxy re-signs with wrong names: ask IT"
                            .to_owned(),
                    ),
                    Some(rustls::Error::InvalidCertificate(
                        CertificateError::Expired
                        | CertificateError::ExpiredContext { .. }
                        | CertificateError::NotValidYet
                        | CertificateError::NotValidYetContext { .. },
                    )) => (
                        format!("the certificate for {} is outside its validity period", target.host),
                        "check this machine's clock; if it is right, the gateway's certificate must be renewed"
                            .to_owned(),
                    ),
                    Some(rustls::Error::PeerIncompatible(_)) => (
                        format!("the server does not speak TLS 1.3: {e}"),
                        "the agent requires TLS 1.3; a proxy or the gateway offers only older versions".to_owned(),
                    ),
                    _ => (
                        format!("the TLS handshake failed: {e}"),
                        "a proxy or firewall in between may cut TLS; try `mini-connector doctor` from \
                         another network to compare"
                            .to_owned(),
                    ),
                };
                let detail = if chain_text.is_empty() { detail } else { format!("{detail}\n{chain_text}") };
                self.push(fail(NAME, detail, hint, data));
                None
            }
        }
    }

    /// Step 6.
    fn websocket(&mut self, target: &Target, tls: TlsStream) -> Option<tungstenite::WebSocket<TlsStream>> {
        const NAME: &str = "websocket";
        let request = match target.url.as_str().into_client_request() {
            Ok(request) => request,
            Err(e) => {
                self.push(fail(NAME, format!("bad cloud URL: {e}"), "check cloudUrl", Value::Null));
                return None;
            }
        };
        let started = Instant::now();
        match tungstenite::client::client_with_config(request, tls, Some(crate::wsio::ws_config())) {
            Ok((ws, response)) => {
                self.push(ok(
                    NAME,
                    format!(
                        "upgrade accepted ({} {}, {} ms)",
                        response.status().as_u16(),
                        target.url,
                        millis(started)
                    ),
                    json!({ "status": response.status().as_u16() }),
                ));
                Some(ws)
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status();
                self.push(warn(
                    NAME,
                    format!(
                        "the server answered {} {} instead of 101 Switching Protocols: the WebSocket \
                         upgrade is blocked; the agent will use the HTTPS fallback",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or_default()
                    ),
                    "a proxy or firewall strips WebSocket upgrades; the agent works over HTTPS \
                     long-polling, but asking IT to allow WebSocket to the cloud host lowers latency",
                    json!({ "status": status.as_u16() }),
                ));
                None
            }
            Err(e) => {
                self.push(fail(
                    NAME,
                    format!("the WebSocket handshake failed: {e}"),
                    "check that cloudUrl is the gateway's WebSocket URL (wss://HOST/ws)",
                    Value::Null,
                ));
                None
            }
        }
    }

    /// Step 7: `auth` with `probe: true`. Returns `serverTime` and the round trip.
    fn auth(
        &mut self,
        config: &AgentConfig,
        mut ws: tungstenite::WebSocket<TlsStream>,
    ) -> Option<(String, Duration)> {
        const NAME: &str = "auth";
        let key = match config.load_api_key() {
            Ok(key) => key,
            Err(e) => {
                self.push(fail(
                    NAME,
                    format!("the API key cannot be read: {e}"),
                    "store the key again with `mini-connector key rotate` (or `configure --api-key-stdin`)",
                    Value::Null,
                ));
                return None;
            }
        };
        let masked = key.masked();
        let frame = Outbound::Auth(Auth {
            api_key: key,
            connector_name: config.connector_name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            instance_id: None,
            max_in_flight: None,
            probe: true,
            compression: Vec::new(),
            chunk_encodings: Vec::new(),
        });
        let started = Instant::now();
        let sent = {
            let text = zeroize::Zeroizing::new(frame.encode());
            drop(frame);
            ws.send(tungstenite::Message::text(text.as_str()))
        };
        if let Err(e) = sent {
            self.push(fail(
                NAME,
                format!("sending auth failed: {e}"),
                "retry; see the tcp and tls steps",
                Value::Null,
            ));
            return None;
        }
        let answer = loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(text)) => break Ok(Inbound::decode(text.as_str())),
                Ok(tungstenite::Message::Close(close)) => {
                    break Err(format!(
                        "the gateway closed the connection without answering{}",
                        close.map(|c| format!(": {}", c.reason)).unwrap_or_default()
                    ));
                }
                Ok(_) => {}
                Err(e) => break Err(format!("no answer to auth: {e}")),
            }
        };
        let round_trip = started.elapsed();
        let _ = ws.close(None);
        let _ = ws.flush();
        let data = |extra: Value| {
            let mut data = json!({ "apiKey": masked });
            if let (Some(base), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                base.extend(extra.clone());
            }
            data
        };
        match answer {
            Ok(Ok(Inbound::Connected(connected))) => {
                self.push(ok(
                    NAME,
                    format!(
                        "key {masked} accepted: tenant `{}`, connector `{}` ({} ms)",
                        connected.tenant_id,
                        connected.connector_name,
                        round_trip.as_millis()
                    ),
                    data(json!({
                        "tenant": connected.tenant_id,
                        "connector": connected.connector_name,
                        "serverTime": connected.server_time,
                    })),
                ));
                Some((connected.server_time, round_trip))
            }
            Ok(Ok(Inbound::Error(error))) if error.code == ErrorCode::AuthFailed => {
                self.push(fail(
                    NAME,
                    format!("the gateway refused key {masked}: AUTH_FAILED: {}", error.message),
                    "the key was revoked, expired or mistyped: create a new key in the console and \
                     store it with `mini-connector key rotate`",
                    data(json!({ "code": error.code.as_str() })),
                ));
                None
            }
            Ok(Ok(Inbound::Error(error))) if error.code == ErrorCode::DuplicateConnection => {
                // A gateway without probe support: it checked the key, then saw the live agent.
                self.push(warn(
                    NAME,
                    format!(
                        "key {masked} accepted, but the gateway does not know probes \
                         (DUPLICATE_CONNECTION: {})",
                        error.message
                    ),
                    "the connector's running agent keeps its session; update the gateway for a full check",
                    data(json!({ "code": error.code.as_str() })),
                ));
                None
            }
            Ok(Ok(other)) => {
                let what = match &other {
                    Inbound::Error(error) => format!("{}: {}", error.code, error.message),
                    other => format!("{other:?}").chars().take(120).collect(),
                };
                self.push(fail(
                    NAME,
                    format!("unexpected answer to auth: {what}"),
                    "is cloudUrl the gateway's WebSocket endpoint?",
                    data(Value::Null),
                ));
                None
            }
            Ok(Err(e)) => {
                self.push(fail(
                    NAME,
                    format!("undecodable answer to auth: {}", e.message),
                    "is cloudUrl the gateway's WebSocket endpoint?",
                    data(Value::Null),
                ));
                None
            }
            Err(e) => {
                self.push(fail(NAME, e, "see the gateway's log; retry", data(Value::Null)));
                None
            }
        }
    }

    /// Step 8.
    fn clock(&mut self, server_time: &str, round_trip: Duration) {
        let local = SystemTime::now();
        self.push(clock_step(server_time, round_trip, local));
    }

    /// Step 9: each configured database.
    fn databases(&mut self, config_path: &Path, config: &AgentConfig) {
        let pools = running_pools(config_path, config);
        for connection in &config.connections {
            let name = format!("database:{}", connection.name);
            let target = crate::setup::databases::target(connection);
            let password = match config.db_password(&connection.name) {
                Ok(password) => password,
                Err(e) => {
                    self.push(fail(
                        &name,
                        format!("the password cannot be read from the vault: {e}"),
                        format!("store it again: mini-connector db edit {} --password", connection.name),
                        Value::Null,
                    ));
                    continue;
                }
            };
            let probe = crate::setup::databases::probe(config, connection, password, DB_TIMEOUT);
            let pool = match &pools {
                Ok(pools) => pools.iter().find(|d| d.name == connection.name).cloned(),
                Err(_) => None,
            };
            let pool_line = match (&pools, &pool) {
                (Err(why), _) => format!("pool: {why}"),
                (Ok(_), None) => "pool: the running agent does not list this connection".to_owned(),
                (Ok(_), Some(health)) => match health.pool {
                    Some(p) => format!(
                        "pool of the running agent: {} open, {} idle, max {}{}",
                        p.open,
                        p.idle,
                        p.max,
                        if health.healthy { "" } else { " (unhealthy)" }
                    ),
                    None => {
                        format!("running agent: {}", if health.healthy { "healthy" } else { "unhealthy" })
                    }
                },
            };
            let mut data = json!({
                "type": connection.kind.as_str(),
                "target": target,
                "latencyMs": probe.latency_ms,
                "serverVersion": probe.server_version,
                "pool": pool.as_ref().and_then(|h| h.pool),
                "agentHealthy": pool.as_ref().map(|h| h.healthy),
            });
            if let Some((code, message)) = &probe.error {
                data["code"] = json!(code.as_str());
                self.push(fail(
                    &name,
                    format!("{target}: cannot connect: {message}\n{pool_line}"),
                    format!(
                        "check that the server runs and the connection's settings; \
                         `mini-connector db test {}` tries again",
                        connection.name
                    ),
                    data,
                ));
                continue;
            }
            let version = probe.server_version.clone().unwrap_or_else(|| connection.kind.as_str().to_owned());
            let head =
                format!("{target}: connected in {} ms ({version})", probe.latency_ms.unwrap_or_default());
            data["privileges"] = json!(probe.privileges);
            match (&probe.privileges, &probe.privilege_error) {
                (Some(p), _) if p.can_write || p.superuser => {
                    let who = if p.user.is_empty() {
                        "the agent's OS user".to_owned()
                    } else {
                        format!("user `{}`", p.user)
                    };
                    self.push(warn(
                        &name,
                        format!(
                            "{head}\n{who} can change data{}; the agent stays read-only regardless\n{pool_line}",
                            if p.superuser { " (superuser)" } else { "" }
                        ),
                        format!("a SELECT-only user is safer:\n{}", p.suggested_sql.trim_end()),
                        data,
                    ));
                }
                (Some(_), _) => {
                    self.push(ok(
                        &name,
                        format!("{head}\nread-only user: no write privileges\n{pool_line}"),
                        data,
                    ));
                }
                (None, error) => {
                    self.push(ok(
                        &name,
                        format!(
                            "{head}\nwrite privileges not checked{}\n{pool_line}",
                            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                        ),
                        data,
                    ));
                }
            }
        }
    }
}

/// A TLS version as people write it: `TLS 1.3` (not rustls's `TLSv1_3`).
fn tls_version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        other => {
            other.as_str().map_or_else(|| format!("TLS version 0x{:04x}", u16::from(other)), str::to_owned)
        }
    }
}

/// A cipher suite's IANA name (`TLS13_AES_256_GCM_SHA384`), or its number.
fn cipher_suite_name(suite: rustls::CipherSuite) -> String {
    suite.as_str().map_or_else(|| format!("cipher suite 0x{:04x}", u16::from(suite)), str::to_owned)
}

/// Step 8: the skew between `local` (when the answer arrived) and the gateway's `serverTime`,
/// which was written about half a round trip earlier.
fn clock_step(server_time: &str, round_trip: Duration, local: SystemTime) -> DoctorStep {
    const NAME: &str = "clock";
    let Ok(server) = chrono::DateTime::parse_from_rfc3339(server_time) else {
        return warn(
            NAME,
            format!("serverTime {server_time:?} is not an RFC 3339 time"),
            "the gateway's clock cannot be compared",
            Value::Null,
        );
    };
    let server_ms = server.timestamp_millis() + i64::try_from(round_trip.as_millis() / 2).unwrap_or(0);
    let local_ms = local
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let skew_ms = local_ms - server_ms;
    let skew = Duration::from_millis(skew_ms.unsigned_abs());
    let direction = if skew_ms >= 0 { "ahead of" } else { "behind" };
    let shown = humantime::format_duration(Duration::from_secs(skew.as_secs())).to_string();
    let data = json!({ "serverTime": server_time, "skewMs": skew_ms });
    let detail = || {
        format!(
            "this machine's clock is {shown} {direction} the gateway's: timestamps in heartbeats, the \
             audit log and results then disagree with the console's, and a clock far off makes \
             certificates look expired or not yet valid"
        )
    };
    let hint = "synchronise this machine's clock (NTP: `timedatectl set-ntp true`, on Windows \
                `w32tm /resync`)";
    if skew >= SKEW_FAIL {
        fail(NAME, detail(), hint, data)
    } else if skew >= SKEW_WARN {
        warn(NAME, detail(), hint, data)
    } else {
        ok(NAME, format!("within {} ms of the gateway's clock", skew.as_millis()), data)
    }
}

/// The running agent's view of its databases, or why there is none.
fn running_pools(
    config_path: &Path,
    config: &AgentConfig,
) -> Result<Vec<crate::protocol::control::DatabaseHealth>, String> {
    let socket = crate::control::socket_path(config_path, config.control_socket.as_deref());
    match crate::control::call(&socket, &ControlRequest::Status) {
        Ok(ControlReply::Status(status)) => Ok(status.databases),
        Ok(_) | Err(_) => Err("no agent running for this configuration".to_owned()),
    }
}

/// Why `chain` does not satisfy `pins` (`None`: no pins, or one matches).
fn pin_mismatch(pins: &[String], chain: &[CertificateDer<'static>]) -> Option<String> {
    let wanted: Vec<[u8; 32]> = pins.iter().filter_map(|p| crate::tls::parse_pin(p).ok()).collect();
    match crate::tls::pin_miss(&wanted, chain.iter().map(|c| c.as_ref())) {
        Ok(None) => None,
        Ok(Some(presented)) => Some(format!(
            "certificate does not match pinnedSpki: the chain's keys are {}",
            presented.join(", ")
        )),
        Err(e) => Some(format!("certificate does not match pinnedSpki: {e}")),
    }
}

/// Host and port of a `scheme://[userinfo@]host[:port]/...` URL.
fn parse_host_port(url: &str, default_port: u16) -> Result<(String, u16), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e: ureq::http::uri::InvalidUri| e.to_string())?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

fn parse_target(url: &str) -> Result<Target, String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if scheme.as_deref() != Some("wss") {
        return Err("must start with wss://".to_owned());
    }
    let (host, port) = parse_host_port(url, 443)?;
    Ok(Target { url: url.to_owned(), host, port })
}

/// The userinfo of a URL (`user:password`) and its password, if any.
fn proxy_userinfo(url: &str) -> Option<(String, Option<String>)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let password = userinfo.split_once(':').map(|(_, p)| p.to_owned()).filter(|p| !p.is_empty());
    Some((userinfo.to_owned(), password))
}

/// `url` with its credentials replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match proxy_userinfo(url) {
        Some((userinfo, _)) => url.replacen(&format!("{userinfo}@"), "***@", 1),
        None => url.to_owned(),
    }
}

/// Removes every secret from a step's texts and data.
fn scrub(mut step: DoctorStep, secrets: &[zeroize::Zeroizing<String>]) -> DoctorStep {
    let clean = |text: &str| {
        let mut text = text.to_owned();
        for secret in secrets.iter().filter(|s| s.len() >= 4) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    };
    step.detail = clean(&step.detail);
    step.hint = step.hint.as_deref().map(clean);
    if !step.data.is_null() {
        let text = clean(&step.data.to_string());
        step.data = serde_json::from_str(&text).unwrap_or(Value::Null);
    }
    step
}

/// A certificate as doctor shows it: subject, issuer, validity, SPKI SHA-256 (base64, the form
/// of an HPKP pin).
fn describe_cert(der: &CertificateDer<'_>) -> Value {
    use base64::Engine as _;
    use sha2::Digest as _;
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => {
            let time = |t: x509_parser::time::ASN1Time| {
                u64::try_from(t.timestamp())
                    .ok()
                    .map(|secs| {
                        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                            .to_string()
                    })
                    .unwrap_or_else(|| t.to_string())
            };
            let spki = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
            json!({
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "notBefore": time(cert.validity().not_before),
                "notAfter": time(cert.validity().not_after),
                "spkiSha256": base64::engine::general_purpose::STANDARD.encode(spki),
            })
        }
        Err(e) => json!({ "error": format!("unparsable certificate: {e}") }),
    }
}

/// The chain, one block per certificate.
fn chain_lines(chain: &[Value]) -> String {
    let field = |c: &Value, f: &str| c[f].as_str().unwrap_or("?").to_owned();
    chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if let Some(error) = c["error"].as_str() {
                return format!("certificate {i}: {error}");
            }
            format!(
                "certificate {i}: subject {}\n  issuer {}\n  valid {} to {}\n  SPKI sha256/{}",
                field(c, "subject"),
                field(c, "issuer"),
                field(c, "notBefore"),
                field(c, "notAfter"),
                field(c, "spkiSha256")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A verifier that records the presented chain and delegates every decision to rustls's WebPki
/// verifier.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl Recorder {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_names_are_readable_not_debug_values() {
        assert_eq!(tls_version_name(rustls::ProtocolVersion::TLSv1_3), "TLS 1.3");
        assert_eq!(tls_version_name(rustls::ProtocolVersion::TLSv1_2), "TLS 1.2");
        assert_eq!(
            cipher_suite_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS13_AES_256_GCM_SHA384"
        );
        assert_eq!(cipher_suite_name(rustls::CipherSuite::from(0xfafa)), "cipher suite 0xfafa");
    }

    #[test]
    fn proxy_credentials_are_redacted_and_found() {
        assert_eq!(redact_url("http://bob:s3cret@proxy:3128"), "http://***@proxy:3128");
        assert_eq!(redact_url("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(
            proxy_userinfo("http://bob:s3cret@proxy:3128/x"),
            Some(("bob:s3cret".into(), Some("s3cret".into())))
        );
        assert_eq!(proxy_userinfo("http://proxy:3128/a@b"), None);
    }

    #[test]
    fn clock_skew_warns_above_two_minutes_and_fails_above_five() {
        let server = "2026-12-02T07:00:00.000Z";
        let at = |offset_s: i64| {
            let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_194_800);
            if offset_s >= 0 {
                base + Duration::from_secs(offset_s.unsigned_abs())
            } else {
                base - Duration::from_secs(offset_s.unsigned_abs())
            }
        };
        let rtt = Duration::from_millis(200);
        let in_sync = clock_step(server, rtt, at(0));
        assert_eq!(in_sync.status, StepStatus::Ok, "{in_sync:?}");
        assert_eq!(in_sync.data["skewMs"], -100, "half the round trip is allowed for");
        let ahead = clock_step(server, rtt, at(150));
        assert_eq!(ahead.status, StepStatus::Warn);
        assert!(
            ahead.detail.starts_with("this machine's clock is 2m 29s ahead of the gateway's"),
            "{ahead:?}"
        );
        assert!(ahead.hint.as_deref().unwrap().contains("NTP"));
        let behind = clock_step(server, rtt, at(-400));
        assert_eq!(behind.status, StepStatus::Fail);
        assert!(
            behind.detail.contains("behind the gateway's") && behind.detail.contains("expired"),
            "{behind:?}"
        );
        assert_eq!(clock_step("yesterday", rtt, at(0)).status, StepStatus::Warn);
    }

    #[test]
    fn scrubbing_removes_secrets_everywhere() {
        let secrets = vec![zeroize::Zeroizing::new("hunter22".to_owned())];
        let step =
            scrub(warn("x", "a hunter22 b", "use hunter22", json!({ "k": "hunter22", "n": 1 })), &secrets);
        assert_eq!(step.detail, "a *** b");
        assert_eq!(step.hint.as_deref(), Some("use ***"));
        assert_eq!(step.data, json!({ "k": "***", "n": 1 }));
    }

    #[test]
    fn a_missing_configuration_fails_the_first_step_and_skips_the_network() {
        let report = run(Path::new("/nonexistent/mini-connector/config.json"));
        assert_eq!(report.verdict, crate::protocol::control::Verdict::Fail);
        assert_eq!(report.steps[0].name, "config");
        assert_eq!(report.steps[0].status, StepStatus::Fail);
        let names: Vec<&str> = report.steps[1..].iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, NETWORK_STEPS);
        assert!(report.steps[1..].iter().all(|s| s.status == StepStatus::Skipped));
    }
}
