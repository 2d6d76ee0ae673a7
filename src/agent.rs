//! Wires the agent's threads together and runs it until shutdown.
//!
//! ```text
//!             ┌────────────── SupMsg (unbounded inbox) ───────────────┐
//!             v                                                       │
//!  link ──> supervisor ──Job (bounded)──> worker-0..N ──Chunk (bounded)──> uploader ──HTTPS──> cloud
//!   ^  ^          │                          │   ^                             │
//!   │  └─LinkMsg──┘ (send, then wake)        │   └──────ChunkReply─────────────┘
//!   │                                        │
//!   └──────────LinkMsg (results)─────────────┘ via the supervisor
//!  heartbeat ──LinkMsg──> link
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::Sender;

use crate::config::AgentConfig;
use crate::heartbeat::HeartbeatHandle;
use crate::link::{Link, LinkSettings};
use crate::supervisor::{StatusBoard, SupMsg, Supervisor, SupervisorSettings};

/// Jobs that may wait for a worker per worker thread: the supervisor hands a query to the
/// workers only when one is free (the rest wait in the durable queue), so this only leaves
/// room for discovery and recovery jobs beside them.
const JOBS_PER_WORKER: usize = 2;
/// Chunks that may wait for the uploader: a few MB of memory at most.
const CHUNK_QUEUE: usize = 2;

/// A running agent: its threads and the supervisor's inbox.
#[derive(Debug)]
pub struct Agent {
    inbox: Sender<SupMsg>,
    supervisor: std::thread::JoinHandle<String>,
    link: Link,
    heartbeat: HeartbeatHandle,
    workers: Vec<std::thread::JoinHandle<()>>,
    uploader: std::thread::JoinHandle<()>,
    control: Option<crate::control::ControlServer>,
    /// Feeds the supervisor's events to the notifier (spec §8.3); ends with the supervisor.
    notify: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Opens the databases, checks the API key, and starts every thread. With `control`, the
    /// local control channel listens on that socket path (setup requests on it are refused:
    /// see [`Agent::start_from`]).
    pub fn start(config: &AgentConfig, control: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Self::start_with(config, control, None)
    }

    /// Like [`Agent::start`] for the configuration loaded from `config_path`: setup requests
    /// on the control channel edit that file.
    pub fn start_from(
        config_path: &std::path::Path,
        config: &AgentConfig,
        control: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Self::start_with(config, control, Some(config_path.to_owned()))
    }

    fn start_with(
        config: &AgentConfig,
        control: Option<&std::path::Path>,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        // One vault key derivation for the whole start: the key check here, the database and
        // proxy passwords, the link's first `auth` (the supervisor drops the hold on the first
        // `connected`, or at its first housekeeping).
        let vault_hold = config.hold_vault();
        // Fail before dialling if the key is missing or malformed.
        drop(config.load_api_key()?);
        let tls = crate::tls::for_agent(config)?;
        // The route to the cloud and the upload hosts: one proxy setting for both.
        let proxy = crate::proxy::ProxySettings::from_config(config)?;
        if let Some(p) = proxy.proxy() {
            tracing::info!(proxy = %p.url(), user = p.user().unwrap_or("-"), "outbound connections go through the proxy (NO_PROXY hosts excepted)");
        }
        // The durable queue: the link needs its instance id, the supervisor its commands.
        let queue_path = config.queue_path();
        let store = crate::store::ResultStore::open(&queue_path, config.store_config())
            .with_context(|| format!("opening the offline queue {}", queue_path.display()))?;
        // A database that cannot be opened does not stop the agent: the others are served, and
        // its commands are answered DATABASE_UNAVAILABLE while the supervisor retries it.
        // (Network databases open without connecting; this is a missing SQLite file, a
        // password not in the vault, a bad CA file...)
        let mut databases = Vec::new();
        let mut unopened = Vec::new();
        for (i, c) in config.connections.iter().enumerate() {
            let spec = config.resolved_connection_spec(c);
            match spec
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|s| drivers::Database::open(s).map_err(|e| e.to_string()))
            {
                Ok(db) => databases.push(db),
                Err(reason) => {
                    tracing::error!(
                        connection = %c.name,
                        %reason,
                        "cannot open this database; the agent starts without it and retries it every 30 s"
                    );
                    unopened.push(crate::supervisor::Unopened {
                        name: c.name.clone(),
                        spec: spec.ok(),
                        reason,
                        first: i == 0,
                    });
                }
            }
        }
        if databases.is_empty() && unopened.is_empty() {
            tracing::warn!(
                "no database connections configured; every command will fail with UNKNOWN_CONNECTION"
            );
        }

        // Unbounded: every role reports here and must never block on the supervisor; the
        // volume is bounded by the bounded job queue and the link's frame rate.
        let (inbox, inbox_rx) = crossbeam_channel::unbounded();
        let board = Arc::new(StatusBoard::default());
        // First, so a second agent on the same configuration stops here, before dialling.
        let control = match control {
            Some(path) => Some(
                crate::control::ControlServer::start(path, inbox.clone(), config_path.clone())
                    .with_context(|| format!("control socket {}", path.display()))?,
            ),
            None => None,
        };

        let key_config = config.clone();
        let link = Link::start(
            LinkSettings {
                url: config.cloud_url.clone(),
                fallback_urls: config.cloud_url_fallbacks.clone(),
                connector_name: config.connector_name.clone(),
                proxy: proxy.clone(),
                tls: tls.clone(),
                reconnect_max: Duration::from_millis(config.reconnect_max_ms),
                heartbeat_interval: config.heartbeat_interval(),
                keepalive_interval: config.keepalive_interval(),
                instance_id: Some(store.instance_id().to_owned()),
                max_in_flight: Some(config.workers.saturating_add(config.max_queued_commands)),
            },
            Box::new(move || key_config.load_api_key().map_err(|e| e.to_string())),
            inbox.clone(),
        )?;

        let http = crate::https::agent(tls, proxy, Duration::from_secs(60))?;
        // The current session's upload target: set by the supervisor, read by workers and uploader.
        let upload_slot = Arc::new(crate::uploader::UploadSlot::new());
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded(CHUNK_QUEUE);
        let uploader = crate::uploader::start(http, upload_slot.clone(), chunk_rx)?;
        let (job_tx, job_rx) = crossbeam_channel::bounded(config.workers as usize * JOBS_PER_WORKER);
        let workers =
            crate::worker::start(config.workers, job_rx, chunk_tx, upload_slot.clone(), inbox.clone())?;
        let heartbeat = HeartbeatHandle::start(config.heartbeat_interval(), board.clone(), link.sender())?;

        let supervisor = Supervisor::new(
            inbox_rx,
            link.sender(),
            job_tx,
            board,
            store,
            SupervisorSettings {
                databases,
                policies: config
                    .schema_policy
                    .iter()
                    .map(|(name, policy)| (name.clone(), policy.to_gate()))
                    .collect(),
                limits: config.command_limits(),
                unopened,
                capacity: config.workers as usize,
                max_waiting: config.max_queued_commands as usize,
            },
        )
        .with_upload_slot(upload_slot)
        .with_start_vault(vault_hold)
        .with_identity(crate::supervisor::Identity {
            connector_name: config.connector_name.clone(),
            cloud_url: config.cloud_url.clone(),
            pool_max: config.connections.iter().map(|c| (c.name.clone(), c.pool_max)).collect(),
            config_path: config_path.clone(),
            connections: config.connections.clone(),
        })
        .with_upload_policy(
            config
                .upload_policy()
                .map_err(|reason| anyhow::anyhow!("invalid config field `uploadHosts`: {reason}"))?,
        );
        let supervisor = crate::spawn_named("supervisor", move || supervisor.run())?;
        let notify = start_notifications(config, &inbox);
        Ok(Self { inbox, supervisor, link, heartbeat, workers, uploader, control, notify })
    }

    /// A sender for asking the supervisor to stop (Ctrl-C, service stop).
    pub fn inbox(&self) -> Sender<SupMsg> {
        self.inbox.clone()
    }

    /// Waits for the supervisor to finish (a shutdown was requested), then stops and joins
    /// every other thread. Returns the shutdown reason.
    pub fn wait(self) -> String {
        let Self { inbox, supervisor, link, heartbeat, workers, uploader, control, notify } = self;
        drop(inbox);
        let reason = supervisor.join().unwrap_or_else(|_| "supervisor panicked".into());
        drop(control);
        // The supervisor dropped its subscribers: the feed sees its channel close.
        if let Some(notify) = notify {
            crate::join_named(notify);
        }
        // The supervisor owned the job sender: workers see the queue close and end, which
        // closes the chunk queue and ends the uploader.
        for worker in workers {
            crate::join_named(worker);
        }
        crate::join_named(uploader);
        drop(heartbeat);
        link.stop();
        reason
    }
}

/// Subscribes a `notify-feed` thread to the supervisor's events and hands each to the
/// notifier (`notify::spawn`). Notifications are best effort: if they cannot start, the agent
/// runs without them (logged).
fn start_notifications(config: &AgentConfig, inbox: &Sender<SupMsg>) -> Option<std::thread::JoinHandle<()>> {
    let sender = match crate::notify::spawn(config) {
        Ok(sender) => sender,
        Err(e) => {
            tracing::warn!(error = %e, "notifications are off");
            return None;
        }
    };
    let (reply, replies) = crossbeam_channel::bounded(1);
    if inbox.send(SupMsg::Subscribe { reply }).is_err() {
        sender.shutdown();
        return None;
    }
    let thread = crate::spawn_named("notify-feed", move || {
        if let Ok(Some(events)) = replies.recv() {
            for event in events {
                sender.send(event);
            }
        }
        sender.shutdown();
    });
    match thread {
        Ok(thread) => Some(thread),
        Err(e) => {
            tracing::warn!(error = %e, "notifications are off");
            None
        }
    }
}
