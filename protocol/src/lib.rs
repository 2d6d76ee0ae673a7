//! The wire contract between the agent and the cloud gateway (see `docs/PROTOCOL.md`).
//!
//! Every WebSocket frame is one JSON object with a `"type"` field. [`Outbound`] frames go from
//! the agent to the cloud, [`Inbound`] frames from the cloud to the agent. Unknown fields are
//! ignored (forward compatibility); a missing required field, a wrong type, an unknown `type` or
//! a frame that is not JSON is a [`DecodeError`] carrying the [`ErrorCode`] to answer with.
//!
//! Large results do not travel over the WebSocket: they are POSTed as signed, compressed chunks
//! to the upload URL handed out in [`Connected`]; [`chunk_signature`] is the MAC both sides use,
//! [`encoding`] the compressions the grant negotiates (`lz4`, `deflate`).
//!
//! This crate is small on purpose: the agent and the reference gateway both depend on it, and the
//! gateway builds nothing else of the agent (no drivers, vault or ODBC). [`schema`] holds the
//! schema types `schema_discovery` carries; [`wsio`] the polled WebSocket both ends drive;
//! [`control`] the local control API the CLI and the desktop app speak to an agent; [`term`]
//! the terminal text both command lines print (escaping, display widths, one table renderer).

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub mod control;
pub mod encoding;
pub mod schema;
pub mod term;
pub mod wsio;

pub use encoding::ContentEncoding;
pub use schema::{ColumnMeta, DatabaseSchema};

/// Version of this wire contract, sent in `auth`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest WebSocket frame either side accepts; larger frames get `PAYLOAD_TOO_LARGE`.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Largest chunk body the upload endpoint accepts (compressed bytes).
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Path of the WebSocket endpoint on the gateway.
pub const WS_PATH: &str = "/ws";

/// HTTP headers of a chunk upload (`POST <upload.url>`).
pub mod headers {
    /// The `connectionId` from `connected`.
    pub const CONNECTION: &str = "x-mc-connection";
    /// The `commandId` whose result this chunk belongs to.
    pub const COMMAND: &str = "x-mc-command";
    /// Sequence number of the chunk, from 0 without gaps.
    pub const SEQ: &str = "x-mc-seq";
    /// `1` on the last chunk of a result, `0` otherwise.
    pub const FINAL: &str = "x-mc-final";
    /// Lower-case hex HMAC-SHA256, see [`super::chunk_signature`].
    pub const SIGNATURE: &str = "x-mc-signature";
    /// The session token of the HTTPS long-poll transport (docs/PROTOCOL.md).
    pub const LP_TOKEN: &str = "x-mc-lp-token";
    /// Long-poll `send`: the request's sequence number, from 1 without gaps.
    pub const LP_SEQ: &str = "x-mc-lp-seq";
    /// Long-poll `recv`: the last gateway frame sequence number received (0: none).
    pub const LP_ACK: &str = "x-mc-lp-ack";
    /// Long-poll `recv`: how long the gateway may hold the request, milliseconds.
    pub const LP_WAIT: &str = "x-mc-lp-wait-ms";
}

/// Path prefix of the HTTPS long-poll transport: `/lp/open`, `/lp/send`, `/lp/recv`, `/lp/close`.
pub const LP_PATH: &str = "/lp";

// ---------------------------------------------------------------------------------------------
// Error codes

/// Every error code that crosses the wire: the spec's Appendix C codes, `WRITE_KEYWORD_DETECTED`
/// (spec §3.5.2), and this implementation's extensions, all listed in `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// API key invalid, unknown or revoked.
    AuthFailed,
    /// The API key is already connected from another agent.
    DuplicateConnection,
    /// The command contained a write operation.
    WriteOperationRejected,
    /// The query text does not parse as SQL of the target database's dialect; it was not run.
    SqlSyntaxError,
    /// The keyword pre-filter found a write keyword.
    WriteKeywordDetected,
    /// The command referenced a private or unapproved table or column.
    SchemaAccessDenied,
    /// The query ran longer than its timeout.
    QueryTimeout,
    /// No database connection became free within the acquire timeout.
    ConnectionPoolExhausted,
    /// The command's TTL ran out before it could run.
    CommandExpired,
    /// The local credential vault cannot be decrypted on this machine.
    VaultDecryptError,
    /// The frame is not JSON, not an object, or misses/mistypes a required field.
    MalformedMessage,
    /// The frame's `type` is not one this side knows.
    UnknownMessageType,
    /// The frame or chunk is larger than the receiver accepts.
    PayloadTooLarge,
    /// The database refused or failed the query.
    QueryFailed,
    /// The command names a database connection this agent does not have.
    UnknownConnection,
    /// The command was cancelled (a `cancel` frame or a shutdown).
    CommandCancelled,
    /// Every worker is busy and the command queue is full; retry later.
    AgentBusy,
    /// A result chunk could not be uploaded after every retry.
    UploadFailed,
    /// The chunk's signature does not match its bytes.
    ChunkSignatureInvalid,
    /// The target connector is not connected (gateway side).
    ConnectorOffline,
    /// The agent is paused by its operator and takes no commands.
    AgentPaused,
    /// A bug or an unexpected failure on the sending side.
    InternalError,
    /// The target database cannot be reached (down, refusing connections, bad credentials at
    /// connect time). The agent keeps serving its other databases and retries this one.
    DatabaseUnavailable,
    /// The agent stopped (crash, `kill -9`, power loss) while the command ran, and the first run
    /// could not be proven stopped on the database server, so it is not run again. Send it with
    /// a new idempotency key to run it again.
    CommandInterrupted,
    /// The command was answered and acknowledged before; its stored answer has since been
    /// purged (offline queue size cap), so a repeat cannot be answered and is not run again.
    ResultUnavailable,
}

impl ErrorCode {
    /// Whether retrying the same command later may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::QueryTimeout
                | Self::ConnectionPoolExhausted
                | Self::AgentBusy
                | Self::UploadFailed
                | Self::ConnectorOffline
                | Self::AgentPaused
                | Self::InternalError
                | Self::DatabaseUnavailable
        )
    }

    /// The wire spelling, e.g. `AUTH_FAILED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "AUTH_FAILED",
            Self::DuplicateConnection => "DUPLICATE_CONNECTION",
            Self::WriteOperationRejected => "WRITE_OPERATION_REJECTED",
            Self::SqlSyntaxError => "SQL_SYNTAX_ERROR",
            Self::WriteKeywordDetected => "WRITE_KEYWORD_DETECTED",
            Self::SchemaAccessDenied => "SCHEMA_ACCESS_DENIED",
            Self::QueryTimeout => "QUERY_TIMEOUT",
            Self::ConnectionPoolExhausted => "CONNECTION_POOL_EXHAUSTED",
            Self::CommandExpired => "COMMAND_EXPIRED",
            Self::VaultDecryptError => "VAULT_DECRYPT_ERROR",
            Self::MalformedMessage => "MALFORMED_MESSAGE",
            Self::UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::QueryFailed => "QUERY_FAILED",
            Self::UnknownConnection => "UNKNOWN_CONNECTION",
            Self::CommandCancelled => "COMMAND_CANCELLED",
            Self::AgentBusy => "AGENT_BUSY",
            Self::UploadFailed => "UPLOAD_FAILED",
            Self::ChunkSignatureInvalid => "CHUNK_SIGNATURE_INVALID",
            Self::ConnectorOffline => "CONNECTOR_OFFLINE",
            Self::AgentPaused => "AGENT_PAUSED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::CommandInterrupted => "COMMAND_INTERRUPTED",
            Self::ResultUnavailable => "RESULT_UNAVAILABLE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of `execution_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains credentials.
    pub message: String,
    /// Whether the cloud may retry the command.
    pub retryable: bool,
}

impl ErrorBody {
    /// An error body whose `retryable` flag follows the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retryable: code.retryable() }
    }
}

// ---------------------------------------------------------------------------------------------
// API keys

/// An API key `vmc_<tenantId>_<random>_<checksum>`.
///
/// `tenantId` is 3–32 of `[a-z0-9]`, `random` 12–64 of `[a-z0-9]`, `checksum` the first five
/// lower-case hex digits of SHA-256 over `vmc_<tenantId>_<random>`. The plaintext is zeroized on
/// drop; `Debug` and `Display` print only [`ApiKey::masked`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Zeroizing<String>);

/// Why a string is not a well-formed API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API key format: {0} (expected vmc_<tenantId>_<random>_<checksum>)")]
pub struct ApiKeyFormatError(&'static str);

impl ApiKey {
    /// Parses and checks a key, including its checksum. Surrounding whitespace is trimmed.
    pub fn parse(text: &str) -> Result<Self, ApiKeyFormatError> {
        let text = text.trim();
        let mut parts = text.split('_');
        let (Some("vmc"), Some(tenant), Some(random), Some(checksum), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiKeyFormatError("wrong number of parts or missing vmc_ prefix"));
        };
        let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !(3..=32).contains(&tenant.len()) || !alnum(tenant) {
            return Err(ApiKeyFormatError("tenant id must be 3-32 lower-case letters or digits"));
        }
        if !(12..=64).contains(&random.len()) || !alnum(random) {
            return Err(ApiKeyFormatError("random part must be 12-64 lower-case letters or digits"));
        }
        if checksum != Self::checksum(tenant, random) {
            return Err(ApiKeyFormatError("checksum does not match"));
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// Generates a fresh key for a tenant (gateway side).
    pub fn generate(tenant: &str) -> Result<Self, ApiKeyFormatError> {
        use rand::RngExt as _;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let random: String = (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        let checksum = Self::checksum(tenant, &random);
        Self::parse(&format!("vmc_{tenant}_{random}_{checksum}"))
    }

    fn checksum(tenant: &str, random: &str) -> String {
        let digest = Sha256::digest(format!("vmc_{tenant}_{random}").as_bytes());
        hex::encode(&digest[..3])[..5].to_owned()
    }

    /// The tenant id encoded in the key.
    pub fn tenant_id(&self) -> &str {
        self.0.split('_').nth(1).unwrap_or_default()
    }

    /// The key with its random part hidden: `vmc_abc123_****_c4e2a`. Safe to log and display.
    pub fn masked(&self) -> String {
        let checksum = self.0.rsplit('_').next().unwrap_or_default();
        format!("vmc_{}_****_{checksum}", self.tenant_id())
    }

    /// The plaintext. Only for the `auth` frame and the gateway's hash; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for ApiKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        ApiKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A secret byte string sent by the gateway (the per-connection chunk key). Hex on the wire,
/// zeroized on drop, `***` in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps key material.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Generates `len` random bytes.
    pub fn random(len: usize) -> Self {
        use rand::RngExt as _;
        let mut bytes = vec![0u8; len];
        rand::rng().fill(&mut bytes[..]);
        Self::new(bytes)
    }

    /// The key material.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex::encode(self.expose())))
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let bytes = hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)?;
        if bytes.len() < 16 {
            return Err(serde::de::Error::custom("key must be at least 16 bytes"));
        }
        Ok(Self::new(bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound: agent -> cloud

/// Agent status as reported in `heartbeat` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Connected and idle.
    Ready,
    /// Connected and executing at least one command.
    Busy,
    /// Paused by the operator: commands are refused with `AGENT_PAUSED`.
    Paused,
    /// Going offline (shutdown).
    Offline,
    /// Something needs attention (e.g. a database is unreachable).
    Error,
}

/// Frames sent by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound {
    /// First frame after the WebSocket opens.
    Auth(Auth),
    /// Liveness and load, every `heartbeatIntervalMs`.
    Heartbeat(Heartbeat),
    /// Schema metadata of every configured database (never row data).
    SchemaDiscovery(SchemaDiscovery),
    /// A command finished.
    ExecutionResult(ExecutionResult),
    /// A command failed, or a frame from the cloud could not be handled.
    ExecutionError(ExecutionError),
    /// The agent's status changed.
    Status(StatusUpdate),
}

/// `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The API key; the only secret that ever crosses the link.
    pub api_key: ApiKey,
    /// The connector's friendly name.
    pub connector_name: String,
    /// Agent build version.
    pub agent_version: String,
    /// [`PROTOCOL_VERSION`] of the agent.
    pub protocol_version: u32,
    /// Stable id of this agent installation (kept in its queue database, so it survives
    /// restarts and `kill -9`). A gateway that still holds a session for this connector from
    /// the same instance lets the new one take it over at once (the old one went silent);
    /// from another instance it answers `DUPLICATE_CONNECTION` unless the old session no
    /// longer answers a ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// How many commands the agent accepts at once (running + waiting in its durable queue).
    /// The gateway paces its backlog to this many unanswered commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// A check, not a session (`mini-connector doctor`): the gateway validates the key and
    /// answers `connected` (or `error`) without registering the session or taking over a
    /// running agent's, then closes. Absent means `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    /// Message compressions the agent can read and write, best first (`["deflate"]`, see
    /// [`wsio::Compression`]). Absent (older agents): none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compression: Vec<String>,
    /// Chunk body encodings the agent can write, best first (`["lz4", "deflate"]`, see
    /// [`ContentEncoding`]); the gateway picks one for `connected.upload.contentEncoding`.
    /// Absent (older agents): `deflate` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_encodings: Vec<String>,
}

/// `heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// RFC 3339 time of sending.
    pub timestamp: String,
    /// Current status.
    pub status: AgentStatus,
    /// Commands accepted and not yet finished.
    pub active_commands: u32,
}

/// `schema_discovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaDiscovery {
    /// RFC 3339 time of discovery.
    pub timestamp: String,
    /// One entry per configured database connection.
    pub schema: Vec<DatabaseSchema>,
}

/// `execution_result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    /// From the command.
    pub command_id: String,
    /// From the command.
    pub execution_id: String,
    /// From the command.
    pub activity_id: String,
    /// The rows, inline or as a reference to uploaded chunks.
    pub result: ResultPayload,
    /// Number of rows in the result.
    pub row_count: u64,
    /// Time from receipt to the last row, in milliseconds.
    pub duration_ms: u64,
}

/// Where the rows of a result are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResultPayload {
    /// Small results: the rows themselves.
    Inline {
        /// Result columns.
        columns: Vec<ColumnMeta>,
        /// One array of cells per row, in column order.
        rows: InlineRows,
    },
    /// Large results: uploaded as chunks; the stream is described in `docs/PROTOCOL.md`.
    #[serde(rename_all = "camelCase")]
    Buffered {
        /// Key the gateway returned for the uploaded chunks.
        buffer_key: String,
        /// Number of chunks uploaded.
        chunk_count: u32,
        /// Length of the uncompressed result stream in bytes.
        byte_count: u64,
        /// Lower-case hex SHA-256 of the uncompressed result stream.
        sha256: String,
    },
}

/// The rows of an inline result: a JSON array with one array of cells per row.
///
/// The agent encodes each row once, straight from the driver's cells, into the same text the
/// chunked stream uses; the frame then carries that text as it is ([`InlineRows::from_json`]):
/// storing the answer in the offline queue and sending it copy bytes instead of encoding every
/// cell again (and no `Value` is built per cell). A decoded frame holds parsed rows.
#[derive(Debug, Clone)]
pub enum InlineRows {
    /// Encoded JSON text (`[[…],[…]]`), as the agent built it.
    Encoded(Box<serde_json::value::RawValue>),
    /// Rows as values, as a peer decoded them.
    Values(Vec<Vec<serde_json::Value>>),
}

impl InlineRows {
    /// Wraps JSON text that must be an array (checked, with the JSON itself: the text goes onto
    /// the wire as it is).
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        let raw = serde_json::value::RawValue::from_string(text)?;
        let first = raw.get().trim_start().as_bytes().first().copied();
        if first != Some(b'[') {
            return Err(serde::de::Error::custom("inline rows must be a JSON array"));
        }
        Ok(Self::Encoded(raw))
    }

    /// Joins rows encoded one JSON array per line (the result stream's row lines) into one
    /// array. The lines are copied, not encoded again; serde_json escapes newlines inside
    /// strings, so a newline only ever ends a row.
    pub fn from_lines(lines: &[u8]) -> Result<Self, serde_json::Error> {
        let mut text = String::with_capacity(lines.len() + 2);
        text.push('[');
        for line in lines.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(std::str::from_utf8(line).map_err(serde::de::Error::custom)?);
        }
        text.push(']');
        Self::from_json(text)
    }

    /// The rows as values (parses encoded text).
    pub fn into_values(self) -> Result<Vec<Vec<serde_json::Value>>, serde_json::Error> {
        match self {
            Self::Encoded(raw) => serde_json::from_str(raw.get()),
            Self::Values(rows) => Ok(rows),
        }
    }
}

impl From<Vec<Vec<serde_json::Value>>> for InlineRows {
    fn from(rows: Vec<Vec<serde_json::Value>>) -> Self {
        Self::Values(rows)
    }
}

/// Equal when they hold the same rows, whichever form each is in.
impl PartialEq for InlineRows {
    fn eq(&self, other: &Self) -> bool {
        match (self.clone().into_values(), other.clone().into_values()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for InlineRows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Encoded(raw) => raw.serialize(serializer),
            Self::Values(rows) => rows.serialize(serializer),
        }
    }
}

/// Always into values: a `RawValue` cannot be read inside the tagged enums that carry it.
impl<'de> Deserialize<'de> for InlineRows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Vec<serde_json::Value>>::deserialize(deserializer).map(Self::Values)
    }
}

/// `execution_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionError {
    /// The command's id, or `null` when the failing frame carried none.
    pub command_id: Option<String>,
    /// The command's execution id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The command's activity id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<String>,
    /// What went wrong.
    pub error: ErrorBody,
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    /// New status.
    pub status: AgentStatus,
    /// Why, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Inbound: cloud -> agent

/// Frames sent by the cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inbound {
    /// Authentication accepted.
    Connected(Connected),
    /// Run a query.
    Command(Command),
    /// Stop an in-progress command.
    Cancel(Cancel),
    /// Send a fresh `schema_discovery`.
    SchemaRequest(SchemaRequest),
    /// The cloud received and stored a result; the agent may forget it.
    Ack(Ack),
    /// Stop within the grace period.
    Shutdown(Shutdown),
    /// A cloud-side error; `AUTH_FAILED` and `DUPLICATE_CONNECTION` end the session.
    Error(CloudError),
}

/// `connected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    /// Tenant of the API key.
    pub tenant_id: String,
    /// Name the cloud registered for this connector.
    pub connector_name: String,
    /// RFC 3339 time on the server.
    pub server_time: String,
    /// Id of this WebSocket session; chunk uploads name it.
    pub connection_id: String,
    /// Where and how to upload result chunks.
    pub upload: UploadGrant,
    /// The compression the gateway picked from `auth.compression` (`"deflate"`); from the
    /// next frame on, either side may send a large frame compressed. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// The upload part of `connected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadGrant {
    /// HTTPS URL to POST chunks to.
    pub url: String,
    /// Per-connection HMAC-SHA256 key (hex). Never the API key; dies with the connection.
    pub hmac_key: SecretBytes,
    /// Largest uncompressed chunk the gateway wants, in bytes.
    #[serde(default = "default_chunk_bytes")]
    pub max_chunk_bytes: u64,
    /// Results whose encoded size stays under this travel inline.
    #[serde(default = "default_inline_bytes")]
    pub max_inline_bytes: u64,
    /// How every chunk of this session is compressed, picked from `auth.chunkEncodings`
    /// ([`ContentEncoding::pick`]). Absent (older gateways, or an agent that offered none):
    /// `deflate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
}

fn default_chunk_bytes() -> u64 {
    1024 * 1024
}

fn default_inline_bytes() -> u64 {
    256 * 1024
}

/// Operations a command can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A read-only SQL query.
    Query,
}

/// `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Unique id of this command.
    pub command_id: String,
    /// Workflow execution it belongs to; `cancel` names it.
    pub execution_id: String,
    /// Workflow activity it belongs to.
    pub activity_id: String,
    /// What to do.
    pub operation: Operation,
    /// Arguments.
    pub payload: CommandPayload,
}

/// `command.payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandPayload {
    /// SQL text, with positional `?`/`$n` placeholders.
    pub query: String,
    /// Bound parameters, never spliced into the text.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// Timeout in milliseconds; the agent's `commandTimeoutMs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Same key, same result: a retried command is not run twice.
    pub idempotency_key: String,
    /// Name of the database connection; the agent's first one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// RFC 3339 time after which the command must not run (`COMMAND_EXPIRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    /// Execution whose commands stop.
    pub execution_id: String,
    /// Why, for the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `schema_request`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {}

/// `ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The acknowledged command.
    pub command_id: String,
}

/// `shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shutdown {
    /// Why, for the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds the agent may take to finish running commands.
    #[serde(default)]
    pub grace_period: u64,
    /// `restart` (the default): the gateway is going away for a while (redeploy); drain, close
    /// and reconnect with backoff. `decommission`: this connector is retired; drain and exit.
    #[serde(default)]
    pub mode: ShutdownMode,
}

/// What a `shutdown` asks of the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Drain, disconnect, reconnect: the agent keeps running.
    #[default]
    Restart,
    /// Drain and exit: the connector is retired.
    Decommission,
}

/// `error` (inbound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudError {
    /// What went wrong.
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
    /// The command concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A frame that could not be decoded, with the code to answer it with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// `MALFORMED_MESSAGE`, `UNKNOWN_MESSAGE_TYPE` or `PAYLOAD_TOO_LARGE`.
    pub code: ErrorCode,
    /// What was wrong, naming the field where possible.
    pub message: String,
    /// `commandId` of the frame, if it had a readable one.
    pub command_id: Option<String>,
}

/// A closed set of frame types that can be decoded with clear errors.
pub trait Frame: Serialize + DeserializeOwned {
    /// The `type` values of this set.
    const TYPES: &'static [&'static str];

    /// Decodes one text frame.
    fn decode(text: &str) -> Result<Self, DecodeError> {
        decode_frame(text)
    }

    /// Encodes to one text frame.
    fn encode(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Frame for Outbound {
    const TYPES: &'static [&'static str] =
        &["auth", "heartbeat", "schema_discovery", "execution_result", "execution_error", "status"];
}

impl Frame for Inbound {
    const TYPES: &'static [&'static str] =
        &["connected", "command", "cancel", "schema_request", "ack", "shutdown", "error"];
}

fn decode_frame<T: Frame>(text: &str) -> Result<T, DecodeError> {
    let fail = |code, message: String, command_id| DecodeError { code, message, command_id };
    if text.len() > MAX_FRAME_BYTES {
        return Err(fail(
            ErrorCode::PayloadTooLarge,
            format!("frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit", text.len()),
            None,
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| fail(ErrorCode::MalformedMessage, format!("frame is not valid JSON: {e}"), None))?;
    let Some(object) = value.as_object() else {
        return Err(fail(ErrorCode::MalformedMessage, "frame is not a JSON object".into(), None));
    };
    let command_id = object.get("commandId").and_then(|v| v.as_str()).map(str::to_owned);
    let kind = match object.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(fail(
                ErrorCode::MalformedMessage,
                "field `type` must be a string".into(),
                command_id,
            ));
        }
        None => return Err(fail(ErrorCode::MalformedMessage, "missing field `type`".into(), command_id)),
    };
    if !T::TYPES.contains(&kind.as_str()) {
        let mut shown = kind.chars().take(64).collect::<String>();
        if shown.len() < kind.len() {
            shown.push('…');
        }
        return Err(fail(
            ErrorCode::UnknownMessageType,
            format!("unknown message type `{shown}`"),
            command_id,
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| fail(ErrorCode::MalformedMessage, format!("invalid `{kind}` message: {e}"), command_id))
}

// ---------------------------------------------------------------------------------------------
// Chunks

/// HMAC-SHA256 of one result chunk: over a header naming the connection, command, sequence
/// number and final flag, then the chunk body exactly as POSTed. Binding the header stops a
/// chunk from being replayed into another result or another position.
pub fn chunk_signature(
    key: &[u8],
    connection_id: &str,
    command_id: &str,
    seq: u32,
    last: bool,
    body: &[u8],
) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("mc-chunk-v1\n{connection_id}\n{command_id}\n{seq}\n{}\n", u8::from(last)).as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks a chunk signature in constant time.
pub fn verify_chunk_signature(
    key: &[u8],
    connection_id: &str,
    command_id: &str,
    seq: u32,
    last: bool,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let Ok(given) = hex::decode(signature_hex.trim()) else { return false };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("mc-chunk-v1\n{connection_id}\n{command_id}\n{seq}\n{}\n", u8::from(last)).as_bytes());
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Current time as RFC 3339 with milliseconds, the format of every `timestamp` field.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_inline_rows_are_the_same_frame_as_values() {
        let rows = vec![
            vec![serde_json::json!(1), serde_json::json!("a\nb\t\"c\" \u{1b}[31m 東京 🙂")],
            vec![serde_json::Value::Null, serde_json::json!(-2.5)],
        ];
        let lines: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        let encoded = InlineRows::from_lines(lines.as_bytes()).unwrap();
        assert!(matches!(encoded, InlineRows::Encoded(_)));
        let frame = |rows: InlineRows| {
            Outbound::ExecutionResult(ExecutionResult {
                command_id: "c".into(),
                execution_id: "e".into(),
                activity_id: "a".into(),
                result: ResultPayload::Inline { columns: Vec::new(), rows },
                row_count: 2,
                duration_ms: 1,
            })
            .encode()
        };
        let text = frame(encoded.clone());
        assert_eq!(text, frame(rows.clone().into()), "byte for byte the frame the values give");
        let Ok(Outbound::ExecutionResult(back)) = Outbound::decode(&text) else { panic!("{text}") };
        let ResultPayload::Inline { rows: decoded, .. } = back.result else { panic!("not inline") };
        assert_eq!(decoded.clone().into_values().unwrap(), rows);
        assert_eq!(decoded, encoded);

        assert_eq!(
            InlineRows::from_lines(b"").unwrap().into_values().unwrap(),
            Vec::<Vec<serde_json::Value>>::new()
        );
        assert!(InlineRows::from_lines(b"[1,\n").is_err(), "broken JSON never reaches the wire");
        assert!(InlineRows::from_json("{}".into()).is_err(), "not an array");
    }

    #[test]
    fn spec_example_key_checksum_rule_is_ours() {
        let key = ApiKey::generate("abc123").unwrap();
        assert!(ApiKey::parse(key.expose()).is_ok());
        assert_eq!(key.tenant_id(), "abc123");
        assert!(key.masked().starts_with("vmc_abc123_****_"));
        assert!(!format!("{key:?}").contains(key.expose().split('_').nth(2).unwrap()));
    }

    #[test]
    fn key_with_flipped_character_is_rejected() {
        let key = ApiKey::generate("acme").unwrap();
        let mut text = key.expose().to_owned();
        let pos = 9;
        let flipped = if &text[pos..=pos] == "a" { "b" } else { "a" };
        text.replace_range(pos..=pos, flipped);
        assert_eq!(ApiKey::parse(&text).unwrap_err().0, "checksum does not match");
        assert!(ApiKey::parse("vmc_abc").is_err());
        assert!(ApiKey::parse("xyz_abc123_x7f9k2p5w8q1_c4e2a").is_err());
    }

    #[test]
    fn signature_binds_position() {
        let key = [7u8; 32];
        let sig = hex::encode(chunk_signature(&key, "c1", "cmd", 0, false, b"body"));
        assert!(verify_chunk_signature(&key, "c1", "cmd", 0, false, b"body", &sig));
        assert!(!verify_chunk_signature(&key, "c1", "cmd", 1, false, b"body", &sig));
        assert!(!verify_chunk_signature(&key, "c1", "cmd", 0, true, b"body", &sig));
        assert!(!verify_chunk_signature(&key, "c1", "cmd", 0, false, b"bodz", &sig));
    }

    #[test]
    fn decode_errors_carry_codes() {
        assert_eq!(Inbound::decode("{").unwrap_err().code, ErrorCode::MalformedMessage);
        assert_eq!(Inbound::decode("[]").unwrap_err().code, ErrorCode::MalformedMessage);
        assert_eq!(Inbound::decode(r#"{"type":"nope"}"#).unwrap_err().code, ErrorCode::UnknownMessageType);
        let err = Inbound::decode(r#"{"type":"command","commandId":"c1"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedMessage);
        assert_eq!(err.command_id.as_deref(), Some("c1"));
        assert!(err.message.contains("missing field"), "{}", err.message);
    }
}
