//! The gateway's keepalive: a session it wrote nothing to for `keepalive_interval` gets a
//! WebSocket ping, so an agent without keepalive of its own still sees traffic both ways.

use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::common::{FakeAgent, start_with, watchdog};

#[test]
fn an_idle_session_is_pinged_at_the_keepalive_interval() {
    let _w = watchdog("gateway-keepalive");
    let gw = start_with(|c| c.keepalive_interval = Duration::from_millis(300));
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let start = Instant::now();
    let mut pings = 0;
    // The agent writes nothing; within ~1 s the gateway pings it about three times.
    while start.elapsed() < Duration::from_millis(1100) {
        match agent.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert!((2..=5).contains(&pings), "{pings} pings in {:?}", start.elapsed());
}
