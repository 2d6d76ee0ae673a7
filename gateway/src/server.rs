//! The HTTPS port: an accept thread, one thread per connection (TLS handshake, request head,
//! route): `GET /ws` upgrades to a session, `POST /upload` takes a chunk (keep-alive),
//! `/lp/...` is the HTTPS long-poll transport (`longpoll.rs`, keep-alive), `GET /updates/<file>`
//! serves `--updates-dir` (`updates.rs`), anything else is `404`.
//!
//! **Limits.** At most `max_connections` connections are served at once; one more is closed
//! right after `accept`, before any TLS work. Slow clients are cut by deadlines, not by
//! per-read timeouts (a client trickling a byte at a time would reset those forever): the TLS
//! handshake must finish within `handshake_timeout` of the accept, a request head within
//! `header_timeout` (of the handshake for the first request, of its first byte for the next
//! ones on a keep-alive connection, which may idle up to 30 s in between), a body within
//! `body_timeout`. [`TimedTcp`] enforces them on every socket read, below TLS.
//!
//! **One descriptor per connection.** The socket is shared (an `Arc`), never cloned: the
//! TLS stream, the hub's list of sockets to cut at shutdown and the session's registration
//! on the gateway's one [`Reactor`] all use the same descriptor, so a WebSocket session holds
//! exactly one (tests/fleet.rs counts them). A session's WebSocket reads into a small buffer
//! ([`SESSION_READ_BUFFER`]): most of what an idle session kept was tungstenite's default
//! 128 KiB one, zero-filled on every read.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::wsio::{PolledWebSocket, Reactor, ws_config};
use protocol::{ErrorCode, MAX_CHUNK_BYTES, WS_PATH};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tungstenite::WebSocket;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;

use crate::http::{HeadError, RequestHead, error_body, read_body, read_head, write_json};
use crate::hub::Hub;
use crate::{session, spawn_named, upload};

/// Time a write may block (the client does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may sit idle between requests.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);
/// tungstenite's read buffer of a WebSocket session (its default is 128 KiB, all of it
/// zero-filled and so resident from the first read). A TLS record is at most 16 KiB of
/// plaintext; a larger frame gets a buffer of its own size once its header is read.
pub(crate) const SESSION_READ_BUFFER: usize = 8 * 1024;

/// A socket the hub can keep to cut it at shutdown: an `Arc` is shared as it is; a plain
/// `TcpStream` (the admin API's connections) is cloned.
pub(crate) trait SharedSocket {
    fn share(&self) -> Option<Arc<TcpStream>>;
}

impl SharedSocket for Arc<TcpStream> {
    fn share(&self) -> Option<Arc<TcpStream>> {
        Some(self.clone())
    }
}

impl SharedSocket for TcpStream {
    fn share(&self) -> Option<Arc<TcpStream>> {
        self.try_clone().ok().map(Arc::new)
    }
}

/// A TCP stream whose reads fail with `TimedOut` once `deadline` has passed, however the bytes
/// trickle in. `None` = plain reads (the WebSocket session has its own timers).
#[derive(Debug)]
pub(crate) struct TimedTcp {
    tcp: Arc<TcpStream>,
    deadline: Option<Instant>,
}

impl TimedTcp {
    pub(crate) fn new(tcp: impl Into<Arc<TcpStream>>, deadline: Option<Instant>) -> Self {
        Self { tcp: tcp.into(), deadline }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow: deadline passed"));
            }
            self.tcp.set_read_timeout(Some(left))?;
        }
        (&*self.tcp).read(buf)
    }
}

impl io::Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.tcp).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.tcp).flush()
    }
}

pub(crate) type TlsStream = StreamOwned<ServerConnection, TimedTcp>;

/// Accepts connections until the hub closes its listener, at the end of a shutdown's grace
/// period (the stopper connects once to unblock `accept`); uploads of answers still arrive
/// during the grace period. WebSocket sessions wait on `reactor`.
pub(crate) fn accept_loop(hub: Arc<Hub>, listener: TcpListener, tls: Arc<ServerConfig>, reactor: Reactor) {
    for stream in listener.incoming() {
        if hub.closing_listener.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let tcp = match stream {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let Some(slot) = hub.admit_connection(false) else {
            tracing::warn!(%peer, max = hub.config.max_connections, "too many connections; closing a new one");
            hub.emit(crate::GatewayEvent::ConnectionRefused { peer });
            drop(tcp);
            continue;
        };
        let accepted = Instant::now();
        let (hub2, tls2, reactor2) = (hub.clone(), tls.clone(), reactor.clone());
        let spawned = spawn_named(format!("gw-conn {peer}"), move || {
            let _slot = slot;
            let tcp = Arc::new(tcp);
            let id = hub2.track_socket(&tcp);
            if let Err(e) = handle_connection(&hub2, tls2, &reactor2, tcp, id, accepted) {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            hub2.untrack_socket(id);
        });
        let mut threads = hub.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => tracing::error!("cannot spawn a connection thread: {e}"),
        }
    }
}

fn handle_connection(
    hub: &Arc<Hub>,
    tls: Arc<ServerConfig>,
    reactor: &Reactor,
    tcp: Arc<TcpStream>,
    socket_id: Option<u64>,
    accepted: Instant,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let local = tcp.local_addr()?;
    let conn = ServerConnection::new(tls).map_err(io::Error::other)?;
    let sock = TimedTcp { tcp: tcp.clone(), deadline: Some(accepted + hub.config.handshake_timeout) };
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    let mut buf = Vec::new();
    match serve_requests(hub, &mut stream, &mut buf) {
        Ok(Some(head)) => {
            hub.socket_is_session(socket_id);
            stream.sock.set_deadline(None);
            tcp.set_read_timeout(None)?;
            upgrade(hub, reactor, stream, tcp, local, head, buf)
        }
        result => {
            // A clean TLS close, so clients reading to the end see no truncation.
            stream.conn.send_close_notify();
            let _ = stream.conn.complete_io(&mut stream.sock);
            result.map(|_| ())
        }
    }
}

/// Serves HTTP requests until the connection should close (`Ok(None)`) or a valid WebSocket
/// upgrade arrives (`Ok(Some(head))`).
fn serve_requests(
    hub: &Arc<Hub>,
    stream: &mut TlsStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<RequestHead>> {
    let mut first = true;
    loop {
        if !first && buf.is_empty() {
            // Keep-alive: wait (at most KEEP_ALIVE_IDLE) for the next request to start.
            stream.sock.set_deadline(Some(Instant::now() + KEEP_ALIVE_IDLE));
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => buf.push(byte[0]),
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        first = false;
        stream.sock.set_deadline(Some(Instant::now() + hub.config.header_timeout));
        let head = match read_head(stream, buf) {
            Ok(head) => head,
            Err(HeadError::Closed) => return Ok(None),
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::TooLarge) => {
                let body = error_body(ErrorCode::PayloadTooLarge.as_str(), "request head too large");
                return write_json(stream, 431, &body, false).map(|_| None);
            }
            Err(HeadError::Malformed(message)) => {
                let body = error_body(ErrorCode::MalformedMessage.as_str(), message);
                return write_json(stream, 400, &body, false).map(|_| None);
            }
        };
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", path) if path == WS_PATH => {
                if !head.header_has_token("upgrade", "websocket") {
                    let body = error_body(
                        ErrorCode::MalformedMessage.as_str(),
                        "this endpoint speaks WebSocket only",
                    );
                    return write_json(stream, 426, &body, false).map(|_| None);
                }
                return Ok(Some(head));
            }
            (_, path) if path.starts_with(protocol::LP_PATH) => {
                let local = stream.sock.tcp.local_addr()?;
                if !crate::longpoll::handle(hub, stream, buf, &head, local)? {
                    return Ok(None);
                }
            }
            (_, path) if path.starts_with(crate::updates::PREFIX) => {
                // A file may take minutes to send: give the writes their own bound.
                stream.sock.set_deadline(Some(Instant::now() + crate::updates::SEND_TIMEOUT));
                if !crate::updates::handle(hub.config.updates_dir.as_deref(), stream, &head)? {
                    return Ok(None);
                }
            }
            ("POST", "/upload") => {
                if !upload_request(hub, stream, buf, &head)? || !head.keep_alive() {
                    return Ok(None);
                }
            }
            _ => {
                let body = error_body("NOT_FOUND", format!("no route for {} {}", head.method, head.path));
                return write_json(stream, 404, &body, false).map(|_| None);
            }
        }
    }
}

/// One `POST /upload`. Returns whether the connection may serve another request.
fn upload_request(
    hub: &Hub,
    stream: &mut TlsStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> io::Result<bool> {
    let command = head.header(protocol::headers::COMMAND).unwrap_or_default();
    let len = match head.content_length() {
        Ok(Some(len)) => len,
        Ok(None) => {
            hub.emit(crate::GatewayEvent::ChunkRejected {
                command_id: command.to_owned(),
                code: ErrorCode::MalformedMessage,
            });
            let body = error_body(ErrorCode::MalformedMessage.as_str(), "Content-Length is required");
            write_json(stream, 411, &body, false)?;
            return Ok(false);
        }
        Err(()) => {
            let body = error_body(ErrorCode::MalformedMessage.as_str(), "invalid Content-Length");
            write_json(stream, 400, &body, false)?;
            return Ok(false);
        }
    };
    if len > MAX_CHUNK_BYTES as u64 {
        hub.emit(crate::GatewayEvent::ChunkRejected {
            command_id: command.to_owned(),
            code: ErrorCode::PayloadTooLarge,
        });
        let message = format!("chunk of {len} bytes exceeds the {MAX_CHUNK_BYTES}-byte limit");
        write_json(stream, 413, &error_body(ErrorCode::PayloadTooLarge.as_str(), message), false)?;
        return Ok(false);
    }
    stream.sock.set_deadline(Some(Instant::now() + hub.config.body_timeout));
    let body = read_body(stream, buf, len as usize)?;
    let (status, answer) = upload::handle(hub, head, &body);
    let keep = head.keep_alive();
    write_json(stream, status, &answer, keep)?;
    Ok(keep)
}

/// Answers `101` and runs the session on this thread.
fn upgrade(
    hub: &Arc<Hub>,
    reactor: &Reactor,
    mut stream: TlsStream,
    tcp: Arc<TcpStream>,
    local: SocketAddr,
    head: RequestHead,
    leftover: Vec<u8>,
) -> io::Result<()> {
    let Some(key) =
        head.header("sec-websocket-key").filter(|_| head.header("sec-websocket-version") == Some("13"))
    else {
        let body = error_body(
            ErrorCode::MalformedMessage.as_str(),
            "Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required",
        );
        return write_json(&mut stream, 400, &body, false);
    };
    let accept = derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    write_response_raw(&mut stream, response.as_bytes())?;
    let upload_url = match &hub.config.upload_url {
        Some(url) => url.clone(),
        None => format!("https://{}/upload", public_host(&head, local)),
    };
    let config = ws_config().read_buffer_size(SESSION_READ_BUFFER);
    let ws = WebSocket::from_partially_read(stream, leftover, Role::Server, Some(config));
    let (ws, waker) = PolledWebSocket::on_reactor(ws, tcp, reactor)?;
    session::run(hub.clone(), ws, waker, upload_url);
    Ok(())
}

fn write_response_raw(stream: &mut TlsStream, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    stream.write_all(bytes)?;
    stream.flush()
}

/// The `host:port` the agent dialed (its `Host` header), so the upload URL reaches the same
/// listener through the same name; the socket's own address when the header is unusable.
pub(crate) fn public_host(head: &RequestHead, local: SocketAddr) -> String {
    let valid = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    match head.header("host").map(str::trim).filter(valid) {
        Some(host) if host.contains(':') && !host.ends_with(']') => host.to_owned(),
        Some(host) => format!("{host}:{}", local.port()),
        None => local.to_string(),
    }
}
