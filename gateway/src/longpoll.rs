//! The HTTPS long-poll transport (docs/PROTOCOL.md, "HTTPS long-poll transport"): the agent's
//! fallback when a proxy refuses the WebSocket upgrade. The same frames as over `/ws`, in HTTP
//! requests on the HTTPS port:
//!
//! - `POST /lp/open` (body: the `auth` frame) starts a session thread running the very same
//!   [`crate::session::run`] as a WebSocket, over a [`LongPollChannel`], and answers its first
//!   frame (`connected` or the `error`) with a session token;
//! - `POST /lp/send` (token, `seq`; body: agent frames, one per line) feeds them to the session
//!   thread; a `seq` already applied is answered again without applying it twice;
//! - `GET /lp/recv` (token, `ack`, wait) answers the gateway frames after `ack`, holding the
//!   request until one is queued (or the wait is over); frames stay until acknowledged, so a
//!   response lost on the way is sent again by the next `recv`;
//! - `POST /lp/close` ends the session.
//!
//! **Bounds.** At most `max_connections` long-poll sessions; per session at most
//! [`INBOX_FRAMES`] / [`INBOX_BYTES`] agent frames not yet handled (more: `503`, retryable) and
//! [`OUTBOX_FRAMES`] / [`OUTBOX_BYTES`] gateway frames not yet acknowledged (more: the session
//! ends, as a WebSocket whose peer stops reading would). A session without a `recv` for
//! `session_idle_timeout` ends. The token is 32 random bytes, kept only as its SHA-256, never
//! logged.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::wsio::{Incoming, Signal, Transport, Waker};
use protocol::{ErrorCode, Frame as _, Inbound, MAX_FRAME_BYTES, SecretBytes, headers};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::http::{RequestHead, error_body, read_body, write_json};
use crate::hub::Hub;
use crate::server::TlsStream;

/// Agent frames received but not yet handled by the session thread, per session.
pub(crate) const INBOX_FRAMES: usize = 1024;
/// Their bytes.
pub(crate) const INBOX_BYTES: usize = 2 * MAX_FRAME_BYTES;
/// Gateway frames not yet acknowledged by the agent, per session.
pub(crate) const OUTBOX_FRAMES: usize = 4096;
/// Their bytes.
pub(crate) const OUTBOX_BYTES: usize = 4 * MAX_FRAME_BYTES;
/// Longest hold of a `recv`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(25);
/// Hold of a `recv` that names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// Bytes of frames in one `recv` response (at least one frame is always sent).
const RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Largest `open` body (an `auth` frame is far smaller).
const OPEN_BYTES: u64 = 64 * 1024;
/// How long a closed session keeps its undelivered frames for a last `recv`.
const CLOSED_KEEP: Duration = Duration::from_secs(30);

/// The long-poll sessions of one gateway, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<[u8; 32], Arc<Shared>>>,
}

impl Registry {
    fn get(&self, token: &str) -> Option<Arc<Shared>> {
        self.lock().get(&digest(token)).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Arc<Shared>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets sessions closed long enough ago (their last frames had their chance).
    fn purge(&self) {
        self.lock().retain(|_, shared| shared.state().closed_at.is_none_or(|at| at.elapsed() < CLOSED_KEEP));
    }

    /// Sessions held now (closed ones still waiting for a last `recv` included).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What both sides of one long-poll session share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the outbox grows, the session closes or a ping releases a held `recv`.
    changed: Condvar,
    /// Wakes the session thread (new agent frames).
    waker: Waker,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct State {
    inbox: VecDeque<String>,
    inbox_bytes: usize,
    /// The last `send` sequence number applied.
    applied_seq: u64,
    /// Unacknowledged gateway frames, with their sequence numbers (consecutive).
    outbox: VecDeque<(u64, String)>,
    outbox_bytes: usize,
    next_out_seq: u64,
    last_request: Instant,
    last_recv: Instant,
    /// Bumped by a ping: a held `recv` answers at once, the agent's next one proves it alive.
    release: u64,
    closed: Option<String>,
    closed_at: Option<Instant>,
}

impl State {
    fn close(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.closed = Some(reason.to_owned());
            self.closed_at = Some(Instant::now());
        }
    }
}

/// The session thread's end of a long-poll session: what [`crate::session::run`] drives.
pub(crate) struct LongPollChannel {
    shared: Arc<Shared>,
    signal: Signal,
    idle_limit: Duration,
}

impl std::fmt::Debug for LongPollChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongPollChannel").finish_non_exhaustive()
    }
}

fn closed_error() -> tungstenite::Error {
    tungstenite::Error::ConnectionClosed
}

impl Transport for LongPollChannel {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // Cap the sleep so a session whose agent stopped polling is noticed.
        let cap = Duration::from_secs(1);
        self.signal.wait(Some(timeout.map_or(cap, |t| t.min(cap))))
    }

    fn send_text(&mut self, text: String) -> Result<usize, tungstenite::Error> {
        let len = text.len();
        let mut state = self.shared.state();
        if state.closed.is_some() {
            return Err(closed_error());
        }
        if state.outbox.len() >= OUTBOX_FRAMES || state.outbox_bytes + text.len() > OUTBOX_BYTES {
            state.close("the agent does not collect its frames (long-poll outbox full)");
            self.shared.changed.notify_all();
            return Err(tungstenite::Error::Io(io::Error::other("long-poll outbox full")));
        }
        let seq = state.next_out_seq;
        state.next_out_seq += 1;
        state.outbox_bytes += text.len();
        state.outbox.push_back((seq, text));
        self.shared.changed.notify_all();
        Ok(len)
    }

    fn flush(&mut self) -> Result<(), tungstenite::Error> {
        Ok(())
    }

    fn read_available(&mut self, out: &mut Vec<Incoming>) -> Result<(), tungstenite::Error> {
        let mut state = self.shared.state();
        while let Some(text) = state.inbox.pop_front() {
            state.inbox_bytes -= text.len();
            out.push(Incoming::Text(text));
        }
        if state.closed.is_none() && state.last_recv.elapsed() >= self.idle_limit {
            let reason = format!("no long-poll recv for {} s", self.idle_limit.as_secs_f64());
            state.close(&reason);
            self.shared.changed.notify_all();
            return Err(tungstenite::Error::Io(io::Error::new(io::ErrorKind::TimedOut, reason)));
        }
        if state.closed.is_some() { Err(closed_error()) } else { Ok(()) }
    }

    fn idle_for(&self) -> Duration {
        self.shared.state().last_request.elapsed()
    }

    fn last_pong(&self) -> Option<Instant> {
        None
    }

    fn ping(&mut self) -> Result<(), tungstenite::Error> {
        let mut state = self.shared.state();
        state.release += 1;
        self.shared.changed.notify_all();
        Ok(())
    }

    fn close(&mut self, reason: &str) {
        self.shared.state().close(reason);
        self.shared.changed.notify_all();
    }

    fn kind(&self) -> &'static str {
        "https-long-poll"
    }
}

impl Drop for LongPollChannel {
    fn drop(&mut self) {
        self.shared.state().close("session over");
        self.shared.changed.notify_all();
    }
}

/// Serves one request under [`protocol::LP_PATH`]. Returns whether the connection may serve
/// another one.
pub(crate) fn handle(
    hub: &Arc<Hub>,
    stream: &mut TlsStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    local: SocketAddr,
) -> io::Result<bool> {
    let keep = head.keep_alive();
    let (status, body) = match (head.method.as_str(), head.path.strip_prefix(protocol::LP_PATH)) {
        ("POST", Some("/open")) => match read_request_body(hub, stream, buf, head, OPEN_BYTES)? {
            Ok(body) => open(hub, head, local, body),
            Err(answer) => answer,
        },
        ("POST", Some("/send")) => {
            match read_request_body(hub, stream, buf, head, (MAX_FRAME_BYTES + 1024) as u64)? {
                Ok(body) => send(hub, head, body),
                Err(answer) => answer,
            }
        }
        ("GET", Some("/recv")) => recv(hub, head),
        ("POST", Some("/close")) => match read_request_body(hub, stream, buf, head, 4096)? {
            Ok(_) => close(hub, head),
            Err(answer) => answer,
        },
        _ => (404, error_body("NOT_FOUND", format!("no route for {} {}", head.method, head.path))),
    };
    write_json(stream, status, &body, keep)?;
    Ok(keep)
}

type Answer = (u16, serde_json::Value);

fn read_request_body(
    hub: &Hub,
    stream: &mut TlsStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    max: u64,
) -> io::Result<Result<Vec<u8>, Answer>> {
    let len = match head.content_length() {
        Ok(Some(len)) => len,
        Ok(None) => {
            return Ok(Err((
                411,
                error_body(ErrorCode::MalformedMessage.as_str(), "Content-Length is required"),
            )));
        }
        Err(()) => {
            return Ok(Err((
                400,
                error_body(ErrorCode::MalformedMessage.as_str(), "invalid Content-Length"),
            )));
        }
    };
    if len > max {
        let message = format!("body of {len} bytes exceeds the {max}-byte limit");
        return Ok(Err((413, error_body(ErrorCode::PayloadTooLarge.as_str(), message))));
    }
    stream.sock.set_deadline(Some(Instant::now() + hub.config.body_timeout));
    read_body(stream, buf, len as usize).map(Ok)
}

fn unknown_session() -> Answer {
    (401, error_body(ErrorCode::AuthFailed.as_str(), "unknown or expired long-poll session token"))
}

fn session_of(hub: &Hub, head: &RequestHead) -> Result<Arc<Shared>, Answer> {
    head.header(headers::LP_TOKEN)
        .and_then(|token| hub.longpoll.get(token.trim()))
        .ok_or_else(unknown_session)
}

fn gone(reason: &str) -> Answer {
    (410, error_body(ErrorCode::ConnectorOffline.as_str(), format!("long-poll session closed: {reason}")))
}

fn open(hub: &Arc<Hub>, head: &RequestHead, local: SocketAddr, body: Vec<u8>) -> Answer {
    let Ok(auth) = String::from_utf8(body) else {
        return (400, error_body(ErrorCode::AuthFailed.as_str(), "the auth frame is not UTF-8"));
    };
    hub.longpoll.purge();
    if hub.longpoll.len() >= hub.config.max_connections || hub.is_stopping() {
        let body = serde_json::json!({
            "code": ErrorCode::AgentBusy.as_str(),
            "message": "no long-poll session can be opened now",
            "retryable": true,
        });
        return (503, body);
    }
    let (signal, waker) = match Signal::new() {
        Ok(pair) => pair,
        Err(e) => return (500, error_body(ErrorCode::InternalError.as_str(), format!("poller: {e}"))),
    };
    let now = Instant::now();
    let auth_len = auth.len();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            inbox: VecDeque::from([auth]),
            inbox_bytes: auth_len,
            applied_seq: 0,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            next_out_seq: 1,
            last_request: now,
            last_recv: now,
            release: 0,
            closed: None,
            closed_at: None,
        }),
        changed: Condvar::new(),
        waker: waker.clone(),
    });
    let token = hex::encode(SecretBytes::random(32).expose());
    hub.longpoll.lock().insert(digest(&token), shared.clone());
    let channel =
        LongPollChannel { shared: shared.clone(), signal, idle_limit: hub.config.session_idle_timeout };
    let upload_url = match &hub.config.upload_url {
        Some(url) => url.clone(),
        None => format!("https://{}/upload", crate::server::public_host(head, local)),
    };
    let hub2 = hub.clone();
    match crate::spawn_named("gw-longpoll".to_owned(), move || {
        crate::session::run(hub2, channel, waker, upload_url);
    }) {
        Ok(thread) => hub.threads.lock().unwrap_or_else(|e| e.into_inner()).push(thread),
        Err(e) => {
            hub.longpoll.lock().remove(&digest(&token));
            return (
                500,
                error_body(ErrorCode::InternalError.as_str(), format!("cannot spawn a session: {e}")),
            );
        }
    }
    // The first frame the session writes answers the open: `connected`, or the `error`.
    let deadline = Instant::now() + hub.config.auth_timeout + Duration::from_secs(1);
    let mut state = shared.state();
    loop {
        if let Some((seq, text)) = state.outbox.pop_front() {
            state.outbox_bytes -= text.len();
            let connected =
                state.closed.is_none() && matches!(Inbound::decode(&text), Ok(Inbound::Connected(_)));
            drop(state);
            if !connected {
                hub.longpoll.lock().remove(&digest(&token));
                return (200, serde_json::json!({ "first": seq, "frames": [text] }));
            }
            return (200, serde_json::json!({ "token": token, "first": seq, "frames": [text] }));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if state.closed.is_some() || left.is_zero() {
            drop(state);
            hub.longpoll.lock().remove(&digest(&token));
            return (
                503,
                error_body(ErrorCode::InternalError.as_str(), "the session ended before answering"),
            );
        }
        state = shared.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

fn send(hub: &Hub, head: &RequestHead, body: Vec<u8>) -> Answer {
    let shared = match session_of(hub, head) {
        Ok(shared) => shared,
        Err(answer) => return answer,
    };
    let Some(seq) = head.header(headers::LP_SEQ).and_then(|v| v.trim().parse::<u64>().ok()) else {
        let message = format!("{} (a number) is required", headers::LP_SEQ);
        return (400, error_body(ErrorCode::MalformedMessage.as_str(), message));
    };
    let Ok(text) = String::from_utf8(body) else {
        return (400, error_body(ErrorCode::MalformedMessage.as_str(), "frames must be UTF-8 text"));
    };
    let mut state = shared.state();
    state.last_request = Instant::now();
    if let Some(reason) = &state.closed {
        return gone(reason);
    }
    if seq <= state.applied_seq {
        // A retried request whose answer was lost: applied once already.
        return (200, serde_json::json!({ "applied": false, "duplicate": true }));
    }
    if seq != state.applied_seq + 1 {
        let body = serde_json::json!({
            "code": ErrorCode::MalformedMessage.as_str(),
            "message": format!("send seq {seq} skips ahead; expected {}", state.applied_seq + 1),
            "retryable": false,
            "expectedSeq": state.applied_seq + 1,
        });
        return (409, body);
    }
    let frames: Vec<&str> =
        text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect();
    if state.inbox.len() + frames.len() > INBOX_FRAMES || state.inbox_bytes + text.len() > INBOX_BYTES {
        let body = serde_json::json!({
            "code": ErrorCode::AgentBusy.as_str(),
            "message": "too many frames waiting to be handled; send again shortly",
            "retryable": true,
        });
        return (503, body);
    }
    for frame in frames {
        state.inbox_bytes += frame.len();
        state.inbox.push_back(frame.to_owned());
    }
    state.applied_seq = seq;
    drop(state);
    shared.waker.wake();
    (200, serde_json::json!({ "applied": true }))
}

#[derive(Serialize)]
struct Batch {
    /// Sequence number of `frames[0]`; the rest follow without gaps.
    first: u64,
    frames: Vec<String>,
}

fn recv(hub: &Hub, head: &RequestHead) -> Answer {
    let shared = match session_of(hub, head) {
        Ok(shared) => shared,
        Err(answer) => return answer,
    };
    let ack = head.header(headers::LP_ACK).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let wait = head
        .header(headers::LP_WAIT)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    let started = Instant::now();
    let deadline = started + wait;
    let mut state = shared.state();
    let now = Instant::now();
    state.last_request = now;
    state.last_recv = now;
    while state.outbox.front().is_some_and(|(seq, _)| *seq <= ack) {
        if let Some((_, text)) = state.outbox.pop_front() {
            state.outbox_bytes -= text.len();
        }
    }
    let release = state.release;
    loop {
        if !state.outbox.is_empty() {
            let first = state.outbox.front().map_or(0, |(seq, _)| *seq);
            let mut bytes = 0;
            let mut frames = Vec::new();
            for (_, text) in &state.outbox {
                if !frames.is_empty() && bytes + text.len() > RESPONSE_BYTES {
                    break;
                }
                bytes += text.len();
                frames.push(text.clone());
            }
            let value = serde_json::to_value(Batch { first, frames }).unwrap_or_default();
            return (200, value);
        }
        if let Some(reason) = state.closed.clone() {
            drop(state);
            // Nothing left to deliver: the token is forgotten.
            hub.longpoll.lock().retain(|_, s| !Arc::ptr_eq(s, &shared));
            return gone(&reason);
        }
        // While the gateway stops, a held request ends within a second (its thread is joined).
        let deadline =
            if hub.is_stopping() { deadline.min(started + Duration::from_secs(1)) } else { deadline };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || state.release != release {
            let next = state.next_out_seq;
            return (200, serde_json::json!({ "first": next, "frames": [] }));
        }
        state = shared
            .changed
            .wait_timeout(state, left.min(Duration::from_secs(1)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        state.last_recv = Instant::now();
    }
}

fn close(hub: &Hub, head: &RequestHead) -> Answer {
    let shared = match session_of(hub, head) {
        Ok(shared) => shared,
        Err(answer) => return answer,
    };
    shared.state().close("the agent closed the long-poll session");
    shared.changed.notify_all();
    shared.waker.wake();
    hub.longpoll.lock().retain(|_, s| !Arc::ptr_eq(s, &shared));
    (200, serde_json::json!({ "closed": true }))
}
