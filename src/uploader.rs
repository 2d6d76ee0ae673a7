//! The uploader thread: compresses result chunks, signs them and POSTs them over HTTPS.
//!
//! It uses the same TLS 1.3 configuration as the link (see [`crate::https`]). Each chunk is
//! zlib-compressed, signed with the connection's HMAC key over its position and bytes, and sent
//! with up to three attempts and exponential backoff. Chunks are taken from a bounded channel in
//! order, so the sequence numbers of one result arrive in order.

use std::io::Write as _;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use drivers::CancelToken;
use flate2::Compression;
use flate2::write::ZlibEncoder;

use crate::protocol::{chunk_signature, headers};
use crate::worker::UploadTarget;

/// Attempts per chunk (spec §5.1: max 3).
pub const ATTEMPTS: u32 = 3;
/// Delay before the second attempt; doubled before each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

/// One slice of a result stream, uncompressed.
#[derive(Debug)]
pub struct Chunk {
    /// Upload settings of the connection the command came on.
    pub target: Arc<UploadTarget>,
    /// The command whose result this is.
    pub command_id: String,
    /// Position, from 0.
    pub seq: u32,
    /// Whether this is the final chunk.
    pub last: bool,
    /// Uncompressed NDJSON bytes.
    pub data: Vec<u8>,
    /// Stops retries when the command is cancelled.
    pub cancel: CancelToken,
    /// Where to report the outcome.
    pub reply: Sender<ChunkReply>,
}

/// Outcome of one chunk.
#[derive(Debug)]
pub enum ChunkReply {
    /// The gateway stored the chunk.
    Stored {
        /// The chunk.
        seq: u32,
        /// Buffer key the gateway assigned to the result.
        buffer_key: String,
    },
    /// Every attempt failed, or the gateway refused the chunk.
    Failed {
        /// The chunk.
        seq: u32,
        /// Why, for the `UPLOAD_FAILED` error.
        error: String,
    },
}

/// Starts the uploader. It ends when every `Sender<Chunk>` is dropped.
pub fn start(agent: ureq::Agent, chunks: Receiver<Chunk>) -> std::io::Result<JoinHandle<()>> {
    crate::spawn_named("uploader", move || {
        // Commands whose upload failed: their remaining chunks are dropped unsent. The worker
        // stops producing after a failure, so a final chunk may never come: keep only a few.
        let mut failed: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for chunk in chunks {
            if failed.contains(&chunk.command_id) {
                if chunk.last {
                    failed.retain(|id| id != &chunk.command_id);
                }
                continue;
            }
            let reply = match upload(&agent, &chunk) {
                Ok(buffer_key) => ChunkReply::Stored { seq: chunk.seq, buffer_key },
                Err(error) => {
                    tracing::warn!(command = %chunk.command_id, seq = chunk.seq, %error, "chunk upload failed");
                    if !chunk.last {
                        if failed.len() == 64 {
                            failed.pop_front();
                        }
                        failed.push_back(chunk.command_id.clone());
                    }
                    ChunkReply::Failed { seq: chunk.seq, error }
                }
            };
            let _ = chunk.reply.send(reply);
        }
    })
}

fn upload(agent: &ureq::Agent, chunk: &Chunk) -> Result<String, String> {
    let mut encoder = ZlibEncoder::new(Vec::with_capacity(chunk.data.len() / 4), Compression::fast());
    encoder.write_all(&chunk.data).map_err(|e| e.to_string())?;
    let body = encoder.finish().map_err(|e| e.to_string())?;
    let target = &chunk.target;
    let signature = hex::encode(chunk_signature(
        target.key.expose(),
        &target.connection_id,
        &chunk.command_id,
        chunk.seq,
        chunk.last,
        &body,
    ));
    let mut delay = FIRST_RETRY_DELAY;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        if chunk.cancel.is_cancelled() {
            return Err("command cancelled".into());
        }
        let response = agent
            .post(&target.url)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "deflate")
            .header(headers::CONNECTION, &target.connection_id)
            .header(headers::COMMAND, &chunk.command_id)
            .header(headers::SEQ, chunk.seq.to_string())
            .header(headers::FINAL, if chunk.last { "1" } else { "0" })
            .header(headers::SIGNATURE, &signature)
            .send(&body[..]);
        match response {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response.body_mut().read_to_string().unwrap_or_default();
                if status == 200 {
                    let value: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| format!("bad upload response: {e}"))?;
                    return value["bufferKey"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "upload response has no bufferKey".to_owned());
                }
                last_error =
                    format!("gateway answered {status}: {}", text.chars().take(300).collect::<String>());
                // 4xx: the gateway refused this chunk; retrying the same bytes cannot help.
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return Err(last_error);
                }
            }
            Err(e) => last_error = format!("attempt {attempt}: {e}"),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(delay);
            delay *= 2;
        }
    }
    Err(format!("chunk {} failed after {ATTEMPTS} attempts: {last_error}", chunk.seq))
}
