//! The supervisor: the only writer of agent state.
//!
//! It owns the connection state, the in-flight commands and their cancel tokens, the cached
//! schema and the idempotency cache. Every other thread reports to it through [`SupMsg`]; it
//! decides, then sends frames through the link and jobs to the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use drivers::{CancelToken, Database};

use crate::link::LinkSender;
use crate::protocol::{
    AgentStatus, Command, Connected, DecodeError, ErrorBody, ErrorCode, ExecutionError, Inbound, Outbound,
    SchemaDiscovery, StatusUpdate, now_rfc3339,
};
use crate::uploader::UploadSlot;
use crate::worker::{Job, QueryJob, UploadTarget};

/// Entries kept in the in-memory idempotency cache.
const IDEMPOTENCY_ENTRIES: usize = 1024;
/// Recent commands kept for `mini-connector activity`.
const ACTIVITY_ENTRIES: usize = 200;

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
    /// A worker finished a command.
    Finished {
        /// The command.
        command_id: String,
        /// `execution_result` or `execution_error`.
        frame: Box<Outbound>,
    },
    /// A worker finished schema discovery.
    Discovered(Result<Vec<drivers::DatabaseSchema>, String>),
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
            LinkState::Connecting | LinkState::Disconnected => AgentStatus::Error,
        }
    }
}

struct InFlight {
    execution_id: String,
    idempotency_key: String,
    cancel: CancelToken,
}

/// The supervisor's state and loop.
pub struct Supervisor {
    inbox: Receiver<SupMsg>,
    link: LinkSender,
    jobs: Sender<Job>,
    board: Arc<StatusBoard>,
    databases: Vec<Database>,
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
    in_flight: HashMap<String, InFlight>,
    schema: Option<Vec<drivers::DatabaseSchema>>,
    discovering: bool,
    /// idempotency key -> the frame that answered it (inline results and errors only).
    answered: HashMap<String, Outbound>,
    answered_order: VecDeque<String>,
    state: LinkState,
    paused: bool,
    /// Set when the cloud asks for a shutdown; `run` drains and returns.
    stop: Option<(String, Duration)>,
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
    /// commandId -> RFC 3339 time of receipt, for commands still running.
    received_at: HashMap<String, String>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("state", &self.state)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl Supervisor {
    /// Builds the supervisor. `jobs` is the bounded worker queue.
    pub fn new(
        inbox: Receiver<SupMsg>,
        link: LinkSender,
        jobs: Sender<Job>,
        board: Arc<StatusBoard>,
        databases: Vec<Database>,
        policies: HashMap<String, gate::Policy>,
        limits: crate::config::CommandLimits,
    ) -> Self {
        Self {
            inbox,
            link,
            jobs,
            board,
            databases,
            policies: policies.iter().map(|(k, p)| (k.clone(), crate::policy::before_discovery(p))).collect(),
            configured_policies: policies,
            limits,
            upload: Arc::new(UploadSlot::new()),
            upload_policy: crate::uploader::UploadPolicy::deny_all(),
            in_flight: HashMap::new(),
            schema: None,
            discovering: false,
            answered: HashMap::new(),
            answered_order: VecDeque::new(),
            state: LinkState::Connecting,
            paused: false,
            stop: None,
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

    /// Sets where chunks may be uploaded; without it every upload URL is refused.
    pub fn with_upload_policy(mut self, policy: crate::uploader::UploadPolicy) -> Self {
        self.upload_policy = policy;
        self
    }

    /// Shares the upload slot with the workers and the uploader (set on `connected`, cleared
    /// on link down).
    pub fn with_upload_slot(mut self, slot: Arc<UploadSlot>) -> Self {
        self.upload = slot;
        self
    }

    /// Runs until a shutdown message (or every sender is gone). Returns the shutdown reason.
    pub fn run(mut self) -> String {
        while let Ok(msg) = self.inbox.recv() {
            match msg {
                SupMsg::Shutdown { reason, grace } => {
                    self.drain(grace);
                    return reason;
                }
                msg => self.handle(msg),
            }
            if let Some((reason, grace)) = self.stop.take() {
                self.drain(grace);
                return reason;
            }
        }
        "all senders gone".into()
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
        self.board.active.store(u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
        if matches!(self.state, LinkState::Connected | LinkState::Busy) {
            let (state, status) = if self.in_flight.is_empty() {
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
            SupMsg::LinkConnecting => self.set_state(LinkState::Connecting),
            SupMsg::LinkUp(connected) => {
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
                    max_chunk_bytes: usize::try_from(upload.max_chunk_bytes.clamp(4096, 64 << 20))
                        .unwrap_or(1 << 20),
                    max_inline_bytes: usize::try_from(upload.max_inline_bytes.min(8 << 20))
                        .unwrap_or(1 << 18),
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
                self.refresh_busy();
                match &self.schema {
                    Some(schema) => self.send_schema(schema.clone()),
                    None => self.start_discovery(),
                }
            }
            SupMsg::LinkDown { reason, rejected } => {
                self.board.connected.store(false, Ordering::Relaxed);
                self.upload.set(None);
                self.counters.connected_since = None;
                self.counters.last_error = Some(match rejected {
                    Some(code) => format!("{code}: {reason}"),
                    None => reason.clone(),
                });
                match rejected {
                    Some(code) => {
                        tracing::error!(%code, %reason, "the cloud rejected this agent; check the API key")
                    }
                    None => tracing::warn!(%reason, "disconnected from the cloud"),
                }
                self.set_state(LinkState::Disconnected);
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
            SupMsg::Finished { command_id, frame } => {
                if let Some(done) = self.in_flight.remove(&command_id) {
                    let cacheable = match &*frame {
                        Outbound::ExecutionResult(r) => {
                            matches!(r.result, crate::protocol::ResultPayload::Inline { .. })
                        }
                        Outbound::ExecutionError(e) => !e.error.retryable,
                        _ => false,
                    };
                    if cacheable {
                        self.remember(done.idempotency_key, (*frame).clone());
                    }
                }
                self.record_activity(&frame);
                match &*frame {
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
                self.link.frame(*frame);
                self.refresh_busy();
            }
            SupMsg::Discovered(result) => {
                self.discovering = false;
                match result {
                    Ok(schema) => {
                        for db in &schema {
                            if let Some(configured) = self.configured_policies.get(&db.connection) {
                                let effective = crate::policy::effective_policy(configured, db);
                                self.policies.insert(db.connection.clone(), effective);
                            }
                        }
                        self.schema = Some(schema.clone());
                        self.send_schema(schema);
                    }
                    Err(e) => tracing::error!(error = %e, "schema discovery failed"),
                }
            }
            SupMsg::Control { cmd, reply } => {
                let answer = self.control(cmd);
                let _ = reply.send(answer);
            }
            SupMsg::Shutdown { .. } => unreachable!("handled in run"),
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
        };
        serde_json::json!({
            "ok": true,
            "state": state,
            "connected": self.board.is_connected(),
            "paused": self.paused,
            "connectionId": self.counters.connection_id,
            "connectedSince": self.counters.connected_since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "uptimeSecs": self.counters.started.elapsed().as_secs(),
            "activeCommands": self.in_flight.len(),
            "commandsCompleted": self.counters.completed,
            "commandsFailed": self.counters.failed,
            "rowsReturned": self.counters.rows,
            "reconnects": self.counters.reconnects,
            "lastError": self.counters.last_error,
            "databases": self.databases.iter().map(|db| serde_json::json!({ "name": db.name(), "type": db.kind().to_string() })).collect::<Vec<_>>(),
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

    fn start_discovery(&mut self) {
        if self.discovering {
            return;
        }
        if self.jobs.try_send(Job::Discover(self.databases.clone())).is_ok() {
            self.discovering = true;
        } else {
            tracing::warn!("workers busy; schema discovery postponed");
        }
    }

    fn remember(&mut self, key: String, frame: Outbound) {
        if self.answered_order.len() == IDEMPOTENCY_ENTRIES
            && let Some(old) = self.answered_order.pop_front()
        {
            self.answered.remove(&old);
        }
        self.answered_order.push_back(key.clone());
        self.answered.insert(key, frame);
    }

    fn inbound(&mut self, frame: Inbound) {
        match frame {
            Inbound::Command(command) => self.command(command),
            Inbound::Cancel(cancel) => {
                let mut found = 0;
                for flight in self.in_flight.values().filter(|f| f.execution_id == cancel.execution_id) {
                    flight.cancel.cancel();
                    found += 1;
                }
                tracing::info!(execution = %cancel.execution_id, commands = found, reason = ?cancel.reason, "cancel");
            }
            Inbound::SchemaRequest(_) => {
                self.schema = None;
                self.start_discovery();
            }
            Inbound::Ack(ack) => tracing::debug!(command = %ack.command_id, "result acknowledged"),
            Inbound::Shutdown(shutdown) => {
                tracing::info!(reason = ?shutdown.reason, grace_ms = shutdown.grace_period, "the cloud asked us to shut down");
                let reason = shutdown.reason.unwrap_or_else(|| "cloud requested shutdown".into());
                self.stop = Some((reason, Duration::from_millis(shutdown.grace_period)));
            }
            Inbound::Error(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "error from the cloud")
            }
            Inbound::Connected(_) => tracing::warn!("unexpected `connected` in an established session"),
        }
    }

    fn reject(&mut self, command: &Command, code: ErrorCode, message: impl Into<String>) {
        self.counters.failed += 1;
        let frame = Outbound::ExecutionError(ExecutionError {
            command_id: Some(command.command_id.clone()),
            execution_id: Some(command.execution_id.clone()),
            activity_id: Some(command.activity_id.clone()),
            error: ErrorBody::new(code, message),
        });
        log_outcome(&frame);
        self.record_activity(&frame);
        self.link.frame(frame);
    }

    fn command(&mut self, command: Command) {
        let received = Instant::now();
        self.counters.received_at.insert(command.command_id.clone(), now_rfc3339());
        tracing::info!(command = %command.command_id, execution = %command.execution_id, "command received");
        if self.paused {
            return self.reject(&command, ErrorCode::AgentPaused, "the connector is paused by its operator");
        }
        if let Some(expires) = &command.payload.expires_at {
            match humantime::parse_rfc3339_weak(expires) {
                Ok(at) if at <= SystemTime::now() => {
                    return self.reject(
                        &command,
                        ErrorCode::CommandExpired,
                        format!("command expired at {expires}"),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    return self.reject(&command, ErrorCode::MalformedMessage, format!("bad expiresAt: {e}"));
                }
            }
        }
        if let Some(previous) = self.answered.get(&command.payload.idempotency_key) {
            tracing::info!(command = %command.command_id, "idempotency key seen before; answering from cache");
            let frame = readdress(previous.clone(), &command);
            self.record_activity(&frame);
            self.link.frame(frame);
            return;
        }
        if self.in_flight.contains_key(&command.command_id)
            || self.in_flight.values().any(|f| f.idempotency_key == command.payload.idempotency_key)
        {
            tracing::info!(command = %command.command_id, "duplicate of a running command; ignored");
            self.counters.received_at.remove(&command.command_id);
            return;
        }
        let db = match &command.payload.connection {
            Some(name) => self.databases.iter().find(|db| db.name() == name),
            None => self.databases.first(),
        };
        let Some(db) = db.cloned() else {
            let wanted = command.payload.connection.as_deref().unwrap_or("(default)");
            return self.reject(
                &command,
                ErrorCode::UnknownConnection,
                format!("no database connection named `{wanted}`"),
            );
        };
        // The read-only gate: keyword pre-filter, AST check in the database's dialect, privacy.
        let empty = gate::Policy::default();
        let policy = self.policies.get(db.name()).unwrap_or(&empty);
        let params = command.payload.params.len();
        let checked = match gate::check_with(
            &command.payload.query,
            params,
            db.gate_target(),
            policy,
            &self.limits.gate,
        ) {
            Ok(checked) => checked,
            Err(rejection) => {
                return self.reject(
                    &command,
                    crate::policy::rejection_code(rejection.code),
                    rejection.reason,
                );
            }
        };
        let cancel = CancelToken::default();
        // A command may ask for any timeout up to the configured cap; beyond it, the cap.
        let timeout = command
            .payload
            .timeout
            .map_or(self.limits.default_timeout, Duration::from_millis)
            .min(self.limits.max_timeout);
        let flight = InFlight {
            execution_id: command.execution_id.clone(),
            idempotency_key: command.payload.idempotency_key.clone(),
            cancel: cancel.clone(),
        };
        let command_id = command.command_id.clone();
        let max_result_bytes = self.limits.max_result_bytes;
        let job = Job::Query(Box::new(QueryJob {
            command,
            db,
            checked,
            cancel,
            timeout,
            received,
            max_result_bytes,
        }));
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.in_flight.insert(command_id, flight);
                self.refresh_busy();
            }
            Err(TrySendError::Full(Job::Query(job)) | TrySendError::Disconnected(Job::Query(job))) => {
                self.reject(
                    &job.command,
                    ErrorCode::AgentBusy,
                    "every worker is busy and the queue is full; retry later",
                );
            }
            Err(_) => {}
        }
    }

    /// Answers a command that arrives while draining, so the cloud can retry it elsewhere.
    fn refuse_while_stopping(&mut self, frame: Inbound) {
        match frame {
            Inbound::Command(command) => {
                self.reject(&command, ErrorCode::AgentPaused, "the connector is shutting down; retry later");
            }
            Inbound::Cancel(_) => self.inbound(frame),
            _ => {}
        }
    }

    /// Stops intake, cancels what is still running after `grace`, and tells the cloud.
    fn drain(&mut self, grace: Duration) {
        self.paused = true;
        let deadline = Instant::now() + grace;
        while !self.in_flight.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(msg @ (SupMsg::Finished { .. } | SupMsg::Discovered(_))) => self.handle(msg),
                Ok(SupMsg::Inbound(frame)) => self.refuse_while_stopping(*frame),
                Ok(SupMsg::Control { reply, .. }) => {
                    let _ = reply.send(serde_json::json!({ "ok": false, "error": "agent is stopping" }));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for flight in self.in_flight.values() {
            flight.cancel.cancel();
        }
        // Give cancelled queries a moment to report.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.in_flight.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(msg @ SupMsg::Finished { .. }) => self.handle(msg),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if self.board.is_connected() {
            self.link.frame(Outbound::Status(StatusUpdate {
                status: AgentStatus::Offline,
                reason: Some("agent shutting down".into()),
            }));
        }
    }
}

/// Re-addresses a cached answer to the command that repeated its idempotency key.
fn readdress(frame: Outbound, command: &Command) -> Outbound {
    match frame {
        Outbound::ExecutionResult(mut r) => {
            r.command_id = command.command_id.clone();
            r.execution_id = command.execution_id.clone();
            r.activity_id = command.activity_id.clone();
            r.duration_ms = 0;
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
