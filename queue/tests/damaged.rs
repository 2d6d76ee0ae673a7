//! Arbitrary bytes written into stored columns behind the store's back never panic a read:
//! a value that cannot be what the column holds is `QueueError::Corrupt`; `verify_audit`
//! reports a broken chain.

use proptest::prelude::*;
use queue::{QueueError, Store};
use rusqlite::types::Value;

use crate::support::{TempDir, answered, cmd, frame, open};

/// A store with one queued, one running, one unacknowledged and one acknowledged command.
fn fixture(dir: &TempDir) -> Store {
    let mut store = open(&dir.db());
    for id in ["q", "r", "u", "a"] {
        store.receive(&cmd(id, Some(id), &frame(id, 10))).unwrap();
    }
    for id in ["r", "u", "a"] {
        store.start(id).unwrap();
    }
    for id in ["u", "a"] {
        store.finish(id, &answered(r#"{"type":"result"}"#)).unwrap();
    }
    store.acknowledge("a").unwrap();
    store
}

/// Every read; each is Ok or Corrupt, never another error, never a panic.
fn read_all(store: &Store) -> Vec<Result<(), QueueError>> {
    vec![
        store.get("q").map(drop),
        store.get("r").map(drop),
        store.get("u").map(drop),
        store.queued(10).map(drop),
        store.interrupted().map(drop),
        store.unacknowledged().map(drop),
        store.counts().map(drop),
        store.audit_records(None).map(drop),
    ]
}

/// The stored value: the bytes as TEXT (may be invalid UTF-8), as a BLOB, or as a number.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Value::Text(String::from_utf8_lossy(&b).into())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Blob),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        Just(Value::Null),
        // Invalid UTF-8 stored as TEXT.
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|mut b| {
            b.push(0xff);
            Value::Blob(b)
        }),
    ]
}

/// Writes `v` into one cell with a plain connection; returns the cell's value before and after
/// (Err when a constraint refuses it, e.g. NULL in a NOT NULL column).
fn write(
    dir: &TempDir,
    table: &str,
    column: &str,
    key: &str,
    v: &Value,
    as_text: bool,
) -> rusqlite::Result<(Value, Value)> {
    let conn = rusqlite::Connection::open(dir.db())?;
    let key_col = if table == "commands" { "command_id" } else { "seq" };
    let read = format!("SELECT {column} FROM {table} WHERE {key_col} = ?1");
    let before: Value = conn.query_row(&read, [key], |r| r.get(0))?;
    let set = if as_text { "CAST(?1 AS TEXT)" } else { "?1" };
    conn.execute(
        &format!("UPDATE {table} SET {column} = {set} WHERE {key_col} = ?2"),
        rusqlite::params![v, key],
    )?;
    let after: Value = conn.query_row(&read, [key], |r| r.get(0))?;
    Ok((before, after))
}

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_command_columns_are_corrupt_never_a_panic(
        column in proptest::sample::select(COMMAND_COLUMNS),
        id in proptest::sample::select(&["q", "r", "u", "a"][..]),
        v in value(),
        as_text in any::<bool>(),
    ) {
        let dir = TempDir::new("damaged");
        let store = fixture(&dir);
        // NOT NULL columns refuse NULL: skip those writes.
        let written = write(&dir, "commands", column, id, &v, as_text);
        prop_assume!(written.is_ok());
        for r in read_all(&store) {
            match r {
                Ok(()) | Err(QueueError::Corrupt(_)) => {}
                Err(other) => prop_assert!(false, "{column}: {other:?}"),
            }
        }
        let report = store.verify_audit().unwrap();
        prop_assert!(report.ok, "the commands table is not part of the chain");
        // Bytes that are not UTF-8 in a text column are always caught.
        if matches!(&v, Value::Blob(b) if std::str::from_utf8(b).is_err()) && ["answer_json", "frame_json", "state"].contains(&column) {
            prop_assert!(matches!(store.get(id), Err(QueueError::Corrupt(_))));
        }
        // An answer that is not JSON is caught before it would be sent.
        if column == "answer_json"
            && (id == "u" || id == "a")
            && let Value::Text(t) = &v
            && serde_json::from_str::<serde_json::Value>(t).is_err()
        {
            prop_assert!(matches!(store.get(id), Err(QueueError::Corrupt(_))));
        }
    }

    #[test]
    fn damaged_audit_columns_are_corrupt_or_a_broken_chain(
        column in proptest::sample::select(AUDIT_COLUMNS),
        seq in 1i64..=8,
        v in value(),
        as_text in any::<bool>(),
    ) {
        let dir = TempDir::new("damaged-audit");
        let store = fixture(&dir);
        let written = write(&dir, "audit", column, &seq.to_string(), &v, as_text);
        prop_assume!(written.is_ok());
        let (before, after) = written.unwrap();
        match store.audit_records(None) {
            Ok(_) | Err(QueueError::Corrupt(_)) => {}
            Err(other) => prop_assert!(false, "{column}: {other:?}"),
        }
        let report = store.verify_audit().unwrap();
        prop_assert_eq!(report.ok, before == after, "{:?}", report);
        if !report.ok {
            prop_assert_eq!(report.first_bad_seq, Some(seq), "{:?}", report);
        }
    }
}

#[test]
fn an_unknown_state_is_corrupt() {
    let dir = TempDir::new("state");
    let store = fixture(&dir);
    write(&dir, "commands", "state", "q", &Value::Text("exploded".into()), false).unwrap();
    let err = store.get("q").unwrap_err();
    assert!(matches!(err, QueueError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("exploded"), "the stored value is not echoed");
    assert!(store.queued(10).unwrap().is_empty(), "no longer selected as received");
    assert!(matches!(store.counts(), Err(QueueError::Corrupt(_))));
}
