//! The supervisor: the only writer of agent state.
//!
//! It owns the connection state, the running and waiting commands and their cancel tokens, the
//! cached schema, and the [`ResultStore`] — the durable queue where every command's fate is
//! recorded (received → running → answered/failed/cancelled/expired → acknowledged). Every other
//! thread reports to it through [`SupMsg`]; it decides, then sends frames through the link and
//! jobs to the workers. Command intake, dispatch, answers and crash recovery are in
//! [`commands`](self) (`commands.rs`).
//!
//! It also reports: a typed [`StatusSnapshot`] (with the spec §3.3 [`Indicator`] derived by
//! [`indicator`]) and an [`ActivityEntry`] per command, answered to control requests and
//! streamed as [`AgentEvent`]s to subscribers ([`crate::control::Subscribers`]): the status at
//! most every [`STATUS_MIN_GAP`] when it changes and every [`STATUS_EVERY`] anyway, an activity
//! entry when a command is received and when it is answered.

mod commands;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use drivers::{CancelToken, Database};

use crate::control::Subscribers;
use crate::link::LinkSender;
use crate::protocol::control::{
    ActivityEntry, AgentEvent, ControlReply, ControlRequest, DatabaseHealth, Indicator, Outcome, PoolUse,
    QueueStatus, StatusSnapshot,
};
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
/// Acknowledgements held in memory are written at the latest this long after the first of
/// them (normally the next command's receipt carries them).
const ACK_FLUSH: Duration = Duration::from_secs(1);
/// Subscribers get a changed status at most this often.
pub const STATUS_MIN_GAP: Duration = Duration::from_millis(250);
/// ...and a status at least this often (uptime, latency, retry countdown move).
pub const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Failed dials after a dropped session before the indicator turns from blue (reconnecting)
/// to red (disconnected). Before the first session ever, one failed dial is red.
pub const RED_AFTER_FAILED_DIALS: u32 = 3;

/// Everything the supervisor hears about.
#[derive(Debug)]
pub enum SupMsg {
    /// The link is dialling.
    LinkConnecting,
    /// The session about to start is on this gateway (`scheme://host:port` of the URL dialled:
    /// `cloudUrl` or one of `cloudUrlFallbacks`).
    LinkGateway(String),
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
    /// A request from the local control channel or an in-process handle; the answer goes to
    /// `reply`. (`Subscribe`, `Setup` and `Start` are handled before the supervisor.)
    Control {
        /// What the operator asked.
        request: ControlRequest,
        /// Where the answer goes.
        reply: Sender<ControlReply>,
    },
    /// A new event subscriber: the current status first, then every change. `None` when too
    /// many are subscribed.
    Subscribe {
        /// Where the subscriber's queue goes.
        reply: Sender<Option<Receiver<AgentEvent>>>,
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
    /// Connections whose discovered schema differs from their approved one.
    schema_changes: BTreeSet<String>,
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
    /// Event subscribers and what they were sent last.
    events: Events,
    /// Who the agent is and pool sizes, for the snapshot.
    identity: Identity,
    /// Why the last discovery of an unhealthy connection failed.
    db_errors: HashMap<String, String>,
    /// When each connection was last checked (opened, or its schema discovered).
    db_checked: HashMap<String, SystemTime>,
    /// Connections to discover once the discovery under way ends (added or changed by a reload).
    pending_discovery: BTreeSet<String>,
    /// SHA-256 of each connection's vault password as of the last reload (`None`: none stored),
    /// so a reload after `db edit --password` rebuilds that pool. Never the password.
    password_fingerprints: HashMap<String, Option<[u8; 32]>>,
    /// The vault opened at start, kept for the link's first `auth`: dropped on the first
    /// `connected` or at the first housekeeping (keys zeroized), so later reads open it anew.
    start_vault: Option<crate::secrets::VaultHold>,
}

/// What the snapshot names besides the supervisor's own state (set by the agent at start).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `connectorName`.
    pub connector_name: String,
    /// `cloudUrl`.
    pub cloud_url: String,
    /// `poolMax` per connection name.
    pub pool_max: HashMap<String, u32>,
    /// The configuration file: approved schemas (`schema/<connection>.approved.json`, written
    /// by `schema approve` and the desktop app) are kept next to it. `None`: no comparison.
    pub config_path: Option<std::path::PathBuf>,
    /// The connections as configured at start (or at the last reload): a reload rebuilds the
    /// pools of the ones that changed.
    pub connections: Vec<crate::config::ConnectionConfig>,
}

/// Subscribers and the status they saw last.
#[derive(Debug)]
struct Events {
    subscribers: Subscribers,
    last: Option<StatusSnapshot>,
    last_at: Instant,
    /// Something happened since the last status event.
    dirty: bool,
}

/// Whether two snapshots show the same thing (what moves by itself is left out: uptime, the
/// retry countdown).
fn same_state(a: &StatusSnapshot, b: &StatusSnapshot) -> bool {
    let mut b = b.clone();
    b.uptime_secs = a.uptime_secs;
    b.next_retry_ms = a.next_retry_ms;
    *a == b
}

/// Figures for `status`.
#[derive(Debug)]
struct Counters {
    started: Instant,
    completed: u64,
    failed: u64,
    rows: u64,
    connection_id: Option<String>,
    /// Origin of the gateway URL of the current (or last) session.
    gateway: Option<String>,
    connected_since: Option<SystemTime>,
    last_error: Option<String>,
    reconnects: u64,
    /// Newest last; at most ACTIVITY_ENTRIES. Query text is not kept (it may carry data).
    activity: VecDeque<ActivityEntry>,
    /// Entries of commands received and not answered yet, by commandId.
    received_at: HashMap<String, ActivityEntry>,
    /// When the link last dropped (or the first dial failed); `None` while connected.
    disconnected_since: Option<SystemTime>,
    /// Dials that failed since the last session (or since start).
    failed_dials: u32,
    /// Why the link is down, in words.
    link_error: Option<String>,
    /// The local date the `today` figures count, and the figures.
    today: Today,
}

/// Figures of the current local day.
#[derive(Debug, Clone, Copy)]
struct Today {
    date: chrono::NaiveDate,
    commands: u64,
    /// Bytes sent (frames and uploads) when the day started.
    sent_at_start: u64,
}

/// What the indicator is derived from.
#[derive(Debug, Clone, Copy)]
pub struct IndicatorInputs<'a> {
    /// The link's state.
    pub state: LinkState,
    /// Paused by the operator.
    pub paused: bool,
    /// A session was established at least once since start.
    pub ever_connected: bool,
    /// Dials that failed since the last session (or since start).
    pub failed_dials: u32,
    /// Why the link is down.
    pub link_error: Option<&'a str>,
    /// Things that need a look while connected (unreachable database, queue disk, schema).
    pub warnings: &'a [String],
}

/// The spec §3.3 state, and the reason in words when it is not plain green: grey when paused;
/// red when the key was refused, or the cloud cannot be reached (one failed dial before the
/// first session, [`RED_AFTER_FAILED_DIALS`] after a drop); blue while dialling before that;
/// when connected, yellow with warnings (they win over pulsing green: they need a look),
/// pulsing green while commands run, else green.
pub fn indicator(inputs: IndicatorInputs<'_>) -> (Indicator, Option<String>) {
    let link_error = inputs.link_error.unwrap_or("no connection yet");
    if inputs.paused {
        return (
            Indicator::Paused,
            Some("paused by the operator: commands are refused until resumed".into()),
        );
    }
    match inputs.state {
        LinkState::KeyRejected => (
            Indicator::Disconnected,
            Some(format!(
                "the cloud refused the API key (revoked or replaced); store the new key: {link_error}"
            )),
        ),
        LinkState::Connected | LinkState::Busy | LinkState::Paused => {
            if !inputs.warnings.is_empty() {
                (Indicator::Warning, Some(inputs.warnings.join("; ")))
            } else if inputs.state == LinkState::Busy {
                (Indicator::Executing, None)
            } else {
                (Indicator::Connected, None)
            }
        }
        LinkState::Connecting | LinkState::Disconnected => {
            let red = if inputs.ever_connected {
                inputs.failed_dials >= RED_AFTER_FAILED_DIALS
            } else {
                inputs.failed_dials >= 1
            };
            if red {
                (Indicator::Disconnected, Some(format!("cannot reach the cloud: {link_error}")))
            } else if inputs.ever_connected {
                (Indicator::Reconnecting, Some(format!("reconnecting after a drop: {link_error}")))
            } else {
                (Indicator::Reconnecting, Some("connecting to the cloud".into()))
            }
        }
    }
}

/// Today's local date.
fn local_today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// RFC 3339 (UTC, seconds) of a time.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
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
            db_checked: unopened.iter().map(|u| (u.name.clone(), SystemTime::now())).collect(),
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
            schema_changes: BTreeSet::new(),
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
                gateway: None,
                connected_since: None,
                last_error: None,
                reconnects: 0,
                activity: VecDeque::new(),
                received_at: HashMap::new(),
                disconnected_since: None,
                failed_dials: 0,
                link_error: None,
                today: Today { date: local_today(), commands: 0, sent_at_start: 0 },
            },
            events: Events {
                subscribers: Subscribers::default(),
                last: None,
                last_at: Instant::now(),
                dirty: true,
            },
            identity: Identity::default(),
            db_errors: HashMap::new(),
            pending_discovery: BTreeSet::new(),
            password_fingerprints: HashMap::new(),
            start_vault: None,
        }
    }

    /// Keeps the vault opened during the agent start until the first `connected` (the link's
    /// first `auth` reads the API key through it) or the first housekeeping, whichever is first.
    pub fn with_start_vault(mut self, hold: crate::secrets::VaultHold) -> Self {
        self.start_vault = Some(hold);
        self
    }

    /// Names the agent in the snapshot (connector name, cloud URL, pool sizes).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
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
        let reason = self.run_until_stopped();
        self.events.subscribers.publish(&AgentEvent::Stopped { reason: reason.clone() });
        reason
    }

    fn run_until_stopped(&mut self) -> String {
        // Discovery first: a connection's schema policy is only complete after it (views over
        // private tables), and the commands resumed from the store are judged with it.
        self.start_discovery(self.databases.clone());
        if !self.discovering {
            self.recover();
        }
        loop {
            let mut wake =
                self.restart_drain.map_or(self.next_housekeeping, |at| at.min(self.next_housekeeping));
            if let Some(due) = self.status_due() {
                wake = wake.min(due);
            }
            if let Some(since) = self.store.pending_acks_since() {
                wake = wake.min(since + ACK_FLUSH);
            }
            match self.inbox.recv_deadline(wake) {
                Ok(SupMsg::Shutdown { reason, grace }) => {
                    self.drain(grace);
                    return reason;
                }
                Ok(msg) => {
                    self.handle(msg);
                    self.events.dirty = true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return "all senders gone".into(),
            }
            if let Some((reason, grace)) = self.stop.take() {
                self.drain(grace);
                return reason;
            }
            self.timers();
            self.publish_status();
        }
    }

    /// When the next status event is due (`None`: nobody listens).
    fn status_due(&self) -> Option<Instant> {
        if self.events.subscribers.is_empty() {
            return None;
        }
        let gap = if self.events.dirty { STATUS_MIN_GAP } else { STATUS_EVERY };
        Some(self.events.last_at + gap)
    }

    /// Sends subscribers the status if it is due: changed and [`STATUS_MIN_GAP`] since the
    /// last, or [`STATUS_EVERY`] since the last.
    fn publish_status(&mut self) {
        let Some(due) = self.status_due() else {
            self.events.dirty = false;
            return;
        };
        let now = Instant::now();
        if now < due {
            return;
        }
        let snapshot = self.snapshot();
        let changed = self.events.last.as_ref().is_none_or(|last| !same_state(last, &snapshot));
        if changed || now >= self.events.last_at + STATUS_EVERY {
            self.events.subscribers.publish(&AgentEvent::Status(Box::new(snapshot.clone())));
            self.events.last = Some(snapshot);
            self.events.last_at = now;
        }
        self.events.dirty = false;
    }

    /// Sends subscribers an activity entry.
    fn publish_activity(&mut self, entry: &ActivityEntry) {
        if !self.events.subscribers.is_empty() {
            self.events.subscribers.publish(&AgentEvent::Activity(entry.clone()));
        }
    }

    /// A command was received: its activity entry, "running" until answered.
    pub(super) fn activity_received(&mut self, command: &Command) {
        let connection = command
            .payload
            .connection
            .clone()
            .or_else(|| self.default_unopened.clone())
            .or_else(|| self.databases.first().map(|db| db.name().to_owned()));
        let entry = ActivityEntry {
            command_id: command.command_id.clone(),
            received_at: now_rfc3339(),
            finished_at: None,
            connection,
            // The protocol's `command` carries no workflow name (only executionId/activityId).
            workflow: None,
            outcome: Outcome::Running,
            rows: None,
            duration_ms: None,
            bytes: None,
        };
        self.publish_activity(&entry);
        self.counters.received_at.insert(command.command_id.clone(), entry);
    }

    /// Work that is due: acknowledgements to write, the end of a restart drain, housekeeping.
    fn timers(&mut self) {
        if self.store.pending_acks_since().is_some_and(|since| since.elapsed() >= ACK_FLUSH)
            && let Err(e) = self.store.flush()
        {
            tracing::error!(error = %e, "cannot record acks in the offline queue");
        }
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
            // No `connected` yet (cloud unreachable): do not keep the vault's keys meanwhile.
            self.start_vault = None;
            if let Err(e) = self.store.check_usage() {
                tracing::error!(error = %e, "cannot read the offline queue's size");
            }
            self.reopen();
            self.discover_pending();
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
            self.db_checked.insert(unopened.name.clone(), SystemTime::now());
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
            SupMsg::LinkGateway(origin) => self.counters.gateway = Some(origin),
            SupMsg::LinkUp(connected) => {
                // The link's first `auth` is written: the start's vault handle is done.
                self.start_vault = None;
                self.link_up(*connected)
            }
            SupMsg::LinkDown { reason, rejected } => {
                if self.board.is_connected() {
                    // A session dropped: reconnecting (blue) until dials keep failing (red).
                    self.counters.failed_dials = 0;
                    self.counters.disconnected_since = Some(SystemTime::now());
                } else {
                    self.counters.failed_dials = self.counters.failed_dials.saturating_add(1);
                    self.counters.disconnected_since.get_or_insert_with(SystemTime::now);
                }
                self.counters.link_error = Some(reason.clone());
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
            SupMsg::Control { request, reply } => {
                let answer = self.control(request);
                let _ = reply.send(answer);
            }
            SupMsg::Subscribe { reply } => {
                let first = AgentEvent::Status(Box::new(self.snapshot()));
                let _ = reply.send(self.events.subscribers.add(first));
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
            encoding: crate::uploader::granted_encoding(upload.content_encoding.as_deref()),
        }));
        self.board.connected.store(true, Ordering::Relaxed);
        if self.counters.connection_id.is_some() {
            self.counters.reconnects += 1;
        }
        self.counters.connection_id = Some(connected.connection_id.clone());
        self.counters.connected_since = Some(SystemTime::now());
        self.counters.disconnected_since = None;
        self.counters.failed_dials = 0;
        self.counters.link_error = None;
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
            // Removed by a reload meanwhile, or changed (discovered again below).
            if !self.databases.iter().any(|db| db.name() == name) || self.pending_discovery.contains(&name) {
                continue;
            }
            self.db_checked.insert(name.clone(), SystemTime::now());
            match result {
                Ok(db) => {
                    self.db_errors.remove(&name);
                    if self.unhealthy.remove(&name) {
                        tracing::info!(connection = %name, "database reachable again");
                    }
                    if let Some(configured) = self.configured_policies.get(&db.connection) {
                        let effective = crate::policy::effective_policy(configured, &db);
                        self.policies.insert(db.connection.clone(), effective);
                    }
                    self.compare_with_approved(&db);
                    schema.retain(|known| known.connection != name);
                    schema.push(db);
                }
                Err(e) => {
                    self.db_errors.insert(name.clone(), e.clone());
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
        self.discover_pending();
    }

    /// Starts the discovery of the connections a reload added or changed, unless one is under
    /// way (then [`Self::discovered`] calls this again).
    fn discover_pending(&mut self) {
        let open = &self.databases;
        self.pending_discovery.retain(|name| open.iter().any(|db| db.name() == name));
        if self.discovering || self.pending_discovery.is_empty() {
            return;
        }
        let databases: Vec<Database> =
            self.databases.iter().filter(|db| self.pending_discovery.contains(db.name())).cloned().collect();
        self.start_discovery(databases);
        if self.discovering {
            self.pending_discovery.clear();
        }
    }

    /// `mini-connector reload` / SIGHUP: reads the configuration file again and applies its
    /// connections and schema privacy. The link is not touched (same session). A connection
    /// whose settings changed gets a new pool; commands running on the old one finish there
    /// (they hold it). Added and changed connections are discovered again and the schema the
    /// cloud sees is sent again at once (with the new privacy). A configuration that does not
    /// load changes nothing.
    fn reload(&mut self) -> ControlReply {
        let Some(path) = self.identity.config_path.clone() else {
            return ControlReply::error(
                "BAD_REQUEST",
                "this agent was not started from a configuration file",
            );
        };
        let config = match crate::config::AgentConfig::load(&path) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, "reload refused: the configuration does not load");
                return ControlReply::error("INVALID_CONFIG", format!("nothing changed: {e}"));
            }
        };
        let old: HashMap<&str, &crate::config::ConnectionConfig> =
            self.identity.connections.iter().map(|c| (c.name.as_str(), c)).collect();
        // One vault key derivation for every password read below.
        let _vault = config.hold_vault();
        let fingerprint = |c: &crate::config::ConnectionConfig| -> Option<[u8; 32]> {
            use sha2::Digest as _;
            if c.password_ref.is_some() || c.kind == drivers::DbKind::Sqlite {
                return None;
            }
            let secret = config.db_password(&c.name).ok().flatten()?;
            Some(sha2::Sha256::digest(secret.expose().as_bytes()).into())
        };
        let mut fingerprints = HashMap::new();
        let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        let mut databases = Vec::new();
        let mut unopened = Vec::new();
        for (i, connection) in config.connections.iter().enumerate() {
            let password = fingerprint(connection);
            // Unknown before the first reload: a stored password may have changed since start.
            let same_password = match self.password_fingerprints.get(&connection.name) {
                Some(before) => *before == password,
                None => password.is_none(),
            };
            fingerprints.insert(connection.name.clone(), password);
            let same = same_password && old.get(connection.name.as_str()).is_some_and(|c| *c == connection);
            if same {
                if let Some(db) = self.databases.iter().find(|db| db.name() == connection.name) {
                    databases.push(db.clone());
                } else if let Some(at) = self.unopened.iter().position(|u| u.name == connection.name) {
                    let mut u = self.unopened.remove(at);
                    u.first = i == 0;
                    unopened.push(u);
                }
                continue;
            }
            if old.contains_key(connection.name.as_str()) {
                changed.push(connection.name.clone());
            } else {
                added.push(connection.name.clone());
            }
            self.db_checked.insert(connection.name.clone(), SystemTime::now());
            let spec = config.resolved_connection_spec(connection);
            match spec
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|s| Database::open(s).map_err(|e| e.to_string()))
            {
                Ok(db) => databases.push(db),
                Err(reason) => {
                    tracing::error!(connection = %connection.name, %reason, "cannot open this database; retried every 30 s");
                    unopened.push(Unopened {
                        name: connection.name.clone(),
                        spec: spec.ok(),
                        reason,
                        first: i == 0,
                    });
                }
            }
        }
        for connection in &self.identity.connections {
            if !config.connections.iter().any(|c| c.name == connection.name) {
                removed.push(connection.name.clone());
            }
        }
        let gone: BTreeSet<&String> = changed.iter().chain(&removed).collect();
        for name in &gone {
            self.unhealthy.remove(name.as_str());
            self.db_errors.remove(name.as_str());
            self.schema_changes.remove(name.as_str());
            if removed.contains(name) {
                self.db_checked.remove(name.as_str());
            }
        }
        if let Some(schema) = &mut self.schema {
            schema.retain(|db| !gone.contains(&db.connection));
        }
        self.default_unopened = unopened.iter().find(|u| u.first).map(|u| u.name.clone());
        self.databases = databases;
        self.unopened = unopened;

        let privacy_before = self.configured_policies.clone();
        self.configured_policies =
            config.schema_policy.iter().map(|(name, policy)| (name.clone(), policy.to_gate())).collect();
        let privacy_changed = privacy_before != self.configured_policies;
        self.policies = self
            .configured_policies
            .iter()
            .map(|(name, configured)| {
                let known = self.schema.as_ref().and_then(|s| s.iter().find(|db| &db.connection == name));
                let effective = match known {
                    Some(db) => crate::policy::effective_policy(configured, db),
                    None => crate::policy::before_discovery(configured),
                };
                (name.clone(), effective)
            })
            .collect();
        self.identity.pool_max = config.connections.iter().map(|c| (c.name.clone(), c.pool_max)).collect();
        self.identity.connections = config.connections.clone();
        self.password_fingerprints = fingerprints;

        if let Some(schema) = self.schema.clone()
            && (privacy_changed || !gone.is_empty())
        {
            self.send_schema(schema);
        }
        self.pending_discovery.extend(added.iter().chain(&changed).cloned());
        self.discover_pending();
        self.events.dirty = true;
        let list = |names: &[String]| if names.is_empty() { "-".to_owned() } else { names.join(", ") };
        tracing::info!(
            added = %list(&added),
            changed = %list(&changed),
            removed = %list(&removed),
            privacy_changed,
            "configuration reloaded (the cloud link was kept)"
        );
        ControlReply::Message(format!(
            "reloaded {}: connections added: {}; changed: {}; removed: {}; schema privacy {}",
            path.display(),
            list(&added),
            list(&changed),
            list(&removed),
            if privacy_changed { "changed" } else { "unchanged" }
        ))
    }

    fn control(&mut self, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Status => ControlReply::Status(Box::new(self.snapshot())),
            ControlRequest::Activity { limit } => ControlReply::Activity(
                self.counters.activity.iter().rev().take(limit.unwrap_or(usize::MAX)).cloned().collect(),
            ),
            ControlRequest::Pause | ControlRequest::Resume => {
                let pause = request == ControlRequest::Pause;
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
                ControlReply::Paused(self.paused)
            }
            ControlRequest::Reload => self.reload(),
            ControlRequest::Reconnect => {
                tracing::info!("operator asked to reconnect");
                self.link.send(crate::link::LinkMsg::Reconnect);
                ControlReply::Ok
            }
            ControlRequest::Stop => {
                self.stop = Some((
                    "stopped by the operator".into(),
                    self.limits.default_timeout.min(Duration::from_secs(30)),
                ));
                ControlReply::Stopping
            }
            ControlRequest::Start
            | ControlRequest::Subscribe
            | ControlRequest::Setup(_)
            | ControlRequest::Doctor
            | ControlRequest::DiagBundle { .. } => {
                ControlReply::error("BAD_REQUEST", "not a request for the running agent's supervisor")
            }
        }
    }

    /// Completes a command's activity entry with its answer, keeps it in the in-memory tail and
    /// tells subscribers.
    fn record_activity(&mut self, frame: &Outbound) {
        let (command_id, outcome, rows, duration, bytes) = match frame {
            Outbound::ExecutionResult(r) => {
                let (outcome, bytes) = match &r.result {
                    crate::protocol::ResultPayload::Inline { .. } => (Outcome::Inline, None),
                    crate::protocol::ResultPayload::Buffered { byte_count, .. } => {
                        (Outcome::Chunked, Some(*byte_count))
                    }
                };
                (r.command_id.clone(), outcome, Some(r.row_count), Some(r.duration_ms), bytes)
            }
            Outbound::ExecutionError(e) => {
                let outcome = if e.error.code == ErrorCode::CommandCancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed { code: e.error.code.to_string() }
                };
                (e.command_id.clone().unwrap_or_default(), outcome, None, None, None)
            }
            _ => return,
        };
        let now = now_rfc3339();
        let mut entry = self.counters.received_at.remove(&command_id).unwrap_or_else(|| ActivityEntry {
            command_id: command_id.clone(),
            received_at: now.clone(),
            finished_at: None,
            connection: None,
            workflow: None,
            outcome: Outcome::Running,
            rows: None,
            duration_ms: None,
            bytes: None,
        });
        entry.finished_at = Some(now);
        entry.outcome = outcome;
        entry.rows = rows;
        entry.duration_ms = duration;
        entry.bytes = bytes;
        self.roll_day();
        self.counters.today.commands += 1;
        self.publish_activity(&entry);
        if self.counters.activity.len() == ACTIVITY_ENTRIES {
            self.counters.activity.pop_front();
        }
        self.counters.activity.push_back(entry);
    }

    /// Bytes sent to the cloud since start: frames and chunk uploads.
    fn bytes_sent(&self) -> u64 {
        self.link.stats().bytes_sent() + self.upload.uploaded_bytes()
    }

    /// Starts a new day's figures when the local date changed.
    fn roll_day(&mut self) {
        let today = local_today();
        if today != self.counters.today.date {
            self.counters.today = Today { date: today, commands: 0, sent_at_start: self.bytes_sent() };
        }
    }

    /// Things that need a look while connected (the yellow indicator's reasons).
    /// Notes whether `db` differs from its approved schema (spec §3.3 yellow, §8.3 notice).
    fn compare_with_approved(&mut self, db: &drivers::DatabaseSchema) {
        let Some(config_path) = &self.identity.config_path else { return };
        let file = crate::setup::schema::approved_file(config_path, &db.connection);
        match crate::setup::schema::load_saved(&file) {
            Ok(Some(approved)) if !drivers::diff(&approved, db).is_empty() => {
                if self.schema_changes.insert(db.connection.clone()) {
                    tracing::warn!(connection = %db.connection, "the schema changed since it was approved");
                }
            }
            Ok(_) => {
                self.schema_changes.remove(&db.connection);
            }
            Err(e) => {
                tracing::warn!(connection = %db.connection, error = %e, "cannot read the approved schema")
            }
        }
    }

    fn warnings(&self, queue: &QueueStatus) -> Vec<String> {
        let mut warnings = Vec::new();
        for name in &self.unhealthy {
            warnings.push(format!("database `{name}` is unreachable"));
        }
        for unopened in &self.unopened {
            warnings.push(format!("database `{}` cannot be opened", unopened.name));
        }
        if queue.warning {
            warnings.push("the offline queue uses over 80 % of its disk cap".into());
        }
        if let Some(error) = &queue.error {
            warnings.push(format!("the offline queue cannot be read: {error}"));
        }
        for name in &self.schema_changes {
            warnings
                .push(format!("the schema of `{name}` changed since it was approved: review and approve it"));
        }
        warnings
    }

    fn snapshot(&mut self) -> StatusSnapshot {
        self.roll_day();
        let state = match self.state {
            LinkState::Connecting => crate::protocol::control::LinkState::Connecting,
            LinkState::Connected => crate::protocol::control::LinkState::Connected,
            LinkState::Busy => crate::protocol::control::LinkState::Busy,
            LinkState::Disconnected => crate::protocol::control::LinkState::Disconnected,
            LinkState::Paused => crate::protocol::control::LinkState::Paused,
            LinkState::KeyRejected => crate::protocol::control::LinkState::KeyRejected,
        };
        let queue = match (self.store.counts(), self.store.usage()) {
            (Ok(counts), Ok(usage)) => QueueStatus {
                waiting: counts.received,
                running: counts.running,
                unacknowledged: counts.unacknowledged,
                used_bytes: usage.used_bytes,
                cap_bytes: usage.cap_bytes,
                warning: usage.warn,
                error: None,
            },
            (Err(e), _) | (_, Err(e)) => QueueStatus { error: Some(e.to_string()), ..QueueStatus::default() },
        };
        let tables = |name: &str| {
            self.schema
                .as_ref()
                .and_then(|s| s.iter().find(|d| d.connection == name))
                .map(|d| d.tables.len() as u64)
        };
        let databases = self
            .databases
            .iter()
            .map(|db| {
                let pool = db.pool_status();
                DatabaseHealth {
                    name: db.name().to_owned(),
                    kind: Some(db.kind().to_string()),
                    healthy: !self.unhealthy.contains(db.name()),
                    error: self
                        .db_errors
                        .get(db.name())
                        .filter(|_| self.unhealthy.contains(db.name()))
                        .cloned(),
                    pool: Some(PoolUse {
                        open: pool.connections,
                        idle: pool.idle,
                        max: self.identity.pool_max.get(db.name()).copied().unwrap_or(0),
                    }),
                    tables: tables(db.name()),
                    checked_at: self.db_checked.get(db.name()).copied().map(rfc3339),
                }
            })
            .chain(self.unopened.iter().map(|u| DatabaseHealth {
                name: u.name.clone(),
                kind: u.spec.as_ref().map(|s| s.kind.to_string()),
                healthy: false,
                error: Some(u.reason.clone()),
                pool: None,
                tables: None,
                checked_at: self.db_checked.get(&u.name).copied().map(rfc3339),
            }))
            .collect();
        let warnings = self.warnings(&queue);
        let (indicator, reason) = indicator(IndicatorInputs {
            state: self.state,
            paused: self.paused,
            ever_connected: self.counters.connection_id.is_some(),
            failed_dials: self.counters.failed_dials,
            link_error: self.counters.link_error.as_deref(),
            warnings: &warnings,
        });
        let stats = self.link.stats();
        let connected = self.board.is_connected();
        let bytes_sent = self.bytes_sent();
        StatusSnapshot {
            state,
            indicator,
            reason,
            connected,
            paused: self.paused,
            connector_name: self.identity.connector_name.clone(),
            cloud_url: self.identity.cloud_url.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: Some(std::process::id()),
            instance_id: self.store.instance_id().to_owned(),
            connection_id: self.counters.connection_id.clone().filter(|_| connected),
            gateway_url: self.counters.gateway.clone().filter(|_| connected),
            connected_since: self.counters.connected_since.map(rfc3339),
            disconnected_since: self.counters.disconnected_since.map(rfc3339),
            uptime_secs: self.counters.started.elapsed().as_secs(),
            reconnects: self.counters.reconnects,
            next_retry_ms: if connected {
                None
            } else {
                stats.next_retry_in().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            },
            latency_ms: stats.latency().map(|d| d.as_secs_f64() * 1000.0),
            transport: if connected { stats.transport() } else { None },
            active_commands: self.running.len() as u64,
            waiting_commands: self.waiting.len() as u64,
            commands_completed: self.counters.completed,
            commands_failed: self.counters.failed,
            commands_today: self.counters.today.commands,
            rows_returned: self.counters.rows,
            bytes_sent,
            bytes_received: stats.bytes_received(),
            bytes_sent_today: bytes_sent.saturating_sub(self.counters.today.sent_at_start),
            last_error: self.counters.last_error.clone(),
            queue,
            databases,
            // Approved schemas live with the setup code; the running agent compares none yet.
            schema_changes: self.schema_changes.iter().cloned().collect(),
        }
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
            // No commit of its own: written with the next change of the store, or after
            // ACK_FLUSH when none comes (a lost ack only makes the answer be sent again).
            Inbound::Ack(ack) => match self.store.acknowledge_later(&ack.command_id) {
                Ok(()) => tracing::debug!(command = %ack.command_id, "answer acknowledged"),
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
