//! The link thread: the only code that touches the socket to the cloud.
//!
//! It dials out (optionally through an HTTP CONNECT proxy), speaks TLS 1.3 and WebSocket,
//! authenticates, then drives the connection with [`PolledWebSocket`]: it sleeps until the
//! socket has data, or another thread queued a frame and woke it. Inbound frames are decoded and
//! handed to the supervisor; outbound frames come from anyone holding a [`LinkSender`].
//! When the connection drops it reconnects with exponential backoff and jitter.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;

use crate::protocol::{ApiKey, Auth, ErrorCode, Frame, Inbound, Outbound, PROTOCOL_VERSION};
use crate::supervisor::SupMsg;
use crate::wsio::{Incoming, PolledWebSocket, Waker, ws_config};

/// How long dialling, TLS, the WebSocket handshake and authentication may take together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames kept while offline; heartbeats and status frames are not kept.
const OFFLINE_BACKLOG: usize = 1024;
/// First reconnection delay.
const BACKOFF_START: Duration = Duration::from_millis(500);

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Messages the link thread accepts.
#[derive(Debug)]
pub enum LinkMsg {
    /// Write a frame to the cloud (kept for later if it is a result and the link is down).
    Send(Outbound),
    /// Drop the current connection and dial again now.
    Reconnect,
    /// Close the connection and end the thread.
    Shutdown,
}

/// What the link needs to dial.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `wss://...` URL.
    pub url: String,
    /// Connector name sent in `auth`.
    pub connector_name: String,
    /// Optional `http://host:port` CONNECT proxy.
    pub proxy: Option<String>,
    /// TLS configuration (TLS 1.3 only).
    pub tls: Arc<ClientConfig>,
    /// Longest backoff between attempts.
    pub reconnect_max: Duration,
    /// Heartbeat period; a connection silent for three of these is considered dead.
    pub heartbeat_interval: Duration,
}

/// A cheap handle that queues a frame for the link and wakes it ("send, then wake").
#[derive(Clone, Debug)]
pub struct LinkSender {
    tx: Sender<LinkMsg>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl LinkSender {
    /// Queues a message and wakes the link thread. Returns false if the link has stopped.
    pub fn send(&self, msg: LinkMsg) -> bool {
        let ok = self.tx.send(msg).is_ok();
        if let Some(waker) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            waker.wake();
        }
        ok
    }

    /// Queues a frame.
    pub fn frame(&self, frame: Outbound) -> bool {
        self.send(LinkMsg::Send(frame))
    }
}

/// The link thread and its sender. Dropping it does not stop the thread: call [`Link::stop`].
#[derive(Debug)]
pub struct Link {
    sender: LinkSender,
    thread: Option<JoinHandle<()>>,
}

impl Link {
    /// Starts the link thread. `load_key` is called before each authentication; the key it
    /// returns is dropped (and zeroized) as soon as the `auth` frame is written.
    pub fn start(
        settings: LinkSettings,
        load_key: Box<dyn Fn() -> Result<ApiKey, String> + Send>,
        supervisor: Sender<SupMsg>,
    ) -> io::Result<Self> {
        // Unbounded on purpose: producers (supervisor, heartbeat, workers) must never block on a
        // slow network; the backlog kept while offline is capped at OFFLINE_BACKLOG instead.
        let (tx, rx) = crossbeam_channel::unbounded();
        let sender = LinkSender { tx, waker: Arc::new(Mutex::new(None)) };
        let waker_slot = sender.waker.clone();
        let thread = crate::spawn_named("link", move || {
            LinkThread { settings, load_key, supervisor, rx, waker_slot, backlog: VecDeque::new() }.run();
        })?;
        Ok(Self { sender, thread: Some(thread) })
    }

    /// A handle for queueing frames.
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// Closes the connection and joins the thread.
    pub fn stop(mut self) {
        self.sender.send(LinkMsg::Shutdown);
        if let Some(thread) = self.thread.take() {
            crate::join_named(thread);
        }
    }
}

struct LinkThread {
    settings: LinkSettings,
    load_key: Box<dyn Fn() -> Result<ApiKey, String> + Send>,
    supervisor: Sender<SupMsg>,
    rx: Receiver<LinkMsg>,
    waker_slot: Arc<Mutex<Option<Waker>>>,
    backlog: VecDeque<Outbound>,
}

/// Why a session ended.
enum End {
    Shutdown,
    Reconnect(String),
    /// Rejected by the cloud (`AUTH_FAILED`, `DUPLICATE_CONNECTION`): back off to the maximum.
    Rejected(ErrorCode, String),
}

impl LinkThread {
    fn run(mut self) {
        let mut backoff = BACKOFF_START;
        loop {
            let _ = self.supervisor.send(SupMsg::LinkConnecting);
            let started = Instant::now();
            let end = match self.connect() {
                Ok((ws, tcp)) => self.session(ws, &tcp),
                Err(end) => end,
            };
            let delay = match end {
                End::Shutdown => return,
                End::Reconnect(reason) => {
                    let _ = self.supervisor.send(SupMsg::LinkDown { reason, rejected: None });
                    // A session that lasted a while restarts the backoff.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_START;
                    }
                    let delay = jitter(backoff);
                    backoff = (backoff * 2).min(self.settings.reconnect_max);
                    delay
                }
                End::Rejected(code, reason) => {
                    let _ = self.supervisor.send(SupMsg::LinkDown { reason, rejected: Some(code) });
                    backoff = self.settings.reconnect_max;
                    jitter(backoff)
                }
            };
            if self.sleep_offline(delay).is_err() {
                return;
            }
        }
    }

    /// Waits out a backoff delay while still taking messages. `Err` means shut down.
    fn sleep_offline(&mut self, delay: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + delay;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(LinkMsg::Send(frame)) => self.keep(frame),
                Ok(LinkMsg::Reconnect) | Err(RecvTimeoutError::Timeout) => return Ok(()),
                Ok(LinkMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Err(()),
            }
        }
    }

    /// Keeps a frame for the next connection if it is worth delivering late.
    fn keep(&mut self, frame: Outbound) {
        if matches!(frame, Outbound::ExecutionResult(_) | Outbound::ExecutionError(_)) {
            if self.backlog.len() == OFFLINE_BACKLOG {
                tracing::warn!("offline backlog full; dropping the oldest undelivered result");
                self.backlog.pop_front();
            }
            self.backlog.push_back(frame);
        }
    }

    /// Dials, handshakes and authenticates. On success the socket is still in blocking mode.
    fn connect(&mut self) -> Result<(tungstenite::WebSocket<TlsStream>, TcpStream), End> {
        let fail = |what: &str, e: &dyn std::fmt::Display| End::Reconnect(format!("{what}: {e}"));
        let uri: ureq::http::Uri = self.settings.url.parse().map_err(|e| fail("bad cloud URL", &e))?;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;

        let tcp = match &self.settings.proxy {
            Some(proxy) => connect_via_proxy(proxy, &host, port, deadline),
            None => connect_tcp(&host, port, deadline),
        }
        .map_err(|e| fail("cannot reach the cloud", &e))?;
        tcp.set_nodelay(true).map_err(|e| fail("socket", &e))?;
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| fail("socket", &e))?;
        tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| fail("socket", &e))?;

        let name = ServerName::try_from(host.clone()).map_err(|e| fail("bad host name", &e))?;
        let mut conn = ClientConnection::new(self.settings.tls.clone(), name).map_err(|e| fail("tls", &e))?;
        let mut sock = tcp.try_clone().map_err(|e| fail("socket", &e))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| fail("TLS handshake failed", &e))?;
        }
        let stream = StreamOwned::new(conn, sock);

        let request =
            self.settings.url.as_str().into_client_request().map_err(|e| fail("bad cloud URL", &e))?;
        let (mut ws, _response) = tungstenite::client::client_with_config(request, stream, Some(ws_config()))
            .map_err(|e| fail("WebSocket handshake failed", &e))?;

        // Authenticate: the key lives only for the duration of this block.
        {
            let key = (self.load_key)().map_err(|e| End::Rejected(ErrorCode::AuthFailed, e))?;
            let auth = Outbound::Auth(Auth {
                api_key: key,
                connector_name: self.settings.connector_name.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: PROTOCOL_VERSION,
                instance_id: None,
                max_in_flight: None,
            });
            let text = zeroize::Zeroizing::new(auth.encode());
            ws.send(tungstenite::Message::text(text.as_str())).map_err(|e| fail("sending auth", &e))?;
        }
        loop {
            let message = ws.read().map_err(|e| fail("waiting for the cloud to accept", &e))?;
            let tungstenite::Message::Text(text) = message else { continue };
            match Inbound::decode(text.as_str()) {
                Ok(Inbound::Connected(connected)) => {
                    let _ = self.supervisor.send(SupMsg::LinkUp(Box::new(connected)));
                    return Ok((ws, tcp));
                }
                Ok(Inbound::Error(error)) => {
                    return Err(match error.code {
                        ErrorCode::AuthFailed | ErrorCode::DuplicateConnection => {
                            End::Rejected(error.code, error.message)
                        }
                        _ => End::Reconnect(format!("{}: {}", error.code, error.message)),
                    });
                }
                Ok(other) => {
                    return Err(End::Reconnect(format!("expected `connected`, got {other:?}")));
                }
                Err(e) => return Err(End::Reconnect(format!("bad first frame: {e}"))),
            }
        }
    }

    fn session(&mut self, ws: tungstenite::WebSocket<TlsStream>, tcp: &TcpStream) -> End {
        let _ = tcp.set_read_timeout(None);
        let _ = tcp.set_write_timeout(None);
        let (mut ws, waker) = match PolledWebSocket::new(ws, tcp) {
            Ok(pair) => pair,
            Err(e) => return End::Reconnect(format!("poller: {e}")),
        };
        *self.waker_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
        let end = self.drive(&mut ws);
        *self.waker_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match &end {
            End::Shutdown => ws.close("agent shutting down"),
            End::Reconnect(reason) => ws.close(reason),
            End::Rejected(..) => {}
        }
        end
    }

    fn drive(&mut self, ws: &mut PolledWebSocket<TlsStream>) -> End {
        while let Some(frame) = self.backlog.pop_front() {
            if let Err(e) = ws.send_text(frame.encode()) {
                self.backlog.push_front(frame);
                return End::Reconnect(format!("write failed: {e}"));
            }
        }
        let silence_limit = self.settings.heartbeat_interval * 3;
        let mut incoming = Vec::new();
        loop {
            // Drain everything queued before sleeping.
            loop {
                match self.rx.try_recv() {
                    Ok(LinkMsg::Send(frame)) => {
                        if let Err(e) = ws.send_text(frame.encode()) {
                            self.keep(frame);
                            return End::Reconnect(format!("write failed: {e}"));
                        }
                    }
                    Ok(LinkMsg::Reconnect) => return End::Reconnect("reconnect requested".into()),
                    Ok(LinkMsg::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return End::Shutdown;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            let read = ws.read_available(&mut incoming);
            for message in incoming.drain(..) {
                let msg = match message {
                    Incoming::Text(text) => match Inbound::decode(&text) {
                        Ok(Inbound::Error(error))
                            if matches!(
                                error.code,
                                ErrorCode::AuthFailed | ErrorCode::DuplicateConnection
                            ) =>
                        {
                            return End::Rejected(error.code, error.message);
                        }
                        Ok(frame) => SupMsg::Inbound(Box::new(frame)),
                        Err(e) => SupMsg::BadFrame(e),
                    },
                    Incoming::Binary(len) => SupMsg::BadFrame(crate::protocol::DecodeError {
                        code: ErrorCode::MalformedMessage,
                        message: format!("binary frame of {len} bytes; the protocol uses JSON text frames"),
                        command_id: None,
                    }),
                };
                let _ = self.supervisor.send(msg);
            }
            if let Err(e) = read {
                return End::Reconnect(format!("connection lost: {e}"));
            }
            let idle = ws.idle_for();
            if idle >= silence_limit {
                return End::Reconnect(format!("no data from the cloud for {}s", idle.as_secs()));
            }
            if idle >= self.settings.heartbeat_interval
                && let Err(e) = ws.ping()
            {
                return End::Reconnect(format!("write failed: {e}"));
            }
            let timeout = self.settings.heartbeat_interval.min(silence_limit - idle);
            if let Err(e) = ws.wait(Some(timeout)) {
                return End::Reconnect(format!("poll failed: {e}"));
            }
        }
    }
}

fn jitter(delay: Duration) -> Duration {
    use rand::RngExt as _;
    let factor: f64 = rand::rng().random_range(0.8..1.2);
    delay.mul_f64(factor)
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Opens a tunnel through an HTTP CONNECT proxy.
fn connect_via_proxy(proxy: &str, host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let uri: ureq::http::Uri =
        proxy.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("proxy URL: {e}")))?;
    let proxy_host = uri.host().unwrap_or_default();
    let mut tcp = connect_tcp(proxy_host, uri.port_u16().unwrap_or(3128), deadline)?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    write!(tcp, "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")?;
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if status.split_whitespace().nth(1).is_none_or(|code| code != "200") {
        return Err(io::Error::other(format!("proxy refused CONNECT: {}", status.trim())));
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    if !reader.buffer().is_empty() {
        return Err(io::Error::other("proxy sent data before the tunnel opened"));
    }
    Ok(tcp)
}
