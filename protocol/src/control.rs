//! The local control API: how the CLI and the desktop app talk to an agent.
//!
//! The same typed messages travel two ways: in the same process (the desktop app starts the
//! agent itself and holds an `AgentHandle`) and over the local control socket / named pipe
//! (the agent runs as a service and the CLI or the GUI attaches to it). On the socket every
//! message is one JSON line: a [`ControlRequest`] in, a [`ControlReply`] out; after
//! `{"cmd":"subscribe"}` the agent keeps the connection open and writes one [`AgentEvent`] per
//! line, starting with the current status.
//!
//! Setup requests ([`SetupRequest`]) change the configuration and the vault; they are answered
//! with data the caller prints (CLI) or draws (GUI). Secrets go *in* (a password to save, an API
//! key to check) but never come *out*: replies carry masked keys and `has_password` flags only.
//!
//! [`Backend`] is what the GUI is written against; the agent crate implements it for an
//! in-process agent and for the control socket, the GUI's tests with a scripted fake.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::DatabaseSchema;

/// The link as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Dialling (first time, or after a drop: see [`StatusSnapshot::reconnects`]).
    Connecting,
    /// Authenticated and idle.
    Connected,
    /// Authenticated and executing at least one command.
    Busy,
    /// Not connected; [`StatusSnapshot::reason`] says why.
    Disconnected,
    /// Paused by the operator: commands are refused with `AGENT_PAUSED`.
    Paused,
    /// The cloud refused the API key (revoked or wrong): no retry until it is replaced.
    KeyRejected,
}

/// The six states of spec §3.3: the tray icon and the status dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// Green, solid: connected and idle.
    Connected,
    /// Green, pulsing: connected and executing a command.
    Executing,
    /// Yellow: connected, but something needs a look (schema change to approve, queue disk
    /// warning, an unreachable database).
    Warning,
    /// Red: disconnected; the reason is shown next to it.
    Disconnected,
    /// Grey: paused by the operator.
    Paused,
    /// Blue, spinning: reconnecting after a drop.
    Reconnecting,
}

impl Indicator {
    /// The state colour as `0xRRGGBB` (GUI.md palette).
    pub fn rgb(self) -> u32 {
        match self {
            Self::Connected | Self::Executing => 0x2E9E5B,
            Self::Warning => 0xD9A400,
            Self::Disconnected => 0xD64545,
            Self::Paused => 0x8A8F98,
            Self::Reconnecting => 0x2F6FDB,
        }
    }

    /// A short label for the window and the tray tooltip.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Executing => "Executing",
            Self::Warning => "Warning",
            Self::Disconnected => "Disconnected",
            Self::Paused => "Paused",
            Self::Reconnecting => "Reconnecting",
        }
    }
}

/// Durable queue figures (`queue` crate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Commands received and waiting for a worker.
    pub waiting: u64,
    /// Commands running now.
    pub running: u64,
    /// Answers sent but not acknowledged by the cloud yet.
    pub unacknowledged: u64,
    /// Bytes the queue file uses.
    pub used_bytes: u64,
    /// `offlineQueueMaxMB` in bytes.
    pub cap_bytes: u64,
    /// Over 80 % of the cap (spec §8.3 queue disk warning).
    pub warning: bool,
    /// The queue could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A connection pool's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUse {
    /// Connections open.
    pub open: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The pool's maximum.
    pub max: u32,
}

/// One configured database as the running agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseHealth {
    /// The connection's name.
    pub name: String,
    /// `sqlite`, `postgres`, ... (`None` when even the configuration could not be read).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Reachable at the last check.
    pub healthy: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pool use, where the driver has a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolUse>,
    /// Tables discovered (after privacy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    /// RFC 3339, when the agent last checked the database (opened it, or discovered its
    /// schema); `healthy` and `error` are that check's result. `None`: not checked yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

/// What carries a live session (docs/PROTOCOL.md, "HTTPS long-poll transport").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkTransport {
    /// `wss://…/ws`, the normal case.
    Websocket,
    /// The fallback: frames in HTTPS requests (`/lp/...`).
    HttpsLongPoll,
}

impl LinkTransport {
    /// For humans: `WebSocket`, `HTTPS fallback`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Websocket => "WebSocket",
            Self::HttpsLongPoll => "HTTPS fallback (long-poll; the WebSocket upgrade is blocked)",
        }
    }
}

/// Everything the Overview, the status command and the tray need, at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSnapshot {
    /// The link's state.
    pub state: LinkState,
    /// The spec §3.3 colour, derived by the agent (see [`Indicator`]).
    pub indicator: Indicator,
    /// Why the indicator is not green, in words ("gateway unreachable: connection refused").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Authenticated now.
    pub connected: bool,
    /// Paused by the operator.
    pub paused: bool,
    /// `connectorName`.
    pub connector_name: String,
    /// `cloudUrl`.
    pub cloud_url: String,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's process id (`start --daemon` checks that the agent answering is its child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The durable queue's instance id (stable across restarts).
    pub instance_id: String,
    /// The gateway's id for the current session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// `scheme://host:port` of the gateway the current session is on: `cloudUrl`'s, or one of
    /// `cloudUrlFallbacks`' after a failover (never a path or query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// RFC 3339, when the current session was established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<String>,
    /// RFC 3339, when the agent last lost the link (for "connection lost > 5 min").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_since: Option<String>,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Sessions established after the first.
    pub reconnects: u64,
    /// Milliseconds until the next dial, while disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_ms: Option<u64>,
    /// Round trip of the last heartbeat, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// What carries the session while connected: the WebSocket, or the HTTPS long-poll
    /// fallback when a proxy refuses the WebSocket upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<LinkTransport>,
    /// Commands executing now.
    pub active_commands: u64,
    /// Commands waiting for a worker.
    pub waiting_commands: u64,
    /// Commands answered with a result since start.
    pub commands_completed: u64,
    /// Commands answered with an error since start.
    pub commands_failed: u64,
    /// Commands answered today (local date).
    pub commands_today: u64,
    /// Rows returned since start.
    pub rows_returned: u64,
    /// Bytes sent to the cloud since start (frames and uploads).
    pub bytes_sent: u64,
    /// Bytes received from the cloud since start.
    pub bytes_received: u64,
    /// Bytes sent today (local date).
    pub bytes_sent_today: u64,
    /// The last error worth showing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The durable queue.
    pub queue: QueueStatus,
    /// Every configured database.
    pub databases: Vec<DatabaseHealth>,
    /// Connections whose discovered schema differs from the last approved one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
}

impl StatusSnapshot {
    /// A snapshot in `state` showing `indicator`, every figure zero and every text empty (for
    /// tests and for a status before the agent reported one); set the rest with struct update.
    pub fn new(state: LinkState, indicator: Indicator) -> Self {
        Self {
            state,
            indicator,
            reason: None,
            connected: matches!(state, LinkState::Connected | LinkState::Busy),
            paused: state == LinkState::Paused,
            connector_name: String::new(),
            cloud_url: String::new(),
            agent_version: String::new(),
            pid: None,
            instance_id: String::new(),
            connection_id: None,
            gateway_url: None,
            connected_since: None,
            disconnected_since: None,
            uptime_secs: 0,
            reconnects: 0,
            next_retry_ms: None,
            latency_ms: None,
            transport: None,
            active_commands: 0,
            waiting_commands: 0,
            commands_completed: 0,
            commands_failed: 0,
            commands_today: 0,
            rows_returned: 0,
            bytes_sent: 0,
            bytes_received: 0,
            bytes_sent_today: 0,
            last_error: None,
            queue: QueueStatus::default(),
            databases: Vec::new(),
            schema_changes: Vec::new(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Received, not finished yet.
    Running,
    /// Answered with rows inline.
    Inline,
    /// Answered with an uploaded (chunked) result.
    Chunked,
    /// Answered with an error.
    Failed {
        /// The spec's error code.
        code: String,
    },
    /// Cancelled by the cloud or the operator.
    Cancelled,
}

/// One command in the activity feed. Query text is never kept here (it may carry data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    /// The cloud's command id.
    pub command_id: String,
    /// RFC 3339, when it was received.
    pub received_at: String,
    /// RFC 3339, when it was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The connection it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The workflow that sent it, when the command names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Rows returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Execution time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Result bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A notification-worthy event (spec §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The link has been down for more than 5 minutes.
    ConnectionLost,
    /// A command failed.
    CommandFailed,
    /// A discovered schema differs from the approved one.
    SchemaChange,
    /// The cloud refused the API key.
    KeyRevoked,
    /// A newer version is available.
    NewVersion,
    /// The queue file passed 80 % of its cap.
    QueueDiskWarning,
}

/// A notice as shown to a person (desktop notification, email, the window's banner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Which event.
    pub kind: NoticeKind,
    /// One line.
    pub title: String,
    /// A few lines, no secrets, no row data.
    pub body: String,
    /// RFC 3339.
    pub at: String,
}

/// What an agent streams to a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event", content = "data")]
pub enum AgentEvent {
    /// A new status (sent on every change, and at least every second while connected).
    Status(Box<StatusSnapshot>),
    /// A command was received or finished (same `commandId` updates the entry).
    Activity(ActivityEntry),
    /// A log line at warn or error level, already free of secrets.
    Log {
        /// `warn` or `error`.
        level: String,
        /// The message.
        message: String,
        /// RFC 3339.
        at: String,
    },
    /// A notice (spec §8.3).
    Notice(Notice),
    /// The agent stopped; no more events follow.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// A request to a running agent, or setup work done for the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cmd")]
pub enum ControlRequest {
    /// A [`StatusSnapshot`].
    Status,
    /// Start the agent with the current configuration (in-process backend only: after the
    /// wizard, or after Exit was cancelled); a running agent answers `Ok`.
    Start,
    /// The most recent commands, newest first.
    Activity {
        /// At most this many (default: all kept in memory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Refuse new commands (`AGENT_PAUSED`) until resumed; running ones finish.
    Pause,
    /// Take commands again.
    Resume,
    /// Drop the connection and dial again now.
    Reconnect,
    /// Shut down gracefully.
    Stop,
    /// Read the configuration file again and apply its connections and schema privacy without
    /// dropping the cloud link (`mini-connector reload`, SIGHUP). Answered with a `Message`
    /// saying what changed, or an `Error` (`INVALID_CONFIG`) leaving everything as it was.
    Reload,
    /// Keep the connection open and stream [`AgentEvent`]s (socket only).
    Subscribe,
    /// Configuration and vault work (see [`SetupRequest`]).
    Setup(Box<SetupRequest>),
    /// Run the connection checks of `mini-connector doctor` (a [`DoctorReport`]).
    Doctor,
    /// Build a diagnostic bundle (spec §8.2) and write it to `out` (absolute; default: the
    /// default file name in the configuration's directory). Never overwrites a file.
    DiagBundle {
        /// Where to write the ZIP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<String>,
    },
}

/// Setup work: what the CLI's `configure`, `key rotate`, `db …`, `schema …` and
/// `service install` do, and what the wizard and the dashboard's forms do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum SetupRequest {
    /// Current settings, secrets masked.
    Settings,
    /// Check an API key's format and checksum, and whether the cloud answers (wizard step 1).
    CheckKey {
        /// The key as pasted. Never echoed back.
        api_key: String,
        /// The cloud URL to try (the configured one when `None`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cloud_url: Option<String>,
    },
    /// Change settings; `None` fields stay as they are.
    Configure(SettingsChange),
    /// Every configured database, without secrets.
    ListDatabases,
    /// Try a database with these parameters, saving nothing.
    TestDatabase(DatabaseForm),
    /// Save a database (password into the vault); `replace` names the entry an edit replaces.
    SaveDatabase {
        /// The parameters.
        form: DatabaseForm,
        /// The name of the entry being edited, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replace: Option<String>,
    },
    /// Remove a database and its vault entry.
    RemoveDatabase {
        /// The connection's name.
        name: String,
    },
    /// Discover a connection's schema now, locally (nothing is sent).
    Discover {
        /// The connection's name.
        connection: String,
    },
    /// A few sample values of a table, for the schema browser only (never sent anywhere).
    Sample {
        /// The connection's name.
        connection: String,
        /// The table (qualified as discovery names it).
        table: String,
        /// How many rows (at most 20).
        limit: u32,
    },
    /// Mark a table or a column private (or public again).
    SetPrivate {
        /// The connection's name.
        connection: String,
        /// The table.
        table: String,
        /// A column of it, or the whole table when `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<String>,
        /// Private or not.
        private: bool,
    },
    /// Approve the currently discovered schema of a connection (it becomes the synced one).
    ApproveSchema {
        /// The connection's name.
        connection: String,
    },
    /// Register the agent as an OS service (Windows service, systemd unit, LaunchAgent).
    InstallService,
    /// Set or clear the local PIN (spec §7.3).
    SetPin {
        /// The current PIN when one is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<String>,
        /// The new PIN, or `None` to remove it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new: Option<String>,
    },
    /// Check the local PIN.
    VerifyPin {
        /// The PIN typed.
        pin: String,
    },
}

/// Settings to change. `None` leaves a field unchanged; `Some("")` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsChange {
    /// `connectorName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_name: Option<String>,
    /// A new API key (stored in the vault / keychain, never in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// `cloudUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_url: Option<String>,
    /// `proxyUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// `caCertPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    /// `logLevel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// `autoUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_update: Option<bool>,
    /// Start with the user's session / the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_start: Option<bool>,
    /// `heartbeatIntervalMs` (1000-3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// `keepaliveIntervalMs` (100-600000): a WebSocket ping after this long without a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_interval_ms: Option<u64>,
    /// `vaultDir` (the credential vault's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_dir: Option<String>,
    /// `vaultKeyDir` (the vault's install secret, kept apart from the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key_dir: Option<String>,
}

/// Current settings, as the Settings section shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    /// The configuration file.
    pub config_path: String,
    /// `connectorName`.
    pub connector_name: String,
    /// The API key masked (`vmc_acme_****_c4e2a`), or `None` when none is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_masked: Option<String>,
    /// `cloudUrl`.
    pub cloud_url: String,
    /// `proxyUrl`, credentials removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// `caCertPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    /// `logLevel`.
    pub log_level: String,
    /// `autoUpdate`.
    pub auto_update: bool,
    /// Whether the agent starts by itself (service registered / autostart entry present).
    pub auto_start: bool,
    /// Whether a local PIN guards credential views and connection edits.
    pub pin_set: bool,
}

/// The add/edit connection form (spec §3.5.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseForm {
    /// The connection's name.
    pub name: String,
    /// `sqlite`, `postgres`, `mysql`, `odbc` (others are listed and refused with a reason).
    #[serde(rename = "type")]
    pub kind: String,
    /// Host (server types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password; `None` on an edit keeps the stored one. It travels only in requests
    /// (over the control socket too, so it must serialize); replies always carry `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// SQLite file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ODBC DSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// "Use Connection String" (without the password; that stays in `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// `disable|prefer|require|verify-ca|verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
    /// Anything else the driver takes (`dialect`, `poolMax`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// One configured database, without secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEntry {
    /// The form to edit it with (`password` always `None`).
    pub form: DatabaseForm,
    /// Whether a password is stored for it.
    pub has_password: bool,
    /// Private tables (whole) and columns (`table.column`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private: Vec<String>,
}

/// The answer to a connection test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestReport {
    /// It connected and a read-only session was set up.
    pub ok: bool,
    /// In words: the server version, or the specific error.
    pub message: String,
    /// The spec's error code when it failed (`DATABASE_UNAVAILABLE`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// How long the test took.
    pub elapsed_ms: u64,
}

/// The verdict of one `doctor` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Checked and fine.
    Ok,
    /// Not run: an earlier step it needs failed (or did not get that far).
    Skipped,
    /// Works, but something deserves a look.
    Warn,
    /// Broken: the agent cannot work this way.
    Fail,
}

impl StepStatus {
    /// `ok`, `skipped`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// The overall verdict of a `doctor` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every step passed.
    Ok,
    /// No step failed, at least one warned.
    Warn,
    /// At least one step failed.
    Fail,
}

impl Verdict {
    /// `ok`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check of `mini-connector doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorStep {
    /// Stable name: `config`, `dns`, `proxy`, `tcp`, `tls`, `websocket`, `auth`, `clock`,
    /// `database:<name>`.
    pub name: String,
    /// The verdict.
    pub status: StepStatus,
    /// What was found, in words (one or more lines; never a secret).
    pub detail: String,
    /// What to do about a failure or warning (`null` otherwise).
    #[serde(default)]
    pub hint: Option<String>,
    /// Machine-readable findings (addresses, the certificate chain, the skew...); `null` when
    /// there are none.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl DoctorStep {
    /// A step without machine-readable data.
    pub fn new(name: &str, status: StepStatus, detail: &str, hint: Option<&str>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            hint: hint.map(Into::into),
            data: serde_json::Value::Null,
        }
    }
}

/// The report of `mini-connector doctor`: the steps in order and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    /// `fail` if a step failed, else `warn` if one warned, else `ok`.
    pub verdict: Verdict,
    /// The steps, in the order they ran.
    pub steps: Vec<DoctorStep>,
}

impl DoctorReport {
    /// A report of `steps`, its verdict derived from them.
    pub fn new(steps: Vec<DoctorStep>) -> Self {
        let verdict = if steps.iter().any(|s| s.status == StepStatus::Fail) {
            Verdict::Fail
        } else if steps.iter().any(|s| s.status == StepStatus::Warn) {
            Verdict::Warn
        } else {
            Verdict::Ok
        };
        Self { verdict, steps }
    }
}

/// The answer to a key check (wizard step 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    /// The format and checksum are valid.
    pub format_ok: bool,
    /// The cloud answered (TLS handshake and upgrade, or a refusal that proves it is there).
    pub reachable: bool,
    /// The cloud accepted the key, when that could be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
    /// Round trip, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// A plain verdict ("The console answered in 84 ms", "No route to …: is a proxy needed?").
    pub message: String,
}

/// A change between the last approved schema and the discovered one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum SchemaChange {
    /// A table appeared.
    TableAdded {
        /// Its name.
        table: String,
    },
    /// A table disappeared.
    TableRemoved {
        /// Its name.
        table: String,
    },
    /// A column appeared.
    ColumnAdded {
        /// Its table.
        table: String,
        /// Its name.
        column: String,
    },
    /// A column disappeared.
    ColumnRemoved {
        /// Its table.
        table: String,
        /// Its name.
        column: String,
    },
    /// A column's type or nullability changed.
    ColumnChanged {
        /// Its table.
        table: String,
        /// Its name.
        column: String,
        /// Before, e.g. `integer not null`.
        before: String,
        /// After.
        after: String,
    },
}

/// A connection's schema as the browser shows it: everything discovered (private parts
/// included, marked), and how it differs from the last approved version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaView {
    /// The full discovered schema (local only; the cloud gets the visible part).
    pub schema: DatabaseSchema,
    /// Private tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_tables: Vec<String>,
    /// Private columns as `table.column`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_columns: Vec<String>,
    /// Changes against the last approved schema (empty when none or nothing approved yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<SchemaChange>,
    /// Whether a schema was ever approved for this connection.
    pub approved_before: bool,
}

/// Sample rows for the schema browser (shown only on this computer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleRows {
    /// Column names.
    pub columns: Vec<String>,
    /// Values as text; private columns are `None` (never read).
    pub rows: Vec<Vec<Option<String>>>,
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply", content = "data")]
pub enum ControlReply {
    /// Done, nothing to report.
    Ok,
    /// A status snapshot.
    Status(Box<StatusSnapshot>),
    /// Activity, newest first.
    Activity(Vec<ActivityEntry>),
    /// Pause/resume took effect; whether the agent is paused now.
    Paused(bool),
    /// The agent is stopping.
    Stopping,
    /// Settings.
    Settings(Box<SettingsView>),
    /// A key check.
    Key(KeyReport),
    /// Configured databases.
    Databases(Vec<DatabaseEntry>),
    /// A connection test.
    Test(TestReport),
    /// A schema.
    Schema(Box<SchemaView>),
    /// Sample rows.
    Sample(SampleRows),
    /// Something to tell the user (service install instructions, ...).
    Message(String),
    /// The checks of `mini-connector doctor`.
    Doctor(DoctorReport),
    /// A diagnostic bundle was written.
    Bundle(BundleInfo),
    /// The request failed.
    Error {
        /// The spec's error code where one applies (`DATABASE_UNAVAILABLE`, ...), else a
        /// local one: `NOT_RUNNING`, `BAD_REQUEST`, `PIN_REQUIRED`, `INVALID_INPUT`, `IO`,
        /// `FILE_EXISTS`.
        code: String,
        /// In words, free of secrets.
        message: String,
    },
}

/// A diagnostic bundle that was written ([`ControlRequest::DiagBundle`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleInfo {
    /// The ZIP file (absolute).
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The files in it.
    pub files: Vec<String>,
}

impl ControlReply {
    /// An error reply.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error { code: code.to_owned(), message: message.into() }
    }
}

/// What the desktop app drives: an agent in the same process or one behind the control socket.
///
/// `request` blocks (the GUI calls it from a worker thread, never from the UI thread);
/// `subscribe` registers a callback that is called from the backend's own thread for every
/// event (the GUI forwards it into a channel and calls `fltk::app::awake()`).
pub trait Backend: Send + Sync {
    /// Sends one request and waits for its answer.
    fn request(&self, request: ControlRequest) -> ControlReply;
    /// Streams events to `sink` until the backend is dropped or the agent stops.
    fn subscribe(&self, sink: Box<dyn Fn(AgentEvent) + Send + 'static>);
    /// Whether this backend runs the agent in this process (exit stops it) or is attached to
    /// a service (exit leaves it running).
    fn in_process(&self) -> bool;
}
