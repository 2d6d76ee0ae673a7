//! A WebSocket on a non-blocking socket, driven by a [`polling::Poller`].
//!
//! Both ends use it: the agent's link thread and each of the gateway's connection threads. The
//! thread that owns a [`PolledWebSocket`] sleeps in [`PolledWebSocket::wait`] until the socket is
//! readable, a queued write can proceed, a timeout passes, or another thread calls
//! [`Waker::wake`] after putting an outbound frame on a channel ("send, then wake"). An idle
//! connection therefore costs no CPU, and a queued frame is written at once.
//!
//! **Many sockets, one poller** ([`Reactor`], the gateway). A [`PolledWebSocket::new`] has a
//! poller of its own: three file descriptors (epoll, its eventfd and timerfd on Linux) and a
//! clone of the socket besides the socket, fine for the agent's one link. A gateway node holds
//! thousands of sessions, so [`PolledWebSocket::on_reactor`] registers the socket (shared, not
//! cloned) on one poller that a single `wsio-reactor` thread waits on: an event raises the
//! session's flag (a mutex and a condvar, no descriptor) and the session thread, sleeping on
//! that condvar, wakes. One file descriptor per session: the socket.
//!
//! **Compression** ([`PolledWebSocket::set_compression`], negotiated in `auth`/`connected`):
//! tungstenite has no permessage-deflate, so it is done per message. A text frame of at least
//! [`COMPRESS_MIN_BYTES`] goes out as a binary frame holding the raw deflate (RFC 1951) of its
//! UTF-8 text, when that is smaller. A binary frame read on a compressed session is inflated
//! into at most [`MAX_FRAME_BYTES`] (one byte more and it is refused as
//! [`Incoming::Malformed`], so a deflate bomb never allocates more); without compression a
//! binary frame stays [`Incoming::Binary`], which the protocol refuses.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::MAX_FRAME_BYTES;

/// The socket's key on a poller of its own.
const KEY: usize = 1;

/// Stack of the reactor thread: it only waits and raises flags.
const REACTOR_STACK: usize = 64 * 1024;

/// Wakes the thread blocked in [`PolledWebSocket::wait`] (or [`Signal::wait`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker(Wake);

#[derive(Clone, Debug)]
enum Wake {
    /// The owner waits on a poller of its own.
    Poller(Arc<Poller>),
    /// The owner waits on a flag (a [`Signal`], or a socket on a [`Reactor`]).
    Flag(Arc<Flag>),
}

impl Waker {
    /// Interrupts the owner's `wait`. Errors are ignored: a failed wake only delays a frame
    /// until the next socket event or timeout.
    pub fn wake(&self) {
        match &self.0 {
            Wake::Poller(poller) => {
                let _ = poller.notify();
            }
            Wake::Flag(flag) => flag.raise(false),
        }
    }
}

/// What a thread waiting on a flag is woken by: a [`Waker`], or the reactor seeing its socket
/// ready. A mutex and a condvar: no file descriptor.
#[derive(Debug, Default)]
struct Flag {
    state: Mutex<FlagState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct FlagState {
    /// Raised since the owner's last wait returned.
    raised: bool,
    /// The socket's one-shot registration on the reactor is armed (cleared when it fires).
    armed: bool,
}

impl Flag {
    fn lock(&self) -> MutexGuard<'_, FlagState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the owner; `fired`: by the reactor, whose one-shot registration is now disarmed.
    fn raise(&self, fired: bool) {
        let mut state = self.lock();
        state.raised = true;
        if fired {
            state.armed = false;
        }
        drop(state);
        self.cond.notify_one();
    }

    /// Blocks until raised or `timeout` passes, and lowers the flag.
    fn wait(&self, timeout: Option<Duration>) {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.lock();
        while !state.raised {
            state = match deadline {
                None => self.cond.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.cond.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
        state.raised = false;
    }
}

/// A wake-up signal without a socket, so the same [`Waker`] type wakes a thread that waits on
/// something else than a WebSocket (the HTTPS long-poll transports of both ends: their frames
/// arrive over channels). A flag: no file descriptor.
#[derive(Debug)]
pub struct Signal {
    flag: Arc<Flag>,
}

impl Signal {
    /// A signal and the waker that fires it.
    pub fn new() -> io::Result<(Self, Waker)> {
        let flag = Arc::new(Flag::default());
        let waker = Waker(Wake::Flag(flag.clone()));
        Ok((Self { flag }, waker))
    }

    /// Blocks until the waker fires or `timeout` passes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.flag.wait(timeout);
        Ok(())
    }
}

/// Waits on `poller` (an interrupted wait counts as a wake-up).
fn poll_wait(poller: &Poller, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
    events.clear();
    match poller.wait(events, timeout) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(e),
    }
}

/// One poller for the sockets of many [`PolledWebSocket`]s, each owned by its own thread
/// ([`PolledWebSocket::on_reactor`]). A `wsio-reactor` thread waits on it and raises the flag of
/// each socket that became ready; sockets are registered one-shot, so a ready socket whose
/// thread has not read yet does not wake the reactor again (its thread re-arms the
/// registration before it next sleeps). Cheap to clone; the thread ends, and is joined, when
/// the last clone (every registered socket holds one) is dropped.
#[derive(Clone, Debug)]
pub struct Reactor(Arc<ReactorThread>);

#[derive(Debug)]
struct ReactorThread {
    shared: Arc<ReactorShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct ReactorShared {
    poller: Poller,
    /// The flag of each registered socket, by key.
    flags: Mutex<HashMap<usize, Arc<Flag>>>,
    /// Keys are never reused: a stale event finds no flag.
    next_key: AtomicUsize,
    stop: AtomicBool,
    /// Set when waiting on the poller failed: every wait on the reactor fails from then on.
    failed: OnceLock<String>,
}

impl Reactor {
    /// Creates the poller and starts its thread.
    pub fn new() -> io::Result<Self> {
        let shared = Arc::new(ReactorShared {
            poller: Poller::new()?,
            flags: Mutex::default(),
            next_key: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            failed: OnceLock::new(),
        });
        let run = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wsio-reactor".into())
            .stack_size(REACTOR_STACK)
            .spawn(move || run.run())?;
        Ok(Self(Arc::new(ReactorThread { shared, thread: Some(thread) })))
    }

    /// Sockets registered right now.
    pub fn registered(&self) -> usize {
        self.shared().flags().len()
    }

    fn shared(&self) -> &ReactorShared {
        &self.0.shared
    }
}

impl ReactorShared {
    fn flags(&self) -> MutexGuard<'_, HashMap<usize, Arc<Flag>>> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut events = Events::new();
        while !self.stop.load(Ordering::SeqCst) {
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let _ = self.failed.set(e.to_string());
                for flag in self.flags().values() {
                    flag.raise(true);
                }
                return;
            }
            let flags = self.flags();
            for event in events.iter() {
                if let Some(flag) = flags.get(&event.key) {
                    flag.raise(true);
                }
            }
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.failed.get() {
            Some(why) => Err(io::Error::other(format!("the shared poller failed: {why}"))),
            None => Ok(()),
        }
    }
}

impl Drop for ReactorThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.poller.notify();
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// What a session loop needs of its connection, whichever carries the frames: the WebSocket
/// ([`PolledWebSocket`]) or the HTTPS long-poll fallback (docs/PROTOCOL.md, "HTTPS long-poll
/// transport"). Both ends run the same session code over either. The errors are tungstenite's
/// (`ConnectionClosed` for a peer that closed, `Io` for a broken connection).
pub trait Transport {
    /// Blocks until something may be read or written, `timeout` passes, or the [`Waker`] fires.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Queues a text frame and tries to write it out; returns the bytes it takes on the wire.
    fn send_text(&mut self, text: String) -> Result<usize, tungstenite::Error>;
    /// Writes out whatever is queued.
    fn flush(&mut self) -> Result<(), tungstenite::Error>;
    /// Reads every complete frame available without blocking; `Err`: the connection is over.
    fn read_available(&mut self, out: &mut Vec<Incoming>) -> Result<(), tungstenite::Error>;
    /// How long since the peer last showed life.
    fn idle_for(&self) -> Duration;
    /// When the answer to the last [`Transport::ping`] arrived.
    fn last_pong(&self) -> Option<Instant>;
    /// Asks the peer for a sign of life (a WebSocket ping; over long-poll, a round trip).
    fn ping(&mut self) -> Result<(), tungstenite::Error>;
    /// Ends the connection, telling the peer why when it can.
    fn close(&mut self, reason: &str);
    /// A name for status and logs: `websocket` or `https-long-poll`.
    fn kind(&self) -> &'static str;
    /// Turns on message compression negotiated in `auth`/`connected`; `false` when this
    /// transport does not compress frames (then neither side may send compressed ones).
    fn set_compression(&mut self, compression: Option<Compression>) -> bool {
        let _ = compression;
        false
    }
    /// How long since a frame was last written (keepalive pings go out after an idle
    /// interval); zero for transports where the peer polls (long-poll: no idle connection).
    fn write_idle_for(&self) -> Duration {
        Duration::ZERO
    }
}

impl<S: Read + Write> Transport for PolledWebSocket<S> {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        PolledWebSocket::wait(self, timeout)
    }
    fn send_text(&mut self, text: String) -> Result<usize, tungstenite::Error> {
        PolledWebSocket::send_text(self, text)
    }
    fn flush(&mut self) -> Result<(), tungstenite::Error> {
        PolledWebSocket::flush(self)
    }
    fn read_available(&mut self, out: &mut Vec<Incoming>) -> Result<(), tungstenite::Error> {
        PolledWebSocket::read_available(self, out)
    }
    fn idle_for(&self) -> Duration {
        PolledWebSocket::idle_for(self)
    }
    fn last_pong(&self) -> Option<Instant> {
        PolledWebSocket::last_pong(self)
    }
    fn ping(&mut self) -> Result<(), tungstenite::Error> {
        PolledWebSocket::ping(self)
    }
    fn close(&mut self, reason: &str) {
        PolledWebSocket::close(self, reason);
    }
    fn kind(&self) -> &'static str {
        "websocket"
    }
    fn set_compression(&mut self, compression: Option<Compression>) -> bool {
        PolledWebSocket::set_compression(self, compression);
        true
    }
    fn write_idle_for(&self) -> Duration {
        PolledWebSocket::write_idle_for(self)
    }
}

/// What [`PolledWebSocket::read_available`] found.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame (or a compressed one, inflated).
    Text(String),
    /// A binary frame on a session without compression (the caller answers with an error).
    Binary(usize),
    /// A compressed frame that does not inflate to UTF-8 text of at most [`MAX_FRAME_BYTES`]
    /// (the caller answers `MALFORMED_MESSAGE` with this reason).
    Malformed(String),
}

/// A message compression both ends support (`auth.compression`, `connected.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951, no zlib header) of the frame's JSON text, in a binary frame.
    Deflate,
}

impl Compression {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deflate => "deflate",
        }
    }

    /// The compression named `name`, if this build has it.
    pub fn from_name(name: &str) -> Option<Self> {
        (name == "deflate").then_some(Self::Deflate)
    }
}

/// Text frames shorter than this are sent as they are: compressing them saves little.
pub const COMPRESS_MIN_BYTES: usize = 8 * 1024;

/// Raw deflate of `text`, at level 1: on a 26 MiB schema broadcast it saves 87 % of the bytes
/// in a seventh of the CPU time level 6 takes for 91 % (`docs/BENCHMARKS.md`), and the link
/// thread is not blocked for long.
pub fn deflate(text: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(text.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

/// Inflates a raw deflate stream into UTF-8 text of at most `limit` bytes; `Err` with the
/// reason otherwise. Never holds more than `limit + 1` bytes of output.
pub fn inflate(bytes: &[u8], limit: usize) -> Result<String, String> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::DeflateDecoder::new(bytes).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| format!("compressed frame does not inflate: {e}"))?;
    if out.len() > limit {
        return Err(format!("compressed frame inflates beyond {limit} bytes"));
    }
    String::from_utf8(out).map_err(|_| "compressed frame is not UTF-8 text".to_owned())
}

/// WebSocket configuration shared by both ends: frame and message size limits.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES))
}

/// A WebSocket over a non-blocking TCP socket (plain or wrapped in TLS).
pub struct PolledWebSocket<S: Read + Write> {
    ws: WebSocket<S>,
    // The socket under `ws`: kept to change its interest and to delete it from the poller on
    // drop, before it can be closed.
    tcp: Arc<TcpStream>,
    readiness: Readiness,
    want_write: bool,
    last_read: Instant,
    last_write: Instant,
    last_pong: Option<Instant>,
    compression: Option<Compression>,
}

/// What [`PolledWebSocket::wait`] sleeps on.
enum Readiness {
    /// A poller of its own, the socket registered level-triggered.
    Own { poller: Arc<Poller>, events: Events },
    /// The reactor's poller, the socket registered one-shot under `key`; `flag` is raised when
    /// it fires. `armed_for_write`: the interest of the last arming included writability.
    Shared { reactor: Reactor, key: usize, flag: Arc<Flag>, armed_for_write: bool },
}

impl<S: Read + Write> std::fmt::Debug for PolledWebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledWebSocket").field("peer", &self.tcp.peer_addr().ok()).finish()
    }
}

impl<S: Read + Write> PolledWebSocket<S> {
    /// Takes over an established WebSocket, with a poller of its own (the agent's link: one
    /// connection). `tcp` is the socket under `ws` (a clone of it is kept); it is switched to
    /// non-blocking mode here.
    pub fn new(ws: WebSocket<S>, tcp: &TcpStream) -> io::Result<(Self, Waker)> {
        let tcp = Arc::new(tcp.try_clone()?);
        tcp.set_nonblocking(true)?;
        let poller = Arc::new(Poller::new()?);
        // SAFETY: `tcp` is owned by the returned value, which deletes it from the poller in
        // `Drop` before the socket is closed, as `Poller::add_with_mode` requires.
        #[allow(unsafe_code)]
        unsafe {
            poller.add_with_mode(&*tcp, Event::readable(KEY), PollMode::Level)?;
        }
        let waker = Waker(Wake::Poller(poller.clone()));
        Ok((Self::with(ws, tcp, Readiness::Own { poller, events: Events::new() }), waker))
    }

    /// Takes over an established WebSocket whose socket `tcp` (shared with `ws`'s stream, not
    /// cloned) is watched by `reactor` (the gateway: one poller for every session). The socket
    /// is switched to non-blocking mode here.
    pub fn on_reactor(ws: WebSocket<S>, tcp: Arc<TcpStream>, reactor: &Reactor) -> io::Result<(Self, Waker)> {
        tcp.set_nonblocking(true)?;
        let shared = reactor.shared();
        shared.check()?;
        let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::new(Flag::default());
        flag.lock().armed = true;
        shared.flags().insert(key, flag.clone());
        // SAFETY: the returned value holds a reference to `tcp`, so the socket stays open until
        // its `Drop` has deleted it from the poller, as `Poller::add_with_mode` requires.
        #[allow(unsafe_code)]
        let added = unsafe { shared.poller.add_with_mode(&*tcp, Event::readable(key), PollMode::Oneshot) };
        if let Err(e) = added {
            shared.flags().remove(&key);
            return Err(e);
        }
        let waker = Waker(Wake::Flag(flag.clone()));
        let readiness = Readiness::Shared { reactor: reactor.clone(), key, flag, armed_for_write: false };
        Ok((Self::with(ws, tcp, readiness), waker))
    }

    fn with(ws: WebSocket<S>, tcp: Arc<TcpStream>, readiness: Readiness) -> Self {
        Self {
            ws,
            tcp,
            readiness,
            want_write: false,
            last_read: Instant::now(),
            last_write: Instant::now(),
            last_pong: None,
            compression: None,
        }
    }

    /// Blocks until the socket is readable, a pending write may proceed, `timeout` passes, or
    /// the [`Waker`] is woken. Returns after any of these; the caller then drains its outbound
    /// channel, calls [`Self::flush`] and [`Self::read_available`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.readiness {
            Readiness::Own { poller, events } => poll_wait(poller, events, timeout),
            Readiness::Shared { reactor, key, flag, armed_for_write } => {
                // Re-arm the one-shot registration when it fired (or the interest changed).
                // `armed` is set first: the reactor clears it when the new arming fires.
                let rearm = {
                    let mut state = flag.lock();
                    let rearm = !state.armed || *armed_for_write != self.want_write;
                    state.armed |= rearm;
                    rearm
                };
                if rearm {
                    let interest = if self.want_write { Event::all(*key) } else { Event::readable(*key) };
                    reactor.shared().poller.modify_with_mode(&*self.tcp, interest, PollMode::Oneshot)?;
                    *armed_for_write = self.want_write;
                }
                flag.wait(timeout);
                reactor.shared().check()
            }
        }
    }

    /// Turns message compression on (after `connected` named it) or off.
    pub fn set_compression(&mut self, compression: Option<Compression>) {
        self.compression = compression;
    }

    /// The compression in use.
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }

    /// Queues a text frame (compressed when compression is on, the frame large and the result
    /// smaller) and tries to write it out. Returns the payload bytes put on the wire.
    pub fn send_text(&mut self, text: String) -> Result<usize, tungstenite::Error> {
        let message = match self.compression {
            Some(Compression::Deflate) if text.len() >= COMPRESS_MIN_BYTES => {
                let packed = deflate(text.as_bytes());
                if packed.len() < text.len() { Message::binary(packed) } else { Message::text(text) }
            }
            _ => Message::text(text),
        };
        let wire = message.len();
        self.last_write = Instant::now();
        match self.ws.write(message) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        self.flush()?;
        Ok(wire)
    }

    /// Writes out whatever is queued; remembers to wait for writability if the socket is full.
    pub fn flush(&mut self) -> Result<(), tungstenite::Error> {
        let blocked = match self.ws.flush() {
            Ok(()) => false,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => return Err(e),
        };
        if blocked != self.want_write {
            // On a reactor, `wait` arms the registration with the new interest.
            if let Readiness::Own { poller, .. } = &self.readiness {
                let interest = if blocked { Event::all(KEY) } else { Event::readable(KEY) };
                poller.modify_with_mode(&*self.tcp, interest, PollMode::Level)?;
            }
            self.want_write = blocked;
        }
        Ok(())
    }

    /// Reads every complete frame available without blocking. `Err` means the connection is
    /// over (closed by the peer, or broken); frames read before that are still delivered first.
    pub fn read_available(&mut self, out: &mut Vec<Incoming>) -> Result<(), tungstenite::Error> {
        loop {
            let message = self.ws.read();
            if message.is_ok() {
                self.last_read = Instant::now();
            }
            match message {
                Ok(Message::Text(text)) => out.push(Incoming::Text(text.as_str().to_owned())),
                Ok(Message::Binary(bytes)) => out.push(match self.compression {
                    Some(Compression::Deflate) => match inflate(&bytes, MAX_FRAME_BYTES) {
                        Ok(text) => Incoming::Text(text),
                        Err(reason) => Incoming::Malformed(reason),
                    },
                    None => Incoming::Binary(bytes.len()),
                }),
                Ok(Message::Pong(_)) => self.last_pong = Some(Instant::now()),
                // Pings are answered by tungstenite on the next flush.
                Ok(Message::Ping(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.flush();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How long since the peer last sent anything (a frame, a ping or a pong).
    pub fn idle_for(&self) -> Duration {
        self.last_read.elapsed()
    }

    /// How long since this side last queued a frame or a ping (keepalive pings go out when
    /// this grows past the keepalive interval).
    pub fn write_idle_for(&self) -> Duration {
        self.last_write.elapsed()
    }

    /// When the peer's last pong arrived (the caller measures a round trip with it).
    pub fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }

    /// Sends a WebSocket ping; the peer's pong counts as activity.
    pub fn ping(&mut self) -> Result<(), tungstenite::Error> {
        self.last_write = Instant::now();
        match self.ws.write(Message::Ping(Vec::new().into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        self.flush()
    }

    /// Starts a close handshake with a reason and flushes what it can.
    pub fn close(&mut self, reason: &str) {
        use tungstenite::protocol::frame::{CloseFrame, coding::CloseCode};
        let frame = CloseFrame { code: CloseCode::Normal, reason: reason.to_owned().into() };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
    }

    /// The stream under the WebSocket (to read TLS details, for example).
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }
}

impl<S: Read + Write> Drop for PolledWebSocket<S> {
    fn drop(&mut self) {
        match &self.readiness {
            Readiness::Own { poller, .. } => {
                let _ = poller.delete(&*self.tcp);
            }
            Readiness::Shared { reactor, key, .. } => {
                let shared = reactor.shared();
                let _ = shared.poller.delete(&*self.tcp);
                shared.flags().remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{
        COMPRESS_MIN_BYTES, Compression, Incoming, PolledWebSocket, Reactor, Signal, deflate, inflate,
    };
    use crate::MAX_FRAME_BYTES;

    /// A socket shared the way the gateway shares it (the stream under the WebSocket and the
    /// reactor's registration use one descriptor).
    struct Shared(Arc<TcpStream>);

    impl Read for Shared {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            (&*self.0).read(buf)
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            (&*self.0).write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    type Client = tungstenite::WebSocket<TcpStream>;

    /// A plain WebSocket pair on loopback, the server side on `reactor`.
    fn pair(listener: &TcpListener, reactor: &Reactor) -> (PolledWebSocket<Shared>, super::Waker, Client) {
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let tcp = TcpStream::connect(addr).unwrap();
            tungstenite::client::client(format!("ws://{addr}/ws"), tcp).unwrap().0
        });
        let tcp = Arc::new(listener.accept().unwrap().0);
        let ws = tungstenite::accept(Shared(tcp.clone())).unwrap();
        let (server, waker) = PolledWebSocket::on_reactor(ws, tcp, reactor).unwrap();
        (server, waker, client.join().unwrap())
    }

    fn texts(ws: &mut PolledWebSocket<Shared>) -> Vec<String> {
        let mut out = Vec::new();
        ws.read_available(&mut out).unwrap();
        out.into_iter()
            .map(|i| match i {
                Incoming::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn sockets_on_one_reactor_wake_only_their_own_thread() {
        let reactor = Reactor::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut one, _w1, mut c1) = pair(&listener, &reactor);
        let (mut two, w2, _c2) = pair(&listener, &reactor);
        assert_eq!(reactor.registered(), 2);

        // A frame for `one` wakes `one` at once, frame after frame (the one-shot registration
        // is armed again by each wait).
        for i in 0..3 {
            c1.send(tungstenite::Message::text(format!("hello {i}"))).unwrap();
            let started = Instant::now();
            let mut got = Vec::new();
            while got.is_empty() {
                one.wait(Some(Duration::from_secs(30))).unwrap();
                got = texts(&mut one);
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
            assert_eq!(got, [format!("hello {i}")]);
        }
        // ...and not `two`, which sleeps its whole timeout with nothing to read.
        let started = Instant::now();
        two.wait(Some(Duration::from_millis(200))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(texts(&mut two).is_empty());

        // The waker ends a wait, also one that started after the wake (send, then wake).
        w2.wake();
        let started = Instant::now();
        two.wait(Some(Duration::from_secs(30))).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let waker = w2.clone();
        let woken = std::thread::spawn(move || waker.wake());
        two.wait(None).unwrap();
        woken.join().unwrap();

        // A peer that goes away wakes its session, which reads the end.
        drop(c1);
        let started = Instant::now();
        let mut out = Vec::new();
        loop {
            one.wait(Some(Duration::from_secs(30))).unwrap();
            if one.read_available(&mut out).is_err() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the end of the socket never woke it");
        }

        // Dropping a session deletes its registration.
        drop(one);
        assert_eq!(reactor.registered(), 1);
        drop(two);
        assert_eq!(reactor.registered(), 0);
    }

    #[test]
    fn a_blocked_write_on_a_reactor_goes_on_when_the_peer_reads() {
        let reactor = Reactor::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut server, _waker, mut client) = pair(&listener, &reactor);
        // Far more than loopback socket buffers hold, while the peer does not read yet.
        let frames = 64;
        let frame = "x".repeat(256 * 1024);
        for _ in 0..frames {
            server.send_text(frame.clone()).unwrap();
        }
        let reader = std::thread::spawn(move || {
            for _ in 0..frames {
                while !matches!(client.read().unwrap(), tungstenite::Message::Text(_)) {}
            }
        });
        // Each wait returns because the socket became writable, not after its 5 s timeout.
        let started = Instant::now();
        while !reader.is_finished() {
            server.wait(Some(Duration::from_secs(5))).unwrap();
            server.flush().unwrap();
            assert!(started.elapsed() < Duration::from_secs(4), "writability did not wake the session");
        }
        reader.join().unwrap();
    }

    #[test]
    fn a_signal_wakes_its_waiter_without_a_socket() {
        let (mut signal, waker) = Signal::new().unwrap();
        let started = Instant::now();
        signal.wait(Some(Duration::from_millis(50))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        let woken = std::thread::spawn(move || waker.wake());
        let started = Instant::now();
        signal.wait(Some(Duration::from_secs(30))).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        woken.join().unwrap();
    }

    #[test]
    fn deflate_round_trips_and_shrinks_json() {
        let text =
            format!("{{\"type\":\"schema_discovery\",\"tables\":[{}]}}", "{\"name\":\"t\"},".repeat(2000));
        let packed = deflate(text.as_bytes());
        assert!(packed.len() * 10 < text.len(), "{} -> {}", text.len(), packed.len());
        assert_eq!(inflate(&packed, MAX_FRAME_BYTES).unwrap(), text);
        assert_eq!(Compression::from_name("deflate"), Some(Compression::Deflate));
        assert_eq!(Compression::Deflate.as_str(), "deflate");
        assert_eq!(Compression::from_name("gzip"), None);
        const { assert!(COMPRESS_MIN_BYTES < MAX_FRAME_BYTES) };
    }

    #[test]
    fn a_deflate_bomb_is_refused_at_the_limit() {
        // 64 MiB of zeros deflate to ~64 KiB: inflating stops one byte past the limit.
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b' '; 64 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let err = inflate(&bomb, MAX_FRAME_BYTES).unwrap_err();
        assert!(err.contains("beyond"), "{err}");
        // Exactly at the limit is fine; garbage and non-UTF-8 are refused with a reason.
        assert_eq!(inflate(&deflate(&[b'a'; 1000]), 1000).unwrap().len(), 1000);
        assert!(inflate(&deflate(&[b'a'; 1001]), 1000).is_err());
        assert!(inflate(b"\xff\xff\xff not deflate", 1000).unwrap_err().contains("does not inflate"));
        assert!(inflate(&deflate(&[0xff, 0xfe]), 1000).unwrap_err().contains("UTF-8"));
    }
}
