//! `mini-connector`: parses the command line and picks a role (the agent, or a one-shot command).

mod cli;
mod sql_check;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mini_connector::agent::Agent;
use mini_connector::config::AgentConfig;
use mini_connector::control::ControlCmd;
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
  mini-connector audit --since 24h --verify

Exit codes: 0 ok; 1 runtime failure; 2 bad configuration, API key or usage;
3 no agent running (status, pause, resume, reconnect, stop) / service not registered;
4 VAULT_DECRYPT_ERROR: the vault cannot be read on this machine (see `vault reset`).
Each command's --help lists its own.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent in the foreground until Ctrl-C, SIGTERM or a shutdown from the cloud.
    Start {
        /// Configuration file.
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
        /// Run in the background: logs go to `agent.log` next to the configuration file.
        #[arg(long)]
        daemon: bool,
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
    /// Recent commands the running agent handled (newest first): id, outcome, rows, duration.
    Activity(ControlArgs),
    /// Print the end of the agent's newest log file.
    Logs {
        /// Configuration file (its `logDir` says where the logs are).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Check SQL offline against the read-only gate (`sql check --dialect postgres "SELECT ..."`).
    Sql {
        #[command(subcommand)]
        command: sql_check::SqlCmd,
    },
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
        Err(fail) => {
            eprintln!("error: {:#}", fail.error);
            ExitCode::from(fail.code)
        }
    }
}

fn load(path: &Path) -> Result<AgentConfig, ExitCode> {
    AgentConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit::CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands die quietly when their output pipe closes (`... | head`). The agent
    // keeps Rust's default (SIGPIPE ignored): a closed control-socket client or log pipe must
    // never kill it.
    if !matches!(cli.command, Cmd::Start { .. }) {
        sigpipe::reset();
    }
    match cli.command {
        Cmd::Start { config: config_path, daemon } => {
            let config = match load(&config_path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if daemon {
                return daemonize(&config_path, &config);
            }
            let log_dir = config.log_dir.clone().unwrap_or_else(mini_connector::logging::default_log_dir);
            if let Err(e) = mini_connector::logging::init(&config.log_level, Some(&log_dir)) {
                eprintln!("warning: cannot write log files to {}: {e}", log_dir.display());
                let _ = mini_connector::logging::init(&config.log_level, None);
            }
            if let Err(e) = config.load_api_key() {
                eprintln!("error: {e}");
                return config_exit(&e);
            }
            let control =
                mini_connector::control::socket_path(&config_path, config.control_socket.as_deref());
            let agent = match Agent::start(&config, Some(&control)) {
                Ok(agent) => agent,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(exit::FAILURE);
                }
            };
            let inbox = agent.inbox();
            let grace = Duration::from_millis(config.command_timeout_ms.min(30_000));
            if let Err(e) = ctrlc::set_handler(move || {
                let _ = inbox.send(SupMsg::Shutdown { reason: "signal".into(), grace });
            }) {
                eprintln!("warning: cannot install the Ctrl-C handler: {e}");
            }
            tracing::info!(name = %config.connector_name, url = %config.cloud_url, "agent started");
            let reason = agent.wait();
            tracing::info!(%reason, "agent stopped");
            ExitCode::from(exit::OK)
        }
        Cmd::Logs { config, lines } => print_logs(&config, lines),
        Cmd::Status(args) => control(&args, ControlCmd::Status),
        Cmd::Pause(args) => control(&args, ControlCmd::Pause),
        Cmd::Resume(args) => control(&args, ControlCmd::Resume),
        Cmd::Reconnect(args) => control(&args, ControlCmd::Reconnect),
        Cmd::Stop(args) => control(&args, ControlCmd::Stop),
        Cmd::Activity(args) => control(&args, ControlCmd::Activity),
        Cmd::Config { command: ConfigCmd::Check { config } } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match config.load_api_key() {
                Ok(key) => {
                    println!("config ok: connector `{}`, API key {}", config.connector_name, key.masked());
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    config_exit(&e)
                }
            }
        }
        Cmd::Sql { command } => sql_check::run_sql(&command),
        Cmd::Configure(args) => finish(cli::configure::configure(args)),
        Cmd::Key { command } => finish(cli::configure::key(command)),
        Cmd::Db { command } => finish(cli::db::db(command)),
        Cmd::Schema { command } => cli::schema::schema(command),
        Cmd::Vault { command } => finish(cli::configure::vault(command)),
        Cmd::Service { command } => finish(cli::service::service(command)),
        Cmd::Audit(args) => finish(cli::audit::audit(&args)),
        Cmd::Notify { command } => mini_connector::notify::cli::run(command, default_config_path()),
        Cmd::SampleErp { path, scale } => match drivers::fixture::create_sample_erp(&path, scale) {
            Ok(stats) => {
                println!("created {}: {stats:?}", path.display());
                ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit::FAILURE)
            }
        },
    }
}

/// Sends one control request to the agent running with `args.config` and prints the answer.
fn control(args: &ControlArgs, cmd: ControlCmd) -> ExitCode {
    let configured = AgentConfig::load(&args.config).ok().and_then(|c| c.control_socket);
    let path = mini_connector::control::socket_path(&args.config, configured.as_deref());
    match mini_connector::control::request(&path, cmd) {
        Ok(answer) => {
            let ok = answer["ok"].as_bool().unwrap_or(false);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            } else if !ok {
                eprintln!("error: {}", answer["error"].as_str().unwrap_or("the agent refused"));
            } else if cmd == ControlCmd::Status {
                print_status(&answer);
            } else if cmd == ControlCmd::Activity {
                print_activity(&answer);
            } else {
                println!("ok");
            }
            ExitCode::from(if ok { exit::OK } else { exit::FAILURE })
        }
        Err(e @ mini_connector::control::ControlError::NotRunning(_)) => {
            if args.json {
                println!("{}", serde_json::json!({ "ok": false, "running": false, "error": e.to_string() }));
            } else {
                eprintln!("{e}");
            }
            ExitCode::from(exit::NOT_RUNNING)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn print_activity(answer: &serde_json::Value) {
    let rows = answer["activity"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no commands yet");
        return;
    }
    println!("{:<24}  {:<36}  {:<26}  {:>8}  {:>8}", "RECEIVED", "COMMAND", "OUTCOME", "ROWS", "MS");
    for row in rows {
        let text = |k: &str| match &row[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        println!(
            "{:<24}  {:<36}  {:<26}  {:>8}  {:>8}",
            text("receivedAt"),
            text("commandId"),
            text("outcome"),
            text("rows"),
            text("durationMs")
        );
    }
}

fn print_status(s: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("state:          {}", text(&s["state"]));
    println!("connected:      {} (since {})", text(&s["connected"]), text(&s["connectedSince"]));
    println!("uptime:         {} s, {} reconnects", text(&s["uptimeSecs"]), text(&s["reconnects"]));
    println!(
        "commands:       {} active, {} completed, {} failed, {} rows returned",
        text(&s["activeCommands"]),
        text(&s["commandsCompleted"]),
        text(&s["commandsFailed"]),
        text(&s["rowsReturned"])
    );
    println!(
        "queue:          {} waiting, {} unacknowledged answers, {} of {} MiB{}",
        text(&s["waitingCommands"]),
        text(&s["queue"]["unacknowledged"]),
        s["queue"]["usedBytes"].as_u64().map_or("-".into(), |b| (b >> 20).to_string()),
        s["queue"]["capBytes"].as_u64().map_or("-".into(), |b| (b >> 20).to_string()),
        if s["queue"]["warning"] == true { " (over 80 %)" } else { "" }
    );
    let dbs: Vec<String> = s["databases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let health = if d["healthy"] == false { ", unreachable" } else { "" };
                    format!("{} ({}{health})", text(&d["name"]), text(&d["type"]))
                })
                .collect()
        })
        .unwrap_or_default();
    println!("databases:      {}", if dbs.is_empty() { "-".to_owned() } else { dbs.join(", ") });
    println!("last error:     {}", text(&s["lastError"]));
}

/// Starts the agent again as a background process and returns once it is up.
fn daemonize(config_path: &Path, config: &AgentConfig) -> ExitCode {
    if let Err(e) = config.load_api_key() {
        eprintln!("error: {e}");
        return config_exit(&e);
    }
    let log_path = config_path.parent().unwrap_or(Path::new(".")).join("agent.log");
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
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: cannot start the agent in the background: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let socket = mini_connector::control::socket_path(config_path, config.control_socket.as_deref());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("error: the agent exited at once ({status}); see {}", log_path.display());
            return ExitCode::from(exit::FAILURE);
        }
        if mini_connector::control::request(&socket, ControlCmd::Status).is_ok() {
            println!("agent running in the background (pid {}); log: {}", child.id(), log_path.display());
            return ExitCode::from(exit::OK);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("error: the agent did not come up within 10 s; see {}", log_path.display());
    ExitCode::from(exit::FAILURE)
}

/// Prints the last `lines` lines of the newest log file.
fn print_logs(config_path: &Path, lines: usize) -> ExitCode {
    let dir = AgentConfig::load(config_path)
        .ok()
        .and_then(|c| c.log_dir)
        .unwrap_or_else(mini_connector::logging::default_log_dir);
    let newest = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("agent"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
    });
    let Some(newest) = newest else {
        eprintln!("no log files in {}", dir.display());
        return ExitCode::from(exit::FAILURE);
    };
    match std::fs::read_to_string(newest.path()) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            for line in &all[all.len().saturating_sub(lines)..] {
                println!("{line}");
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", newest.path().display());
            ExitCode::from(exit::FAILURE)
        }
    }
}
