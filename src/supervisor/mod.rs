//! The supervisor: the only writer of agent state.
//!
//! It owns the connection state, the running and waiting commands and their cancel tokens, the
//! cached schema, and the [`ResultStore`] — the durable queue where every command's fate is
//! recorded (received → running → answered/failed/cancelled/expired → acknowledged). Every other
//! thread reports to it through [`SupMsg`]; it decides, then sends frames through the link and
//! jobs to the workers. Command intake, dispatch, answers and crash recovery are in
//! [`commands`](self) (`commands.rs`).

mod commands;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use drivers::{CancelToken, Database};

use crate::link::LinkSender;
use crate::protocol::{
    AgentStatus, Command, Connected, DecodeError, ErrorBody, ErrorCode, ExecutionError, Inbound, Outbound,
    SchemaDiscovery, ShutdownMode, StatusUpdate, now_rfc3339,
};
use crate::store::ResultStore;
use crate::uploader::UploadSlot;
use crate::worker::{Job, UploadTarget};

/// Recent commands kept for `mini-connector activity`.
const ACTIVITY_ENTRIES: usize = 200;
/// How often the supervisor checks the queue's size and retries databases that failed.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// Everything the supervisor hears about.
#[derive(Debug)]
pub enum SupMsg {
    /// The link is dialling.
    LinkConnecting,
    /// The cloud accepted the agent.
    LinkUp(Box<Connected>),
    /// The connection ended; `rejected` is set when the cloud refused the agent.
    LinkDown {
        /// For humans.
        reason: String,
        /// `AUTH_FAILED` or `DUPLICATE_CONNECTION`.
        rejected: Option<ErrorCode>,
    },
    /// A decoded frame from the cloud.
    Inbound(Box<Inbound>),
    /// A frame from the cloud that could not be decoded.
    BadFrame(DecodeError),
    /// A worker is about to send a command's statement on this server session (`None`: the
    /// driver cannot name one). The supervisor writes it to the store, then answers on
    /// `recorded`; the worker sends the statement only after that, so a command found running
    /// after a crash without a session was never sent.
    Started {
        /// The command.
        command_id: String,
        /// The driver's description of the server session (`pg:…`, `mysql:…`).
        session: Option<String>,
        /// Answered once the session is on disk.
        recorded: Sender<()>,
    },
    /// A worker tried to stop, on the database server, the first run of a command that was
    /// running when the agent stopped.
    StaleCancelled {
        /// The command.
        command_id: String,
        /// True when it is proven that the first run no longer runs.
        proven: bool,
        /// What happened, for the log.
        detail: String,
    },
    /// A worker finished a command.
    Finished {
        /// The command.
        command_id: String,
        /// `execution_result` or `execution_error`.
        frame: Box<Outbound>,
    },
    /// A worker finished schema discovery: per connection, its schema or why not.
    Discovered(Vec<(String, Result<drivers::DatabaseSchema, String>)>),
    /// A request from the local control channel; the answer goes to `reply`.
    Control {
        /// What the operator asked.
        cmd: crate::control::ControlCmd,
        /// Where the JSON answer goes.
        reply: Sender<serde_json::Value>,
    },
    /// Stop: finish running commands within `grace`, then end.
    Shutdown {
        /// Why.
        reason: String,
        /// How long running commands may take.
        grace: Duration,
    },
}

/// Connection state, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Dialling or authenticating.
    Connecting = 0,
    /// Connected and idle.
    Connected = 1,
    /// Connected and running commands.
    Busy = 2,
    /// Not connected; waiting to retry.
    Disconnected = 3,
    /// Paused by the operator.
    Paused = 4,
    /// The cloud refused the API key (`AUTH_FAILED`): retrying slowly, waiting for a new key.
    KeyRejected = 5,
}

/// Lock-free snapshot of agent state for readers (heartbeat, UI). Written only by the supervisor.
#[derive(Debug, Default)]
pub struct StatusBoard {
    state: AtomicU8,
    active: AtomicU32,
    connected: AtomicBool,
}

impl StatusBoard {
    /// Current connection state.
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            1 => LinkState::Connected,
            2 => LinkState::Busy,
            3 => LinkState::Disconnected,
            4 => LinkState::Paused,
            5 => LinkState::KeyRejected,
            _ => LinkState::Connecting,
        }
    }

    /// Commands accepted and not yet finished.
    pub fn active_commands(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the link is authenticated.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Status for the heartbeat.
    pub fn agent_status(&self) -> AgentStatus {
        match self.state() {
            LinkState::Busy => AgentStatus::Busy,
            LinkState::Paused => AgentStatus::Paused,
            LinkState::Connected => AgentStatus::Ready,
            LinkState::Connecting | LinkState::Disconnected | LinkState::KeyRejected => AgentStatus::Error,
        }
    }
}

/// A command a worker is running.
struct InFlight {
    execution_id: String,
    cancel: CancelToken,
    /// Whether the engine runs in this process (SQLite): a crash stops it too.
    in_process: bool,
}

/// A command persisted and admitted, waiting for a free worker.
#[derive(Debug, Clone)]
struct Waiting {
    command_id: String,
    execution_id: String,
}

/// The supervisor's state and loop.
pub struct Supervisor {
    inbox: Receiver<SupMsg>,
    link: LinkSender,
    jobs: Sender<Job>,
    board: Arc<StatusBoard>,
    databases: Vec<Database>,
    /// Configured databases that could not be opened yet.
    unopened: Vec<Unopened>,
    /// The default (first configured) connection, while it is among `unopened`.
    default_unopened: Option<String>,
    /// Schema policy per connection name as configured (absent: nothing private).
    configured_policies: HashMap<String, gate::Policy>,
    /// The policy the gate and the broadcasts apply: the configured one plus what discovery
    /// found (views over private objects); `policy::before_discovery` until then.
    policies: HashMap<String, gate::Policy>,
    limits: crate::config::CommandLimits,
    /// The current session's upload target, shared with the workers and the uploader.
    upload: Arc<UploadSlot>,
    /// Where chunks may be uploaded (`cloudUrl`'s host, `uploadHosts`).
    upload_policy: crate::uploader::UploadPolicy,
    /// Where every command's fate is recorded.
    store: ResultStore,
    /// Commands at a worker, by commandId.
    running: HashMap<String, InFlight>,
    /// Commands admitted and persisted, waiting for a worker, oldest first.
    waiting: VecDeque<Waiting>,
    /// Repeats (other commandIds, same idempotency key) of a command still waiting or running,
    /// by the first delivery's commandId: they get its answer too.
    attached: HashMap<String, Vec<Command>>,
    /// The store was read back after the start (it waits for the first discovery).
    recovered: bool,
    /// Commands cancelled by a local shutdown: back to waiting, not answered.
    requeue_on_cancel: HashSet<String>,
    /// How many commands run at once (worker threads).
    capacity: usize,
    /// How many may wait (`maxQueuedCommands`).
    max_waiting: usize,
    schema: Option<Vec<drivers::DatabaseSchema>>,
    discovering: bool,
    /// Connections whose last discovery failed (down at start, ...): retried every HOUSEKEEPING.
    unhealthy: BTreeSet<String>,
    state: LinkState,
    paused: bool,
    /// Draining for a local stop: no new work is started.
    stopping: bool,
    /// Set when the cloud asks for a decommission or the operator for a stop; `run` drains and returns.
    stop: Option<(String, Duration)>,
    /// A gateway restart: once nothing runs (or at this deadline) drop the link and reconnect.
    restart_drain: Option<Instant>,
    next_housekeeping: Instant,
    counters: Counters,
}

/// Figures for `status`.
#[derive(Debug)]
struct Counters {
    started: Instant,
    completed: u64,
    failed: u64,
    rows: u64,
    connection_id: Option<String>,
    connected_since: Option<SystemTime>,
    last_error: Option<String>,
    reconnects: u64,
    /// Newest last; at most ACTIVITY_ENTRIES. Query text is not kept (it may carry data).
    activity: VecDeque<serde_json::Value>,
    /// commandId -> RFC 3339 time of receipt, for commands not finished yet.
    received_at: HashMap<String, String>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("state", &self.state)
            .field("running", &self.running.len())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

/// A configured database that could not be opened at start (retried every HOUSEKEEPING).
#[derive(Debug)]
pub struct Unopened {
    /// The connection's name.
    pub name: String,
    /// What to open it with; `None` when even that failed (e.g. its password is not in the
    /// vault): not retried, reported until the configuration is fixed and the agent restarted.
    pub spec: Option<drivers::ConnectionSpec>,
    /// Why it could not be opened.
    pub reason: String,
    /// It is the first configured connection (the default for commands that name none).
    pub first: bool,
}

/// How the supervisor is set up (besides its channels).
#[derive(Debug)]
pub struct SupervisorSettings {
    /// The configured databases that are open.
    pub databases: Vec<Database>,
    /// The configured databases that could not be opened.
    pub unopened: Vec<Unopened>,
    /// Schema policy per connection.
    pub policies: HashMap<String, gate::Policy>,
    /// Per-command limits.
    pub limits: crate::config::CommandLimits,
    /// Commands run at once (the number of worker threads).
    pub capacity: usize,
    /// Commands that may wait for a worker.
    pub max_waiting: usize,
}

impl Supervisor {
    /// Builds the supervisor. `jobs` is the bounded worker queue; `store` the durable queue.
    pub fn new(
        inbox: Receiver<SupMsg>,
        link: LinkSender,
        jobs: Sender<Job>,
        board: Arc<StatusBoard>,
        store: ResultStore,
        settings: SupervisorSettings,
    ) -> Self {
        let SupervisorSettings { databases, unopened, policies, limits, capacity, max_waiting } = settings;
        Self {
            inbox,
            link,
            jobs,
            board,
            databases,
            default_unopened: unopened.iter().find(|u| u.first).map(|u| u.name.clone()),
            unopened,
            policies: policies.iter().map(|(k, p)| (k.clone(), crate::policy::before_discovery(p))).collect(),
            configured_policies: policies,
            limits,
            upload: Arc::new(UploadSlot::new()),
            upload_policy: crate::uploader::UploadPolicy::deny_all(),
            store,
            running: HashMap::new(),
            waiting: VecDeque::new(),
            attached: HashMap::new(),
            recovered: false,
            requeue_on_cancel: HashSet::new(),
            capacity: capacity.max(1),
            max_waiting,
            schema: None,
            discovering: false,
            unhealthy: BTreeSet::new(),
            state: LinkState::Connecting,
            paused: false,
            stopping: false,
            stop: None,
            restart_drain: None,
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            counters: Counters {
                started: Instant::now(),
                completed: 0,
                failed: 0,
                rows: 0,
                connection_id: None,
                connected_since: None,
                last_error: None,
                reconnects: 0,
                activity: VecDeque::new(),
                received_at: HashMap::new(),
            },
        }
    }

    /// Shares the upload slot with the workers and the uploader (set on `connected`, cleared
    /// on link down).
    pub fn with_upload_slot(mut self, slot: Arc<UploadSlot>) -> Self {
        self.upload = slot;
        self
    }

    /// Sets where chunks may be uploaded; without it every upload URL is refused.
    pub fn with_upload_policy(mut self, policy: crate::uploader::UploadPolicy) -> Self {
        self.upload_policy = policy;
        self
    }

    /// Resumes what the store holds, then runs until a shutdown message (or every sender is
    /// gone). Returns the shutdown reason.
    pub fn run(mut self) -> String {
        // Discovery first: a connection's schema policy is only complete after it (views over
        // private tables), and the commands resumed from the store are judged with it.
        self.start_discovery(self.databases.clone());
        if !self.discovering {
            self.recover();
        }
        loop {
            let wake = self.restart_drain.map_or(self.next_housekeeping, |at| at.min(self.next_housekeeping));
            match self.inbox.recv_deadline(wake) {
                Ok(SupMsg::Shutdown { reason, grace }) => {
                    self.drain(grace);
                    return reason;
                }
                Ok(msg) => self.handle(msg),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return "all senders gone".into(),
            }
            if let Some((reason, grace)) = self.stop.take() {
                self.drain(grace);
                return reason;
            }
            self.timers();
        }
    }

    /// Work that is due: the end of a restart drain, housekeeping.
    fn timers(&mut self) {
        if let Some(deadline) = self.restart_drain
            && (self.running.is_empty() || Instant::now() >= deadline)
        {
            self.restart_drain = None;
            tracing::info!(
                still_running = self.running.len(),
                "gateway restart: reconnecting (answers of commands still running are kept and sent on the next connection)"
            );
            self.link.send(crate::link::LinkMsg::Reconnect);
        }
        if Instant::now() >= self.next_housekeeping {
            self.next_housekeeping = Instant::now() + HOUSEKEEPING;
            if let Err(e) = self.store.check_usage() {
                tracing::error!(error = %e, "cannot read the offline queue's size");
            }
            self.reopen();
            if !self.unhealthy.is_empty() {
                let retry: Vec<Database> =
                    self.databases.iter().filter(|db| self.unhealthy.contains(db.name())).cloned().collect();
                self.start_discovery(retry);
            }
        }
    }

    /// Tries again to open the databases that could not be opened.
    fn reopen(&mut self) {
        let mut opened = Vec::new();
        for unopened in &mut self.unopened {
            let Some(spec) = &unopened.spec else { continue };
            match Database::open(spec) {
                Ok(db) => {
                    tracing::info!(connection = %unopened.name, "database opened");
                    opened.push(db);
                }
                Err(e) => unopened.reason = e.to_string(),
            }
        }
        if opened.is_empty() {
            return;
        }
        self.unopened.retain(|u| !opened.iter().any(|db| db.name() == u.name));
        for db in &opened {
            self.unhealthy.insert(db.name().to_owned());
        }
        for db in opened {
            // The first configured connection is the default one: keep it first.
            if self.default_unopened.as_deref() == Some(db.name()) {
                self.default_unopened = None;
                self.databases.insert(0, db);
            } else {
                self.databases.push(db);
            }
        }
    }

    fn set_state(&mut self, state: LinkState) {
        let state = if self.paused && matches!(state, LinkState::Connected | LinkState::Busy) {
            LinkState::Paused
        } else {
            state
        };
        if state != self.state {
            let routine = matches!(
                (self.state, state),
                (LinkState::Connected, LinkState::Busy) | (LinkState::Busy, LinkState::Connected)
            );
            if routine {
                tracing::debug!(from = ?self.state, to = ?state, "state");
            } else {
                tracing::info!(from = ?self.state, to = ?state, "state");
            }
            self.state = state;
            self.board.state.store(state as u8, Ordering::Relaxed);
        }
    }

    fn refresh_busy(&mut self) {
        let active = self.running.len() + self.waiting.len();
        self.board.active.store(u32::try_from(active).unwrap_or(u32::MAX), Ordering::Relaxed);
        if matches!(self.state, LinkState::Connected | LinkState::Busy) {
            let (state, status) = if active == 0 {
                (LinkState::Connected, AgentStatus::Ready)
            } else {
                (LinkState::Busy, AgentStatus::Busy)
            };
            if state != self.state {
                self.set_state(state);
                self.link.frame(Outbound::Status(StatusUpdate { status, reason: None }));
            }
        }
    }

    fn handle(&mut self, msg: SupMsg) {
        match msg {
            SupMsg::LinkConnecting => {
                if self.state != LinkState::KeyRejected {
                    self.set_state(LinkState::Connecting);
                }
            }
            SupMsg::LinkUp(connected) => self.link_up(*connected),
            SupMsg::LinkDown { reason, rejected } => {
                self.board.connected.store(false, Ordering::Relaxed);
                self.upload.set(None);
                self.counters.connected_since = None;
                self.counters.last_error = Some(match rejected {
                    Some(code) => format!("{code}: {reason}"),
                    None => reason.clone(),
                });
                match rejected {
                    Some(code @ ErrorCode::AuthFailed) => {
                        tracing::error!(
                            %code,
                            %reason,
                            "key rejected: the cloud refused this agent's API key (revoked or rotated). \
                             Retrying slowly; store the new key with `mini-connector key rotate`"
                        );
                        self.set_state(LinkState::KeyRejected);
                    }
                    Some(code) => {
                        tracing::warn!(%code, %reason, "the cloud refused this session");
                        self.set_state(LinkState::Disconnected);
                    }
                    None => {
                        tracing::warn!(%reason, "disconnected from the cloud");
                        self.set_state(LinkState::Disconnected);
                    }
                }
            }
            SupMsg::Inbound(frame) => self.inbound(*frame),
            SupMsg::BadFrame(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "bad frame from the cloud");
                self.link.frame(Outbound::ExecutionError(ExecutionError {
                    command_id: error.command_id,
                    execution_id: None,
                    activity_id: None,
                    error: ErrorBody::new(error.code, error.message),
                }));
            }
            SupMsg::Started { command_id, session, recorded } => {
                self.started(&command_id, session);
                let _ = recorded.send(());
            }
            SupMsg::StaleCancelled { command_id, proven, detail } => {
                self.stale_cancelled(command_id, proven, &detail);
            }
            SupMsg::Finished { command_id, frame } => self.finished(command_id, *frame),
            SupMsg::Discovered(results) => self.discovered(results),
            SupMsg::Control { cmd, reply } => {
                let answer = self.control(cmd);
                let _ = reply.send(answer);
            }
            SupMsg::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn link_up(&mut self, connected: Connected) {
        tracing::info!(
            tenant = %connected.tenant_id,
            connector = %connected.connector_name,
            connection = %connected.connection_id,
            "connected to the cloud"
        );
        let upload = &connected.upload;
        let url = self.upload_policy.check(&upload.url);
        if let Err(reason) = &url {
            tracing::warn!(
                "refusing the upload URL the cloud named: {reason}. No chunk will be sent there; \
                 results too large to travel inline fail with UPLOAD_FAILED. If that host is \
                 legitimate, list it in `uploadHosts` in the configuration"
            );
        }
        self.upload.set(Some(UploadTarget {
            url,
            connection_id: connected.connection_id.clone(),
            key: upload.hmac_key.clone(),
            max_chunk_bytes: usize::try_from(upload.max_chunk_bytes.clamp(4096, 64 << 20)).unwrap_or(1 << 20),
            max_inline_bytes: usize::try_from(upload.max_inline_bytes.min(8 << 20)).unwrap_or(1 << 18),
        }));
        self.board.connected.store(true, Ordering::Relaxed);
        if self.counters.connection_id.is_some() {
            self.counters.reconnects += 1;
        }
        self.counters.connection_id = Some(connected.connection_id.clone());
        self.counters.connected_since = Some(SystemTime::now());
        self.set_state(LinkState::Connected);
        if self.paused {
            self.link.frame(Outbound::Status(StatusUpdate {
                status: AgentStatus::Paused,
                reason: Some("paused by the operator".into()),
            }));
        }
        // Answers the cloud has not acknowledged: sent again; it drops what it already has.
        match self.store.unacknowledged() {
            Ok(answers) => {
                if !answers.is_empty() {
                    tracing::info!(answers = answers.len(), "sending answers the cloud has not acknowledged");
                }
                for frame in answers {
                    self.link.frame(frame);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read unacknowledged answers from the offline queue")
            }
        }
        self.refresh_busy();
        match &self.schema {
            Some(schema) => self.send_schema(schema.clone()),
            None => self.start_discovery(self.databases.clone()),
        }
    }

    fn discovered(&mut self, results: Vec<(String, Result<drivers::DatabaseSchema, String>)>) {
        self.discovering = false;
        let first = !self.recovered;
        let mut schema = self.schema.take().unwrap_or_default();
        for (name, result) in results {
            match result {
                Ok(db) => {
                    if self.unhealthy.remove(&name) {
                        tracing::info!(connection = %name, "database reachable again");
                    }
                    if let Some(configured) = self.configured_policies.get(&db.connection) {
                        let effective = crate::policy::effective_policy(configured, &db);
                        self.policies.insert(db.connection.clone(), effective);
                    }
                    schema.retain(|known| known.connection != name);
                    schema.push(db);
                }
                Err(e) => {
                    if self.unhealthy.insert(name.clone()) {
                        tracing::error!(
                            connection = %name,
                            error = %e,
                            "schema discovery failed; the other databases are served, this one is retried every {} s",
                            HOUSEKEEPING.as_secs()
                        );
                    } else {
                        tracing::debug!(connection = %name, error = %e, "schema discovery failed again");
                    }
                }
            }
        }
        // Configuration order, so broadcasts are stable.
        schema.sort_by_key(|db| self.databases.iter().position(|d| d.name() == db.connection));
        self.schema = Some(schema.clone());
        self.send_schema(schema);
        if first {
            self.recover();
        }
    }

    fn control(&mut self, cmd: crate::control::ControlCmd) -> serde_json::Value {
        use crate::control::ControlCmd;
        match cmd {
            ControlCmd::Status => self.snapshot(),
            ControlCmd::Activity => {
                let newest_first: Vec<_> = self.counters.activity.iter().rev().cloned().collect();
                serde_json::json!({ "ok": true, "activity": newest_first })
            }
            ControlCmd::Pause | ControlCmd::Resume => {
                let pause = cmd == ControlCmd::Pause;
                if self.paused != pause {
                    self.paused = pause;
                    tracing::info!(
                        paused = pause,
                        "operator {}",
                        if pause { "paused the agent" } else { "resumed the agent" }
                    );
                    if self.board.is_connected() {
                        let status = if pause { AgentStatus::Paused } else { AgentStatus::Ready };
                        self.link.frame(Outbound::Status(StatusUpdate {
                            status,
                            reason: Some(format!(
                                "{} by the operator",
                                if pause { "paused" } else { "resumed" }
                            )),
                        }));
                        self.set_state(LinkState::Connected);
                        self.refresh_busy();
                    }
                }
                serde_json::json!({ "ok": true, "paused": self.paused })
            }
            ControlCmd::Reconnect => {
                tracing::info!("operator asked to reconnect");
                self.link.send(crate::link::LinkMsg::Reconnect);
                serde_json::json!({ "ok": true })
            }
            ControlCmd::Stop => {
                self.stop = Some((
                    "stopped by the operator".into(),
                    self.limits.default_timeout.min(Duration::from_secs(30)),
                ));
                serde_json::json!({ "ok": true, "stopping": true })
            }
        }
    }

    /// Appends a finished command to the in-memory activity tail.
    fn record_activity(&mut self, frame: &Outbound) {
        let (command_id, outcome, rows, duration) = match frame {
            Outbound::ExecutionResult(r) => {
                let kind = match r.result {
                    crate::protocol::ResultPayload::Inline { .. } => "ok (inline)",
                    crate::protocol::ResultPayload::Buffered { .. } => "ok (chunked)",
                };
                (r.command_id.clone(), kind.to_owned(), Some(r.row_count), Some(r.duration_ms))
            }
            Outbound::ExecutionError(e) => {
                (e.command_id.clone().unwrap_or_default(), e.error.code.to_string(), None, None)
            }
            _ => return,
        };
        let received = self.counters.received_at.remove(&command_id);
        if self.counters.activity.len() == ACTIVITY_ENTRIES {
            self.counters.activity.pop_front();
        }
        self.counters.activity.push_back(serde_json::json!({
            "commandId": command_id,
            "receivedAt": received,
            "outcome": outcome,
            "rows": rows,
            "durationMs": duration,
        }));
    }

    fn snapshot(&self) -> serde_json::Value {
        let state = match self.state {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Busy => "busy",
            LinkState::Disconnected => "disconnected",
            LinkState::Paused => "paused",
            LinkState::KeyRejected => "key_rejected",
        };
        let queue = match (self.store.counts(), self.store.usage()) {
            (Ok(counts), Ok(usage)) => serde_json::json!({
                "waiting": counts.received,
                "running": counts.running,
                "unacknowledged": counts.unacknowledged,
                "usedBytes": usage.used_bytes,
                "capBytes": usage.cap_bytes,
                "warning": usage.warn,
            }),
            (Err(e), _) | (_, Err(e)) => serde_json::json!({ "error": e.to_string() }),
        };
        serde_json::json!({
            "ok": true,
            "state": state,
            "connected": self.board.is_connected(),
            "paused": self.paused,
            "connectionId": self.counters.connection_id,
            "connectedSince": self.counters.connected_since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "uptimeSecs": self.counters.started.elapsed().as_secs(),
            "activeCommands": self.running.len(),
            "waitingCommands": self.waiting.len(),
            "commandsCompleted": self.counters.completed,
            "commandsFailed": self.counters.failed,
            "rowsReturned": self.counters.rows,
            "reconnects": self.counters.reconnects,
            "lastError": self.counters.last_error,
            "instanceId": self.store.instance_id(),
            "queue": queue,
            "databases": self.databases.iter().map(|db| serde_json::json!({
                "name": db.name(),
                "type": db.kind().to_string(),
                "healthy": !self.unhealthy.contains(db.name()),
            })).chain(self.unopened.iter().map(|u| serde_json::json!({
                "name": u.name,
                "type": u.spec.as_ref().map(|s| s.kind.to_string()),
                "healthy": false,
                "error": u.reason,
            }))).collect::<Vec<_>>(),
            "schemaTables": self.schema.as_ref().map(|s| s.iter().map(|d| d.tables.len()).sum::<usize>()),
            "agentVersion": env!("CARGO_PKG_VERSION"),
        })
    }

    fn send_schema(&self, schema: Vec<drivers::DatabaseSchema>) {
        // Private tables and columns never leave the machine, not even as names.
        let schema = schema
            .iter()
            .map(|db| match self.policies.get(&db.connection) {
                Some(policy) => crate::policy::visible_schema(db, policy),
                None => db.clone(),
            })
            .collect();
        if self.board.is_connected() {
            self.link.frame(Outbound::SchemaDiscovery(SchemaDiscovery { timestamp: now_rfc3339(), schema }));
        }
    }

    fn start_discovery(&mut self, databases: Vec<Database>) {
        if self.discovering || databases.is_empty() {
            return;
        }
        if self.jobs.try_send(Job::Discover(databases)).is_ok() {
            self.discovering = true;
        } else {
            tracing::warn!("workers busy; schema discovery postponed");
        }
    }

    fn inbound(&mut self, frame: Inbound) {
        match frame {
            Inbound::Command(command) => self.command(command),
            Inbound::Cancel(cancel) => self.cancel(&cancel.execution_id, cancel.reason.as_deref()),
            Inbound::SchemaRequest(_) => {
                self.schema = None;
                self.start_discovery(self.databases.clone());
            }
            Inbound::Ack(ack) => match self.store.acknowledge(&ack.command_id) {
                Ok(_) => tracing::debug!(command = %ack.command_id, "answer acknowledged"),
                Err(e) => tracing::error!(command = %ack.command_id, error = %e, "cannot record an ack"),
            },
            Inbound::Shutdown(shutdown) => {
                let grace = Duration::from_millis(shutdown.grace_period);
                match shutdown.mode {
                    ShutdownMode::Restart => {
                        tracing::info!(
                            reason = ?shutdown.reason,
                            grace_ms = shutdown.grace_period,
                            "the cloud is restarting: finishing running commands, then reconnecting"
                        );
                        self.restart_drain = Some(Instant::now() + grace);
                    }
                    ShutdownMode::Decommission => {
                        let reason = shutdown.reason.unwrap_or_else(|| "no reason given".into());
                        tracing::warn!(%reason, "the cloud decommissioned this connector; stopping");
                        self.store.note("decommissioned", None, None, Some(&reason));
                        self.stop = Some((format!("decommissioned by the cloud: {reason}"), grace));
                    }
                }
            }
            Inbound::Error(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "error from the cloud")
            }
            Inbound::Connected(_) => tracing::warn!("unexpected `connected` in an established session"),
        }
    }
}

fn log_outcome(frame: &Outbound) {
    match frame {
        Outbound::ExecutionResult(r) => {
            tracing::info!(command = %r.command_id, rows = r.row_count, duration_ms = r.duration_ms, "command done");
        }
        Outbound::ExecutionError(e) => tracing::warn!(
            command = e.command_id.as_deref().unwrap_or("-"),
            code = %e.error.code,
            message = %e.error.message,
            "command failed"
        ),
        _ => {}
    }
}
