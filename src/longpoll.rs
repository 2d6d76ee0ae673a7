//! The HTTPS long-poll transport: the link's fallback when the WebSocket upgrade is refused
//! (a proxy answering `403` to `Upgrade: websocket`, or closing the connection). The same
//! frames, in HTTPS requests (docs/PROTOCOL.md, "HTTPS long-poll transport"):
//!
//! - [`LongPollTransport::open`]: `POST /lp/open` with the `auth` frame; the answer carries the
//!   first gateway frame (`connected` or the `error`) and, on success, a session token (kept
//!   in a zeroizing string, never logged);
//! - frames to the gateway: `POST /lp/send`, several frames per request (one per line), each
//!   request with the next sequence number; a request whose answer was lost is sent again with
//!   the same number, and the gateway applies it once;
//! - frames from the gateway: a helper thread (`link-lp-recv`) holds a `GET /lp/recv` open,
//!   acknowledging the last sequence number it received; what a lost response carried comes
//!   again, and a repeat of a number already seen is dropped. It wakes the link thread through
//!   a [`Signal`], so [`crate::link::LinkSender`]'s waker works as over a WebSocket.
//!
//! Every request uses [`crate::https::agent`]: the same TLS 1.3 configuration and proxy as the
//! WebSocket and the uploads. The link drives it with the same `drive` loop (the
//! [`Transport`] trait), so heartbeats, the dead-peer rule and the store's exactly-once
//! guarantees are unchanged.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustls::ClientConfig;
use zeroize::Zeroizing;

use crate::protocol::headers;
use crate::wsio::{Incoming, Signal, Transport, Waker};

/// Longest a `recv` is held by the gateway (it caps at 25 s).
const MAX_HOLD: Duration = Duration::from_secs(20);
/// Frames buffered between the receiving thread and the link thread.
const INBOUND_FRAMES: usize = 1024;
/// A batch of frames is posted once it reaches this size (or at the next wake-up).
const BATCH_BYTES: usize = 1024 * 1024;
/// Largest response body read.
const MAX_RESPONSE: u64 = 4 * protocol::MAX_FRAME_BYTES as u64;
/// Pause before a failed request is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Where and how to reach the gateway's long-poll endpoints.
#[derive(Clone)]
pub struct LongPollTarget {
    /// `https://host:port` (no path).
    pub base: String,
    /// The link's TLS configuration.
    pub tls: Arc<ClientConfig>,
    /// The link's CONNECT proxy.
    pub proxy: crate::proxy::ProxySettings,
    /// The heartbeat period: requests retry within it, `recv` holds at most half of it.
    pub heartbeat_interval: Duration,
}

impl std::fmt::Debug for LongPollTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongPollTarget").field("base", &self.base).finish_non_exhaustive()
    }
}

impl LongPollTarget {
    /// The target for a `wss://host:port/...` cloud URL.
    pub fn from_ws_url(
        url: &str,
        tls: Arc<ClientConfig>,
        proxy: crate::proxy::ProxySettings,
        heartbeat_interval: Duration,
    ) -> Result<Self, String> {
        let uri: ureq::http::Uri = url.parse().map_err(|e| format!("bad cloud URL: {e}"))?;
        let authority = uri.authority().ok_or("the cloud URL has no host")?;
        Ok(Self { base: format!("https://{authority}"), tls, proxy, heartbeat_interval })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, protocol::LP_PATH)
    }

    fn hold(&self) -> Duration {
        (self.heartbeat_interval / 2).min(MAX_HOLD).max(Duration::from_millis(100))
    }
}

/// Why the session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The request failed (network, TLS, proxy) or the gateway answered with an HTTP error.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// One long-poll session, driven by the link thread.
pub struct LongPollTransport {
    target: LongPollTarget,
    agent: ureq::Agent,
    token: Arc<Zeroizing<String>>,
    send_seq: u64,
    pending: Vec<String>,
    pending_bytes: usize,
    inbound: Receiver<Result<String, String>>,
    signal: Signal,
    /// Milliseconds since `epoch` of the gateway's last answer.
    last_heard: Arc<AtomicU64>,
    epoch: Instant,
    last_pong: Option<Instant>,
    stop: Arc<AtomicBool>,
    closed: bool,
}

impl std::fmt::Debug for LongPollTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongPollTransport").field("target", &self.target).finish_non_exhaustive()
    }
}

/// What `/lp/open` and `/lp/recv` answer.
#[derive(serde::Deserialize)]
struct Batch {
    #[serde(default)]
    token: Option<String>,
    first: u64,
    frames: Vec<String>,
}

/// An HTTP answer: status and body.
fn exchange(request: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, String), String> {
    let mut response = request.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_string()
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok((status, body))
}

/// The `message` of an error body, or the body itself, shortened.
fn error_text(status: u16, body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| Some(format!("{} {}", v.get("code")?.as_str()?, v.get("message")?.as_str()?)))
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("HTTP {status}: {message}")
}

impl LongPollTransport {
    /// Opens a session with `auth` (the encoded `auth` frame, zeroized by the caller). Returns
    /// the transport (present only when the gateway accepted: a token came back), its waker,
    /// and the gateway's first frame, which the caller decodes as over a WebSocket.
    pub fn open(target: LongPollTarget, auth: &str) -> Result<(Option<(Self, Waker)>, String), OpenError> {
        let fail = |e: String| OpenError::Failed(e);
        let timeout = target.heartbeat_interval.max(Duration::from_secs(10));
        let agent = crate::https::agent(target.tls.clone(), target.proxy.clone(), timeout)
            .map_err(|e| fail(format!("HTTPS client: {e}")))?;
        let (status, body) = exchange(agent.post(&target.url("/open")).send(auth.as_bytes()))
            .map_err(|e| fail(format!("long-poll open failed: {e}")))?;
        if status != 200 {
            return Err(fail(format!("long-poll open refused: {}", error_text(status, &body))));
        }
        let batch: Batch =
            serde_json::from_str(&body).map_err(|e| fail(format!("long-poll open: bad answer: {e}")))?;
        let Some(first) = batch.frames.into_iter().next() else {
            return Err(fail("long-poll open: the answer has no frame".into()));
        };
        let Some(token) = batch.token else { return Ok((None, first)) };
        let token = Arc::new(Zeroizing::new(token));
        let (signal, waker) = Signal::new().map_err(|e| fail(format!("poller: {e}")))?;
        let (tx, inbound) = crossbeam_channel::bounded(INBOUND_FRAMES);
        let epoch = Instant::now();
        let last_heard = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = Receiving {
            target: target.clone(),
            token: token.clone(),
            ack: batch.first,
            tx,
            waker: waker.clone(),
            last_heard: last_heard.clone(),
            epoch,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name("link-lp-recv".into())
            .spawn(move || receiver.run())
            .map_err(|e| fail(format!("cannot start the receiving thread: {e}")))?;
        let transport = Self {
            target,
            agent,
            token,
            send_seq: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            inbound,
            signal,
            last_heard,
            epoch,
            last_pong: None,
            stop,
            closed: false,
        };
        Ok((Some((transport, waker)), first))
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn heard(&self) {
        self.last_heard.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Posts `body` as the next `send`, retrying the same sequence number until the gateway
    /// has it or the heartbeat interval is over.
    fn post(&mut self, body: &str) -> Result<(), tungstenite::Error> {
        self.send_seq += 1;
        let seq = self.send_seq.to_string();
        let deadline = Instant::now() + self.target.heartbeat_interval.max(Duration::from_secs(5));
        let mut last = String::new();
        while Instant::now() < deadline {
            let request = self
                .agent
                .post(&self.target.url("/send"))
                .header(headers::LP_TOKEN, self.token.as_str())
                .header(headers::LP_SEQ, &seq)
                .send(body.as_bytes());
            match exchange(request) {
                Ok((200, _)) => {
                    self.heard();
                    return Ok(());
                }
                // Busy: the gateway has not applied it; the same number again shortly.
                Ok((503, _)) => self.heard(),
                Ok((status, answer)) => {
                    return Err(lost(format!("long-poll send refused: {}", error_text(status, &answer))));
                }
                Err(e) => last = e,
            }
            std::thread::sleep(RETRY_PAUSE);
        }
        Err(lost(format!("long-poll send failed: {last}")))
    }
}

fn lost(reason: String) -> tungstenite::Error {
    tungstenite::Error::Io(io::Error::new(io::ErrorKind::ConnectionAborted, reason))
}

impl Transport for LongPollTransport {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.pending.is_empty() || !self.inbound.is_empty() {
            return Ok(());
        }
        self.signal.wait(timeout)
    }

    fn send_text(&mut self, text: String) -> Result<usize, tungstenite::Error> {
        let len = text.len();
        if self.closed {
            return Err(tungstenite::Error::AlreadyClosed);
        }
        // A batch is at most BATCH_BYTES, or one larger frame alone (the gateway takes a body
        // of one frame of up to MAX_FRAME_BYTES).
        if !self.pending.is_empty() && self.pending_bytes + text.len() + 1 > BATCH_BYTES {
            self.flush()?;
        }
        self.pending_bytes += text.len() + 1;
        self.pending.push(text);
        if self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(len)
    }

    fn flush(&mut self) -> Result<(), tungstenite::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let body = Zeroizing::new(self.pending.join("\n"));
        self.pending.clear();
        self.pending_bytes = 0;
        self.post(&body)
    }

    fn read_available(&mut self, out: &mut Vec<Incoming>) -> Result<(), tungstenite::Error> {
        self.flush()?;
        while let Ok(item) = self.inbound.try_recv() {
            match item {
                Ok(text) => out.push(Incoming::Text(text)),
                Err(reason) => return Err(lost(reason)),
            }
        }
        Ok(())
    }

    fn idle_for(&self) -> Duration {
        let heard = self.last_heard.load(Ordering::Relaxed);
        Duration::from_millis(self.elapsed_ms().saturating_sub(heard))
    }

    fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }

    /// A round trip: an empty `send` (it also proves the session alive to the gateway).
    fn ping(&mut self) -> Result<(), tungstenite::Error> {
        self.flush()?;
        self.post("")?;
        self.last_pong = Some(Instant::now());
        Ok(())
    }

    fn close(&mut self, _reason: &str) {
        if self.closed {
            return;
        }
        let _ = self.flush();
        self.closed = true;
        self.stop.store(true, Ordering::Relaxed);
        let _ = self
            .agent
            .post(&self.target.url("/close"))
            .header(headers::LP_TOKEN, self.token.as_str())
            .send(&b""[..]);
    }

    fn kind(&self) -> &'static str {
        "https-long-poll"
    }
}

impl Drop for LongPollTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `link-lp-recv` thread: holds a `GET /lp/recv` open, passes new frames on.
struct Receiving {
    target: LongPollTarget,
    token: Arc<Zeroizing<String>>,
    /// The last gateway frame sequence number received.
    ack: u64,
    tx: Sender<Result<String, String>>,
    waker: Waker,
    last_heard: Arc<AtomicU64>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl Receiving {
    fn run(mut self) {
        let hold = self.target.hold();
        let agent = match crate::https::agent(
            self.target.tls.clone(),
            self.target.proxy.clone(),
            hold + Duration::from_secs(10),
        ) {
            Ok(agent) => agent,
            Err(e) => return self.end(format!("HTTPS client: {e}")),
        };
        let wait_ms = hold.as_millis().to_string();
        while !self.stop.load(Ordering::Relaxed) {
            let request = agent
                .get(&self.target.url("/recv"))
                .header(headers::LP_TOKEN, self.token.as_str())
                .header(headers::LP_ACK, &self.ack.to_string())
                .header(headers::LP_WAIT, &wait_ms)
                .call();
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            match exchange(request) {
                Ok((200, body)) => {
                    let batch: Batch = match serde_json::from_str(&body) {
                        Ok(batch) => batch,
                        Err(e) => return self.end(format!("long-poll recv: bad answer: {e}")),
                    };
                    self.last_heard.store(
                        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    for (i, frame) in batch.frames.into_iter().enumerate() {
                        let seq = batch.first + i as u64;
                        if seq <= self.ack {
                            continue; // Sent again after a lost response: delivered already.
                        }
                        if !self.deliver(Ok(frame)) {
                            return;
                        }
                        self.ack = seq;
                    }
                    self.waker.wake();
                }
                Ok((status, body)) if status == 401 || status == 410 => {
                    return self.end(format!("long-poll session over: {}", error_text(status, &body)));
                }
                Ok((status, body)) => {
                    tracing::debug!("long-poll recv answered {}", error_text(status, &body));
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(e) => {
                    // The dead-peer rule of the link thread ends the session if this lasts.
                    tracing::debug!("long-poll recv failed: {e}");
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }

    /// Hands a frame to the link thread; false once it is gone.
    fn deliver(&self, item: Result<String, String>) -> bool {
        let mut item = item;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    self.waker.wake();
                    item = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn end(&self, reason: String) {
        self.deliver(Err(reason));
        self.waker.wake();
    }
}
