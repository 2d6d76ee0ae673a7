//! A fault-injecting TCP relay for the end-to-end fault tests (a test helper, not a test).
//!
//! The agent's `cloudUrl` points at the relay; the relay forwards every byte to the gateway's
//! HTTPS port untouched (TLS passes through end to end, the agent still checks the gateway's
//! certificate and name), so WebSocket sessions *and* chunk uploads (the gateway names
//! `https://<host the agent dialed>/upload`) travel through it.
//!
//! Threads only, no async: one accept thread; per connection one reader and one writer thread
//! per direction (the writer holds each piece back for the configured latency, so latency does
//! not cap throughput). Controls, all usable while traffic flows:
//!
//! - [`Relay::cut`]: close every open connection now (both sides see a reset/EOF);
//! - [`Relay::blackhole`]: *silent drop* — the connections open now stop forwarding for good but
//!   stay open (no FIN, no RST), as when a NAT box or a sleeping laptop loses the link; new
//!   connections work;
//! - [`Relay::stall`] / [`Relay::resume`]: stop forwarding on every connection, new ones
//!   included, without closing anything;
//! - [`Relay::set_latency`]: one-way delay added to every piece;
//! - [`Relay::refuse`]: accept and close at once (the gateway looks down);
//! - [`Relay::set_upstream`]: where new connections go (a gateway restarted on another port);
//! - [`Relay::chaos`]: a background schedule — cut every N ms ([`Chaos::Periodic`]) or random
//!   cuts and silent drops from a seed ([`Chaos::Random`]); the seed is printed when a test
//!   panics while the relay is alive, and the schedule depends only on the seed (a hand-rolled
//!   SplitMix64, so it does not change when the `rand` crate changes its algorithms);
//!   [`Chaos::IdleCut`] plays a NAT box or firewall with an idle timeout: a connection that
//!   carried no byte either way for that long is closed on both sides.
//!
//! Counters: connections accepted, cuts, silent drops, idle cuts, bytes each way.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SplitMix64: a tiny deterministic generator, stable forever for a given seed.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A seed from the environment (`MC_FAULT_SEED`) or the clock, to print and replay.
pub fn seed_from_env() -> u64 {
    std::env::var("MC_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

/// A background fault schedule.
#[derive(Debug, Clone, Copy)]
pub enum Chaos {
    /// Cut every connection every `every`.
    Periodic { every: Duration },
    /// Wait a random time in `min..=max`, then cut everything, or (with `silent_percent`
    /// probability) silently drop the open connections; repeat.
    Random { seed: u64, min: Duration, max: Duration, silent_percent: u64 },
    /// Close (both sides) every connection that carried no byte either way for `after`.
    IdleCut { after: Duration },
}

/// Counters, read with [`Relay::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted, including those refused or whose upstream could not be reached.
    pub accepted: usize,
    /// Connections forwarded to the upstream.
    pub connections: usize,
    pub cuts: usize,
    pub silent_drops: usize,
    /// Connections closed by [`Chaos::IdleCut`].
    pub idle_cuts: usize,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Set by a silent drop: the pumps stop forwarding and never close.
    dead: Arc<AtomicBool>,
    /// Milliseconds since [`Shared::epoch`] of the last byte read either way.
    last_active: Arc<AtomicU64>,
}

#[derive(Default)]
struct Gate {
    stalled: bool,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    gate: Mutex<Gate>,
    gate_cv: Condvar,
    latency_us: AtomicU64,
    refuse: AtomicBool,
    stop: AtomicBool,
    connections: AtomicUsize,
    cuts: AtomicUsize,
    silent_drops: AtomicUsize,
    idle_cuts: AtomicUsize,
    epoch: Instant,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// Silently dropped sockets, kept open until the relay drops.
    graveyard: Mutex<Vec<Conn>>,
    seed: Mutex<Option<u64>>,
}

impl Shared {
    /// Blocks while the relay is stalled (or this connection is dead); false = stop pumping.
    fn wait_flowing(&self, dead: &AtomicBool) -> bool {
        let mut gate = self.gate.lock().unwrap();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            if !gate.stalled && !dead.load(Ordering::SeqCst) {
                return true;
            }
            gate = self.gate_cv.wait_timeout(gate, Duration::from_millis(200)).unwrap().0;
        }
    }
}

/// The relay. Dropping it closes everything and joins its threads.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    chaos: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("addr", &self.addr).field("stats", &self.stats()).finish()
    }
}

impl Relay {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            gate: Mutex::new(Gate::default()),
            gate_cv: Condvar::new(),
            latency_us: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            silent_drops: AtomicUsize::new(0),
            idle_cuts: AtomicUsize::new(0),
            epoch: Instant::now(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            graveyard: Mutex::new(Vec::new()),
            seed: Mutex::new(None),
        });
        let shared2 = shared.clone();
        let accept = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, shared2))
            .unwrap();
        Self { addr, shared, accept: Some(accept), chaos: Mutex::new(None) }
    }

    /// The address agents dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `wss://127.0.0.1:<port>/ws`, for the agent's `cloudUrl`.
    pub fn ws_url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    /// New connections go to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Closes every open connection now. Returns how many were open.
    pub fn cut(&self) -> usize {
        cut_all(&self.shared)
    }

    /// Silent drop: the connections open now stop forwarding for good, without closing.
    pub fn blackhole(&self) -> usize {
        blackhole_all(&self.shared)
    }

    /// Stops forwarding on every connection (new ones too) without closing any.
    pub fn stall(&self) {
        self.shared.gate.lock().unwrap().stalled = true;
        self.shared.gate_cv.notify_all();
    }

    /// Ends a [`Relay::stall`].
    pub fn resume(&self) {
        self.shared.gate.lock().unwrap().stalled = false;
        self.shared.gate_cv.notify_all();
    }

    /// Adds `latency` to every piece, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_us.store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// While true, new connections are closed at once (the gateway looks down).
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            connections: s.connections.load(Ordering::SeqCst),
            cuts: s.cuts.load(Ordering::SeqCst),
            silent_drops: s.silent_drops.load(Ordering::SeqCst),
            idle_cuts: s.idle_cuts.load(Ordering::SeqCst),
            bytes_up: s.bytes_up.load(Ordering::SeqCst),
            bytes_down: s.bytes_down.load(Ordering::SeqCst),
        }
    }

    /// The seed of the running (or last) random schedule.
    pub fn seed(&self) -> Option<u64> {
        *self.shared.seed.lock().unwrap()
    }

    /// Starts a background fault schedule (replacing the previous one).
    pub fn chaos(&self, chaos: Chaos) {
        self.calm();
        if let Chaos::Random { seed, .. } = chaos {
            *self.shared.seed.lock().unwrap() = Some(seed);
            eprintln!("relay {}: random faults, seed {seed} (replay with MC_FAULT_SEED={seed})", self.addr);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, shared) = (stop.clone(), self.shared.clone());
        let handle = std::thread::Builder::new()
            .name("relay-chaos".into())
            .spawn(move || chaos_loop(chaos, &shared, &stop2))
            .unwrap();
        *self.chaos.lock().unwrap() = Some((stop, handle));
    }

    /// Stops the background schedule (connections stay as they are).
    pub fn calm(&self) {
        if let Some((stop, handle)) = self.chaos.lock().unwrap().take() {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "relay {}: {:?}, seed {:?} (replay with MC_FAULT_SEED)",
                self.addr,
                self.stats(),
                self.seed()
            );
        }
        self.calm();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.gate_cv.notify_all();
        let _ = TcpStream::connect(self.addr);
        cut_all(&self.shared);
        for conn in self.shared.graveyard.lock().unwrap().drain(..) {
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.server.shutdown(Shutdown::Both);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn cut_all(shared: &Shared) -> usize {
    let conns: Vec<Conn> = shared.conns.lock().unwrap().drain().map(|(_, c)| c).collect();
    for conn in &conns {
        let _ = conn.client.shutdown(Shutdown::Both);
        let _ = conn.server.shutdown(Shutdown::Both);
    }
    if !conns.is_empty() {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
    conns.len()
}

fn blackhole_all(shared: &Shared) -> usize {
    let conns: Vec<Conn> = shared.conns.lock().unwrap().drain().map(|(_, c)| c).collect();
    let n = conns.len();
    for conn in &conns {
        conn.dead.store(true, Ordering::SeqCst);
    }
    shared.gate_cv.notify_all();
    if n > 0 {
        shared.silent_drops.fetch_add(1, Ordering::SeqCst);
    }
    shared.graveyard.lock().unwrap().extend(conns);
    n
}

fn chaos_loop(chaos: Chaos, shared: &Shared, stop: &AtomicBool) {
    let pause = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if stop.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
        }
        !stop.load(Ordering::SeqCst)
    };
    match chaos {
        Chaos::Periodic { every } => {
            while pause(every) {
                cut_all(shared);
            }
        }
        Chaos::IdleCut { after } => {
            while pause((after / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))) {
                let now = shared.epoch.elapsed().as_millis() as u64;
                let limit = after.as_millis() as u64;
                let idle: Vec<Conn> = {
                    let mut conns = shared.conns.lock().unwrap();
                    let ids: Vec<u64> = conns
                        .iter()
                        .filter(|(_, c)| now.saturating_sub(c.last_active.load(Ordering::SeqCst)) >= limit)
                        .map(|(id, _)| *id)
                        .collect();
                    ids.iter().filter_map(|id| conns.remove(id)).collect()
                };
                for conn in &idle {
                    let _ = conn.client.shutdown(Shutdown::Both);
                    let _ = conn.server.shutdown(Shutdown::Both);
                }
                shared.idle_cuts.fetch_add(idle.len(), Ordering::SeqCst);
            }
        }
        Chaos::Random { seed, min, max, silent_percent } => {
            let mut rng = SplitMix::new(seed);
            loop {
                let wait = rng.range(min.as_millis() as u64, max.as_millis() as u64);
                let silent = rng.chance(silent_percent);
                if !pause(Duration::from_millis(wait)) {
                    return;
                }
                if silent {
                    blackhole_all(shared);
                } else {
                    cut_all(shared);
                }
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let upstream = *shared.upstream.lock().unwrap();
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let dead = Arc::new(AtomicBool::new(false));
        let last_active = Arc::new(AtomicU64::new(shared.epoch.elapsed().as_millis() as u64));
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
        let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else { continue };
        let conn = Conn { client, server, dead: dead.clone(), last_active: last_active.clone() };
        shared.conns.lock().unwrap().insert(id, conn);
        pump(shared.clone(), id, c2, s2, dead.clone(), last_active.clone(), true);
        pump(shared.clone(), id, s3, c3, dead, last_active, false);
    }
}

/// One direction: a reader thread and a writer thread joined by a channel of timed pieces.
fn pump(
    shared: Arc<Shared>,
    id: u64,
    mut from: TcpStream,
    mut to: TcpStream,
    dead: Arc<AtomicBool>,
    last_active: Arc<AtomicU64>,
    up: bool,
) {
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, Vec<u8>)>();
    let (shared2, dead2) = (shared.clone(), dead.clone());
    let name = if up { "relay-up" } else { "relay-down" };
    let _ = std::thread::Builder::new().name(format!("{name}-read")).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !shared.wait_flowing(&dead) {
                break;
            }
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    last_active.store(shared.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        drop(tx);
        // EOF or error on one side: close the whole connection (unless silently dropped).
        if !dead.load(Ordering::SeqCst)
            && let Some(conn) = shared.conns.lock().unwrap().remove(&id)
        {
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.server.shutdown(Shutdown::Both);
        }
    });
    let _ = std::thread::Builder::new().name(format!("{name}-write")).spawn(move || {
        for (read_at, piece) in rx {
            let latency = Duration::from_micros(shared2.latency_us.load(Ordering::SeqCst));
            let due = read_at + latency;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if !shared2.wait_flowing(&dead2) {
                return;
            }
            if to.write_all(&piece).is_err() {
                return;
            }
            let counter = if up { &shared2.bytes_up } else { &shared2.bytes_down };
            counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: every connection echoes what it reads.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn relay_forwards_cuts_stalls_and_drops_silently() {
        let relay = Relay::start(echo());
        let mut a = TcpStream::connect(relay.addr()).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(roundtrip(&mut a, b"hello").unwrap(), b"hello");
        assert_eq!(relay.stats().connections, 1);

        // Cut: the client sees EOF or a reset.
        assert_eq!(relay.cut(), 1);
        let mut buf = [0u8; 8];
        assert!(matches!(a.read(&mut buf), Ok(0) | Err(_)));
        assert_eq!(relay.stats().cuts, 1);

        // Silent drop: nothing comes back, the socket stays open (a read times out).
        let mut b = TcpStream::connect(relay.addr()).unwrap();
        assert_eq!(roundtrip(&mut b, b"x").unwrap(), b"x");
        assert_eq!(relay.blackhole(), 1);
        b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        b.write_all(b"lost").unwrap();
        let err = b.read(&mut buf).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");

        // A new connection works; a stall holds bytes back until resumed.
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert_eq!(roundtrip(&mut c, b"y").unwrap(), b"y");
        relay.stall();
        c.write_all(b"held").unwrap();
        assert!(c.read(&mut buf).is_err(), "a stalled relay forwarded bytes");
        relay.resume();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut held = [0u8; 4];
        c.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"held");

        // Latency: a round trip takes at least twice the one-way delay.
        relay.set_latency(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, b"z").unwrap(), b"z");
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    }

    #[test]
    fn the_random_schedule_depends_only_on_the_seed() {
        let draw = |seed| {
            let mut r = SplitMix::new(seed);
            (0..8).map(|_| r.range(50, 500)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert!(draw(7).iter().all(|v| (50..=500).contains(v)));
    }

    #[test]
    fn periodic_chaos_cuts_repeatedly() {
        let relay = Relay::start(echo());
        relay.chaos(Chaos::Periodic { every: Duration::from_millis(50) });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut kept = Vec::new();
        while relay.stats().cuts < 3 {
            assert!(Instant::now() < deadline, "{:?}", relay.stats());
            // Keep a connection open so there is something to cut; a cut one reads EOF.
            let mut s = TcpStream::connect(relay.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if roundtrip(&mut s, b"p").is_ok() {
                let mut buf = [0u8; 1];
                assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "a cut connection still delivers");
            }
            kept.push(s);
        }
        relay.calm();
    }

    #[test]
    fn idle_cut_closes_only_connections_that_went_quiet() {
        let relay = Relay::start(echo());
        relay.chaos(Chaos::IdleCut { after: Duration::from_millis(300) });
        let mut busy = TcpStream::connect(relay.addr()).unwrap();
        let mut quiet = TcpStream::connect(relay.addr()).unwrap();
        busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        quiet.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(roundtrip(&mut quiet, b"q").unwrap(), b"q");
        // The busy one talks every 50 ms for a second; the quiet one is cut meanwhile.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            assert_eq!(roundtrip(&mut busy, b"b").unwrap(), b"b", "an active connection was cut");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut buf = [0u8; 1];
        assert!(matches!(quiet.read(&mut buf), Ok(0) | Err(_)), "the quiet connection is still open");
        assert_eq!(relay.stats().idle_cuts, 1, "{:?}", relay.stats());
        relay.calm();
    }
}
