//! The one-shot commands that change or inspect this machine's setup: `configure`, `key`,
//! `vault`, `db`, `schema`, `service`, `audit`, `doctor`, `diag` and (hidden, for packaging) `generate`. Each returns [`Outcome`]
//! (`doctor` its exit code); `main` turns a
//! [`Fail`] into its documented exit code.
//!
//! The work itself is the library's `mini_connector::setup` (shared with the desktop app):
//! these modules parse flags, prompt for secrets and print text or `--json` ([`output`]: the
//! envelope, error codes, escaped text and tables).
//!
//! Secrets typed by the user (API key, database passwords) are read from a no-echo prompt or
//! from stdin, held in zeroizing buffers, checked, stored in the vault (or the OS credential
//! store) and dropped. They are never printed, logged or written anywhere else; the API key is
//! shown masked.

/// `println!` for the text view only: with `--json` the command prints its data object instead.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::output::json() {
            println!($($arg)*);
        }
    };
}

pub mod audit;
pub mod configure;
pub mod db;
pub mod diag;
pub mod doctor;
pub mod generate;
pub mod output;
pub mod schema;
pub mod service;
pub mod update;

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

use mini_connector::config::{AgentConfig, ConfigError};
use zeroize::Zeroizing;

use crate::exit;

/// A failed command: the exit code it maps to, and the message.
#[derive(Debug)]
pub struct Fail {
    /// One of [`crate::exit`].
    pub code: u8,
    /// What went wrong (printed with its causes).
    pub error: anyhow::Error,
}

/// The result of a command.
pub type Outcome = Result<(), Fail>;

impl Fail {
    /// Bad usage, bad configuration or a malformed key: exit 2.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self { code: exit::CONFIG, error: anyhow::anyhow!("{message}") }
    }

    /// A runtime failure (database unreachable, I/O, a service manager error): exit 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self { code: exit::FAILURE, error: error.into() }
    }
}

impl From<ConfigError> for Fail {
    fn from(error: ConfigError) -> Self {
        let code = match &error {
            e if e.is_vault_decrypt() => exit::VAULT,
            ConfigError::Vault { .. } | ConfigError::Write { .. } => exit::FAILURE,
            _ => exit::CONFIG,
        };
        Self { code, error: error.into() }
    }
}

impl From<mini_connector::setup::SetupError> for Fail {
    fn from(error: mini_connector::setup::SetupError) -> Self {
        use mini_connector::setup::SetupError;
        match error {
            SetupError::Config(e) => Self::from(e),
            e if e.is_usage() => Self::coded(exit::CONFIG, e.code(), e.to_string()),
            e => Self::coded(exit::FAILURE, e.code(), e.to_string()),
        }
    }
}

/// `--config PATH`, shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, env = "MINI_CONNECTOR_CONFIG", default_value_os_t = crate::default_config_path())]
    pub config: PathBuf,
}

impl ConfigArg {
    /// The configuration file as an absolute path.
    pub fn path(&self) -> PathBuf {
        absolute(&self.config)
    }

    /// Loads and validates the configuration; a missing file says to run `configure`.
    pub fn load(&self) -> Result<AgentConfig, Fail> {
        let path = self.path();
        if !path.exists() {
            return Err(Fail::coded(
                exit::CONFIG,
                "NOT_CONFIGURED",
                format!(
                    "no configuration at {}; create one with `mini-connector configure --name NAME --cloud-url wss://... --api-key-stdin`",
                    path.display()
                ),
            ));
        }
        Ok(AgentConfig::load(&path)?)
    }
}

/// A path flag that may be given empty (`--ca-cert ""`): the empty value removes the field.
/// (clap's own path parser refuses an empty value.)
pub fn path_or_empty(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(text))
}

/// A port flag where `""` (like 0) removes the port.
pub fn port_or_empty(text: &str) -> Result<u16, String> {
    if text.trim().is_empty() {
        return Ok(0);
    }
    text.trim().parse().map_err(|e| format!("{e} (a port is 1-65535; \"\" or 0 removes it)"))
}

/// `path` made absolute against the current directory (not resolving links).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Reads a secret from stdin: the first line, without its line ending. Refuses an empty one.
pub fn secret_from_stdin(what: &str) -> Result<Zeroizing<String>, Fail> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| Fail::usage(format!("cannot read the {what} from stdin: {e}")))?;
    let line = Zeroizing::new(text.lines().next().unwrap_or_default().to_owned());
    if line.is_empty() {
        return Err(Fail::usage(format!("no {what} on stdin")));
    }
    Ok(line)
}

/// Asks for a secret on the terminal without echo. Fails (exit 2) when there is no terminal,
/// so a script gets a clear error instead of a hang.
pub fn secret_from_prompt(prompt: &str, what: &str, stdin_flag: &str) -> Result<Zeroizing<String>, Fail> {
    if output::json() {
        // A prompt would land in the middle of the JSON answer (and scripts cannot answer it).
        return Err(Fail::coded(
            exit::CONFIG,
            "USAGE",
            format!("--json does not prompt for the {what}; pipe it in with {stdin_flag}"),
        ));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Fail::usage(format!("no terminal to ask for the {what}; pipe it in with {stdin_flag}")));
    }
    // Ctrl-C: echo restored, exit 130.
    let text = mini_connector::prompt::password(prompt)
        .map_err(|e| Fail::usage(format!("cannot read the {what} from the terminal: {e}")))?;
    if text.is_empty() {
        return Err(Fail::usage(format!("empty {what}")));
    }
    Ok(text)
}

/// Prints a command's `--json` data in the envelope (`{"ok": true, "data": …}`, one line).
pub fn print_json(value: &serde_json::Value) {
    output::print_ok(value);
}

/// After a change of connections or schema privacy: tells the agent running for this
/// configuration, if any, to reload (it keeps its cloud link) and prints what it applied (text
/// view). Gives the outcome for `--json`: `reloaded`, `applies at start` or `reload failed`.
pub fn reload_running_agent(config_path: &Path, config: &AgentConfig) -> &'static str {
    use mini_connector::protocol::control::{ControlReply, ControlRequest};
    let socket = mini_connector::control::socket_path(config_path, config.control_socket.as_deref());
    if !socket.exists() {
        say!("the agent applies this when it starts");
        return "applies at start";
    }
    match mini_connector::control::call(&socket, &ControlRequest::Reload) {
        Ok(ControlReply::Message(text)) => {
            say!("running agent {}", output::escape(&text));
            "reloaded"
        }
        Ok(ControlReply::Error { message, .. }) => {
            say!(
                "note: the running agent did not reload ({}); run `mini-connector reload`",
                output::escape(&message)
            );
            "reload failed"
        }
        Err(mini_connector::control::ControlError::NotRunning(_)) => {
            say!("the agent applies this when it starts");
            "applies at start"
        }
        Ok(_) | Err(_) => {
            say!("note: run `mini-connector reload` so the running agent applies this");
            "reload failed"
        }
    }
}

/// Whether an agent answers on this configuration's control socket (to remind the user to
/// restart it after a change).
pub fn agent_running(config_path: &Path, config: &AgentConfig) -> bool {
    let socket = mini_connector::control::socket_path(config_path, config.control_socket.as_deref());
    socket.exists()
        && mini_connector::control::request(&socket, mini_connector::control::ControlCmd::Status).is_ok()
}
