//! `POST /upload`: signed, zlib-compressed slices of a result stream, reassembled in memory
//! per `<connectionId>:<commandId>` until the result is acknowledged or the TTL runs out.

use std::collections::HashMap;
use std::io::Read as _;
use std::time::{Duration, Instant};

use flate2::read::ZlibDecoder;
use mini_connector::protocol::{ErrorCode, headers, verify_chunk_signature};
use sha2::{Digest, Sha256};

use crate::http::{RequestHead, error_body};
use crate::hub::{GatewayEvent, Hub};

/// Largest reassembled result kept for one command.
const MAX_BUFFER_BYTES: usize = 1024 * 1024 * 1024;

/// One result being reassembled.
#[derive(Debug)]
pub(crate) struct Buffer {
    pub connector: String,
    pub command_id: String,
    pub data: Vec<u8>,
    /// Next expected sequence number (= chunks stored).
    pub next_seq: u32,
    /// The final chunk arrived.
    pub complete: bool,
    /// SHA-256 of each stored chunk's compressed body, for idempotent retries.
    digests: Vec<[u8; 32]>,
    created: Instant,
}

/// Every buffer in memory.
#[derive(Debug, Default)]
pub(crate) struct UploadStore {
    buffers: HashMap<String, Buffer>,
}

impl UploadStore {
    fn purge(&mut self, ttl: Duration) {
        self.buffers.retain(|key, b| {
            let keep = b.created.elapsed() < ttl;
            if !keep {
                tracing::info!(buffer = %key, "purging an unacknowledged result buffer after its TTL");
            }
            keep
        });
    }

    /// Removes and returns a buffer (the result was received; the buffer is released).
    pub fn take(&mut self, key: &str) -> Option<Buffer> {
        self.buffers.remove(key)
    }

    /// Returns a buffer taken by mistake.
    pub fn put_back(&mut self, key: &str, buffer: Buffer) {
        self.buffers.insert(key.to_owned(), buffer);
    }

    /// Number of buffers held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.buffers.len()
    }
}

/// An HTTP answer: status and JSON body.
pub(crate) type Answer = (u16, serde_json::Value);

fn reject(hub: &Hub, command_id: &str, status: u16, code: ErrorCode, message: String) -> Answer {
    tracing::warn!(command = command_id, %code, "chunk rejected: {message}");
    hub.emit(GatewayEvent::ChunkRejected { command_id: command_id.to_owned(), code });
    (status, error_body(code.as_str(), message))
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
    let cap = (4 * hub.config.max_chunk_bytes + 64 * 1024) as usize;
    let key = format!("{connection_id}:{command_id}");

    // Cheap checks before decompressing: duplicates and gaps.
    {
        let mut store = hub.uploads.lock().unwrap();
        store.purge(hub.config.buffer_ttl);
        match store.buffers.get(&key) {
            Some(b) if seq < b.next_seq => {
                return if b.digests[seq as usize] == digest {
                    (200, serde_json::json!({ "bufferKey": key, "seq": seq, "duplicate": true }))
                } else {
                    reject(
                        hub,
                        &command_id,
                        409,
                        ErrorCode::MalformedMessage,
                        format!("chunk {seq} was already stored with different bytes"),
                    )
                };
            }
            Some(b) if b.complete => {
                return reject(
                    hub,
                    &command_id,
                    409,
                    ErrorCode::MalformedMessage,
                    format!("result already complete after chunk {}", b.next_seq - 1),
                );
            }
            Some(b) if seq > b.next_seq => {
                return reject(
                    hub,
                    &command_id,
                    409,
                    ErrorCode::MalformedMessage,
                    format!("chunk {seq} out of order: expected {}", b.next_seq),
                );
            }
            None if seq > 0 => {
                return reject(
                    hub,
                    &command_id,
                    409,
                    ErrorCode::MalformedMessage,
                    format!("chunk {seq} out of order: expected 0"),
                );
            }
            _ => {}
        }
    }

    let mut plain = Vec::with_capacity(body.len() * 4);
    match ZlibDecoder::new(body).take(cap as u64 + 1).read_to_end(&mut plain) {
        Ok(n) if n > cap => {
            return reject(
                hub,
                &command_id,
                413,
                ErrorCode::PayloadTooLarge,
                format!("chunk {seq} decompresses to more than {cap} bytes"),
            );
        }
        Ok(_) => {}
        Err(e) => {
            return reject(
                hub,
                &command_id,
                400,
                ErrorCode::MalformedMessage,
                format!("chunk {seq} is not zlib data: {e}"),
            );
        }
    }

    let mut store = hub.uploads.lock().unwrap();
    let buffer = store.buffers.entry(key.clone()).or_insert_with(|| Buffer {
        connector: connector.clone(),
        command_id: command_id.clone(),
        data: Vec::new(),
        next_seq: 0,
        complete: false,
        digests: Vec::new(),
        created: Instant::now(),
    });
    // Another request for the same seq may have won the race while we decompressed.
    if buffer.next_seq != seq || buffer.complete {
        let expected = buffer.next_seq;
        drop(store);
        return reject(
            hub,
            &command_id,
            409,
            ErrorCode::MalformedMessage,
            format!("chunk {seq} out of order: expected {expected}"),
        );
    }
    if buffer.data.len() + plain.len() > MAX_BUFFER_BYTES {
        drop(store);
        return reject(
            hub,
            &command_id,
            413,
            ErrorCode::PayloadTooLarge,
            format!("result exceeds {MAX_BUFFER_BYTES} bytes"),
        );
    }
    buffer.data.extend_from_slice(&plain);
    buffer.digests.push(digest);
    buffer.next_seq += 1;
    buffer.complete = last;
    (200, serde_json::json!({ "bufferKey": key, "seq": seq }))
}
