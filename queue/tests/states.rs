//! Every state change, idempotency, retryable failures, restarts, read-only opening.

use queue::{AuditEvent, Existing, Finish, QueueError, Receipt, State, Store, StoreConfig};

use crate::support::{TempDir, answer, answered, cmd, failed, frame, open};

fn events(store: &Store) -> Vec<String> {
    store.audit_records(None).expect("audit").into_iter().map(|r| r.event).collect()
}

#[test]
fn received_running_answered_acknowledged() {
    let dir = TempDir::new("states");
    let mut store = open(&dir.db());
    let f = frame("c1", 10);
    assert_eq!(store.receive(&cmd("c1", Some("k1"), &f)).unwrap(), Receipt::New);
    let got = store.get("c1").unwrap().expect("stored on receipt");
    assert_eq!(got.state, State::Received);
    assert_eq!(got.frame_json.as_deref(), Some(f.as_str()));
    assert_eq!(got.attempts, 0);
    assert_eq!(got.query_hash, queue::query_hash("SELECT name FROM customers WHERE id = 42"));

    assert_eq!(store.start("c1").unwrap(), 1);
    store.set_server_session("c1", "pg backend pid 4242").unwrap();
    let got = store.get("c1").unwrap().unwrap();
    assert_eq!(got.state, State::Running);
    assert_eq!(got.server_session.as_deref(), Some("pg backend pid 4242"));
    assert!(got.started_at_ms.is_some());

    let a = answer("c1", 100);
    store.finish("c1", &answered(&a)).unwrap();
    let got = store.get("c1").unwrap().unwrap();
    assert_eq!(got.state, State::Answered);
    assert_eq!(got.answer_json.as_deref(), Some(a.as_str()));
    assert_eq!((got.row_count, got.code.as_deref(), got.duration_ms), (Some(3), Some("ok"), Some(7)));
    assert!(!got.acknowledged);

    let unacked = store.unacknowledged().unwrap();
    assert_eq!(unacked.len(), 1);
    assert_eq!((unacked[0].command_id.as_str(), unacked[0].answer_json.as_str()), ("c1", a.as_str()));
    assert!(store.acknowledge("c1").unwrap());
    assert!(!store.acknowledge("c1").unwrap(), "a second ack changes nothing");
    assert!(store.unacknowledged().unwrap().is_empty());
    assert!(store.get("c1").unwrap().unwrap().acknowledged);

    assert_eq!(events(&store), ["received", "started", "executed"]);
    let executed = &store.audit_records(None).unwrap()[2];
    assert_eq!(executed.row_count, Some(3));
    assert_eq!(executed.duration_ms, Some(7));
    assert_eq!(executed.outcome.as_deref(), Some("ok"));
    assert_eq!(executed.execution_id.as_deref(), Some("exec-1"));
    assert_eq!(executed.connection.as_deref(), Some("erp"));
    assert!(store.verify_audit().unwrap().ok);
}

#[test]
fn transitions_the_state_machine_refuses() {
    let dir = TempDir::new("refuse");
    let mut store = open(&dir.db());
    let f = frame("c1", 10);
    store.receive(&cmd("c1", None, &f)).unwrap();
    assert!(matches!(store.start("nope"), Err(QueueError::NotFound(_))));
    assert!(matches!(store.requeue("c1"), Err(QueueError::Transition { from: State::Received, .. })));
    assert!(!store.acknowledge("c1").unwrap(), "an unfinished command cannot be acknowledged");
    assert!(matches!(
        store.set_server_session("c1", "s"),
        Err(QueueError::Transition { from: State::Received, .. })
    ));
    store.start("c1").unwrap();
    assert!(matches!(
        store.start("c1"),
        Err(QueueError::Transition { from: State::Running, to: State::Running, .. })
    ));
    let not_final = Finish { state: State::Received, ..answered("{}") };
    assert!(matches!(store.finish("c1", &not_final), Err(QueueError::Transition { .. })));
    store.finish("c1", &answered("{}")).unwrap();
    assert!(matches!(
        store.finish("c1", &failed("{}", false)),
        Err(QueueError::Transition { from: State::Answered, to: State::Failed, .. })
    ));
    assert!(matches!(store.start("c1"), Err(QueueError::Transition { from: State::Answered, .. })));
    assert!(matches!(store.finish("nope", &answered("{}")), Err(QueueError::NotFound(_))));
}

#[test]
fn cancelled_failed_expired_and_requeued() {
    let dir = TempDir::new("finals");
    let mut store = open(&dir.db());
    let f = frame("x", 10);
    // Received -> Cancelled (cancel before it ran).
    store.receive(&cmd("cancel-me", None, &f)).unwrap();
    let cancel =
        Finish { state: State::Cancelled, code: Some("CANCELLED"), ..answered(r#"{"cancelled":true}"#) };
    store.finish("cancel-me", &cancel).unwrap();
    assert_eq!(store.get("cancel-me").unwrap().unwrap().state, State::Cancelled);

    // Running -> Failed.
    store.receive(&cmd("fail-me", None, &f)).unwrap();
    store.start("fail-me").unwrap();
    store.finish("fail-me", &failed(r#"{"error":"x"}"#, false)).unwrap();
    assert_eq!(store.get("fail-me").unwrap().unwrap().state, State::Failed);

    // Running -> Received after a crash, then again Running with attempt 2.
    store.receive(&cmd("again", None, &f)).unwrap();
    store.start("again").unwrap();
    store.requeue("again").unwrap();
    assert_eq!(store.get("again").unwrap().unwrap().state, State::Received);
    assert_eq!(store.start("again").unwrap(), 2);

    // Received -> Expired when due; not yet due and running ones stay.
    let now = queue::now_ms();
    let mut due = cmd("due", None, &f);
    due.expires_at_ms = Some(now - 1);
    store.receive(&due).unwrap();
    let mut later = cmd("later", None, &f);
    later.expires_at_ms = Some(now + 60_000);
    store.receive(&later).unwrap();
    let mut running = cmd("running-due", None, &f);
    running.expires_at_ms = Some(now - 1);
    store.receive(&running).unwrap();
    store.start("running-due").unwrap();
    let expired = store
        .expire_due_with(now, |c| {
            Some(format!(r#"{{"type":"error","commandId":"{}","code":"COMMAND_EXPIRED"}}"#, c.command_id))
        })
        .unwrap();
    assert_eq!(expired, ["due"]);
    let got = store.get("due").unwrap().unwrap();
    assert_eq!((got.state, got.code.as_deref()), (State::Expired, Some("COMMAND_EXPIRED")));
    assert!(got.answer_json.unwrap().contains("COMMAND_EXPIRED"));
    assert_eq!(store.get("later").unwrap().unwrap().state, State::Received);
    assert_eq!(store.get("running-due").unwrap().unwrap().state, State::Running);
    assert!(store.expire_due(now).unwrap().is_empty(), "nothing is due twice");
    // Without an answer frame: nothing to send, so it is not waiting for an acknowledgement.
    let mut bare = cmd("bare", Some("bare"), &f);
    bare.expires_at_ms = Some(now - 1);
    store.receive(&bare).unwrap();
    assert_eq!(store.expire_due(now).unwrap(), ["bare"]);
    let got = store.get("bare").unwrap().unwrap();
    assert!(got.acknowledged && got.answer_json.is_none());
    assert!(store.unacknowledged().unwrap().iter().all(|a| a.command_id != "bare"));
    assert!(
        matches!(store.receive(&bare).unwrap(), Receipt::Known(e) if e.state == State::Expired && !e.purged)
    );

    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.received, counts.running, counts.answered, counts.failed, counts.cancelled, counts.expired),
        (1, 2, 0, 1, 1, 2)
    );
    assert_eq!(counts.unacknowledged, 3);
    assert_eq!(
        events(&store),
        [
            "received",
            "cancelled",
            "received",
            "started",
            "failed",
            "received",
            "started",
            "interrupted",
            "started",
            "received",
            "received",
            "received",
            "started",
            "expired",
            "received",
            "expired"
        ]
    );
    assert!(store.verify_audit().unwrap().ok);
}

#[test]
fn a_known_key_or_command_id_is_never_queued_twice() {
    let dir = TempDir::new("idem");
    let mut store = open(&dir.db());
    let f = frame("c1", 10);
    store.receive(&cmd("c1", Some("key-1"), &f)).unwrap();
    let known = |state| {
        Receipt::Known(Existing {
            command_id: "c1".into(),
            state,
            answer_json: None,
            purged: false,
            code: None,
        })
    };
    // While received: by key (a new commandId) and by commandId (no key).
    assert_eq!(store.receive(&cmd("c1-redelivered", Some("key-1"), &f)).unwrap(), known(State::Received));
    assert_eq!(store.receive(&cmd("c1", None, &f)).unwrap(), known(State::Received));
    // While running: attach, do not run again.
    store.start("c1").unwrap();
    assert_eq!(store.receive(&cmd("c1-again", Some("key-1"), &f)).unwrap(), known(State::Running));
    // Finished: answer from the store.
    let a = answer("c1", 50);
    store.finish("c1", &answered(&a)).unwrap();
    match store.receive(&cmd("c1-late", Some("key-1"), &f)).unwrap() {
        Receipt::Known(e) => {
            assert_eq!((e.command_id.as_str(), e.state), ("c1", State::Answered));
            assert_eq!(e.answer_json.as_deref(), Some(a.as_str()));
            assert_eq!(e.code.as_deref(), Some("ok"));
            assert!(!e.purged);
        }
        other => panic!("expected Known, got {other:?}"),
    }
    // A repeat is not recorded as a new command (no row, no audit record).
    let counts = store.counts().unwrap();
    assert_eq!(counts.answered + counts.received + counts.running, 1);
    assert_eq!(events(&store), ["received", "started", "executed"]);
    assert!(store.get("c1-late").unwrap().is_none());
}

#[test]
fn a_retryable_failure_runs_again_on_repeat() {
    let dir = TempDir::new("retry");
    let mut store = open(&dir.db());
    let f = frame("c1", 10);
    store.receive(&cmd("c1", Some("key-1"), &f)).unwrap();
    store.start("c1").unwrap();
    store.finish("c1", &failed(r#"{"error":"db down"}"#, true)).unwrap();
    let got = store.get("c1").unwrap().unwrap();
    assert!(got.retryable);
    assert_eq!(got.idempotency_key, None, "the key is freed");

    // The same commandId delivered again before its answer was acknowledged: a re-delivery
    // racing that answer gets it, and nothing runs.
    assert!(matches!(
        store.receive(&cmd("c1", Some("key-1"), &f)).unwrap(),
        Receipt::Known(e) if e.command_id == "c1" && e.state == State::Failed
    ));
    // Once the cloud acknowledged the failure, the same commandId is a deliberate retry:
    // queued again, attempts keep counting.
    assert!(store.acknowledge("c1").unwrap());
    assert_eq!(store.receive(&cmd("c1", Some("key-1"), &f)).unwrap(), Receipt::New);
    let got = store.get("c1").unwrap().unwrap();
    assert_eq!((got.state, got.answer_json.as_deref(), got.retryable), (State::Received, None, false));
    assert_eq!(store.start("c1").unwrap(), 2);
    store.finish("c1", &failed(r#"{"error":"db down"}"#, true)).unwrap();

    // A new commandId with the same key: a new row runs; the old one stays for its answer.
    assert_eq!(store.receive(&cmd("c2", Some("key-1"), &f)).unwrap(), Receipt::New);
    assert_eq!(store.get("c2").unwrap().unwrap().idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(store.get("c1").unwrap().unwrap().state, State::Failed);
    store.start("c2").unwrap();
    store.finish("c2", &answered("{}")).unwrap();
    assert!(
        matches!(store.receive(&cmd("c3", Some("key-1"), &f)).unwrap(), Receipt::Known(e) if e.command_id == "c2")
    );

    // forget_retryable after the fact: a cached answer stops answering repeats.
    store.receive(&cmd("d1", Some("key-d"), &f)).unwrap();
    store.start("d1").unwrap();
    store.finish("d1", &failed("{}", false)).unwrap();
    assert!(matches!(store.receive(&cmd("d1", Some("key-d"), &f)).unwrap(), Receipt::Known(_)));
    assert!(store.forget_retryable("d1").unwrap());
    assert!(store.acknowledge("d1").unwrap());
    assert_eq!(store.receive(&cmd("d1", Some("key-d"), &f)).unwrap(), Receipt::New);
    let received: Vec<_> = store
        .audit_records(None)
        .unwrap()
        .into_iter()
        .filter(|r| r.event == "received" && r.detail.is_some())
        .map(|r| r.command_id.unwrap())
        .collect();
    assert_eq!(received, ["c1", "d1"], "a re-run is audited as received again");
    assert!(store.verify_audit().unwrap().ok);
}

#[test]
fn restart_brings_back_queued_and_interrupted_commands() {
    let dir = TempDir::new("restart");
    let path = dir.path().join("sub").join("queue.db");
    let instance;
    {
        let mut store = open(&path);
        instance = store.instance_id().to_owned();
        assert_eq!(instance.len(), 36);
        for id in ["a", "b", "c", "d"] {
            store.receive(&cmd(id, Some(id), &frame(id, 20))).unwrap();
        }
        store.start("a").unwrap();
        store.set_server_session("a", "pid 77").unwrap();
        store.start("d").unwrap();
        store.finish("d", &answered(r#"{"done":1}"#)).unwrap();
    }
    let mut store = open(&path);
    assert_eq!(store.instance_id(), instance, "the instance id survives a restart");
    let queued: Vec<_> = store.queued(10).unwrap().into_iter().map(|c| c.command_id).collect();
    assert_eq!(queued, ["b", "c"]);
    assert_eq!(store.queued(1).unwrap().len(), 1);
    assert_eq!(store.queued(10).unwrap()[0].frame_json.as_deref(), Some(frame("b", 20).as_str()));
    let interrupted = store.interrupted().unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].command_id, "a");
    assert_eq!((interrupted[0].attempts, interrupted[0].server_session.as_deref()), (1, Some("pid 77")));
    assert_eq!(store.unacknowledged().unwrap()[0].command_id, "d");
    assert!(
        matches!(store.receive(&cmd("x", Some("d"), "{}")).unwrap(), Receipt::Known(e) if e.state == State::Answered)
    );
    assert!(store.verify_audit().unwrap().ok);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        assert_eq!(mode(std::path::Path::new(&wal)), 0o600, "SQLite gives the WAL the database's mode");
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (journal, sync): (String, i64) = (
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap(),
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap(),
    );
    assert_eq!((journal.as_str(), sync), ("wal", queue::SCHEMA_VERSION));
    let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(auto_vacuum, 2, "incremental auto-vacuum, so purged pages go back to the disk");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("newer");
    drop(open(&dir.db()));
    rusqlite::Connection::open(dir.db()).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        Store::open(&dir.db(), StoreConfig::default()),
        Err(QueueError::TooNew { found: 99, supported: 1 })
    ));
    assert!(matches!(Store::open_read_only(&dir.db()), Err(QueueError::TooNew { .. })));
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.db(), vec![0x5a; 8192]).unwrap();
    let err = Store::open(&dir.db(), StoreConfig::default()).unwrap_err();
    assert!(matches!(err, QueueError::Corrupt(_)), "{err:?}");
}

#[test]
fn read_only_while_the_owner_writes() {
    let dir = TempDir::new("ro");
    let mut store = open(&dir.db());
    store.receive(&cmd("c1", None, "{}")).unwrap();
    let mut reader = Store::open_read_only(&dir.db()).unwrap();
    assert_eq!(reader.instance_id(), store.instance_id());
    assert_eq!(reader.audit_records(None).unwrap().len(), 1);
    store.start("c1").unwrap();
    assert_eq!(reader.audit_records(None).unwrap().len(), 2, "the reader sees new commits");
    assert!(reader.verify_audit().unwrap().ok);
    assert!(matches!(reader.receive(&cmd("c2", None, "{}")), Err(QueueError::ReadOnly)));
    assert!(matches!(
        reader.audit_note(&AuditEvent { event: "x", ..Default::default() }),
        Err(QueueError::ReadOnly)
    ));
    assert!(matches!(
        Store::open_read_only(&dir.path().join("missing.db")),
        Err(QueueError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
}

#[test]
fn query_text_is_hashed_unless_asked_for() {
    let dir = TempDir::new("qtext");
    let mut store = open(&dir.db());
    store.receive(&cmd("c1", None, "{}")).unwrap();
    store
        .audit_note(&AuditEvent {
            event: "rejected",
            command_id: Some("c9"),
            outcome: Some("WRITE_OPERATION_REJECTED"),
            query: Some("DELETE FROM t"),
            ..Default::default()
        })
        .unwrap();
    let recs = store.audit_records(None).unwrap();
    assert_eq!(
        recs[0].query_hash.as_deref(),
        Some(queue::query_hash("SELECT name FROM customers WHERE id = 42").as_str())
    );
    assert_eq!(recs[0].query_text, None);
    assert_eq!(recs[1].event, "rejected");
    assert_eq!(recs[1].query_hash.as_deref(), Some(queue::query_hash("DELETE FROM t").as_str()));
    assert_eq!(recs[1].query_text, None);
    assert!(recs[1].time.ends_with('Z') && recs[1].time.len() == 24);
    drop(store);

    let cfg = StoreConfig { audit_query_text: true, ..StoreConfig::default() };
    let mut store = Store::open(&dir.db(), cfg).unwrap();
    store.receive(&cmd("c2", None, "{}")).unwrap();
    let last = store.audit_records(None).unwrap().pop().unwrap();
    assert_eq!(last.query_text.as_deref(), Some("SELECT name FROM customers WHERE id = 42"));
    let since = last.ts_ms;
    assert!(store.audit_records(Some(since + 1)).unwrap().is_empty());
    assert!(!store.audit_records(Some(since)).unwrap().is_empty());
    assert!(store.verify_audit().unwrap().ok);
}

#[test]
fn an_8_mib_answer_round_trips_through_the_file() {
    let dir = TempDir::new("big");
    let mut store = open(&dir.db());
    store.receive(&cmd("big", Some("big"), "{}")).unwrap();
    store.start("big").unwrap();
    let a = answer("big", 8 << 20);
    store.finish("big", &answered(&a)).unwrap();
    drop(store);
    let mut store = open(&dir.db());
    assert_eq!(store.unacknowledged().unwrap()[0].answer_json.len(), a.len());
    assert_eq!(store.unacknowledged_limited(0).unwrap().len(), 0);
    match store.receive(&cmd("big-again", Some("big"), "{}")).unwrap() {
        Receipt::Known(e) => assert_eq!(e.answer_json.as_deref(), Some(a.as_str())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn recent_lists_the_newest_commands_first_up_to_the_limit() {
    let dir = TempDir::new("recent");
    let mut store = open(&dir.db());
    let frames: Vec<String> = (0..5).map(|i| frame(&format!("c{i}"), 10)).collect();
    for (i, f) in frames.iter().enumerate() {
        store.receive(&cmd(&format!("c{i}"), None, f)).unwrap();
    }
    store.start("c1").unwrap();
    let a = answer("c1", 100);
    store.finish("c1", &answered(&a)).unwrap();
    let recent = store.recent(3).unwrap();
    let ids: Vec<&str> = recent.iter().map(|c| c.command_id.as_str()).collect();
    assert_eq!(ids, ["c4", "c3", "c2"]);
    let all = store.recent(50).unwrap();
    assert_eq!(all.len(), 5);
    let c1 = all.iter().find(|c| c.command_id == "c1").unwrap();
    assert_eq!((c1.state, c1.row_count), (State::Answered, Some(3)));
    // Read-only opening (the bundle while the agent runs) sees the same.
    drop(store);
    let read_only = Store::open_read_only(&dir.db()).unwrap();
    assert_eq!(read_only.recent(1).unwrap()[0].command_id, "c4");
}
