//! What a caller of [`crate::Gateway::query`] sends and gets back.

use std::time::Duration;

use protocol::{ColumnMeta, ErrorBody, ErrorCode};

use crate::spool::Spool;

/// A read-only SQL command for one connector.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    /// SQL text with positional placeholders.
    pub sql: String,
    /// Bound parameters.
    pub params: Vec<serde_json::Value>,
    /// Query timeout the agent enforces; its own default when `None`.
    pub timeout_ms: Option<u64>,
    /// Database connection name on the agent; its first one when `None`.
    pub connection: Option<String>,
    /// How long the command may wait in the offline queue (and until the agent must not run
    /// it any more); [`crate::GatewayConfig::default_command_ttl`] when `None`.
    pub ttl: Option<Duration>,
    /// How long [`crate::Gateway::query`] blocks for the result.
    pub wait: Duration,
    /// Idempotency key; a fresh one per request when `None`.
    pub idempotency_key: Option<String>,
}

impl QueryRequest {
    /// A request with no parameters that waits up to 30 s.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
            timeout_ms: None,
            connection: None,
            ttl: None,
            wait: Duration::from_secs(30),
            idempotency_key: None,
        }
    }
}

/// Where a buffered (chunk-uploaded) result came from.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferedInfo {
    /// `<connector>:<commandId>`.
    pub buffer_key: String,
    /// Chunks received.
    pub chunk_count: u32,
    /// Length of the reassembled stream.
    pub byte_count: u64,
    /// Lower-case hex SHA-256 of the reassembled stream (checked).
    pub sha256: String,
    /// The reassembled, decompressed NDJSON stream, byte for byte. Filled by
    /// [`crate::PendingQuery::wait`] (the Rust API); empty where the rows are streamed from
    /// [`BufferedInfo::spool`] (the admin API).
    pub raw: Vec<u8>,
    /// The verified stream, spooled to disk.
    pub spool: Spool,
}

/// A finished query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// Id of the command sent to the agent.
    pub command_id: String,
    /// Result columns.
    pub columns: Vec<ColumnMeta>,
    /// Rows, cells in column order. For a buffered result these are read from its spool by
    /// [`crate::PendingQuery::wait`]; [`crate::PendingQuery::wait_spooled`] leaves them empty.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Row count reported by the agent.
    pub row_count: u64,
    /// Execution time reported by the agent.
    pub duration_ms: u64,
    /// From writing the command to the agent's session to receiving the result.
    pub round_trip: Duration,
    /// Set when the rows came as uploaded chunks.
    pub buffered: Option<BufferedInfo>,
}

impl QueryOutcome {
    /// Reads the rows and the raw stream of a buffered result from its spool (when they are
    /// not read yet).
    pub fn load_rows(&mut self) -> Result<(), QueryError> {
        if let Some(b) = &mut self.buffered
            && b.raw.is_empty()
        {
            let err = |e: std::io::Error| QueryError::Integrity(format!("{}: spool: {e}", b.buffer_key));
            self.rows = b.spool.rows().map_err(err)?;
            b.raw = b.spool.read_all().map_err(err)?;
        }
        Ok(())
    }

    /// Writes [`QueryOutcome::to_json`] to `out`, the rows of a buffered result streamed from
    /// its spool (never held as values); `head` is called first with the body's length, to
    /// write a `Content-Length`.
    pub(crate) fn write_json<W: std::io::Write>(
        &self,
        out: &mut W,
        head: impl FnOnce(&mut W, u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.write_json_within(out, b"", b"", head)
    }

    /// Like [`QueryOutcome::write_json`], with the outcome's JSON between `prefix` and `suffix`
    /// (a document that embeds it); the length given to `head` counts them.
    pub(crate) fn write_json_within<W: std::io::Write>(
        &self,
        out: &mut W,
        prefix: &[u8],
        suffix: &[u8],
        head: impl FnOnce(&mut W, u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let spool = self.buffered.as_ref().map(|b| &b.spool).filter(|_| self.rows.is_empty());
        let mut rest = self.json_with(serde_json::Value::Null);
        if let Some(map) = rest.as_object_mut() {
            map.remove("rows");
        }
        let rest = serde_json::to_vec(&rest).map_err(std::io::Error::other)?;
        let around = (prefix.len() + suffix.len()) as u64;
        match spool {
            Some(spool) => {
                let rows_len = spool.rows_json_len(spool.row_bytes()?);
                // The other fields without their `}` + `,"rows":` + rows + `}`: `rows` last, as
                // in `to_json` (sorted keys), so a reader has the columns before the rows.
                head(out, around + rest.len() as u64 - 1 + 8 + rows_len + 1)?;
                out.write_all(prefix)?;
                out.write_all(&rest[..rest.len() - 1])?;
                out.write_all(b",\"rows\":")?;
                spool.write_rows_json(out)?;
                out.write_all(b"}")?;
            }
            None => {
                let body = serde_json::to_vec(&self.to_json()).map_err(std::io::Error::other)?;
                head(out, around + body.len() as u64)?;
                out.write_all(prefix)?;
                out.write_all(&body)?;
            }
        }
        out.write_all(suffix)?;
        out.flush()
    }

    /// The JSON the admin API and `query --json` print (without the raw stream); the rows of
    /// a buffered result are read from its spool if they are not loaded.
    pub fn to_json(&self) -> serde_json::Value {
        let loaded;
        let rows = match &self.buffered {
            Some(b) if self.rows.is_empty() && b.spool.row_count() > 0 => {
                loaded = b.spool.rows().unwrap_or_default();
                &loaded
            }
            _ => &self.rows,
        };
        self.json_with(serde_json::to_value(rows).unwrap_or_default())
    }

    fn json_with(&self, rows: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "commandId": self.command_id,
            "columns": self.columns,
            "rows": rows,
            "rowCount": self.row_count,
            "durationMs": self.duration_ms,
            "roundTripMs": self.round_trip.as_secs_f64() * 1000.0,
            "buffered": self.buffered.as_ref().map(|b| serde_json::json!({
                "bufferKey": b.buffer_key,
                "chunkCount": b.chunk_count,
                "byteCount": b.byte_count,
                "sha256": b.sha256,
            })),
        })
    }
}

/// Why a query produced no rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The agent answered with `execution_error`, or the gateway gave up on the command
    /// (`COMMAND_EXPIRED`, `CONNECTOR_OFFLINE` at shutdown).
    #[error("{}: {}", .0.code, .0.message)]
    Remote(ErrorBody),
    /// No result within [`QueryRequest::wait`].
    #[error("no result within the wait time")]
    Timeout,
    /// No key was ever issued for this connector name.
    #[error("unknown connector `{0}`")]
    UnknownConnector(String),
    /// A buffered result did not match its announced size or SHA-256, or is not valid NDJSON.
    #[error("result integrity: {0}")]
    Integrity(String),
}

impl QueryError {
    /// The `{code, message, retryable}` the admin API answers with. `UNKNOWN_CONNECTOR` is the
    /// only code that is not a protocol [`ErrorCode`].
    pub fn to_json(&self) -> serde_json::Value {
        let (code, message, retryable) = match self {
            Self::Remote(body) => (body.code.as_str(), body.message.clone(), body.retryable),
            Self::Timeout => (ErrorCode::QueryTimeout.as_str(), self.to_string(), true),
            Self::UnknownConnector(_) => ("UNKNOWN_CONNECTOR", self.to_string(), false),
            Self::Integrity(_) => (ErrorCode::InternalError.as_str(), self.to_string(), true),
        };
        serde_json::json!({ "code": code, "message": message, "retryable": retryable })
    }
}
