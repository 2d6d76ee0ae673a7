//! The supervisor and its store, driven by messages only: no network, no worker threads. The
//! link is a channel ([`LinkSender::channel`]), the workers are this test taking `Job`s from
//! the job queue and answering with `SupMsg::Finished`, and the store is a real queue database
//! in a temporary directory, reopened to play a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::{StatusBoard, SupMsg, Supervisor, SupervisorSettings};
use crate::link::{LinkMsg, LinkSender};
use crate::protocol::{ErrorCode, Frame as _, Inbound, Outbound};
use crate::store::ResultStore;
use crate::worker::Job;

const WAIT: Duration = Duration::from_secs(10);

/// A temporary directory with the sample ERP (SQLite) and room for the queue database.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mc-sup-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        drivers::fixture::create_sample_erp(&dir.join("erp.db"), 1).unwrap();
        Self(dir)
    }

    fn store(&self) -> ResultStore {
        ResultStore::open(&self.0.join("queue.db"), queue::StoreConfig::default()).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A supervisor on its own thread, with the test in the roles of link and workers.
struct Harness {
    inbox: Sender<SupMsg>,
    link: Receiver<LinkMsg>,
    jobs: Receiver<Job>,
    thread: Option<JoinHandle<String>>,
    /// The queue database's counters (commits, statement preparations).
    queue_stats: queue::StatsProbe,
}

impl Harness {
    fn start(dir: &Dir, capacity: usize, max_waiting: usize) -> Self {
        Self::start_with(dir, capacity, max_waiting, Vec::new())
    }

    fn start_with(dir: &Dir, capacity: usize, max_waiting: usize, unopened: Vec<super::Unopened>) -> Self {
        Self::start_configured(dir, capacity, max_waiting, unopened, None)
    }

    /// With `config_path`: approved schemas are read next to it.
    fn start_configured(
        dir: &Dir,
        capacity: usize,
        max_waiting: usize,
        unopened: Vec<super::Unopened>,
        config_path: Option<PathBuf>,
    ) -> Self {
        let db = drivers::Database::open(&drivers::ConnectionSpec {
            name: "erp".into(),
            kind: drivers::DbKind::Sqlite,
            path: dir.0.join("erp.db"),
            ..Default::default()
        })
        .unwrap();
        let (inbox, inbox_rx) = crossbeam_channel::unbounded();
        let (link, link_rx) = LinkSender::channel();
        let (jobs_tx, jobs) = crossbeam_channel::bounded(capacity * 2);
        let store = dir.store();
        let queue_stats = store.stats_probe();
        let supervisor = Supervisor::new(
            inbox_rx,
            link,
            jobs_tx,
            std::sync::Arc::new(StatusBoard::default()),
            store,
            SupervisorSettings {
                databases: vec![db],
                unopened,
                policies: Default::default(),
                limits: crate::config::CommandLimits::default(),
                capacity,
                max_waiting,
            },
        )
        .with_identity(super::Identity { config_path, ..Default::default() });
        let thread = std::thread::spawn(move || supervisor.run());
        let harness = Self { inbox, link: link_rx, jobs, thread: Some(thread), queue_stats };
        // The first job is the schema discovery every start runs.
        match harness.job() {
            Job::Discover(_) => harness.send(SupMsg::Discovered(Vec::new())),
            other => panic!("expected discovery first, got {other:?}"),
        }
        harness
    }

    fn send(&self, msg: SupMsg) {
        self.inbox.send(msg).unwrap();
    }

    fn command(&self, id: &str, key: &str, execution: &str) {
        self.send(SupMsg::Inbound(Box::new(command(id, key, execution, None))));
    }

    fn job(&self) -> Job {
        self.jobs.recv_timeout(WAIT).expect("a job")
    }

    fn query_job(&self) -> Box<crate::worker::QueryJob> {
        match self.job() {
            Job::Query(job) => job,
            other => panic!("expected a query job, got {other:?}"),
        }
    }

    /// The next execution answer the link is asked to send.
    fn answer(&self) -> Outbound {
        loop {
            if let LinkMsg::Send(frame @ (Outbound::ExecutionResult(_) | Outbound::ExecutionError(_))) =
                self.link.recv_timeout(WAIT).expect("an answer on the link")
            {
                return frame;
            }
        }
    }

    /// Asks for a status snapshot: a round trip that proves every earlier message was handled.
    /// Returned as JSON (the wire shape of `StatusSnapshot`).
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap()
    }

    /// The typed status snapshot.
    fn snapshot(&self) -> crate::protocol::control::StatusSnapshot {
        match self.control(crate::protocol::control::ControlRequest::Status) {
            crate::protocol::control::ControlReply::Status(snapshot) => *snapshot,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    /// Sends a control request and waits for the answer.
    fn control(
        &self,
        request: crate::protocol::control::ControlRequest,
    ) -> crate::protocol::control::ControlReply {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(SupMsg::Control { request, reply });
        answer.recv_timeout(WAIT).unwrap()
    }

    /// Nothing was sent to the link or the workers (checked after a status round trip).
    fn quiet(&self) {
        self.status();
        while let Ok(msg) = self.link.try_recv() {
            assert!(
                !matches!(msg, LinkMsg::Send(Outbound::ExecutionResult(_) | Outbound::ExecutionError(_))),
                "unexpected answer {msg:?}"
            );
        }
        assert!(self.jobs.try_recv().is_err(), "unexpected job");
    }

    fn finish_ok(&self, job: &crate::worker::QueryJob) {
        let frame = Outbound::ExecutionResult(crate::protocol::ExecutionResult {
            command_id: job.command.command_id.clone(),
            execution_id: job.command.execution_id.clone(),
            activity_id: job.command.activity_id.clone(),
            result: crate::protocol::ResultPayload::Inline {
                columns: Vec::new(),
                rows: vec![vec![1.into()]].into(),
            },
            row_count: 1,
            duration_ms: 3,
        });
        self.send(SupMsg::Finished { command_id: job.command.command_id.clone(), frame: Box::new(frame) });
    }

    fn stop(mut self, grace: Duration) -> String {
        self.send(SupMsg::Shutdown { reason: "test".into(), grace });
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.inbox.send(SupMsg::Shutdown { reason: "test end".into(), grace: Duration::ZERO });
            // Answer what the drain may cancel, so the thread ends.
            while let Ok(job) = self.jobs.try_recv() {
                drop(job);
            }
            let _ = thread.join();
        }
    }
}

fn command(id: &str, key: &str, execution: &str, expires_at: Option<String>) -> Inbound {
    let mut json = serde_json::json!({
        "type": "command",
        "commandId": id,
        "executionId": execution,
        "activityId": "act",
        "operation": "query",
        "payload": { "query": "SELECT 1", "params": [], "idempotencyKey": key, "connection": "erp" }
    });
    if let Some(at) = expires_at {
        json["payload"]["expiresAt"] = at.into();
    }
    Inbound::decode(&json.to_string()).unwrap()
}

fn ids(frame: &Outbound) -> (String, Option<ErrorCode>) {
    match frame {
        Outbound::ExecutionResult(r) => (r.command_id.clone(), None),
        Outbound::ExecutionError(e) => (e.command_id.clone().unwrap_or_default(), Some(e.error.code)),
        other => panic!("not an answer: {other:?}"),
    }
}

fn connected() -> Box<crate::protocol::Connected> {
    match Inbound::decode(include_str!("../../tests/fixtures/protocol/inbound_connected.json")).unwrap() {
        Inbound::Connected(c) => Box::new(c),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_is_persisted_run_once_and_its_answer_kept_until_acked() {
    let dir = Dir::new("once");
    let h = Harness::start(&dir, 2, 10);
    h.command("c1", "k1", "e1");
    let job = h.query_job();
    assert_eq!(job.command.command_id, "c1");
    h.finish_ok(&job);
    assert_eq!(ids(&h.answer()), ("c1".into(), None));
    // The same delivery again: answered from the store, not run.
    h.command("c1", "k1", "e1");
    assert_eq!(ids(&h.answer()), ("c1".into(), None));
    h.quiet();
    // Unacknowledged answers are sent again on the next connection; acknowledged ones are not.
    h.send(SupMsg::LinkUp(connected()));
    assert_eq!(ids(&h.answer()), ("c1".into(), None));
    h.send(SupMsg::Inbound(Box::new(Inbound::decode(r#"{"type":"ack","commandId":"c1"}"#).unwrap())));
    h.send(SupMsg::LinkUp(connected()));
    h.quiet();
}

/// The cloud's `ack` of an answer.
fn ack(id: &str) -> SupMsg {
    SupMsg::Inbound(Box::new(Inbound::decode(&format!(r#"{{"type":"ack","commandId":"{id}"}}"#)).unwrap()))
}

#[test]
fn a_command_costs_two_queue_commits_on_the_supervisor_and_prepares_no_statement() {
    let dir = Dir::new("cost");
    let h = Harness::start(&dir, 2, 10);
    let run = |i: u64| {
        let id = format!("c{i}");
        h.command(&id, &format!("k{i}"), "e1");
        let job = h.query_job();
        h.finish_ok(&job);
        assert_eq!(ids(&h.answer()), (id.clone(), None));
        h.send(ack(&id));
    };
    // Warm up: every statement of the path prepared once (and the held ack written by the
    // status request, which reads the queue's counts).
    for i in 0..3 {
        run(i);
    }
    h.status();
    let before = h.queue_stats.read();
    const N: u64 = 40;
    for i in 3..3 + N {
        run(i);
    }
    // Every commit of a command comes before its answer is sent (the last ack is held).
    let cost = h.queue_stats.read() - before;
    // Per command: receipt + start (one commit), answer (one commit); the ack rides in the
    // next command's receipt (the last one is held, or written after ACK_FLUSH).
    assert!(cost.commits == 2 * N || cost.commits == 2 * N + 1, "{cost:?}");
    assert_eq!(cost.prepare_checks, 0, "a statement was prepared again: {cost:?}");
    assert_eq!(cost.checkpoints_inline, 0, "{cost:?}");
    // The status request's read of the counts writes the held ack first.
    assert_eq!(h.status()["queue"]["unacknowledged"], 0);
}

#[test]
fn a_repeat_while_running_attaches_to_the_running_execution() {
    let dir = Dir::new("attach");
    let h = Harness::start(&dir, 2, 10);
    h.command("c1", "k1", "e1");
    let job = h.query_job();
    h.command("c2", "k1", "e1");
    h.quiet();
    h.finish_ok(&job);
    let mut answered = vec![ids(&h.answer()).0, ids(&h.answer()).0];
    answered.sort();
    assert_eq!(answered, ["c1", "c2"]);
    h.quiet();
}

#[test]
fn a_repeat_after_a_restart_is_answered_from_disk() {
    let dir = Dir::new("restart");
    let h = Harness::start(&dir, 2, 10);
    h.command("c1", "k1", "e1");
    let job = h.query_job();
    h.finish_ok(&job);
    h.answer();
    h.stop(Duration::ZERO);
    let h = Harness::start(&dir, 2, 10);
    h.command("c9", "k1", "e1");
    assert_eq!(ids(&h.answer()), ("c9".into(), None));
    h.quiet();
}

#[test]
fn commands_beyond_the_workers_wait_and_beyond_the_bound_are_busy() {
    let dir = Dir::new("busy");
    let h = Harness::start(&dir, 1, 2);
    for i in 0..4 {
        h.command(&format!("c{i}"), &format!("k{i}"), "e1");
    }
    let first = h.query_job();
    assert_eq!(first.command.command_id, "c0");
    let busy = h.answer();
    assert_eq!(ids(&busy), ("c3".into(), Some(ErrorCode::AgentBusy)));
    let Outbound::ExecutionError(e) = &busy else { unreachable!() };
    assert!(e.error.retryable);
    assert_eq!(h.status()["waitingCommands"], 2);
    h.finish_ok(&first);
    assert_eq!(ids(&h.answer()).0, "c0");
    assert_eq!(h.query_job().command.command_id, "c1");
    // The busy answer was retryable: the same key runs when sent again.
    h.command("c3b", "k3", "e1");
    h.quiet();
    assert_eq!(h.status()["waitingCommands"], 2);
}

#[test]
fn cancel_answers_waiting_commands_and_cancels_running_ones() {
    let dir = Dir::new("cancel");
    let h = Harness::start(&dir, 1, 10);
    h.command("c1", "k1", "e1");
    let running = h.query_job();
    h.command("c2", "k2", "e2");
    h.send(SupMsg::Inbound(Box::new(
        Inbound::decode(r#"{"type":"cancel","executionId":"e2","reason":"user"}"#).unwrap(),
    )));
    assert_eq!(ids(&h.answer()), ("c2".into(), Some(ErrorCode::CommandCancelled)));
    assert!(!running.cancel.is_cancelled());
    h.send(SupMsg::Inbound(Box::new(Inbound::decode(r#"{"type":"cancel","executionId":"e1"}"#).unwrap())));
    h.status();
    assert!(running.cancel.is_cancelled());
}

#[test]
fn a_command_that_expires_while_waiting_is_answered_expired() {
    let dir = Dir::new("expire");
    let h = Harness::start(&dir, 1, 10);
    h.command("c1", "k1", "e1");
    let running = h.query_job();
    let expires = SystemTime::now() + Duration::from_millis(300);
    let at = humantime::format_rfc3339_millis(expires).to_string();
    h.send(SupMsg::Inbound(Box::new(command("c2", "k2", "e1", Some(at)))));
    h.quiet();
    while SystemTime::now() <= expires {
        std::thread::yield_now();
    }
    h.finish_ok(&running);
    assert_eq!(ids(&h.answer()).0, "c1");
    assert_eq!(ids(&h.answer()), ("c2".into(), Some(ErrorCode::CommandExpired)));
}

#[test]
fn a_local_stop_puts_running_commands_back_and_the_next_start_runs_them() {
    let dir = Dir::new("drain");
    let h = Harness::start(&dir, 1, 10);
    h.command("c1", "k1", "e1");
    let running = h.query_job();
    h.command("c2", "k2", "e1");
    let jobs = h.jobs.clone();
    let inbox = h.inbox.clone();
    // The "worker": reports the cancel the drain sends.
    let worker = std::thread::spawn(move || {
        while !running.cancel.is_cancelled() {
            std::thread::yield_now();
        }
        let frame = crate::store::error_frame(&running.command, ErrorCode::CommandCancelled, "cancelled");
        inbox
            .send(SupMsg::Finished { command_id: running.command.command_id.clone(), frame: Box::new(frame) })
            .unwrap();
        drop(jobs);
    });
    assert_eq!(h.stop(Duration::ZERO), "test");
    worker.join().unwrap();
    let h = Harness::start(&dir, 1, 10);
    assert_eq!(h.query_job().command.command_id, "c1");
    h.quiet();
}

#[test]
fn after_a_crash_a_command_runs_again_only_when_its_first_run_is_proven_stopped() {
    let dir = Dir::new("crash");
    {
        // What a crash leaves: commands marked running, with what the workers recorded.
        let mut store = dir.store();
        for (id, session) in [
            ("never-sent", None),
            ("local", Some("local")),
            ("odbc", Some("unknown")),
            ("pg", Some("pg:77:t")),
        ] {
            let Inbound::Command(c) = command(id, &format!("k-{id}"), "e1", None) else { unreachable!() };
            assert!(store.receive(&c).unwrap().is_none());
            store.start(id).unwrap();
            if let Some(session) = session {
                store.set_server_session(id, session).unwrap();
            }
        }
    }
    let h = Harness::start(&dir, 4, 10);
    let mut started = Vec::new();
    let mut cancel_asked = None;
    for _ in 0..3 {
        match h.job() {
            Job::Query(job) => started.push(job.command.command_id.clone()),
            Job::CancelStale { command_id, session, .. } => cancel_asked = Some((command_id, session)),
            other => panic!("{other:?}"),
        }
    }
    started.sort();
    assert_eq!(started, ["local", "never-sent"]);
    assert_eq!(cancel_asked, Some(("pg".into(), "pg:77:t".into())));
    assert_eq!(ids(&h.answer()), ("odbc".into(), Some(ErrorCode::CommandInterrupted)));
    // The server confirms the first run is gone: it runs again.
    h.send(SupMsg::StaleCancelled { command_id: "pg".into(), proven: true, detail: "gone".into() });
    assert_eq!(h.query_job().command.command_id, "pg");
    h.quiet();
}

#[test]
fn a_command_whose_first_run_cannot_be_stopped_is_reported_not_rerun() {
    let dir = Dir::new("unproven");
    {
        let mut store = dir.store();
        let Inbound::Command(c) = command("pg", "k", "e1", None) else { unreachable!() };
        store.receive(&c).unwrap();
        store.start("pg").unwrap();
        store.set_server_session("pg", "pg:1:t").unwrap();
    }
    let h = Harness::start(&dir, 2, 10);
    assert!(matches!(h.job(), Job::CancelStale { .. }));
    h.send(SupMsg::StaleCancelled {
        command_id: "pg".into(),
        proven: false,
        detail: "permission denied".into(),
    });
    let answer = h.answer();
    assert_eq!(ids(&answer), ("pg".into(), Some(ErrorCode::CommandInterrupted)));
    h.quiet();
}

#[test]
fn a_gateway_restart_reconnects_and_only_a_decommission_stops_the_agent() {
    let dir = Dir::new("shutdown");
    let h = Harness::start(&dir, 2, 10);
    h.send(SupMsg::Inbound(Box::new(
        Inbound::decode(r#"{"type":"shutdown","reason":"redeploy","gracePeriod":0}"#).unwrap(),
    )));
    loop {
        if let LinkMsg::Reconnect = h.link.recv_timeout(WAIT).unwrap() {
            break;
        }
    }
    assert_eq!(h.status()["paused"], false, "the agent keeps running");
    let mut h = h;
    h.send(SupMsg::Inbound(Box::new(
        Inbound::decode(r#"{"type":"shutdown","reason":"retired","gracePeriod":0,"mode":"decommission"}"#)
            .unwrap(),
    )));
    let reason = h.thread.take().unwrap().join().unwrap();
    assert!(reason.contains("decommissioned"), "{reason}");
}

#[test]
fn a_database_that_cannot_be_opened_answers_unavailable_and_the_others_are_served() {
    let dir = Dir::new("unopened");
    let missing = drivers::ConnectionSpec {
        name: "ledger".into(),
        kind: drivers::DbKind::Sqlite,
        path: dir.0.join("ledger.db"),
        ..Default::default()
    };
    let reason = drivers::Database::open(&missing).unwrap_err().to_string();
    let unopened = super::Unopened { name: "ledger".into(), spec: Some(missing), reason, first: false };
    let h = Harness::start_with(&dir, 2, 10, vec![unopened]);
    let mut json = serde_json::json!({
        "type": "command", "commandId": "c1", "executionId": "e1", "activityId": "a", "operation": "query",
        "payload": { "query": "SELECT 1", "params": [], "idempotencyKey": "k1", "connection": "ledger" }
    });
    h.send(SupMsg::Inbound(Box::new(Inbound::decode(&json.to_string()).unwrap())));
    let answer = h.answer();
    assert_eq!(ids(&answer), ("c1".into(), Some(ErrorCode::DatabaseUnavailable)));
    let Outbound::ExecutionError(e) = answer else { unreachable!() };
    assert!(e.error.retryable);
    let status = h.status();
    let ledger =
        status["databases"].as_array().unwrap().iter().find(|d| d["name"] == "ledger").unwrap().clone();
    assert_eq!(ledger["healthy"], false);
    // The other database is served.
    json["commandId"] = "c2".into();
    json["payload"]["idempotencyKey"] = "k2".into();
    json["payload"]["connection"] = "erp".into();
    h.send(SupMsg::Inbound(Box::new(Inbound::decode(&json.to_string()).unwrap())));
    assert_eq!(h.query_job().command.command_id, "c2");
}

/// The next status event that satisfies `pred` (earlier ones are skipped: the supervisor may
/// send intermediate states).
fn status_where(
    events: &Receiver<crate::protocol::control::AgentEvent>,
    pred: impl Fn(&crate::protocol::control::StatusSnapshot) -> bool,
) -> crate::protocol::control::StatusSnapshot {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let event = events.recv_deadline(deadline).expect("a status event");
        if let crate::protocol::control::AgentEvent::Status(status) = event
            && pred(&status)
        {
            return *status;
        }
    }
}

/// The next activity event.
fn activity(
    events: &Receiver<crate::protocol::control::AgentEvent>,
) -> crate::protocol::control::ActivityEntry {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let crate::protocol::control::AgentEvent::Activity(entry) =
            events.recv_deadline(deadline).expect("an activity event")
        {
            return entry;
        }
    }
}

impl Harness {
    fn subscribe(&self) -> Receiver<crate::protocol::control::AgentEvent> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(SupMsg::Subscribe { reply });
        answer.recv_timeout(WAIT).unwrap().expect("room for a subscriber")
    }
}

#[test]
fn the_indicator_follows_the_six_states_of_the_spec() {
    use super::{IndicatorInputs, LinkState, RED_AFTER_FAILED_DIALS, indicator};
    use crate::protocol::control::Indicator;
    let none: &[String] = &[];
    let warn = ["database `erp` is unreachable".to_owned()];
    let base = IndicatorInputs {
        state: LinkState::Connected,
        paused: false,
        ever_connected: true,
        failed_dials: 0,
        link_error: None,
        warnings: none,
    };
    assert_eq!(indicator(base), (Indicator::Connected, None));
    assert_eq!(indicator(IndicatorInputs { state: LinkState::Busy, ..base }).0, Indicator::Executing);
    let (state, reason) = indicator(IndicatorInputs { state: LinkState::Busy, warnings: &warn, ..base });
    assert_eq!(state, Indicator::Warning, "a warning wins over pulsing green");
    assert!(reason.unwrap().contains("`erp` is unreachable"));
    // Paused wins over everything, connected or not.
    for state in [LinkState::Paused, LinkState::Disconnected, LinkState::Connecting] {
        assert_eq!(indicator(IndicatorInputs { state, paused: true, ..base }).0, Indicator::Paused);
    }
    // Before the first session: blue while the first dial runs, red once one failed.
    let fresh = IndicatorInputs { state: LinkState::Connecting, ever_connected: false, ..base };
    assert_eq!(indicator(fresh).0, Indicator::Reconnecting);
    let (state, reason) = indicator(IndicatorInputs {
        state: LinkState::Disconnected,
        failed_dials: 1,
        link_error: Some("cannot reach the cloud: connection refused"),
        ..fresh
    });
    assert_eq!(state, Indicator::Disconnected);
    assert!(reason.unwrap().contains("connection refused"));
    // After a drop: blue for a few failed dials, then red.
    let dropped = IndicatorInputs {
        state: LinkState::Disconnected,
        link_error: Some("connection lost: reset"),
        ..base
    };
    assert_eq!(indicator(dropped).0, Indicator::Reconnecting);
    assert_eq!(
        indicator(IndicatorInputs { failed_dials: RED_AFTER_FAILED_DIALS - 1, ..dropped }).0,
        Indicator::Reconnecting
    );
    assert_eq!(
        indicator(IndicatorInputs { failed_dials: RED_AFTER_FAILED_DIALS, ..dropped }).0,
        Indicator::Disconnected
    );
    // A refused key is red with a reason that says what to do.
    let (state, reason) = indicator(IndicatorInputs { state: LinkState::KeyRejected, ..base });
    assert_eq!(state, Indicator::Disconnected);
    assert!(reason.unwrap().contains("API key"));
}

#[test]
fn subscribers_get_the_status_first_then_every_change_and_each_command() {
    use crate::protocol::control::{AgentEvent, Indicator, LinkState, Outcome};
    let dir = Dir::new("events");
    let mut h = Harness::start(&dir, 2, 10);
    let events = h.subscribe();
    let first = match events.recv_timeout(WAIT).unwrap() {
        AgentEvent::Status(status) => status,
        other => panic!("the status comes first, got {other:?}"),
    };
    assert_eq!(first.indicator, Indicator::Reconnecting, "dialling for the first time");
    assert_eq!(first.databases[0].name, "erp");

    // The first dial fails: red, with the reason.
    h.send(SupMsg::LinkDown { reason: "cannot reach the cloud: connection refused".into(), rejected: None });
    let red = status_where(&events, |s| s.indicator == Indicator::Disconnected);
    assert!(red.reason.as_deref().unwrap().contains("connection refused"), "{red:?}");
    assert!(red.disconnected_since.is_some());
    assert!(!red.connected);

    // The gateway comes up: green.
    h.send(SupMsg::LinkUp(connected()));
    let green = status_where(&events, |s| s.indicator == Indicator::Connected);
    assert_eq!(green.state, LinkState::Connected);
    assert!(green.connected && green.connected_since.is_some() && green.disconnected_since.is_none());

    // A command: an activity entry when received, another when answered.
    h.command("c1", "k1", "e1");
    let received = activity(&events);
    assert_eq!((received.command_id.as_str(), &received.outcome), ("c1", &Outcome::Running));
    assert_eq!(received.connection.as_deref(), Some("erp"));
    status_where(&events, |s| s.indicator == Indicator::Executing);
    let job = h.query_job();
    h.finish_ok(&job);
    let done = activity(&events);
    assert_eq!((done.command_id.as_str(), &done.outcome, done.rows), ("c1", &Outcome::Inline, Some(1)));
    assert_eq!(done.received_at, received.received_at);
    assert!(done.finished_at.is_some());
    let after = status_where(&events, |s| s.indicator == Indicator::Connected);
    assert_eq!((after.commands_completed, after.commands_today), (1, 1));
    assert!(after.bytes_sent == 0, "no link thread here: nothing was written to a socket");

    // Pause: grey. A drop after a session: blue, not red.
    h.control(crate::protocol::control::ControlRequest::Pause);
    status_where(&events, |s| s.indicator == Indicator::Paused && s.paused);
    h.control(crate::protocol::control::ControlRequest::Resume);
    status_where(&events, |s| s.indicator == Indicator::Connected);
    h.send(SupMsg::LinkDown { reason: "connection lost: reset".into(), rejected: None });
    let blue = status_where(&events, |s| !s.connected);
    assert_eq!(blue.indicator, Indicator::Reconnecting, "{blue:?}");

    // The activity request has both states of the command folded into one entry.
    match h.control(crate::protocol::control::ControlRequest::Activity { limit: Some(5) }) {
        crate::protocol::control::ControlReply::Activity(entries) => assert_eq!(entries, vec![done]),
        other => panic!("{other:?}"),
    }

    // Stopping tells subscribers last.
    h.send(SupMsg::Shutdown { reason: "test".into(), grace: Duration::ZERO });
    h.thread.take().unwrap().join().unwrap();
    let last = events.iter().last().unwrap();
    assert_eq!(last, AgentEvent::Stopped { reason: "test".into() });
}

#[test]
fn status_events_are_rate_limited_and_repeat_every_second_when_idle() {
    use crate::protocol::control::AgentEvent;
    let dir = Dir::new("rate");
    let h = Harness::start(&dir, 2, 10);
    let events = h.subscribe();
    let started = std::time::Instant::now();
    // Many changes in a burst (link flapping) give a few status events, not one each.
    for i in 0..200 {
        if i % 2 == 0 {
            h.send(SupMsg::LinkConnecting);
        } else {
            h.send(SupMsg::LinkDown { reason: format!("refused {i}"), rejected: None });
        }
    }
    h.status();
    let mut statuses = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        if let Ok(AgentEvent::Status(_)) = events.recv_timeout(Duration::from_millis(100)) {
            statuses += 1;
        }
    }
    // At most one per STATUS_MIN_GAP (plus the first), and at least one per STATUS_EVERY.
    let elapsed = started.elapsed();
    let most = 2 + (elapsed.as_millis() / super::STATUS_MIN_GAP.as_millis()) as usize;
    assert!(statuses <= most, "{statuses} status events in {elapsed:?}");
    assert!(statuses >= 3, "{statuses} status events in {elapsed:?}: idle statuses repeat every second");
}

#[test]
fn a_schema_that_differs_from_the_approved_one_is_a_warning_until_it_matches_again() {
    let dir = Dir::new("approved");
    let config = dir.0.join("config.json");
    let harness = Harness::start_configured(&dir, 2, 10, Vec::new(), Some(config.clone()));
    harness.send(SupMsg::LinkUp(connected()));
    let db = drivers::Database::open(&drivers::ConnectionSpec {
        name: "erp".into(),
        kind: drivers::DbKind::Sqlite,
        path: dir.0.join("erp.db"),
        ..Default::default()
    })
    .unwrap();
    let now = db.discover().unwrap();
    // Approved: the same schema without its last table (a table was added since).
    let mut approved = now.clone();
    approved.tables.pop();
    let file = crate::setup::schema::approved_file(&config, "erp");
    crate::setup::schema::save_schema(&file, &approved).unwrap();

    harness.send(SupMsg::Discovered(vec![("erp".into(), Ok(now.clone()))]));
    let status = harness.snapshot();
    assert_eq!(status.schema_changes, ["erp"]);
    assert_eq!(status.indicator, crate::protocol::control::Indicator::Warning, "{status:?}");
    assert!(status.reason.as_deref().unwrap_or_default().contains("schema of `erp` changed"), "{status:?}");

    // Approved as it is now: the next discovery clears it.
    crate::setup::schema::save_schema(&file, &now).unwrap();
    harness.send(SupMsg::Discovered(vec![("erp".into(), Ok(now))]));
    let status = harness.snapshot();
    assert!(status.schema_changes.is_empty());
    assert_eq!(status.indicator, crate::protocol::control::Indicator::Connected, "{status:?}");
}
