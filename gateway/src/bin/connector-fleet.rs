//! `connector-fleet`: a simulated fleet of agents for load tests and benchmarks (issue 14).
//!
//! Opens `--agents N` authenticated WebSocket sessions to a gateway (TLS 1.3, the gateway's CA),
//! sends a `heartbeat` from each every `--heartbeat-secs`, and answers every `command` at once
//! with a one-row inline `execution_result` (the row is `[agent index]`), like an agent whose
//! database answers instantly. With `--data-dir` it first mints the fleet's API keys in the
//! gateway's key store (connectors `<prefix>-0` … `<prefix>-N-1`, tenant `fleet`, or with
//! `--tenants K` agent i in tenant `fleet<i mod K>`); existing ones are rotated. A dropped session is dialled again after a second. Every 5 s it prints
//! one JSON line `{"connected", "commandsAnswered", "failures"}`; it stops after
//! `--duration-secs` (or on SIGINT/SIGTERM being fatal) with the same line as a summary.
//! One thread per simulated agent, each with a small stack and a small WebSocket read buffer,
//! waking only for its heartbeats, a frame, or every few seconds to see whether to stop: the
//! tool measures the gateway, not itself.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use protocol::schema::WireType;
use protocol::{
    AgentStatus, ExecutionResult, Frame as _, Heartbeat, Inbound, InlineRows, Outbound, ResultPayload,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

#[derive(Debug, Parser)]
#[command(name = "connector-fleet", about = "A simulated fleet of agents against a gateway")]
struct Args {
    /// The gateway's WebSocket URL, e.g. wss://127.0.0.1:8443/ws.
    #[arg(long)]
    url: String,
    /// PEM file of the CA (or self-signed certificate) the gateway's certificate chains to.
    #[arg(long)]
    ca_cert: PathBuf,
    /// Number of simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Seconds between two heartbeats of one agent.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Mint the fleet's keys in this gateway data directory first (and find the admin API for
    /// `--probe-queries` there).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A gateway cluster: mint the fleet's keys in its Redis (redis://HOST:PORT) instead of the
    /// data directory's `gateway.db`.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Connector name prefix.
    #[arg(long, default_value = "fleet")]
    prefix: String,
    /// Spread the agents over this many tenants (`fleet0`, `fleet1`, ...; 1: all in `fleet`).
    /// The gateway checks a key against every key of its tenant, so one tenant of thousands of
    /// keys makes each `auth` slow (docs/BENCHMARKS.md, "Many agents on one gateway node").
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Sessions opened per second while the fleet comes up.
    #[arg(long, default_value_t = 500)]
    ramp_per_sec: u32,
    /// Once every agent is connected, send this many queries one after another through the
    /// gateway's admin API (found in `--data-dir`), each to a random agent, and print their
    /// round trips `{"probes", "errors", "p50Ms", "p99Ms", "maxMs"}` (an error: a query that
    /// was not answered, e.g. to an agent between two sessions).
    #[arg(long, default_value_t = 0)]
    probe_queries: usize,
}

#[derive(Default)]
struct Stats {
    connected: AtomicUsize,
    answered: AtomicU64,
    failures: AtomicU64,
}

impl Stats {
    fn line(&self) -> String {
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "commandsAnswered": self.answered.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
        })
        .to_string()
    }
}

type Ws = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// How often an idle agent thread looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_secs(5);
/// The WebSocket read buffer of a simulated agent (tungstenite's default is 128 KiB, resident).
const READ_BUFFER: usize = 8 * 1024;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = mint_keys(&args)?;
    let tls = Arc::new(client_config(&args.ca_cert)?);
    let (host, port) = host_port(&args.url)?;
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Duration::from_secs_f64(1.0 / f64::from(args.ramp_per_sec.max(1)));
    let mut handles = Vec::with_capacity(keys.len());
    for (index, (name, key)) in keys.into_iter().enumerate() {
        let agent = Agent {
            index,
            name,
            key,
            url: args.url.clone(),
            addr: (host.clone(), port),
            tls: tls.clone(),
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("fleet-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || agent.run())
            .context("spawning an agent thread")?;
        handles.push(handle);
        std::thread::sleep(pause);
    }
    if args.probe_queries > 0 {
        probe(&args, &stats)?;
    }
    let started = Instant::now();
    let end = (args.duration_secs > 0).then(|| started + Duration::from_secs(args.duration_secs));
    loop {
        let next = Instant::now() + Duration::from_secs(5);
        let wake = end.map_or(next, |e| e.min(next));
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        println!("{}", stats.line());
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for handle in handles {
        let _ = handle.join();
    }
    println!("{}", stats.line());
    Ok(())
}

/// Waits until the whole fleet is connected, then times `--probe-queries` queries.
fn probe(args: &Args, stats: &Stats) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.connected.load(Ordering::Relaxed) < args.agents {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} agents connected after 10 minutes",
                stats.connected.load(Ordering::Relaxed),
                args.agents
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = args.data_dir.as_ref().context("--probe-queries needs --data-dir")?;
    let client =
        gateway::AdminClient::from_data_dir(dir)?.context("the gateway has no admin API (--admin-listen)")?;
    let mut times = Vec::with_capacity(args.probe_queries);
    let mut errors = 0u32;
    for _ in 0..args.probe_queries {
        let target = rand::random_range(0..args.agents);
        let body = serde_json::json!({"connector": format!("{}-{target}", args.prefix), "sql": "SELECT 1", "waitMs": 30_000});
        let started = Instant::now();
        match client.call("POST", "/admin/query", Some(&body), Duration::from_secs(40)) {
            Ok((200, _)) => times.push(started.elapsed()),
            // An agent between two sessions (a redial) answers with an error: counted, not timed.
            Ok((status, answer)) => {
                errors += 1;
                eprintln!("probe query to agent {target}: HTTP {status}: {answer}");
            }
            Err(e) => {
                errors += 1;
                eprintln!("probe query to agent {target}: {e}");
            }
        }
    }
    if times.is_empty() {
        bail!("no probe query was answered ({errors} errors)");
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({"probes": times.len(), "errors": errors, "p50Ms": at(0.5), "p99Ms": at(0.99), "maxMs": at(1.0)})
    );
    Ok(())
}

/// The fleet's (name, key) pairs: minted in `--data-dir`, or read from `FLEET_KEYS` lines.
fn mint_keys(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    let store = match (&args.redis, &args.data_dir) {
        (Some(url), _) => gateway::KeyStore::open_redis(url).context("opening the cluster's key store")?,
        (None, Some(dir)) => gateway::KeyStore::open(dir).context("opening the gateway's key store")?,
        (None, None) => bail!(
            "--data-dir or --redis is required (the gateway data directory or the cluster's Redis the fleet's keys go into)"
        ),
    };
    (0..args.agents)
        .map(|i| {
            let name = format!("{}-{i}", args.prefix);
            let tenant = match args.tenants {
                0 | 1 => "fleet".to_owned(),
                k => format!("fleet{}", i % k),
            };
            let key = match store.create(&tenant, &name) {
                Ok((_, key)) => key,
                Err(_) => store.rotate(&name).context("rotating an existing fleet key")?.1,
            };
            Ok((name, key.expose().to_owned()))
        })
        .collect()
}

fn client_config(ca: &PathBuf) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert.context("a certificate in the CA file")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.strip_prefix("wss://").context("the URL must start with wss://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) =
        authority.rsplit_once(':').map_or((authority, 443), |(h, p)| (h, p.parse().unwrap_or(443)));
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

struct Agent {
    index: usize,
    name: String,
    key: String,
    url: String,
    addr: (String, u16),
    tls: Arc<ClientConfig>,
    heartbeat: Duration,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Agent {
    fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            match self.session() {
                Ok(()) => {}
                Err(_) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// One session: dial, authenticate, then heartbeats and answers until it ends.
    fn session(&self) -> anyhow::Result<()> {
        let tcp = TcpStream::connect((self.addr.0.as_str(), self.addr.1))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from(self.addr.0.clone())?;
        let stream = StreamOwned::new(ClientConnection::new(self.tls.clone(), name)?, tcp);
        let (mut ws, _) = tungstenite::client::client_with_config(
            self.url.as_str(),
            stream,
            Some(protocol::wsio::ws_config().read_buffer_size(READ_BUFFER)),
        )?;
        let auth = serde_json::json!({
            "type": "auth", "apiKey": self.key, "connectorName": self.name,
            "agentVersion": "fleet-0", "protocolVersion": protocol::PROTOCOL_VERSION,
            "instanceId": format!("fleet-{}", self.index),
        });
        ws.send(Message::text(auth.to_string()))?;
        match read_frame(&mut ws)? {
            Some(Inbound::Connected(_)) => {}
            other => bail!("expected connected, got {other:?}"),
        }
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        let result = self.serve(&mut ws);
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        let _ = ws.close(None);
        result
    }

    fn serve(&self, ws: &mut Ws) -> anyhow::Result<()> {
        let mut next_beat = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if Instant::now() >= next_beat {
                let beat = Outbound::Heartbeat(Heartbeat {
                    timestamp: protocol::now_rfc3339(),
                    status: AgentStatus::Ready,
                    active_commands: 0,
                });
                ws.send(Message::text(beat.encode()))?;
                next_beat = Instant::now() + self.heartbeat;
            }
            // Wake for the next heartbeat or, at the latest, to see `stop`.
            let wait = next_beat
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), STOP_CHECK);
            ws.get_ref().sock.set_read_timeout(Some(wait))?;
            match read_frame(ws) {
                Ok(Some(Inbound::Command(command))) => {
                    let answer = Outbound::ExecutionResult(ExecutionResult {
                        command_id: command.command_id,
                        execution_id: command.execution_id,
                        activity_id: command.activity_id,
                        result: ResultPayload::Inline {
                            columns: vec![protocol::ColumnMeta {
                                name: "agent".into(),
                                wire_type: WireType::Integer,
                                db_type: "INTEGER".into(),
                                nullable: Some(false),
                            }],
                            rows: InlineRows::from_json(format!("[[{}]]", self.index))?,
                        },
                        row_count: 1,
                        duration_ms: 0,
                    });
                    ws.send(Message::text(answer.encode()))?;
                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the gateway closed the session"),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The next text frame decoded (pings are answered on the way); `None` once closed.
fn read_frame(ws: &mut Ws) -> anyhow::Result<Option<Inbound>> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Ok(Some(Inbound::decode(text.as_str())?)),
            Ok(Message::Ping(_) | Message::Pong(_)) => ws.flush()?,
            Ok(Message::Close(_)) => return Ok(None),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Io(io)) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    )
}
