//! The values that go in and come out of the store.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::QueueError;

/// Where a command is in its life. `Received` and `Running` are unfinished; the others are
/// final and carry an answer frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Persisted on receipt, not started.
    Received,
    /// Handed to a worker (found in this state after a crash: it may still run on the server).
    Running,
    /// Finished with a result.
    Answered,
    /// Finished with an error.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
    /// Its `expiresAt` passed before it started.
    Expired,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 6] =
        [State::Received, State::Running, State::Answered, State::Failed, State::Cancelled, State::Expired];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Running => "running",
            State::Answered => "answered",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }

    /// Whether the command is finished (it has an answer and is never run again, unless the
    /// failure was retryable).
    pub fn is_final(self) -> bool {
        !matches!(self, State::Received | State::Running)
    }

    /// The audit event recorded when a command reaches this final state.
    pub(crate) fn audit_event(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Running => "started",
            State::Answered => "executed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| QueueError::Corrupt(format!("unknown command state ({} bytes)", s.len())))
    }
}

/// How hard each commit is pushed to the disk (`PRAGMA synchronous`), see the crate overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + `NORMAL`: survives any process crash; a power loss can lose the newest commits.
    #[default]
    Normal,
    /// WAL + `FULL`: an fsync per commit; survives power loss too.
    Full,
}

/// Settings of a [`crate::Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The size cap in bytes (`offlineQueueMaxMB << 20`; default 500 MiB).
    pub max_bytes: u64,
    /// [`crate::Usage::warn`] is set at or above this share of the cap (default 0.8).
    pub warn_ratio: f64,
    /// Keep the full query text in the audit log (default false: its SHA-256 only).
    pub audit_query_text: bool,
    /// `PRAGMA synchronous` (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// WAL pages after which a background thread checkpoints the WAL into the database file
    /// (default 1000, SQLite's own auto-checkpoint point). The writer checkpoints itself only
    /// when the WAL passes 8 times this (the background thread cannot keep up).
    pub checkpoint_pages: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 500 << 20,
            warn_ratio: 0.8,
            audit_query_text: false,
            synchronous: Synchronous::Normal,
            checkpoint_pages: 1000,
        }
    }
}

/// What a store did on its database connection since it was opened ([`crate::Store::stats`]):
/// the per-command cost of the durable queue, counted by SQLite itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (SQLite's commit hook: explicit transactions and single
    /// statements alike).
    pub commits: u64,
    /// SQLite's authorizer calls: made while a statement is prepared (once or more per
    /// statement), never when a cached statement runs again. 0 over a stretch of work: every
    /// statement came from the cache.
    pub prepare_checks: u64,
    /// WAL frames (one page each) the commits appended.
    pub wal_frames: u64,
    /// Checkpoints the writer ran itself (each syncs the WAL and the database file on the
    /// writer's thread: the only fsyncs of `synchronous = NORMAL`). 0 unless the background
    /// checkpointer falls far behind.
    pub checkpoints_inline: u64,
    /// Checkpoint passes of the background thread (its own connection).
    pub checkpoints_background: u64,
}

impl std::ops::Sub for StoreStats {
    type Output = StoreStats;

    /// The work done between two readings.
    fn sub(self, earlier: StoreStats) -> StoreStats {
        StoreStats {
            commits: self.commits.saturating_sub(earlier.commits),
            prepare_checks: self.prepare_checks.saturating_sub(earlier.prepare_checks),
            wal_frames: self.wal_frames.saturating_sub(earlier.wal_frames),
            checkpoints_inline: self.checkpoints_inline.saturating_sub(earlier.checkpoints_inline),
            checkpoints_background: self
                .checkpoints_background
                .saturating_sub(earlier.checkpoints_background),
        }
    }
}

/// A command as received from the cloud, persisted by [`crate::Store::receive`].
#[derive(Debug, Clone, Copy)]
pub struct NewCommand<'a> {
    /// The frame's `commandId` (unique per delivery attempt of the cloud's command).
    pub command_id: &'a str,
    /// The workflow execution it belongs to.
    pub execution_id: Option<&'a str>,
    /// The workflow activity it belongs to.
    pub activity_id: Option<&'a str>,
    /// The idempotency key: a repeat with the same key is answered from the store.
    pub idempotency_key: Option<&'a str>,
    /// The connection it runs on.
    pub connection: Option<&'a str>,
    /// The query text: only its SHA-256 is kept unless `audit_query_text` (it is also inside
    /// `frame_json`, which is purged with the answer).
    pub query: &'a str,
    /// The command frame as received (opaque JSON text).
    pub frame_json: &'a str,
    /// When the command expires (ms since the Unix epoch).
    pub expires_at_ms: Option<i64>,
    /// When it arrived (ms since the Unix epoch).
    pub received_at_ms: i64,
}

/// What [`crate::Store::receive`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// First sight (or a repeat of a retryable failure): persisted as `Received`; run it.
    New,
    /// Known already: do not run it again; answer from here (or attach to the running one).
    Known(Existing),
}

/// A known command found by [`crate::Store::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The stored command's id (the first delivery's, when the repeat matched by key).
    pub command_id: String,
    /// Its state.
    pub state: State,
    /// The stored answer frame, when finished and not purged.
    pub answer_json: Option<String>,
    /// Finished, but its answer body was purged to stay under the cap (metadata kept): answer
    /// with a non-retryable error instead of running it again.
    pub purged: bool,
    /// The outcome code of a finished command (`"ok"` or an error code).
    pub code: Option<String>,
}

/// How a command ended, for [`crate::Store::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// One of the final states.
    pub state: State,
    /// The answer frame (opaque JSON text), sent again until acknowledged.
    pub answer_json: &'a str,
    /// `"ok"` or the error code.
    pub code: Option<&'a str>,
    /// A retryable failure: a repeat runs again instead of being answered from the store.
    pub retryable: bool,
    /// Rows returned.
    pub row_count: Option<u64>,
    /// Result size in bytes.
    pub result_bytes: Option<u64>,
    /// The cloud buffer key of a chunked result.
    pub buffer_key: Option<&'a str>,
    /// SHA-256 (hex) of the result.
    pub sha256: Option<&'a str>,
    /// Run time.
    pub duration_ms: u64,
}

/// A stored command, as [`crate::Store::get`], `queued` and `interrupted` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCommand {
    /// The frame's `commandId`.
    pub command_id: String,
    /// Its execution.
    pub execution_id: Option<String>,
    /// Its activity.
    pub activity_id: Option<String>,
    /// Its idempotency key (None once freed by a retryable failure).
    pub idempotency_key: Option<String>,
    /// Its connection.
    pub connection: Option<String>,
    /// SHA-256 (hex) of the query text.
    pub query_hash: String,
    /// The command frame (None once purged).
    #[serde(skip)]
    pub frame_json: Option<String>,
    /// Its state.
    pub state: State,
    /// How many times it was started.
    pub attempts: u32,
    /// When it arrived (ms since the epoch).
    pub received_at_ms: i64,
    /// When it last started.
    pub started_at_ms: Option<i64>,
    /// When it finished.
    pub finished_at_ms: Option<i64>,
    /// When it expires.
    pub expires_at_ms: Option<i64>,
    /// The server-side session that runs (ran) it, as the driver described it.
    pub server_session: Option<String>,
    /// The answer frame (None until finished, or once purged).
    #[serde(skip)]
    pub answer_json: Option<String>,
    /// `"ok"` or the error code.
    pub code: Option<String>,
    /// A finished command whose repeats run again (retryable failure).
    pub retryable: bool,
    /// Rows returned.
    pub row_count: Option<u64>,
    /// Result size in bytes.
    pub result_bytes: Option<u64>,
    /// Cloud buffer key of a chunked result.
    pub buffer_key: Option<String>,
    /// SHA-256 of the result.
    pub sha256: Option<String>,
    /// Run time.
    pub duration_ms: Option<u64>,
    /// The cloud acknowledged the answer.
    pub acknowledged: bool,
    /// The frame and answer bodies were purged (metadata kept).
    pub purged: bool,
}

/// A finished command whose answer the cloud has not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The command.
    pub command_id: String,
    /// Its final state.
    pub state: State,
    /// The answer frame to send again.
    pub answer_json: String,
    /// When it finished (ms since the epoch).
    pub finished_at_ms: i64,
}

/// Commands per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Waiting to run.
    pub received: u64,
    /// Running (or interrupted by a crash).
    pub running: u64,
    /// Answered with a result.
    pub answered: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Expired.
    pub expired: u64,
    /// Finished, answer not acknowledged yet.
    pub unacknowledged: u64,
    /// Finished, answer body purged.
    pub purged: u64,
}

impl Counts {
    /// The count of one state.
    pub fn of(&self, state: State) -> u64 {
        match state {
            State::Received => self.received,
            State::Running => self.running,
            State::Answered => self.answered,
            State::Failed => self.failed,
            State::Cancelled => self.cancelled,
            State::Expired => self.expired,
        }
    }
}

/// Space used, for the 80 % warning (spec §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes of the database file plus its WAL on disk.
    pub disk_bytes: u64,
    /// Bytes of pages in use (what the cap is checked against: free pages are reused).
    pub used_bytes: u64,
    /// The cap.
    pub cap_bytes: u64,
    /// `used / cap` (the disk size also counts free pages and the WAL, which are reused).
    pub ratio: f64,
    /// `ratio >= warn_ratio`.
    pub warn: bool,
}

/// What [`crate::Store::purge`] freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// Finished, acknowledged commands whose frame and answer bodies were dropped.
    pub bodies_purged: u64,
    /// Metadata rows of old purged commands deleted (only when bodies were not enough).
    pub rows_deleted: u64,
    /// Pages in use before, in bytes.
    pub used_before: u64,
    /// Pages in use after, in bytes.
    pub used_after: u64,
}

/// An event without a state change, for [`crate::Store::audit_note`] (rejected by the gate,
/// cancel asked, agent started/stopped, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditEvent<'a> {
    /// Short lowercase name: `rejected`, `cancel_requested`, `agent_started`, ...
    pub event: &'a str,
    /// The command it is about.
    pub command_id: Option<&'a str>,
    /// Its execution.
    pub execution_id: Option<&'a str>,
    /// Its connection.
    pub connection: Option<&'a str>,
    /// Outcome or error code.
    pub outcome: Option<&'a str>,
    /// The query text (hashed; kept in full only with `audit_query_text`).
    pub query: Option<&'a str>,
    /// Free text (never a secret, a query or row data).
    pub detail: Option<&'a str>,
}

/// One record of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the chain, from 1, no gaps.
    pub seq: i64,
    /// When (ms since the epoch).
    pub ts_ms: i64,
    /// `ts_ms` as RFC 3339 (UTC, milliseconds).
    pub time: String,
    /// received, started, executed, failed, cancelled, expired, interrupted, rejected, ...
    pub event: String,
    /// The command.
    pub command_id: Option<String>,
    /// Its execution.
    pub execution_id: Option<String>,
    /// Its connection.
    pub connection: Option<String>,
    /// Rows returned.
    pub row_count: Option<i64>,
    /// Run time.
    pub duration_ms: Option<i64>,
    /// `"ok"` or the error code.
    pub outcome: Option<String>,
    /// SHA-256 (hex) of the query text.
    pub query_hash: Option<String>,
    /// The query text, only with `audit_query_text`.
    pub query_text: Option<String>,
    /// Free text.
    pub detail: Option<String>,
    /// The previous record's hash (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and this record's fields.
    pub hash: String,
}

/// What [`crate::Store::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Records checked.
    pub records: u64,
    /// The chain is whole: no record edited, missing, reordered or cut off the end.
    pub ok: bool,
    /// The first record that is bad or missing.
    pub first_bad_seq: Option<i64>,
    /// Why, in one sentence.
    pub why: Option<String>,
    /// The head kept in the meta table: last seq.
    pub head_seq: Option<i64>,
    /// The head kept in the meta table: last hash.
    pub head_hash: Option<String>,
}
