//! The state every gateway thread shares: live sessions, connector status, pending commands
//! (the offline queue included, persisted in [`CommandStore`]), upload buffers and event
//! subscribers.
//!
//! **Commands.** Every accepted command is in `gateway.db` before [`Hub::submit`] returns and
//! leaves it when it is answered (the fact that it was answered stays, so a duplicate answer
//! after a restart is dropped). At most `max_in_flight` commands of a connector are written to
//! its session and unanswered at a time ([`Hub::pump`]); the rest wait, oldest first, and go
//! out as answers come in. The first answer of a command wins; later ones are dropped and still
//! acknowledged so the agent stops re-sending them. A buffered result claims its upload buffer
//! under the commands lock before it is verified, so a copy of it that another session thread
//! reads meanwhile (a resend after a reconnect) is one of those later answers.
//!
//! **Lock order:** `commands` before `sessions` before `uploads`; no other lock is taken while
//! one of these is held, except `subscribers` and the command store's connection (leaves).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use protocol::wsio::Waker;
use protocol::{
    AgentStatus, Command, CommandPayload, DatabaseSchema, ErrorBody, ErrorCode, ExecutionResult, Frame as _,
    Inbound, Operation, Outbound, ResultPayload, SecretBytes, ShutdownMode,
};
use serde::Serialize;

use crate::cluster::{Cluster, LocalSession, StreamRef};
use crate::keys::{KeyRecord, KeyStore};
use crate::query::{BufferedInfo, QueryError, QueryOutcome, QueryRequest};
use crate::store::CommandStore;
use crate::upload::{Buffer, UploadStore};

/// Answered command ids remembered in memory, so a late chunk for one gets `409` rather than
/// `404` (the database remembers them longer, for duplicate answers).
const ANSWERED_REMEMBERED: usize = 4096;

/// Outcomes kept in memory for callers that do not wait (commands reloaded after a restart,
/// or submitted without waiting), for [`Hub::command_status`]; oldest dropped first.
const OUTCOMES_KEPT: usize = 1024;

/// Whether a chunk may be stored for a command ([`Hub::with_chunk_permission`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkPermission {
    /// A command of this connector that is not answered yet (whichever session it went to).
    Pending,
    /// Answered (acknowledged, failed, timed out or expired) not long ago.
    Answered,
    /// Not a command of this connector, or answered long ago.
    Unknown,
}
use crate::{GatewayConfig, GatewayError};

/// Something that happened, for tests and monitoring ([`crate::Gateway::subscribe`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// An agent authenticated.
    AgentConnected {
        /// Connector name of its key.
        connector: String,
        /// The new session's id.
        connection_id: String,
    },
    /// A WebSocket was refused (`AUTH_FAILED`, `DUPLICATE_CONNECTION`).
    AgentRejected {
        /// The code sent in the `error` frame.
        code: ErrorCode,
    },
    /// An authenticated session ended.
    AgentDisconnected {
        /// Connector name.
        connector: String,
        /// Why, for humans.
        reason: String,
    },
    /// A frame from an authenticated agent, after the gateway handled it.
    Frame {
        /// Connector name.
        connector: String,
        /// When it was read.
        at: Instant,
        /// The frame.
        frame: Outbound,
    },
    /// A frame from an authenticated agent could not be decoded; the session goes on.
    DecodeFailed {
        /// Connector name.
        connector: String,
        /// The code sent back.
        code: ErrorCode,
        /// The message sent back.
        message: String,
    },
    /// A new connection on the HTTPS port was closed at once: `max_connections` were open.
    ConnectionRefused {
        /// The client's address.
        peer: String,
    },
    /// A chunk upload was refused.
    ChunkRejected {
        /// `x-mc-command` of the request (empty when missing).
        command_id: String,
        /// The code answered.
        code: ErrorCode,
    },
    /// A command got its (first, and only counted) answer: a result, an error, or the
    /// gateway's `COMMAND_EXPIRED`.
    CommandAnswered {
        /// Connector name.
        connector: String,
        /// The command.
        command_id: String,
    },
    /// A second (or later) answer of a command arrived; it was dropped and acknowledged.
    AnswerDropped {
        /// Connector name.
        connector: String,
        /// The command.
        command_id: String,
    },
    /// A new session of a connector took over from one that was still registered.
    SessionReplaced {
        /// Connector name.
        connector: String,
        /// The session that was closed.
        old_connection_id: String,
        /// Why, for humans.
        reason: String,
    },
}

/// Most requests the admin API serves at once (it is on loopback; its own budget, so a flood
/// on the HTTPS port does not lock the operator out). A blocking `POST /admin/query` holds its
/// place until its answer, so this is also how many callers can wait for results at once.
pub(crate) const ADMIN_MAX_SERVING: usize = 256;

/// Admin connections beyond [`ADMIN_MAX_SERVING`] that are being read or wait (at most
/// `admin::ADMIN_QUEUE_WAIT`) for a place, then get `503 ADMIN_BUSY` (retryable). A connection
/// beyond these is closed unanswered: threads and buffers stay bounded whatever arrives.
pub(crate) const ADMIN_MAX_WAITING: usize = 64;

/// Admin connections with a thread at once: serving + waiting.
const ADMIN_MAX_CONNECTIONS: usize = ADMIN_MAX_SERVING + ADMIN_MAX_WAITING;

/// A connection counted against its listener's limit; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    hub: Arc<Hub>,
    admin: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let counter = if self.admin { &self.hub.admin_connections } else { &self.hub.open_connections };
        counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connector as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorInfo {
    /// Connector name.
    pub name: String,
    /// Tenant id.
    pub tenant: String,
    /// A session is live.
    pub connected: bool,
    /// Id of the live session.
    pub connection_id: Option<String>,
    /// `agentVersion` from the last `auth`.
    pub agent_version: Option<String>,
    /// RFC 3339 time the gateway received the last heartbeat.
    pub last_heartbeat: Option<String>,
    /// Last reported status.
    pub status: Option<AgentStatus>,
    /// `activeCommands` of the last heartbeat.
    pub active_commands: u32,
    /// Commands waiting in the gateway's queue (offline, or paced).
    pub queued_commands: usize,
    /// Commands written to the session and not answered yet.
    pub in_flight_commands: usize,
    /// Latest `schema_discovery` payload.
    pub schema: Option<Vec<DatabaseSchema>>,
    /// Cluster mode: the node holding the connector's session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A message for a session thread; always followed by [`Waker::wake`].
#[derive(Debug)]
pub(crate) enum SessionMsg {
    /// Write this text frame.
    Frame(String),
    /// Send an `error` frame and close (revoked key).
    Kick { code: ErrorCode, message: String },
    /// Send `shutdown`, then keep reading answers until the agent closes or the grace period
    /// (plus 2 s) ends; no new command is written meanwhile.
    Shutdown { reason: String, grace_ms: u64, mode: ShutdownMode },
    /// Ping the agent and report on the channel as soon as anything (a pong, a frame) arrives.
    Probe(Sender<()>),
    /// Another session took this one's place: close without touching the registration.
    Replaced { reason: String },
    /// Close now (end of a shutdown's grace period).
    Close { reason: String },
}

#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub connection_id: String,
    pub key_id: String,
    /// `auth.instanceId` of the agent.
    pub instance_id: Option<String>,
    /// Most unanswered commands written to this session at a time.
    pub max_in_flight: usize,
    /// Set by `shutdown`: no new command is written to this session.
    pub draining: Arc<AtomicBool>,
    tx: Sender<SessionMsg>,
    waker: Waker,
    hmac_key: SecretBytes,
}

impl SessionHandle {
    pub fn new(
        connection_id: String,
        key_id: String,
        tx: Sender<SessionMsg>,
        waker: Waker,
        hmac_key: SecretBytes,
    ) -> Self {
        Self {
            connection_id,
            key_id,
            instance_id: None,
            max_in_flight: 32,
            draining: Arc::new(AtomicBool::new(false)),
            tx,
            waker,
            hmac_key,
        }
    }

    /// Send, then wake.
    pub fn send(&self, msg: SessionMsg) -> bool {
        let ok = self.tx.send(msg).is_ok();
        self.waker.wake();
        ok
    }
}

/// What [`Hub::register`] found.
#[derive(Debug)]
pub(crate) enum Registration {
    /// The session is the connector's now.
    Registered,
    /// The connector has this live session already.
    Occupied(SessionHandle),
}

/// Where a command stands ([`crate::Gateway::command_status`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CommandStatus {
    /// Waiting for the connector (offline, or paced).
    Queued,
    /// Written to the connector's session, not answered yet.
    Sent,
    /// Answered; the outcome when it is still in memory (`None`: the gateway restarted since,
    /// or the outcome was handed to a waiting caller, or it was dropped to bound memory).
    Answered(Option<Result<QueryOutcome, QueryError>>),
    /// Not a command this gateway knows.
    Unknown,
}

#[derive(Debug, Default, Clone)]
struct ConnectorState {
    tenant: String,
    connection_id: Option<String>,
    agent_version: Option<String>,
    last_heartbeat: Option<String>,
    status: Option<AgentStatus>,
    active_commands: u32,
    schema: Option<Vec<DatabaseSchema>>,
}

type Reply = Result<QueryOutcome, QueryError>;

#[derive(Debug)]
struct PendingCommand {
    connector: String,
    command: Command,
    /// Session it was written to, and when; `None` while it waits in the offline queue.
    sent: Option<(String, Instant)>,
    expires: SystemTime,
    seq: u64,
    /// The waiting callers: the one that submitted it, and any that submitted the same
    /// idempotency key for the same connector while it was pending (they share its answer;
    /// none for a command reloaded after a restart).
    waiters: Vec<Sender<Reply>>,
    /// A buffered result of it took its upload buffer and is being verified (outside the
    /// lock): another copy of that result (a resend on a newer session, read by another
    /// session thread meanwhile) is a duplicate, not a result whose chunks are missing.
    result_claimed: bool,
    /// Callers of [`Hub::wait_command`]: told (by dropping these) once the command is answered
    /// and its outcome handed out or kept. One per waiting admin connection (bounded).
    watchers: Vec<(u64, Sender<()>)>,
    /// Cluster mode: the command came from its connector's Redis stream; its answer goes back
    /// there (and to the node that took it) instead of to local waiters.
    stream: Option<StreamRef>,
}

#[derive(Debug, Default)]
struct Commands {
    next_seq: u64,
    by_id: HashMap<String, PendingCommand>,
    /// Recently answered command ids, oldest first (at most `ANSWERED_REMEMBERED`).
    answered: VecDeque<String>,
    answered_set: HashSet<String>,
    /// Outcomes no caller took (see [`OUTCOMES_KEPT`]), oldest first in `kept_order`.
    kept: HashMap<String, Reply>,
    kept_order: VecDeque<String>,
    /// connector -> its commands not written to a session (`sent == None`), by `seq`.
    queues: HashMap<String, BTreeMap<u64, String>>,
    /// connector -> its commands written to a session and not answered (`sent != None`).
    in_flight: HashMap<String, usize>,
}

impl Commands {
    /// Adds a command, not sent yet.
    fn add(&mut self, pending: PendingCommand) {
        let id = pending.command.command_id.clone();
        self.queues.entry(pending.connector.clone()).or_default().insert(pending.seq, id.clone());
        self.by_id.insert(id, pending);
    }

    /// Records that a queued command was written to `connection_id`.
    fn mark_sent(&mut self, command_id: &str, connection_id: &str) {
        let Some(p) = self.by_id.get_mut(command_id) else { return };
        if p.sent.is_none() {
            if let Some(queue) = self.queues.get_mut(&p.connector) {
                queue.remove(&p.seq);
            }
            *self.in_flight.entry(p.connector.clone()).or_default() += 1;
        }
        p.sent = Some((connection_id.to_owned(), Instant::now()));
    }

    /// Puts every command written to `connection_id` and not answered back in its queue.
    fn unsend(&mut self, connection_id: &str) {
        for p in self.by_id.values_mut() {
            if p.sent.as_ref().is_some_and(|(conn, _)| conn == connection_id) {
                p.sent = None;
                self.queues
                    .entry(p.connector.clone())
                    .or_default()
                    .insert(p.seq, p.command.command_id.clone());
                if let Some(n) = self.in_flight.get_mut(&p.connector) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }

    /// Removes a command that is answered now and remembers its id.
    fn retire(&mut self, command_id: &str) -> Option<PendingCommand> {
        let pending = self.by_id.remove(command_id)?;
        if pending.sent.is_some() {
            if let Some(n) = self.in_flight.get_mut(&pending.connector) {
                *n = n.saturating_sub(1);
            }
        } else if let Some(queue) = self.queues.get_mut(&pending.connector) {
            queue.remove(&pending.seq);
        }
        if self.answered.len() == ANSWERED_REMEMBERED
            && let Some(old) = self.answered.pop_front()
        {
            self.answered_set.remove(&old);
        }
        self.answered.push_back(command_id.to_owned());
        self.answered_set.insert(command_id.to_owned());
        Some(pending)
    }

    /// Keeps an outcome nobody waited for.
    fn keep(&mut self, command_id: &str, reply: Reply) {
        if self.kept_order.len() == OUTCOMES_KEPT
            && let Some(old) = self.kept_order.pop_front()
        {
            self.kept.remove(&old);
        }
        self.kept_order.push_back(command_id.to_owned());
        self.kept.insert(command_id.to_owned(), reply);
    }

    /// Drops the adopted (stream) commands of `connector` that are back in its queue.
    fn forget_adopted(&mut self, connector: &str) {
        let ids: Vec<String> = self
            .by_id
            .values()
            .filter(|p| p.connector == connector && p.stream.is_some() && p.sent.is_none())
            .map(|p| p.command.command_id.clone())
            .collect();
        for id in ids {
            if let Some(p) = self.by_id.remove(&id)
                && let Some(queue) = self.queues.get_mut(&p.connector)
            {
                queue.remove(&p.seq);
            }
        }
    }

    /// Unanswered commands of `connector` written to a session.
    fn in_flight(&self, connector: &str) -> usize {
        self.in_flight.get(connector).copied().unwrap_or(0)
    }
}

/// What the session thread does after a frame was handled.
#[derive(Debug, Default)]
pub(crate) struct FrameAction {
    pub reply: Vec<Inbound>,
    pub kick: Option<(ErrorCode, String)>,
}

/// The shared state.
pub(crate) struct Hub {
    pub config: GatewayConfig,
    pub keys: KeyStore,
    pub uploads: Mutex<UploadStore>,
    pub stopping: AtomicBool,
    /// Set once the shutdown's grace period is over: the HTTPS accept loop ends. (Until then
    /// uploads of answers still arrive.)
    pub closing_listener: AtomicBool,
    store: Arc<CommandStore>,
    commands: Mutex<Commands>,
    sessions: Mutex<HashMap<String, SessionHandle>>,
    connectors: Mutex<HashMap<String, ConnectorState>>,
    subscribers: Mutex<Vec<Sender<GatewayEvent>>>,
    /// Sockets of connection threads, shut down to unblock them at shutdown; `true` marks a
    /// WebSocket session (closed gracefully first).
    /// The socket itself, shared with its connection thread (no descriptor of its own).
    sockets: Mutex<HashMap<u64, (Arc<TcpStream>, bool)>>,
    next_socket: AtomicU64,
    /// Connections being served on the HTTPS port.
    open_connections: AtomicUsize,
    /// Connections being served on the admin port.
    admin_connections: AtomicUsize,
    /// Connection threads, joined at shutdown.
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    /// Sessions over the HTTPS long-poll transport, by token.
    pub longpoll: crate::longpoll::Registry,
    /// Cluster mode (`--redis`): the registry, command streams and outcomes in Redis.
    pub cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

fn offline_error(message: impl Into<String>) -> QueryError {
    QueryError::Remote(ErrorBody::new(ErrorCode::ConnectorOffline, message))
}

fn expired_error(command_id: &str) -> QueryError {
    QueryError::Remote(ErrorBody::new(
        ErrorCode::CommandExpired,
        format!("command {command_id} expired before the connector took it"),
    ))
}

fn store_error(e: &GatewayError) -> QueryError {
    QueryError::Remote(ErrorBody::new(
        ErrorCode::InternalError,
        format!("the gateway could not persist the command: {e}"),
    ))
}

impl Hub {
    /// Builds the hub around the command store, with every command the store still holds
    /// back in the queue (commands past their TTL are answered `COMMAND_EXPIRED` at once).
    pub fn new(
        config: GatewayConfig,
        keys: KeyStore,
        store: CommandStore,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Self, GatewayError> {
        let mut commands = Commands::default();
        let now = SystemTime::now();
        let mut expired = Vec::new();
        for stored in store.load()? {
            commands.next_seq = commands.next_seq.max(stored.seq + 1);
            if stored.expires <= now {
                expired.push((stored.connector, stored.command.command_id));
                continue;
            }
            commands.add(PendingCommand {
                connector: stored.connector,
                command: stored.command,
                sent: None,
                expires: stored.expires,
                seq: stored.seq,
                waiters: Vec::new(),
                result_claimed: false,
                watchers: Vec::new(),
                stream: None,
            });
        }
        for (connector, id) in expired {
            tracing::info!(connector, command = %id, "queued command expired while the gateway was down");
            store.answer(&id, &connector, "expired")?;
            commands.keep(&id, Err(expired_error(&id)));
        }
        if !commands.by_id.is_empty() {
            tracing::info!(queued = commands.by_id.len(), "commands restored from gateway.db");
        }
        let store = Arc::new(store);
        let mut uploads = UploadStore::persistent(store.clone());
        uploads.restore(|connector, id| commands.by_id.get(id).is_some_and(|p| p.connector == connector))?;
        Ok(Self {
            config,
            keys,
            uploads: Mutex::new(uploads),
            stopping: AtomicBool::new(false),
            closing_listener: AtomicBool::new(false),
            store,
            commands: Mutex::new(commands),
            sessions: Mutex::default(),
            connectors: Mutex::default(),
            subscribers: Mutex::default(),
            sockets: Mutex::default(),
            next_socket: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            admin_connections: AtomicUsize::new(0),
            threads: Mutex::default(),
            longpoll: crate::longpoll::Registry::default(),
            cluster,
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    // -- events ---------------------------------------------------------------------------

    pub fn subscribe(&self) -> Receiver<GatewayEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    pub fn emit(&self, event: GatewayEvent) {
        let mut subs = self.subscribers.lock().unwrap();
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }

    // -- sockets of connection threads ---------------------------------------------------

    /// Counts a new connection on the HTTPS port (or the admin port) if there is room for it.
    pub fn admit_connection(self: &Arc<Self>, admin: bool) -> Option<ConnectionSlot> {
        let (counter, max) = if admin {
            (&self.admin_connections, ADMIN_MAX_CONNECTIONS)
        } else {
            (&self.open_connections, self.config.max_connections)
        };
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ConnectionSlot { hub: self.clone(), admin })
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// Keeps the socket to cut it at shutdown: an `Arc<TcpStream>` is shared (HTTPS
    /// connections), a `TcpStream` cloned (admin connections).
    pub fn track_socket(&self, tcp: &impl crate::server::SharedSocket) -> Option<u64> {
        let shared = tcp.share()?;
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.sockets.lock().unwrap().insert(id, (shared, false));
        Some(id)
    }

    /// Marks a tracked socket as a WebSocket session.
    pub fn socket_is_session(&self, id: Option<u64>) {
        let mut sockets = self.sockets.lock().unwrap();
        if let Some((_, is_session)) = id.and_then(|id| sockets.get_mut(&id)) {
            *is_session = true;
        }
    }

    pub fn untrack_socket(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.lock().unwrap().remove(&id);
        }
    }

    /// Cuts tracked sockets: only plain HTTP ones (idle keep-alive, admin) when
    /// `sessions_too` is false.
    pub fn shutdown_sockets(&self, sessions_too: bool) {
        for (tcp, is_session) in self.sockets.lock().unwrap().values() {
            if sessions_too || !is_session {
                let _ = tcp.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    // -- sessions -------------------------------------------------------------------------

    /// Registers an authenticated session, or names the live session the connector has already.
    pub fn register(&self, key: &KeyRecord, agent_version: &str, handle: SessionHandle) -> Registration {
        {
            let mut sessions = self.sessions.lock().unwrap();
            if let Some(old) = sessions.get(&key.connector) {
                return Registration::Occupied(old.clone());
            }
            sessions.insert(key.connector.clone(), handle.clone());
        }
        self.set_connected(key, agent_version, &handle);
        Registration::Registered
    }

    fn set_connected(&self, key: &KeyRecord, agent_version: &str, handle: &SessionHandle) {
        let mut connectors = self.connectors.lock().unwrap();
        let state = connectors.entry(key.connector.clone()).or_default();
        state.tenant = key.tenant.clone();
        state.connection_id = Some(handle.connection_id.clone());
        state.agent_version = Some(agent_version.to_owned());
        state.status = Some(AgentStatus::Ready);
    }

    /// Replaces the connector's session `old` by `handle` if `old` is still the registered
    /// one: `old` is told to close, and the commands written to it and not answered go back
    /// to the queue (delivered on the new session by [`Hub::deliver_queued`]).
    pub fn take_over(
        &self,
        key: &KeyRecord,
        agent_version: &str,
        old: &SessionHandle,
        handle: SessionHandle,
        reason: &str,
    ) -> bool {
        {
            let mut commands = self.commands.lock().unwrap();
            let mut sessions = self.sessions.lock().unwrap();
            if sessions.get(&key.connector).is_none_or(|s| s.connection_id != old.connection_id) {
                return false;
            }
            sessions.insert(key.connector.clone(), handle.clone());
            commands.unsend(&old.connection_id);
        }
        old.send(SessionMsg::Replaced { reason: reason.to_owned() });
        self.set_connected(key, agent_version, &handle);
        tracing::info!(
            connector = %key.connector,
            old = %old.connection_id,
            new = %handle.connection_id,
            "session taken over: {reason}"
        );
        self.emit(GatewayEvent::SessionReplaced {
            connector: key.connector.clone(),
            old_connection_id: old.connection_id.clone(),
            reason: reason.to_owned(),
        });
        true
    }

    /// Removes a session (if it is still the registered one) and puts the commands written to
    /// it but not answered back into the offline queue: they are delivered again, with the
    /// same command id and idempotency key, when the connector reconnects.
    pub fn unregister(&self, connector: &str, connection_id: &str, reason: &str) {
        let removed = {
            let mut commands = self.commands.lock().unwrap();
            let mut sessions = self.sessions.lock().unwrap();
            match sessions.get(connector) {
                Some(s) if s.connection_id == connection_id => {
                    let instance = s.instance_id.clone();
                    sessions.remove(connector);
                    commands.unsend(connection_id);
                    if self.cluster.is_some() {
                        // Adopted commands live on in the connector's stream: the node it
                        // connects to next takes them from there.
                        commands.forget_adopted(connector);
                    }
                    Some(instance)
                }
                _ => None,
            }
        };
        let Some(instance) = removed else { return };
        if let Some(cluster) = &self.cluster {
            cluster.release(connector, connection_id, instance.as_deref());
        }
        {
            let mut connectors = self.connectors.lock().unwrap();
            if let Some(state) = connectors.get_mut(connector) {
                state.connection_id = None;
                state.status = Some(AgentStatus::Offline);
                state.active_commands = 0;
            }
        }
        tracing::info!(connector, connection = connection_id, "agent disconnected: {reason}");
        self.emit(GatewayEvent::AgentDisconnected {
            connector: connector.to_owned(),
            reason: reason.to_owned(),
        });
    }

    fn session(&self, connector: &str) -> Option<SessionHandle> {
        self.sessions.lock().unwrap().get(connector).cloned()
    }

    /// Connector and chunk key of a connection that is its connector's current session.
    pub fn upload_grant(&self, connection_id: &str) -> Option<(String, SecretBytes)> {
        let sessions = self.sessions.lock().unwrap();
        sessions
            .iter()
            .find(|(_, s)| s.connection_id == connection_id)
            .map(|(name, s)| (name.clone(), s.hmac_key.clone()))
    }

    /// Runs `f` with whether a chunk of `command_id` may be stored for `connector`, and the
    /// upload store, both under the commands lock: an answer cannot slip in between.
    pub fn with_chunk_permission<R>(
        &self,
        connector: &str,
        command_id: &str,
        f: impl FnOnce(ChunkPermission, &mut UploadStore) -> R,
    ) -> R {
        let commands = self.commands.lock().unwrap();
        let permission = match commands.by_id.get(command_id) {
            Some(p) if p.connector == connector => ChunkPermission::Pending,
            _ if commands.answered_set.contains(command_id) => ChunkPermission::Answered,
            _ => ChunkPermission::Unknown,
        };
        let mut store = self.uploads.lock().unwrap();
        f(permission, &mut store)
    }

    /// Retires an answered command: records it in the store as answered (`outcome`) and frees
    /// its upload buffers at once.
    fn retire(&self, commands: &mut Commands, command_id: &str, outcome: &str) -> Option<PendingCommand> {
        let pending = commands.retire(command_id);
        if let Some(p) = &pending {
            if let Err(e) = self.store.answer(command_id, &p.connector, outcome) {
                tracing::error!(command = command_id, "cannot record the answer in gateway.db: {e}");
            }
            self.emit(GatewayEvent::CommandAnswered {
                connector: p.connector.clone(),
                command_id: command_id.to_owned(),
            });
        }
        self.uploads.lock().unwrap().release_command(command_id);
        pending
    }

    /// Hands a reply to the waiting caller, or keeps it for [`Hub::command_status`].
    fn reply(&self, commands: &mut Commands, pending: PendingCommand, reply: Reply) {
        if let (Some(stream), Some(cluster)) = (&pending.stream, &self.cluster) {
            // Published for the node that took the command (its caller waits there) and for
            // `command_status` on any node.
            cluster.publish(&pending.connector, &pending.command.command_id, stream.clone(), reply);
            return;
        }
        let id = pending.command.command_id;
        let mut delivered = false;
        for waiter in &pending.waiters {
            delivered |= waiter.send(reply.clone()).is_ok();
        }
        if !delivered {
            commands.keep(&id, reply);
        }
        // `pending.watchers` drop here: each `wait_command` wakes and reads the status.
    }

    /// Kicks every session that authenticated with this key (it was revoked).
    pub fn kick_key(&self, key_id: &str) {
        let sessions = self.sessions.lock().unwrap();
        for session in sessions.values().filter(|s| s.key_id == key_id) {
            session.send(SessionMsg::Kick { code: ErrorCode::AuthFailed, message: "API key revoked".into() });
        }
    }

    /// Sends `shutdown` (`mode`) to every live session; no command is written to them after.
    pub fn shutdown_sessions(&self, reason: &str, grace_ms: u64, mode: ShutdownMode) -> usize {
        let sessions = self.sessions.lock().unwrap();
        for session in sessions.values() {
            session.draining.store(true, Ordering::SeqCst);
            session.send(SessionMsg::Shutdown { reason: reason.to_owned(), grace_ms, mode });
        }
        sessions.len()
    }

    /// Closes every live session now.
    pub fn close_sessions(&self, reason: &str) {
        let sessions = self.sessions.lock().unwrap();
        for session in sessions.values() {
            session.send(SessionMsg::Close { reason: reason.to_owned() });
        }
    }

    /// Live sessions, and commands written to them and not answered yet.
    pub fn live_counts(&self) -> (usize, usize) {
        let commands = self.commands.lock().unwrap();
        let sessions = self.sessions.lock().unwrap();
        let in_flight = commands.in_flight.values().sum();
        (sessions.len(), in_flight)
    }

    /// Sends `shutdown {mode: "decommission"}` to a connector's live session: the agent drains
    /// and exits.
    pub fn decommission(&self, connector: &str, grace_ms: u64) -> Result<(), GatewayError> {
        let Some(session) = self.session(connector) else {
            // Cluster mode: the node holding it sends it.
            return match &self.cluster {
                Some(cluster) if cluster.forward_decommission(connector, grace_ms) => Ok(()),
                _ => Err(GatewayError::ConnectorOffline(connector.to_owned())),
            };
        };
        session.draining.store(true, Ordering::SeqCst);
        let msg = SessionMsg::Shutdown {
            reason: format!("connector `{connector}` is decommissioned"),
            grace_ms,
            mode: ShutdownMode::Decommission,
        };
        if session.send(msg) {
            tracing::info!(connector, "decommission sent");
            Ok(())
        } else {
            Err(GatewayError::ConnectorOffline(connector.to_owned()))
        }
    }

    /// Writes an arbitrary text frame to a live session.
    pub fn send_raw(&self, connector: &str, text: String) -> Result<(), GatewayError> {
        let Some(session) = self.session(connector) else {
            // Cluster mode: the node holding it writes it.
            return match &self.cluster {
                Some(cluster) if cluster.forward_raw(connector, text) => Ok(()),
                _ => Err(GatewayError::ConnectorOffline(connector.to_owned())),
            };
        };
        if session.send(SessionMsg::Frame(text)) {
            Ok(())
        } else {
            Err(GatewayError::ConnectorOffline(connector.to_owned()))
        }
    }

    pub fn send_frame(&self, connector: &str, frame: &Inbound) -> Result<(), GatewayError> {
        self.send_raw(connector, frame.encode())
    }

    // -- connectors -----------------------------------------------------------------------

    pub fn is_known(&self, connector: &str) -> bool {
        self.session(connector).is_some() || self.keys.has_connector(connector).unwrap_or(false)
    }

    pub fn connectors(&self) -> Vec<ConnectorInfo> {
        let counts: HashMap<String, (usize, usize)> = {
            let commands = self.commands.lock().unwrap();
            let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
            for (name, queue) in &commands.queues {
                counts.entry(name.clone()).or_default().0 = queue.len();
            }
            for (name, n) in &commands.in_flight {
                counts.entry(name.clone()).or_default().1 = *n;
            }
            counts
        };
        let known = self.keys.connectors().unwrap_or_default();
        let states = self.connectors.lock().unwrap().clone();
        let mut names: Vec<(String, String)> = known;
        for (name, state) in &states {
            if !names.iter().any(|(n, _)| n == name) {
                names.push((name.clone(), state.tenant.clone()));
            }
        }
        names.sort();
        // Cluster mode: connectors held by other nodes, from the registry.
        let remote: HashMap<String, (crate::cluster::Holder, serde_json::Value)> = match &self.cluster {
            Some(cluster) => {
                let others: Vec<String> = names
                    .iter()
                    .map(|(n, _)| n.clone())
                    .filter(|n| states.get(n).is_none_or(|s| s.connection_id.is_none()))
                    .collect();
                let found = cluster.remote_states(&others);
                others
                    .into_iter()
                    .zip(found)
                    .filter_map(|(n, (holder, info))| Some((n, (holder?, info.unwrap_or_default()))))
                    .collect()
            }
            None => HashMap::new(),
        };
        let node = self.cluster.as_ref().map(|c| c.node_id.clone());
        names
            .into_iter()
            .map(|(name, tenant)| {
                if let Some((holder, info)) = remote.get(&name) {
                    let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    return ConnectorInfo {
                        queued_commands: 0,
                        in_flight_commands: 0,
                        connected: true,
                        connection_id: Some(holder.conn.clone()),
                        agent_version: text("agentVersion"),
                        last_heartbeat: text("lastHeartbeat"),
                        status: info.get("status").and_then(|v| serde_json::from_value(v.clone()).ok()),
                        active_commands: info.get("activeCommands").and_then(|v| v.as_u64()).unwrap_or(0)
                            as u32,
                        schema: info.get("schema").and_then(|v| serde_json::from_value(v.clone()).ok()),
                        tenant,
                        name,
                        node: Some(holder.node.clone()),
                    };
                }
                let state = states.get(&name).cloned().unwrap_or_default();
                let (queued_commands, in_flight_commands) = counts.get(&name).copied().unwrap_or_default();
                ConnectorInfo {
                    node: node.clone().filter(|_| state.connection_id.is_some()),
                    queued_commands,
                    in_flight_commands,
                    connected: state.connection_id.is_some(),
                    connection_id: state.connection_id,
                    agent_version: state.agent_version,
                    last_heartbeat: state.last_heartbeat,
                    status: state.status,
                    active_commands: state.active_commands,
                    schema: state.schema,
                    tenant: if state.tenant.is_empty() { tenant } else { state.tenant },
                    name,
                }
            })
            .collect()
    }

    // -- commands -------------------------------------------------------------------------

    /// Accepts a command: persists it, then writes it to the connector's session if it has
    /// one with room (pacing), else it waits in the queue.
    pub fn submit(self: &Arc<Self>, connector: &str, req: QueryRequest) -> Result<PendingQuery, QueryError> {
        if self.is_stopping() {
            return Err(offline_error("gateway is shutting down"));
        }
        if !self.is_known(connector) {
            return Err(QueryError::UnknownConnector(connector.to_owned()));
        }
        if let Some(cluster) = self.cluster.clone() {
            return self.submit_to_cluster(&cluster, connector, req);
        }
        // The same idempotency key for the same connector while a command with it is pending
        // (a caller that gave up waiting and asks again): wait for that command's answer
        // instead of sending another command — the key means "the same work".
        if let Some(key) = &req.idempotency_key {
            let mut commands = self.commands.lock().unwrap();
            let pending = commands
                .by_id
                .values_mut()
                .find(|p| p.connector == connector && &p.command.payload.idempotency_key == key);
            if let Some(p) = pending {
                let (tx, rx) = crossbeam_channel::bounded(1);
                p.waiters.push(tx);
                let (command_id, execution_id) =
                    (p.command.command_id.clone(), p.command.execution_id.clone());
                let expires = p.expires;
                drop(commands);
                return Ok(self.pending_query(command_id, execution_id, expires, req.wait, rx));
            }
        }
        let wait = req.wait;
        let (command, expires) = self.new_command(req);
        let (command_id, execution_id) = (command.command_id.clone(), command.execution_id.clone());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut commands = self.commands.lock().unwrap();
        let seq = commands.next_seq;
        commands.next_seq += 1;
        self.store.insert(connector, seq, &command, expires).map_err(|e| store_error(&e))?;
        let pending = PendingCommand {
            connector: connector.to_owned(),
            command,
            sent: None,
            expires,
            seq,
            waiters: vec![tx],
            result_claimed: false,
            watchers: Vec::new(),
            stream: None,
        };
        commands.add(pending);
        self.pump(&mut commands, connector);
        drop(commands);
        Ok(self.pending_query(command_id, execution_id, expires, wait, rx))
    }

    /// The command a request becomes, and when it expires.
    fn new_command(&self, req: QueryRequest) -> (Command, SystemTime) {
        let command_id = uuid::Uuid::new_v4().to_string();
        let execution_id = uuid::Uuid::new_v4().to_string();
        let ttl = req.ttl.unwrap_or(self.config.default_command_ttl);
        let expires = SystemTime::now() + ttl;
        let command = Command {
            activity_id: format!("gateway-{}", &command_id[..8]),
            command_id: command_id.clone(),
            execution_id,
            operation: Operation::Query,
            payload: CommandPayload {
                query: req.sql,
                params: req.params,
                timeout: req.timeout_ms,
                idempotency_key: req.idempotency_key.unwrap_or(command_id),
                connection: req.connection,
                expires_at: Some(humantime::format_rfc3339_millis(expires).to_string()),
            },
        };
        (command, expires)
    }

    /// Cluster mode: the command goes into its connector's Redis stream (where it outlives
    /// this node), the node holding the connector is told, and the caller waits for the outcome
    /// through Redis. An idempotency key of a live command joins that command.
    fn submit_to_cluster(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        connector: &str,
        req: QueryRequest,
    ) -> Result<PendingQuery, QueryError> {
        let redis_error = |e: GatewayError| {
            QueryError::Remote(ErrorBody::new(
                ErrorCode::InternalError,
                format!("the cluster could not take the command: {e}"),
            ))
        };
        let wait = req.wait;
        let ttl = req.ttl.unwrap_or(self.config.default_command_ttl);
        let (command, expires) = self.new_command(req);
        if command.payload.idempotency_key != command.command_id {
            let joined = cluster
                .claim_idempotency(connector, &command.payload.idempotency_key, &command.command_id, ttl)
                .map_err(redis_error)?;
            if let Some(command_id) = joined {
                let rx = cluster.wait_for(&command_id, expires, true);
                match cluster.outcome(&command_id) {
                    // Pending: wait for its answer with its other callers.
                    None => return Ok(self.pending_query(command_id.clone(), command_id, expires, wait, rx)),
                    // Answered and kept: hand it over at once.
                    Some(Some(reply)) => {
                        cluster.forget_waiters(&command_id);
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        let _ = tx.send(reply);
                        return Ok(self.pending_query(command_id.clone(), command_id, expires, wait, rx));
                    }
                    // Answered and taken: a new command with the same key (the agent answers it
                    // from its store, as on a single node).
                    Some(None) => {
                        cluster.forget_waiters(&command_id);
                        cluster
                            .take_idempotency(
                                connector,
                                &command.payload.idempotency_key,
                                &command.command_id,
                                ttl,
                            )
                            .map_err(redis_error)?;
                    }
                }
            }
        }
        let rx = cluster.wait_for(&command.command_id, expires, true);
        if let Err(e) = cluster.enqueue(connector, &command, expires) {
            cluster.forget_waiters(&command.command_id);
            return Err(redis_error(e));
        }
        cluster.notify_holder(self, connector);
        Ok(self.pending_query(command.command_id, command.execution_id, expires, wait, rx))
    }

    fn pending_query(
        self: &Arc<Self>,
        command_id: String,
        execution_id: String,
        expires: SystemTime,
        wait: Duration,
        rx: Receiver<Reply>,
    ) -> PendingQuery {
        PendingQuery {
            hub: self.clone(),
            command_id,
            execution_id,
            expires,
            deadline: Instant::now() + wait,
            rx,
        }
    }

    /// Cluster mode: takes the connector's unanswered commands from its Redis stream into this
    /// node's queue (those it has not taken yet) and writes what fits to its session. Only the
    /// node holding the connector's session does anything.
    pub fn adopt(&self, connector: &str) {
        let Some(cluster) = &self.cluster else { return };
        if self.session(connector).is_none() {
            return;
        }
        let stream = match cluster.read_stream(connector) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(connector, "cannot read the connector's command stream: {e}");
                return;
            }
        };
        let mut commands = self.commands.lock().unwrap();
        let now = SystemTime::now();
        for entry in stream {
            let id = entry.command.command_id.clone();
            if commands.by_id.contains_key(&id) {
                continue;
            }
            if commands.answered_set.contains(&id) {
                // Answered here; its outcome is on its way to Redis (which deletes the entry).
                continue;
            }
            if entry.expires <= now {
                tracing::info!(connector, command = %id, "queued command expired");
                cluster.publish(connector, &id, entry.stream, Err(expired_error(&id)));
                continue;
            }
            let seq = commands.next_seq;
            commands.next_seq += 1;
            commands.add(PendingCommand {
                connector: connector.to_owned(),
                command: entry.command,
                sent: None,
                expires: entry.expires,
                seq,
                waiters: Vec::new(),
                result_claimed: false,
                watchers: Vec::new(),
                stream: Some(entry.stream),
            });
        }
        self.pump(&mut commands, connector);
    }

    /// Cluster mode: pings the connector's session `conn` for another node's takeover check;
    /// the receiver hears once the agent answers. `None` when that session is not here.
    pub fn probe_session(&self, connector: &str, conn: &str) -> Option<Receiver<()>> {
        let session = self.session(connector).filter(|s| s.connection_id == conn)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        session.send(SessionMsg::Probe(tx)).then_some(rx)
    }

    /// Cluster mode: the connector's session `conn` of this node was taken over on another
    /// node (or the registry names another session now): it closes, and its unanswered
    /// commands are left to the stream.
    pub fn replaced_elsewhere(&self, connector: &str, conn: &str, reason: &str) {
        let Some(session) = self.session(connector).filter(|s| s.connection_id == conn) else { return };
        session.send(SessionMsg::Replaced { reason: reason.to_owned() });
        self.unregister(connector, conn, reason);
        self.emit(GatewayEvent::SessionReplaced {
            connector: connector.to_owned(),
            old_connection_id: conn.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Cluster mode: this node's live sessions, for the registry refresh.
    pub fn registered_sessions(&self) -> Vec<LocalSession> {
        let sessions: Vec<(String, SessionHandle)> =
            self.sessions.lock().unwrap().iter().map(|(c, s)| (c.clone(), s.clone())).collect();
        let states = self.connectors.lock().unwrap();
        sessions
            .into_iter()
            .map(|(connector, s)| {
                let state = states.get(&connector).cloned().unwrap_or_default();
                LocalSession {
                    info: serde_json::json!({
                        "tenant": state.tenant,
                        "agentVersion": state.agent_version,
                        "lastHeartbeat": state.last_heartbeat,
                        "status": state.status,
                        "activeCommands": state.active_commands,
                    }),
                    connector,
                    conn: s.connection_id,
                    inst: s.instance_id,
                }
            })
            .collect()
    }

    /// Delivers the queue of a connector to its (new) session: see [`Hub::pump`].
    pub fn deliver_queued(&self, connector: &str) {
        if self.cluster.is_some() {
            return self.adopt(connector);
        }
        let mut commands = self.commands.lock().unwrap();
        self.pump(&mut commands, connector);
    }

    /// Writes queued commands of `connector`, oldest first, to its live session while fewer
    /// than its `max_in_flight` are unanswered there; a queued command past its TTL met on the
    /// way completes with `COMMAND_EXPIRED` instead. Nothing is written to a draining session
    /// or while the gateway stops.
    fn pump(&self, commands: &mut Commands, connector: &str) {
        let session =
            self.session(connector).filter(|s| !s.draining.load(Ordering::SeqCst) && !self.is_stopping());
        let now = SystemTime::now();
        while let Some((_, id)) = commands.queues.get(connector).and_then(|q| q.first_key_value()) {
            let id = id.clone();
            if commands.by_id.get(&id).is_none_or(|p| p.expires <= now) {
                self.expire(commands, &id);
                continue;
            }
            let Some(session) = session.as_ref().filter(|s| commands.in_flight(connector) < s.max_in_flight)
            else {
                break;
            };
            let frame = Inbound::Command(commands.by_id[&id].command.clone()).encode();
            if !session.send(SessionMsg::Frame(frame)) {
                break;
            }
            commands.mark_sent(&id, &session.connection_id);
        }
    }

    /// Answers a queued command `COMMAND_EXPIRED` (its TTL passed).
    fn expire(&self, commands: &mut Commands, command_id: &str) {
        match self.retire(commands, command_id, "expired") {
            Some(p) => {
                tracing::info!(connector = %p.connector, command = command_id, "queued command expired");
                self.reply(commands, p, Err(expired_error(command_id)));
            }
            None => {
                // Not a pending command (cannot happen): do not loop on it.
                for queue in commands.queues.values_mut() {
                    queue.retain(|_, id| id != command_id);
                }
            }
        }
    }

    /// Completes a command of `connector` with its first answer; `false` when it was not
    /// pending (answered before, or not this connector's).
    fn complete(
        &self,
        connector: &str,
        command_id: &str,
        outcome: &str,
        reply: impl FnOnce(Option<Instant>) -> Reply,
    ) -> bool {
        let mut commands = self.commands.lock().unwrap();
        if commands.by_id.get(command_id).is_none_or(|p| p.connector != connector) {
            return false;
        }
        let Some(p) = self.retire(&mut commands, command_id, outcome) else { return false };
        let sent = p.sent.as_ref().map(|(_, at)| *at);
        self.reply(&mut commands, p, reply(sent));
        self.pump(&mut commands, connector);
        true
    }

    /// Whether a command of `connector` waits for its answer.
    fn is_pending(&self, connector: &str, command_id: &str) -> bool {
        self.commands.lock().unwrap().by_id.get(command_id).is_some_and(|p| p.connector == connector)
    }

    /// An answer that is not the first one (or for a command this gateway does not know):
    /// dropped, acknowledged.
    fn drop_answer(&self, connector: &str, command_id: &str) {
        let known = self.commands.lock().unwrap().answered_set.contains(command_id)
            || self.store.answered(command_id).ok().flatten().is_some();
        if known {
            tracing::debug!(connector, command = command_id, "duplicate answer dropped (acknowledged)");
        } else {
            tracing::warn!(
                connector,
                command = command_id,
                "answer for an unknown command dropped (acknowledged)"
            );
        }
        self.emit(GatewayEvent::AnswerDropped {
            connector: connector.to_owned(),
            command_id: command_id.to_owned(),
        });
    }

    /// Where a command stands, with its outcome when the gateway still holds it.
    pub fn command_status(&self, command_id: &str) -> CommandStatus {
        let mut commands = self.commands.lock().unwrap();
        if let Some(p) = commands.by_id.get(command_id) {
            if p.sent.is_some() {
                return CommandStatus::Sent;
            }
            if p.expires > SystemTime::now() {
                return CommandStatus::Queued;
            }
            self.expire(&mut commands, command_id);
        }
        if let Some(cluster) = &self.cluster {
            // Outcomes live in Redis, whichever node took the command and whichever answered.
            drop(commands);
            if let Some(reply) = cluster.outcome(command_id) {
                return CommandStatus::Answered(reply);
            }
            if cluster.command_known(command_id) {
                return CommandStatus::Queued;
            }
            return CommandStatus::Unknown;
        }
        if let Some(reply) = commands.kept.get(command_id) {
            return CommandStatus::Answered(Some(reply.clone()));
        }
        if commands.answered_set.contains(command_id)
            || self.store.answered(command_id).ok().flatten().is_some()
        {
            return CommandStatus::Answered(None);
        }
        CommandStatus::Unknown
    }

    /// Like [`Hub::command_status`], but waits up to `wait` for a queued or sent command to be
    /// answered (woken by the answer, no polling).
    pub fn wait_command(&self, command_id: &str, wait: Duration) -> CommandStatus {
        static NEXT_WATCHER: AtomicU64 = AtomicU64::new(0);
        if let Some(cluster) = &self.cluster
            && !wait.is_zero()
            && !self.commands.lock().unwrap().by_id.contains_key(command_id)
            && matches!(self.command_status(command_id), CommandStatus::Queued)
        {
            // Pending elsewhere in the cluster: wait for its outcome through Redis.
            let expires = SystemTime::now() + wait;
            let rx = cluster.wait_for(command_id, expires, false);
            // It may have been answered between the status and the registration.
            if matches!(self.command_status(command_id), CommandStatus::Queued) {
                let _ = rx.recv_timeout(wait);
            }
            return self.command_status(command_id);
        }
        let watch = {
            let mut commands = self.commands.lock().unwrap();
            match commands.by_id.get_mut(command_id) {
                Some(p) if !wait.is_zero() => {
                    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
                    let id = NEXT_WATCHER.fetch_add(1, Ordering::Relaxed);
                    p.watchers.push((id, tx));
                    Some((id, rx))
                }
                _ => None,
            }
        };
        if let Some((id, rx)) = watch
            && let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(wait)
        {
            // Still pending: take the watcher back, so repeated waits leave nothing behind.
            let mut commands = self.commands.lock().unwrap();
            if let Some(p) = commands.by_id.get_mut(command_id) {
                p.watchers.retain(|(w, _)| *w != id);
            }
        }
        self.command_status(command_id)
    }

    /// Sends `cancel` for an execution (or command) id to the connector running it.
    pub fn cancel(&self, id: &str, reason: Option<String>) -> Result<(), GatewayError> {
        let (connector, execution_id) = {
            let commands = self.commands.lock().unwrap();
            let found =
                commands.by_id.values().find(|p| p.command.execution_id == id || p.command.command_id == id);
            match (found, &self.cluster) {
                (Some(p), _) => (p.connector.clone(), p.command.execution_id.clone()),
                (None, Some(cluster)) => return cluster.forward_cancel(id, reason),
                (None, None) => {
                    return Err(GatewayError::UnknownConnector(format!("no pending command `{id}`")));
                }
            }
        };
        let cancel = protocol::Cancel { execution_id, reason };
        self.send_frame(&connector, &Inbound::Cancel(cancel))
    }

    /// Tells every waiting caller the gateway stops (shutdown). The commands stay in
    /// `gateway.db` and are delivered after the next start.
    pub fn fail_all(&self, message: &str) {
        let mut commands = self.commands.lock().unwrap();
        commands.queues.clear();
        commands.in_flight.clear();
        for (_, p) in commands.by_id.drain() {
            for waiter in p.waiters {
                let _ = waiter.send(Err(offline_error(message)));
            }
        }
        self.uploads.lock().unwrap().clear();
    }

    // -- frames from agents ---------------------------------------------------------------

    /// Handles one decoded frame of an authenticated session.
    pub fn on_frame(&self, connector: &str, key_id: &str, frame: &Outbound) -> FrameAction {
        let mut action = FrameAction::default();
        match frame {
            Outbound::Auth(_) => action.reply.push(Inbound::Error(protocol::CloudError {
                code: ErrorCode::MalformedMessage,
                message: "already authenticated".into(),
                command_id: None,
            })),
            Outbound::Heartbeat(hb) => {
                {
                    let mut connectors = self.connectors.lock().unwrap();
                    let state = connectors.entry(connector.to_owned()).or_default();
                    state.last_heartbeat = Some(protocol::now_rfc3339());
                    state.status = Some(hb.status);
                    state.active_commands = hb.active_commands;
                }
                // A key revoked while the gateway could not be told, or a rotated key past its
                // grace period, ends the session at the next heartbeat.
                if !self.keys.is_usable(key_id).unwrap_or(true) {
                    action.kick = Some((ErrorCode::AuthFailed, "API key revoked or expired".into()));
                }
            }
            Outbound::SchemaDiscovery(sd) => {
                if let Some(cluster) = &self.cluster {
                    // Metadata only (never rows): any node's `connectors` and `schema` show it.
                    cluster.store_schema(connector, &sd.schema);
                }
                let mut connectors = self.connectors.lock().unwrap();
                connectors.entry(connector.to_owned()).or_default().schema = Some(sd.schema.clone());
            }
            Outbound::Status(st) => {
                let mut connectors = self.connectors.lock().unwrap();
                connectors.entry(connector.to_owned()).or_default().status = Some(st.status);
            }
            Outbound::ExecutionResult(result) => {
                if let Some(ack) = self.on_result(connector, result) {
                    action.reply.push(ack);
                }
            }
            Outbound::ExecutionError(err) => {
                if let Some(id) = &err.command_id {
                    let body = err.error.clone();
                    if !self.complete(connector, id, "error", |_| Err(QueryError::Remote(body))) {
                        self.drop_answer(connector, id);
                    }
                    action.reply.push(Inbound::Ack(protocol::Ack { command_id: id.clone() }));
                }
            }
        }
        action
    }

    /// Completes the query of an `execution_result`; returns the `ack` to send when the
    /// result was received intact, or was a duplicate (dropped).
    fn on_result(&self, connector: &str, result: &ExecutionResult) -> Option<Inbound> {
        let received = Instant::now();
        let command_id = result.command_id.clone();
        let ack = Inbound::Ack(protocol::Ack { command_id: command_id.clone() });
        let outcome = |sent: Option<Instant>, columns, rows, buffered| QueryOutcome {
            command_id: command_id.clone(),
            columns,
            rows,
            row_count: result.row_count,
            duration_ms: result.duration_ms,
            round_trip: sent.map(|at| received.saturating_duration_since(at)).unwrap_or_default(),
            buffered,
        };
        match &result.result {
            ResultPayload::Inline { columns, rows } => {
                if !self.is_pending(connector, &command_id) {
                    self.drop_answer(connector, &command_id);
                    return Some(ack);
                }
                let columns = columns.clone();
                let Ok(rows) = rows.clone().into_values() else {
                    // Only an agent-built (encoded) payload can fail here, never a decoded one.
                    self.drop_answer(connector, &command_id);
                    return Some(ack);
                };
                if !self
                    .complete(connector, &command_id, "result", |sent| Ok(outcome(sent, columns, rows, None)))
                {
                    self.drop_answer(connector, &command_id);
                }
                Some(ack)
            }
            ResultPayload::Buffered { buffer_key, chunk_count, byte_count, sha256 } => {
                let taken = match self.claim_buffer(connector, &command_id, buffer_key) {
                    BufferClaim::NotPending => {
                        self.drop_answer(connector, &command_id);
                        return Some(ack);
                    }
                    BufferClaim::Claimed => {
                        // Another session thread is verifying a copy of this very result (the
                        // agent re-sent it on a newer session before the first was acknowledged);
                        // that one answers the command.
                        tracing::info!(
                            connector,
                            command = %command_id,
                            "a copy of a buffered result that is being verified already: dropped (acknowledged)"
                        );
                        self.emit(GatewayEvent::AnswerDropped {
                            connector: connector.to_owned(),
                            command_id: command_id.clone(),
                        });
                        return Some(ack);
                    }
                    BufferClaim::Taken(taken) => taken,
                };
                let checked = match taken {
                    Ok(Some(buffer)) => {
                        self.verify_buffer(buffer, buffer_key, *chunk_count, *byte_count, sha256).map(Some)
                    }
                    // Not in memory: the agent may be answering a repeat of an idempotency key
                    // with its stored result, naming the buffer that answered the first command
                    // (a caller whose answer was lost asks again): those chunks are kept a while.
                    Ok(None) => match crate::upload::answered_buffer(&self.store, buffer_key, connector) {
                        Some(buffer) => {
                            tracing::info!(connector, command = %command_id, buffer = %buffer_key, "a repeat answered with a kept result");
                            self.verify_buffer(buffer, buffer_key, *chunk_count, *byte_count, sha256)
                                .map(Some)
                        }
                        None => Ok(None),
                    },
                    // Not this connector's or this command's buffer: it stays untouched.
                    Err(()) => Err(QueryError::Integrity(format!(
                        "buffer {buffer_key} does not belong to command {command_id}"
                    ))),
                };
                match checked {
                    Ok(Some((columns, spool))) => {
                        let info = BufferedInfo {
                            buffer_key: buffer_key.clone(),
                            chunk_count: *chunk_count,
                            byte_count: *byte_count,
                            sha256: sha256.clone(),
                            raw: Vec::new(),
                            spool,
                        };
                        let rows = Vec::new();
                        if !self.complete(connector, &command_id, "result", |sent| {
                            Ok(outcome(sent, columns, rows, Some(info)))
                        }) {
                            self.drop_answer(connector, &command_id);
                        }
                        Some(ack)
                    }
                    Ok(None) => {
                        // No chunk of it is here. Either the gateway restarted after the upload
                        // and lost the buffer, or the answer is the agent's stored answer to an
                        // earlier command with the same idempotency key, whose buffer was handed
                        // out with that command's answer. The agent cannot upload it again (its
                        // rows are streamed, not kept), so the command is answered and the answer
                        // acknowledged — never left pending, never re-sent in a loop.
                        let own = buffer_key == &format!("{connector}:{command_id}");
                        let body = if own {
                            protocol::ErrorBody::new(
                                protocol::ErrorCode::UploadFailed,
                                "the gateway holds no chunk of this result (never uploaded, or dropped); run the command again",
                            )
                        } else {
                            protocol::ErrorBody::new(
                                protocol::ErrorCode::ResultUnavailable,
                                format!(
                                    "this idempotency key was answered before, with the result buffer {buffer_key}, which was delivered and released; send a new idempotency key to run the query again"
                                ),
                            )
                        };
                        tracing::warn!(connector, command = %command_id, code = %body.code, "buffered result names {buffer_key}, which holds no chunks");
                        if !self.complete(connector, &command_id, "failed", |_| Err(QueryError::Remote(body)))
                        {
                            self.drop_answer(connector, &command_id);
                        }
                        Some(ack)
                    }
                    Err(e) => {
                        tracing::warn!(connector, command = %command_id, "buffered result rejected: {e}");
                        self.complete(connector, &command_id, "failed", |_| Err(e));
                        None
                    }
                }
            }
        }
    }

    /// Takes the upload buffer a buffered result names, under the commands lock, and marks
    /// the command's result as being verified, so that only one copy of the result (the
    /// agent re-sends unacknowledged answers on every new session, and sessions are served
    /// by their own threads) handles the buffer: a second copy read while the first is
    /// verified would otherwise find no buffer and answer the command `UPLOAD_FAILED`.
    fn claim_buffer(&self, connector: &str, command_id: &str, buffer_key: &str) -> BufferClaim {
        let mut commands = self.commands.lock().unwrap();
        let Some(pending) = commands.by_id.get_mut(command_id).filter(|p| p.connector == connector) else {
            return BufferClaim::NotPending;
        };
        if pending.result_claimed {
            return BufferClaim::Claimed;
        }
        pending.result_claimed = true;
        let taken = self.uploads.lock().unwrap().take(buffer_key, connector, command_id);
        match &taken {
            Ok(Some(b)) => tracing::debug!(
                connector,
                command = command_id,
                buffer = buffer_key,
                chunks = b.next_seq,
                "buffer taken by its result"
            ),
            Ok(None) => tracing::debug!(
                connector,
                command = command_id,
                buffer = buffer_key,
                "a buffered result names no buffer"
            ),
            Err(()) => {}
        }
        BufferClaim::Taken(taken)
    }

    #[allow(clippy::type_complexity)]
    fn verify_buffer(
        &self,
        buffer: Buffer,
        buffer_key: &str,
        chunk_count: u32,
        byte_count: u64,
        sha256: &str,
    ) -> Result<(Vec<protocol::ColumnMeta>, crate::spool::Spool), QueryError> {
        if !buffer.complete {
            return Err(QueryError::Integrity(format!("{buffer_key}: the final chunk never arrived")));
        }
        if buffer.next_seq != chunk_count {
            return Err(QueryError::Integrity(format!(
                "{buffer_key}: {} chunks received, {chunk_count} announced",
                buffer.next_seq
            )));
        }
        // Streamed from `gw_chunks` into a spool file: a chunk and a line in memory at a time.
        crate::spool::verify(
            &self.store,
            &self.config.data_dir,
            buffer_key,
            chunk_count,
            byte_count,
            sha256.trim(),
        )
    }
}

/// What [`Hub::claim_buffer`] found.
enum BufferClaim {
    /// The command is not pending for this connector (answered, or never its).
    NotPending,
    /// Another copy of its result holds the buffer already.
    Claimed,
    /// This copy handles the result: the buffer (`Ok(None)`: none under that key; `Err`: the
    /// key names another connector's or command's buffer, left untouched).
    Taken(Result<Option<Buffer>, ()>),
}

/// A submitted query; [`PendingQuery::wait`] blocks for its result.
#[derive(Debug)]
pub struct PendingQuery {
    hub: Arc<Hub>,
    command_id: String,
    execution_id: String,
    expires: SystemTime,
    deadline: Instant,
    rx: Receiver<Reply>,
}

impl PendingQuery {
    /// Id of the command sent to the agent.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// Execution id of the command (what [`crate::Gateway::cancel`] takes).
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Blocks until the result, an error, the command's TTL (while it is still queued) or the
    /// wait time, whichever comes first. The rows of a buffered result are read from its
    /// spool (see [`PendingQuery::wait_spooled`]).
    pub fn wait(self) -> Result<QueryOutcome, QueryError> {
        let mut outcome = self.wait_spooled()?;
        outcome.load_rows()?;
        Ok(outcome)
    }

    /// Like [`PendingQuery::wait`], but the rows of a buffered result stay on disk, in
    /// [`BufferedInfo::spool`] (`rows` and `raw` empty): what the admin API streams.
    pub fn wait_spooled(self) -> Result<QueryOutcome, QueryError> {
        loop {
            let now = Instant::now();
            let until_expiry = self.expires.duration_since(SystemTime::now()).unwrap_or_default();
            let step =
                self.deadline.saturating_duration_since(now).min(until_expiry + Duration::from_millis(5));
            match self.rx.recv_timeout(step) {
                Ok(reply) => return reply,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(offline_error("gateway stopped"));
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            let mut commands = self.hub.commands.lock().unwrap();
            // The reply may have landed between the timeout and the lock.
            if let Ok(reply) = self.rx.try_recv() {
                return reply;
            }
            if let Some(cluster) = &self.hub.cluster {
                drop(commands);
                // The answer (an expiry too) comes through Redis; past the expiry nothing
                // more will come unless the agent already had the command.
                if Instant::now() >= self.deadline
                    || SystemTime::now() >= self.expires + Duration::from_secs(1)
                {
                    cluster.forget_waiters(&self.command_id);
                    return match cluster.outcome(&self.command_id) {
                        Some(Some(reply)) => reply,
                        Some(None) => Err(QueryError::Remote(ErrorBody::new(
                            ErrorCode::ResultUnavailable,
                            "answered, and the outcome was taken by another caller",
                        ))),
                        None if SystemTime::now() >= self.expires => Err(expired_error(&self.command_id)),
                        None => Err(QueryError::Timeout),
                    };
                }
                continue;
            }
            let queued = commands.by_id.get(&self.command_id).is_some_and(|p| p.sent.is_none());
            if queued && SystemTime::now() >= self.expires {
                self.hub.retire(&mut commands, &self.command_id, "expired");
                return Err(expired_error(&self.command_id));
            }
            if Instant::now() >= self.deadline {
                // The caller gives up waiting; the command does not: it stays pending (the
                // agent may be running it), its answer is kept for `command_status` and for a
                // caller that asks again with the same idempotency key.
                return Err(QueryError::Timeout);
            }
        }
    }
}
