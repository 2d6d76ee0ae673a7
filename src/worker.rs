//! Query workers: a small pool of threads pulling jobs from one bounded channel.
//!
//! A worker runs the query through the driver's pool (read-only session, timeout, cancel token)
//! and encodes rows as they arrive into the result stream (NDJSON: a `{"columns":[..]}` line,
//! then one JSON array per row). A result that stays under `maxInlineBytes` travels inline in
//! `execution_result`; a larger one is cut into ~`maxChunkBytes` chunks at row boundaries and
//! handed to the uploader through a bounded channel, so a slow upload slows the database cursor
//! instead of growing memory. The sizes come from the [`UploadSlot`] when the job starts (the
//! gateway's defaults while offline); the chunks are signed for whichever session is current
//! when they are sent, so a result survives a reconnect.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use drivers::{CancelToken, Cell, ColumnMeta, Database, DriverError, QueryOptions, RowSink, SinkError};
use sha2::{Digest, Sha256};

use crate::protocol::{
    Command, ErrorBody, ErrorCode, ExecutionError, ExecutionResult, InlineRows, Outbound, ResultPayload,
    SecretBytes,
};
use crate::supervisor::SupMsg;
use crate::uploader::{Chunk, ChunkReply, ResultSizes, UPLOAD_PATIENCE, UploadSlot};

/// Where and how large results are uploaded, from the current connection's `connected` frame
/// (kept in the [`UploadSlot`] while that session lasts).
#[derive(Debug)]
pub struct UploadTarget {
    /// HTTPS URL for chunks, if [`crate::uploader::UploadPolicy`] accepted the one the cloud
    /// named; else why not (chunks then fail with `UPLOAD_FAILED`, no request is made).
    pub url: Result<crate::uploader::UploadUrl, String>,
    /// The session the chunks belong to.
    pub connection_id: String,
    /// Per-connection HMAC key.
    pub key: SecretBytes,
    /// Target uncompressed chunk size.
    pub max_chunk_bytes: usize,
    /// Largest result sent inline.
    pub max_inline_bytes: usize,
    /// How chunks are compressed on this session (the grant's `contentEncoding`; `deflate`
    /// when it names none).
    pub encoding: crate::protocol::ContentEncoding,
}

/// Work for the pool.
#[derive(Debug)]
pub enum Job {
    /// Run one command.
    Query(Box<QueryJob>),
    /// Discover the schema of these databases and report it (each on its own: one database
    /// that is down does not hide the others).
    Discover(Vec<Database>),
    /// Stop, on the database server, the first run of a command that was running when the agent
    /// stopped (`session` as the driver described it when the statement was sent).
    CancelStale {
        /// The command.
        command_id: String,
        /// Its database.
        db: Database,
        /// The server session that ran it.
        session: String,
    },
}

/// One command to run.
#[derive(Debug)]
pub struct QueryJob {
    /// The command as received.
    pub command: Command,
    /// Target database.
    pub db: Database,
    /// The gate's verdict on the command's query: the exact text the driver runs.
    pub checked: gate::Checked,
    /// Set by the supervisor on `cancel` or shutdown.
    pub cancel: CancelToken,
    /// Query timeout.
    pub timeout: Duration,
    /// When the command arrived (for `durationMs`).
    pub received: Instant,
    /// The result may not grow beyond this many NDJSON bytes (before compression).
    pub max_result_bytes: u64,
}

/// Starts `count` workers. They end when every `Sender<Job>` is dropped.
pub fn start(
    count: u32,
    jobs: Receiver<Job>,
    uploader: Sender<Chunk>,
    slot: Arc<UploadSlot>,
    supervisor: Sender<SupMsg>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|i| {
            let (jobs, uploader, supervisor) = (jobs.clone(), uploader.clone(), supervisor.clone());
            let slot = slot.clone();
            crate::spawn_named(&format!("worker-{i}"), move || {
                for job in jobs {
                    let msg = match job {
                        Job::Query(job) => {
                            let frame = run_query(&job, &uploader, slot.sizes(), &supervisor);
                            SupMsg::Finished {
                                command_id: job.command.command_id.clone(),
                                frame: Box::new(frame),
                            }
                        }
                        Job::Discover(dbs) => SupMsg::Discovered(discover(&dbs)),
                        Job::CancelStale { command_id, db, session } => {
                            let (proven, detail) = match db.cancel_server_session(&session) {
                                Ok(true) => (true, "no longer running on the server".to_owned()),
                                Ok(false) => (false, "the server cannot tell".to_owned()),
                                Err(e) => (false, e.to_string()),
                            };
                            SupMsg::StaleCancelled { command_id, proven, detail }
                        }
                    };
                    if supervisor.send(msg).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

fn discover(dbs: &[Database]) -> Vec<(String, Result<drivers::DatabaseSchema, String>)> {
    dbs.iter().map(|db| (db.name().to_owned(), db.discover().map_err(|e| e.to_string()))).collect()
}

/// Runs one query to completion and returns the frame that reports it. `sizes` are the
/// current session's (see [`UploadSlot::sizes`]).
pub fn run_query(
    job: &QueryJob,
    uploader: &Sender<Chunk>,
    sizes: ResultSizes,
    supervisor: &Sender<SupMsg>,
) -> Outbound {
    let command = &job.command;
    let mut sink = ResultSink::new(job, uploader, sizes, supervisor);
    let options = QueryOptions { timeout: Some(job.timeout), cancel: job.cancel.clone() };
    let outcome = job.db.query(&job.checked, &command.payload.params, &options, &mut sink);
    let too_large = sink.too_large;
    let outcome = outcome
        .map_err(|e| match e {
            DriverError::Sink(_) if too_large => ErrorBody::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the result is larger than the {} bytes one command may return (maxResultMB)",
                    job.max_result_bytes
                ),
            ),
            e => {
                let mut body = driver_error(&e, job.timeout);
                // An upload that failed for good says whether the command may be retried.
                if matches!(e, DriverError::Sink(_)) {
                    body.retryable &= sink.upload_retryable;
                }
                body
            }
        })
        .and_then(|stats| sink.finish().map(|p| (p, stats.rows)));
    match outcome {
        Ok((result, row_count)) => Outbound::ExecutionResult(ExecutionResult {
            command_id: command.command_id.clone(),
            execution_id: command.execution_id.clone(),
            activity_id: command.activity_id.clone(),
            result,
            row_count,
            duration_ms: u64::try_from(job.received.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        Err(error) => Outbound::ExecutionError(ExecutionError {
            command_id: Some(command.command_id.clone()),
            execution_id: Some(command.execution_id.clone()),
            activity_id: Some(command.activity_id.clone()),
            error,
        }),
    }
}

/// Maps a driver error to the wire code the worker reports.
fn driver_error(error: &DriverError, timeout: Duration) -> ErrorBody {
    let (code, message) = match error {
        DriverError::Timeout => {
            (ErrorCode::QueryTimeout, format!("query exceeded its {} ms timeout", timeout.as_millis()))
        }
        DriverError::Cancelled => (ErrorCode::CommandCancelled, "query cancelled".to_owned()),
        DriverError::PoolExhausted => {
            (ErrorCode::ConnectionPoolExhausted, "no database connection became free in time".to_owned())
        }
        DriverError::WriteRejected(reason) => (ErrorCode::WriteOperationRejected, reason.clone()),
        DriverError::Unavailable(reason) => (ErrorCode::DatabaseUnavailable, reason.clone()),
        DriverError::Sink(e) => (ErrorCode::UploadFailed, e.0.clone()),
        other => (ErrorCode::QueryFailed, other.to_string()),
    };
    ErrorBody::new(code, message)
}

/// Encodes rows into the result stream and ships it inline or in chunks.
struct ResultSink<'a> {
    job: &'a QueryJob,
    uploader: &'a Sender<Chunk>,
    /// Told where the statement runs before it is sent (`SupMsg::Started`).
    supervisor: &'a Sender<SupMsg>,
    sizes: ResultSizes,
    columns: Vec<ColumnMeta>,
    /// Encoded bytes not yet shipped.
    buf: Vec<u8>,
    /// Chunk mode: the result outgrew the inline limit.
    chunked: bool,
    seq: u32,
    total_bytes: u64,
    /// The result outgrew `max_result_bytes`; the query was stopped.
    too_large: bool,
    hasher: Sha256,
    replies: Option<(Sender<ChunkReply>, Receiver<ChunkReply>)>,
    /// `retryable` of the chunk failure that stopped the result, if any.
    upload_retryable: bool,
}

impl<'a> ResultSink<'a> {
    fn new(
        job: &'a QueryJob,
        uploader: &'a Sender<Chunk>,
        sizes: ResultSizes,
        supervisor: &'a Sender<SupMsg>,
    ) -> Self {
        Self {
            job,
            uploader,
            supervisor,
            sizes,
            columns: Vec::new(),
            buf: Vec::with_capacity(16 * 1024),
            chunked: false,
            seq: 0,
            total_bytes: 0,
            too_large: false,
            hasher: Sha256::new(),
            replies: None,
            upload_retryable: true,
        }
    }

    fn ship(&mut self, last: bool) -> Result<(), SinkError> {
        let (reply_tx, reply_rx) = self.replies.get_or_insert_with(crossbeam_channel::unbounded);
        // An earlier chunk may already have failed for good: stop reading rows.
        if let Ok(ChunkReply::Failed { error, retryable, .. }) = reply_rx.try_recv() {
            self.upload_retryable = retryable;
            return Err(SinkError(error));
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.sizes.max_chunk_bytes + 4096));
        self.hasher.update(&data);
        self.total_bytes += data.len() as u64;
        let chunk = Chunk {
            command_id: self.job.command.command_id.clone(),
            seq: self.seq,
            last,
            data,
            cancel: self.job.cancel.clone(),
            deadline: self.job.received + UPLOAD_PATIENCE,
            reply: reply_tx.clone(),
        };
        self.seq += 1;
        self.uploader.send(chunk).map_err(|_| SinkError("uploader stopped".into()))
    }

    fn finish(mut self) -> Result<ResultPayload, ErrorBody> {
        if !self.chunked {
            // Small result: the rows, already encoded in `buf`, go into the frame as they are.
            let rows = inline_rows(&self.buf).map_err(|e| {
                ErrorBody::new(ErrorCode::QueryFailed, format!("cannot encode the rows: {e}"))
            })?;
            return Ok(ResultPayload::Inline { columns: self.columns, rows });
        }
        let upload_failed = |e: String| ErrorBody::new(ErrorCode::UploadFailed, e);
        self.ship(true).map_err(|e| ErrorBody { retryable: self.upload_retryable, ..upload_failed(e.0) })?;
        let chunk_count = self.seq;
        let Some((_, replies)) = self.replies.take() else {
            return Err(upload_failed("no chunk was sent".into()));
        };
        // The uploader answers every chunk, in order (it waits for a session at most until the
        // chunk's deadline); the last answer carries the buffer key.
        loop {
            match replies.recv() {
                Ok(ChunkReply::Stored { seq, buffer_key }) if seq + 1 == chunk_count => {
                    return Ok(ResultPayload::Buffered {
                        buffer_key,
                        chunk_count,
                        byte_count: self.total_bytes,
                        sha256: hex::encode(self.hasher.finalize()),
                    });
                }
                Ok(ChunkReply::Stored { .. }) => {}
                Ok(ChunkReply::Failed { error, retryable, .. }) => {
                    return Err(ErrorBody { retryable, ..upload_failed(error) });
                }
                Err(_) => return Err(upload_failed("the uploader stopped".into())),
            }
        }
    }
}

/// The rows of an inline result from the encoded stream (a `columns` line, then one JSON array
/// per line), copied into one array, not encoded again.
fn inline_rows(stream: &[u8]) -> Result<InlineRows, serde_json::Error> {
    let rows = stream.iter().position(|&b| b == b'\n').map_or(&[][..], |end| &stream[end + 1..]);
    InlineRows::from_lines(rows)
}

impl RowSink for ResultSink<'_> {
    /// The statement is about to be sent: the supervisor writes where it runs to the store
    /// first, so after a crash the agent knows which server session to stop — and a command
    /// found running without one was never sent.
    ///
    /// An engine inside the agent (SQLite) has no session to record: it stops with the agent,
    /// and recovery runs a command found running without a session again. So no round trip
    /// to the supervisor (and no commit) for it.
    fn started(&mut self, server_session: Option<&str>) -> Result<(), SinkError> {
        if server_session.is_none() && self.job.db.kind() == drivers::DbKind::Sqlite {
            return Ok(());
        }
        let (recorded, written) = crossbeam_channel::bounded(1);
        let started = SupMsg::Started {
            command_id: self.job.command.command_id.clone(),
            session: server_session.map(str::to_owned),
            recorded,
        };
        self.supervisor.send(started).map_err(|_| SinkError("the agent is stopping".into()))?;
        written.recv().map_err(|_| SinkError("the agent is stopping".into()))
    }

    fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError> {
        self.columns = columns.to_vec();
        serde_json::to_writer(&mut self.buf, &serde_json::json!({ "columns": columns }))
            .map_err(|e| SinkError(e.to_string()))?;
        self.buf.push(b'\n');
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.buf, cells).map_err(|e| SinkError(e.to_string()))?;
        self.buf.push(b'\n');
        if self.total_bytes + self.buf.len() as u64 > self.job.max_result_bytes {
            self.too_large = true;
            self.buf = Vec::new();
            return Err(SinkError("result too large".into()));
        }
        if !self.chunked && self.buf.len() > self.sizes.max_inline_bytes {
            self.chunked = true;
        }
        if self.chunked && self.buf.len() >= self.sizes.max_chunk_bytes {
            self.ship(false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sha2::{Digest, Sha256};

    use crate::protocol::{Frame, Inbound, Outbound, ResultPayload};
    use crate::uploader::UploadSlot;
    use crate::uploader::test_endpoint::Endpoint;

    const WATCHDOG: Duration = Duration::from_secs(30);

    #[test]
    fn a_chunked_result_survives_a_reconnect_mid_upload() {
        let dir = std::env::temp_dir().join(format!("mc-worker-reconnect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("erp.sqlite");
        drivers::fixture::create_sample_erp(&path, 1).unwrap();
        let db = drivers::Database::open(&drivers::ConnectionSpec {
            name: "erp".into(),
            kind: drivers::DbKind::Sqlite,
            path,
            ..drivers::ConnectionSpec::default()
        })
        .unwrap();
        let endpoint = Endpoint::start("worker");
        let slot = Arc::new(UploadSlot::new());
        slot.set(Some(endpoint.new_session("s1")));
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded(2);
        let uploader = crate::uploader::start(endpoint.agent(), slot.clone(), chunk_rx).unwrap();

        let sql = "SELECT * FROM customers ORDER BY id";
        let Ok(Inbound::Command(command)) = Inbound::decode(
            &serde_json::json!({
                "type": "command", "commandId": "c1", "executionId": "e1", "activityId": "a1",
                "operation": "query",
                "payload": { "query": sql, "params": [], "idempotencyKey": "k1", "connection": "erp" }
            })
            .to_string(),
        ) else {
            panic!("command does not decode")
        };
        let checked =
            gate::check_with(sql, 0, db.gate_target(), &gate::Policy::default(), &gate::Limits::default())
                .unwrap();
        let job = super::QueryJob {
            command,
            db,
            checked,
            cancel: drivers::CancelToken::new(),
            timeout: Duration::from_secs(60),
            received: Instant::now(),
            max_result_bytes: 1 << 30,
        };
        // The supervisor's part: it records the server session and lets the statement go.
        let (supervisor, reports) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for report in reports {
                if let crate::supervisor::SupMsg::Started { recorded, .. } = report {
                    let _ = recorded.send(());
                }
            }
        });
        let worker = {
            let slot = slot.clone();
            std::thread::spawn(move || super::run_query(&job, &chunk_tx, slot.sizes(), &supervisor))
        };

        // Cut the link after two chunks: the gateway starts a new session, the agent learns of
        // it a little later.
        let deadline = Instant::now() + WATCHDOG;
        while endpoint.state.lock().unwrap().stored.get("c1").is_none_or(|c| c.len() < 2) {
            assert!(Instant::now() < deadline, "no chunk arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        slot.set(None);
        let next = endpoint.new_session("s2");
        std::thread::sleep(Duration::from_millis(200));
        slot.set(Some(next));

        let frame = worker.join().unwrap();
        crate::join_named(uploader);
        let Outbound::ExecutionResult(result) = frame else { panic!("not a result: {frame:?}") };
        let ResultPayload::Buffered { buffer_key, chunk_count, byte_count, sha256 } = result.result else {
            panic!("not chunked")
        };
        assert_eq!(result.row_count, 500);
        assert_eq!(buffer_key, "buf:c1");
        let state = endpoint.state.lock().unwrap();
        let chunks = &state.stored["c1"];
        assert_eq!(chunks.len() as u32, chunk_count, "every chunk stored exactly once");
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all.len() as u64, byte_count);
        assert_eq!(hex::encode(Sha256::digest(&all)), sha256);
        assert!(state.seen.iter().any(|s| s.connection == "s2" && s.status == 200), "nothing went to s2");
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
