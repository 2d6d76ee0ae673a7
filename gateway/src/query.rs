//! What a caller of [`crate::Gateway::query`] sends and gets back.

use std::time::Duration;

use protocol::{ColumnMeta, ErrorBody, ErrorCode};
use serde::Deserialize;

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
    /// The reassembled, decompressed NDJSON stream, byte for byte.
    pub raw: Vec<u8>,
}

/// A finished query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// Id of the command sent to the agent.
    pub command_id: String,
    /// Result columns.
    pub columns: Vec<ColumnMeta>,
    /// Rows, cells in column order.
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
    /// The JSON the admin API and `query --json` print (without the raw stream).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "commandId": self.command_id,
            "columns": self.columns,
            "rows": self.rows,
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

#[derive(Deserialize)]
struct HeaderLine {
    columns: Vec<ColumnMeta>,
}

/// Splits a result stream: first line `{"columns":[...]}`, then one JSON array per row.
pub(crate) fn parse_ndjson(raw: &[u8]) -> Result<(Vec<ColumnMeta>, Vec<Vec<serde_json::Value>>), QueryError> {
    let mut lines = raw.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let first = lines.next().ok_or_else(|| QueryError::Integrity("empty result stream".into()))?;
    let header: HeaderLine = serde_json::from_slice(first)
        .map_err(|e| QueryError::Integrity(format!("first line is not a columns header: {e}")))?;
    let rows = lines
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_slice::<Vec<serde_json::Value>>(line)
                .map_err(|e| QueryError::Integrity(format!("row {} is not a JSON array: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((header.columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_roundtrip() {
        let raw = b"{\"columns\":[{\"name\":\"a\",\"type\":\"integer\",\"dbType\":\"INT\"}]}\n[1]\n[2]\n";
        let (cols, rows) = parse_ndjson(raw).unwrap();
        assert_eq!(cols.len(), 1);
        assert_eq!(rows, vec![vec![serde_json::json!(1)], vec![serde_json::json!(2)]]);
        assert!(matches!(parse_ndjson(b"[1]\n"), Err(QueryError::Integrity(_))));
        assert!(matches!(parse_ndjson(b"{\"columns\":[]}\n{}\n"), Err(QueryError::Integrity(_))));
    }
}
