//! The notifier's rules with a fake clock, and the threads' non-blocking hand-over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Notifier, Policy};
use crate::protocol::control::{
    ActivityEntry, AgentEvent, Indicator, LinkState, Notice, NoticeKind, Outcome, QueueStatus, StatusSnapshot,
};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn status(state: LinkState) -> StatusSnapshot {
    let connected = matches!(state, LinkState::Connected | LinkState::Busy);
    StatusSnapshot {
        connector_name: "Warehouse".into(),
        cloud_url: "wss://console.example.com/ws".into(),
        agent_version: "0.1.0".into(),
        instance_id: "i-1".into(),
        ..StatusSnapshot::new(state, if connected { Indicator::Connected } else { Indicator::Disconnected })
    }
}

fn ev(status: StatusSnapshot) -> AgentEvent {
    AgentEvent::Status(Box::new(status))
}

fn failed(id: &str) -> AgentEvent {
    AgentEvent::Activity(ActivityEntry {
        command_id: id.into(),
        received_at: "2027-01-15T08:00:00Z".into(),
        finished_at: Some("2027-01-15T08:00:01Z".into()),
        connection: Some("erp".into()),
        workflow: Some("nightly-sync".into()),
        outcome: Outcome::Failed { code: "QUERY_TIMEOUT".into() },
        rows: None,
        duration_ms: Some(1000),
        bytes: None,
    })
}

fn kinds(notices: &[Notice]) -> Vec<(NoticeKind, String)> {
    notices.iter().map(|n| (n.kind, n.title.clone())).collect()
}

fn lost() -> (NoticeKind, String) {
    (NoticeKind::ConnectionLost, "Connection lost".into())
}

fn restored() -> (NoticeKind, String) {
    (NoticeKind::ConnectionLost, "Connection restored".into())
}

#[test]
fn connection_lost_once_per_outage_after_five_minutes_then_restored() {
    let mut n = Notifier::new(Policy::default());
    assert!(n.observe(&ev(status(LinkState::Connected)), t(0)).is_empty());
    assert!(n.observe(&ev(status(LinkState::Disconnected)), t(10)).is_empty());
    assert!(n.tick(t(60)).is_empty());
    assert!(n.observe(&ev(status(LinkState::Connecting)), t(200)).is_empty());
    assert!(n.tick(t(309)).is_empty(), "4 min 59 s is not yet 5 minutes");
    let out = n.tick(t(310));
    assert_eq!(kinds(&out), vec![lost()]);
    assert!(out[0].body.contains("5 minutes"), "{}", out[0].body);
    assert_eq!(out[0].at, "2027-01-15T08:05:10Z");
    for s in 311..400 {
        assert!(n.tick(t(s)).is_empty(), "once per outage");
    }
    assert!(n.observe(&ev(status(LinkState::Disconnected)), t(400)).is_empty());
    let out = n.observe(&ev(status(LinkState::Connected)), t(420));
    assert_eq!(kinds(&out), vec![restored()]);
    assert!(n.observe(&ev(status(LinkState::Connected)), t(421)).is_empty());
}

#[test]
fn short_outages_and_pauses_never_notify() {
    let mut n = Notifier::new(Policy::default());
    for cycle in 0..20 {
        let base = cycle * 200;
        assert!(n.observe(&ev(status(LinkState::Disconnected)), t(base)).is_empty());
        assert!(n.tick(t(base + 150)).is_empty());
        assert!(n.observe(&ev(status(LinkState::Connected)), t(base + 160)).is_empty());
    }
    assert!(n.observe(&ev(status(LinkState::Paused)), t(5000)).is_empty());
    assert!(n.tick(t(9000)).is_empty(), "paused by the operator is not an outage");
    let mut key = status(LinkState::KeyRejected);
    key.connected = false;
    let out = n.observe(&ev(key.clone()), t(9100));
    assert_eq!(kinds(&out), vec![(NoticeKind::KeyRevoked, "API key revoked".into())]);
    assert!(n.observe(&ev(key), t(9101)).is_empty());
    assert!(n.tick(t(20_000)).is_empty(), "a revoked key is its own notice, not a connection loss");
}

#[test]
fn the_outage_start_comes_from_disconnected_since_when_the_agent_says() {
    let mut n = Notifier::new(Policy::default());
    let mut down = status(LinkState::Disconnected);
    down.disconnected_since = Some(humantime::format_rfc3339_seconds(t(0)).to_string());
    let out = n.observe(&ev(down), t(301));
    assert_eq!(kinds(&out), vec![lost()], "a GUI attaching late still learns of a long outage");
}

#[test]
fn a_flapping_link_sends_one_mail_per_window_and_a_count_of_the_rest() {
    let mut n = Notifier::new(Policy::default());
    let mut sent = Vec::new();
    // Six long outages, each 6 minutes down and 1 minute up, over 42 minutes.
    for cycle in 0..6 {
        let base = cycle * 420;
        sent.extend(n.observe(&ev(status(LinkState::Disconnected)), t(base)));
        sent.extend(n.tick(t(base + 360)));
        sent.extend(n.observe(&ev(status(LinkState::Connected)), t(base + 360)));
    }
    // 0 (lost at 360 s): lost + restored. 1, 2: held back (within 15 min), so no "restored"
    // for them either. At 1260 s the window ends: a summary of the 2 held back. 3, 4: held back
    // again (within 15 min of the summary). 5 (2460 s): lost, naming the 2 held back, restored.
    let got = kinds(&sent);
    let summary = (NoticeKind::ConnectionLost, "Connection lost (summary)".to_owned());
    assert_eq!(got, vec![lost(), restored(), summary, lost(), restored()], "{sent:#?}");
    assert!(
        sent[2].body.starts_with("2 more \"Connection lost\" notice(s) since 2027-01-15T08:06:00Z"),
        "{}",
        sent[2].body
    );
    assert!(
        sent[3].body.contains("(2 similar notice(s) were held back before this one.)"),
        "{}",
        sent[3].body
    );
    assert!(n.tick(t(2460 + 900)).is_empty(), "nothing left to summarise");
}

#[test]
fn a_burst_of_failures_is_one_notice_then_a_summary() {
    let mut n = Notifier::new(Policy::default());
    let out = n.observe(&failed("c-1"), t(0));
    assert_eq!(kinds(&out), vec![(NoticeKind::CommandFailed, "A workflow command failed".into())]);
    assert_eq!(
        out[0].body,
        "Command c-1 on connection `erp` (workflow `nightly-sync`) failed with QUERY_TIMEOUT."
    );
    assert!(n.observe(&failed("c-1"), t(1)).is_empty(), "the same command is not notified twice");
    for i in 2..=50 {
        assert!(n.observe(&failed(&format!("c-{i}")), t(i)).is_empty());
    }
    let mut ok = failed("c-ok");
    if let AgentEvent::Activity(entry) = &mut ok {
        entry.outcome = Outcome::Inline;
    }
    assert!(n.observe(&ok, t(60)).is_empty());
    assert!(n.tick(t(899)).is_empty());
    let out = n.tick(t(900));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].title, "Command failed (summary)");
    assert!(out[0].body.starts_with("49 more \"Command failed\" notice(s)"), "{}", out[0].body);
    // The next failure after a quiet window is notified at once.
    assert_eq!(n.observe(&failed("c-51"), t(1800)).len(), 1);
}

#[test]
fn schema_changes_queue_warnings_and_new_versions() {
    let mut n = Notifier::new(Policy::default());
    let mut s = status(LinkState::Connected);
    s.schema_changes = vec!["erp".into()];
    let out = n.observe(&ev(s.clone()), t(0));
    assert_eq!(kinds(&out), vec![(NoticeKind::SchemaChange, "Schema change detected".into())]);
    assert!(out[0].body.contains("`erp`"));
    assert!(n.observe(&ev(s.clone()), t(1)).is_empty(), "still the same change");
    s.schema_changes.clear();
    assert!(n.observe(&ev(s.clone()), t(2)).is_empty());

    s.queue =
        QueueStatus { used_bytes: 420 << 20, cap_bytes: 500 << 20, warning: true, ..QueueStatus::default() };
    let out = n.observe(&ev(s.clone()), t(3));
    assert_eq!(kinds(&out), vec![(NoticeKind::QueueDiskWarning, "Offline queue almost full".into())]);
    assert!(out[0].body.contains("420 MB of its 500 MB"), "{}", out[0].body);
    assert!(n.observe(&ev(s.clone()), t(4)).is_empty(), "only when it turns on");

    let version = Notice {
        kind: NoticeKind::NewVersion,
        title: "Mini Connector 0.2.0 is available".into(),
        body: "See the release notes.".into(),
        at: "2027-01-15T08:00:00Z".into(),
    };
    let out = n.observe(&AgentEvent::Notice(version.clone()), t(5));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, &out[0].title, &out[0].body), (version.kind, &version.title, &version.body));
    assert!(n.observe(&AgentEvent::Notice(version), t(6)).is_empty(), "rate-limited like the rest");
}

#[test]
fn sending_never_blocks_the_agent_even_when_delivery_hangs() {
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded::<Notice>();
    let sender = super::spawn_with(Policy::default(), move |notice| {
        seen_tx.send(notice.clone()).unwrap();
        // A slow SMTP server: the first delivery hangs until the test lets it go.
        let _ = gate_rx.recv();
    })
    .unwrap();
    sender.send(failed("first"));
    let first = seen_rx.recv_timeout(Duration::from_secs(10)).expect("the first notice is delivered");
    assert_eq!(first.kind, NoticeKind::CommandFailed);
    let started = std::time::Instant::now();
    let kinds = [NoticeKind::SchemaChange, NoticeKind::KeyRevoked, NoticeKind::NewVersion];
    for i in 0..20_000u32 {
        let kind = kinds[i as usize % 3];
        sender.send(AgentEvent::Notice(Notice {
            kind,
            title: format!("n{i}"),
            body: String::new(),
            at: String::new(),
        }));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "20,000 sends while delivery hangs took {:?}",
        started.elapsed()
    );
    drop(gate_tx);
    sender.shutdown();
    let rest: Vec<Notice> = seen_rx.try_iter().collect();
    // One per kind got through the rate limit; everything else was held back or dropped.
    assert!(rest.len() <= 3, "{rest:#?}");
}
