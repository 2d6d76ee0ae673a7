//! Tampering with the audit log through plain SQLite is found, and the report names the first
//! bad record.

use std::path::Path;

use queue::{AuditEvent, AuditReport, Store};

use crate::support::{TempDir, answered, cmd, open};

/// A store with 8 audit records (seq 1..=8), closed.
fn chain(dir: &TempDir) {
    let mut store = open(&dir.db());
    for id in ["a", "b"] {
        store.receive(&cmd(id, None, "{}")).unwrap();
        store.start(id).unwrap();
        store.finish(id, &answered("{}")).unwrap();
    }
    store
        .audit_note(&AuditEvent { event: "agent_stopped", detail: Some("signal"), ..Default::default() })
        .unwrap();
    store.audit_note(&AuditEvent { event: "agent_started", ..Default::default() }).unwrap();
    assert_eq!(store.audit_records(None).unwrap().len(), 8);
    let report = store.verify_audit().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records, report.head_seq), (8, Some(8)));
}

fn tamper(path: &Path, sql: &str) -> AuditReport {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    let report = Store::open_read_only(path).unwrap().verify_audit().unwrap();
    assert!(!report.ok, "{sql}: tampering not found");
    assert!(report.why.is_some());
    report
}

#[test]
fn an_edited_field_is_found() {
    let dir = TempDir::new("edit");
    chain(&dir);
    let report = tamper(&dir.db(), "UPDATE audit SET outcome = 'QUERY_TIMEOUT' WHERE seq = 3");
    assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
    assert!(report.why.unwrap().contains("changed"));
}

#[test]
fn an_edited_timestamp_or_row_count_is_found() {
    let dir = TempDir::new("edit-ts");
    chain(&dir);
    let report = tamper(&dir.db(), "UPDATE audit SET ts = ts + 1 WHERE seq = 6");
    assert_eq!(report.first_bad_seq, Some(6));
    let dir = TempDir::new("edit-rows");
    chain(&dir);
    let report = tamper(&dir.db(), "UPDATE audit SET row_count = 0 WHERE seq = 3");
    assert_eq!(report.first_bad_seq, Some(3));
}

#[test]
fn a_record_deleted_in_the_middle_is_found() {
    let dir = TempDir::new("delete");
    chain(&dir);
    let report = tamper(&dir.db(), "DELETE FROM audit WHERE seq = 4");
    assert_eq!(report.first_bad_seq, Some(4), "{report:?}");
    assert!(report.why.unwrap().contains("missing"));
}

#[test]
fn a_deleted_record_with_renumbered_successors_is_found() {
    let dir = TempDir::new("renumber");
    chain(&dir);
    let report = tamper(
        &dir.db(),
        "DELETE FROM audit WHERE seq = 4; UPDATE audit SET seq = seq - 1 WHERE seq > 4; \
         UPDATE meta SET value = '7' WHERE key = 'audit_head_seq';",
    );
    assert_eq!(report.first_bad_seq, Some(4), "{report:?}");
}

#[test]
fn a_deleted_tail_is_found() {
    let dir = TempDir::new("tail");
    chain(&dir);
    let report = tamper(&dir.db(), "DELETE FROM audit WHERE seq >= 7");
    assert_eq!(report.first_bad_seq, Some(7), "{report:?}");
    assert!(report.why.unwrap().contains("cut off"));
}

#[test]
fn a_deleted_head_is_found() {
    let dir = TempDir::new("head");
    chain(&dir);
    let report = tamper(&dir.db(), "DELETE FROM meta WHERE key LIKE 'audit_head%'");
    assert_eq!(report.first_bad_seq, None);
    assert!(report.why.unwrap().contains("head"));
}

#[test]
fn a_reordered_pair_is_found() {
    let dir = TempDir::new("swap");
    chain(&dir);
    let report = tamper(
        &dir.db(),
        "UPDATE audit SET seq = -5 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 6; \
         UPDATE audit SET seq = 6 WHERE seq = -5;",
    );
    assert_eq!(report.first_bad_seq, Some(5), "{report:?}");
}

#[test]
fn a_record_appended_behind_the_store_is_found() {
    let dir = TempDir::new("append");
    chain(&dir);
    let report = tamper(
        &dir.db(),
        "INSERT INTO audit (seq, ts, event, prev_hash, hash) SELECT 9, ts, 'executed', hash, hash FROM audit WHERE seq = 8",
    );
    assert_eq!(report.first_bad_seq, Some(9), "{report:?}");
}

#[test]
fn the_chain_continues_across_restarts() {
    let dir = TempDir::new("continue");
    chain(&dir);
    let mut store = open(&dir.db());
    store.receive(&cmd("c", None, "{}")).unwrap();
    let report = store.verify_audit().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 9);
}
