//! The crate's one error type.

use std::path::PathBuf;

use crate::State;

/// Everything the store can fail with. Messages never contain a frame, a query or an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The disk (or the file-size limit) is full: SQLite said `SQLITE_FULL` or the OS `ENOSPC`.
    /// Nothing was half-written; the transaction was rolled back.
    #[error("queue database: disk full ({detail})")]
    DiskFull {
        /// What failed.
        detail: String,
    },
    /// Over the size cap (`offlineQueueMaxMB`) after purging every finished and acknowledged
    /// answer: only unfinished work (or the audit log) is left. The caller answers `AGENT_BUSY`.
    #[error("queue is full: {used_bytes} of {cap_bytes} bytes hold work that cannot be purged")]
    Full {
        /// Bytes the database holds now (pages in use).
        used_bytes: u64,
        /// The cap.
        cap_bytes: u64,
    },
    /// A stored value cannot be read back (wrong type, not UTF-8, not JSON, unknown state), or
    /// `quick_check` failed on open.
    #[error("queue database is corrupt: {0}")]
    Corrupt(String),
    /// No command with this id.
    #[error("command {0} is not in the queue")]
    NotFound(String),
    /// A state change that the state machine does not allow.
    #[error("command {command_id}: cannot go from {from} to {to}")]
    Transition {
        /// The command.
        command_id: String,
        /// Its state now.
        from: State,
        /// The state asked for.
        to: State,
    },
    /// The database was written by a newer build (its `user_version` is higher than ours).
    #[error("queue database schema version {found} is newer than this build's {supported}")]
    TooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A change through a store opened with [`crate::Store::open_read_only`].
    #[error("queue database is open read-only")]
    ReadOnly,
    /// The file or its directory cannot be created, opened or inspected.
    #[error("queue database {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other SQLite failure.
    #[error("queue database: {0}")]
    Sqlite(rusqlite::Error),
}

/// `ENOSPC` on Linux, macOS and the BSDs; `ERROR_DISK_FULL` / `ERROR_HANDLE_DISK_FULL` on Windows.
fn is_enospc(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(28))
        || (cfg!(windows) && matches!(error.raw_os_error(), Some(39 | 112)))
}

impl QueueError {
    /// An I/O failure on `path`, telling a full disk apart.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_enospc(&source) {
            return Self::DiskFull { detail: format!("{}: {source}", path.display()) };
        }
        Self::Io { path, source }
    }

    /// Whether this is [`QueueError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::DiskFull { .. })
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => return Self::DiskFull { detail: error.to_string() },
            Some(ErrorCode::ReadOnly) => return Self::ReadOnly,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                return Self::Corrupt(error.to_string());
            }
            _ => {}
        }
        match error {
            // A stored value of the wrong type or encoding: the file was changed behind us.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => Self::Corrupt(error.to_string()),
            other => Self::Sqlite(other),
        }
    }
}
