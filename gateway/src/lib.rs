//! The reference gateway: the cloud side of the Mini Connector protocol, real enough to run the
//! agent against on loopback.
//!
//! One HTTPS port (TLS 1.3 only) serves the agents' WebSocket (`GET /ws`) and the chunk upload
//! endpoint (`POST /upload`), and the HTTPS long-poll transport (`/lp/...`, `longpoll.rs`) for
//! agents behind a proxy that refuses the WebSocket upgrade: the same session code over HTTP
//! requests (docs/PROTOCOL.md, "HTTPS long-poll transport"); an optional admin API (plain HTTP on loopback, bearer token) lets
//! the `connector-gateway` CLI run queries, list connectors and revoke keys in a running
//! gateway. API keys live hashed (salted SHA-256) in `<data-dir>/gateway.db`; keys the CLI
//! creates, rotates or revokes in the file while the gateway runs count at the next `auth` (no
//! cache; `keys::private_db_files` tells why the file's mode is only ever set by path).
//!
//! Threads, all named: an accept thread per listener, one thread per connection, and one
//! `wsio-reactor` thread polling every WebSocket session's socket. A session thread sleeps in
//! [`protocol::wsio::PolledWebSocket::wait`] until the reactor sees its socket ready or another
//! thread, having put a frame on its channel, wakes it ("send, then wake"), so a command is
//! written at once and an idle session costs no CPU and one file descriptor (its socket).
//!
//! Limits (see [`GatewayConfig`]): chunks only for commands of that connector not yet
//! answered, signed with the key of its current session; buffered results capped,
//! decompressed, per result, per connector and in total; at most `max_connections`
//! connections; deadlines for the TLS handshake, request heads and bodies. `gateway.db`, its
//! WAL, `admin.json` and the generated key are owner-only (0600) in directories the gateway
//! creates 0700.
//!
//! Queries ([`Gateway::query`], [`Gateway::submit`]) are commands with a TTL, persisted in
//! `gateway.db` before they are accepted: a connector that is offline gets them when it
//! connects, also after a gateway restart; a command written to a session that then drops (or
//! is taken over) goes back into the queue and is delivered again, with the same command id
//! and idempotency key, until it is answered or its TTL runs out (`COMMAND_EXPIRED`). The first
//! answer of a command wins; later ones are dropped and acknowledged. At most
//! `min(auth.maxInFlight or 32, max_in_flight)` commands per connector are unanswered on the
//! wire; the rest wait. A caller that stops waiting does not end the command: it stays pending
//! and its answer is kept ([`Gateway::command_status`]); a query with the idempotency key of a
//! pending command of the same connector joins that command instead of sending another.
//! Results live in memory; the chunks of results still being uploaded are kept in `gateway.db`
//! too, so an upload goes on across a gateway restart.
//!
//! **Cluster mode** ([`GatewayConfig::redis_url`], `serve --redis URL --node-id ID`): several
//! nodes share one Redis for the connection registry (`DUPLICATE_CONNECTION` and revocation hold
//! across nodes), the API keys, each connector's command stream (a command taken on any node
//! reaches the agent on the node holding it, and outlives that node) and the outcomes (24 h,
//! served by any node); see `cluster.rs`. Without it the gateway is the single node above.
//!
//! [`Gateway::shutdown`] (SIGTERM on `serve`) tells agents `shutdown {mode: "restart"}` and
//! waits for running answers; [`Gateway::decommission`] is the only way to tell an agent to
//! exit.
//!
//! ```
//! use gateway::{Gateway, GatewayConfig};
//! let dir = std::env::temp_dir().join(format!("gw-doc-{}", std::process::id()));
//! let mut config = GatewayConfig::new(&dir);
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let gateway = Gateway::start(config).unwrap();
//! let (_id, key) = gateway.keys().create("acme", "Warehouse").unwrap();
//! println!("agent: cloudUrl={} caCertPath={} key={}", gateway.ws_url(), gateway.ca_cert_path().display(), key.masked());
//! gateway.shutdown();
//! # std::fs::remove_dir_all(dir).ok();
//! ```

mod admin;
mod cluster;
mod error;
mod http;
mod hub;
mod keys;
mod longpoll;
mod os;
mod query;
mod redis_keys;
mod server;
mod session;
mod spool;
mod store;
mod tls;
mod updates;
mod upload;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::{Inbound, SchemaRequest, WS_PATH};

pub use error::GatewayError;
pub use http::AdminBody;
pub use hub::{CommandStatus, ConnectorInfo, GatewayEvent, PendingQuery};
pub use keys::{KeyInfo, KeyRecord, KeyState, KeyStore, ROTATION_GRACE};
pub use query::{BufferedInfo, QueryError, QueryOutcome, QueryRequest};
pub use spool::Spool;

/// How long [`Gateway::shutdown`] waits for answers beyond the grace period it announced (at
/// most the grace period again).
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

/// Gateway settings. [`GatewayConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Holds `gateway.db`, `tls/` and `admin.json`.
    pub data_dir: PathBuf,
    /// HTTPS listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Admin API listen address (plain HTTP: keep it on loopback); `None` = no admin API.
    pub admin_listen: Option<SocketAddr>,
    /// Admin bearer token; `None` = generate a random one.
    pub admin_token: Option<String>,
    /// PEM certificate chain and key; `None` = self-signed, generated into `<data-dir>/tls/`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Extra DNS names or IP addresses for the self-signed certificate (`--tls-name`). It
    /// always covers `localhost`, `127.0.0.1`, `::1`, the listen address (unless unspecified)
    /// and the host of `public_url`.
    pub tls_names: Vec<String>,
    /// The `cloudUrl` agents are told to use (`wss://host[:port]/ws`), when they reach the
    /// gateway through another name or address than the listen address (DNS, NAT, a relay);
    /// `None` = `wss://<listen address>/ws`.
    pub public_url: Option<String>,
    /// Largest uncompressed chunk agents should upload (`connected.upload.maxChunkBytes`).
    pub max_chunk_bytes: u64,
    /// Results up to this size travel inline (`connected.upload.maxInlineBytes`).
    pub max_inline_bytes: u64,
    /// A session with no frame for this long is closed (3 heartbeat intervals).
    pub session_idle_timeout: Duration,
    /// TTL of a command that does not name one (offline queue).
    pub default_command_ttl: Duration,
    /// Time an agent has to send `auth` after the WebSocket opens.
    pub auth_timeout: Duration,
    /// How long an unacknowledged upload buffer is kept.
    pub buffer_ttl: Duration,
    /// The upload URL handed out in `connected`; `None` = `https://<Host the agent dialed>/upload`
    /// (the same listener). Set it when uploads go through another name (a load balancer).
    pub upload_url: Option<String>,
    /// Largest reassembled (decompressed) result kept for one command.
    pub max_buffer_bytes: u64,
    /// Most decompressed bytes buffered for one connector (all its results together, across
    /// its sessions).
    pub max_connection_buffer_bytes: u64,
    /// Most decompressed bytes buffered for all connections together.
    pub max_total_buffer_bytes: u64,
    /// Most connections served at once on the HTTPS port (WebSocket sessions, uploads and
    /// handshakes alike); one more is closed at once, before TLS.
    pub max_connections: usize,
    /// Time a client has for the TLS handshake, from the accept.
    pub handshake_timeout: Duration,
    /// Time a client has to send a whole request head, from its first byte (or from the end of
    /// the handshake for the first request).
    pub header_timeout: Duration,
    /// Time a client has to send a whole request body once its head is in.
    pub body_timeout: Duration,
    /// When `auth` arrives for a connector whose session is still registered and comes from
    /// another agent instance, the old session is pinged; if nothing comes back within this
    /// time it is replaced, else the new one gets `DUPLICATE_CONNECTION`.
    pub takeover_probe: Duration,
    /// Most commands written to a connector's session and not answered yet (the agent's
    /// `auth.maxInFlight`, 32 when it sends none, lowers it further); the rest wait in the queue.
    pub max_in_flight: usize,
    /// Accept an agent's offer of message compression (`auth.compression`, `"deflate"`):
    /// frames of 8 KiB or more then travel deflated both ways. `false` plays a gateway that
    /// predates it.
    pub compression: bool,
    /// The chunk encodings this gateway grants, best first: each session's upload grant names
    /// the first of these the agent offered in `auth.chunkEncodings`
    /// ([`protocol::ContentEncoding::pick`]). Empty plays a gateway that predates the grant:
    /// it names none and the agent sends zlib. The upload endpoint takes every encoding it
    /// knows either way.
    pub chunk_encodings: Vec<protocol::ContentEncoding>,
    /// A session this side wrote nothing to for this long gets a WebSocket ping, so
    /// middleboxes that cut idle connections see traffic even from agents without keepalive.
    pub keepalive_interval: Duration,
    /// `gracePeriod` of the `shutdown` frame sent at [`Gateway::shutdown`] and by
    /// decommission; the gateway waits that long plus 2 s for answers of running commands.
    pub shutdown_grace: Duration,
    /// `GET /updates/<file>` serves the files of this directory (signed update manifest,
    /// binaries, signatures: docs/UPDATES.md); `None` = no update route (404).
    pub updates_dir: Option<PathBuf>,
    /// Cluster mode: `redis://host:port[/db]` of the Redis the nodes share (registry, keys,
    /// command streams, outcomes: `cluster.rs`); `None` = a single node on `gateway.db`.
    pub redis_url: Option<String>,
    /// Cluster mode: this node's id (unique among live nodes); `None` = `node-<random>`.
    pub node_id: Option<String>,
}

impl GatewayConfig {
    /// Defaults: `127.0.0.1:0` (a free port: embedders and tests run many gateways side by
    /// side; `connector-gateway serve` defaults to `127.0.0.1:8443`), no admin API, self-signed
    /// certificate, 1 MiB chunks, 256 KiB inline, 90 s idle timeout, 4 h command TTL, 10 s auth
    /// timeout, 24 h buffers; upload buffers capped at 256 MiB per result, 512 MiB per
    /// connector and 1 GiB in total; 512 connections; 10 s for the TLS handshake, 10 s for a
    /// request head, 30 s for a request body; a 2 s takeover probe; 64 commands in flight per
    /// connector; 5 s shutdown grace; compression accepted; chunk encodings `lz4`, then
    /// `deflate`; a keepalive ping after 20 s
    /// without a write.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_listen: None,
            admin_token: None,
            cert: None,
            tls_names: Vec::new(),
            public_url: None,
            max_chunk_bytes: 1024 * 1024,
            max_inline_bytes: 256 * 1024,
            session_idle_timeout: Duration::from_secs(90),
            default_command_ttl: Duration::from_secs(4 * 60 * 60),
            auth_timeout: Duration::from_secs(10),
            buffer_ttl: Duration::from_secs(24 * 60 * 60),
            upload_url: None,
            max_buffer_bytes: 256 << 20,
            max_connection_buffer_bytes: 512 << 20,
            max_total_buffer_bytes: 1 << 30,
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            takeover_probe: Duration::from_millis(2000),
            max_in_flight: 64,
            shutdown_grace: Duration::from_secs(5),
            updates_dir: None,
            redis_url: None,
            node_id: None,
            compression: true,
            chunk_encodings: protocol::ContentEncoding::SUPPORTED.to_vec(),
            keepalive_interval: Duration::from_secs(20),
        }
    }
}

/// Spawns a named thread.
pub(crate) fn spawn_named<F>(name: String, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(f)
}

/// The address to connect to in order to reach a listener (loopback for unspecified).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }
}

/// The host of a `wss://` or `https://` URL, without brackets; `None` when it has none.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A running gateway. [`Gateway::shutdown`] (or drop) tells live agents, closes every
/// connection and joins every thread.
#[derive(Debug)]
pub struct Gateway {
    hub: Arc<hub::Hub>,
    accept_threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin_token: String,
    ca_cert: PathBuf,
    public_url: Option<String>,
    tls_warning: Option<String>,
    admin_file: Option<PathBuf>,
    stopped: bool,
}

impl Gateway {
    /// Opens the key database, loads or creates the certificate, binds the listeners and
    /// starts the accept threads.
    pub fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        // A thread and a descriptor per connection (os.rs).
        if let Some(open_files) = os::raise_open_files() {
            let max = config.max_connections as u64;
            if max.saturating_add(os::RESERVED_FILES) > open_files {
                tracing::warn!(
                    open_files,
                    max_connections = max,
                    "the open-file limit is below max_connections plus {}: accepts fail (EMFILE) before \
                     the connection limit is reached; raise the hard limit (LimitNOFILE=, ulimit -Hn)",
                    os::RESERVED_FILES
                );
            } else {
                tracing::info!(open_files, "open-file limit (one per connection)");
            }
        }
        if let Some(buckets) =
            os::size_futex_hash(config.max_connections + hub::ADMIN_MAX_SERVING + hub::ADMIN_MAX_WAITING)
        {
            tracing::debug!(buckets, "futex hash sized for a thread per connection");
        }
        tls::create_private_dir(&config.data_dir)?;
        let (keys, cluster) = match &config.redis_url {
            Some(url) => {
                let node = config
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
                let cluster = cluster::Cluster::connect(
                    url,
                    &node,
                    config.session_idle_timeout,
                    config.data_dir.clone(),
                )?;
                (KeyStore::open_redis(url)?, Some(Arc::new(cluster)))
            }
            None => (KeyStore::open(&config.data_dir)?, None),
        };
        let store = store::CommandStore::open(&config.data_dir)?;
        let public_host = match &config.public_url {
            Some(url) => match url_host(url).filter(|_| url.starts_with("wss://")) {
                Some(host) => Some(tls::tls_name(&host)?),
                None => {
                    return Err(GatewayError::Invalid(format!(
                        "public URL `{url}`: expected wss://host[:port]/ws"
                    )));
                }
            },
            None => None,
        };
        // The self-signed certificate names what agents dial: the listen address (a specific
        // one; 0.0.0.0 and :: are no name) and the advertised host, plus what the operator adds.
        let mut names = config.tls_names.clone();
        if !config.listen.ip().is_unspecified() {
            names.push(config.listen.ip().to_string());
        }
        names.extend(public_host);
        let files = tls::cert_files(&config.data_dir, config.cert.as_ref(), &names)?;
        let tls_config = tls::server_config(&files)?;
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| GatewayError::listen("agent port", config.listen, &e))?;
        let local_addr = listener.local_addr()?;
        let admin_listener = match config.admin_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).map_err(|e| GatewayError::listen("admin API", addr, &e))?)
            }
            None => None,
        };
        let admin_addr = admin_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let admin_token = config
            .admin_token
            .clone()
            .unwrap_or_else(|| hex::encode(protocol::SecretBytes::random(24).expose()));

        let hook = Arc::new(std::sync::OnceLock::<std::sync::Weak<hub::Hub>>::new());
        let hook2 = hook.clone();
        let keys = keys.with_revoke_hook(Arc::new(move |key_id: &str| {
            if let Some(hub) = hook2.get().and_then(std::sync::Weak::upgrade) {
                // Cluster mode: the key store told every node (this one too) on `mc:all`.
                if hub.cluster.is_none() {
                    hub.kick_key(key_id);
                }
            }
        }));
        let public_url = config.public_url.clone();
        let hub = Arc::new(hub::Hub::new(config, keys, store, cluster.clone())?);
        let _ = hook.set(Arc::downgrade(&hub));
        let cluster_threads = match &cluster {
            Some(cluster) => cluster.start(&hub)?,
            None => Vec::new(),
        };

        let mut gateway = Gateway {
            hub: hub.clone(),
            accept_threads: cluster_threads,
            local_addr,
            admin_addr,
            admin_token: admin_token.clone(),
            ca_cert: files.cert.clone(),
            public_url,
            tls_warning: None,
            admin_file: None,
            stopped: false,
        };
        let advertised = gateway.ws_url();
        if let Some(host) = url_host(&advertised) {
            let missing = tls::uncovered(&files, std::slice::from_ref(&host))?;
            if !missing.is_empty() {
                gateway.tls_warning = Some(format!(
                    "the certificate {} does not cover `{host}`, the host of the advertised URL {advertised}: \
                     agents will refuse it (TLS name check); use a certificate for that name, or \
                     advertise a name it covers with --public-url",
                    files.cert.display()
                ));
            }
        }
        // One poller for every WebSocket session; its thread ends with the last session.
        let reactor = protocol::wsio::Reactor::new()?;
        let (hub2, tls2) = (hub.clone(), tls_config);
        gateway.accept_threads.push(spawn_named("gw-accept".into(), move || {
            server::accept_loop(hub2, listener, tls2, reactor)
        })?);
        if let (Some(listener), Some(addr)) = (admin_listener, admin_addr) {
            let info = Arc::new(admin::AdminInfo {
                token: admin_token.clone(),
                ws_url: gateway.ws_url(),
                ca_cert_path: files.cert.display().to_string(),
            });
            let hub2 = hub.clone();
            gateway
                .accept_threads
                .push(spawn_named("gw-admin".into(), move || admin::accept_loop(hub2, listener, info))?);
            let file = hub.config.data_dir.join("admin.json");
            let doc = serde_json::json!({
                "url": format!("http://{}", reachable(addr)),
                "addr": reachable(addr).to_string(),
                "token": admin_token,
                "pid": std::process::id(),
                "wsUrl": gateway.ws_url(),
                "caCertPath": files.cert.display().to_string(),
            });
            tls::write_private(&file, serde_json::to_string_pretty(&doc).unwrap_or_default().as_bytes())?;
            gateway.admin_file = Some(file);
        }
        // Display values only (no `Some(127.0.0.1:8444)`): "off" without the admin API.
        let admin = admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(ws = %gateway.ws_url(), cert = %files.cert.display(), %admin, "gateway started");
        Ok(gateway)
    }

    /// The HTTPS listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin API's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// What agents put in `cloudUrl`: the configured public URL, else `wss://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => format!("wss://{}{WS_PATH}", reachable(self.local_addr)),
        }
    }

    /// Why agents dialling [`Gateway::ws_url`] will refuse the certificate (it does not cover
    /// that URL's host), when they will. Only an operator's certificate (`cert`) can lack it:
    /// the self-signed one is issued for the listen address and the public URL's host.
    pub fn tls_warning(&self) -> Option<&str> {
        self.tls_warning.as_deref()
    }

    /// The certificate agents must trust (`caCertPath`).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_cert.clone()
    }

    /// The key store; its `revoke` also disconnects the session using the key.
    pub fn keys(&self) -> KeyStore {
        self.hub.keys.clone()
    }

    /// Sends a query and blocks until its result, an error, or `req.wait`.
    pub fn query(&self, connector: &str, req: QueryRequest) -> Result<QueryOutcome, QueryError> {
        self.submit(connector, req)?.wait()
    }

    /// Sends (or queues) a query without waiting; [`PendingQuery::wait`] gets the result. The
    /// command is in `gateway.db` when this returns. Dropping the [`PendingQuery`] leaves the
    /// command queued; its outcome is then kept in memory for [`Gateway::command_status`].
    pub fn submit(&self, connector: &str, req: QueryRequest) -> Result<PendingQuery, QueryError> {
        self.hub.submit(connector, req)
    }

    /// Where a command stands, and its outcome when the gateway still holds it.
    pub fn command_status(&self, command_id: &str) -> CommandStatus {
        match self.hub.command_status(command_id) {
            // The rows of a buffered result, read from its spool.
            CommandStatus::Answered(Some(Ok(mut outcome))) => {
                CommandStatus::Answered(Some(outcome.load_rows().map(|()| outcome)))
            }
            other => other,
        }
    }

    /// Sends `shutdown {mode: "decommission"}` to a connector's live session: the only frame
    /// that tells an agent to exit.
    pub fn decommission(&self, connector: &str) -> Result<(), GatewayError> {
        if !self.hub.is_known(connector) {
            return Err(GatewayError::UnknownConnector(connector.to_owned()));
        }
        self.hub.decommission(connector, self.hub.config.shutdown_grace.as_millis() as u64)
    }

    /// Sends `cancel` for a pending query's execution id (or command id).
    pub fn cancel(&self, execution_id: &str) -> Result<(), GatewayError> {
        self.hub.cancel(execution_id, Some("cancelled by the gateway operator".into()))
    }

    /// Test hook: writes an arbitrary text frame to a live session.
    pub fn send_raw(&self, connector: &str, text: String) -> Result<(), GatewayError> {
        self.hub.send_raw(connector, text)
    }

    /// Asks a live connector for a fresh `schema_discovery`.
    pub fn request_schema(&self, connector: &str) -> Result<(), GatewayError> {
        if !self.hub.is_known(connector) {
            return Err(GatewayError::UnknownConnector(connector.to_owned()));
        }
        self.hub.send_frame(connector, &Inbound::SchemaRequest(SchemaRequest {}))
    }

    /// A channel of every [`GatewayEvent`] from now on.
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<GatewayEvent> {
        self.hub.subscribe()
    }

    /// Every connector with a key or a session.
    pub fn connectors(&self) -> Vec<ConnectorInfo> {
        self.hub.connectors()
    }

    /// Number of result buffers held in memory (uploaded, not yet acknowledged).
    pub fn buffered_results(&self) -> usize {
        self.hub.uploads.lock().unwrap().len()
    }

    /// Decompressed bytes held (or being decompressed) in upload buffers, all connections.
    pub fn buffered_bytes(&self) -> u64 {
        self.hub.uploads.lock().unwrap().total_bytes()
    }

    /// Connections being served on the HTTPS port right now.
    pub fn open_connections(&self) -> usize {
        self.hub.open_connections()
    }

    /// Sends `shutdown {mode: "restart"}` to live agents, waits (at most the grace period
    /// plus 2 s) for the answers of commands they run, closes every connection and joins every
    /// thread. Unanswered commands stay in `gateway.db` for the next start.
    pub fn shutdown(mut self) {
        self.stop("gateway restarting");
    }

    fn stop(&mut self, reason: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.hub.stopping.store(true, Ordering::SeqCst);
        let grace = self.hub.config.shutdown_grace;
        self.hub.shutdown_sessions(reason, grace.as_millis() as u64, protocol::ShutdownMode::Restart);
        let deadline = Instant::now() + grace + SHUTDOWN_SLACK.min(grace);
        loop {
            let (sessions, in_flight) = self.hub.live_counts();
            if sessions == 0 || in_flight == 0 || Instant::now() >= deadline {
                if in_flight > 0 {
                    tracing::info!(
                        in_flight,
                        "stopping with unanswered commands; they are delivered again after the restart"
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hub.close_sessions(reason);
        self.hub.closing_listener.store(true, Ordering::SeqCst);
        self.hub.fail_all(reason);
        if let Some(cluster) = &self.hub.cluster {
            cluster.stop();
        }
        // Unblock the accept loops.
        let _ = TcpStream::connect_timeout(&reachable(self.local_addr), Duration::from_secs(1));
        if let Some(addr) = self.admin_addr {
            let _ = TcpStream::connect_timeout(&reachable(addr), Duration::from_secs(1));
        }
        for handle in self.accept_threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("an accept thread panicked");
            }
        }
        // Idle keep-alive and admin connections are cut now; sessions exchange close frames,
        // so give them a moment, then cut what is left.
        self.hub.shutdown_sockets(false);
        let deadline = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < deadline && self.hub.threads.lock().unwrap().iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hub.shutdown_sockets(true);
        let threads: Vec<_> = self.hub.threads.lock().unwrap().drain(..).collect();
        for handle in threads {
            if handle.join().is_err() {
                tracing::error!("a connection thread panicked");
            }
        }
        if let Some(file) = self.admin_file.take() {
            let _ = std::fs::remove_file(file);
        }
        tracing::info!("gateway stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop("gateway stopped");
    }
}

/// A client for the admin API of a gateway running on this machine, found through
/// `<data-dir>/admin.json`.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
}

impl AdminClient {
    /// A client for this address and token.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        Self { addr, token: token.into() }
    }

    /// Reads `<data_dir>/admin.json`; `Ok(None)` when no gateway has written one.
    pub fn from_data_dir(data_dir: &Path) -> Result<Option<Self>, GatewayError> {
        let path = data_dir.join("admin.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| GatewayError::Admin(format!("{}: {e}", path.display())))?;
        let addr = doc["addr"].as_str().and_then(|a| a.parse().ok());
        let token = doc["token"].as_str();
        match (addr, token) {
            (Some(addr), Some(token)) => Ok(Some(Self::new(addr, token))),
            _ => Err(GatewayError::Admin(format!("{}: missing addr or token", path.display()))),
        }
    }

    /// One call: status and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, serde_json::Value), GatewayError> {
        http::admin_call(self.addr, &self.token, method, path, body, timeout)
    }

    /// One call whose body is read as it arrives (a large result is never held whole): the
    /// status and the body's reader.
    pub fn call_streaming(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, AdminBody), GatewayError> {
        http::admin_open(self.addr, &self.token, method, path, body, timeout)
    }
}

#[cfg(test)]
mod tests {
    fn _assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_cross_threads() {
        _assert_send_sync::<super::Gateway>();
        _assert_send_sync::<super::KeyStore>();
        _assert_send_sync::<super::PendingQuery>();
    }
}
