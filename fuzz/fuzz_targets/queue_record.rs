//! Arbitrary bytes written into the queue database's columns behind the store's back (a
//! damaged or tampered file): every read of `queue::Store` answers `Ok` or an error, never a
//! panic, and `verify_audit` reports instead of failing.
//!
//! Input: byte 0 picks the table and column, byte 1 the row and how the value is stored
//! (TEXT, BLOB, INTEGER, REAL, NULL), the rest is the value.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use queue::{Finish, NewCommand, State, Store, StoreConfig};
use rusqlite::types::Value;

const COMMAND_COLUMNS: &[&str] = &[
    "answer_json",
    "frame_json",
    "state",
    "attempts",
    "retryable",
    "row_count",
    "execution_id",
    "idem_key",
    "received_at",
    "acked_at",
];
const AUDIT_COLUMNS: &[&str] = &["event", "command_id", "ts", "row_count", "hash", "prev_hash", "outcome"];
const IDS: &[&str] = &["q", "r", "u", "a"];

/// A pristine queue database with one queued, one running, one unacknowledged and one
/// acknowledged command; every input starts from a copy of it.
fn pristine() -> &'static PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mc-fuzz-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pristine.db");
        let mut store = Store::open(&path, StoreConfig::default()).unwrap();
        for id in IDS {
            let frame = format!(r#"{{"type":"command","commandId":"{id}"}}"#);
            store
                .receive(&NewCommand {
                    command_id: id,
                    execution_id: Some("exec-1"),
                    activity_id: None,
                    idempotency_key: Some(id),
                    connection: Some("erp"),
                    query: "SELECT 1",
                    frame_json: &frame,
                    expires_at_ms: None,
                    received_at_ms: queue::now_ms(),
                })
                .unwrap();
        }
        for id in ["r", "u", "a"] {
            store.start(id).unwrap();
        }
        for id in ["u", "a"] {
            let answer = Finish {
                state: State::Answered,
                answer_json: r#"{"type":"execution_result"}"#,
                code: Some("ok"),
                retryable: false,
                row_count: Some(1),
                result_bytes: Some(10),
                buffer_key: None,
                sha256: None,
                duration_ms: 1,
            };
            store.finish(id, &answer).unwrap();
        }
        store.acknowledge("a").unwrap();
        drop(store);
        // One self-contained file: fold the WAL in.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;").unwrap();
        path
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (pick, how, bytes) = (data[0] as usize, data[1] as usize, &data[2..]);
    let columns = COMMAND_COLUMNS.len() + AUDIT_COLUMNS.len();
    let column_index = pick % columns;
    let value = match how % 5 {
        0 => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        1 => Value::Blob(bytes.to_vec()),
        2 => Value::Integer(i64::from_le_bytes(bytes.iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().unwrap())),
        3 => Value::Real(f64::from_le_bytes(bytes.iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().unwrap())),
        _ => Value::Null,
    };
    let dir = std::env::temp_dir().join(format!("mc-fuzz-queue-{}", std::process::id()));
    let path = dir.join("case.db");
    let _ = std::fs::remove_file(dir.join("case.db-wal"));
    let _ = std::fs::remove_file(dir.join("case.db-shm"));
    std::fs::copy(pristine(), &path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let written = if column_index < COMMAND_COLUMNS.len() {
            let column = COMMAND_COLUMNS[column_index];
            let id = IDS[(how / 5) % IDS.len()];
            conn.execute(&format!("UPDATE commands SET {column} = ?1 WHERE command_id = ?2"), rusqlite::params![value, id])
        } else {
            let column = AUDIT_COLUMNS[column_index - COMMAND_COLUMNS.len()];
            let seq = 1 + ((how / 5) % 8) as i64;
            conn.execute(&format!("UPDATE audit SET {column} = ?1 WHERE seq = ?2"), rusqlite::params![value, seq])
        };
        // A constraint may refuse the value (NULL in NOT NULL): nothing to read then.
        if written.is_err() {
            return;
        }
    }
    // Opening may refuse a damaged file; it must not panic.
    let Ok(mut store) = Store::open(&path, StoreConfig::default()) else { return };
    for id in IDS {
        let _ = store.get(id);
    }
    let _ = store.queued(10);
    let _ = store.interrupted();
    let _ = store.unacknowledged();
    let _ = store.counts();
    let _ = store.usage();
    let _ = store.audit_records(None);
    let _ = store.verify_audit();
    let _ = store.expire_due(i64::MAX);
    let _ = store.purge();
    let _ = store.integrity_check();
});
