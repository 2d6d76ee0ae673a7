//! `mini-connector`: parses the command line and picks a role (the agent, or a one-shot command).

mod cli;
#[cfg(feature = "gui")]
mod desktop;
mod sql_check;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mini_connector::agent::Agent;
use mini_connector::config::AgentConfig;
use mini_connector::control::ControlCmd;
use mini_connector::protocol::control::{
    ActivityEntry, ControlReply, ControlRequest, Outcome, StatusSnapshot,
};
use mini_connector::supervisor::SupMsg;

/// Exit codes, documented in README.md.
mod exit {
    /// Success, or a clean shutdown.
    pub const OK: u8 = 0;
    /// A runtime failure (database cannot be opened, thread failure...).
    pub const FAILURE: u8 = 1;
    /// Bad configuration or API key (nothing was dialled), or bad usage.
    pub const CONFIG: u8 = 2;
    /// No agent is running for this configuration (control commands); the service is not
    /// registered (`service status`).
    pub const NOT_RUNNING: u8 = 3;
    /// `VAULT_DECRYPT_ERROR`: the vault cannot be decrypted on this machine (copied from another
    /// machine, or damaged); credentials must be entered again after `vault reset`.
    pub const VAULT: u8 = 4;
}

/// Mini Connector: a read-only, outbound-only bridge between local databases and the cloud.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = "\
Examples:
  echo \"$KEY\" | mini-connector configure --name Warehouse --cloud-url wss://console.example.com/ws --api-key-stdin
  mini-connector db add --name erp --type postgres --host db.local --database erp --user readonly --password
  mini-connector db list --json
  sudo mini-connector service install --config /etc/mini-connector/config.json
  mini-connector start --config /etc/mini-connector/config.json
  mini-connector start --daemon --config ./config.json
  mini-connector status --json
  mini-connector pause && mini-connector resume
  mini-connector stop
  mini-connector sample-erp ./erp.db
  mini-connector config check --config ./config.json
  mini-connector doctor --json
  mini-connector audit --since 24h --verify
  mini-connector diag bundle --out ./support.zip

Exit codes: 0 ok; 1 runtime failure; 2 bad configuration, API key or usage;
3 no agent running (status, pause, resume, reconnect, stop) / service not registered;
4 VAULT_DECRYPT_ERROR: the vault cannot be read on this machine (see `vault reset`).
Each command's --help lists its own.")]
struct Cli {
    /// Without a subcommand: the desktop app on a desktop session (builds with the `gui`
    /// feature), else this help.
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Open the desktop app (dashboard, tray status, setup wizard): attaches to the agent that
    /// runs for this configuration (e.g. as a service), else runs one in this process.
    #[cfg(feature = "gui")]
    Gui {
        /// Configuration file (created by the setup wizard when absent).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
    },
    /// Run the agent in the foreground until Ctrl-C, SIGTERM or a shutdown from the cloud.
    Start {
        /// Configuration file.
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
        /// Run in the background: logs go to `agent.log` next to the configuration file.
        #[arg(long)]
        daemon: bool,
        /// With --daemon: print JSON (docs/CLI.md): {"ok": true, "data": {"pid", "log"}}, or the
        /// failure envelope.
        #[arg(long, requires = "daemon")]
        json: bool,
    },
    /// Show the running agent's state (connection, commands, errors).
    Status(ControlArgs),
    /// Refuse new commands (they get AGENT_PAUSED) until `resume`; running ones finish.
    Pause(ControlArgs),
    /// Take commands again after `pause`.
    Resume(ControlArgs),
    /// Drop the cloud connection and dial again now.
    Reconnect(ControlArgs),
    /// Stop the running agent gracefully.
    Stop(ControlArgs),
    /// Make the running agent re-read its configuration's connections and schema privacy
    /// without dropping the cloud link (SIGHUP does the same). Exit 0 applied; 2 the
    /// configuration does not load (nothing changed); 3 no agent running.
    Reload(ControlArgs),
    /// Recent commands the running agent handled (newest first): id, outcome, rows, duration.
    Activity(ControlArgs),
    /// Print the end of the agent's newest log file (this configuration's own log directory:
    /// `logDir`, else one per configuration under the platform's log directory).
    #[command(after_help = "Exit codes: 0 ok; 1 no log file / cannot read it; 2 bad configuration; \
130 `--follow` ended with Ctrl-C.")]
    Logs {
        /// Configuration file (its `logDir` says where the logs are).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines as they are written, across the daily rotation, until
        /// Ctrl-C (like `tail -F`).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Check SQL offline against the read-only gate (`sql check --dialect postgres "SELECT ..."`).
    Sql {
        #[command(subcommand)]
        command: sql_check::SqlCmd,
    },
    /// Check why the agent does or doesn't connect: config, DNS, proxy, TCP, TLS chain,
    /// WebSocket, API key, clock, each database. Exit 0 ok/warnings, 1 a check failed, 2 the
    /// configuration does not load.
    Doctor(cli::doctor::DoctorArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Create or update the configuration and store the API key in the vault / OS store.
    Configure(cli::configure::ConfigureArgs),
    /// The API key: `key show` (masked), `key rotate`.
    Key {
        #[command(subcommand)]
        command: cli::configure::KeyCmd,
    },
    /// Database connections: `db add|edit|test|list|remove` (passwords go to the vault).
    Db {
        #[command(subcommand)]
        command: cli::db::DbCmd,
    },
    /// The local schema browser: `schema discover|show|diff|approve`, `schema private add|remove`.
    Schema {
        #[command(subcommand)]
        command: cli::schema::SchemaCmd,
    },
    /// The credential vault: `vault status`, `vault reset` (after VAULT_DECRYPT_ERROR).
    Vault {
        #[command(subcommand)]
        command: cli::configure::VaultCmd,
    },
    /// Run as an OS service: `service install|uninstall|status`.
    Service {
        #[command(subcommand)]
        command: cli::service::ServiceCmd,
    },
    /// Notifications (spec §8.3): `notify test [--event KIND]`, `notify set-password`.
    Notify {
        #[command(subcommand)]
        command: mini_connector::notify::cli::NotifyCmd,
    },
    /// The local audit log: every command received and executed (`--since`, `--json`, `--verify`).
    Audit(cli::audit::AuditArgs),
    /// Support: `diag bundle [--out FILE]` writes a diagnostic ZIP (no credentials, no row data).
    Diag {
        #[command(subcommand)]
        command: cli::diag::DiagCmd,
    },
    /// Signed updates (docs/UPDATES.md): `update check`, `update apply [--file PACKAGE]`.
    Update {
        #[command(subcommand)]
        command: cli::update::UpdateCmd,
    },
    /// Shell completions and man pages for packaging (`generate completions bash`, `generate man`).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: cli::generate::GenerateCmd,
    },
    /// Create the sample ERP database (SQLite) used by the demo and the tests.
    SampleErp {
        /// Where to write the database file (replaced if it exists).
        path: PathBuf,
        /// Size multiplier (1 = a few thousand rows).
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
}

#[derive(Debug, clap::Args)]
struct ControlArgs {
    /// Configuration file of the agent to talk to.
    #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
    config: PathBuf,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and the API key it points to, without dialling.
    Check {
        /// Configuration file.
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
        /// Print JSON: {"ok": true, "data": {"connector", "apiKey" (masked)}}, or the error
        /// envelope (CONFIG_INVALID, VAULT_DECRYPT_ERROR, IO).
        #[arg(long)]
        json: bool,
    },
}

/// The default configuration file: `$XDG_CONFIG_HOME/mini-connector/config.json`, else
/// `~/.config/mini-connector/config.json`.
fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("mini-connector").join("config.json")
}

/// The exit code of a configuration or credential failure: 4 for `VAULT_DECRYPT_ERROR`, else 2.
fn config_exit(error: &mini_connector::config::ConfigError) -> ExitCode {
    ExitCode::from(if error.is_vault_decrypt() { exit::VAULT } else { exit::CONFIG })
}

/// Prints a one-shot command's failure and maps it to its exit code.
fn finish(outcome: cli::Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(fail) => ExitCode::from(cli::output::report(&fail)),
    }
}

/// `mini-connector` alone: the desktop app where there is a desktop, else the help (exit 2).
fn no_subcommand() -> ExitCode {
    #[cfg(feature = "gui")]
    if gui::display_available() {
        let config =
            std::env::var_os("MINI_CONNECTOR_CONFIG").map_or_else(default_config_path, PathBuf::from);
        return desktop::run(&config);
    }
    use clap::CommandFactory as _;
    let _ = Cli::command().print_help();
    ExitCode::from(exit::CONFIG)
}

fn load(path: &Path) -> Result<AgentConfig, ExitCode> {
    AgentConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit::CONFIG)
    })
}

fn main() -> ExitCode {
    cli::output::init(std::env::args_os());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--json`: a refused command line is an envelope too (help and --version are not errors).
        Err(e) if cli::output::json() && e.use_stderr() => {
            let text = e.to_string();
            let message = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            cli::output::print_error("USAGE", message);
            return ExitCode::from(exit::CONFIG);
        }
        Err(e) => e.exit(),
    };
    let Some(command) = cli.command else {
        return no_subcommand();
    };
    // One-shot commands die quietly when their output pipe closes (`... | head`). The agent
    // keeps Rust's default (SIGPIPE ignored): a closed control-socket client or log pipe must
    // never kill it.
    if !matches!(command, Cmd::Start { .. }) {
        sigpipe::reset();
    }
    match command {
        #[cfg(feature = "gui")]
        Cmd::Gui { config } => desktop::run(&config),
        Cmd::Start { config: config_path, daemon, .. } => {
            if daemon {
                return finish(daemonize(&config_path));
            }
            let config = match load(&config_path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let log_dir = config.log_dir();
            if let Err(e) = mini_connector::logging::init(&config.log_level, Some(&log_dir)) {
                eprintln!("warning: cannot write log files to {}: {e}", log_dir.display());
                let _ = mini_connector::logging::init(&config.log_level, None);
            }
            if let Some(code) = cli::update::recover_at_start() {
                return code;
            }
            // The key check here and the start share one vault key derivation.
            let vault_hold = config.hold_vault();
            if let Err(e) = config.load_api_key() {
                eprintln!("error: {e}");
                return config_exit(&e);
            }
            let control =
                mini_connector::control::socket_path(&config_path, config.control_socket.as_deref());
            let agent = match Agent::start_from(&config_path, &config, Some(&control)) {
                Ok(agent) => agent,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(exit::FAILURE);
                }
            };
            drop(vault_hold);
            let grace = Duration::from_millis(config.command_timeout_ms.min(30_000));
            handle_signals(agent.inbox(), grace);
            tracing::info!(name = %config.connector_name, url = %config.cloud_url, "agent started");
            let updater = cli::update::auto_updater(&config_path, &config, agent.inbox(), grace);
            let reason = agent.wait();
            drop(updater);
            tracing::info!(%reason, "agent stopped");
            if reason == mini_connector::update::RESTART_REASON {
                return ExitCode::from(mini_connector::update::restart_exit());
            }
            ExitCode::from(exit::OK)
        }
        Cmd::Logs { config, lines, follow } => print_logs(&config, lines, follow),
        Cmd::Status(args) => control(&args, ControlCmd::Status),
        Cmd::Pause(args) => control(&args, ControlCmd::Pause),
        Cmd::Resume(args) => control(&args, ControlCmd::Resume),
        Cmd::Reconnect(args) => control(&args, ControlCmd::Reconnect),
        Cmd::Stop(args) => control(&args, ControlCmd::Stop),
        Cmd::Reload(args) => control(&args, ControlCmd::Reload),
        Cmd::Activity(args) => control(&args, ControlCmd::Activity),
        Cmd::Config { command: ConfigCmd::Check { config, json } } => {
            let checked = AgentConfig::load(&config)
                .map_err(|e| (cli::output::config_code(&e), e.to_string(), exit::CONFIG))
                .and_then(|config| match config.load_api_key() {
                    Ok(key) => Ok((config, key)),
                    Err(e) => {
                        let exit = if e.is_vault_decrypt() { exit::VAULT } else { exit::CONFIG };
                        Err((cli::output::config_code(&e), e.to_string(), exit))
                    }
                });
            match checked {
                Ok((config, key)) if json => {
                    cli::output::print_ok(
                        &serde_json::json!({ "connector": config.connector_name, "apiKey": key.masked() }),
                    );
                    ExitCode::from(exit::OK)
                }
                Ok((config, key)) => {
                    println!(
                        "config ok: connector `{}`, API key {}",
                        cli::output::escape(&config.connector_name),
                        key.masked()
                    );
                    ExitCode::from(exit::OK)
                }
                Err((code, message, exit)) => {
                    if json {
                        cli::output::print_error(code, &message);
                    } else {
                        eprintln!("error: {}", cli::output::escape(&message));
                    }
                    ExitCode::from(exit)
                }
            }
        }
        Cmd::Doctor(args) => cli::doctor::doctor(&args),
        Cmd::Sql { command } => sql_check::run_sql(&command),
        Cmd::Configure(args) => finish(cli::configure::configure(args)),
        Cmd::Key { command } => finish(cli::configure::key(command)),
        Cmd::Db { command } => finish(cli::db::db(command)),
        Cmd::Schema { command } => cli::schema::schema(command),
        Cmd::Vault { command } => finish(cli::configure::vault(command)),
        Cmd::Service { command } => finish(cli::service::service(command)),
        Cmd::Audit(args) => finish(cli::audit::audit(&args)),
        Cmd::Diag { command } => finish(cli::diag::diag(command)),
        Cmd::Update { command } => cli::update::update(command),
        Cmd::Generate { command } => {
            finish(cli::generate::generate(command, <Cli as clap::CommandFactory>::command()))
        }
        Cmd::Notify { command } => mini_connector::notify::cli::run(command, default_config_path()),
        Cmd::SampleErp { path, scale } => match drivers::fixture::create_sample_erp(&path, scale) {
            Ok(stats) => {
                println!(
                    "created {}: {} customers, {} products, {} orders, {} order lines, {} invoices",
                    path.display(),
                    stats.customers,
                    stats.products,
                    stats.orders,
                    stats.order_lines,
                    stats.invoices
                );
                ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit::FAILURE)
            }
        },
    }
}

/// Ctrl-C and SIGTERM stop the agent gracefully; SIGHUP (Unix) makes it reload its
/// configuration like `mini-connector reload`. (On Unix one signal-hook thread handles all
/// three: ctrlc's `termination` feature would treat SIGHUP as a stop.)
fn handle_signals(inbox: crossbeam_channel::Sender<SupMsg>, grace: Duration) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("warning: cannot install the signal handlers: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
            let mut signals = signals;
            for signal in signals.forever() {
                if signal != SIGHUP {
                    let _ = inbox.send(SupMsg::Shutdown { reason: "signal".into(), grace });
                    continue;
                }
                match mini_connector::control::ask(&inbox, ControlRequest::Reload) {
                    ControlReply::Message(text) => tracing::info!("SIGHUP: {text}"),
                    ControlReply::Error { message, .. } => tracing::warn!("SIGHUP: reload failed: {message}"),
                    _ => {}
                }
            }
        });
        if let Err(e) = spawned {
            eprintln!("warning: cannot start the signal thread: {e}");
        }
    }
    #[cfg(not(unix))]
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = inbox.send(SupMsg::Shutdown { reason: "signal".into(), grace });
    }) {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
}

/// Sends one control request to the agent running with `args.config` and prints the answer
/// (`--json`: the envelope of `cli::output`, errors included).
fn control(args: &ControlArgs, cmd: ControlCmd) -> ExitCode {
    use cli::output::{escape, print_error, print_ok};
    let configured = AgentConfig::load(&args.config).ok().and_then(|c| c.control_socket);
    let path = mini_connector::control::socket_path(&args.config, configured.as_deref());
    let fail = |code: &str, message: &str, exit: u8| {
        if args.json {
            print_error(code, message);
        } else {
            eprintln!("error: {} ({code})", escape(message));
        }
        ExitCode::from(exit)
    };
    match mini_connector::control::call(&path, &cmd.into()) {
        Ok(ControlReply::Error { code, message }) => {
            let exit_code = if code == "INVALID_CONFIG" { exit::CONFIG } else { exit::FAILURE };
            fail(&code, &message, exit_code)
        }
        Ok(reply) => {
            match (&reply, args.json) {
                (ControlReply::Status(snapshot), true) => print_ok(snapshot.as_ref()),
                (ControlReply::Status(snapshot), false) => print_status(snapshot),
                (ControlReply::Activity(entries), true) => {
                    print_ok(&serde_json::json!({ "commands": entries }))
                }
                (ControlReply::Activity(entries), false) => print_activity(entries),
                (ControlReply::Message(text), false) => println!("{}", escape(text)),
                (ControlReply::Message(text), true) => print_ok(&serde_json::json!({ "message": text })),
                (_, true) => print_ok(&serde_json::json!({})),
                (_, false) => println!("ok"),
            }
            ExitCode::from(exit::OK)
        }
        Err(e @ mini_connector::control::ControlError::NotRunning(_)) => {
            fail("NOT_RUNNING", &e.to_string(), exit::NOT_RUNNING)
        }
        Err(e) => fail("IO", &e.to_string(), exit::FAILURE),
    }
}

fn print_activity(entries: &[ActivityEntry]) {
    if entries.is_empty() {
        println!("no commands yet");
        return;
    }
    let mut table = cli::output::Table::new(&["RECEIVED", "COMMAND", "CONNECTION", "OUTCOME", "ROWS", "MS"])
        .right(4)
        .right(5);
    let or_dash = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for entry in entries {
        let outcome = match &entry.outcome {
            Outcome::Running => "running".to_owned(),
            Outcome::Inline => "ok (inline)".to_owned(),
            Outcome::Chunked => "ok (chunked)".to_owned(),
            Outcome::Failed { code } => code.clone(),
            Outcome::Cancelled => "cancelled".to_owned(),
        };
        table.push(&[
            entry.received_at.clone(),
            entry.command_id.clone(),
            entry.connection.clone().unwrap_or_else(|| "-".to_owned()),
            outcome,
            or_dash(entry.rows),
            or_dash(entry.duration_ms),
        ]);
    }
    print!("{table}");
}

fn print_status(s: &StatusSnapshot) {
    use cli::output::escape;
    let or_dash = |v: Option<&str>| escape(v.unwrap_or("-")).into_owned();
    println!("connector:      {}", escape(&s.connector_name));
    println!("cloud:          {}", escape(&s.cloud_url));
    let pid = s.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
    println!("version:        {}{pid}", escape(&s.agent_version));
    println!(
        "status:         {}{}",
        s.indicator.label(),
        s.reason.as_deref().map(|r| format!(": {}", escape(r))).unwrap_or_default()
    );
    let state = serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(str::to_owned));
    println!("state:          {}", or_dash(state.as_deref()));
    println!("connected:      {} (since {})", s.connected, or_dash(s.connected_since.as_deref()));
    if let Some(since) = &s.disconnected_since {
        println!("disconnected:   since {since}");
    }
    if let Some(ms) = s.next_retry_ms.filter(|_| !s.connected) {
        println!("next retry:     in {:.1} s", ms as f64 / 1000.0);
    }
    if let Some(transport) = s.transport {
        println!("transport:      {}", transport.label());
    }
    println!("uptime:         {} s, {} reconnects", s.uptime_secs, s.reconnects);
    if let Some(latency) = s.latency_ms {
        println!("latency:        {latency:.1} ms");
    }
    println!(
        "commands:       {} active, {} completed, {} failed, {} rows returned ({} today)",
        s.active_commands, s.commands_completed, s.commands_failed, s.rows_returned, s.commands_today
    );
    println!(
        "traffic:        {} bytes sent ({} today), {} bytes received",
        s.bytes_sent, s.bytes_sent_today, s.bytes_received
    );
    match &s.queue.error {
        Some(error) => println!("queue:          unreadable: {}", escape(error)),
        None => println!(
            "queue:          {} waiting, {} unacknowledged answers, {} of {} MiB{}",
            s.waiting_commands,
            s.queue.unacknowledged,
            s.queue.used_bytes >> 20,
            s.queue.cap_bytes >> 20,
            if s.queue.warning { " (over 80 %)" } else { "" }
        ),
    }
    println!("databases:      {}", if s.databases.is_empty() { "-" } else { "" });
    for d in &s.databases {
        let health = match (d.healthy, &d.error) {
            (true, _) => "ok".to_owned(),
            (false, Some(error)) => format!("error: {}", escape(error)),
            (false, None) => "unreachable".to_owned(),
        };
        let checked =
            d.checked_at.as_deref().map(|at| format!(", checked {}", escape(at))).unwrap_or_default();
        let pool =
            d.pool.map(|p| format!(", pool {}/{}", p.open - p.idle.min(p.open), p.max)).unwrap_or_default();
        let tables = d.tables.map(|t| format!(", {t} tables")).unwrap_or_default();
        println!(
            "  {} ({}): {health}{checked}{pool}{tables}",
            escape(&d.name),
            escape(d.kind.as_deref().unwrap_or("-"))
        );
    }
    println!("last error:     {}", or_dash(s.last_error.as_deref()));
}

/// Starts the agent again as a background process and returns once it is up: its own control
/// socket answers with its pid. When the child exits first (another agent already runs for this
/// configuration, a database file cannot be opened...), its error lines are printed and its exit
/// code returned.
fn daemonize(config_path: &Path) -> cli::Outcome {
    use cli::Fail;
    let config = cli::ConfigArg { config: config_path.to_owned() }.load()?;
    // Exit 4 for VAULT_DECRYPT_ERROR, else 2 (as `start` in the foreground).
    config.load_api_key().map_err(|e| Fail {
        code: if e.is_vault_decrypt() { exit::VAULT } else { exit::CONFIG },
        error: e.into(),
    })?;
    let socket = mini_connector::control::socket_path(config_path, config.control_socket.as_deref());
    if let Ok(ControlReply::Status(running)) = mini_connector::control::call(&socket, &ControlRequest::Status)
    {
        let pid = running.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
        return Err(Fail::coded(
            exit::FAILURE,
            "ALREADY_RUNNING",
            format!(
                "another agent is already running for {}{pid}; `mini-connector stop --config {}` first",
                config_path.display(),
                config_path.display()
            ),
        ));
    }
    let log_path = config_path.parent().unwrap_or(Path::new(".")).join("agent.log");
    let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let spawned = (|| -> std::io::Result<std::process::Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let exe = std::env::current_exe()?;
        let mut command = std::process::Command::new(exe);
        command
            .arg("start")
            .arg("--config")
            .arg(config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.spawn()
    })();
    let mut child = spawned.map_err(|e| {
        Fail::coded(exit::FAILURE, "IO", format!("cannot start the agent in the background: {e}"))
    })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // What the child said, from this start's part of the log.
            let said = std::fs::read(&log_path).ok().map(|bytes| {
                let tail = bytes.get(usize::try_from(log_start).unwrap_or(0)..).unwrap_or_default();
                String::from_utf8_lossy(tail).into_owned()
            });
            let lines: Vec<&str> =
                said.iter().flat_map(|text| text.lines()).filter(|l| l.contains("error")).take(10).collect();
            let code = status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0);
            // As text, the child's lines as they are; in the envelope, part of the message.
            let mut message = String::new();
            for line in lines {
                if cli::output::json() {
                    message.push_str(line);
                    message.push('\n');
                } else {
                    eprintln!("{line}");
                }
            }
            message.push_str(&format!("the agent exited at once ({status}); see {}", log_path.display()));
            return Err(Fail::coded(code.unwrap_or(exit::FAILURE), "FAILED", message));
        }
        if let Ok(ControlReply::Status(snapshot)) =
            mini_connector::control::call(&socket, &ControlRequest::Status)
            && snapshot.pid == Some(child.id())
        {
            if cli::output::json() {
                cli::output::print_ok(&serde_json::json!({ "pid": child.id(), "log": log_path }));
            } else {
                println!("agent running in the background (pid {}); log: {}", child.id(), log_path.display());
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Fail::coded(
        exit::FAILURE,
        "FAILED",
        format!(
            "the agent (pid {}) did not answer on {} within 30 s; see {}",
            child.id(),
            socket.display(),
            log_path.display()
        ),
    ))
}

/// The newest agent log file in `dir` (by modification time, then name: `agent.YYYY-MM-DD.log`).
fn newest_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent"))
        .filter_map(|e| Some((e.metadata().and_then(|m| m.modified()).ok()?, e.file_name(), e.path())))
        .max()
        .map(|(_, _, path)| path)
}

/// Prints the last `lines` lines of the newest log file; with `follow`, then every new line,
/// switching to the next file at the daily rotation, until Ctrl-C (exit 130).
fn print_logs(config_path: &Path, lines: usize, follow: bool) -> ExitCode {
    let dir = match AgentConfig::load(config_path) {
        Ok(config) => config.log_dir(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let newest = newest_log(&dir);
    let Some(newest) = newest else {
        if follow {
            return follow_logs(&dir, None, 0);
        }
        eprintln!("no log files in {}", dir.display());
        return ExitCode::from(exit::FAILURE);
    };
    match std::fs::read(&newest) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            for line in &all[all.len().saturating_sub(lines)..] {
                println!("{line}");
            }
            if follow {
                return follow_logs(&dir, Some(newest), bytes.len() as u64);
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", newest.display());
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// `logs -f`: prints what is appended to `current` from `pos` on, and moves to a newer file
/// when one appears (daily rotation; the rest of the old one is printed first). A file that
/// shrinks (replaced or truncated) is read again from its start. Ends only by Ctrl-C.
fn follow_logs(dir: &Path, mut current: Option<PathBuf>, mut pos: u64) -> ExitCode {
    use std::io::{Read as _, Seek as _, Write as _};
    if let Err(e) = ctrlc::set_handler(|| std::process::exit(130)) {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    fn drain(path: &Path, pos: &mut u64, partial: &mut Vec<u8>) {
        let Ok(mut file) = std::fs::File::open(path) else { return };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < *pos {
            *pos = 0;
            partial.clear();
        }
        if len == *pos || file.seek(std::io::SeekFrom::Start(*pos)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if let Ok(read) = file.take(len - *pos).read_to_end(&mut bytes) {
            *pos += read as u64;
            partial.extend_from_slice(&bytes);
            if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&partial[..=end]);
                let _ = out.flush();
                partial.drain(..=end);
            }
        }
    }
    let mut partial = Vec::new();
    loop {
        if let Some(path) = &current {
            drain(path, &mut pos, &mut partial);
        }
        let newest = newest_log(dir);
        if newest.is_some() && newest != current {
            if let Some(path) = &current {
                drain(path, &mut pos, &mut partial);
            }
            current = newest;
            pos = 0;
            partial.clear();
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
