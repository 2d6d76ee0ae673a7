//! `connector-gateway`: run the reference gateway and administer it.
//!
//! Exit codes (README, docs/CLI.md): 0 success; 1 a runtime failure (the agent or the gateway
//! answered with an error, I/O, a port in use); 2 usage or configuration (bad flags or values);
//! 3 not found or not running (no running gateway, unknown connector or key, no schema yet).
//!
//! `--json` (every command that prints data): one line on stdout, `{"ok": true, "data": …}`
//! or `{"ok": false, "error": {"code", "message"}}`, the same envelope as `mini-connector`'s.
//! Text goes through `protocol::term` (escaped cells, display-width tables).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gateway::{AdminClient, Gateway, GatewayConfig, GatewayError, KeyStore};
use protocol::term::{Table, escape};
use serde_json::{Value, json};

const EXIT_OK: u8 = 0;
/// A runtime failure: the remote side answered with an error, I/O, a port in use.
const EXIT_RUNTIME: u8 = 1;
/// Bad flags or values.
const EXIT_USAGE: u8 = 2;
/// No running gateway, unknown connector or key, nothing reported yet.
const EXIT_NOT_FOUND: u8 = 3;

const EXAMPLES: &str = "\
Examples:
  connector-gateway serve
  connector-gateway keys create --tenant acme --name Warehouse
  connector-gateway keys list
  connector-gateway keys rotate Warehouse
  connector-gateway keys revoke Warehouse
  connector-gateway connectors
  connector-gateway query --connector Warehouse \"SELECT id, name FROM customers WHERE id > ?\" --param 10
  connector-gateway query --connector Warehouse --json \"SELECT count(*) FROM orders\"
  connector-gateway schema --connector Warehouse
  connector-gateway decommission Warehouse

Agents trust the gateway's certificate through their caCertPath setting: `serve` prints its path
(by default <data-dir>/tls/cert.pem, generated on first start for localhost, 127.0.0.1, ::1, the
--listen address, the --public-url host and each --tls-name; issued again, same key, when a later
start asks for a name it lacks). `serve` warns when the certificate does not cover the host of
the cloudUrl it prints.

Stopping `serve` (Ctrl-C, SIGTERM) tells agents the gateway restarts: they reconnect when it is
back, and commands not answered yet are kept in <data-dir>/gateway.db and delivered then. Only
`decommission` tells an agent to exit.

Exit codes: 0 ok; 1 runtime failure (a remote error is printed as CODE: message; I/O; a port
in use); 2 usage or configuration; 3 not found or not running (no running gateway, unknown
connector or key, no schema yet). With --json every command prints one line:
{\"ok\": true, \"data\": …} or {\"ok\": false, \"error\": {\"code\", \"message\"}}.";

/// Reference cloud gateway for Mini Connector agents.
#[derive(Debug, Parser)]
#[command(name = "connector-gateway", version, after_help = EXAMPLES)]
struct Cli {
    /// Directory for gateway.db, tls/ and admin.json.
    #[arg(long, global = true, env = "CONNECTOR_GATEWAY_DIR", default_value = "./gateway-data")]
    data_dir: PathBuf,
    /// Cluster mode: the Redis the gateway nodes share (redis://HOST:PORT[/DB]). `serve` joins
    /// the cluster; `keys` works on the cluster's keys in Redis instead of gateway.db.
    #[arg(long, global = true, env = "CONNECTOR_GATEWAY_REDIS", value_name = "URL")]
    redis: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the gateway until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Run a read-only query on a connector through the running gateway.
    ///
    /// Rows are printed as they arrive (a large result is never held whole): the table's
    /// columns are sized by its first 1,000 rows.
    Query(QueryArgs),
    /// List connectors and their status (running gateway).
    Connectors {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest schema a connector reported (running gateway): tables and columns, or
    /// `--json`.
    Schema {
        /// Connector name.
        #[arg(long)]
        connector: String,
        /// Print JSON: {"ok": true, "data": {"connector", "schemas": [...]}}.
        #[arg(long)]
        json: bool,
        /// Ask the agent for a fresh schema first and wait up to this many seconds for it.
        #[arg(long)]
        refresh: Option<u64>,
    },
    /// Tell a connected agent that its connector is retired: it drains and exits (running
    /// gateway). Stopping the gateway never does that.
    Decommission {
        /// Connector name.
        name: String,
        /// Print JSON: {"ok": true, "data": {"connector"}}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// HTTPS/WSS listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Admin API listen address (plain HTTP; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:8444")]
    admin_listen: SocketAddr,
    /// Run without the admin API.
    #[arg(long, conflicts_with = "admin_listen")]
    no_admin: bool,
    /// PEM certificate chain (with --key); default: self-signed in <data-dir>/tls/.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// A DNS name or IP address agents dial, for the self-signed certificate (repeat for
    /// more). localhost, 127.0.0.1, ::1, the --listen address and the --public-url host are
    /// always in it; a stored certificate lacking a name is issued again with the same key.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// The cloudUrl to give agents (wss://host[:port]/ws) when they reach the gateway under
    /// another name or address than --listen (DNS name, NAT, load balancer).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Largest uncompressed result chunk agents upload.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_chunk_bytes: u64,
    /// Results up to this size travel inline in the WebSocket.
    #[arg(long, default_value_t = 256 * 1024)]
    max_inline_bytes: u64,
    /// Close a session without frames for this long (3 heartbeat intervals).
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// How long a command waits for an offline connector.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    command_ttl: Duration,
    /// Upload URL handed to agents; default https://<host they dialed>/upload. Agents accept
    /// only https to their cloudUrl's host or to a host in their uploadHosts.
    #[arg(long)]
    upload_url: Option<String>,
    /// Publish the signed update files of this directory (manifest.json, its .minisig, the
    /// binaries and theirs) read-only at https://<host>/updates/<file> (docs/UPDATES.md).
    #[arg(long, value_name = "DIR")]
    updates_dir: Option<PathBuf>,
    /// Cluster mode (with --redis): this node's id, unique among the live nodes; default
    /// node-<random>.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Largest decompressed result buffered for one command (e.g. 256MiB).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    max_buffer_bytes: u64,
    /// Most decompressed result bytes buffered for one connector (across its sessions).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    max_connection_buffer_bytes: u64,
    /// Most decompressed result bytes buffered in total.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    max_total_buffer_bytes: u64,
    /// Most connections served at once (sessions and uploads); more are closed at once.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Time a client has for the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Time a client has to send a request head.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Time a client has to send a request body.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// When a second session of a connector authenticates from another agent instance, ping
    /// the first one and take over if it does not answer within this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    takeover_probe_ms: u64,
    /// Most unanswered commands written to one connector at a time (the agent's maxInFlight
    /// may lower it); the rest wait in the queue.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Grace period announced to agents at shutdown and decommission; `serve` waits that long
    /// plus 2 s for answers of running commands before it exits.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Chunk encodings to grant, best first, from those the agent offers (`lz4`: ~2x less CPU
    /// than zlib on both sides, ~1.6x the bytes; `deflate`: zlib, for slow agent uplinks).
    /// Chunks in any known encoding are taken whatever is granted.
    #[arg(long, value_delimiter = ',', default_value = "lz4,deflate", value_parser = parse_encoding)]
    chunk_encodings: Vec<protocol::ContentEncoding>,
}

fn parse_encoding(text: &str) -> Result<protocol::ContentEncoding, String> {
    protocol::ContentEncoding::from_name(text)
        .ok_or_else(|| format!("`{text}` is not a chunk encoding (lz4, deflate)"))
}

/// `1048576`, `512KiB`, `256MiB`, `1GiB` (also `K`, `M`, `G`, `KB`... as powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size like 256MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{text}`: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1u64 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` must be positive and below 16 EiB"))
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create a key for a new connector; prints the plaintext key once.
    Create {
        /// Tenant id (3-32 lower-case letters or digits).
        #[arg(long)]
        tenant: String,
        /// Connector name.
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (masked).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id, or every key of a connector by name; disconnects the agent at once.
    Revoke {
        /// Key id or connector name.
        id_or_name: String,
        /// Print JSON: {"ok": true, "data": {"revoked": [ids]}}.
        #[arg(long)]
        json: bool,
    },
    /// Issue a new key for a connector; its old key keeps working for 24 h.
    Rotate {
        /// Connector name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Connector name.
    #[arg(long)]
    connector: String,
    /// Print the outcome as JSON, one line: {"ok": true, "data": <the admin API's outcome
    /// document>}, copied as it arrives.
    #[arg(long)]
    json: bool,
    /// A bound parameter as JSON (repeat for each placeholder; bare words are strings).
    #[arg(long = "param")]
    params: Vec<String>,
    /// Query timeout enforced by the agent.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Database connection name on the agent.
    #[arg(long)]
    connection: Option<String>,
    /// How long to wait for the result.
    #[arg(long, default_value_t = 30_000)]
    wait_ms: u64,
    /// How long the command may wait for an offline connector.
    #[arg(long)]
    ttl_ms: Option<u64>,
    /// SQL text.
    sql: String,
}

/// A failure: its exit code, its error code (the `--json` envelope's) and the message.
struct Failure {
    exit: u8,
    code: String,
    error: anyhow::Error,
}

impl Failure {
    fn new(exit: u8, code: &str, error: impl Into<anyhow::Error>) -> Self {
        Self { exit, code: code.to_owned(), error: error.into() }
    }

    fn message(exit: u8, code: &str, message: impl std::fmt::Display) -> Self {
        Self::new(exit, code, anyhow::anyhow!("{message}"))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<GatewayError>() {
            Ok(gateway) => gateway.into(),
            Err(e) => {
                let mut failure = e.chain().find_map(|c| c.downcast_ref::<GatewayError>()).map(classify);
                let (exit, code) = failure.take().unwrap_or((EXIT_RUNTIME, "FAILED"));
                Self::new(exit, code, e)
            }
        }
    }
}

/// The exit and error code of a gateway error.
fn classify(e: &GatewayError) -> (u8, &'static str) {
    match e {
        GatewayError::Invalid(_) => (EXIT_USAGE, "INVALID_INPUT"),
        GatewayError::KeyNotFound(_) => (EXIT_NOT_FOUND, "KEY_NOT_FOUND"),
        GatewayError::UnknownConnector(_) => (EXIT_NOT_FOUND, "UNKNOWN_CONNECTOR"),
        GatewayError::KeyConflict(_) => (EXIT_RUNTIME, "KEY_CONFLICT"),
        GatewayError::ConnectorOffline(_) => (EXIT_RUNTIME, "CONNECTOR_OFFLINE"),
        GatewayError::Cert(_) | GatewayError::Tls(_) => (EXIT_USAGE, "CONFIG_INVALID"),
        GatewayError::Admin(_) => (EXIT_RUNTIME, "GATEWAY_ERROR"),
        GatewayError::ShuttingDown => (EXIT_RUNTIME, "SHUTTING_DOWN"),
        GatewayError::Redis(_) => (EXIT_RUNTIME, "REDIS_UNAVAILABLE"),
        _ => (EXIT_RUNTIME, "IO"),
    }
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        let (exit, code) = classify(&e);
        Self::new(exit, code, e)
    }
}

/// Whether `--json` is on the command line (before `--`): read before clap parses, so that a
/// refused command line of a `--json` call is an envelope too.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn json_mode() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// `{"ok": true, "data": data}` on one line of stdout.
fn print_ok(data: &(impl serde::Serialize + ?Sized)) {
    println!("{}", json!({ "ok": true, "data": data }));
}

/// `{"ok": false, "error": {"code", "message"}}` on one line of stdout.
fn print_error(code: &str, message: &str) {
    println!("{}", json!({ "ok": false, "error": { "code": code, "message": message } }));
}

fn main() -> ExitCode {
    let json = std::env::args_os().take_while(|a| a != "--").any(|a| a == "--json");
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let text = e.to_string();
            print_error("USAGE", text.lines().next().unwrap_or_default().trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    // One-shot commands die quietly when their output pipe closes (`... | head`); `serve` keeps
    // SIGPIPE ignored so a closed pipe never kills the gateway.
    if !matches!(cli.command, Cmd::Serve(_)) {
        sigpipe::reset();
    }
    let level = if matches!(cli.command, Cmd::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal, never with NO_COLOR (log files and pipes get plain text).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(protocol::term::stderr_color())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            let message = format!("{:#}", failure.error);
            if json {
                print_error(&failure.code, &message);
            } else {
                eprintln!("error: {}", escape(&message));
            }
            ExitCode::from(failure.exit)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let dir = cli.data_dir.as_path();
    match cli.command {
        Cmd::Serve(args) => serve(dir, cli.redis, *args),
        Cmd::Keys(cmd) => keys(dir, cli.redis.as_deref(), cmd),
        Cmd::Query(args) => query(dir, args),
        Cmd::Connectors { json } => connectors(dir, json),
        Cmd::Schema { connector, refresh, json } => schema(dir, &connector, refresh, json),
        Cmd::Decommission { name, json } => decommission(dir, &name, json),
    }
}

fn serve(dir: &Path, redis: Option<String>, args: ServeArgs) -> Result<(), Failure> {
    if args.node_id.is_some() && redis.is_none() {
        // Checked here: clap's `requires` does not see a global argument given before `serve`.
        return Err(Failure::message(EXIT_USAGE, "USAGE", "--node-id needs --redis (cluster mode)"));
    }
    let mut config = GatewayConfig::new(dir);
    config.redis_url = redis;
    config.node_id = args.node_id;
    config.listen = args.listen;
    config.admin_listen = (!args.no_admin).then_some(args.admin_listen);
    config.cert = args.cert.zip(args.key);
    config.tls_names = args.tls_names;
    let all_interfaces = args.listen.ip().is_unspecified() && args.public_url.is_none();
    config.public_url = args.public_url;
    config.max_chunk_bytes = args.max_chunk_bytes;
    config.max_inline_bytes = args.max_inline_bytes;
    config.session_idle_timeout = args.idle_timeout;
    config.default_command_ttl = args.command_ttl;
    config.upload_url = args.upload_url;
    if let Some(dir) = &args.updates_dir
        && !dir.is_dir()
    {
        let message = format!("--updates-dir {}: not a directory", dir.display());
        return Err(Failure::message(EXIT_USAGE, "CONFIG_INVALID", message));
    }
    config.updates_dir = args.updates_dir;
    config.max_buffer_bytes = args.max_buffer_bytes;
    config.max_connection_buffer_bytes = args.max_connection_buffer_bytes;
    config.max_total_buffer_bytes = args.max_total_buffer_bytes;
    config.max_connections = args.max_connections as usize;
    config.handshake_timeout = args.handshake_timeout;
    config.header_timeout = args.header_timeout;
    config.body_timeout = args.body_timeout;
    config.takeover_probe = Duration::from_millis(args.takeover_probe_ms);
    config.max_in_flight = args.max_in_flight as usize;
    config.shutdown_grace = args.shutdown_grace;
    config.chunk_encodings = args.chunk_encodings;
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .context("cannot install the Ctrl-C handler")?;
    let gateway = Gateway::start(config).context("cannot start the gateway")?;
    println!("connector-gateway listening");
    println!("  agent cloudUrl:  {}", gateway.ws_url());
    println!("  agent caCertPath: {}", gateway.ca_cert_path().display());
    if let Some(addr) = gateway.admin_addr() {
        println!("  admin API:       http://{addr} (token in {})", dir.join("admin.json").display());
    }
    if let Some(warning) = gateway.tls_warning() {
        eprintln!("WARNING: {warning}");
    }
    if all_interfaces {
        eprintln!(
            "note: listening on every interface: agents on other machines dial a name or address \
             of this host; advertise it with --public-url (and --tls-name for more names)"
        );
    }
    println!("Press Ctrl-C to stop.");
    let _ = rx.recv();
    println!("shutting down (agents are told the gateway restarts)...");
    gateway.shutdown();
    Ok(())
}

fn decommission(dir: &Path, name: &str, json: bool) -> Result<(), Failure> {
    let body = json!({ "connector": name });
    let (status, answer) =
        admin(dir)?.call("POST", "/admin/decommission", Some(&body), Duration::from_secs(10))?;
    match status {
        202 => {
            if json {
                print_ok(&json!({ "connector": name }));
            } else {
                println!("connector `{}` told to drain and exit", escape(name));
            }
            Ok(())
        }
        _ => Err(remote_failure(status, &answer)),
    }
}

fn keys(dir: &Path, redis: Option<&str>, cmd: KeysCmd) -> Result<(), Failure> {
    let store = || match redis {
        Some(url) => KeyStore::open_redis(url).context("cannot reach the cluster's Redis"),
        None => {
            KeyStore::open(dir).with_context(|| format!("cannot open {}", dir.join("gateway.db").display()))
        }
    };
    match cmd {
        KeysCmd::Create { tenant, name, json } => {
            let (id, key) = store()?.create(&tenant, &name)?;
            print_new_key(&id, &tenant, &name, key.expose(), json, "created");
        }
        KeysCmd::Rotate { name, json } => {
            let (id, key) = store()?.rotate(&name)?;
            print_new_key(&id, key.tenant_id(), &name, key.expose(), json, "rotated");
            if !json {
                println!("The previous key keeps working for 24 hours, then expires.");
            }
        }
        KeysCmd::List { json } => {
            let list = store()?.list()?;
            if json {
                print_ok(&json!({ "keys": list }));
            } else {
                let mut table = Table::new(&["ID", "TENANT", "NAME", "KEY", "STATE"]).with_rule();
                for k in &list {
                    table.push(&[&k.id, &k.tenant, &k.name, &k.masked_key, &k.state_text()]);
                }
                print!("{table}");
            }
        }
        KeysCmd::Revoke { id_or_name, json } => {
            let ids = match redis {
                // Every node hears of it on the cluster's broadcast channel and kicks its sessions.
                Some(_) => store()?.revoke(&id_or_name)?,
                None => revoke(dir, &id_or_name)?,
            };
            if json {
                print_ok(&json!({ "revoked": ids }));
            } else {
                for id in ids {
                    println!("revoked {}", escape(&id));
                }
            }
        }
    }
    Ok(())
}

fn print_new_key(id: &str, tenant: &str, name: &str, key: &str, json: bool, verb: &str) {
    // Printing the plaintext is the point of this command: it is shown once and never stored.
    if json {
        print_ok(&json!({ "id": id, "tenant": tenant, "name": name, "apiKey": key }));
    } else {
        println!("Key {verb} for connector `{}` (tenant {}), id {id}:", escape(name), escape(tenant));
        println!();
        println!("    {key}");
        println!();
        println!("Store it in the agent now; it is not shown again.");
    }
}

/// Through the running gateway (which kicks the session) when there is one, else in the file.
fn revoke(dir: &Path, id_or_name: &str) -> Result<Vec<String>, Failure> {
    if let Some(client) = AdminClient::from_data_dir(dir)? {
        match client.call(
            "POST",
            "/admin/keys/revoke",
            Some(&json!({ "key": id_or_name })),
            Duration::from_secs(10),
        ) {
            Ok((200, body)) => {
                let ids = body["revoked"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned));
                return Ok(ids.collect());
            }
            Ok((status, body)) => return Err(remote_failure(status, &body)),
            Err(e) => eprintln!("note: gateway not reachable ({e}); revoking in the database directly"),
        }
    }
    let store =
        KeyStore::open(dir).with_context(|| format!("cannot open {}", dir.join("gateway.db").display()))?;
    let ids = store.revoke(id_or_name)?;
    Ok(ids)
}

/// The admin API's error answer: its code and message; a 404 (unknown connector or key) is
/// exit 3, anything else exit 1.
fn remote_failure(status: u16, body: &Value) -> Failure {
    let err = &body["error"];
    let code = err["code"].as_str().unwrap_or("GATEWAY_ERROR");
    let message = err["message"].as_str().unwrap_or("no message");
    let exit = if status == 404 { EXIT_NOT_FOUND } else { EXIT_RUNTIME };
    // As text: `CODE: message`; in the envelope the code has its own field.
    let text = if json_mode() { message.to_owned() } else { format!("{code}: {message}") };
    Failure::message(exit, code, text)
}

fn admin(dir: &Path) -> Result<AdminClient, Failure> {
    match AdminClient::from_data_dir(dir)? {
        Some(client) => Ok(client),
        None => Err(Failure::message(
            EXIT_NOT_FOUND,
            "NOT_RUNNING",
            format!(
                "no running gateway found ({} is missing); start `connector-gateway serve`",
                dir.join("admin.json").display()
            ),
        )),
    }
}

fn parse_param(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn query(dir: &Path, args: QueryArgs) -> Result<(), Failure> {
    let client = admin(dir)?;
    let body = json!({
        "connector": args.connector,
        "sql": args.sql,
        "params": args.params.iter().map(|p| parse_param(p)).collect::<Vec<_>>(),
        "timeoutMs": args.timeout_ms,
        "connection": args.connection,
        "waitMs": args.wait_ms,
        "ttlMs": args.ttl_ms,
    });
    let timeout = Duration::from_millis(args.wait_ms) + Duration::from_secs(10);
    let (status, mut reader) = client.call_streaming("POST", "/admin/query", Some(&body), timeout)?;
    if status != 200 {
        let outcome: Value = serde_json::from_reader(&mut reader).unwrap_or(Value::Null);
        if status == 404 && outcome["error"]["code"] == "UNKNOWN_CONNECTOR" {
            let message = outcome["error"]["message"].as_str().unwrap_or_default().to_owned();
            return Err(Failure::message(EXIT_NOT_FOUND, "UNKNOWN_CONNECTOR", message));
        }
        return Err(remote_failure(status, &outcome));
    }
    // The body is read as it arrives, a row at a time: a large result is never held whole.
    let broken = |e: &dyn std::fmt::Display| {
        Failure::message(EXIT_RUNTIME, "IO", format!("reading the gateway's answer: {e}"))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        // The outcome document copied into the envelope as it arrives, compact, on one line
        // (a large result is never held whole). Errors come with another status, above.
        out.write_all(br#"{"ok":true,"data":"#).map_err(|e| broken(&e))?;
        let mut from = serde_json::Deserializer::from_reader(reader);
        let mut to = serde_json::Serializer::new(&mut out);
        serde_transcode::transcode(&mut from, &mut to).map_err(|e| broken(&e))?;
        from.end().map_err(|e| broken(&e))?;
        out.write_all(b"}\n").and_then(|()| out.flush()).map_err(|e| broken(&e))?;
        return Ok(());
    }
    let mut table = StreamTable::new(&mut out);
    let row_count = serde::de::DeserializeSeed::deserialize(
        TableOutcome(&mut table),
        &mut serde_json::Deserializer::from_reader(reader),
    )
    .map_err(|e| broken(&e))?;
    let printed = table.finish().map_err(|e| broken(&e))?;
    let n = row_count.unwrap_or(printed);
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
        .and_then(|()| out.flush())
        .map_err(|e| broken(&e))?;
    Ok(())
}

/// Rows whose cells size the table's columns; later rows are printed as they arrive, in those
/// widths (a longer cell makes its line longer).
const TABLE_SIZING_ROWS: usize = 1000;

/// A text table printed while its rows arrive: the first [`TABLE_SIZING_ROWS`] are held to
/// size the columns, the rest go straight out. Cells are escaped ([`cell_text`]) and sized by
/// display width (`protocol::term`, the renderer of every other table).
struct StreamTable<'a, W: Write> {
    out: &'a mut W,
    headers: Vec<String>,
    held: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
    rows: u64,
}

impl<'a, W: Write> StreamTable<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self { out, headers: Vec::new(), held: Vec::new(), widths: None, rows: 0 }
    }

    fn push(&mut self, row: Vec<String>) -> std::io::Result<()> {
        self.rows += 1;
        if self.widths.is_some() {
            return self.line(&row);
        }
        self.held.push(row);
        if self.held.len() == TABLE_SIZING_ROWS { self.start() } else { Ok(()) }
    }

    /// Sizes the columns, prints the header and the held rows.
    fn start(&mut self) -> std::io::Result<()> {
        self.widths = Some(protocol::term::widths(&self.headers, &self.held));
        let headers = std::mem::take(&mut self.headers);
        self.line(&headers)?;
        let rule: Vec<String> = self.widths.iter().flatten().map(|w| "-".repeat(*w)).collect();
        self.line(&rule)?;
        for row in std::mem::take(&mut self.held) {
            self.line(&row)?;
        }
        Ok(())
    }

    fn line(&mut self, cells: &[String]) -> std::io::Result<()> {
        let widths = self.widths.as_deref().unwrap_or_default();
        writeln!(self.out, "{}", protocol::term::line(cells, widths, &[]))
    }

    /// Prints what is held; the number of rows printed.
    fn finish(mut self) -> std::io::Result<u64> {
        if self.widths.is_none() {
            self.start()?;
        }
        Ok(self.rows)
    }
}

/// Reads the outcome object of `POST /admin/query` into a [`StreamTable`]: `columns` set the
/// header, each element of `rows` is printed (or held) as it is parsed, the rest is skipped.
/// Gives `rowCount`.
struct TableOutcome<'t, 'a, W: Write>(&'t mut StreamTable<'a, W>);

impl<'de, W: Write> serde::de::DeserializeSeed<'de> for TableOutcome<'_, '_, W> {
    type Value = Option<u64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, W: Write> serde::de::Visitor<'de> for TableOutcome<'_, '_, W> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a query outcome object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut row_count = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "columns" => {
                    let columns: Vec<Value> = map.next_value()?;
                    self.0.headers = columns.iter().map(column_name).collect();
                }
                "rows" => map.next_value_seed(TableRows(self.0))?,
                "rowCount" => row_count = map.next_value()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(row_count)
    }
}

/// The `rows` array: one row parsed, printed and dropped at a time.
struct TableRows<'t, 'a, W: Write>(&'t mut StreamTable<'a, W>);

impl<'de, W: Write> serde::de::DeserializeSeed<'de> for TableRows<'_, '_, W> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, W: Write> serde::de::Visitor<'de> for TableRows<'_, '_, W> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Vec<Value>>()? {
            self.0.push(row.iter().map(cell_text).collect()).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

/// A column's name as printed: escaped (names come from the database).
fn column_name(column: &Value) -> String {
    let name = match column {
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            map.get("name").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| column.to_string())
        }
        other => other.to_string(),
    };
    escape(&name).into_owned()
}

/// A cell as printed: tabs, newlines, escape sequences and other controls shown escaped.
fn cell_text(cell: &Value) -> String {
    match cell {
        Value::Null => "NULL".into(),
        Value::String(s) => escape(s).into_owned(),
        other => other.to_string(),
    }
}

fn fetch_connectors(dir: &Path) -> Result<Vec<Value>, Failure> {
    let (status, body) = admin(dir)?.call("GET", "/admin/connectors", None, Duration::from_secs(10))?;
    if status != 200 {
        return Err(remote_failure(status, &body));
    }
    Ok(body.as_array().cloned().unwrap_or_default())
}

fn connectors(dir: &Path, json: bool) -> Result<(), Failure> {
    let list = fetch_connectors(dir)?;
    if json {
        print_ok(&json!({ "connectors": list }));
        return Ok(());
    }
    let text = |v: &Value| {
        v.as_str().map(str::to_owned).unwrap_or_else(|| if v.is_null() { "-".into() } else { v.to_string() })
    };
    let mut table =
        Table::new(&["NAME", "TENANT", "STATE", "STATUS", "LAST HEARTBEAT", "ACTIVE", "AGENT"]).with_rule();
    for c in &list {
        table.push(&[
            text(&c["name"]),
            text(&c["tenant"]),
            if c["connected"].as_bool() == Some(true) { "online".into() } else { "offline".into() },
            text(&c["status"]),
            text(&c["lastHeartbeat"]),
            text(&c["activeCommands"]),
            text(&c["agentVersion"]),
        ]);
    }
    print!("{table}");
    Ok(())
}

fn schema(dir: &Path, connector: &str, refresh: Option<u64>, json: bool) -> Result<(), Failure> {
    let find = |list: Vec<Value>| list.into_iter().find(|c| c["name"] == connector);
    let before = find(fetch_connectors(dir)?).ok_or_else(|| {
        Failure::message(EXIT_NOT_FOUND, "UNKNOWN_CONNECTOR", format!("unknown connector `{connector}`"))
    })?;
    let mut entry = before.clone();
    if let Some(secs) = refresh {
        let body = json!({ "connector": connector });
        let (status, answer) =
            admin(dir)?.call("POST", "/admin/schema-request", Some(&body), Duration::from_secs(10))?;
        if status != 202 {
            return Err(remote_failure(status, &answer));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            entry = find(fetch_connectors(dir)?).unwrap_or(Value::Null);
            if entry["schema"] != before["schema"] {
                break;
            }
        }
    }
    if entry["schema"].is_null() {
        return Err(Failure::message(
            EXIT_NOT_FOUND,
            "NO_SCHEMA",
            format!("connector `{connector}` has not reported a schema yet"),
        ));
    }
    if json {
        print_ok(&json!({ "connector": connector, "schemas": entry["schema"] }));
        return Ok(());
    }
    let schemas: Vec<protocol::DatabaseSchema> =
        serde_json::from_value(entry["schema"].clone()).map_err(|e| {
            Failure::message(EXIT_RUNTIME, "IO", format!("the gateway's schema is unreadable: {e}"))
        })?;
    print!("{}", schema_text(&schemas));
    Ok(())
}

/// The text view of a reported schema: per database its tables (views marked) with columns,
/// types and nullability, primary and foreign keys. Every name escaped, columns aligned by
/// display width.
fn schema_text(schemas: &[protocol::DatabaseSchema]) -> String {
    use protocol::schema::TableKind;
    let list = |names: &[String]| names.iter().map(|n| escape(n).into_owned()).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    for db in schemas {
        let columns: usize = db.tables.iter().map(|t| t.columns.len()).sum();
        let db_type = serde_json::to_value(db.db_type).ok().and_then(|v| v.as_str().map(str::to_owned));
        out.push_str(&format!(
            "{} ({}): {} tables, {} columns\n",
            escape(&db.connection),
            db_type.as_deref().unwrap_or("-"),
            db.tables.len(),
            columns
        ));
        for t in &db.tables {
            let name = match &t.schema {
                Some(schema) => format!("{schema}.{}", t.name),
                None => t.name.clone(),
            };
            let view = if t.kind == TableKind::View { " (view)" } else { "" };
            let rows = t.row_count_estimate.map(|n| format!("  ~{n} rows")).unwrap_or_default();
            out.push_str(&format!("  {}{view}{rows}\n", escape(&name)));
            let mut table = Table::new(&["", "", ""]);
            for c in &t.columns {
                let mut flags = if c.nullable { "null" } else { "not null" }.to_owned();
                if t.primary_key.contains(&c.name) {
                    flags.push_str("  PK");
                }
                let data_type = if c.data_type.is_empty() { "-" } else { c.data_type.as_str() };
                table.push(&[c.name.as_str(), data_type, flags.as_str()]);
            }
            for line in table.render().lines().skip(1) {
                out.push_str(&format!("    {line}\n"));
            }
            if t.primary_key.len() > 1 {
                out.push_str(&format!("    primary key ({})\n", list(&t.primary_key)));
            }
            for fk in &t.foreign_keys {
                out.push_str(&format!(
                    "    foreign key ({}) -> {}({})\n",
                    list(&fk.columns),
                    escape(&fk.ref_table),
                    list(&fk.ref_columns)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        for bad in ["", "0", "MiB", "12 parsecs", "-1", "99999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
