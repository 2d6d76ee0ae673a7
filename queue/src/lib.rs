//! The agent's durable command store and its hash-chained audit log, in one SQLite file.
//!
//! Every command is written here on receipt, before anything else happens to it, and the
//! store is the only place a command's fate is recorded. Frames and answers are opaque JSON
//! text: this crate knows nothing of the wire protocol, the drivers or the gate.
//!
//! # States
//!
//! ```text
//!   receive ──► Received ──start──► Running ──finish──► Answered | Failed | Cancelled | Expired
//!                  │  ▲                │                         │
//!                  │  └───requeue──────┘ (after a crash)         └─acknowledge─► (purgeable)
//!                  └──expire_due / finish──► Expired | Cancelled | Failed
//! ```
//!
//! A repeat (same idempotency key, or same `commandId`) is [`Receipt::Known`]: still queued
//! or running (attach to it), or finished (answer from the stored frame; `purged` when the body
//! was dropped for space, metadata kept). A failure with `retryable: true` frees its key: a
//! repeat runs again (the row is reused, attempts keep counting). A `Running` command found
//! on open was interrupted by a crash: [`Store::interrupted`] lists it with its attempts and
//! the server-side session the driver reported ([`Store::set_server_session`]), so the caller
//! can cancel it on the server before [`Store::requeue`] or [`Store::finish`].
//!
//! # Durability
//!
//! WAL journal with `synchronous = NORMAL` (default; [`Synchronous::Full`] is available). Every
//! change is one `BEGIN IMMEDIATE` transaction, so nothing is ever half-written. In WAL mode
//! `NORMAL` survives any crash of the process (`kill -9`, panic, abort): a committed
//! transaction is in the WAL file, which the OS keeps. Only a power loss or OS crash can lose
//! the newest commits (never corrupt the file): a lost receipt is harmless because the gateway
//! keeps a command until it is answered and delivers it again; a lost `running` mark means the
//! database session died with the machine's TCP connections anyway. `FULL` adds an fsync per
//! commit (two per command, three with a server session, see below); `benches/queue.rs`
//! measured, with the four commits per command of the time, ~10x fewer small commands per
//! second with `FULL` (one run: ~480/s vs ~40/s on a shared VM disk) and ~2.5x fewer with
//! 256 KiB answers.
//! `busy_timeout` is 5 s so the read-only `audit` CLI never makes the agent fail.
//!
//! # Commits per command
//!
//! A command that goes to a worker at once costs two commits on the writer's thread, each one
//! needed on its own:
//!
//! 1. [`Store::receive_running`]: receipt and start (`received` + `started` records), before
//!    the command is handed to a worker — a repeat must find it from then on, and a crash
//!    must find it. It is one commit because nothing happens between the two that the disk
//!    has to show: a crash after it finds the command `Running` without a server session,
//!    which the caller treats as never sent and runs again, as it does a command found
//!    `Received` (all a crash between two separate commits could leave). A command that has
//!    to wait is [`Store::receive`]d (its own commit: it is accepted) and [`Store::start`]ed
//!    when a worker is free.
//! 2. [`Store::finish`]: the answer, before it is sent — after a crash a re-delivery gets
//!    this answer instead of running again.
//!
//! In between, a driver that runs the statement on a server records the server session with
//! [`Store::set_server_session`] (its own commit, before the statement is sent: after a crash,
//! a session on disk is what can be cancelled; no session means never sent). An engine inside
//! the process (SQLite) needs none: it stops with the process. The cloud's `ack` needs no
//! commit of its own: [`Store::acknowledge_later`] holds it in memory and writes it inside the
//! next transaction (a lost one only makes the answer be sent again, which the cloud drops).
//! Every statement is prepared once per connection and kept ([`StoreStats::prepare_checks`]
//! counts preparations), `BEGIN` and `COMMIT` included.
//!
//! The WAL is checkpointed by a background thread with its own connection (`PRAGMA
//! wal_checkpoint(PASSIVE)`, woken when a commit leaves the WAL at
//! [`StoreConfig::checkpoint_pages`]), not by SQLite's auto-checkpoint on the writer's thread:
//! with `NORMAL` a checkpoint's two fsyncs are the only ones, and they no longer hold up the
//! writer (it checkpoints itself only past 8 times that length). [`Store::stats`] counts the
//! commits, preparations, WAL frames and checkpoints, so this is measured, not assumed.
//!
//! # On disk
//!
//! One file (mode 0600, its directory created 0700) plus its `-wal` and `-shm` files, schema
//! version in `PRAGMA user_version`, `quick_check` on open. Tables: `meta` (instance id made
//! on first open, audit head), `commands` (one row per command: ids, idempotency key,
//! connection, query SHA-256, the frame, state, attempts, timestamps, server session, the
//! answer frame, outcome code, row count, result size, buffer key, result SHA-256, duration,
//! acknowledged/purged marks) and `audit`.
//!
//! # Size cap and purge
//!
//! The cap (`offlineQueueMaxMB`, default 500 MiB) is checked in bytes against the pages in
//! use. When a new command or answer would pass it, the frame and answer bodies of finished
//! **and acknowledged** commands are dropped oldest-first (metadata kept, so a repeat is still
//! known); only if that is not enough and deleting them does make room, the oldest such
//! metadata rows go too (a repeat of one of those would run again). If only unfinished work
//! (or the audit log) is left, [`Store::receive`] fails with [`QueueError::Full`] (answer
//! `AGENT_BUSY`); an answer is always stored (its command was accepted). [`Usage::warn`] is set
//! at 80 % (spec §8.3); [`Store::purge`] brings the file back under that line.
//!
//! # Never purged
//!
//! `Received` and `Running` commands, unacknowledged answers, and the audit log. The audit
//! log (spec §7.3) gets one record per state change in the same transaction as the change
//! (received, started, executed, failed, cancelled, expired, interrupted) plus
//! [`Store::audit_note`] events; the query text is kept only as its SHA-256 unless
//! `audit_query_text`. Records are hash-chained and the head is kept in `meta`, so an edited,
//! deleted, reordered or cut-off record is found by [`Store::verify_audit`]. The chain has no
//! secret key: it detects changes made without recomputing every later hash and the head, not
//! a deliberate rewrite by someone who can write the file. It counts toward the cap.
//!
//! ```no_run
//! use queue::{Finish, NewCommand, Receipt, State, Store, StoreConfig};
//! # fn main() -> Result<(), queue::QueueError> {
//! let mut store = Store::open(std::path::Path::new("/var/lib/mini-connector/queue.db"), StoreConfig::default())?;
//! let cmd = NewCommand { command_id: "c1", execution_id: Some("e1"), activity_id: None,
//!     idempotency_key: Some("k1"), connection: Some("erp"), query: "SELECT 1",
//!     frame_json: r#"{"type":"query"}"#, expires_at_ms: None, received_at_ms: queue::now_ms() };
//! if store.receive(&cmd)? == Receipt::New {
//!     store.start("c1")?;
//!     store.finish("c1", &Finish { state: State::Answered, answer_json: r#"{"type":"result"}"#,
//!         code: Some("ok"), retryable: false, row_count: Some(1), result_bytes: Some(9),
//!         buffer_key: None, sha256: None, duration_ms: 3 })?;
//!     store.acknowledge("c1")?;
//! }
//! # Ok(()) }
//! ```

mod audit;
mod error;
mod store;
mod types;

pub use audit::rfc3339_ms;

// The supervisor moves the store into its thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Store>();
};
pub use error::QueueError;
pub use store::{SCHEMA_VERSION, StatsProbe, Store, now_ms, query_hash};
pub use types::{
    AuditEvent, AuditRecord, AuditReport, Counts, Existing, Finish, NewCommand, PurgeReport, Receipt, State,
    StoreConfig, StoreStats, StoredAnswer, StoredCommand, Synchronous, Usage,
};
