//! Shared helpers: a temporary directory, command and answer builders.

use std::path::{Path, PathBuf};

use queue::{Finish, NewCommand, State, Store, StoreConfig};

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("queue-test-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command frame of about `size` bytes (JSON).
pub fn frame(id: &str, size: usize) -> String {
    format!(r#"{{"type":"query","commandId":"{id}","pad":"{}"}}"#, "x".repeat(size))
}

/// A command with an optional idempotency key; the frame is built by the caller.
pub fn cmd<'a>(id: &'a str, key: Option<&'a str>, frame_json: &'a str) -> NewCommand<'a> {
    NewCommand {
        command_id: id,
        execution_id: Some("exec-1"),
        activity_id: Some("act-1"),
        idempotency_key: key,
        connection: Some("erp"),
        query: "SELECT name FROM customers WHERE id = 42",
        frame_json,
        expires_at_ms: None,
        received_at_ms: queue::now_ms(),
    }
}

/// A successful answer.
pub fn answered(answer_json: &str) -> Finish<'_> {
    Finish {
        state: State::Answered,
        answer_json,
        code: Some("ok"),
        retryable: false,
        row_count: Some(3),
        result_bytes: Some(answer_json.len() as u64),
        buffer_key: None,
        sha256: None,
        duration_ms: 7,
    }
}

/// A failure.
pub fn failed(answer_json: &str, retryable: bool) -> Finish<'_> {
    Finish {
        state: State::Failed,
        answer_json,
        code: Some(if retryable { "DB_CONNECTION_FAILED" } else { "QUERY_SYNTAX_ERROR" }),
        retryable,
        row_count: None,
        result_bytes: None,
        buffer_key: None,
        sha256: None,
        duration_ms: 2,
    }
}

/// An answer frame of about `size` bytes.
pub fn answer(id: &str, size: usize) -> String {
    format!(r#"{{"type":"result","commandId":"{id}","rows":"{}"}}"#, "r".repeat(size))
}

pub fn open(path: &Path) -> Store {
    Store::open(path, StoreConfig::default()).expect("open store")
}

/// `PRAGMA integrity_check` through a plain connection.
pub fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open for integrity_check");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check")
}
