//! The crate's single error type.

use std::io;

/// Error returned by a [`RowSink`](crate::RowSink) to abort the running query,
/// e.g. because the upload of a chunk failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Everything that can go wrong in a driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The database could not be opened (missing file, bad settings, unreadable file...).
    #[error("open failed: {0}")]
    Open(String),
    /// No pooled connection became free within the acquire timeout.
    #[error("connection pool exhausted")]
    PoolExhausted,
    /// The database cannot be reached right now: no connection could be made (connection
    /// refused, unknown host, TLS handshake, authentication at connect, a pool that waited out
    /// its acquire timeout without one connection succeeding). Distinct from a failing query:
    /// the same request may succeed once the database is back; [`Database::check_health`]
    /// tells when. The message names the cause and never holds a secret.
    ///
    /// [`Database::check_health`]: crate::Database::check_health
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement is not a single read-only query; the reason names what was found.
    #[error("write rejected: {0}")]
    WriteRejected(String),
    /// The database reported an error while preparing or running a statement.
    #[error("query failed: {0}")]
    Query(String),
    /// A query parameter has an unsupported type, or the parameter count is wrong.
    #[error("bad parameter: {0}")]
    Bind(String),
    /// The query ran past its deadline and was interrupted.
    #[error("query timed out")]
    Timeout,
    /// The query was cancelled through its [`CancelToken`](crate::CancelToken).
    #[error("query cancelled")]
    Cancelled,
    /// The row sink refused a batch and aborted the query.
    #[error("row sink failed: {0}")]
    Sink(#[from] SinkError),
    /// A database type name that no driver handles.
    #[error("unsupported database type: {0}")]
    UnsupportedKind(String),
    /// A file-system operation failed (fixture creation).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl DriverError {
    /// Whether the same request may succeed if retried later unchanged.
    ///
    /// True for [`PoolExhausted`](Self::PoolExhausted), [`Timeout`](Self::Timeout) and
    /// [`Unavailable`](Self::Unavailable): they depend on load or on the database being up, not
    /// on the request itself.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::PoolExhausted | Self::Timeout | Self::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<DriverError>() <= 32);
    }

    #[test]
    fn retryable_only_for_load_dependent_errors() {
        assert!(DriverError::PoolExhausted.is_retryable());
        assert!(DriverError::Timeout.is_retryable());
        assert!(DriverError::Unavailable("refused".into()).is_retryable());
        assert!(!DriverError::Open("bad setting".into()).is_retryable());
        assert!(!DriverError::Cancelled.is_retryable());
        assert!(!DriverError::WriteRejected("x".into()).is_retryable());
        assert!(!DriverError::Sink(SinkError("x".into())).is_retryable());
    }
}
