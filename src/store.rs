//! The supervisor's `ResultStore`: the durable queue (`queue` crate) in protocol terms.
//!
//! The store is the only place a command's fate is recorded. A command is written on receipt,
//! before anything else happens to it; it is marked running before a worker gets it (in the
//! receipt's commit when it goes to a worker at once), its server-side session is written
//! before the statement is sent (SQLite, inside the agent, has none), and its answer frame is
//! kept until the cloud `ack`s it (the `ack` itself is written with the next change). So after a cut the unacknowledged answers are sent again, and after
//! a crash every command the agent had is either resumed or reported (see
//! `Supervisor::recover`). The `queue` crate knows nothing of frames: this module turns
//! `Command`s and `Outbound` answers into its records and back.

use std::path::Path;
use std::time::SystemTime;

use queue::{Existing, Finish, NewCommand, QueueError, Receipt, State, Store, StoredAnswer, StoredCommand};

use crate::protocol::{
    Command, ErrorBody, ErrorCode, ExecutionError, Frame as _, Inbound, Outbound, ResultPayload,
};

/// The durable queue, owned by the supervisor thread.
#[derive(Debug)]
pub struct ResultStore {
    store: Store,
    /// The 80 % warning was logged and not yet cleared.
    warned: bool,
}

/// What a repeat of a known command gets.
#[derive(Debug)]
pub enum Repeat {
    /// The first delivery is still waiting or running: its answer will answer this one too.
    Pending {
        /// The stored command's id (the first delivery's).
        command_id: String,
    },
    /// Answered before: the stored answer, addressed to the repeat.
    Answer(Box<Outbound>),
}

impl ResultStore {
    /// Opens (or creates) the queue database.
    pub fn open(path: &Path, config: queue::StoreConfig) -> Result<Self, QueueError> {
        Ok(Self { store: Store::open(path, config)?, warned: false })
    }

    /// The stable id of this installation, sent in `auth`.
    pub fn instance_id(&self) -> &str {
        self.store.instance_id()
    }

    /// Persists a new command, or finds the earlier one with its idempotency key.
    /// `Ok(None)`: new, persisted as received. `Ok(Some(repeat))`: known; do not run it.
    pub fn receive(&mut self, command: &Command) -> Result<Option<Repeat>, QueueError> {
        Ok(self.receive_as(command, false)?.0)
    }

    /// Like [`ResultStore::receive`], and a new command is marked running in the same commit
    /// (it goes to a worker at once). Returns also how many times it has been started, this
    /// one included (0 for a repeat).
    pub fn receive_running(&mut self, command: &Command) -> Result<(Option<Repeat>, u32), QueueError> {
        self.receive_as(command, true)
    }

    fn receive_as(&mut self, command: &Command, running: bool) -> Result<(Option<Repeat>, u32), QueueError> {
        let frame_json = Inbound::Command(command.clone()).encode();
        let expires_at_ms = command
            .payload
            .expires_at
            .as_deref()
            .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
            .map(epoch_ms);
        let new = NewCommand {
            command_id: &command.command_id,
            execution_id: Some(&command.execution_id),
            activity_id: Some(&command.activity_id),
            idempotency_key: Some(&command.payload.idempotency_key),
            connection: command.payload.connection.as_deref(),
            query: &command.payload.query,
            frame_json: &frame_json,
            expires_at_ms,
            received_at_ms: queue::now_ms(),
        };
        let (receipt, starts) =
            if running { self.store.receive_running(&new)? } else { (self.store.receive(&new)?, 0) };
        match receipt {
            Receipt::New => Ok((None, starts)),
            Receipt::Known(existing) => Ok((Some(repeat_of(existing, command)), 0)),
        }
    }

    /// Marks a command running; returns how many times it has been started, this one included.
    pub fn start(&mut self, command_id: &str) -> Result<u32, QueueError> {
        self.store.start(command_id)
    }

    /// Records the server-side session that is about to run the command.
    pub fn set_server_session(&mut self, command_id: &str, session: &str) -> Result<(), QueueError> {
        self.store.set_server_session(command_id, session)
    }

    /// Puts a running command back to waiting (it was stopped before it could finish).
    pub fn requeue(&mut self, command_id: &str) -> Result<(), QueueError> {
        self.store.requeue(command_id)
    }

    /// Records a command's answer. A retryable error frees the idempotency key: a repeat runs
    /// again.
    pub fn finish(&mut self, command_id: &str, frame: &Outbound) -> Result<(), QueueError> {
        let answer_json = frame.encode();
        let finish = match frame {
            Outbound::ExecutionResult(r) => {
                let (bytes, key, sha) = match &r.result {
                    ResultPayload::Inline { .. } => (None, None, None),
                    ResultPayload::Buffered { buffer_key, byte_count, sha256, .. } => {
                        (Some(*byte_count), Some(buffer_key.as_str()), Some(sha256.as_str()))
                    }
                };
                Finish {
                    state: State::Answered,
                    answer_json: &answer_json,
                    code: Some("ok"),
                    retryable: false,
                    row_count: Some(r.row_count),
                    result_bytes: bytes,
                    buffer_key: key,
                    sha256: sha,
                    duration_ms: r.duration_ms,
                }
            }
            Outbound::ExecutionError(e) => Finish {
                state: match e.error.code {
                    ErrorCode::CommandCancelled => State::Cancelled,
                    ErrorCode::CommandExpired => State::Expired,
                    _ => State::Failed,
                },
                answer_json: &answer_json,
                code: Some(e.error.code.as_str()),
                retryable: e.error.retryable,
                row_count: None,
                result_bytes: None,
                buffer_key: None,
                sha256: None,
                duration_ms: 0,
            },
            _ => return Ok(()),
        };
        self.store.finish(command_id, &finish)
    }

    /// The cloud acknowledged a command's answer.
    pub fn acknowledge(&mut self, command_id: &str) -> Result<bool, QueueError> {
        self.store.acknowledge(command_id)
    }

    /// The cloud acknowledged a command's answer: written with the next change of the store
    /// (see [`queue::Store::acknowledge_later`]), or by [`ResultStore::flush`].
    pub fn acknowledge_later(&mut self, command_id: &str) -> Result<(), QueueError> {
        self.store.acknowledge_later(command_id)
    }

    /// Writes the acknowledgements held in memory.
    pub fn flush(&mut self) -> Result<(), QueueError> {
        self.store.flush()
    }

    /// Since when the oldest acknowledgement held in memory has waited.
    pub fn pending_acks_since(&self) -> Option<std::time::Instant> {
        self.store.pending_acks_since()
    }

    /// Reads the queue database's [`queue::StoreStats`] from any thread.
    pub fn stats_probe(&self) -> queue::StatsProbe {
        self.store.stats_probe()
    }

    /// Answers not acknowledged yet, oldest first, as frames to send again.
    pub fn unacknowledged(&self) -> Result<Vec<Outbound>, QueueError> {
        Ok(self
            .store
            .unacknowledged_limited(100_000)?
            .into_iter()
            .filter_map(|StoredAnswer { command_id, answer_json, .. }| match Outbound::decode(&answer_json) {
                Ok(frame) => Some(frame),
                Err(e) => {
                    tracing::error!(command = %command_id, error = %e, "stored answer does not decode; not re-sent");
                    None
                }
            })
            .collect())
    }

    /// Commands waiting to run, oldest first.
    pub fn queued(&self, limit: usize) -> Result<Vec<StoredCommand>, QueueError> {
        self.store.queued(limit)
    }

    /// Commands that were running when the agent stopped.
    pub fn interrupted(&self) -> Result<Vec<StoredCommand>, QueueError> {
        self.store.interrupted()
    }

    /// The stored command frame of a waiting command.
    pub fn command(&self, command_id: &str) -> Result<Option<Command>, QueueError> {
        let Some(stored) = self.store.get(command_id)? else { return Ok(None) };
        let Some(json) = stored.frame_json else { return Ok(None) };
        match Inbound::decode(&json) {
            Ok(Inbound::Command(command)) => Ok(Some(command)),
            Ok(_) | Err(_) => {
                Err(QueueError::Corrupt(format!("stored command {command_id} does not decode")))
            }
        }
    }

    /// Writes an audit record for an event that changes no state.
    pub fn note(
        &mut self,
        event: &str,
        command: Option<&Command>,
        outcome: Option<&str>,
        detail: Option<&str>,
    ) {
        let result = self.store.audit_note(&queue::AuditEvent {
            event,
            command_id: command.map(|c| c.command_id.as_str()),
            execution_id: command.map(|c| c.execution_id.as_str()),
            connection: command.and_then(|c| c.payload.connection.as_deref()),
            outcome,
            query: command.map(|c| c.payload.query.as_str()),
            detail,
        });
        if let Err(e) = result {
            tracing::error!(error = %e, event, "cannot write the audit log");
        }
    }

    /// Commands per state, for `status`.
    pub fn counts(&self) -> Result<queue::Counts, QueueError> {
        self.store.counts()
    }

    /// Space used.
    pub fn usage(&self) -> Result<queue::Usage, QueueError> {
        self.store.usage()
    }

    /// Space used; logs the 80 % warning (spec §8.3) once per crossing and purges finished
    /// work when over the warning mark.
    pub fn check_usage(&mut self) -> Result<queue::Usage, QueueError> {
        let mut usage = self.store.usage()?;
        if usage.warn {
            let report = self.store.purge()?;
            if report.bodies_purged + report.rows_deleted > 0 {
                tracing::info!(
                    bodies = report.bodies_purged,
                    rows = report.rows_deleted,
                    "offline queue: purged old acknowledged answers"
                );
                usage = self.store.usage()?;
            }
        }
        if usage.warn && !self.warned {
            tracing::warn!(
                used_mb = usage.used_bytes >> 20,
                cap_mb = usage.cap_bytes >> 20,
                "offline queue is over 80 % of offlineQueueMaxMB; raise it or bring the cloud link back"
            );
        }
        self.warned = usage.warn;
        Ok(usage)
    }
}

/// What a repeat of `existing` gets, addressed to `command`.
fn repeat_of(existing: Existing, command: &Command) -> Repeat {
    if !existing.state.is_final() {
        return Repeat::Pending { command_id: existing.command_id };
    }
    let stored = existing.answer_json.as_deref().map(Outbound::decode);
    let frame = match stored {
        Some(Ok(frame)) => readdress(frame, command),
        _ => error_frame(
            command,
            ErrorCode::ResultUnavailable,
            format!(
                "command `{}` with this idempotency key was answered ({}) and acknowledged; its stored answer has been purged (offlineQueueMaxMB), so it is not run again",
                existing.command_id,
                existing.code.as_deref().unwrap_or("?")
            ),
        ),
    };
    Repeat::Answer(Box::new(frame))
}

/// An `execution_error` for `command`.
pub fn error_frame(command: &Command, code: ErrorCode, message: impl Into<String>) -> Outbound {
    Outbound::ExecutionError(ExecutionError {
        command_id: Some(command.command_id.clone()),
        execution_id: Some(command.execution_id.clone()),
        activity_id: Some(command.activity_id.clone()),
        error: ErrorBody::new(code, message),
    })
}

/// Re-addresses an answer to the command that repeated its idempotency key.
pub fn readdress(frame: Outbound, command: &Command) -> Outbound {
    match frame {
        Outbound::ExecutionResult(mut r) => {
            if r.command_id != command.command_id {
                r.duration_ms = 0;
            }
            r.command_id = command.command_id.clone();
            r.execution_id = command.execution_id.clone();
            r.activity_id = command.activity_id.clone();
            Outbound::ExecutionResult(r)
        }
        Outbound::ExecutionError(mut e) => {
            e.command_id = Some(command.command_id.clone());
            e.execution_id = Some(command.execution_id.clone());
            e.activity_id = Some(command.activity_id.clone());
            Outbound::ExecutionError(e)
        }
        other => other,
    }
}

fn epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
