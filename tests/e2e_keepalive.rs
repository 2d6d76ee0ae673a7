//! Keepalive against a middlebox that cuts idle connections: the real agent binary and the real
//! gateway with the fault relay between them in its idle-cut mode ([`Chaos::IdleCut`]: both
//! sides closed after 1.5 s without a byte either way). The heartbeat interval (10 s) is far
//! above the cut, so only the keepalive ping keeps the session alive: at 500 ms the session
//! survives 5 s without a reconnect; at 10 s (above the cut) it is cut and reconnects.

use std::time::{Duration, Instant};

use gateway::GatewayEvent;
use serde_json::json;

use crate::relay::{Chaos, Relay, RelayStats};
use crate::support::{AgentProc, World, wait_event};

const IDLE_CUT: Duration = Duration::from_millis(1500);
const OBSERVE: Duration = Duration::from_secs(5);

/// Runs an agent with `keepalive_ms` through an idle-cutting relay; returns the sessions that
/// connected and ended during [`OBSERVE`] after the first one, and the relay's counters.
fn observe(tag: &str, keepalive_ms: u64) -> (usize, usize, RelayStats) {
    let world = World::new(tag);
    let relay = Relay::start(world.gateway.local_addr());
    relay.chaos(Chaos::IdleCut { after: IDLE_CUT });
    let events = world.gateway.subscribe();
    let key = world.key("Warehouse");
    let extra = json!({
        "cloudUrl": relay.ws_url(),
        "heartbeatIntervalMs": 10_000,
        "keepaliveIntervalMs": keepalive_ms,
        "reconnectMaxMs": 1_000,
    });
    let _agent = AgentProc::start(&world.agent_config("Warehouse", key.expose(), extra));
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    let (mut connects, mut drops) = (0, 0);
    let end = Instant::now() + OBSERVE;
    while let Ok(event) = events.recv_deadline(end) {
        match event {
            GatewayEvent::AgentConnected { .. } => connects += 1,
            GatewayEvent::AgentDisconnected { .. } => drops += 1,
            _ => {}
        }
    }
    let stats = relay.stats();
    relay.calm();
    (connects, drops, stats)
}

#[test]
fn a_keepalive_below_the_idle_cut_keeps_the_session() {
    let (connects, drops, stats) = observe("keepalive-on", 500);
    assert_eq!((connects, drops), (0, 0), "the session was cut: {stats:?}");
    assert_eq!(stats.idle_cuts, 0, "{stats:?}");
    assert_eq!(stats.connections, 1, "{stats:?}");
}

#[test]
fn a_keepalive_above_the_idle_cut_loses_the_session_and_reconnects() {
    let (connects, drops, stats) = observe("keepalive-off", 10_000);
    assert!(drops >= 1 && connects >= 1, "no cut and reconnect in {OBSERVE:?}: {stats:?}");
    assert!(stats.idle_cuts >= 1, "{stats:?}");
}
