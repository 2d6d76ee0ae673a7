//! The per-command cost of the store, counted by SQLite itself ([`queue::StoreStats`]): commits,
//! statement preparations, WAL checkpoints — so the fold of receipt and start, the acks held
//! for the next transaction and the background checkpoints are proven, not assumed.

use std::time::{Duration, Instant};

use queue::{Receipt, State, Store, StoreConfig, StoreStats};

use crate::support::{TempDir, answered, cmd, frame};

/// One command the way the supervisor runs one that goes to a worker at once.
fn run_one(store: &mut Store, id: &str, body: &str) {
    let (receipt, starts) = store.receive_running(&cmd(id, Some(id), body)).unwrap();
    assert_eq!((receipt, starts), (Receipt::New, 1));
    store.finish(id, &answered(r#"{"type":"execution_result","rows":[[1]]}"#)).unwrap();
    store.acknowledge_later(id).unwrap();
}

/// The same command through the old path: five commits.
fn run_one_separately(store: &mut Store, id: &str, body: &str) {
    assert_eq!(store.receive(&cmd(id, Some(id), body)).unwrap(), Receipt::New);
    assert_eq!(store.start(id).unwrap(), 1);
    store.set_server_session(id, "pg:1").unwrap();
    store.finish(id, &answered(r#"{"type":"execution_result","rows":[[1]]}"#)).unwrap();
    assert!(store.acknowledge(id).unwrap());
}

#[test]
fn a_command_costs_two_commits_and_prepares_no_statement() {
    let dir = TempDir::new("cost");
    let mut store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    let body = frame("c", 300);
    // Warm up: every statement of the path is prepared once and kept.
    for i in 0..3 {
        run_one(&mut store, &format!("warm-{i}"), &body);
    }
    let before = store.stats();
    const N: u64 = 50;
    for i in 0..N {
        run_one(&mut store, &format!("c{i}"), &body);
    }
    let cost = store.stats() - before;
    // Receipt + start in one commit, the answer in another; each ack rides in the next
    // command's receipt (the last one is still held).
    assert_eq!(cost.commits, 2 * N, "{cost:?}");
    assert_eq!(cost.prepare_checks, 0, "a statement was prepared again: {cost:?}");
    assert_eq!(cost.checkpoints_inline, 0, "the writer checkpointed (fsyncs on its thread): {cost:?}");
    // A read that shows acknowledgements writes the held ones first.
    assert!(store.unacknowledged().unwrap().is_empty());
    assert_eq!(store.counts().unwrap().answered, N + 3);
    assert_eq!(store.stats().commits - before.commits, 2 * N + 1);

    // The separate path, for comparison: five commits per command.
    let before = store.stats();
    for i in 0..N {
        run_one_separately(&mut store, &format!("s{i}"), &body);
    }
    assert_eq!((store.stats() - before).commits, 5 * N);
    assert!(store.verify_audit().unwrap().ok);
}

#[test]
fn a_command_received_running_has_both_audit_records_and_recovers_like_a_started_one() {
    let dir = TempDir::new("cost-recover");
    let mut store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    let body = frame("c1", 10);
    assert_eq!(store.receive_running(&cmd("c1", Some("k1"), &body)).unwrap(), (Receipt::New, 1));
    let events: Vec<String> = store.audit_records(None).unwrap().into_iter().map(|r| r.event).collect();
    assert_eq!(events, ["received", "started"]);
    // A repeat is known and not started.
    let (receipt, starts) = store.receive_running(&cmd("c2", Some("k1"), &body)).unwrap();
    assert!(matches!(receipt, Receipt::Known(e) if e.state == State::Running && e.command_id == "c1"));
    assert_eq!(starts, 0);
    drop(store);
    // After a stop it is found running without a server session: never sent.
    let store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    let interrupted = store.interrupted().unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!((interrupted[0].attempts, interrupted[0].server_session.as_deref()), (1, None));
}

#[test]
fn held_acknowledgements_are_written_by_the_next_change_or_on_drop_and_only_lost_to_a_crash() {
    let dir = TempDir::new("cost-acks");
    let body = frame("a", 10);
    {
        let mut store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
        run_one(&mut store, "a1", &body);
        assert!(store.pending_acks_since().is_some());
        // The next receipt carries it.
        run_one(&mut store, "a2", &body);
        assert!(store.get("a1").unwrap().unwrap().acknowledged);
        assert!(store.pending_acks_since().is_none(), "the read wrote a2's too");
        run_one(&mut store, "a3", &body);
    }
    // Dropped with a3's ack held: written on drop.
    let mut store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    assert!(store.unacknowledged().unwrap().is_empty());
    // A crash (no drop) loses a held ack: the answer is sent again after the restart.
    run_one(&mut store, "a4", &body);
    std::mem::forget(store);
    let store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    let again: Vec<String> = store.unacknowledged().unwrap().into_iter().map(|a| a.command_id).collect();
    assert_eq!(again, ["a4"]);
}

#[test]
fn a_held_ack_of_a_retryable_failure_lets_the_same_command_run_again() {
    let dir = TempDir::new("cost-retry");
    let mut store = Store::open(&dir.db(), StoreConfig::default()).unwrap();
    let body = frame("r1", 10);
    store.receive_running(&cmd("r1", Some("k"), &body)).unwrap();
    let mut failed = answered(r#"{"type":"execution_error"}"#);
    failed.state = State::Failed;
    failed.retryable = true;
    store.finish("r1", &failed).unwrap();
    // Before the ack: a re-delivery gets the stored answer.
    assert!(matches!(store.receive(&cmd("r1", Some("k"), &body)).unwrap(), Receipt::Known(_)));
    store.acknowledge_later("r1").unwrap();
    // The ack is written in the receipt's transaction, before it looks: it runs again.
    assert_eq!(store.receive_running(&cmd("r1", Some("k"), &body)).unwrap(), (Receipt::New, 2));
}

#[test]
fn the_wal_is_checkpointed_by_the_background_thread_not_the_writer() {
    let dir = TempDir::new("cost-wal");
    let cfg = StoreConfig { checkpoint_pages: 16, ..StoreConfig::default() };
    let mut store = Store::open(&dir.db(), cfg).unwrap();
    let body = frame("w", 300);
    let start = store.stats();
    let mut i = 0;
    // Past the checkpoint point, well before the writer would do it itself (8 x 16 frames).
    while (store.stats() - start).wal_frames < 24 {
        run_one(&mut store, &format!("w{i}"), &body);
        i += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().checkpoints_background == 0 {
        assert!(Instant::now() < deadline, "no background checkpoint: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let StoreStats { checkpoints_inline, .. } = store.stats();
    assert_eq!(checkpoints_inline, 0);
    let wal = {
        let mut p = dir.db().into_os_string();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    assert!(wal.exists());
    // Closing: the checkpoint thread ends first, so the store's connection is the last one
    // and removes the WAL, as before.
    drop(store);
    assert!(!wal.exists(), "the WAL is left behind after close");
}
