//! The link thread: the only code that touches the socket to the cloud.
//!
//! It dials out (optionally through an HTTP CONNECT proxy), speaks TLS 1.3 and WebSocket,
//! authenticates, then drives the connection with [`PolledWebSocket`]: it sleeps until the
//! socket has data, or another thread queued a frame and woke it. Inbound frames are decoded and
//! handed to the supervisor; outbound frames come from anyone holding a [`LinkSender`].
//!
//! **No backlog.** Frames queued while offline are dropped: results are kept by the
//! supervisor's store and re-sent after the next `connected`, so the link never holds them.
//!
//! **Reconnecting** ([`Backoff`]): exponential backoff with full jitter, reset as soon as a
//! session is healthy (`connected` received). `AUTH_FAILED` (a revoked or rotated key) retries
//! slowly ([`Backoff::auth_delay`]: about `reconnectMaxMs` first, never more often than every
//! 30 s, the key re-read each time); `DUPLICATE_CONNECTION` takes the normal backoff (the
//! gateway lets the same `instanceId` take a stale session over).
//!
//! **Several gateway URLs** (`cloudUrl`, then `cloudUrlFallbacks`: nodes of one gateway
//! cluster). Each dial goes to the current URL; a failed dial or an ended session (dropped,
//! cut by the peer, `reconnect`, a gateway restart notice) moves the next attempt on to the
//! next URL, round-robin (`cloudUrl`, fallback 1, …, fallback n, `cloudUrl`, …). A round tries
//! every URL once: after a failure the next URL is dialled within 100 ms (uniform jitter), and
//! only when the whole round failed does the doubling backoff above apply before the next
//! round, so one dead node costs ~100 ms, not a growing delay. A session sticks to the URL
//! that worked: nothing fails back to `cloudUrl` while it lasts. `AUTH_FAILED`,
//! `DUPLICATE_CONNECTION` and a refused proxy password dial the same URL again, on their own
//! schedules (the node answered; the refusal is not its fault). The HTTPS fallback goes to the
//! current URL. The same TLS settings (CA, pins) and proxy apply to every URL; a change of URL
//! is logged (its origin only), and with several URLs the reason of a failed dial names the
//! gateway's origin.
//!
//! **Dead peer.** A session silent for one heartbeat interval is pinged; silent for two, it is
//! dropped.
//!
//! **HTTPS fallback.** When the WebSocket upgrade is refused (the cloud or a proxy answers a
//! status other than `101`, or closes the connection after the upgrade request), the link opens
//! a session over the HTTPS long-poll transport ([`crate::longpoll`]) at once, with the same
//! frames and the same `drive` loop, logs a warning (once per fallback), and tells the status
//! ([`LinkStats::transport`]). It keeps using long-poll for [`WEBSOCKET_RETRY`], then tries the
//! WebSocket again at its next dial.
//!
//! **Keepalive.** When the link has written nothing for `keepaliveIntervalMs` (default 20 s,
//! below the 30–60 s after which NAT boxes, firewalls and proxies commonly cut an idle TCP
//! connection), it sends a WebSocket ping; the gateway's pong makes traffic the other way too.
//! Independent of the heartbeat, whose interval may be longer.
//!
//! **Compression.** `auth` offers `["deflate"]`; when `connected` accepts it, frames of 8 KiB
//! or more (schema broadcasts, large inline results) go out deflated and compressed frames from
//! the gateway are inflated ([`PolledWebSocket::set_compression`]).
//!
//! **Figures** ([`LinkStats`], shared through every [`LinkSender`]): bytes of frames sent (as
//! on the wire, after compression) and received (the JSON text), the round trip of a WebSocket ping sent with each heartbeat, and when the next dial
//! is due while offline. The supervisor reads them for the status snapshot.

use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;

use crate::longpoll::{LongPollTarget, LongPollTransport};
use crate::protocol::control::LinkTransport;
use crate::protocol::{
    ApiKey, Auth, Connected, DecodeError, ErrorCode, Frame, Inbound, Outbound, PROTOCOL_VERSION,
};
use crate::supervisor::SupMsg;
use crate::wsio::{Compression, Incoming, PolledWebSocket, Transport, Waker, ws_config};

/// How long dialling, TLS, the WebSocket handshake and authentication may take together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ceiling of the first reconnection delay after a failed attempt; doubled per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Ceiling of the first delay after a healthy session dropped: a link that is cut often comes
/// back at once, while a gateway that refuses every dial still sees the doubling backoff.
const FIRST_RETRY_CEILING: Duration = Duration::from_millis(100);
/// How long the link stays on the HTTPS fallback before it tries the WebSocket again (at its
/// next dial).
pub const WEBSOCKET_RETRY: Duration = Duration::from_secs(5 * 60);
/// Connections closed right after the WebSocket upgrade request, in a row, that count as a
/// refused upgrade (one alone is more often a network cut than a proxy's policy).
const SUSPECT_CLOSES: u32 = 3;
/// `AUTH_FAILED` is never retried more often than this.
const AUTH_RETRY_FLOOR: Duration = Duration::from_secs(30);
/// Longest wait between `AUTH_FAILED` retries.
const AUTH_RETRY_CAP: Duration = Duration::from_secs(30 * 60);

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Messages the link thread accepts.
#[derive(Debug)]
pub enum LinkMsg {
    /// Write a frame to the cloud (dropped if the link is down: the supervisor's store re-sends
    /// results after the next `connected`).
    Send(Outbound),
    /// Drop the current connection and dial again now.
    Reconnect,
    /// Close the connection and end the thread.
    Shutdown,
}

/// What the link needs to dial.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `wss://...` URL (`cloudUrl`): dialled first.
    pub url: String,
    /// Other nodes of the gateway (`cloudUrlFallbacks`), dialled in turn after `url` (see
    /// "Several gateway URLs" in the module docs).
    pub fallback_urls: Vec<String>,
    /// Connector name sent in `auth`.
    pub connector_name: String,
    /// Direct, or through an HTTP CONNECT proxy ([`crate::proxy`]).
    pub proxy: crate::proxy::ProxySettings,
    /// TLS configuration (TLS 1.3 only).
    pub tls: Arc<ClientConfig>,
    /// Longest backoff between attempts.
    pub reconnect_max: Duration,
    /// Heartbeat period: a connection silent for one is pinged, for two is dropped.
    pub heartbeat_interval: Duration,
    /// A WebSocket ping goes out when nothing was written for this long (`keepaliveIntervalMs`).
    pub keepalive_interval: Duration,
    /// Sent in `auth` as `instanceId`: the gateway lets a new session of the same instance
    /// replace a stale one at once.
    pub instance_id: Option<String>,
    /// Sent in `auth` as `maxInFlight`: how many unanswered commands the gateway may send.
    pub max_in_flight: Option<u32>,
}

/// What the link counts, for the status snapshot. Written by the link thread only.
#[derive(Debug, Default)]
pub struct LinkStats {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Microseconds of the last ping round trip; 0: none measured yet.
    latency_us: AtomicU64,
    /// Unix milliseconds of the next dial while offline; 0: not waiting.
    next_retry_ms: AtomicU64,
    /// 0: no session; 1: WebSocket; 2: HTTPS long-poll.
    transport: AtomicU8,
}

impl LinkStats {
    /// Bytes of frames written to the cloud since start.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// Bytes of frames read from the cloud since start.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// The round trip of the last ping sent with a heartbeat.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How long until the next dial, while the link waits out a backoff delay.
    pub fn next_retry_in(&self) -> Option<Duration> {
        match self.next_retry_ms.load(Ordering::Relaxed) {
            0 => None,
            at => {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at);
                Some(at.duration_since(SystemTime::now()).unwrap_or_default())
            }
        }
    }

    /// What carries the current session (`None`: no session).
    pub fn transport(&self) -> Option<LinkTransport> {
        match self.transport.load(Ordering::Relaxed) {
            1 => Some(LinkTransport::Websocket),
            2 => Some(LinkTransport::HttpsLongPoll),
            _ => None,
        }
    }

    /// Records what carries the current session.
    pub fn set_transport(&self, transport: Option<LinkTransport>) {
        let value = match transport {
            None => 0,
            Some(LinkTransport::Websocket) => 1,
            Some(LinkTransport::HttpsLongPoll) => 2,
        };
        self.transport.store(value, Ordering::Relaxed);
    }

    /// Counts bytes written.
    pub fn count_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts bytes read.
    pub fn count_received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Records a ping round trip.
    pub fn set_latency(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.store(us, Ordering::Relaxed);
    }

    /// Records when the next dial is due (`None`: dialling or connected).
    pub fn set_next_retry(&self, after: Option<Duration>) {
        let ms = after
            .and_then(|d| (SystemTime::now() + d).duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        self.next_retry_ms.store(ms, Ordering::Relaxed);
    }
}

/// A cheap handle that queues a frame for the link and wakes it ("send, then wake").
#[derive(Clone, Debug)]
pub struct LinkSender {
    tx: Sender<LinkMsg>,
    waker: Arc<Mutex<Option<Waker>>>,
    stats: Arc<LinkStats>,
}

impl LinkSender {
    /// A sender without a link thread: the messages land in the returned receiver. For driving
    /// the supervisor by messages in tests.
    pub fn channel() -> (Self, Receiver<LinkMsg>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Self { tx, waker: Arc::new(Mutex::new(None)), stats: Arc::new(LinkStats::default()) }, rx)
    }

    /// The link's figures (bytes, latency, next retry).
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

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
        // Unbounded on purpose: producers (supervisor, heartbeat) must never block on a slow
        // network. Offline, the link drops what it is sent, so nothing accumulates there.
        let (sender, rx) = LinkSender::channel();
        let waker_slot = sender.waker.clone();
        let stats = sender.stats.clone();
        let thread = crate::spawn_named("link", move || {
            LinkThread {
                settings,
                load_key,
                supervisor,
                rx,
                waker_slot,
                stats,
                compression: None,
                session_deadline: None,
                gateway: 0,
            }
            .run();
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
    stats: Arc<LinkStats>,
    /// What the last `connected` accepted from the offer in `auth`.
    compression: Option<Compression>,
    /// When the current session must end (the HTTPS fallback's window): `None` for none.
    session_deadline: Option<Instant>,
    /// Which gateway URL the next dial goes to: 0 is `url`, `n` is `fallback_urls[n - 1]`.
    gateway: usize,
}

/// Why a session ended.
enum End {
    Shutdown,
    Reconnect(String),
    /// Rejected by the cloud (`AUTH_FAILED`, `DUPLICATE_CONNECTION`).
    Rejected(ErrorCode, String),
    /// The WebSocket upgrade was refused: a non-101 answer (`definite`: the HTTPS fallback is
    /// tried at once), or the connection closed right after the upgrade request (which a flaky
    /// network also does: the fallback starts after [`SUSPECT_CLOSES`] of these in a row).
    UpgradeRefused(String, bool),
    /// The proxy refused the user and password we sent (407): retried on the slow
    /// `AUTH_FAILED` schedule, so a wrong password does not lock a domain account.
    ProxyCredentialsRefused(String),
}

/// When the link dials over the HTTPS fallback instead of the WebSocket: from a refused
/// upgrade for [`WEBSOCKET_RETRY`]; then the WebSocket is tried again at the next dial.
#[derive(Debug, Default, Clone, Copy)]
struct Fallback {
    until: Option<Instant>,
    /// Connections closed right after the upgrade request, in a row.
    suspect_closes: u32,
}

impl Fallback {
    /// Whether the next dial uses long-poll.
    fn use_long_poll(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// The upgrade was refused: long-poll for the next [`WEBSOCKET_RETRY`]. True when this
    /// starts a fallback (it is logged once), false when a retry of the WebSocket was refused
    /// again.
    fn refused(&mut self, now: Instant) -> bool {
        let first = self.until.is_none();
        self.until = Some(now + WEBSOCKET_RETRY);
        self.suspect_closes = 0;
        first
    }

    /// The connection closed right after the upgrade request: a proxy that drops upgrades, or
    /// a cut that happened to land there. True when it is the [`SUSPECT_CLOSES`]th in a row
    /// (then call [`Fallback::refused`]).
    fn suspect_close(&mut self) -> bool {
        self.suspect_closes += 1;
        self.suspect_closes >= SUSPECT_CLOSES
    }

    /// A WebSocket session started; true when that ends a fallback.
    fn websocket_works(&mut self) -> bool {
        self.suspect_closes = 0;
        self.until.take().is_some()
    }
}

/// Reconnection delays: exponential backoff with full jitter, per round of gateway URLs.
///
/// With one gateway URL, after `n` failed rounds in a row the next delay is uniform in
/// `[0, min(cap, 500 ms · 2^(n-1))]`; the first attempt after a healthy session (one that
/// received `connected`) waits uniform `[0, 100 ms]`. [`Backoff::connected`] resets the count.
/// With `t` URLs ([`Backoff::with_targets`]) a round is `t` attempts, one per URL: a failure
/// moves on to the next URL after uniform `[0, 100 ms]` ([`Backoff::delay`], a "hop") until
/// the round has tried every URL, and only then comes the doubling delay above, which starts
/// the next round. `AUTH_FAILED` has its own slow schedule ([`Backoff::auth_delay`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    /// Rounds that failed since the last healthy session.
    failures: u32,
    /// `AUTH_FAILED` answers in a row.
    auth_failures: u32,
    /// Gateway URLs per round (at least 1).
    targets: u32,
    /// Quick hops to the next URL left in the current round.
    hops_left: u32,
}

impl Backoff {
    /// A backoff whose delays never exceed `cap` (`reconnectMaxMs`), for one gateway URL.
    pub fn new(cap: Duration) -> Self {
        Self::with_targets(cap, 1)
    }

    /// A backoff for a link that rotates through `targets` gateway URLs: every URL is tried
    /// once (quick hops) before the delay grows.
    pub fn with_targets(cap: Duration, targets: usize) -> Self {
        let targets = u32::try_from(targets.max(1)).unwrap_or(u32::MAX);
        Self { cap, failures: 0, auth_failures: 0, targets, hops_left: targets - 1 }
    }

    /// A session is healthy: the next drop reconnects quickly again (to the next URL, then
    /// the others, before the delay grows).
    pub fn connected(&mut self) {
        self.failures = 0;
        self.auth_failures = 0;
        self.hops_left = self.targets - 1;
    }

    /// The upper bound of the next [`Backoff::next_round`] (of every [`Backoff::delay`] with
    /// one URL).
    pub fn ceiling(&self) -> Duration {
        if self.failures == 0 {
            return FIRST_RETRY_CEILING.min(self.cap);
        }
        let doubled = BACKOFF_START.saturating_mul(1u32 << (self.failures - 1).min(20));
        doubled.min(self.cap)
    }

    /// The delay before the next attempt after a dropped session or a failed dial: a hop
    /// (uniform in `[0, 100 ms]`) while the round has URLs left to try, else
    /// [`Backoff::next_round`]. With one URL, always the latter.
    pub fn delay(&mut self) -> Duration {
        if self.hops_left > 0 {
            self.hops_left -= 1;
            return uniform(Duration::ZERO, FIRST_RETRY_CEILING.min(self.cap));
        }
        self.next_round()
    }

    /// The doubling delay (uniform in `[0, ceiling]`) that starts a new round of URLs; also
    /// what `DUPLICATE_CONNECTION` waits (the same URL is dialled again). Counts one failure.
    pub fn next_round(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        self.hops_left = self.targets - 1;
        uniform(Duration::ZERO, ceiling)
    }

    /// The delay after `AUTH_FAILED`: about `cap` (±25 %) the first time, doubling per
    /// rejection in a row up to 30 min (or `cap` if longer), and never less than 30 s, so a revoked key never
    /// storms the gateway and a rotated one is picked up on a later try.
    pub fn auth_delay(&mut self) -> Duration {
        let longest = AUTH_RETRY_CAP.max(self.cap);
        let base = self.cap.saturating_mul(1u32 << self.auth_failures.min(20)).min(longest);
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.failures = self.failures.saturating_add(1);
        uniform(base.mul_f64(0.75), base.mul_f64(1.25)).max(AUTH_RETRY_FLOOR)
    }
}

/// Uniform in `[low, high]`.
fn uniform(low: Duration, high: Duration) -> Duration {
    use rand::RngExt as _;
    if high <= low {
        return low;
    }
    let nanos = rand::rng().random_range(low.as_nanos() as u64..=high.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

impl LinkThread {
    fn run(mut self) {
        let mut backoff = Backoff::with_targets(self.settings.reconnect_max, self.gateways());
        let mut fallback = Fallback::default();
        // The URL of the last dial: a change is logged (with several URLs only).
        let mut dialled: Option<usize> = None;
        loop {
            self.stats.set_next_retry(None);
            let _ = self.supervisor.send(SupMsg::LinkConnecting);
            if self.gateways() > 1 && dialled != Some(self.gateway) {
                tracing::info!(
                    gateway = %crate::uploader::url_origin(self.url()),
                    "dialling gateway {} of {}",
                    self.gateway + 1,
                    self.gateways()
                );
            }
            dialled = Some(self.gateway);
            let end = if fallback.use_long_poll(Instant::now()) {
                self.long_poll(&mut backoff, fallback.until)
            } else {
                match self.connect() {
                    Ok((ws, tcp)) => {
                        if fallback.websocket_works() {
                            tracing::info!("the WebSocket upgrade works again; leaving the HTTPS fallback");
                        }
                        // `connected` arrived: the session is healthy, the backoff starts over.
                        backoff.connected();
                        self.log_connected();
                        self.session(ws, &tcp)
                    }
                    Err(End::UpgradeRefused(why, definite)) if definite || fallback.suspect_close() => {
                        if fallback.refused(Instant::now()) {
                            tracing::warn!(
                                retry_websocket_in_s = WEBSOCKET_RETRY.as_secs(),
                                "the WebSocket upgrade was refused ({why}); falling back to HTTPS long-poll"
                            );
                        }
                        self.long_poll(&mut backoff, fallback.until)
                    }
                    Err(end) => end,
                }
            };
            // A dial that failed or a session that ended moves on to the next URL; a rejection
            // (the key, a duplicate instance, the proxy's credentials) is no node's fault and
            // dials the same URL again.
            let next_gateway = matches!(end, End::Reconnect(_) | End::UpgradeRefused(..));
            let delay = match end {
                End::Shutdown => return,
                End::Reconnect(reason) | End::UpgradeRefused(reason, _) => {
                    let reason = self.naming_gateway(reason);
                    let _ = self.supervisor.send(SupMsg::LinkDown { reason, rejected: None });
                    backoff.delay()
                }
                End::ProxyCredentialsRefused(reason) => {
                    let reason = self.naming_gateway(reason);
                    let _ = self.supervisor.send(SupMsg::LinkDown { reason, rejected: None });
                    let delay = backoff.auth_delay();
                    tracing::warn!(
                        retry_in_s = delay.as_secs(),
                        "the proxy refused the proxy user/password; retrying slowly so the account is not locked"
                    );
                    delay
                }
                End::Rejected(code, reason) => {
                    let reason = self.naming_gateway(reason);
                    let _ = self.supervisor.send(SupMsg::LinkDown { reason, rejected: Some(code) });
                    if code == ErrorCode::AuthFailed {
                        let delay = backoff.auth_delay();
                        tracing::warn!(
                            retry_in_s = delay.as_secs(),
                            "authentication failed; retrying slowly (the key is re-read each time)"
                        );
                        delay
                    } else {
                        backoff.next_round()
                    }
                }
            };
            if next_gateway {
                self.gateway = (self.gateway + 1) % self.gateways();
            }
            self.stats.set_next_retry(Some(delay));
            if self.sleep_offline(delay).is_err() {
                return;
            }
        }
    }

    /// How many gateway URLs the link dials in turn.
    fn gateways(&self) -> usize {
        1 + self.settings.fallback_urls.len()
    }

    /// The gateway URL the next dial goes to.
    fn url(&self) -> &str {
        match self.gateway.checked_sub(1) {
            Some(i) => &self.settings.fallback_urls[i],
            None => &self.settings.url,
        }
    }

    /// Which gateway took the session, when there are several.
    fn log_connected(&self) {
        if self.gateways() > 1 {
            tracing::info!(
                gateway = %crate::uploader::url_origin(self.url()),
                "session on gateway {} of {}",
                self.gateway + 1,
                self.gateways()
            );
        }
    }

    /// `reason`, followed by the origin of the URL dialled when there are several (the status
    /// and the log then say which gateway failed). Never the URL's path or query.
    fn naming_gateway(&self, reason: String) -> String {
        if self.gateways() > 1 {
            format!("{reason} (gateway {})", crate::uploader::url_origin(self.url()))
        } else {
            reason
        }
    }

    /// Waits out a backoff delay while still taking messages. `Err` means shut down. Frames
    /// sent meanwhile are dropped (the supervisor re-sends results after `connected`).
    fn sleep_offline(&mut self, delay: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + delay;
        let mut dropped = 0u32;
        let result = loop {
            match self.rx.recv_deadline(deadline) {
                Ok(LinkMsg::Send(_)) => dropped += 1,
                Ok(LinkMsg::Reconnect) | Err(RecvTimeoutError::Timeout) => break Ok(()),
                Ok(LinkMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => break Err(()),
            }
        };
        if dropped > 0 {
            tracing::debug!(frames = dropped, "dropped frames queued while offline");
        }
        result
    }

    /// Dials, handshakes and authenticates. On success the socket is still in blocking mode.
    fn connect(&mut self) -> Result<(tungstenite::WebSocket<TlsStream>, TcpStream), End> {
        let fail = |what: &str, e: &dyn std::fmt::Display| End::Reconnect(format!("{what}: {e}"));
        let url = self.url().to_owned();
        let uri: ureq::http::Uri = url.parse().map_err(|e| fail("bad cloud URL", &e))?;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;

        let route = self.settings.proxy.route(&host, port);
        let tcp = crate::proxy::dial(&route, &host, port, deadline).map_err(|e| match &e {
            crate::proxy::DialError::AuthRequired { sent_credentials: true, .. } => {
                End::ProxyCredentialsRefused(e.to_string())
            }
            _ if e.is_proxy_refusal() => End::Reconnect(e.to_string()),
            _ => fail("cannot reach the cloud", &e),
        })?;
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

        let request = url.as_str().into_client_request().map_err(|e| fail("bad cloud URL", &e))?;
        let (mut ws, _response) = tungstenite::client::client_with_config(request, stream, Some(ws_config()))
            .map_err(|e| {
                upgrade_refused(&e).map_or_else(
                    || fail("WebSocket handshake failed", &e),
                    |(why, definite)| End::UpgradeRefused(why, definite),
                )
            })?;

        // Authenticate: the key lives only for the duration of this block.
        {
            let key = (self.load_key)().map_err(|e| End::Rejected(ErrorCode::AuthFailed, e))?;
            let auth = auth_frame(&self.settings, key);
            let text = zeroize::Zeroizing::new(auth.encode());
            self.stats.count_sent(text.len());
            ws.send(tungstenite::Message::text(text.as_str())).map_err(|e| fail("sending auth", &e))?;
        }
        loop {
            let message = ws.read().map_err(|e| fail("waiting for the cloud to accept", &e))?;
            let tungstenite::Message::Text(text) = message else { continue };
            self.stats.count_received(text.len());
            let connected = accepted(Inbound::decode(text.as_str()))?;
            self.compression = connected.compression.as_deref().and_then(Compression::from_name);
            let _ = self.supervisor.send(SupMsg::LinkGateway(crate::uploader::url_origin(self.url())));
            let _ = self.supervisor.send(SupMsg::LinkUp(Box::new(connected)));
            return Ok((ws, tcp));
        }
    }

    /// A session over the HTTPS long-poll transport: `auth` in `POST /lp/open`, then the same
    /// [`Self::drive`] loop.
    fn long_poll(&mut self, backoff: &mut Backoff, retry_websocket_at: Option<Instant>) -> End {
        let settings = &self.settings;
        let target = match LongPollTarget::from_ws_url(
            self.url(),
            settings.tls.clone(),
            settings.proxy.clone(),
            settings.heartbeat_interval,
        ) {
            Ok(target) => target,
            Err(e) => return End::Reconnect(e),
        };
        // Authenticate: the key lives only for the duration of this block.
        let opened = {
            let key = match (self.load_key)() {
                Ok(key) => key,
                Err(e) => return End::Rejected(ErrorCode::AuthFailed, e),
            };
            let text = zeroize::Zeroizing::new(auth_frame(&self.settings, key).encode());
            self.stats.count_sent(text.len());
            LongPollTransport::open(target, &text)
        };
        let (transport, first) = match opened {
            Ok(pair) => pair,
            Err(e) => return End::Reconnect(format!("HTTPS fallback: {e}")),
        };
        self.stats.count_received(first.len());
        let connected = match accepted(Inbound::decode(&first)) {
            Ok(connected) => connected,
            Err(end) => return end,
        };
        let Some((mut transport, waker)) = transport else {
            return End::Reconnect("HTTPS fallback: `connected` came without a session token".into());
        };
        let _ = self.supervisor.send(SupMsg::LinkGateway(crate::uploader::url_origin(self.url())));
        let _ = self.supervisor.send(SupMsg::LinkUp(Box::new(connected)));
        backoff.connected();
        self.log_connected();
        // The session ends when the fallback window does, so the next dial tries the WebSocket
        // again (results are in the store: nothing is lost or run twice by the switch).
        self.session_deadline = retry_websocket_at;
        let end = self.run_session(&mut transport, waker, LinkTransport::HttpsLongPoll);
        self.session_deadline = None;
        end
    }

    fn session(&mut self, ws: tungstenite::WebSocket<TlsStream>, tcp: &TcpStream) -> End {
        let _ = tcp.set_read_timeout(None);
        let _ = tcp.set_write_timeout(None);
        let (mut ws, waker) = match PolledWebSocket::new(ws, tcp) {
            Ok(pair) => pair,
            Err(e) => return End::Reconnect(format!("poller: {e}")),
        };
        ws.set_compression(self.compression);
        self.run_session(&mut ws, waker, LinkTransport::Websocket)
    }

    fn run_session<T: Transport>(&mut self, ws: &mut T, waker: Waker, kind: LinkTransport) -> End {
        *self.waker_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
        self.stats.set_transport(Some(kind));
        let end = self.drive(ws);
        self.stats.set_transport(None);
        *self.waker_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match &end {
            End::Shutdown => ws.close("agent shutting down"),
            End::Reconnect(reason)
            | End::UpgradeRefused(reason, _)
            | End::ProxyCredentialsRefused(reason) => ws.close(reason),
            End::Rejected(..) => {}
        }
        end
    }

    fn drive<T: Transport>(&mut self, ws: &mut T) -> End {
        let interval = self.settings.heartbeat_interval;
        // Silent for one interval: ping; for two: the peer is dead.
        let silence_limit = interval * 2;
        let mut pinged = false;
        // When the ping sent with the last heartbeat left (its pong gives the latency).
        let mut heartbeat_ping: Option<Instant> = None;
        // Keepalive: a ping when nothing was written for this long.
        let keepalive = self.settings.keepalive_interval;
        let mut last_write = Instant::now();
        let mut incoming = Vec::new();
        loop {
            // Drain everything queued before sleeping.
            loop {
                match self.rx.try_recv() {
                    Ok(LinkMsg::Send(frame)) => {
                        last_write = Instant::now();
                        let heartbeat = matches!(frame, Outbound::Heartbeat(_));
                        match ws.send_text(frame.encode()) {
                            Ok(wire) => self.stats.count_sent(wire),
                            Err(e) => return End::Reconnect(format!("write failed: {e}")),
                        }
                        if heartbeat && heartbeat_ping.is_none() {
                            if let Err(e) = ws.ping() {
                                return End::Reconnect(format!("write failed: {e}"));
                            }
                            heartbeat_ping = Some(Instant::now());
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
            if let (Some(sent), Some(pong)) = (heartbeat_ping, ws.last_pong())
                && pong >= sent
            {
                self.stats.set_latency(pong - sent);
                heartbeat_ping = None;
            }
            for message in incoming.drain(..) {
                if let Incoming::Text(text) = &message {
                    self.stats.count_received(text.len());
                }
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
                    Incoming::Malformed(message) => SupMsg::BadFrame(crate::protocol::DecodeError {
                        code: ErrorCode::MalformedMessage,
                        message,
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
                return End::Reconnect(format!(
                    "no data from the cloud for {} ms (two heartbeat intervals)",
                    idle.as_millis()
                ));
            }
            if idle < interval {
                pinged = false;
            } else if !pinged {
                if let Err(e) = ws.ping() {
                    return End::Reconnect(format!("write failed: {e}"));
                }
                pinged = true;
                last_write = Instant::now();
            }
            if last_write.elapsed() >= keepalive {
                if let Err(e) = ws.ping() {
                    return End::Reconnect(format!("keepalive ping failed: {e}"));
                }
                last_write = Instant::now();
            }
            let timeout = if idle < interval { interval - idle } else { silence_limit - idle };
            let timeout = timeout.min(keepalive.saturating_sub(last_write.elapsed()));
            let timeout = match self.session_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return End::Reconnect(
                            "the HTTPS fallback window is over: trying the WebSocket again".into(),
                        );
                    }
                    timeout.min(left)
                }
                None => timeout,
            };
            if let Err(e) = ws.wait(Some(timeout)) {
                return End::Reconnect(format!("poll failed: {e}"));
            }
        }
    }
}

/// The cloud's answer to `auth`: `connected`, or why the session did not start.
fn accepted(first: Result<Inbound, DecodeError>) -> Result<Connected, End> {
    match first {
        Ok(Inbound::Connected(connected)) => Ok(connected),
        Ok(Inbound::Error(error)) => Err(match error.code {
            ErrorCode::AuthFailed | ErrorCode::DuplicateConnection => {
                End::Rejected(error.code, error.message)
            }
            _ => End::Reconnect(format!("{}: {}", error.code, error.message)),
        }),
        Ok(other) => Err(End::Reconnect(format!("expected `connected`, got {other:?}"))),
        Err(e) => Err(End::Reconnect(format!("bad first frame: {e}"))),
    }
}

/// Whether a failed WebSocket handshake means the upgrade itself was refused (an HTTP answer
/// other than `101`, or the connection closed after the upgrade request) rather than the
/// network failing; `Some((why, definite))` then, `definite` for an HTTP answer.
fn upgrade_refused(
    e: &tungstenite::HandshakeError<tungstenite::ClientHandshake<TlsStream>>,
) -> Option<(String, bool)> {
    let tungstenite::HandshakeError::Failure(e) = e else { return None };
    match e {
        tungstenite::Error::Http(response) => {
            Some((format!("HTTP {} instead of 101", response.status()), true))
        }
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
            Some(("the connection closed after the upgrade request".into(), false))
        }
        tungstenite::Error::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            Some((format!("the connection closed after the upgrade request ({io})"), false))
        }
        _ => None,
    }
}

/// The `auth` frame for `settings`, carrying `key`.
fn auth_frame(settings: &LinkSettings, key: ApiKey) -> Outbound {
    Outbound::Auth(Auth {
        api_key: key,
        connector_name: settings.connector_name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        instance_id: settings.instance_id.clone(),
        max_in_flight: settings.max_in_flight,
        probe: false,
        compression: vec![Compression::Deflate.as_str().to_owned()],
        chunk_encodings: crate::protocol::ContentEncoding::offer(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{AUTH_RETRY_FLOOR, Backoff, LinkMsg, LinkSender};
    use crate::protocol::{Outbound, StatusUpdate};

    #[test]
    fn delays_are_full_jitter_under_a_doubling_ceiling() {
        let cap = Duration::from_secs(60);
        let mut backoff = Backoff::new(cap);
        // First retry after a healthy session: quick.
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        let _ = backoff.delay();
        let mut expected = Duration::from_millis(500);
        for _ in 0..12 {
            assert_eq!(backoff.ceiling(), expected.min(cap));
            let _ = backoff.delay();
            expected *= 2;
        }
        assert_eq!(backoff.ceiling(), cap, "the ceiling stops at reconnectMaxMs");
        // Full jitter: uniform over [0, ceiling], so both ends of the range show up.
        let mut backoff = Backoff::new(cap);
        for _ in 0..3 {
            let _ = backoff.delay();
        }
        let ceiling = backoff.ceiling();
        assert_eq!(ceiling, Duration::from_secs(2));
        let samples: Vec<Duration> = (0..2000)
            .map(|_| {
                let mut b = backoff.clone();
                b.delay()
            })
            .collect();
        assert!(samples.iter().all(|d| *d <= ceiling));
        assert!(samples.iter().any(|d| *d < ceiling / 10), "no delay near 0");
        assert!(samples.iter().any(|d| *d > ceiling * 9 / 10), "no delay near the ceiling");
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(mean > ceiling * 2 / 5 && mean < ceiling * 3 / 5, "mean {mean:?} of uniform(0, {ceiling:?})");
    }

    #[test]
    fn the_fallback_lasts_its_window_then_the_websocket_is_tried_again() {
        use std::time::Instant;

        use super::{Fallback, WEBSOCKET_RETRY};
        let t0 = Instant::now();
        let mut fallback = Fallback::default();
        assert!(!fallback.use_long_poll(t0), "the WebSocket first");
        assert!(fallback.refused(t0), "the first refusal starts a fallback (and is logged)");
        assert!(fallback.use_long_poll(t0 + Duration::from_secs(1)));
        assert!(fallback.use_long_poll(t0 + WEBSOCKET_RETRY - Duration::from_millis(1)));
        assert!(!fallback.use_long_poll(t0 + WEBSOCKET_RETRY), "after the window: the WebSocket again");
        // Refused again: another window, without a second warning.
        let t1 = t0 + WEBSOCKET_RETRY;
        assert!(!fallback.refused(t1));
        assert!(fallback.use_long_poll(t1 + WEBSOCKET_RETRY / 2));
        // The WebSocket works: the fallback is over.
        assert!(fallback.websocket_works());
        // A close right after the upgrade request counts only when it repeats.
        assert!(!fallback.suspect_close());
        assert!(!fallback.suspect_close());
        assert!(!fallback.websocket_works(), "a session in between starts the count over");
        assert!(!fallback.suspect_close());
        assert!(!fallback.suspect_close());
        assert!(fallback.suspect_close(), "the third close in a row is a refusal");
        assert!(!fallback.use_long_poll(t1 + Duration::from_secs(1)));
        assert!(!fallback.websocket_works(), "nothing to leave");
    }

    #[test]
    fn a_healthy_session_resets_the_backoff() {
        let mut backoff = Backoff::new(Duration::from_secs(60));
        for _ in 0..10 {
            let _ = backoff.delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
        backoff.connected();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        assert!(backoff.delay() <= Duration::from_millis(100));
        // A cap below the start is respected from the first try.
        let mut small = Backoff::new(Duration::from_millis(50));
        for _ in 0..5 {
            assert!(small.delay() <= Duration::from_millis(50));
        }
    }

    #[test]
    fn with_several_urls_every_url_is_tried_once_before_the_delay_grows() {
        let cap = Duration::from_secs(60);
        let hop = Duration::from_millis(100);
        let mut backoff = Backoff::with_targets(cap, 3);
        // Per round: two hops (the 2nd and 3rd URL), then the doubling delay that starts the
        // next round, whose ceiling is the one-URL schedule's: 100 ms, 500 ms, 1 s, 2 s, ...
        let mut round_ceiling = Duration::from_millis(100);
        for round in 0..10 {
            for _ in 0..2 {
                assert_eq!(backoff.failures, round, "a hop does not count as a failed round");
                assert!(backoff.delay() <= hop);
            }
            assert_eq!(backoff.ceiling(), round_ceiling.min(cap), "round {round}");
            let _ = backoff.delay();
            round_ceiling = if round == 0 { Duration::from_millis(500) } else { round_ceiling * 2 };
        }
        // A healthy session: the next drop hops to the next URL at once, then the other.
        backoff.connected();
        assert!(backoff.delay() <= hop && backoff.delay() <= hop);
        assert_eq!(backoff.failures, 0);
        assert_eq!(backoff.ceiling(), hop, "the round after a healthy session starts quickly");
        // DUPLICATE_CONNECTION dials the same URL after the growing delay, not a hop.
        backoff.connected();
        let _ = backoff.next_round();
        assert_eq!(backoff.failures, 1);
        assert_eq!(backoff.ceiling(), Duration::from_millis(500));
        // A cap below 100 ms holds for hops too.
        let mut small = Backoff::with_targets(Duration::from_millis(20), 4);
        for _ in 0..12 {
            assert!(small.delay() <= Duration::from_millis(20));
        }
        // One URL: exactly the old schedule (no hops).
        let mut one = Backoff::with_targets(cap, 1);
        let _ = one.delay();
        assert_eq!(one.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn a_rejected_key_is_retried_slowly() {
        for cap in [Duration::from_secs(1), Duration::from_secs(60), Duration::from_secs(3600)] {
            let mut backoff = Backoff::new(cap);
            let first = backoff.auth_delay();
            assert!(first >= AUTH_RETRY_FLOOR, "{first:?} < 30 s");
            if cap >= AUTH_RETRY_FLOOR * 2 {
                assert!(first >= cap * 3 / 4 && first <= cap * 5 / 4, "first retry {first:?}, cap {cap:?}");
            }
            let mut previous_base = first;
            for _ in 0..20 {
                let delay = backoff.auth_delay();
                assert!(delay >= AUTH_RETRY_FLOOR);
                assert!(delay <= super::AUTH_RETRY_CAP.max(cap) * 5 / 4, "{delay:?}");
                previous_base = delay;
            }
            let longest = super::AUTH_RETRY_CAP.max(cap);
            assert!(previous_base >= longest * 3 / 4, "does not slow down: {previous_base:?}");
            // Once the key works again, everything starts over.
            backoff.connected();
            assert!(backoff.auth_delay() <= cap.max(AUTH_RETRY_FLOOR) * 5 / 4);
        }
    }

    #[test]
    fn auth_carries_the_instance_id_and_max_in_flight_from_the_settings() {
        let mut settings = super::LinkSettings {
            url: "wss://127.0.0.1:1/ws".into(),
            fallback_urls: Vec::new(),
            connector_name: "Warehouse".into(),
            proxy: crate::proxy::ProxySettings::direct(),
            tls: crate::tls::client_config(None).unwrap(),
            reconnect_max: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(20),
            instance_id: Some("inst-7".into()),
            max_in_flight: Some(40),
        };
        let key = || crate::protocol::ApiKey::generate("acme").unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&crate::protocol::Frame::encode(&super::auth_frame(&settings, key())))
                .unwrap();
        assert_eq!(json["type"], "auth");
        assert_eq!(json["instanceId"], "inst-7");
        assert_eq!(json["maxInFlight"], 40);
        assert_eq!(json["compression"], serde_json::json!(["deflate"]), "the agent offers deflate");
        settings.instance_id = None;
        settings.max_in_flight = None;
        let json: serde_json::Value =
            serde_json::from_str(&crate::protocol::Frame::encode(&super::auth_frame(&settings, key())))
                .unwrap();
        assert!(json.get("instanceId").is_none_or(|v| v.is_null()), "{json}");
        assert!(json.get("maxInFlight").is_none_or(|v| v.is_null()), "{json}");
    }

    #[test]
    fn a_link_sender_without_a_thread_delivers_to_its_receiver() {
        let (sender, rx) = LinkSender::channel();
        assert!(sender.frame(Outbound::Status(StatusUpdate {
            status: crate::protocol::AgentStatus::Ready,
            reason: None
        })));
        assert!(sender.send(LinkMsg::Reconnect));
        assert!(matches!(rx.try_recv(), Ok(LinkMsg::Send(Outbound::Status(_)))));
        assert!(matches!(rx.try_recv(), Ok(LinkMsg::Reconnect)));
        drop(rx);
        assert!(!sender.send(LinkMsg::Shutdown), "a stopped link says so");
    }
}
