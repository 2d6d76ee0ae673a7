//! Shared test fixtures: a gateway on port 0 in a temp dir, a fake agent (tungstenite over
//! rustls, trusting the generated certificate), a raw HTTPS chunk uploader and a watchdog.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gateway::{Gateway, GatewayConfig, GatewayEvent};
use protocol::{
    AgentStatus, ColumnMeta, Connected, DatabaseSchema, ErrorCode, ExecutionResult, Frame as _, Heartbeat,
    Inbound, Outbound, ResultPayload, chunk_signature, headers, now_rfc3339,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::{Message, WebSocket};

/// Every blocking wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// Aborts the test binary if a test runs longer than its budget (a hang fails fast).
pub struct Watchdog(#[allow(dead_code)] Sender<()>);

pub fn watchdog(name: &'static str) -> Watchdog {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name(format!("watchdog {name}"))
        .spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(60)) {
                eprintln!("watchdog: test `{name}` hung for 60 s; aborting");
                std::process::abort();
            }
        })
        .unwrap();
    Watchdog(tx)
}

/// A gateway in its own temp dir, shut down and removed on drop.
pub struct TestGateway {
    gateway: Option<Gateway>,
    pub dir: PathBuf,
    pub events: Receiver<GatewayEvent>,
}

impl Deref for TestGateway {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn config(dir: &Path) -> GatewayConfig {
    let mut config = GatewayConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Fake agents do not drain: a short grace keeps every test's shutdown short.
    config.shutdown_grace = Duration::from_millis(200);
    config
}

pub fn start() -> TestGateway {
    start_with(|_| {})
}

pub fn start_with(tweak: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
    let dir = temp_dir();
    let mut config = config(&dir);
    tweak(&mut config);
    let gateway = Gateway::start(config).unwrap();
    let events = gateway.subscribe();
    TestGateway { gateway: Some(gateway), dir, events }
}

impl TestGateway {
    /// Stops the gateway (a graceful shutdown) and starts a new one on the same data dir
    /// (a new port, the same certificate and gateway.db).
    pub fn restart_with(&mut self, tweak: impl FnOnce(&mut GatewayConfig)) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown();
        }
        let mut config = config(&self.dir);
        tweak(&mut config);
        let gateway = Gateway::start(config).unwrap();
        self.events = gateway.subscribe();
        self.gateway = Some(gateway);
    }

    /// Creates a key for `Warehouse` of tenant `acme` and returns the plaintext.
    pub fn key(&self, name: &str) -> String {
        self.keys().create("acme", name).unwrap().1.expose().to_owned()
    }

    /// Waits for the first event `pick` accepts.
    pub fn wait_event<T>(&self, mut pick: impl FnMut(&GatewayEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(_) => panic!("event not seen within {WAIT:?}"),
            }
        }
    }

    /// Waits until the agent of `connector` has disconnected.
    pub fn wait_disconnected(&self, connector: &str) {
        self.wait_event(|e| match e {
            GatewayEvent::AgentDisconnected { connector: c, .. } if c == connector => Some(()),
            _ => None,
        });
    }

    pub fn tls(&self) -> Arc<ClientConfig> {
        mini_connector::tls::client_config(Some(&self.ca_cert_path())).unwrap()
    }
}

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Opens a TLS connection to the gateway, verifying its certificate.
pub fn tls_connect(gw: &TestGateway) -> Tls {
    tls_connect_to(gw.local_addr(), gw.tls())
}

/// Opens a TLS connection to a gateway at `addr` (on loopback) trusting `tls`'s roots.
pub fn tls_connect_to(addr: std::net::SocketAddr, tls: Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(tls, name).unwrap();
    StreamOwned::new(conn, tcp)
}

/// A minimal agent: blocking tungstenite over rustls.
pub struct FakeAgent {
    pub ws: WebSocket<Tls>,
    pub connected: Option<Connected>,
}

impl FakeAgent {
    pub fn open(gw: &TestGateway) -> Self {
        Self::open_at(gw.local_addr(), &gw.ws_url(), gw.tls())
    }

    /// Opens a WebSocket to the gateway at `addr` (`ws_url` is its `wss://` URL).
    pub fn open_at(addr: std::net::SocketAddr, ws_url: &str, tls: Arc<ClientConfig>) -> Self {
        let stream = tls_connect_to(addr, tls);
        let (ws, response) =
            tungstenite::client::client_with_config(ws_url, stream, Some(protocol::wsio::ws_config()))
                .unwrap();
        assert_eq!(response.status().as_u16(), 101);
        Self { ws, connected: None }
    }

    /// Opens and authenticates; panics unless `connected` comes back.
    pub fn connect(gw: &TestGateway, key: &str, name: &str) -> Self {
        let mut agent = Self::open(gw);
        match agent.auth(key, name) {
            Inbound::Connected(c) => agent.connected = Some(c),
            other => panic!("expected connected, got {other:?}"),
        }
        agent
    }

    /// Sends `auth` with an arbitrary key string and returns the first answer.
    pub fn auth(&mut self, key: &str, name: &str) -> Inbound {
        self.auth_as(key, name, None, None)
    }

    /// `auth` with an `instanceId` and a `maxInFlight`.
    pub fn auth_as(
        &mut self,
        key: &str,
        name: &str,
        instance: Option<&str>,
        max_in_flight: Option<u32>,
    ) -> Inbound {
        let mut frame = serde_json::json!({
            "type": "auth", "apiKey": key, "connectorName": name, "agentVersion": "test-0", "protocolVersion": 1
        });
        if let Some(id) = instance {
            frame["instanceId"] = id.into();
        }
        if let Some(n) = max_in_flight {
            frame["maxInFlight"] = n.into();
        }
        self.send_text(frame.to_string());
        self.recv()
    }

    /// Opens and authenticates as `instance`; panics unless `connected` comes back.
    pub fn connect_as(
        gw: &TestGateway,
        key: &str,
        name: &str,
        instance: Option<&str>,
        max_in_flight: Option<u32>,
    ) -> Self {
        let mut agent = Self::open(gw);
        match agent.auth_as(key, name, instance, max_in_flight) {
            Inbound::Connected(c) => agent.connected = Some(c),
            other => panic!("expected connected, got {other:?}"),
        }
        agent
    }

    pub fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn send(&mut self, frame: &Outbound) {
        self.send_text(frame.encode());
    }

    pub fn heartbeat(&mut self, active: u32) {
        self.send(&Outbound::Heartbeat(Heartbeat {
            timestamp: now_rfc3339(),
            status: AgentStatus::Ready,
            active_commands: active,
        }));
    }

    /// The next text frame, or `None` once the connection is closed.
    pub fn recv_text(&mut self) -> Option<String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return None,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("no frame within the read timeout")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next frame, decoded.
    pub fn recv(&mut self) -> Inbound {
        let text = self.recv_text().expect("connection closed while waiting for a frame");
        Inbound::decode(&text).unwrap_or_else(|e| panic!("undecodable inbound frame {text}: {e}"))
    }

    /// Expects an `error` frame with this code.
    pub fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv() {
            Inbound::Error(e) if e.code == code => e.message,
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects the gateway to close the connection (no further text frames).
    pub fn expect_closed(&mut self) {
        if let Some(text) = self.recv_text() {
            panic!("expected close, got frame {text}");
        }
    }

    /// Asserts that no frame arrives within `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        self.ws.get_ref().sock.set_read_timeout(Some(quiet)).unwrap();
        match self.ws.read() {
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.ws.get_ref().sock.set_read_timeout(Some(WAIT)).unwrap();
    }

    /// Reads for `span`, answering pings (tungstenite queues the pong; the flush sends it);
    /// panics on any text frame.
    pub fn answer_pings_for(&mut self, span: Duration) {
        let deadline = Instant::now() + span;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            self.ws.get_ref().sock.set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {
                    let _ = self.ws.flush();
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                other => panic!("expected only pings, got {other:?}"),
            }
        }
        self.ws.get_ref().sock.set_read_timeout(Some(WAIT)).unwrap();
    }

    /// Expects a `command` frame.
    pub fn expect_command(&mut self) -> protocol::Command {
        match self.recv() {
            Inbound::Command(c) => c,
            other => panic!("expected command, got {other:?}"),
        }
    }

    pub fn expect_ack(&mut self, command_id: &str) {
        match self.recv() {
            Inbound::Ack(a) => assert_eq!(a.command_id, command_id),
            other => panic!("expected ack, got {other:?}"),
        }
    }

    /// Answers a command inline.
    pub fn answer_inline(
        &mut self,
        cmd: &protocol::Command,
        columns: Vec<ColumnMeta>,
        rows: Vec<Vec<serde_json::Value>>,
    ) {
        let row_count = rows.len() as u64;
        self.send(&Outbound::ExecutionResult(ExecutionResult {
            command_id: cmd.command_id.clone(),
            execution_id: cmd.execution_id.clone(),
            activity_id: cmd.activity_id.clone(),
            result: ResultPayload::Inline { columns, rows: rows.into() },
            row_count,
            duration_ms: 3,
        }));
    }

    pub fn connection_id(&self) -> String {
        self.connected.as_ref().unwrap().connection_id.clone()
    }

    pub fn hmac_key(&self) -> Vec<u8> {
        self.connected.as_ref().unwrap().upload.hmac_key.expose().to_vec()
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
    }
}

/// A result column (built through serde so the test does not depend on the type's fields).
pub fn col(name: &str, ty: &str) -> ColumnMeta {
    serde_json::from_value(serde_json::json!({"name": name, "type": ty, "dbType": ty.to_uppercase()}))
        .unwrap()
}

/// An empty schema of one connection.
pub fn schema(connection: &str) -> DatabaseSchema {
    serde_json::from_value(serde_json::json!({"connection": connection, "dbType": "sqlite", "tables": []}))
        .unwrap()
}

/// Zlib-compresses a slice of a result stream.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One HTTP/1.1 request over an open TLS stream; returns status and JSON body.
pub fn http_request(stream: &mut Tls, head: &str, body: &[u8]) -> (u16, serde_json::Value) {
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hdrs);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            let status = resp.code.unwrap();
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < n + len {
                let k = stream.read(&mut chunk).unwrap();
                assert!(k > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..k]);
            }
            let body = &buf[n..n + len];
            let value =
                if body.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(body).unwrap() };
            return (status, value);
        }
        let k = stream.read(&mut chunk).unwrap();
        assert!(k > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// A signed chunk upload as the agent does it.
pub struct Chunk<'a> {
    pub connection: &'a str,
    pub command: &'a str,
    pub seq: u32,
    pub last: bool,
    pub body: Vec<u8>,
    pub signature: String,
}

impl<'a> Chunk<'a> {
    pub fn signed(
        key: &[u8],
        connection: &'a str,
        command: &'a str,
        seq: u32,
        last: bool,
        plain: &[u8],
    ) -> Self {
        let body = compress(plain);
        let signature = hex::encode(chunk_signature(key, connection, command, seq, last, &body));
        Self { connection, command, seq, last, body, signature }
    }

    pub fn head(&self, keep_alive: bool) -> String {
        format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{}: {}\r\n{}: {}\r\n{}: {}\r\n{}: {}\r\n{}: {}\r\nConnection: {}\r\n\r\n",
            self.body.len(),
            headers::CONNECTION,
            self.connection,
            headers::COMMAND,
            self.command,
            headers::SEQ,
            self.seq,
            headers::FINAL,
            u8::from(self.last),
            headers::SIGNATURE,
            self.signature,
            if keep_alive { "keep-alive" } else { "close" },
        )
    }

    /// POSTs on a fresh connection.
    pub fn post(&self, gw: &TestGateway) -> (u16, serde_json::Value) {
        let mut stream = tls_connect(gw);
        http_request(&mut stream, &self.head(false), &self.body)
    }

    /// POSTs on a fresh connection to the gateway at `addr`.
    pub fn post_to(&self, addr: std::net::SocketAddr, tls: Arc<ClientConfig>) -> (u16, serde_json::Value) {
        let mut stream = tls_connect_to(addr, tls);
        http_request(&mut stream, &self.head(false), &self.body)
    }
}

/// A child process (a `connector-gateway` or a fleet), killed on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Spawns `cmd` quietly: errors-only logging, no output.
    pub fn quiet(cmd: &mut std::process::Command) -> Proc {
        use std::process::Stdio;
        Proc(cmd.env("RUST_LOG", "error").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
    }
}

/// The admin client and `admin.json` of a gateway process started on `dir`, once it wrote them.
pub fn await_admin(dir: &Path) -> (gateway::AdminClient, serde_json::Value) {
    let deadline = Instant::now() + WAIT * 2;
    let admin = loop {
        if let Ok(Some(client)) = gateway::AdminClient::from_data_dir(dir) {
            break client;
        }
        assert!(Instant::now() < deadline, "the gateway never wrote admin.json");
        std::thread::sleep(Duration::from_millis(20));
    };
    let doc = serde_json::from_str(&std::fs::read_to_string(dir.join("admin.json")).unwrap()).unwrap();
    (admin, doc)
}
