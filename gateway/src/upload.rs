//! `POST /upload`: signed, compressed slices of a result stream, stored in `gw_chunks`
//! (`gateway.db`) per `<connector>:<commandId>` until the result is acknowledged or the TTL
//! runs out; a buffer in memory holds only counts and digests (see [`crate::spool`] for how a
//! result is read back).
//!
//! **Who may upload what.** A chunk must be signed with the chunk key of the session named in
//! `x-mc-connection`, and that session must be its connector's current one (`401` otherwise).
//! It is taken only for a command of that connector that is not answered yet, whichever session
//! the command went to ([`Hub::with_chunk_permission`]): a result keeps its partial buffer
//! across an agent reconnect, and the agent goes on with the next chunk, signed with the new
//! session's key. A chunk for a command already answered (`ack` sent, error, timeout) is `409`,
//! one for a command the connector never got is `404`, and neither creates a buffer. When the
//! command completes, its buffer goes at once. Every stored chunk is written, as uploaded, to
//! `gw_chunks` in `gateway.db` before it is acknowledged (one that cannot be is `503`,
//! retryable), and dropped with its buffer: after a
//! gateway restart (or `kill -9`) the buffers of commands still pending are rebuilt
//! ([`UploadStore::restore`]) and the agent goes on with its next chunk.
//!
//! **Resuming.** A chunk whose `seq` is stored already with the same bytes is `200` again
//! (`"duplicate": true`); a `seq` past the next expected one is `409` with `"nextSeq"` (the
//! buffer is kept); the same `seq` with other bytes drops the buffer: `409`, `"nextSeq": 0`.
//!
//! **Encodings.** A chunk's `content-encoding` header names its compression
//! ([`protocol::ContentEncoding`]): `lz4` or `deflate` (zlib; also when the header is absent).
//! The gateway takes either, whatever the session's grant picked (a chunk re-sent on a later
//! session may come from an agent that negotiated differently); another name is `415`
//! `MALFORMED_MESSAGE`. Each chunk's encoding and uncompressed length are stored with it.
//!
//! **Caps.** Every byte stored is counted, decompressed, against three caps: per result
//! (`max_buffer_bytes`), per connector (`max_connection_buffer_bytes`) and in total
//! (`max_total_buffer_bytes`); a chunk also may not inflate to more than 4 × `maxChunkBytes` +
//! 64 KiB. Chunks are decompressed 64 KiB at a time (an LZ4 frame is taken only with blocks of
//! at most 64 KiB) and each step is reserved against the caps *before* it is kept, so a bomb
//! is refused at the step that would pass a cap: at most one 64 KiB step beyond what the caps
//! allow is ever decompressed, and it is not kept. A refused chunk ends its result: the buffer
//! is freed at once (not at the TTL) and the answer says `"retryable": false`.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{ContentEncoding, ErrorCode, headers, verify_chunk_signature};
use sha2::{Digest, Sha256};

use crate::GatewayError;
use crate::http::{RequestHead, error_body};
use crate::hub::{ChunkPermission, GatewayEvent, Hub};
use crate::store::{ChunkRow, CommandStore, StoredChunk};

/// Inflate step: the most bytes decompressed before they are counted against the caps.
const INFLATE_STEP: usize = 64 * 1024;

/// One result being reassembled.
#[derive(Debug)]
pub(crate) struct Buffer {
    /// Tells a buffer from a later one under the same key (reservations name it).
    id: u64,
    pub connector: String,
    pub command_id: String,
    /// Decompressed bytes of the stored chunks (which are on disk, in `gw_chunks`).
    bytes: u64,
    /// Bytes reserved by chunks being inflated right now.
    reserved: u64,
    /// Next expected sequence number (= chunks stored).
    pub next_seq: u32,
    /// The final chunk arrived.
    pub complete: bool,
    /// SHA-256 of each stored chunk's compressed body, for idempotent retries.
    digests: Vec<[u8; 32]>,
    created: Instant,
}

impl Buffer {
    /// A new buffer with no chunk yet.
    fn empty(id: u64, connector: String, command_id: String) -> Self {
        Buffer {
            id,
            connector,
            command_id,
            bytes: 0,
            reserved: 0,
            next_seq: 0,
            complete: false,
            digests: Vec::new(),
            created: Instant::now(),
        }
    }

    /// A buffer from stored chunks (of one buffer, by `seq`, without bodies): every chunk from
    /// 0 up to the first missing or unreadable one. The bodies are read one at a time, for the
    /// digests; only a chunk stored without its plain length (by an older gateway) is
    /// decompressed to count it.
    fn rebuild(id: u64, persist: &CommandStore, chunks: &[StoredChunk]) -> Self {
        let mut buffer = Buffer::empty(id, chunks[0].connector.clone(), chunks[0].command_id.clone());
        for chunk in chunks {
            if buffer.complete || chunk.seq != buffer.next_seq {
                break;
            }
            let stored = match persist.chunk_body(&chunk.buffer_key, chunk.seq) {
                Ok(Some(stored)) => stored,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(buffer = %chunk.buffer_key, seq = chunk.seq, "cannot read a stored chunk ({e}); the buffer ends before it");
                    break;
                }
            };
            let counted = match chunk.plain_len {
                Some(n) => Ok(n),
                None => stored
                    .encoding
                    .decoder(&stored.body)
                    .and_then(|mut decoder| std::io::copy(&mut decoder, &mut std::io::sink())),
            };
            let Ok(n) = counted else {
                tracing::warn!(buffer = %chunk.buffer_key, seq = chunk.seq, "stored chunk does not decompress; the buffer ends before it");
                break;
            };
            buffer.bytes += n;
            buffer.digests.push(Sha256::digest(&stored.body).into());
            buffer.next_seq += 1;
            buffer.complete = chunk.last;
        }
        buffer
    }

    /// A kept (answered) result's buffer from its chunks' `seq` and `final` flags: its bytes
    /// are counted when it is spooled.
    fn from_flags(chunks: &[StoredChunk]) -> Self {
        let mut buffer = Buffer::empty(0, chunks[0].connector.clone(), chunks[0].command_id.clone());
        for chunk in chunks {
            if buffer.complete || chunk.seq != buffer.next_seq {
                break;
            }
            buffer.next_seq += 1;
            buffer.complete = chunk.last;
        }
        buffer
    }
}

/// Which cap a chunk would break.
#[derive(Debug)]
enum CapError {
    Buffer(u64),
    Connection(u64),
    Total(u64),
    /// The buffer was released meanwhile (the command completed).
    Gone,
}

/// Every buffer in memory and what they hold.
#[derive(Debug, Default)]
pub(crate) struct UploadStore {
    buffers: HashMap<String, Buffer>,
    /// Where chunks are persisted (`gw_chunks` in `gateway.db`), so buffers survive a restart.
    persist: Option<Arc<CommandStore>>,
    /// connector -> bytes held or reserved by its buffers.
    per_connection: HashMap<String, u64>,
    /// Bytes held or reserved by every buffer.
    total: u64,
    next_id: u64,
}

impl UploadStore {
    /// An empty store whose chunks are persisted in `store`.
    pub fn persistent(store: Arc<CommandStore>) -> Self {
        Self { persist: Some(store), ..Self::default() }
    }

    /// Rebuilds the buffers of results whose upload a restart interrupted, from the chunks
    /// stored in `gateway.db`; `pending(connector, command_id)` says whether the gateway still
    /// waits for that command's answer (the chunks of any other are dropped). A buffer is
    /// rebuilt up to its first missing or unreadable chunk; the agent goes on from there.
    /// Buffer by buffer, one chunk body in memory at a time.
    pub fn restore(&mut self, pending: impl Fn(&str, &str) -> bool) -> Result<(), GatewayError> {
        let Some(persist) = self.persist.clone() else { return Ok(()) };
        for key in persist.unanswered_buffers()? {
            let chunks = persist.unanswered_chunks(&key)?;
            let Some(first) = chunks.first() else { continue };
            let (connector, command_id) = (&first.connector, &first.command_id);
            if !pending(connector, command_id) || key != format!("{connector}:{command_id}") {
                persist.drop_chunks(&key)?;
                continue;
            }
            self.next_id += 1;
            let buffer = Buffer::rebuild(self.next_id, &persist, &chunks);
            *self.per_connection.entry(buffer.connector.clone()).or_default() += buffer.bytes;
            self.total += buffer.bytes;
            self.buffers.insert(key, buffer);
        }
        if !self.buffers.is_empty() {
            tracing::info!(
                buffers = self.buffers.len(),
                bytes = self.total,
                "upload buffers restored from gateway.db"
            );
        }
        Ok(())
    }

    /// Drops a buffer and everything it holds or has reserved from the counts.
    fn forget(&mut self, buffer: &Buffer) {
        let held = buffer.bytes + buffer.reserved;
        self.total = self.total.saturating_sub(held);
        if let Some(n) = self.per_connection.get_mut(&buffer.connector) {
            *n = n.saturating_sub(held);
            if *n == 0 {
                self.per_connection.remove(&buffer.connector);
            }
        }
    }

    /// Removes a buffer from memory and drops its persisted chunks (it cannot complete).
    fn remove(&mut self, key: &str) -> Option<Buffer> {
        let buffer = self.take_out(key)?;
        if let Some(persist) = &self.persist
            && let Err(e) = persist.drop_chunks(key)
        {
            tracing::warn!(buffer = %key, "cannot drop the stored chunks of a buffer: {e}");
        }
        Some(buffer)
    }

    /// Removes a buffer from memory; its persisted chunks stay (its result is being handled:
    /// they are kept a while once the command is answered).
    fn take_out(&mut self, key: &str) -> Option<Buffer> {
        let buffer = self.buffers.remove(key)?;
        self.forget(&buffer);
        Some(buffer)
    }

    fn purge(&mut self, ttl: Duration) {
        let old: Vec<String> =
            self.buffers.iter().filter(|(_, b)| b.created.elapsed() >= ttl).map(|(k, _)| k.clone()).collect();
        for key in old {
            tracing::info!(buffer = %key, "purging an unacknowledged result buffer after its TTL");
            self.remove(&key);
        }
    }

    /// Removes and returns the buffer of `key` if it belongs to this connector and command.
    pub fn take(&mut self, key: &str, connector: &str, command_id: &str) -> Result<Option<Buffer>, ()> {
        match self.buffers.get(key) {
            None => Ok(None),
            Some(b) if b.connector == connector && b.command_id == command_id => Ok(self.take_out(key)),
            Some(_) => Err(()),
        }
    }

    /// Frees every buffer of a command (it was answered, timed out or expired).
    pub fn release_command(&mut self, command_id: &str) {
        let keys: Vec<String> =
            self.buffers.iter().filter(|(_, b)| b.command_id == command_id).map(|(k, _)| k.clone()).collect();
        for key in keys {
            // Its chunks stay persisted: the command is answered (kept a while, see
            // `CommandStore::answer`).
            if let Some(b) = self.take_out(&key) {
                tracing::debug!(buffer = %key, chunks = b.next_seq, "buffer released: its command is answered");
            }
        }
    }

    /// Frees every buffer in memory (shutdown); their persisted chunks stay for the next start.
    pub fn clear(&mut self) {
        self.buffers.clear();
        self.per_connection.clear();
        self.total = 0;
    }

    /// Number of buffers held.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Bytes held or reserved by every buffer.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Counts `n` more bytes for buffer `key` (generation `id`) if every cap allows them.
    fn reserve(&mut self, key: &str, id: u64, n: u64, caps: &Caps) -> Result<(), CapError> {
        let Some(buffer) = self.buffers.get_mut(key).filter(|b| b.id == id) else {
            return Err(CapError::Gone);
        };
        if buffer.bytes + buffer.reserved + n > caps.buffer {
            return Err(CapError::Buffer(caps.buffer));
        }
        let conn = self.per_connection.get(&buffer.connector).copied().unwrap_or(0);
        if conn + n > caps.connection {
            return Err(CapError::Connection(caps.connection));
        }
        if self.total + n > caps.total {
            return Err(CapError::Total(caps.total));
        }
        buffer.reserved += n;
        *self.per_connection.entry(buffer.connector.clone()).or_default() += n;
        self.total += n;
        Ok(())
    }

    /// Gives back `n` reserved bytes (a chunk that was not stored) of buffer `key`/`id`; when
    /// that buffer is gone its reservation was dropped with it.
    fn unreserve(&mut self, key: &str, id: u64, n: u64) {
        let Some(buffer) = self.buffers.get_mut(key).filter(|b| b.id == id) else { return };
        let n = n.min(buffer.reserved);
        buffer.reserved -= n;
        self.total = self.total.saturating_sub(n);
        if let Some(c) = self.per_connection.get_mut(&buffer.connector) {
            *c = c.saturating_sub(n);
        }
    }

    /// Frees buffer `key` if it is still generation `id` (its result was refused).
    fn fail(&mut self, key: &str, id: u64) {
        if self.buffers.get(key).is_some_and(|b| b.id == id) {
            self.remove(key);
            tracing::debug!(buffer = %key, "buffer dropped: a chunk of it was refused");
        }
    }
}

/// The result that answered a command of `connector` not long ago under `buffer_key`, read
/// back from `gateway.db` (see [`crate::store::ANSWERED_CHUNKS_RETENTION`]); `None` when
/// none is kept.
pub(crate) fn answered_buffer(persist: &CommandStore, buffer_key: &str, connector: &str) -> Option<Buffer> {
    let chunks = match persist.answered_chunks(buffer_key, connector) {
        Ok(chunks) => chunks,
        Err(e) => {
            tracing::warn!(buffer = %buffer_key, "cannot read the chunks of an answered result: {e}");
            return None;
        }
    };
    (!chunks.is_empty()).then(|| Buffer::from_flags(&chunks))
}

/// Persists a chunk about to be stored in buffer `key`: the chunks are kept on disk only.
fn save_chunk(
    persist: Option<&CommandStore>,
    key: &str,
    buffer: &Buffer,
    chunk: ChunkRow<'_>,
) -> Result<(), GatewayError> {
    match persist {
        Some(persist) => persist.save_chunk(key, &buffer.connector, &buffer.command_id, chunk),
        None => Err(GatewayError::Invalid("no chunk store".into())),
    }
}

/// Why a chunk is not taken (decided under the commands lock).
enum Refusal {
    /// The command is answered.
    Answered,
    /// Not a pending command of this connector.
    Unknown,
    /// Past the next expected seq (named).
    Gap(u32),
    /// The final chunk is stored already (next seq named).
    Complete(u32),
}

/// The three caps, from the configuration.
#[derive(Debug, Clone, Copy)]
struct Caps {
    buffer: u64,
    connection: u64,
    total: u64,
}

/// An HTTP answer: status and JSON body.
pub(crate) type Answer = (u16, serde_json::Value);

fn reject(hub: &Hub, command_id: &str, status: u16, code: ErrorCode, message: String) -> Answer {
    tracing::warn!(command = command_id, %code, "chunk rejected: {message}");
    hub.emit(GatewayEvent::ChunkRejected { command_id: command_id.to_owned(), code });
    (status, error_body(code.as_str(), message))
}

/// `409` naming the chunk the gateway expects next: the agent resumes from there.
fn resume_at(hub: &Hub, command_id: &str, next_seq: u32, message: String) -> Answer {
    let (status, mut body) = reject(hub, command_id, 409, ErrorCode::MalformedMessage, message);
    body["retryable"] = true.into();
    body["nextSeq"] = next_seq.into();
    (status, body)
}

/// Handles one chunk whose body has been read.
pub(crate) fn handle(hub: &Hub, head: &RequestHead, body: &[u8]) -> Answer {
    let command_id = head.header(headers::COMMAND).unwrap_or_default().to_owned();
    let bad = |message: &str| reject(hub, &command_id, 400, ErrorCode::MalformedMessage, message.to_owned());
    let Some(connection_id) = head.header(headers::CONNECTION).filter(|v| !v.is_empty()) else {
        return bad("missing x-mc-connection header");
    };
    if command_id.is_empty() {
        return bad("missing x-mc-command header");
    }
    let Some(seq) = head.header(headers::SEQ).and_then(|v| v.trim().parse::<u32>().ok()) else {
        return bad("missing or invalid x-mc-seq header");
    };
    let last = match head.header(headers::FINAL).map(str::trim) {
        Some("1") => true,
        Some("0") => false,
        _ => return bad("missing or invalid x-mc-final header (0 or 1)"),
    };
    let Some(signature) = head.header(headers::SIGNATURE) else {
        return bad("missing x-mc-signature header");
    };
    // Absent: an agent from before the header was read (it always sent zlib).
    let encoding = match head.header("content-encoding") {
        None => ContentEncoding::Deflate,
        Some(name) => match ContentEncoding::from_name(name) {
            Some(encoding) => encoding,
            None => {
                let shown: String = name.chars().take(40).collect();
                let supported = ContentEncoding::offer().join(", ");
                return reject(
                    hub,
                    &command_id,
                    415,
                    ErrorCode::MalformedMessage,
                    format!("unsupported content-encoding `{shown}` (this gateway takes: {supported})"),
                );
            }
        },
    };
    let Some((connector, hmac_key)) = hub.upload_grant(connection_id) else {
        return reject(
            hub,
            &command_id,
            401,
            ErrorCode::AuthFailed,
            format!("unknown connection `{connection_id}`"),
        );
    };
    if !verify_chunk_signature(hmac_key.expose(), connection_id, &command_id, seq, last, body, signature) {
        return reject(
            hub,
            &command_id,
            401,
            ErrorCode::ChunkSignatureInvalid,
            format!("signature of chunk {seq} does not match its bytes, position or connection"),
        );
    }
    let digest: [u8; 32] = Sha256::digest(body).into();
    let key = format!("{connector}:{command_id}");
    let config = &hub.config;
    let caps = Caps {
        buffer: config.max_buffer_bytes,
        connection: config.max_connection_buffer_bytes,
        total: config.max_total_buffer_bytes,
    };

    // The command must be one of this connector's that the gateway still waits for; the
    // buffer is created under the same lock, so an answer cannot slip in between.
    let admitted = hub.with_chunk_permission(&connector, &command_id, |permission, store| {
        match permission {
            ChunkPermission::Pending => {}
            ChunkPermission::Answered => {
                return Err(Refusal::Answered);
            }
            ChunkPermission::Unknown => {
                return Err(Refusal::Unknown);
            }
        }
        store.purge(config.buffer_ttl);
        match store.buffers.get(&key) {
            Some(b) if seq < b.next_seq => Ok(Some(b.digests[seq as usize] == digest)),
            Some(b) if b.complete => Err(Refusal::Complete(b.next_seq)),
            Some(b) if seq > b.next_seq => Err(Refusal::Gap(b.next_seq)),
            Some(_) => Ok(None),
            None if seq > 0 => Err(Refusal::Gap(0)),
            None => {
                store.next_id += 1;
                let buffer = Buffer::empty(store.next_id, connector.clone(), command_id.clone());
                store.buffers.insert(key.clone(), buffer);
                tracing::debug!(buffer = %key, "buffer created");
                Ok(None)
            }
        }
    });
    let id = match admitted {
        Ok(Some(true)) => {
            return (200, serde_json::json!({ "bufferKey": key, "seq": seq, "duplicate": true }));
        }
        Ok(Some(false)) => {
            // The stream changed under the same seq: start the result over.
            hub.uploads.lock().unwrap().remove(&key);
            tracing::debug!(buffer = %key, seq, "buffer dropped: a stored chunk came again with other bytes");
            let message =
                format!("chunk {seq} was already stored with different bytes; the result starts over");
            return resume_at(hub, &command_id, 0, message);
        }
        Err(Refusal::Answered) => {
            let message = format!("command {command_id} is already answered; chunk {seq} not stored");
            return reject(hub, &command_id, 409, ErrorCode::MalformedMessage, message);
        }
        Err(Refusal::Unknown) => {
            let message =
                format!("no pending command {command_id} was sent to this connector; chunk {seq} not stored");
            return reject(hub, &command_id, 404, ErrorCode::MalformedMessage, message);
        }
        Err(Refusal::Gap(next)) => {
            let message = format!("chunk {seq} out of order: expected {next}");
            return resume_at(hub, &command_id, next, message);
        }
        Err(Refusal::Complete(next)) => {
            let message = format!("result already complete after chunk {}", next.saturating_sub(1));
            return resume_at(hub, &command_id, next, message);
        }
        Ok(None) => hub.uploads.lock().unwrap().buffers.get(&key).map(|b| b.id),
    };
    let Some(id) = id else {
        return reject(
            hub,
            &command_id,
            409,
            ErrorCode::MalformedMessage,
            format!("command {command_id} was answered while chunk {seq} arrived"),
        );
    };

    // Decompress step by step, each step counted against the caps before it is kept.
    let chunk_cap = 4 * config.max_chunk_bytes + 64 * 1024;
    let not_encoded = |e: std::io::Error| {
        (400, ErrorCode::MalformedMessage, format!("chunk {seq} is not {} data: {e}", encoding.describe()))
    };
    let mut decoder = match encoding.decoder(body) {
        Ok(decoder) => decoder,
        Err(e) => {
            let (status, code, message) = not_encoded(e);
            hub.uploads.lock().unwrap().fail(&key, id);
            return reject(hub, &command_id, status, code, message);
        }
    };
    let mut step = vec![0u8; INFLATE_STEP];
    let mut plain = 0usize;
    let refused = loop {
        let n = match decoder.read(&mut step) {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(not_encoded(e)),
        };
        if (plain + n) as u64 > chunk_cap {
            break Some((
                413,
                ErrorCode::PayloadTooLarge,
                format!("chunk {seq} inflates to more than {chunk_cap} bytes"),
            ));
        }
        let reserved = hub.uploads.lock().unwrap().reserve(&key, id, n as u64, &caps);
        match reserved {
            Ok(()) => plain += n,
            Err(cap) => {
                let message = match cap {
                    CapError::Buffer(cap) => format!("result exceeds {cap} bytes (per-result cap)"),
                    CapError::Connection(cap) => {
                        format!("results of this connection exceed {cap} bytes (per-connection cap)")
                    }
                    CapError::Total(cap) => {
                        format!("the gateway holds {cap} bytes of results already (total cap)")
                    }
                    CapError::Gone => {
                        break Some((
                            409,
                            ErrorCode::MalformedMessage,
                            format!("command {command_id} was answered while chunk {seq} arrived"),
                        ));
                    }
                };
                break Some((413, ErrorCode::PayloadTooLarge, message));
            }
        }
    };
    if let Some((status, code, message)) = refused {
        // The result cannot complete: free its buffer (and this chunk's reservation) now.
        hub.uploads.lock().unwrap().fail(&key, id);
        return reject(hub, &command_id, status, code, message);
    }

    let n = plain as u64;
    let mut guard = hub.uploads.lock().unwrap();
    let store = &mut *guard;
    let Some(buffer) = store.buffers.get_mut(&key).filter(|b| b.id == id) else {
        drop(guard);
        return reject(
            hub,
            &command_id,
            409,
            ErrorCode::MalformedMessage,
            format!("command {command_id} was answered while chunk {seq} arrived"),
        );
    };
    // Another request for the same seq may have won the race while we inflated.
    if buffer.next_seq != seq || buffer.complete {
        let expected = buffer.next_seq;
        store.unreserve(&key, id, n);
        drop(guard);
        return resume_at(
            hub,
            &command_id,
            expected,
            format!("chunk {seq} out of order: expected {expected}"),
        );
    }
    // On disk before it counts: a restart from here on finds it.
    let row = ChunkRow { seq, last, encoding, plain_len: n, body };
    if let Err(e) = save_chunk(store.persist.as_deref(), &key, buffer, row) {
        // Not on disk, not stored: the agent sends it again.
        tracing::warn!(buffer = %key, seq, "cannot persist a chunk in gateway.db: {e}");
        store.unreserve(&key, id, n);
        drop(guard);
        let (_, mut body) = reject(
            hub,
            &command_id,
            503,
            ErrorCode::InternalError,
            format!("chunk {seq} could not be stored"),
        );
        body["retryable"] = true.into();
        return (503, body);
    }
    buffer.reserved -= n.min(buffer.reserved);
    buffer.bytes += n;
    buffer.digests.push(digest);
    buffer.next_seq += 1;
    buffer.complete = last;
    (200, serde_json::json!({ "bufferKey": key, "seq": seq }))
}
