//! Commands: intake, the durable wait for a worker, answers, cancel, crash recovery, drain.
//!
//! Every command is written to the store on receipt, before anything else. A repeat of a known
//! idempotency key never runs again: while the first delivery waits or runs, the repeat is
//! attached to it; once answered, the stored answer is re-addressed to it. Commands beyond the
//! free workers wait in the store (up to `maxQueuedCommands`, then `AGENT_BUSY`). After a crash,
//! a command found running is run again only when its first run is proven stopped: it never
//! reached the server (no session recorded), its engine ran in this process (SQLite), or the
//! server session was cancelled and is gone; otherwise it is answered `COMMAND_INTERRUPTED`.

use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::TrySendError;
use drivers::{CancelToken, Database, DbKind};

use super::{InFlight, SupMsg, Supervisor, Waiting, log_outcome};
use crate::protocol::{Command, ErrorCode, Outbound};
use crate::store::{Repeat, error_frame, readdress};
use crate::worker::{Job, QueryJob};

/// Starts of one command after which it is not started again: each start ended with the agent
/// stopping (a crash loop), so it is answered `COMMAND_INTERRUPTED` instead.
const MAX_STARTS: u32 = 5;
/// Repeats (other commandIds, same key) that may wait for running commands' answers at once.
const MAX_ATTACHED: usize = 1024;
/// Server session recorded for an engine that runs inside the agent (SQLite).
const IN_PROCESS: &str = "local";
/// Server session recorded when the driver cannot name one.
const UNKNOWN_SESSION: &str = "unknown";

impl Supervisor {
    /// A `command` frame: persist, then answer from the store, refuse, run or queue it.
    pub(super) fn command(&mut self, command: Command) {
        tracing::info!(command = %command.command_id, execution = %command.execution_id, "command received");
        // The checks first (they write nothing), so a command that goes to a worker at once is
        // received and marked running in one commit. A repeat is answered from the store
        // whatever the checks said.
        let admitted = self.admit(&command);
        let run_now = admitted.is_ok() && self.has_free_worker();
        let received = if run_now {
            self.store.receive_running(&command)
        } else {
            self.store.receive(&command).map(|repeat| (repeat, 0))
        };
        let starts = match received {
            Ok((None, starts)) => starts,
            Ok((Some(repeat), _)) => return self.repeat(command, repeat),
            Err(e) => {
                tracing::error!(command = %command.command_id, error = %e, "cannot write the command to the offline queue");
                let message = if e.is_disk_full() {
                    "the agent's disk is full: it cannot record the command; retry later".to_owned()
                } else {
                    format!("the agent cannot record the command in its offline queue ({e}); retry later")
                };
                self.counters.failed += 1;
                let frame = error_frame(&command, ErrorCode::AgentBusy, message);
                log_outcome(&frame);
                self.link.frame(frame);
                return;
            }
        };
        self.activity_received(&command);
        let (db, checked) = match admitted {
            Ok(admitted) => admitted,
            Err((code, message)) => {
                return self.answer(&command.command_id, error_frame(&command, code, message));
            }
        };
        if run_now {
            self.hand_over(command, db, checked, starts);
        } else if self.waiting.len() < self.max_waiting {
            tracing::debug!(command = %command.command_id, waiting = self.waiting.len() + 1, "waiting for a worker");
            self.waiting.push_back(Waiting {
                command_id: command.command_id.clone(),
                execution_id: command.execution_id.clone(),
            });
            self.refresh_busy();
        } else {
            let message = format!(
                "{} commands are running and {} are waiting (maxQueuedCommands); retry later",
                self.running.len(),
                self.waiting.len()
            );
            self.answer(&command.command_id, error_frame(&command, ErrorCode::AgentBusy, message));
        }
    }

    /// A new command may go to a worker now: one is free, none waits before it, no stop.
    fn has_free_worker(&self) -> bool {
        self.running.len() < self.capacity && self.waiting.is_empty() && !self.stopping
    }

    /// A repeat of a command the store knows.
    fn repeat(&mut self, command: Command, repeat: Repeat) {
        match repeat {
            Repeat::Pending { command_id } if command_id == command.command_id => {
                tracing::info!(command = %command_id, "delivered again while waiting or running; its answer will follow");
            }
            Repeat::Pending { command_id } => {
                let attached: usize = self.attached.values().map(Vec::len).sum();
                if attached >= MAX_ATTACHED {
                    // Memory stays bounded whatever the cloud repeats; this delivery is not
                    // answered now, the cloud's next re-delivery is (from the store).
                    tracing::warn!(command = %command.command_id, "too many repeats waiting for running commands; this one is not attached");
                    return;
                }
                tracing::info!(command = %command.command_id, first = %command_id, "idempotency key of a command still running; it gets that answer");
                self.attached.entry(command_id).or_default().push(command);
            }
            Repeat::Answer(frame) => {
                tracing::info!(command = %command.command_id, "idempotency key answered before; answering from the offline queue");
                self.record_activity(&frame);
                self.link.frame(*frame);
            }
        }
    }

    /// The checks before a command may run. `Err` is the code and message to answer with.
    fn admit(&self, command: &Command) -> Result<(Database, gate::Checked), (ErrorCode, String)> {
        if self.paused || self.stopping {
            let why = if self.stopping { "shutting down" } else { "paused by its operator" };
            return Err((ErrorCode::AgentPaused, format!("the connector is {why}; retry later")));
        }
        if let Some(expires) = &command.payload.expires_at {
            match humantime::parse_rfc3339_weak(expires) {
                Ok(at) if at <= SystemTime::now() => {
                    return Err((ErrorCode::CommandExpired, format!("command expired at {expires}")));
                }
                Ok(_) => {}
                Err(e) => return Err((ErrorCode::MalformedMessage, format!("bad expiresAt: {e}"))),
            }
        }
        let wanted = command.payload.connection.as_ref().or(self.default_unopened.as_ref());
        if let Some(unopened) = self.unopened.iter().find(|u| Some(&u.name) == wanted) {
            return Err((
                ErrorCode::DatabaseUnavailable,
                format!("database `{}` cannot be opened: {}", unopened.name, unopened.reason),
            ));
        }
        let Some(db) = self.database_for(command.payload.connection.as_deref()) else {
            let wanted = command.payload.connection.as_deref().unwrap_or("(default)");
            return Err((ErrorCode::UnknownConnection, format!("no database connection named `{wanted}`")));
        };
        // The read-only gate: keyword pre-filter, AST check in the database's dialect, privacy.
        let empty = gate::Policy::default();
        let policy = self.policies.get(db.name()).unwrap_or(&empty);
        gate::check_with(
            &command.payload.query,
            command.payload.params.len(),
            db.gate_target(),
            policy,
            &self.limits.gate,
        )
        .map(|checked| (db, checked))
        .map_err(|rejection| (crate::policy::rejection_code(rejection.code), rejection.reason))
    }

    /// Marks a waiting command running in the store and hands it to a worker.
    fn launch(&mut self, command: Command, db: Database, checked: gate::Checked) {
        let starts = match self.store.start(&command.command_id) {
            Ok(starts) => starts,
            Err(e) => {
                tracing::error!(command = %command.command_id, error = %e, "cannot mark the command running");
                let message = if e.is_disk_full() {
                    "the agent's disk is full: it cannot record that the command runs; retry later"
                } else {
                    "the agent cannot write its offline queue; retry later"
                };
                let frame = error_frame(&command, ErrorCode::AgentBusy, message);
                return self.answer(&command.command_id, frame);
            }
        };
        self.hand_over(command, db, checked, starts);
    }

    /// Hands a command the store marked running (for the `starts`-th time) to a worker.
    fn hand_over(&mut self, command: Command, db: Database, checked: gate::Checked, starts: u32) {
        if starts > MAX_STARTS {
            let message = format!(
                "the agent stopped {} times while running this command; it is not started again",
                starts - 1
            );
            return self
                .answer(&command.command_id, error_frame(&command, ErrorCode::CommandInterrupted, message));
        }
        let cancel = CancelToken::default();
        // A command may ask for any timeout up to the configured cap; beyond it, the cap.
        let timeout = command
            .payload
            .timeout
            .map_or(self.limits.default_timeout, Duration::from_millis)
            .min(self.limits.max_timeout);
        let flight = InFlight {
            execution_id: command.execution_id.clone(),
            cancel: cancel.clone(),
            in_process: db.kind() == DbKind::Sqlite,
        };
        let command_id = command.command_id.clone();
        let job = Job::Query(Box::new(QueryJob {
            command,
            db,
            checked,
            cancel,
            timeout,
            received: Instant::now(),
            max_result_bytes: self.limits.max_result_bytes,
        }));
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.running.insert(command_id, flight);
                self.refresh_busy();
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                // The job queue also carries discovery; try again when a worker reports.
                if let Err(e) = self.store.requeue(&command_id) {
                    tracing::error!(command = %command_id, error = %e, "cannot put the command back to waiting");
                }
                self.waiting.push_front(Waiting { command_id, execution_id: flight.execution_id });
            }
        }
    }

    /// Starts waiting commands while workers are free.
    pub(super) fn dispatch_waiting(&mut self) {
        while self.running.len() < self.capacity && !self.stopping {
            let Some(next) = self.waiting.pop_front() else { break };
            let command = match self.store.command(&next.command_id) {
                Ok(Some(command)) => command,
                Ok(None) => {
                    tracing::warn!(command = %next.command_id, "waiting command is gone from the offline queue");
                    continue;
                }
                Err(e) => {
                    tracing::error!(command = %next.command_id, error = %e, "cannot read a waiting command");
                    continue;
                }
            };
            match self.admit(&command) {
                Ok((db, checked)) => self.launch(command, db, checked),
                Err((code, message)) => {
                    let frame = error_frame(&command, code, message);
                    self.answer(&command.command_id, frame);
                }
            }
            if self.waiting.front().is_some_and(|w| w.command_id == next.command_id) {
                break; // put back: the job queue is full
            }
        }
        self.refresh_busy();
    }

    /// Records and sends a command's answer (and to repeats attached to it).
    pub(super) fn answer(&mut self, command_id: &str, frame: Outbound) {
        if let Err(e) = self.store.finish(command_id, &frame) {
            tracing::error!(command = %command_id, error = %e, "cannot record the answer in the offline queue");
        }
        match &frame {
            Outbound::ExecutionResult(r) => {
                self.counters.completed += 1;
                self.counters.rows += r.row_count;
            }
            Outbound::ExecutionError(e) => {
                self.counters.failed += 1;
                self.counters.last_error = Some(format!("{}: {}", e.error.code, e.error.message));
            }
            _ => {}
        }
        log_outcome(&frame);
        self.record_activity(&frame);
        for repeat in self.attached.remove(command_id).unwrap_or_default() {
            self.link.frame(readdress(frame.clone(), &repeat));
        }
        self.link.frame(frame);
        self.refresh_busy();
    }

    /// A worker finished a command.
    pub(super) fn finished(&mut self, command_id: String, frame: Outbound) {
        self.running.remove(&command_id);
        let cancelled =
            matches!(&frame, Outbound::ExecutionError(e) if e.error.code == ErrorCode::CommandCancelled);
        if self.requeue_on_cancel.remove(&command_id) && cancelled {
            match self.store.requeue(&command_id) {
                Ok(()) => {
                    tracing::info!(command = %command_id, "stopped by the shutdown; it runs again when the agent starts")
                }
                Err(e) => {
                    tracing::error!(command = %command_id, error = %e, "cannot put the command back to waiting")
                }
            }
            return;
        }
        self.answer(&command_id, frame);
        self.dispatch_waiting();
    }

    /// A worker is about to send a command's statement: record where it runs.
    pub(super) fn started(&mut self, command_id: &str, session: Option<String>) {
        let in_process = self.running.get(command_id).is_some_and(|f| f.in_process);
        if session.is_none() && in_process {
            // Nothing to write: recovery treats a running command without a session and one
            // marked IN_PROCESS alike (it stopped with the agent; run it again), so a commit
            // here would change nothing the disk can tell. (The worker does not even ask for
            // an in-process engine; this covers a driver that does.)
            return;
        }
        let session = session.unwrap_or_else(|| UNKNOWN_SESSION.to_owned());
        if let Err(e) = self.store.set_server_session(command_id, &session) {
            tracing::error!(command = %command_id, error = %e, "cannot record the command's server session");
        }
    }

    /// `cancel`: running commands of the execution are stopped; waiting ones answered at once.
    pub(super) fn cancel(&mut self, execution_id: &str, reason: Option<&str>) {
        let mut found = 0;
        for flight in self.running.values().filter(|f| f.execution_id == execution_id) {
            flight.cancel.cancel();
            found += 1;
        }
        let (cancelled, kept): (Vec<Waiting>, Vec<Waiting>) =
            self.waiting.drain(..).partition(|w| w.execution_id == execution_id);
        self.waiting = kept.into();
        for waiting in cancelled {
            found += 1;
            if let Ok(Some(command)) = self.store.command(&waiting.command_id) {
                let message = format!("cancelled before it started: {}", reason.unwrap_or("no reason given"));
                self.answer(&waiting.command_id, error_frame(&command, ErrorCode::CommandCancelled, message));
            }
        }
        self.store.note(
            "cancel_requested",
            None,
            None,
            Some(&format!("execution {execution_id}: {found} commands")),
        );
        tracing::info!(execution = %execution_id, commands = found, reason = ?reason, "cancel");
        self.refresh_busy();
    }

    /// After a start: commands that were running when the agent stopped, then the waiting ones.
    pub(super) fn recover(&mut self) {
        self.recovered = true;
        match self.store.interrupted() {
            Ok(interrupted) => {
                for stored in interrupted {
                    let id = stored.command_id.clone();
                    // Started by this process (it arrived before the first discovery ended).
                    if self.running.contains_key(&id) {
                        continue;
                    }
                    match stored.server_session.as_deref() {
                        // Never reached the server (the session is written before the statement
                        // is sent), or ran inside this process: it stopped with the agent.
                        None | Some(IN_PROCESS) => {
                            tracing::info!(command = %id, "was running when the agent stopped; its first run cannot still run: running it again");
                            self.requeue_recovered(&id);
                        }
                        Some(UNKNOWN_SESSION) => self.interrupted(
                            &id,
                            "the database driver cannot tell whether the first run still runs on the server",
                        ),
                        Some(session) => {
                            let db = self.database_for(stored.connection.as_deref());
                            match db {
                                Some(db) => {
                                    tracing::info!(command = %id, "was running when the agent stopped: stopping the first run on the server before anything else");
                                    let job =
                                        Job::CancelStale { command_id: id, db, session: session.to_owned() };
                                    if self.jobs.send(job).is_err() {
                                        tracing::error!("workers are gone");
                                    }
                                }
                                None => self.interrupted(&id, "its connection is no longer configured"),
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read interrupted commands from the offline queue"),
        }
        match self.store.queued(self.max_waiting) {
            Ok(queued) => {
                if !queued.is_empty() {
                    tracing::info!(commands = queued.len(), "resuming commands from the offline queue");
                }
                for stored in queued {
                    if !self.waiting.iter().any(|w| w.command_id == stored.command_id) {
                        self.waiting.push_back(Waiting {
                            command_id: stored.command_id,
                            execution_id: stored.execution_id.unwrap_or_default(),
                        });
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read waiting commands from the offline queue"),
        }
        self.dispatch_waiting();
    }

    fn requeue_recovered(&mut self, command_id: &str) {
        if let Err(e) = self.store.requeue(command_id) {
            tracing::error!(command = %command_id, error = %e, "cannot put the command back to waiting");
            return;
        }
        let execution_id = match self.store.command(command_id) {
            Ok(Some(command)) => command.execution_id,
            _ => String::new(),
        };
        self.waiting.push_back(Waiting { command_id: command_id.to_owned(), execution_id });
    }

    /// Answers a command interrupted by a stop that cannot be proven over.
    fn interrupted(&mut self, command_id: &str, why: &str) {
        tracing::warn!(command = %command_id, why, "interrupted command is not run again");
        match self.store.command(command_id) {
            Ok(Some(command)) => {
                let message = format!(
                    "the agent stopped while this command ran and {why}; it is not run again (send it with a new idempotency key to run it)"
                );
                self.answer(command_id, error_frame(&command, ErrorCode::CommandInterrupted, message));
            }
            _ => tracing::error!(command = %command_id, "interrupted command cannot be read back"),
        }
    }

    /// A worker reports on stopping a crashed command's first run.
    pub(super) fn stale_cancelled(&mut self, command_id: String, proven: bool, detail: &str) {
        if proven {
            tracing::info!(command = %command_id, detail, "first run stopped on the server; running it again");
            self.requeue_recovered(&command_id);
            self.dispatch_waiting();
        } else {
            self.interrupted(
                &command_id,
                &format!("its first run could not be proven stopped on the server ({detail})"),
            );
        }
    }

    fn database_for(&self, connection: Option<&str>) -> Option<Database> {
        match connection {
            Some(name) => self.databases.iter().find(|db| db.name() == name).cloned(),
            None => self.databases.first().cloned(),
        }
    }

    /// Stops intake, lets running commands finish within `grace`, stops the rest (they go back
    /// to waiting and run at the next start), and tells the cloud.
    pub(super) fn drain(&mut self, grace: Duration) {
        self.stopping = true;
        self.store.note("agent_stopping", None, None, None);
        let deadline = Instant::now() + grace;
        while !self.running.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(SupMsg::Control { reply, .. }) => {
                    let _ = reply.send(crate::protocol::control::ControlReply::error(
                        "NOT_RUNNING",
                        "the agent is stopping",
                    ));
                }
                Ok(SupMsg::Shutdown { .. }) => {}
                Ok(msg) => self.handle(msg),
                Err(_) => break,
            }
        }
        for (command_id, flight) in &self.running {
            self.requeue_on_cancel.insert(command_id.clone());
            flight.cancel.cancel();
        }
        // Give cancelled queries a moment to report.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.running.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(msg @ (SupMsg::Finished { .. } | SupMsg::Started { .. })) => self.handle(msg),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if self.board.is_connected() {
            self.link.frame(Outbound::Status(crate::protocol::StatusUpdate {
                status: crate::protocol::AgentStatus::Offline,
                reason: Some("agent shutting down".into()),
            }));
        }
    }
}
