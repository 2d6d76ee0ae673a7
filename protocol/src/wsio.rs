//! A WebSocket on a non-blocking socket, driven by a [`polling::Poller`].
//!
//! Both ends use it: the agent's link thread and each of the gateway's connection threads. The
//! thread that owns a [`PolledWebSocket`] sleeps in [`PolledWebSocket::wait`] until the socket is
//! readable, a queued write can proceed, a timeout passes, or another thread calls
//! [`Waker::wake`] after putting an outbound frame on a channel ("send, then wake"). An idle
//! connection therefore costs no CPU, and a queued frame is written at once.
//!
//! **Compression** ([`PolledWebSocket::set_compression`], negotiated in `auth`/`connected`):
//! tungstenite has no permessage-deflate, so it is done per message. A text frame of at least
//! [`COMPRESS_MIN_BYTES`] goes out as a binary frame holding the raw deflate (RFC 1951) of its
//! UTF-8 text, when that is smaller. A binary frame read on a compressed session is inflated
//! into at most [`MAX_FRAME_BYTES`] (one byte more and it is refused as
//! [`Incoming::Malformed`], so a deflate bomb never allocates more); without compression a
//! binary frame stays [`Incoming::Binary`], which the protocol refuses.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::MAX_FRAME_BYTES;

const KEY: usize = 1;

/// Wakes the thread blocked in [`PolledWebSocket::wait`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker(Arc<Poller>);

impl Waker {
    /// Interrupts the owner's `wait`. Errors are ignored: a failed wake only delays a frame
    /// until the next socket event or timeout.
    pub fn wake(&self) {
        let _ = self.0.notify();
    }
}

/// A wake-up signal without a socket: a [`polling::Poller`] with nothing registered, so the same
/// [`Waker`] type wakes a thread that waits on something else than a WebSocket (the HTTPS
/// long-poll transports of both ends: their frames arrive over channels).
#[derive(Debug)]
pub struct Signal {
    poller: Arc<Poller>,
    events: Events,
}

impl Signal {
    /// A signal and the waker that fires it.
    pub fn new() -> io::Result<(Self, Waker)> {
        let poller = Arc::new(Poller::new()?);
        let waker = Waker(poller.clone());
        Ok((Self { poller, events: Events::new() }, waker))
    }

    /// Blocks until the waker fires or `timeout` passes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        poll_wait(&self.poller, &mut self.events, timeout)
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
    // Kept to deregister the socket from the poller on drop.
    tcp: TcpStream,
    poller: Arc<Poller>,
    events: Events,
    want_write: bool,
    last_read: Instant,
    last_write: Instant,
    last_pong: Option<Instant>,
    compression: Option<Compression>,
}

impl<S: Read + Write> std::fmt::Debug for PolledWebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledWebSocket").field("peer", &self.tcp.peer_addr().ok()).finish()
    }
}

impl<S: Read + Write> PolledWebSocket<S> {
    /// Takes over an established WebSocket. `tcp` is the socket under `ws` (a clone of it);
    /// it is switched to non-blocking mode here.
    pub fn new(ws: WebSocket<S>, tcp: &TcpStream) -> io::Result<(Self, Waker)> {
        let tcp = tcp.try_clone()?;
        tcp.set_nonblocking(true)?;
        let poller = Arc::new(Poller::new()?);
        // SAFETY: `tcp` is owned by the returned value, which deletes it from the poller in
        // `Drop` before the socket is closed, as `Poller::add_with_mode` requires.
        #[allow(unsafe_code)]
        unsafe {
            poller.add_with_mode(&tcp, Event::readable(KEY), PollMode::Level)?;
        }
        let waker = Waker(poller.clone());
        Ok((
            Self {
                ws,
                tcp,
                poller,
                events: Events::new(),
                want_write: false,
                last_read: Instant::now(),
                last_write: Instant::now(),
                last_pong: None,
                compression: None,
            },
            waker,
        ))
    }

    /// Blocks until the socket is readable, a pending write may proceed, `timeout` passes, or
    /// the [`Waker`] is woken. Returns after any of these; the caller then drains its outbound
    /// channel, calls [`Self::flush`] and [`Self::read_available`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        poll_wait(&self.poller, &mut self.events, timeout)
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
            let interest = if blocked { Event::all(KEY) } else { Event::readable(KEY) };
            self.poller.modify_with_mode(&self.tcp, interest, PollMode::Level)?;
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
        let _ = self.poller.delete(&self.tcp);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::{COMPRESS_MIN_BYTES, Compression, deflate, inflate};
    use crate::MAX_FRAME_BYTES;

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
