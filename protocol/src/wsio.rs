//! A WebSocket on a non-blocking socket, driven by a [`polling::Poller`].
//!
//! Both ends use it: the agent's link thread and each of the gateway's connection threads. The
//! thread that owns a [`PolledWebSocket`] sleeps in [`PolledWebSocket::wait`] until the socket is
//! readable, a queued write can proceed, a timeout passes, or another thread calls
//! [`Waker::wake`] after putting an outbound frame on a channel ("send, then wake"). An idle
//! connection therefore costs no CPU, and a queued frame is written at once.

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
        self.events.clear();
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
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
    /// Queues a text frame and tries to write it out.
    fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error>;
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
}

impl<S: Read + Write> Transport for PolledWebSocket<S> {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        PolledWebSocket::wait(self, timeout)
    }
    fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
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
}

/// What [`PolledWebSocket::read_available`] found.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame (the protocol uses none; the caller answers with an error).
    Binary(usize),
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
    last_pong: Option<Instant>,
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
                last_pong: None,
            },
            waker,
        ))
    }

    /// Blocks until the socket is readable, a pending write may proceed, `timeout` passes, or
    /// the [`Waker`] is woken. Returns after any of these; the caller then drains its outbound
    /// channel, calls [`Self::flush`] and [`Self::read_available`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.events.clear();
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Queues a text frame and tries to write it out.
    pub fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        match self.ws.write(Message::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        self.flush()
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
                Ok(Message::Binary(bytes)) => out.push(Incoming::Binary(bytes.len())),
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

    /// When the peer's last pong arrived (the caller measures a round trip with it).
    pub fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }

    /// Sends a WebSocket ping; the peer's pong counts as activity.
    pub fn ping(&mut self) -> Result<(), tungstenite::Error> {
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
