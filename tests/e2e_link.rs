//! The link under faults, against the real gateway (in-process, TLS 1.3) through a small TCP
//! relay that can cut or freeze the connection: dead-peer detection within two heartbeats,
//! reconnection under frequent cuts (the fraction of time connected is printed), and the slow
//! retry after `AUTH_FAILED`.
//!
//! The link runs as the library's [`Link`] with its supervisor inbox read by the test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mini_connector::link::{Link, LinkSettings};
use mini_connector::protocol::ErrorCode;
use mini_connector::supervisor::SupMsg;

use crate::support::{WATCHDOG, World};

/// A TCP relay in front of the gateway: `cut` closes every open pair (both sides see the
/// connection end), `freeze` stops forwarding while keeping the sockets open (a silent drop).
struct Relay {
    addr: SocketAddr,
    pairs: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pairs = Arc::new(Mutex::new(Vec::new()));
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (pairs2, frozen2, stop2) = (pairs.clone(), frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pairs2.lock().unwrap().push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                for (from, to) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let frozen = frozen2.clone();
                    std::thread::spawn(move || pump(from, to, &frozen));
                }
            }
        });
        Self { addr, pairs, frozen, stop }
    }

    /// Closes every connection through the relay.
    fn cut(&self) {
        for (a, b) in self.pairs.lock().unwrap().drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.freeze(false);
        self.cut();
        let _ = TcpStream::connect(self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A frozen relay swallows everything: the peer looks alive at the TCP level only.
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

static NEXT_INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A link to the gateway through `relay`, its supervisor inbox read by the test.
fn start_link(
    world: &World,
    relay: &Relay,
    tag: &str,
    key: mini_connector::protocol::ApiKey,
    heartbeat: Duration,
    reconnect_max: Duration,
) -> (Link, Receiver<SupMsg>) {
    let tls = mini_connector::tls::client_config(Some(&world.gateway.ca_cert_path())).unwrap();
    let (tx, inbox) = crossbeam_channel::unbounded();
    let link = Link::start(
        LinkSettings {
            url: format!("wss://127.0.0.1:{}/ws", relay.addr.port()),
            fallback_urls: Vec::new(),
            connector_name: tag.into(),
            proxy: mini_connector::proxy::ProxySettings::direct(),
            tls,
            reconnect_max,
            heartbeat_interval: heartbeat,
            keepalive_interval: Duration::from_secs(20),
            // Every link is its own agent installation.
            instance_id: Some(format!(
                "{tag}-instance-{}",
                NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
            max_in_flight: Some(16),
        },
        Box::new(move || Ok(key.clone())),
        tx,
    )
    .unwrap();
    (link, inbox)
}

struct Rig {
    world: World,
    relay: Relay,
    link: Option<Link>,
    inbox: Receiver<SupMsg>,
}

impl Rig {
    fn start(tag: &str, heartbeat: Duration, reconnect_max: Duration) -> Self {
        let world = World::new(tag);
        let key = world.key(tag);
        let relay = Relay::start(world.gateway.local_addr());
        let (link, inbox) = start_link(&world, &relay, tag, key, heartbeat, reconnect_max);
        Self { world, relay, link: Some(link), inbox }
    }

    /// The next LinkUp / LinkDown, with the time it arrived.
    fn next_change(&self, within: Duration) -> Option<(Instant, SupMsg)> {
        let deadline = Instant::now() + within;
        loop {
            match self.inbox.recv_deadline(deadline) {
                Ok(msg @ (SupMsg::LinkUp(_) | SupMsg::LinkDown { .. })) => {
                    return Some((Instant::now(), msg));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn wait_up(&self) -> Instant {
        match self.next_change(WATCHDOG) {
            Some((at, SupMsg::LinkUp(_))) => at,
            other => panic!("expected LinkUp, got {other:?}"),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.relay.freeze(false);
        if let Some(link) = self.link.take() {
            link.stop();
        }
    }
}

#[test]
fn a_silent_peer_is_dropped_within_two_heartbeats_and_a_quiet_one_is_not() {
    let heartbeat = Duration::from_millis(400);
    let rig = Rig::start("deadpeer", heartbeat, Duration::from_secs(2));
    rig.wait_up();
    // An idle but healthy session is kept: pings are answered.
    assert!(rig.next_change(heartbeat * 5).is_none(), "a healthy idle session was dropped");
    rig.relay.freeze(true);
    let frozen_at = Instant::now();
    let Some((down_at, SupMsg::LinkDown { reason, rejected: None })) = rig.next_change(WATCHDOG) else {
        panic!("no LinkDown after the peer went silent")
    };
    let took = down_at - frozen_at;
    eprintln!("dead peer detected after {took:?} (heartbeat {heartbeat:?}): {reason}");
    // Two intervals from the last byte received (at or before the freeze), plus scheduling slack.
    assert!(took <= heartbeat * 2 + Duration::from_millis(300), "took {took:?}");
    assert!(reason.contains("two heartbeat intervals"), "{reason}");
    // And it comes back once the path works again.
    rig.relay.freeze(false);
    rig.relay.cut();
    rig.wait_up();
}

/// Runs the link behind a relay that cuts every `period` for `run`, returns the fraction of
/// the time the link was up (between `connected` and the drop).
fn connected_fraction(tag: &str, period: Duration, run: Duration) -> (f64, u32) {
    let rig = Rig::start(tag, Duration::from_secs(5), Duration::from_secs(2));
    rig.wait_up();
    let start = Instant::now();
    let mut up_since = Some(start);
    let mut connected = Duration::ZERO;
    let mut sessions = 1;
    let mut next_cut = start + period;
    let end = start + run;
    while Instant::now() < end {
        let wait = next_cut.min(end).saturating_duration_since(Instant::now());
        match rig.next_change(wait) {
            Some((at, SupMsg::LinkUp(_))) => {
                up_since = Some(at);
                sessions += 1;
            }
            Some((at, SupMsg::LinkDown { .. })) => {
                if let Some(since) = up_since.take() {
                    connected += at - since;
                }
            }
            Some(_) => {}
            None => {}
        }
        if Instant::now() >= next_cut {
            rig.relay.cut();
            next_cut += period;
        }
    }
    if let Some(since) = up_since {
        connected += end.min(Instant::now()) - since;
    }
    let fraction = connected.as_secs_f64() / run.as_secs_f64();
    drop(rig);
    (fraction, sessions)
}

#[test]
fn frequent_cuts_leave_the_link_connected_most_of_the_time() {
    let (every_2s, sessions_2s) =
        connected_fraction("cut2s", Duration::from_secs(2), Duration::from_secs(10));
    let (every_200ms, sessions_200ms) =
        connected_fraction("cut200ms", Duration::from_millis(200), Duration::from_secs(6));
    eprintln!(
        "connected {:.1} % of the time with a cut every 2 s ({sessions_2s} sessions), \
         {:.1} % with a cut every 200 ms ({sessions_200ms} sessions)",
        every_2s * 100.0,
        every_200ms * 100.0
    );
    assert!(every_2s > 0.9, "{every_2s}");
    assert!(every_200ms > 0.5, "{every_200ms}");
}

#[test]
fn a_revoked_key_is_retried_slowly_not_in_a_storm() {
    let rig = Rig::start("revoked", Duration::from_secs(5), Duration::from_millis(500));
    rig.wait_up();
    rig.world.gateway.keys().revoke("revoked").unwrap();
    // Either the session is closed by the revocation (and the next dial is refused) or the
    // refusal arrives on the session: the link reports AUTH_FAILED.
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match rig.next_change(deadline.saturating_duration_since(Instant::now())) {
            Some((_, SupMsg::LinkDown { rejected: Some(code), .. })) => {
                assert_eq!(code, ErrorCode::AuthFailed);
                break;
            }
            Some((_, SupMsg::LinkDown { rejected: None, .. })) => {}
            other => panic!("expected AUTH_FAILED, got {other:?}"),
        }
    }
    // reconnectMaxMs is 500 ms, yet nobody dials for the next 30 s; watch 3 of them.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Ok(msg) = rig.inbox.recv_deadline(quiet_until) {
        assert!(!matches!(msg, SupMsg::LinkConnecting | SupMsg::LinkUp(_)), "retried at once: {msg:?}");
    }
}

#[test]
fn duplicate_connection_is_retried_on_the_normal_backoff() {
    // reconnectMaxMs of a minute: before, DUPLICATE_CONNECTION waited all of it.
    let reconnect_max = Duration::from_secs(60);
    let heartbeat = Duration::from_secs(5);
    let world = World::new("dup");
    let key = world.key("dup");
    let relay = Relay::start(world.gateway.local_addr());
    let (first, first_inbox) = start_link(&world, &relay, "dup", key.clone(), heartbeat, reconnect_max);
    loop {
        match first_inbox.recv_timeout(WATCHDOG) {
            Ok(SupMsg::LinkUp(_)) => break,
            Ok(_) => {}
            Err(_) => panic!("the first agent never got in"),
        }
    }
    // Another agent with the same key (a different instance): refused while the first lives.
    let (second, inbox) = start_link(&world, &relay, "dup", key, heartbeat, reconnect_max);
    loop {
        match inbox.recv_timeout(WATCHDOG) {
            Ok(SupMsg::LinkDown { rejected: Some(code), .. }) => {
                assert_eq!(code, ErrorCode::DuplicateConnection);
                break;
            }
            Ok(SupMsg::LinkUp(_)) => panic!("two sessions for one connector"),
            Ok(_) => {}
            Err(_) => panic!("no DUPLICATE_CONNECTION"),
        }
    }
    // The first agent goes away; the second gets in after a few short retries, not a minute.
    first.stop();
    let gone = Instant::now();
    let took = loop {
        match inbox.recv_timeout(WATCHDOG) {
            Ok(SupMsg::LinkUp(_)) => break gone.elapsed(),
            Ok(_) => {}
            Err(_) => panic!("the second agent never got in"),
        }
    };
    eprintln!("after DUPLICATE_CONNECTION, connected {took:?} after the other session ended");
    assert!(took < Duration::from_secs(10), "{took:?}");
    second.stop();
}
