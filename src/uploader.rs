//! The uploader thread: compresses result chunks, signs them and POSTs them over HTTPS.
//!
//! It uses the same TLS 1.3 configuration as the link (see [`crate::https`]). Each chunk is
//! compressed with the encoding the current session's grant picked (`lz4`, or `deflate` = zlib
//! when the gateway names none: [`granted_encoding`]), signed with that session's HMAC key over
//! its position and bytes, and sent with up to three attempts and exponential backoff per
//! session. Chunks are taken
//! from a bounded channel in order, so the sequence numbers of one result arrive in order.
//! Every chunk gets exactly one [`ChunkReply`].
//!
//! **Uploads survive a reconnect.** The session's upload target lives in the [`UploadSlot`],
//! set by the supervisor on `connected` and cleared when the link drops. When a chunk cannot be
//! delivered on the current session (transport error after its attempts, `401`/`403` for an
//! unknown or ended session, or no session at all), the uploader waits for the next session
//! (until the chunk's deadline, at most [`UPLOAD_PATIENCE`] after the command started, or its
//! cancel) and re-sends the same chunk, re-signed with the new session's key. The gateway takes a
//! re-sent identical chunk idempotently (`200`); a chunk ahead of what it holds is `409` with
//! `{"nextSeq": n}`: the uploader resumes when `n` is the chunk it holds, else the result fails
//! with `UPLOAD_FAILED` (retryable). A request in flight is given up as soon as its session
//! ends (the link found the peer dead, or replaced the session): on a silently dropped network
//! the upload connection is as dead as the link, and waiting for the HTTP timeout (a minute)
//! would hold every running query's result behind it until their query timeouts fire.
//!
//! **Where chunks may go.** The cloud names the upload URL in `connected`; the agent does not
//! take its word for it. [`UploadPolicy`] accepts only `https` to the host and port of
//! `cloudUrl` or of an entry of `cloudUrlFallbacks` (the gateway's other nodes), or to a host
//! the configuration lists in `uploadHosts`; the supervisor checks the
//! URL once per session and the uploader can only POST to an [`UploadUrl`] that passed. A
//! refused URL means no request at all: chunks fail with `UPLOAD_FAILED` (not retryable) and a
//! warning is logged when the session starts. Redirects are not followed (see
//! [`crate::https`]), so an accepted URL cannot bounce a chunk elsewhere either.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use drivers::CancelToken;

use crate::protocol::{ContentEncoding, chunk_signature, headers};
use crate::worker::UploadTarget;

/// Attempts per chunk (spec §5.1: max 3).
pub const ATTEMPTS: u32 = 3;
/// Delay before the second attempt; doubled before each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// The longest a result's chunks wait for a session that takes them, from the command's start.
pub const UPLOAD_PATIENCE: Duration = Duration::from_secs(600);
/// How often a wait for the next session looks at the command's cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// Result sizes while no session says otherwise (the gateway's defaults).
const DEFAULT_MAX_CHUNK_BYTES: usize = 1 << 20;
const DEFAULT_MAX_INLINE_BYTES: usize = 256 * 1024;

/// The current session's upload target, shared by the supervisor (writer), the workers (result
/// sizes) and the uploader (where to POST, which key signs).
///
/// Every [`UploadSlot::set`] bumps a generation, so the uploader can wait for a session *newer*
/// than the one that failed it.
#[derive(Debug, Default)]
pub struct UploadSlot {
    state: Mutex<SlotState>,
    changed: Condvar,
    /// Compressed chunk bytes posted (every attempt), for the status snapshot.
    uploaded: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct SlotState {
    generation: u64,
    target: Option<Arc<UploadTarget>>,
}

/// The chunk encoding of a session from its grant's `contentEncoding`: `deflate` when the
/// gateway names none (it predates the field, or the agent offered nothing it reads), and,
/// with a warning, when it names one this agent did not offer.
pub fn granted_encoding(named: Option<&str>) -> ContentEncoding {
    match named.map(|name| (name, ContentEncoding::from_name(name))) {
        None => ContentEncoding::Deflate,
        Some((_, Some(encoding))) => encoding,
        Some((name, None)) => {
            let shown: String = name.chars().take(40).collect();
            tracing::warn!(
                "the gateway granted chunk encoding `{shown}`, which this agent did not offer; sending deflate"
            );
            ContentEncoding::Deflate
        }
    }
}

/// A chunk's compressed body, made for the encoding of the session it goes to (again only when
/// a later session picked another encoding).
struct Body {
    encoding: ContentEncoding,
    bytes: Arc<Vec<u8>>,
}

impl Body {
    fn for_session(
        cached: &mut Option<Body>,
        encoding: ContentEncoding,
        plain: &[u8],
    ) -> Result<Arc<Vec<u8>>, UploadError> {
        if let Some(body) = cached.as_ref().filter(|b| b.encoding == encoding) {
            return Ok(body.bytes.clone());
        }
        let bytes = Arc::new(encoding.encode(plain).map_err(|e| UploadError::retryable(e.to_string()))?);
        *cached = Some(Body { encoding, bytes: bytes.clone() });
        Ok(bytes)
    }
}

/// Result sizes a worker uses for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultSizes {
    /// Target uncompressed chunk size.
    pub max_chunk_bytes: usize,
    /// Largest result sent inline.
    pub max_inline_bytes: usize,
}

impl Default for ResultSizes {
    fn default() -> Self {
        Self { max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES, max_inline_bytes: DEFAULT_MAX_INLINE_BYTES }
    }
}

impl UploadSlot {
    /// An empty slot (no session).
    pub fn new() -> Self {
        Self::default()
    }

    /// Compressed chunk bytes posted since start (every attempt counts).
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the session's target (`connected`) or clears it (link down), and wakes every
    /// upload waiting for a session.
    pub fn set(&self, target: Option<UploadTarget>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.generation += 1;
        state.target = target.map(Arc::new);
        drop(state);
        self.changed.notify_all();
    }

    /// The generation and target now (`None`: no session).
    pub fn current(&self) -> (u64, Option<Arc<UploadTarget>>) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.generation, state.target.clone())
    }

    /// The result sizes of the current session, or the defaults while offline.
    pub fn sizes(&self) -> ResultSizes {
        match self.current().1 {
            Some(target) => ResultSizes {
                max_chunk_bytes: target.max_chunk_bytes,
                max_inline_bytes: target.max_inline_bytes,
            },
            None => ResultSizes::default(),
        }
    }

    /// Waits for a target of a generation newer than `after`; `None` when `deadline` passes or
    /// `cancel` fires first.
    pub fn wait_newer(
        &self,
        after: u64,
        deadline: Instant,
        cancel: &CancelToken,
    ) -> Option<(u64, Arc<UploadTarget>)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.generation > after
                && let Some(target) = &state.target
            {
                return Some((state.generation, target.clone()));
            }
            let now = Instant::now();
            if now >= deadline || cancel.is_cancelled() {
                return None;
            }
            let wait = (deadline - now).min(CANCEL_POLL);
            state = self.changed.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// One slice of a result stream, uncompressed.
#[derive(Debug)]
pub struct Chunk {
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
    /// Waiting for a session that takes the chunk ends here (`UPLOAD_FAILED`, retryable).
    pub deadline: Instant,
    /// Where to report the outcome.
    pub reply: Sender<ChunkReply>,
}

/// The hosts chunks may be POSTed to: `https` only, to the host and port of `cloudUrl` or of
/// an entry of `cloudUrlFallbacks`, or to an entry of `uploadHosts` (`host` = port 443,
/// `host:port`, `[v6]:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPolicy {
    /// `(lower-case host without brackets, port)`; the gateways' first, `cloudUrl`'s leading.
    allowed: Vec<(String, u16)>,
}

/// An upload URL that [`UploadPolicy::check`] accepted; nothing else can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadUrl(String);

impl UploadUrl {
    /// The URL as the cloud sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `(host, port)` of an `https`/`wss` URL, the host lower-cased without IPv6 brackets.
fn host_port(uri: &ureq::http::Uri) -> Option<(String, u16)> {
    let authority = uri.authority()?.as_str();
    let tail = authority.rsplit_once(']').map_or(authority, |(_, tail)| tail);
    if tail.contains(':') && uri.port_u16().is_none() {
        return None; // a port that is not a number
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    (!host.is_empty()).then(|| (host, uri.port_u16().unwrap_or(443)))
}

/// `scheme://host:port` of a URL, for logs and errors (never its path or query, which may carry
/// a token).
pub fn url_origin(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), host_port(&uri)) {
            (Some(scheme), Some((host, port))) if host.contains(':') => format!("{scheme}://[{host}]:{port}"),
            (Some(scheme), Some((host, port))) => format!("{scheme}://{host}:{port}"),
            _ => "(no host)".into(),
        },
        Err(_) => "(not a URL)".into(),
    }
}

impl UploadPolicy {
    /// The policy for an agent whose cloud is `cloud_url` (`wss://host[:port]/...`) and whose
    /// configuration allows `upload_hosts` besides it. `Err` names the bad entry.
    pub fn new(cloud_url: &str, upload_hosts: &[String]) -> Result<Self, String> {
        Self::for_gateways(std::slice::from_ref(&cloud_url), upload_hosts)
    }

    /// The policy for an agent that may dial any of `gateways` (`cloudUrl`, then
    /// `cloudUrlFallbacks`): the host and port of each, and `upload_hosts`. `Err` names the bad
    /// entry.
    pub fn for_gateways<S: AsRef<str>>(gateways: &[S], upload_hosts: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for (i, url) in gateways.iter().map(AsRef::as_ref).enumerate() {
            let gateway =
                url.parse::<ureq::http::Uri>().ok().and_then(|uri| host_port(&uri)).ok_or_else(|| {
                    let field = if i == 0 { "cloudUrl" } else { "cloudUrlFallbacks entry" };
                    format!("{field} `{}` has no host", url_origin(url))
                })?;
            if !allowed.contains(&gateway) {
                allowed.push(gateway);
            }
        }
        for entry in upload_hosts {
            let entry = entry.trim();
            if entry.is_empty() || entry.contains(['/', '@', '?', '#']) || entry.contains("://") {
                return Err(format!("`{entry}` is not a host or host:port (no scheme, path or user)"));
            }
            let parsed = format!("https://{entry}/")
                .parse::<ureq::http::Uri>()
                .ok()
                .and_then(|uri| host_port(&uri))
                .ok_or_else(|| format!("`{entry}` is not a host or host:port"))?;
            allowed.push(parsed);
        }
        Ok(Self { allowed })
    }

    /// A policy that accepts nothing (a supervisor built without one fails closed).
    pub fn deny_all() -> Self {
        Self { allowed: Vec::new() }
    }

    /// Accepts `url` if it is `https` to an allowed host and port, without user info.
    pub fn check(&self, url: &str) -> Result<UploadUrl, String> {
        let origin = url_origin(url);
        let uri: ureq::http::Uri =
            url.parse().map_err(|_| format!("upload URL `{origin}` is not a valid URL"))?;
        if !uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
            return Err(format!("upload URL `{origin}` is not https; chunks travel over TLS only"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("upload URL `{origin}` carries user info"));
        }
        let Some(target) = host_port(&uri) else {
            return Err(format!("upload URL `{origin}` has no host"));
        };
        if self.allowed.contains(&target) {
            Ok(UploadUrl(url.to_owned()))
        } else {
            Err(format!(
                "upload URL `{origin}` is neither the host and port of cloudUrl (or of an entry of \
                 cloudUrlFallbacks) nor listed in uploadHosts"
            ))
        }
    }
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
        /// Whether the cloud may retry the command (`UPLOAD_FAILED.retryable`): false when
        /// the upload URL was refused or the gateway said its refusal is final (over a cap).
        retryable: bool,
    },
}

/// Why a chunk could not be stored.
#[derive(Debug)]
struct UploadError {
    message: String,
    retryable: bool,
}

impl UploadError {
    fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// Starts the uploader. It ends when every `Sender<Chunk>` is dropped.
pub fn start(
    agent: ureq::Agent,
    slot: Arc<UploadSlot>,
    chunks: Receiver<Chunk>,
) -> std::io::Result<JoinHandle<()>> {
    crate::spawn_named("uploader", move || {
        // Results whose upload failed, by their reply channel (one per run of a command, so a
        // re-run of the same command starts clean): their remaining chunks are answered
        // without being sent. The worker stops producing after a failure, so a final chunk may
        // never come: keep only a few.
        let mut failed: std::collections::VecDeque<Sender<ChunkReply>> = std::collections::VecDeque::new();
        for chunk in chunks {
            if failed.iter().any(|run| run.same_channel(&chunk.reply)) {
                if chunk.last {
                    failed.retain(|run| !run.same_channel(&chunk.reply));
                }
                let _ = chunk.reply.send(ChunkReply::Failed {
                    seq: chunk.seq,
                    error: "an earlier chunk of this result failed".into(),
                    retryable: true,
                });
                continue;
            }
            let reply = match upload(&agent, &slot, &chunk) {
                Ok(buffer_key) => ChunkReply::Stored { seq: chunk.seq, buffer_key },
                Err(UploadError { message: error, retryable }) => {
                    tracing::warn!(command = %chunk.command_id, seq = chunk.seq, %error, "chunk upload failed");
                    if !chunk.last {
                        if failed.len() == 64 {
                            failed.pop_front();
                        }
                        failed.push_back(chunk.reply.clone());
                    }
                    ChunkReply::Failed { seq: chunk.seq, error, retryable }
                }
            };
            let _ = chunk.reply.send(reply);
        }
    })
}

/// How one session dealt with a chunk.
#[derive(Debug)]
enum SessionOutcome {
    Stored(String),
    /// This session cannot take it (gone, unreachable, refused as unknown): try the next one.
    NextSession(String),
    Failed(UploadError),
}

/// Delivers one chunk on the current session, or the next ones, until it is stored, refused
/// for good, cancelled, or its deadline passes.
fn upload(agent: &ureq::Agent, slot: &UploadSlot, chunk: &Chunk) -> Result<String, UploadError> {
    let mut body = None;
    let (mut generation, mut target) = slot.current();
    let mut last_error = String::from("no session to upload to");
    loop {
        if chunk.cancel.is_cancelled() {
            return Err(UploadError::retryable("command cancelled"));
        }
        let current = match target.take() {
            Some(current) => current,
            None => match slot.wait_newer(generation, chunk.deadline, &chunk.cancel) {
                Some((newer, current)) => {
                    generation = newer;
                    current
                }
                None if chunk.cancel.is_cancelled() => {
                    return Err(UploadError::retryable("command cancelled"));
                }
                None => {
                    return Err(UploadError::retryable(format!(
                        "chunk {} not delivered before its deadline: {last_error}",
                        chunk.seq
                    )));
                }
            },
        };
        let body = Body::for_session(&mut body, current.encoding, &chunk.data)?;
        match send_on_session(agent, slot, generation, &current, chunk, &body) {
            SessionOutcome::Stored(key) => return Ok(key),
            SessionOutcome::Failed(error) => return Err(error),
            SessionOutcome::NextSession(why) => {
                tracing::info!(
                    command = %chunk.command_id,
                    seq = chunk.seq,
                    reason = %why,
                    "chunk waits for the next session"
                );
                last_error = why;
            }
        }
    }
}

/// Up to [`ATTEMPTS`] POSTs of one chunk on one session (`generation` of the slot).
fn send_on_session(
    agent: &ureq::Agent,
    slot: &UploadSlot,
    generation: u64,
    target: &UploadTarget,
    chunk: &Chunk,
    body: &Arc<Vec<u8>>,
) -> SessionOutcome {
    // No request at all to a URL the policy refused (checked when the session started).
    let url = match &target.url {
        Ok(url) => url,
        Err(reason) => {
            return SessionOutcome::Failed(UploadError::fatal(format!("upload refused: {reason}")));
        }
    };
    let signature = hex::encode(chunk_signature(
        target.key.expose(),
        &target.connection_id,
        &chunk.command_id,
        chunk.seq,
        chunk.last,
        body,
    ));
    let mut delay = FIRST_RETRY_DELAY;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        if chunk.cancel.is_cancelled() {
            return SessionOutcome::Failed(UploadError::retryable("command cancelled"));
        }
        // A newer session came up meanwhile: re-sign for it instead of knocking on the old one.
        if slot.current().0 != generation {
            return SessionOutcome::NextSession("the session changed".into());
        }
        let request = agent
            .post(url.as_str())
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", target.encoding.as_str())
            .header(headers::CONNECTION, &target.connection_id)
            .header(headers::COMMAND, &chunk.command_id)
            .header(headers::SEQ, chunk.seq.to_string())
            .header(headers::FINAL, if chunk.last { "1" } else { "0" })
            .header(headers::SIGNATURE, &signature);
        let posted = post_while_session_lives(request, body, slot, generation, &chunk.cancel);
        slot.uploaded.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match posted {
            Posted::Answer(status, text) => {
                if let Some(outcome) = judge(status, &text, chunk.seq) {
                    return outcome;
                }
                last_error =
                    format!("gateway answered {status}: {}", text.chars().take(300).collect::<String>());
            }
            Posted::Error(e) => last_error = format!("attempt {attempt}: {e}"),
            Posted::SessionEnded => {
                return SessionOutcome::NextSession(format!(
                    "the session ended while chunk {} was on its way (attempt {attempt})",
                    chunk.seq
                ));
            }
            Posted::Cancelled => return SessionOutcome::Failed(UploadError::retryable("command cancelled")),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(delay);
            delay *= 2;
        }
    }
    SessionOutcome::NextSession(format!("chunk {} failed after {ATTEMPTS} attempts: {last_error}", chunk.seq))
}

/// How one POST of a chunk ended.
#[derive(Debug)]
enum Posted {
    /// The gateway answered: status and body.
    Answer(u16, String),
    /// The request failed (transport error, timeout).
    Error(String),
    /// The session the chunk was signed for ended (the link found it dead or replaced it)
    /// before the answer came: the chunk goes to the next session.
    SessionEnded,
    /// The command was cancelled meanwhile.
    Cancelled,
}

/// How often a POST in flight looks whether its session still lives.
const SESSION_POLL: Duration = Duration::from_millis(50);

/// POSTs `body` and waits for the answer only while the session of slot generation
/// `generation` lives. An upload connection goes through the same network as the link, and a
/// silently dropped network does not fail a request until the HTTP timeout (a minute): the
/// link finds such a peer dead within two heartbeats and clears the slot, and the uploader
/// moves on with it instead of holding every worker's result (and its query timeout) for the
/// rest of that minute. The abandoned request ends on its own at the HTTP timeout; a chunk it
/// still delivers is stored once (the gateway takes the same bytes again idempotently).
fn post_while_session_lives(
    request: ureq::RequestBuilder<ureq::typestate::WithBody>,
    body: &Arc<Vec<u8>>,
    slot: &UploadSlot,
    generation: u64,
    cancel: &CancelToken,
) -> Posted {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let body = body.clone();
    let spawned = std::thread::Builder::new().name("upload-post".into()).spawn(move || {
        let posted = match request.send(body.as_slice()) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                Posted::Answer(status, response.body_mut().read_to_string().unwrap_or_default())
            }
            Err(e) => Posted::Error(e.to_string()),
        };
        let _ = tx.send(posted);
    });
    if let Err(e) = spawned {
        return Posted::Error(format!("cannot start the request: {e}"));
    }
    loop {
        match rx.recv_timeout(SESSION_POLL) {
            Ok(posted) => return posted,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Posted::Error("the request ended without an answer".into());
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if cancel.is_cancelled() {
            return Posted::Cancelled;
        }
        if slot.current().0 != generation {
            return Posted::SessionEnded;
        }
    }
}

/// What an HTTP answer to chunk `seq` means; `None`: worth another attempt on this session.
fn judge(status: u16, text: &str, seq: u32) -> Option<SessionOutcome> {
    let answer = || format!("gateway answered {status}: {}", text.chars().take(300).collect::<String>());
    let json = serde_json::from_str::<serde_json::Value>(text).ok();
    if status == 200 {
        let key = json.as_ref().and_then(|v| v["bufferKey"].as_str()).map(str::to_owned);
        return Some(match key {
            Some(key) => SessionOutcome::Stored(key),
            None => SessionOutcome::Failed(UploadError::retryable(format!(
                "bad upload response (no bufferKey): {}",
                answer()
            ))),
        });
    }
    // Redirects are not followed: the chunk goes to the accepted URL or nowhere.
    if (300..400).contains(&status) {
        return Some(SessionOutcome::Failed(UploadError::fatal(format!(
            "{} (redirects are not followed)",
            answer()
        ))));
    }
    let code = json.as_ref().and_then(|v| v["code"].as_str()).unwrap_or_default();
    // The session is unknown or ended at the gateway (a signature that does not match is our
    // fault, not the session's, and would fail again).
    if matches!(status, 401 | 403) && code != "CHUNK_SIGNATURE_INVALID" {
        return Some(SessionOutcome::NextSession(answer()));
    }
    // The gateway holds a different prefix of this result than we assumed.
    if status == 409
        && let Some(next) = json.as_ref().and_then(|v| v["nextSeq"].as_u64())
    {
        if next == u64::from(seq) {
            // It wants exactly this chunk: send it again (within this session's attempts).
            return None;
        }
        return Some(SessionOutcome::Failed(UploadError::retryable(format!(
            "the gateway expects chunk {next} of this result and the agent holds only chunk {seq}: {}",
            answer()
        ))));
    }
    // 4xx: the gateway refused this chunk; retrying the same bytes cannot help. Its error body
    // says whether the command may be retried (`retryable: false` for a result over its caps).
    if (400..500).contains(&status) && status != 408 && status != 429 {
        let flag = json.as_ref().and_then(|v| v["retryable"].as_bool());
        let retryable = flag.unwrap_or(status != 413);
        return Some(SessionOutcome::Failed(UploadError { message: answer(), retryable }));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crossbeam_channel::Receiver;
    use drivers::CancelToken;

    use super::test_endpoint::Endpoint;
    use super::{Chunk, ChunkReply, ContentEncoding, UploadPolicy, UploadSlot};

    /// Longest any single wait in these tests may take.
    const WATCHDOG: Duration = Duration::from_secs(20);

    struct Rig {
        endpoint: Endpoint,
        slot: Arc<UploadSlot>,
        chunks: Option<crossbeam_channel::Sender<Chunk>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Rig {
        fn new(tag: &str) -> Self {
            let endpoint = Endpoint::start(tag);
            let slot = Arc::new(UploadSlot::new());
            let (tx, rx) = crossbeam_channel::bounded(2);
            let thread = super::start(endpoint.agent(), slot.clone(), rx).unwrap();
            Self { endpoint, slot, chunks: Some(tx), thread: Some(thread) }
        }

        fn send(
            &self,
            command: &str,
            seq: u32,
            last: bool,
            cancel: &CancelToken,
            patience: Duration,
        ) -> Receiver<ChunkReply> {
            let (reply, replies) = crossbeam_channel::unbounded();
            self.send_on(&reply, command, seq, last, cancel, patience);
            replies
        }

        /// Sends a chunk whose answer goes to `reply` (one channel per run of a command).
        fn send_on(
            &self,
            reply: &crossbeam_channel::Sender<ChunkReply>,
            command: &str,
            seq: u32,
            last: bool,
            cancel: &CancelToken,
            patience: Duration,
        ) {
            let reply = reply.clone();
            let data = format!("[{seq}, \"row of {command}\"]\n").repeat(50).into_bytes();
            let chunk = Chunk {
                command_id: command.into(),
                seq,
                last,
                data,
                cancel: cancel.clone(),
                deadline: Instant::now() + patience,
                reply,
            };
            self.chunks.as_ref().unwrap().send(chunk).unwrap();
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.chunks.take();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    fn stored(reply: ChunkReply) -> String {
        match reply {
            ChunkReply::Stored { buffer_key, .. } => buffer_key,
            ChunkReply::Failed { error, .. } => panic!("chunk failed: {error}"),
        }
    }

    fn failed(reply: ChunkReply) -> (String, bool) {
        match reply {
            ChunkReply::Failed { error, retryable, .. } => (error, retryable),
            ChunkReply::Stored { seq, .. } => panic!("chunk {seq} was stored"),
        }
    }

    #[test]
    fn a_chunk_made_while_offline_waits_for_the_next_session() {
        let rig = Rig::new("offline");
        let replies = rig.send("c1", 0, true, &CancelToken::new(), WATCHDOG);
        assert!(replies.recv_timeout(Duration::from_millis(300)).is_err(), "answered with no session");
        assert!(rig.endpoint.seen().is_empty(), "a request was made with no session");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        assert_eq!(stored(replies.recv_timeout(WATCHDOG).unwrap()), "buf:c1");
        let seen = rig.endpoint.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].connection.as_str(), seen[0].command.as_str(), seen[0].status),
            ("s1", "c1", 200)
        );
    }

    #[test]
    fn a_chunk_whose_post_hangs_goes_to_the_next_session_as_soon_as_the_link_drops_its_session() {
        // Issue 9, silent drops: the upload connection goes through the same dead network as
        // the link. The link finds its peer dead within two heartbeats and the supervisor
        // clears the slot; the chunk must move to the next session then, not when the HTTP
        // timeout (here 10 s, a minute in the agent) ends the stalled request — meanwhile every
        // worker's result waits behind it and their queries time out.
        let rig = Rig::new("stalled");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        rig.endpoint.state.lock().unwrap().stall_next = true;
        let replies = rig.send("c1", 0, true, &CancelToken::new(), WATCHDOG);
        let deadline = Instant::now() + WATCHDOG;
        while rig.endpoint.state.lock().unwrap().stalled == 0 {
            assert!(Instant::now() < deadline, "the chunk never reached the endpoint");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The link declares the session dead, then a new one comes up.
        let dropped = Instant::now();
        rig.slot.set(None);
        rig.slot.set(Some(rig.endpoint.new_session("s2")));
        assert_eq!(stored(replies.recv_timeout(WATCHDOG).unwrap()), "buf:c1");
        let took = dropped.elapsed();
        assert!(took < Duration::from_secs(3), "the chunk waited {took:?} for its stalled request");
        let seen = rig.endpoint.seen();
        assert_eq!((seen.len(), seen[0].connection.as_str(), seen[0].status), (1, "s2", 200), "{seen:?}");
    }

    #[test]
    fn a_chunk_refused_by_an_ended_session_is_re_signed_for_the_next_one() {
        let rig = Rig::new("resign");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        let cancel = CancelToken::new();
        stored(rig.send("c1", 0, false, &cancel, WATCHDOG).recv_timeout(WATCHDOG).unwrap());
        // The gateway has a new session (the link was cut); the agent has not heard yet.
        let next = rig.endpoint.new_session("s2");
        let replies = rig.send("c1", 1, true, &cancel, WATCHDOG);
        let deadline = Instant::now() + WATCHDOG;
        while !rig.endpoint.seen().iter().any(|s| s.seq == 1 && s.status == 401) {
            assert!(Instant::now() < deadline, "chunk 1 never tried the ended session");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(replies.try_recv().is_err(), "answered before a new session came up");
        rig.slot.set(None);
        rig.slot.set(Some(next));
        assert_eq!(stored(replies.recv_timeout(WATCHDOG).unwrap()), "buf:c1");
        let seen: Vec<_> =
            rig.endpoint.seen().iter().map(|s| (s.connection.clone(), s.seq, s.status)).collect();
        assert_eq!(
            seen,
            [("s1".into(), 0, 200), ("s1".into(), 1, 401), ("s2".into(), 1, 200)],
            "one refusal, then the same chunk on the new session"
        );
        assert_eq!(rig.endpoint.state.lock().unwrap().stored["c1"].len(), 2);
    }

    #[test]
    fn each_chunk_is_compressed_as_its_sessions_grant_says_and_again_for_a_session_that_picked_otherwise() {
        let rig = Rig::new("encodings");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        let cancel = CancelToken::new();
        stored(rig.send("c1", 0, false, &cancel, WATCHDOG).recv_timeout(WATCHDOG).unwrap());
        // The next session is with a gateway that predates chunk encodings: its grant names
        // none, so deflate; chunk 1, compressed as LZ4 for s1, goes there as zlib.
        let mut old = rig.endpoint.new_session("s2");
        old.encoding = super::granted_encoding(None);
        let replies = rig.send("c1", 1, true, &cancel, WATCHDOG);
        let deadline = Instant::now() + WATCHDOG;
        while !rig.endpoint.seen().iter().any(|s| s.seq == 1 && s.status == 401) {
            assert!(Instant::now() < deadline, "chunk 1 never tried the ended session");
            std::thread::sleep(Duration::from_millis(10));
        }
        rig.slot.set(None);
        rig.slot.set(Some(old));
        assert_eq!(stored(replies.recv_timeout(WATCHDOG).unwrap()), "buf:c1");
        let state = rig.endpoint.state.lock().unwrap();
        assert_eq!(state.encodings, [ContentEncoding::Lz4, ContentEncoding::Deflate]);
        let expected = |seq: u32| format!("[{seq}, \"row of c1\"]\n").repeat(50).into_bytes();
        assert_eq!(state.stored["c1"], [expected(0), expected(1)], "both decompress to the rows sent");
    }

    #[test]
    fn the_granted_encoding_is_deflate_unless_the_gateway_names_one_this_agent_offered() {
        assert_eq!(super::granted_encoding(None), ContentEncoding::Deflate, "an old gateway");
        assert_eq!(super::granted_encoding(Some("lz4")), ContentEncoding::Lz4);
        assert_eq!(super::granted_encoding(Some("deflate")), ContentEncoding::Deflate);
        assert_eq!(super::granted_encoding(Some("zstd")), ContentEncoding::Deflate, "not offered");
        assert_eq!(
            crate::protocol::ContentEncoding::offer(),
            ["lz4", "deflate"],
            "the offer in auth, best first"
        );
    }

    #[test]
    fn a_chunk_that_fails_every_attempt_waits_for_the_next_session() {
        let rig = Rig::new("attempts");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        rig.endpoint.state.lock().unwrap().forced = vec![503; super::ATTEMPTS as usize];
        let replies = rig.send("c1", 0, true, &CancelToken::new(), WATCHDOG);
        let deadline = Instant::now() + WATCHDOG;
        while rig.endpoint.seen().len() < super::ATTEMPTS as usize {
            assert!(Instant::now() < deadline, "fewer than {} attempts", super::ATTEMPTS);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(replies.recv_timeout(Duration::from_millis(300)).is_err(), "gave up on a transient error");
        assert_eq!(rig.endpoint.seen().len(), super::ATTEMPTS as usize, "more attempts on the same session");
        rig.slot.set(Some(rig.endpoint.new_session("s2")));
        stored(replies.recv_timeout(WATCHDOG).unwrap());
        let last = rig.endpoint.seen().pop().unwrap();
        assert_eq!((last.connection.as_str(), last.status), ("s2", 200));
    }

    #[test]
    fn an_unreachable_upload_host_waits_for_the_next_session() {
        let rig = Rig::new("unreachable");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let policy = UploadPolicy::new(&format!("wss://127.0.0.1:{port}/ws"), &[]).unwrap();
        let mut dead = rig.endpoint.target("s1", crate::protocol::SecretBytes::random(32));
        dead.url = policy.check(&format!("https://127.0.0.1:{port}/upload"));
        rig.slot.set(Some(dead));
        let replies = rig.send("c1", 0, true, &CancelToken::new(), WATCHDOG);
        // Three attempts take 250 + 500 ms of backoff; then the chunk waits.
        assert!(replies.recv_timeout(Duration::from_millis(1200)).is_err(), "gave up on a dead host");
        rig.slot.set(Some(rig.endpoint.new_session("s2")));
        stored(replies.recv_timeout(WATCHDOG).unwrap());
    }

    #[test]
    fn a_gateway_that_lost_earlier_chunks_fails_the_result_retryable() {
        let rig = Rig::new("lost");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        // The gateway restarted and holds nothing: chunk 3 is ahead (409, nextSeq 0).
        let (run, replies) = crossbeam_channel::unbounded();
        let cancel = CancelToken::new();
        rig.send_on(&run, "c1", 3, false, &cancel, WATCHDOG);
        let (error, retryable) = failed(replies.recv_timeout(WATCHDOG).unwrap());
        assert!(retryable);
        assert!(error.contains("expects chunk 0"), "{error}");
        // Every later chunk of that run is answered too, without a request.
        let requests = rig.endpoint.seen().len();
        rig.send_on(&run, "c1", 4, true, &cancel, WATCHDOG);
        let (error, retryable) = failed(replies.recv_timeout(WATCHDOG).unwrap());
        assert!(retryable && error.contains("earlier chunk"), "{error}");
        assert_eq!(rig.endpoint.seen().len(), requests);
    }

    #[test]
    fn a_re_run_of_a_command_whose_upload_failed_uploads_again() {
        let rig = Rig::new("rerun");
        rig.slot.set(Some(rig.endpoint.new_session("s1")));
        // The first run fails on a non-final chunk and is abandoned (no final chunk comes).
        let (error, _) =
            failed(rig.send("c1", 2, false, &CancelToken::new(), WATCHDOG).recv_timeout(WATCHDOG).unwrap());
        assert!(error.contains("expects chunk 0"), "{error}");
        // The command runs again (re-delivered): its chunks are sent, not answered from the
        // failure of the first run.
        let (run, replies) = crossbeam_channel::unbounded();
        rig.send_on(&run, "c1", 0, false, &CancelToken::new(), WATCHDOG);
        rig.send_on(&run, "c1", 1, true, &CancelToken::new(), WATCHDOG);
        stored(replies.recv_timeout(WATCHDOG).unwrap());
        stored(replies.recv_timeout(WATCHDOG).unwrap());
        assert_eq!(rig.endpoint.state.lock().unwrap().stored["c1"].len(), 2);
    }

    #[test]
    fn the_deadline_and_the_cancel_token_end_the_wait_for_a_session() {
        let rig = Rig::new("deadline");
        let started = Instant::now();
        let (error, retryable) = failed(
            rig.send("c1", 0, true, &CancelToken::new(), Duration::from_millis(300))
                .recv_timeout(WATCHDOG)
                .unwrap(),
        );
        assert!(retryable && error.contains("deadline"), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let cancel = CancelToken::new();
        let replies = rig.send("c2", 0, true, &cancel, WATCHDOG);
        cancel.cancel();
        let (error, _) = failed(replies.recv_timeout(Duration::from_secs(2)).unwrap());
        assert!(error.contains("cancelled"), "{error}");
        assert!(rig.endpoint.seen().is_empty());
    }

    #[test]
    fn the_slot_reports_sizes_and_wakes_waiters() {
        let slot = Arc::new(UploadSlot::new());
        assert_eq!(slot.sizes(), super::ResultSizes::default());
        let (generation, none) = slot.current();
        assert!(none.is_none());
        let waiter = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                slot.wait_newer(generation, Instant::now() + WATCHDOG, &CancelToken::new())
            })
        };
        let endpoint = Endpoint::start("slot");
        slot.set(Some(endpoint.target("s9", crate::protocol::SecretBytes::random(32))));
        let (newer, target) = waiter.join().unwrap().expect("woken by set");
        assert!(newer > generation);
        assert_eq!(target.connection_id, "s9");
        assert_eq!(slot.sizes().max_chunk_bytes, 4096);
        slot.set(None);
        assert_eq!(slot.sizes(), super::ResultSizes::default());
        assert!(
            slot.wait_newer(newer, Instant::now() + Duration::from_millis(50), &CancelToken::new()).is_none()
        );
    }

    #[test]
    fn only_https_to_the_cloud_host_and_port_or_a_listed_host_passes() {
        let policy =
            UploadPolicy::new("wss://Cloud.Example.com/ws", &["files.example.com:8443".into()]).unwrap();
        assert!(policy.check("https://cloud.example.com/upload").is_ok());
        assert!(policy.check("https://cloud.example.com:443/upload?t=1").is_ok());
        assert!(policy.check("https://files.example.com:8443/u").is_ok());
        for (url, why) in [
            ("http://cloud.example.com/upload", "not https"),
            ("HTTP://cloud.example.com/upload", "not https"),
            ("https://cloud.example.com:8443/upload", "neither"),
            ("https://evil.example.net/upload", "neither"),
            ("https://cloud.example.com.evil.net/upload", "neither"),
            ("https://cloud.example.com@evil.net/upload", "user info"),
            ("https://files.example.com/u", "neither"),
            ("wss://cloud.example.com/upload", "not https"),
            ("/upload", "not https"),
            ("not a url at all", "not a valid URL"),
        ] {
            let err = policy.check(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        let v6 = UploadPolicy::new("wss://[::1]:9443/ws", &[]).unwrap();
        assert!(v6.check("https://[::1]:9443/upload").is_ok());
        assert!(v6.check("https://127.0.0.1:9443/upload").is_err());
        assert!(UploadPolicy::deny_all().check("https://cloud.example.com/upload").is_err());
    }

    #[test]
    fn bad_upload_hosts_entries_are_refused() {
        for entry in ["https://x.example.com", "x.example.com/path", "user@x.example.com", "", "x:notaport"] {
            assert!(UploadPolicy::new("wss://cloud.example.com/ws", &[entry.into()]).is_err(), "{entry}");
        }
        assert!(UploadPolicy::new("wss://cloud.example.com/ws", &["[::1]:8443".into(), "h".into()]).is_ok());
    }

    #[test]
    fn errors_and_logs_show_only_the_origin() {
        assert_eq!(
            super::url_origin("https://h.example.com/upload?token=s3cret"),
            "https://h.example.com:443"
        );
        assert_eq!(super::url_origin("http://[::1]:80/x"), "http://[::1]:80");
        let policy = UploadPolicy::new("wss://cloud.example.com/ws", &[]).unwrap();
        let err = policy.check("http://evil.example.net/upload?token=s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}

/// A scripted HTTPS upload endpoint for unit tests: real TLS 1.3 (the reference gateway's
/// generated certificate), real HTTP/1.1 with keep-alive, and the gateway's chunk rules for
/// uploads that outlive a session (the current session's key signs; a re-sent identical chunk
/// is `200`; a chunk ahead is `409 {"nextSeq"}`; an unknown session is `401`).
#[cfg(test)]
pub(crate) mod test_endpoint {
    use std::collections::HashMap;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::protocol::{SecretBytes, headers, verify_chunk_signature};
    use crate::worker::UploadTarget;

    /// One chunk request as the endpoint saw it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub connection: String,
        pub command: String,
        pub seq: u32,
        pub status: u16,
    }

    #[derive(Debug, Default)]
    pub struct State {
        /// The connector's current session: `(connection id, HMAC key)`.
        pub session: Option<(String, Vec<u8>)>,
        /// command -> bytes of each stored chunk, decompressed.
        pub stored: HashMap<String, Vec<Vec<u8>>>,
        pub seen: Vec<Seen>,
        /// Answer this status (once per entry) before judging a request.
        pub forced: Vec<u16>,
        /// Never answer the next request and hold its connection open (a silently dropped
        /// network); counts the requests held so.
        pub stall_next: bool,
        pub stalled: usize,
        /// The content encoding of each signed request, in order.
        pub encodings: Vec<crate::protocol::ContentEncoding>,
    }

    pub struct Endpoint {
        pub url: String,
        pub ca: PathBuf,
        pub state: Arc<Mutex<State>>,
        dir: PathBuf,
        stop: Arc<AtomicBool>,
        port: u16,
    }

    impl Endpoint {
        pub fn start(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("mc-upload-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            // The reference gateway generates a certificate for localhost / 127.0.0.1.
            let gateway = gateway::Gateway::start(gateway::GatewayConfig::new(dir.join("gw"))).unwrap();
            let ca = gateway.ca_cert_path();
            gateway.shutdown();
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&ca).unwrap().collect::<Result<_, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_file(ca.with_file_name("key.pem")).unwrap();
            let config = Arc::new(
                rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
            );
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let state = Arc::new(Mutex::new(State::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let (state2, stop2) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let (config, state) = (config.clone(), state2.clone());
                    std::thread::spawn(move || {
                        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        let stream = rustls::StreamOwned::new(conn, tcp);
                        serve(stream, &state);
                    });
                }
            });
            Self { url: format!("https://127.0.0.1:{port}/upload"), ca, state, dir, stop, port }
        }

        /// Starts a new session at the endpoint (the old one becomes unknown) and returns the
        /// target the supervisor would put in the slot for it.
        pub fn new_session(&self, connection_id: &str) -> UploadTarget {
            let key = SecretBytes::random(32);
            self.state.lock().unwrap().session = Some((connection_id.to_owned(), key.expose().to_vec()));
            self.target(connection_id, key)
        }

        /// A target for this endpoint's URL (whatever the endpoint thinks of the session).
        pub fn target(&self, connection_id: &str, key: SecretBytes) -> UploadTarget {
            let policy = super::UploadPolicy::new(&format!("wss://127.0.0.1:{}/ws", self.port), &[]).unwrap();
            UploadTarget {
                url: policy.check(&self.url),
                connection_id: connection_id.to_owned(),
                key,
                max_chunk_bytes: 4096,
                max_inline_bytes: 4096,
                encoding: crate::protocol::ContentEncoding::Lz4,
            }
        }

        pub fn agent(&self) -> ureq::Agent {
            let tls = crate::tls::client_config(Some(&self.ca)).unwrap();
            crate::https::agent(tls, crate::proxy::ProxySettings::direct(), Duration::from_secs(10)).unwrap()
        }

        pub fn seen(&self) -> Vec<Seen> {
            self.state.lock().unwrap().seen.clone()
        }
    }

    impl Drop for Endpoint {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn serve(
        stream: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
        state: &Mutex<State>,
    ) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut head = HashMap::new();
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    head.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len = head.get("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let stall = {
                let mut state = state.lock().unwrap();
                let stall = std::mem::take(&mut state.stall_next);
                state.stalled += usize::from(stall);
                stall
            };
            if stall {
                // Longer than any test waits; the connection stays open and silent.
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            let (status, json) = judge(&head, &body, state);
            let text = json.to_string();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            let stream = reader.get_mut();
            if stream.write_all(response.as_bytes()).and_then(|()| stream.flush()).is_err() {
                return;
            }
        }
    }

    fn judge(head: &HashMap<String, String>, body: &[u8], state: &Mutex<State>) -> (u16, serde_json::Value) {
        let get = |name: &str| head.get(name).cloned().unwrap_or_default();
        let (connection, command) = (get(headers::CONNECTION), get(headers::COMMAND));
        let seq: u32 = get(headers::SEQ).parse().unwrap_or(u32::MAX);
        let last = get(headers::FINAL) == "1";
        let mut state = state.lock().unwrap();
        let (status, json) = if !state.forced.is_empty() {
            let status = state.forced.remove(0);
            (status, serde_json::json!({ "code": "INTERNAL_ERROR", "message": "forced", "retryable": true }))
        } else {
            match state.session.clone() {
                Some((current, key)) if current == connection => {
                    if !verify_chunk_signature(
                        &key,
                        &connection,
                        &command,
                        seq,
                        last,
                        body,
                        &get(headers::SIGNATURE),
                    ) {
                        (
                            401,
                            serde_json::json!({ "code": "CHUNK_SIGNATURE_INVALID", "message": "bad", "retryable": false }),
                        )
                    } else {
                        let encoding = crate::protocol::ContentEncoding::from_name(&get("content-encoding"))
                            .expect("a known content-encoding");
                        state.encodings.push(encoding);
                        let mut plain = Vec::new();
                        encoding.decoder(body).unwrap().read_to_end(&mut plain).unwrap();
                        let stored = state.stored.entry(command.clone()).or_default();
                        let next = stored.len() as u32;
                        if seq < next {
                            assert_eq!(stored[seq as usize], plain, "a re-sent chunk must be identical");
                            (
                                200,
                                serde_json::json!({ "bufferKey": format!("buf:{command}"), "seq": seq, "duplicate": true }),
                            )
                        } else if seq > next {
                            (
                                409,
                                serde_json::json!({ "code": "MALFORMED_MESSAGE", "message": "ahead", "retryable": false, "nextSeq": next }),
                            )
                        } else {
                            stored.push(plain);
                            (200, serde_json::json!({ "bufferKey": format!("buf:{command}"), "seq": seq }))
                        }
                    }
                }
                _ => (
                    401,
                    serde_json::json!({ "code": "AUTH_FAILED", "message": "unknown connection", "retryable": false }),
                ),
            }
        };
        state.seen.push(Seen { connection, command, seq, status });
        (status, json)
    }
}
