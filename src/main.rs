//! `mini-connector`: parses the command line and picks a role (the agent, or a one-shot command).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mini_connector::agent::Agent;
use mini_connector::config::AgentConfig;
use mini_connector::supervisor::SupMsg;

/// Exit codes, documented in README.md.
mod exit {
    /// Success, or a clean shutdown.
    pub const OK: u8 = 0;
    /// A runtime failure (database cannot be opened, thread failure...).
    pub const FAILURE: u8 = 1;
    /// Bad configuration or API key (nothing was dialled).
    pub const CONFIG: u8 = 2;
}

/// Mini Connector: a read-only, outbound-only bridge between local databases and the cloud.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = "\
Examples:
  mini-connector start --config /etc/mini-connector/config.json
  mini-connector sample-erp ./erp.db
  mini-connector config check --config ./config.json")]
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
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
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

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and the API key it points to, without dialling.
    Check {
        /// Configuration file.
        #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = default_config_path())]
        config: PathBuf,
    },
}

fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("mini-connector").join("config.json")
}

fn load(path: &Path) -> Result<AgentConfig, ExitCode> {
    AgentConfig::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit::CONFIG)
    })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},ureq=warn,rustls=warn,tungstenite=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Start { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config.log_level);
            if let Err(e) = config.load_api_key() {
                eprintln!("error: {e}");
                return ExitCode::from(exit::CONFIG);
            }
            let agent = match Agent::start(&config) {
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
                    ExitCode::from(exit::CONFIG)
                }
            }
        }
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
