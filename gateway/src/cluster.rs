//! Cluster mode (`serve --redis URL --node-id ID`): several gateway nodes share one Redis, so a
//! fleet outgrows one machine and survives the loss of one.
//!
//! Every node keeps its own [`Hub`] for the sessions it holds (uploads are reassembled on the
//! node whose session the agent has: each node names its own upload URL). Redis holds what
//! must outlive a node or be seen from every node:
//!
//! | key | what |
//! |---|---|
//! | `mc:node:<id>` | the node is alive (`PX` 3 s, refreshed every second) |
//! | `mc:conn:<connector>` | the registry: `{node, conn, inst}` of the connector's session, `SET NX PX <idle timeout>`, refreshed while the session lives |
//! | `mc:info:<connector>` | the last heartbeat, version and status, for `connectors` on any node |
//! | `mc:schema:<connector>` | the connector's last schema broadcast (metadata only), for any node |
//! | `mc:q:<connector>` | a stream of the connector's unanswered commands (`id`, `cmd`, `exp`, `origin`) |
//! | `mc:cmd:<command or execution id>` | where a command went: connector, origin node, stream entry |
//! | `mc:idem:<connector>:<key>` | the command id an idempotency key stands for, while it lives |
//! | `mc:res:<command id>` | the outcome (`SET NX`: the first answer wins), 24 h (§7.2) |
//! | `mc:res:<command id>:<uuid>` | the NDJSON stream of a buffered outcome, in 1 MiB parts, 24 h |
//! | `mc:keys`, `mc:keys:…` | the API keys (`redis_keys.rs`) |
//!
//! Channels: `mc:to:<node>` carries [`NodeMsg`] to one node, `mc:all` to every node (kicks).
//!
//! **A command** submitted on any node goes into the connector's stream first, then the holder
//! is told (`Deliver`); the holder adopts the stream's commands into its hub and writes them to
//! the session with the usual pacing. Its answer is written to `mc:res:<id>` and the entry is
//! deleted from the stream, then the origin node is told (`Done`) and hands the outcome to its
//! waiting caller. A command stays in the stream until it is answered or expires, so when the
//! holder dies the agent's next node delivers it again, with the same ids: the agent's queue
//! answers a command it already ran from its store instead of running it twice.
//!
//! **The registry** makes `DUPLICATE_CONNECTION` hold across nodes: a second session of a
//! connector held on another node takes over only when the holder is dead, or is the same agent
//! instance, or its session does not answer a ping forwarded through the holder (`Probe`).
//!
//! Threads: `gw-cluster-sub` (subscriber), `gw-cluster-beat` (node liveness, registry refresh),
//! `gw-cluster-pub` (writes outcomes to Redis, off the hub's lock), and a short-lived
//! `gw-cluster-fetch` per outcome handed to a caller on this node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use protocol::{ColumnMeta, Command, ErrorBody, ErrorCode};
use redis::Commands as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::GatewayError;
use crate::hub::Hub;
use crate::query::{BufferedInfo, QueryError, QueryOutcome};
use crate::spool::SpoolWriter;

type Reply = Result<QueryOutcome, QueryError>;
/// A caller waiting for an outcome, when its command expires, and whether it takes the outcome
/// (a query's caller) or only watches for it (`GET /admin/commands/<id>?waitMs=`).
type Waiter = (Sender<Reply>, SystemTime, bool);

/// The marker of an outcome handed to its caller and released.
const RELEASED: &str = "released";
/// The channel every node subscribes to.
pub(crate) const BROADCAST: &str = "mc:all";
/// How long a node counts as alive after its last beat.
const NODE_TTL: Duration = Duration::from_secs(3);
/// How often a node beats.
const BEAT: Duration = Duration::from_secs(1);
/// How long outcomes stay in Redis (spec §7.2).
pub(crate) const RESULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Size of one part of a buffered outcome's stream.
const PART: usize = 1 << 20;
/// Stream entries read per `XRANGE`.
const ADOPT_BATCH: usize = 1000;
/// Most stream entries adopted in one pass (the next `Deliver` or session takes the rest).
const ADOPT_MAX: usize = 100_000;

/// Who holds a connector (`mc:conn:<connector>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub node: String,
    pub conn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inst: Option<String>,
}

/// A message to one node (`mc:to:<node>`) or to all (`mc:all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub(crate) enum NodeMsg {
    /// The connector's stream has new commands.
    Deliver { connector: String },
    /// Ping the session `conn`; `LPUSH reply alive` if it answers.
    Probe { connector: String, conn: String, reply: String },
    /// The session `conn` was taken over on another node: close it.
    Replace { connector: String, conn: String, reason: String },
    /// The command's outcome is in `mc:res:<id>`.
    Done { id: String },
    /// Cancel a command (or execution) running on a session of this node.
    Cancel { id: String, reason: Option<String> },
    /// Write this frame to the connector's session.
    Raw { connector: String, text: String },
    /// Decommission the connector's session.
    Decommission { connector: String, grace_ms: u64 },
    /// A key was revoked: kick its sessions (on `mc:all`).
    Kick { key: String },
}

/// A command adopted from a stream: where to delete it and whom to tell once answered.
#[derive(Debug, Clone)]
pub(crate) struct StreamRef {
    pub entry: String,
    pub origin: String,
}

/// An answered adopted command, on its way to Redis.
struct Published {
    connector: String,
    command_id: String,
    stream: StreamRef,
    reply: Reply,
}

/// One command read from a connector's stream.
pub(crate) struct StreamCommand {
    pub stream: StreamRef,
    pub command: Command,
    pub expires: SystemTime,
}

/// This node's view of the cluster.
pub(crate) struct Cluster {
    pub node_id: String,
    client: redis::Client,
    conn: Mutex<redis::Connection>,
    /// Callers on this node waiting for outcomes, by command id (with the command's expiry, to
    /// drop waiters of commands that can no longer be answered).
    waiters: Mutex<HashMap<String, Vec<Waiter>>>,
    publish_tx: Sender<Published>,
    publish_rx: Mutex<Option<Receiver<Published>>>,
    /// Registry entries live this long without a refresh (the session idle timeout).
    registry_ttl: Duration,
    spool_dir: PathBuf,
    stop: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node_id).finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn unix_ms(t: SystemTime) -> i64 {
    crate::store::unix_ms(t)
}

fn conn_key(connector: &str) -> String {
    format!("mc:conn:{connector}")
}

fn stream_key(connector: &str) -> String {
    format!("mc:q:{connector}")
}

fn node_channel(node: &str) -> String {
    format!("mc:to:{node}")
}

/// Extends the registry entry when it is still ours; returns the current value otherwise.
const REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return v
";

/// Replaces the registry entry only if it still holds `ARGV[1]` (compare and set).
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes the registry entry only if it still holds `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Cluster {
    /// Connects to Redis; the node id must not be in use by a live node.
    pub(crate) fn connect(
        url: &str,
        node_id: &str,
        registry_ttl: Duration,
        spool_dir: PathBuf,
    ) -> Result<Self, GatewayError> {
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(GatewayError::Invalid(format!(
                "node id `{node_id}`: 1-64 of letters, digits, `-`, `_`, `.`"
            )));
        }
        let client = redis::Client::open(url)?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        // A node restarted under its id (kill -9, then systemd) finds its old beat for up to
        // NODE_TTL: wait it out rather than refuse; a live node keeps it and is refused.
        let deadline = Instant::now() + NODE_TTL + BEAT;
        let claimed = loop {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(format!("mc:node:{node_id}"))
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(ms(NODE_TTL))
                .query(&mut conn)?;
            if claimed.is_some() || Instant::now() >= deadline {
                break claimed;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if claimed.is_none() {
            return Err(GatewayError::Invalid(format!(
                "node id `{node_id}` is in use by a live node of this cluster (or it stopped less than {} s ago)",
                NODE_TTL.as_secs()
            )));
        }
        let (publish_tx, publish_rx) = crossbeam_channel::unbounded();
        Ok(Self {
            node_id: node_id.to_owned(),
            client,
            conn: Mutex::new(conn),
            waiters: Mutex::default(),
            publish_tx,
            publish_rx: Mutex::new(Some(publish_rx)),
            registry_ttl,
            spool_dir,
            stop: AtomicBool::new(false),
        })
    }

    fn redis<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, GatewayError> {
        let mut conn = self.conn.lock().unwrap();
        Ok(f(&mut conn)?)
    }

    /// Starts the subscriber, beat and publisher threads.
    pub(crate) fn start(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, GatewayError> {
        let sub = self.client.get_connection_with_timeout(Duration::from_secs(5))?;
        sub.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut threads = Vec::new();
        let (me, weak) = (self.clone(), Arc::downgrade(hub));
        threads.push(crate::spawn_named("gw-cluster-sub".into(), move || me.subscriber(sub, weak))?);
        let (me, weak) = (self.clone(), Arc::downgrade(hub));
        threads.push(crate::spawn_named("gw-cluster-beat".into(), move || me.beat(weak))?);
        if let Some(rx) = self.publish_rx.lock().unwrap().take() {
            let me = self.clone();
            threads.push(crate::spawn_named("gw-cluster-pub".into(), move || me.publisher(rx))?);
        }
        Ok(threads)
    }

    /// Stops the threads (they notice within a second) and tells the cluster this node is gone.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Callers waiting here hear "gateway stopped"; their commands stay in Redis.
        self.waiters.lock().unwrap().clear();
        let _ = self.redis(|c| c.del::<_, ()>(format!("mc:node:{}", self.node_id)));
    }

    fn send(&self, node: &str, msg: &NodeMsg) -> Result<(), GatewayError> {
        let text = serde_json::to_string(msg).map_err(|e| GatewayError::Redis(e.to_string()))?;
        self.redis(|c| c.publish::<_, _, ()>(node_channel(node), text))
    }

    // -- registry ---------------------------------------------------------------------------

    /// Who holds the connector now, if anyone.
    pub(crate) fn holder(&self, connector: &str) -> Option<Holder> {
        let raw: Option<String> = self.redis(|c| c.get(conn_key(connector))).ok().flatten();
        raw.and_then(|r| serde_json::from_str(&r).ok())
    }

    fn node_alive(&self, node: &str) -> bool {
        self.redis(|c| c.exists::<_, bool>(format!("mc:node:{node}"))).unwrap_or(true)
    }

    /// Claims the connector for a new session of this node. Takes over from a dead node, from
    /// the same agent instance, or from a session that does not answer a ping within `probe`;
    /// `Err` with `DUPLICATE_CONNECTION` when the holder's session is alive, `INTERNAL_ERROR`
    /// (retryable: the agent dials again) when Redis cannot be asked.
    pub(crate) fn claim(
        &self,
        connector: &str,
        conn: &str,
        instance: Option<&str>,
        probe: Duration,
    ) -> Result<(), (ErrorCode, String)> {
        let unavailable =
            |e: GatewayError| (ErrorCode::InternalError, format!("the cluster registry is unavailable: {e}"));
        let mine =
            Holder { node: self.node_id.clone(), conn: conn.to_owned(), inst: instance.map(str::to_owned) };
        let value = serde_json::to_string(&mine).unwrap_or_default();
        for _ in 0..4 {
            let set: Option<String> = self
                .redis(|c| {
                    redis::cmd("SET")
                        .arg(conn_key(connector))
                        .arg(&value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms(self.registry_ttl))
                        .query(c)
                })
                .map_err(unavailable)?;
            if set.is_some() {
                return Ok(());
            }
            let raw: Option<String> = self.redis(|c| c.get(conn_key(connector))).map_err(unavailable)?;
            let Some(raw) = raw else { continue };
            let Ok(old) = serde_json::from_str::<Holder>(&raw) else {
                // Not ours to read: replace it.
                self.swap(connector, &raw, &value);
                continue;
            };
            let reason = if old.node == self.node_id {
                // This node's own entry: the local hub decided (a stale entry from before a restart
                // of this node, or a session it already replaced).
                "replaced on the same node".to_owned()
            } else if !self.node_alive(&old.node) {
                format!("replaced: node {} is gone", old.node)
            } else if instance.is_some() && old.inst.as_deref() == instance {
                "replaced by a newer session of the same agent".to_owned()
            } else if self.remote_alive(&old, connector, probe) {
                return Err((
                    ErrorCode::DuplicateConnection,
                    format!(
                        "connector `{connector}` is already connected on node {} (its session answered within {} ms)",
                        old.node,
                        probe.as_millis()
                    ),
                ));
            } else {
                format!("replaced: the session did not answer a ping within {} ms", probe.as_millis())
            };
            if self.swap(connector, &raw, &value) {
                if old.node != self.node_id {
                    let msg = NodeMsg::Replace {
                        connector: connector.to_owned(),
                        conn: old.conn.clone(),
                        reason: reason.clone(),
                    };
                    let _ = self.send(&old.node, &msg);
                }
                tracing::info!(connector, old_node = %old.node, "registry taken over: {reason}");
                return Ok(());
            }
        }
        Err((ErrorCode::DuplicateConnection, format!("connector `{connector}` is already connected")))
    }

    fn swap(&self, connector: &str, old: &str, new: &str) -> bool {
        let script = redis::Script::new(SWAP);
        self.redis(|c| {
            script.key(conn_key(connector)).arg(old).arg(new).arg(ms(self.registry_ttl)).invoke::<i64>(c)
        })
        .is_ok_and(|n| n == 1)
    }

    /// Asks the holder's node to ping its session; whether it answered within `probe`.
    fn remote_alive(&self, old: &Holder, connector: &str, probe: Duration) -> bool {
        let reply = format!("mc:probe:{}", uuid::Uuid::new_v4().simple());
        let msg =
            NodeMsg::Probe { connector: connector.to_owned(), conn: old.conn.clone(), reply: reply.clone() };
        if self.send(&old.node, &msg).is_err() {
            return true; // Fail closed: keep the session we cannot check.
        }
        // A connection of its own: BLPOP blocks it.
        let Ok(mut conn) = self.client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return true;
        };
        let got: Option<(String, String)> =
            conn.blpop(&reply, (probe + Duration::from_millis(500)).as_secs_f64()).unwrap_or(None);
        got.is_some()
    }

    /// Removes the connector's registry entry if it is still this session's.
    pub(crate) fn release(&self, connector: &str, conn: &str, instance: Option<&str>) {
        let mine =
            Holder { node: self.node_id.clone(), conn: conn.to_owned(), inst: instance.map(str::to_owned) };
        let value = serde_json::to_string(&mine).unwrap_or_default();
        let script = redis::Script::new(RELEASE);
        if let Err(e) = self.redis(|c| script.key(conn_key(connector)).arg(value).invoke::<i64>(c)) {
            tracing::warn!(connector, "cannot release the registry entry: {e}");
        }
    }

    // -- commands ---------------------------------------------------------------------------

    /// Puts a command in its connector's stream and records where it went; returns nothing
    /// until Redis has it (so a node that dies after this loses nothing).
    pub(crate) fn enqueue(
        &self,
        connector: &str,
        command: &Command,
        expires: SystemTime,
    ) -> Result<(), GatewayError> {
        let json = serde_json::to_string(command).map_err(|e| GatewayError::Redis(e.to_string()))?;
        let keep = expires.duration_since(SystemTime::now()).unwrap_or_default() + RESULT_TTL;
        self.redis(|c| {
            let entry: String = redis::cmd("XADD")
                .arg(stream_key(connector))
                .arg("*")
                .arg("id")
                .arg(&command.command_id)
                .arg("cmd")
                .arg(&json)
                .arg("exp")
                .arg(unix_ms(expires))
                .arg("origin")
                .arg(&self.node_id)
                .query(c)?;
            let mut pipe = redis::pipe();
            // The stream of a connector that never comes back goes too, once its newest
            // command and that command's outcome time are past.
            let stream_ttl = ms(keep) as i64;
            pipe.cmd("PEXPIRE").arg(stream_key(connector)).arg(stream_ttl).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(stream_key(connector)).arg(stream_ttl).arg("GT").ignore();
            for id in [&command.command_id, &command.execution_id] {
                let key = format!("mc:cmd:{id}");
                pipe.hset_multiple(
                    &key,
                    &[
                        ("connector", connector),
                        ("command", command.command_id.as_str()),
                        ("origin", self.node_id.as_str()),
                        ("entry", entry.as_str()),
                    ],
                )
                .ignore();
                pipe.pexpire(&key, ms(keep) as i64).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    /// Claims an idempotency key for a new command; `Some(command id)` of the live command
    /// that has it already.
    pub(crate) fn claim_idempotency(
        &self,
        connector: &str,
        key: &str,
        command_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, GatewayError> {
        let name = format!("mc:idem:{connector}:{key}");
        self.redis(|c| {
            let set: Option<String> =
                redis::cmd("SET").arg(&name).arg(command_id).arg("NX").arg("PX").arg(ms(ttl)).query(c)?;
            match set {
                Some(_) => Ok(None),
                None => c.get(&name),
            }
        })
    }

    /// Points an idempotency key at a new command (the one it named was answered and taken).
    pub(crate) fn take_idempotency(
        &self,
        connector: &str,
        key: &str,
        command_id: &str,
        ttl: Duration,
    ) -> Result<(), GatewayError> {
        self.redis(|c| {
            redis::cmd("SET")
                .arg(format!("mc:idem:{connector}:{key}"))
                .arg(command_id)
                .arg("PX")
                .arg(ms(ttl))
                .exec(c)
        })
    }

    /// The connector's unanswered commands, oldest first.
    pub(crate) fn read_stream(&self, connector: &str) -> Result<Vec<StreamCommand>, GatewayError> {
        let mut entries = Vec::new();
        let mut from = "-".to_owned();
        // Page by page (the stream of a connector offline for long may be big), up to a bound.
        while entries.len() < ADOPT_MAX {
            let page: redis::streams::StreamRangeReply = self.redis(|c| {
                redis::cmd("XRANGE")
                    .arg(stream_key(connector))
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(ADOPT_BATCH)
                    .query(c)
            })?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            let full = page.ids.len() == ADOPT_BATCH;
            entries.extend(page.ids);
            if !full {
                break;
            }
        }
        let mut out = Vec::new();
        for entry in entries {
            let field = |name: &str| entry.get::<String>(name);
            let (Some(cmd), Some(exp), Some(origin)) = (field("cmd"), field("exp"), field("origin")) else {
                tracing::error!(connector, entry = %entry.id, "malformed command entry dropped from the stream");
                let _ = self.redis(|c| c.xdel::<_, _, ()>(stream_key(connector), &[&entry.id]));
                continue;
            };
            let Ok(command) = serde_json::from_str::<Command>(&cmd) else {
                tracing::error!(connector, entry = %entry.id, "undecodable command dropped from the stream");
                let _ = self.redis(|c| c.xdel::<_, _, ()>(stream_key(connector), &[&entry.id]));
                continue;
            };
            let expires = SystemTime::UNIX_EPOCH + Duration::from_millis(exp.parse::<u64>().unwrap_or(0));
            out.push(StreamCommand {
                stream: StreamRef { entry: entry.id.clone(), origin },
                command,
                expires,
            });
        }
        Ok(out)
    }

    /// Tells the node holding `connector` (this one included) that its stream has news.
    pub(crate) fn notify_holder(&self, hub: &Hub, connector: &str) {
        match self.holder(connector) {
            Some(h) if h.node == self.node_id => hub.adopt(connector),
            Some(h) => {
                if let Err(e) = self.send(&h.node, &NodeMsg::Deliver { connector: connector.to_owned() }) {
                    tracing::warn!(connector, node = %h.node, "cannot tell the holder of a new command: {e}");
                }
            }
            None => {}
        }
    }

    /// Forwards a frame to the node holding the connector; `false` when nobody holds it.
    pub(crate) fn forward_raw(&self, connector: &str, text: String) -> bool {
        match self.holder(connector) {
            Some(h) if h.node != self.node_id => {
                self.send(&h.node, &NodeMsg::Raw { connector: connector.to_owned(), text }).is_ok()
            }
            _ => false,
        }
    }

    /// Forwards a decommission to the node holding the connector; `false` when nobody holds it.
    pub(crate) fn forward_decommission(&self, connector: &str, grace_ms: u64) -> bool {
        match self.holder(connector) {
            Some(h) if h.node != self.node_id => self
                .send(&h.node, &NodeMsg::Decommission { connector: connector.to_owned(), grace_ms })
                .is_ok(),
            _ => false,
        }
    }

    /// Keeps the connector's last schema broadcast (metadata, never rows) for every node.
    pub(crate) fn store_schema(&self, connector: &str, schema: &[protocol::DatabaseSchema]) {
        let Ok(json) = serde_json::to_string(schema) else { return };
        if let Err(e) = self.redis(|c| c.set::<_, _, ()>(format!("mc:schema:{connector}"), json)) {
            tracing::warn!(connector, "cannot keep the schema in Redis: {e}");
        }
    }

    /// Forwards a cancel to the node holding the command's connector.
    pub(crate) fn forward_cancel(&self, id: &str, reason: Option<String>) -> Result<(), GatewayError> {
        let connector: Option<String> = self.redis(|c| c.hget(format!("mc:cmd:{id}"), "connector"))?;
        let connector =
            connector.ok_or_else(|| GatewayError::UnknownConnector(format!("no pending command `{id}`")))?;
        match self.holder(&connector) {
            Some(h) if h.node != self.node_id => {
                self.send(&h.node, &NodeMsg::Cancel { id: id.to_owned(), reason })
            }
            _ => Err(GatewayError::ConnectorOffline(connector)),
        }
    }

    /// Waits on this node for a command's outcome.
    pub(crate) fn wait_for(&self, command_id: &str, expires: SystemTime, takes: bool) -> Receiver<Reply> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let now = SystemTime::now();
        let mut waiters = self.waiters.lock().unwrap();
        waiters.retain(|_, list| {
            list.retain(|(_, exp, _)| *exp + RESULT_TTL > now);
            !list.is_empty()
        });
        waiters.entry(command_id.to_owned()).or_default().push((tx, expires, takes));
        rx
    }

    /// Drops the waiters of a command whose caller gave up.
    pub(crate) fn forget_waiters(&self, command_id: &str) {
        self.waiters.lock().unwrap().remove(command_id);
    }

    /// Whether the command is known to the cluster (queued, sent or answered).
    pub(crate) fn command_known(&self, id: &str) -> bool {
        self.redis(|c| {
            redis::cmd("EXISTS").arg(format!("mc:cmd:{id}")).arg(format!("mc:res:{id}")).query::<u32>(c)
        })
        .is_ok_and(|n| n > 0)
    }

    /// The outcome in Redis, if the command was answered.
    /// `None`: not answered (or not known); `Some(None)`: answered, and the outcome was handed
    /// to its waiting caller and released; `Some(Some(reply))`: answered, kept.
    pub(crate) fn outcome(&self, id: &str) -> Option<Option<Reply>> {
        let raw: Option<String> = self.redis(|c| c.get(format!("mc:res:{id}"))).ok().flatten();
        raw.map(|raw| (!raw.contains(RELEASED)).then(|| self.decode(id, &raw)))
    }

    /// Hands an adopted command's answer to the publisher thread.
    pub(crate) fn publish(&self, connector: &str, command_id: &str, stream: StreamRef, reply: Reply) {
        let _ = self.publish_tx.send(Published {
            connector: connector.to_owned(),
            command_id: command_id.to_owned(),
            stream,
            reply,
        });
    }

    fn publisher(self: Arc<Self>, rx: Receiver<Published>) {
        loop {
            let p = match rx.recv_timeout(BEAT) {
                Ok(p) => p,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !self.stop.load(Ordering::SeqCst) => {
                    continue;
                }
                Err(_) => return,
            };
            // Retried while Redis is away: the answer must reach it (the agent was told it is
            // acknowledged only after the hub had it; a lost outcome would be a lost result).
            let mut delay = Duration::from_millis(100);
            loop {
                match self.store_outcome(&p) {
                    Ok(()) => break,
                    Err(e) if !self.stop.load(Ordering::SeqCst) => {
                        tracing::warn!(command = %p.command_id, "cannot store the outcome in Redis (retrying): {e}");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        tracing::error!(command = %p.command_id, "outcome not stored in Redis at shutdown: {e}");
                        break;
                    }
                }
            }
        }
    }

    fn store_outcome(&self, p: &Published) -> Result<(), GatewayError> {
        let (doc, parts_key) = self.encode(&p.command_id, &p.reply)?;
        let text = serde_json::to_string(&doc).map_err(|e| GatewayError::Redis(e.to_string()))?;
        let first: Option<String> = self.redis(|c| {
            redis::cmd("SET")
                .arg(format!("mc:res:{}", p.command_id))
                .arg(&text)
                .arg("NX")
                .arg("PX")
                .arg(ms(RESULT_TTL))
                .query(c)
        })?;
        if first.is_none() {
            // Answered before (by another node, or an expiry met twice): the first answer wins.
            if let Some(key) = parts_key {
                let _ = self.redis(|c| c.del::<_, ()>(key));
            }
        }
        self.redis(|c| c.xdel::<_, _, ()>(stream_key(&p.connector), &[&p.stream.entry]))?;
        let done = NodeMsg::Done { id: p.command_id.clone() };
        if p.stream.origin == self.node_id {
            self.dispatch(&p.command_id);
        } else if let Err(e) = self.send(&p.stream.origin, &done) {
            tracing::warn!(command = %p.command_id, "cannot tell the origin node: {e}");
        }
        Ok(())
    }

    /// The outcome as stored: `{ok: {...}}` or `{error: {...}}`; a buffered outcome's stream goes
    /// in parts under a key of its own (returned).
    fn encode(&self, id: &str, reply: &Reply) -> Result<(Value, Option<String>), GatewayError> {
        let outcome = match reply {
            Err(e) => return Ok((json!({ "error": e.to_json() }), None)),
            Ok(outcome) => outcome,
        };
        let mut doc = json!({
            "commandId": outcome.command_id,
            "columns": outcome.columns,
            "rowCount": outcome.row_count,
            "durationMs": outcome.duration_ms,
            "roundTripMs": outcome.round_trip.as_secs_f64() * 1000.0,
        });
        let mut parts_key = None;
        match &outcome.buffered {
            Some(b) => {
                let key = format!("mc:res:{id}:{}", uuid::Uuid::new_v4().simple());
                // A connection of its own: a large result must not hold up the node's others.
                let mut conn = self.client.get_connection_with_timeout(Duration::from_secs(5))?;
                let mut parts = 0u64;
                b.spool
                    .for_each_block(PART, |part| {
                        conn.rpush::<_, _, ()>(&key, part).map_err(std::io::Error::other)?;
                        parts += 1;
                        Ok(())
                    })
                    .map_err(|e| GatewayError::Redis(format!("storing a buffered result: {e}")))?;
                conn.pexpire::<_, ()>(&key, ms(RESULT_TTL) as i64)?;
                doc["buffered"] = json!({
                    "bufferKey": b.buffer_key,
                    "chunkCount": b.chunk_count,
                    "byteCount": b.byte_count,
                    "sha256": b.sha256,
                    "parts": key,
                    "partCount": parts,
                });
                parts_key = Some(key);
            }
            None => doc["rows"] = serde_json::to_value(&outcome.rows).unwrap_or_default(),
        }
        Ok((json!({ "ok": doc }), parts_key))
    }

    fn decode(&self, id: &str, raw: &str) -> Reply {
        let broken = |why: String| QueryError::Integrity(format!("{id}: stored outcome: {why}"));
        let doc: Value = serde_json::from_str(raw).map_err(|e| broken(e.to_string()))?;
        if let Some(e) = doc.get("error") {
            let code =
                serde_json::from_value::<ErrorCode>(e["code"].clone()).unwrap_or(ErrorCode::InternalError);
            let mut body = ErrorBody::new(code, e["message"].as_str().unwrap_or_default());
            body.retryable = e["retryable"].as_bool().unwrap_or(body.retryable);
            return Err(QueryError::Remote(body));
        }
        let ok = &doc["ok"];
        let columns: Vec<ColumnMeta> =
            serde_json::from_value(ok["columns"].clone()).map_err(|e| broken(e.to_string()))?;
        let mut outcome = QueryOutcome {
            command_id: ok["commandId"].as_str().unwrap_or(id).to_owned(),
            columns,
            rows: Vec::new(),
            row_count: ok["rowCount"].as_u64().unwrap_or(0),
            duration_ms: ok["durationMs"].as_u64().unwrap_or(0),
            round_trip: Duration::from_secs_f64(ok["roundTripMs"].as_f64().unwrap_or(0.0).max(0.0) / 1000.0),
            buffered: None,
        };
        match ok.get("buffered").filter(|b| !b.is_null()) {
            None => {
                outcome.rows =
                    serde_json::from_value(ok["rows"].clone()).map_err(|e| broken(e.to_string()))?;
            }
            Some(b) => {
                let key = b["parts"].as_str().unwrap_or_default();
                let byte_count = b["byteCount"].as_u64().unwrap_or(0);
                let sha256 = b["sha256"].as_str().unwrap_or_default();
                let buffer_key = b["bufferKey"].as_str().unwrap_or_default();
                let mut writer = SpoolWriter::new(&self.spool_dir, buffer_key, byte_count)?;
                let mut conn = self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .map_err(|e| broken(e.to_string()))?;
                let count: u64 = conn.llen(key).map_err(|e| broken(e.to_string()))?;
                if count != b["partCount"].as_u64().unwrap_or(0) {
                    return Err(broken(format!("{count} parts stored, {} written", b["partCount"])));
                }
                // One part at a time: the memory is a part, whatever the result's size.
                for i in 0..count {
                    let part: Vec<u8> = conn.lindex(key, i as isize).map_err(|e| broken(e.to_string()))?;
                    writer.write(&part)?;
                }
                let (_, spool) = writer.finish(byte_count, sha256)?;
                outcome.buffered = Some(BufferedInfo {
                    buffer_key: buffer_key.to_owned(),
                    chunk_count: b["chunkCount"].as_u64().unwrap_or(0) as u32,
                    byte_count,
                    sha256: sha256.to_owned(),
                    raw: Vec::new(),
                    spool,
                });
            }
        }
        Ok(outcome)
    }

    /// Hands the stored outcome of `id` to this node's waiting callers (on a thread of its own:
    /// a buffered outcome is read from Redis part by part).
    /// Once a caller took it, the outcome is released (§7.2: the buffer goes once the cloud has
    /// the result): its parts are deleted and only the fact that it was answered stays, as a
    /// single node keeps no outcome it handed to its caller.
    fn dispatch(&self, id: &str) {
        let Some(list) = self.waiters.lock().unwrap().remove(id) else { return };
        let reply = match self.outcome(id) {
            Some(Some(reply)) => reply,
            Some(None) => return, // Another caller on this node took it already.
            None => {
                tracing::warn!(command = id, "told of an outcome that is not in Redis");
                return;
            }
        };
        let mut taken = false;
        for (tx, _, takes) in list {
            taken |= tx.send(reply.clone()).is_ok() && takes;
        }
        if taken {
            self.release_outcome(id, &reply);
        }
    }

    fn release_outcome(&self, id: &str, reply: &Reply) {
        let parts = reply.as_ref().ok().and_then(|o| o.buffered.as_ref()).map(|_| ());
        let result = self.redis(|c| {
            let raw: Option<String> = c.get(format!("mc:res:{id}"))?;
            let mut pipe = redis::pipe();
            if let (Some(()), Some(raw)) = (parts, raw) {
                let key = serde_json::from_str::<Value>(&raw)
                    .ok()
                    .and_then(|d| d["ok"]["buffered"]["parts"].as_str().map(str::to_owned));
                if let Some(key) = key {
                    pipe.del(key).ignore();
                }
            }
            pipe.cmd("SET")
                .arg(format!("mc:res:{id}"))
                .arg(format!("{{\"{RELEASED}\":true}}"))
                .arg("KEEPTTL")
                .ignore();
            pipe.query::<()>(c)
        });
        if let Err(e) = result {
            tracing::warn!(command = id, "cannot release the outcome in Redis (it expires in 24 h): {e}");
        }
    }

    // -- threads ----------------------------------------------------------------------------

    fn subscriber(self: Arc<Self>, mut conn: redis::Connection, hub: Weak<Hub>) {
        let mut pubsub = conn.as_pubsub();
        if let Err(e) = pubsub.subscribe(&[node_channel(&self.node_id), BROADCAST.to_owned()]) {
            tracing::error!("cluster: cannot subscribe: {e}");
            return;
        }
        while !self.stop.load(Ordering::SeqCst) {
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => continue,
                Err(e) => {
                    tracing::error!("cluster: subscription lost: {e}");
                    return;
                }
            };
            let Ok(text) = msg.get_payload::<String>() else { continue };
            let Ok(node_msg) = serde_json::from_str::<NodeMsg>(&text) else {
                tracing::warn!("cluster: undecodable node message ignored");
                continue;
            };
            let Some(hub) = hub.upgrade() else { return };
            self.handle(&hub, node_msg);
        }
    }

    fn handle(self: &Arc<Self>, hub: &Arc<Hub>, msg: NodeMsg) {
        match msg {
            NodeMsg::Deliver { connector } => hub.adopt(&connector),
            NodeMsg::Probe { connector, conn, reply } => {
                let Some(rx) = hub.probe_session(&connector, &conn) else { return };
                let (me, wait) = (self.clone(), hub.config.takeover_probe);
                let _ = crate::spawn_named("gw-cluster-probe".into(), move || {
                    if rx.recv_timeout(wait).is_ok() {
                        let _ = me.redis(|c| {
                            redis::pipe()
                                .lpush(&reply, "alive")
                                .ignore()
                                .pexpire(&reply, 10_000)
                                .ignore()
                                .query::<()>(c)
                        });
                    }
                });
            }
            NodeMsg::Replace { connector, conn, reason } => {
                hub.replaced_elsewhere(&connector, &conn, &reason)
            }
            NodeMsg::Done { id } => {
                let me = self.clone();
                let _ = crate::spawn_named("gw-cluster-fetch".into(), move || me.dispatch(&id));
            }
            NodeMsg::Cancel { id, reason } => {
                if let Err(e) = hub.cancel(&id, reason) {
                    tracing::info!(command = %id, "forwarded cancel not delivered: {e}");
                }
            }
            NodeMsg::Raw { connector, text } => {
                if let Err(e) = hub.send_raw(&connector, text) {
                    tracing::info!(connector, "forwarded frame not delivered: {e}");
                }
            }
            NodeMsg::Decommission { connector, grace_ms } => {
                if let Err(e) = hub.decommission(&connector, grace_ms) {
                    tracing::info!(connector, "forwarded decommission not delivered: {e}");
                }
            }
            NodeMsg::Kick { key } => hub.kick_key(&key),
        }
    }

    fn beat(self: Arc<Self>, hub: Weak<Hub>) {
        let refresh_every =
            (self.registry_ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut last_refresh = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let _ = self.redis(|c| {
                redis::cmd("SET")
                    .arg(format!("mc:node:{}", self.node_id))
                    .arg(std::process::id())
                    .arg("PX")
                    .arg(ms(NODE_TTL))
                    .exec(c)
            });
            let Some(hub) = hub.upgrade() else { return };
            if last_refresh.elapsed() >= refresh_every {
                last_refresh = Instant::now();
                self.refresh(&hub);
            }
            drop(hub);
            std::thread::sleep(BEAT);
        }
    }

    /// Extends this node's registry entries and publishes their connectors' state; a session
    /// whose entry names another session now was taken over elsewhere and is closed.
    fn refresh(&self, hub: &Arc<Hub>) {
        let sessions = hub.registered_sessions();
        if sessions.is_empty() {
            return;
        }
        let script = redis::Script::new(REFRESH);
        let mut pipe = redis::pipe();
        pipe.load_script(&script).ignore();
        for s in &sessions {
            let value = serde_json::to_string(&Holder {
                node: self.node_id.clone(),
                conn: s.conn.clone(),
                inst: s.inst.clone(),
            })
            .unwrap_or_default();
            let mut invocation = script.prepare_invoke();
            invocation.key(conn_key(&s.connector)).arg(value).arg(ms(self.registry_ttl));
            pipe.invoke_script(&invocation);
            pipe.cmd("SET")
                .arg(format!("mc:info:{}", s.connector))
                .arg(s.info.to_string())
                .arg("PX")
                .arg(ms(self.registry_ttl))
                .ignore();
        }
        let answers: Vec<redis::Value> = match self.redis(|c| pipe.query(c)) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cluster: registry refresh failed: {e}");
                return;
            }
        };
        for (s, answer) in sessions.iter().zip(answers) {
            if let redis::Value::BulkString(raw) = answer {
                let holder = serde_json::from_slice::<Holder>(&raw).ok();
                let node = holder.map(|h| h.node).unwrap_or_default();
                hub.replaced_elsewhere(&s.connector, &s.conn, &format!("taken over on node {node}"));
            }
        }
    }

    /// State of connectors held by other nodes: `(holder, info)` per name.
    pub(crate) fn remote_states(&self, names: &[String]) -> Vec<(Option<Holder>, Option<Value>)> {
        if names.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = names
            .iter()
            .flat_map(|n| [conn_key(n), format!("mc:info:{n}"), format!("mc:schema:{n}")])
            .collect();
        let values: Vec<Option<String>> =
            self.redis(|c| redis::cmd("MGET").arg(&keys).query(c)).unwrap_or_default();
        values
            .chunks(3)
            .map(|triple| {
                let holder = triple.first().cloned().flatten().and_then(|r| serde_json::from_str(&r).ok());
                let mut info: Option<Value> =
                    triple.get(1).cloned().flatten().and_then(|r| serde_json::from_str(&r).ok());
                let schema: Option<Value> =
                    triple.get(2).cloned().flatten().and_then(|r| serde_json::from_str(&r).ok());
                if let (Some(Value::Object(map)), Some(schema)) = (&mut info, schema) {
                    map.insert("schema".into(), schema);
                }
                (holder, info)
            })
            .chain(std::iter::repeat((None, None)))
            .take(names.len())
            .collect()
    }
}

/// A live session of this node, as the registry refresh sees it.
pub(crate) struct LocalSession {
    pub connector: String,
    pub conn: String,
    pub inst: Option<String>,
    /// `{agentVersion, lastHeartbeat, status, activeCommands, tenant}` for other nodes' listings.
    pub info: Value,
}
