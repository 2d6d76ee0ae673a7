//! The local control channel: how `mini-connector status|pause|resume|reconnect|stop` reach a
//! running agent.
//!
//! A Unix socket, mode 0600, next to the configuration file (or at `controlSocket`): only the
//! same OS user (or root) can open it, and it is never a TCP port. One request per connection:
//! a JSON line `{"cmd":"status"}`, answered by one JSON line. The control thread forwards each
//! request to the supervisor, the only writer of agent state, and relays its answer.
//! Windows named pipes are not implemented yet: there the commands report that clearly.

// The socket side is Unix-only for now; on Windows these items are unused until the named
// pipe lands.
#![cfg_attr(not(unix), allow(unused_imports, dead_code))]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::supervisor::SupMsg;

/// How long a control request may take end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What an operator can ask a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlCmd {
    /// A status snapshot.
    Status,
    /// Refuse new commands (`AGENT_PAUSED`) until resumed; running ones finish.
    Pause,
    /// Take commands again.
    Resume,
    /// Drop the connection and dial again now.
    Reconnect,
    /// Shut down gracefully.
    Stop,
    /// The most recent commands (the audit tail kept in memory).
    Activity,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cmd: ControlCmd,
}

/// The control thread. Dropping the handle stops it and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds the socket (refusing if another agent answers on it) and starts the thread.
    #[cfg(unix)]
    pub fn start(path: &Path, supervisor: Sender<SupMsg>) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::net::{UnixListener, UnixStream};

        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another agent is running (control socket {} answers)", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let thread = crate::spawn_named("control", move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if serve(stream, &supervisor).is_break() {
                    return;
                }
            }
        })?;
        Ok(Self { path: path.to_owned(), thread: Some(thread) })
    }

    /// Windows named pipes are not implemented yet.
    #[cfg(not(unix))]
    pub fn start(_path: &Path, _supervisor: Sender<SupMsg>) -> std::io::Result<Self> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "control channel is not available on this platform yet",
        ))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(thread) = self.thread.take() {
            // Wake the blocking accept with a connection that carries the stop request.
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&self.path) {
                let _ = stream.write_all(b"{\"cmd\":\"__close\"}\n");
            }
            let _ = std::fs::remove_file(&self.path);
            crate::join_named(thread);
        }
    }
}

/// Handles one connection. `Break` ends the control thread.
#[cfg(unix)]
fn serve(stream: std::os::unix::net::UnixStream, supervisor: &Sender<SupMsg>) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow;
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let mut line = String::new();
    let Ok(mut writer) = stream.try_clone() else { return ControlFlow::Continue(()) };
    let mut reader = BufReader::new(stream.take(4096));
    if reader.read_line(&mut line).is_err() {
        return ControlFlow::Continue(());
    }
    if line.contains("\"__close\"") {
        return ControlFlow::Break(());
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (reply, replies) = crossbeam_channel::bounded(1);
            if supervisor.send(SupMsg::Control { cmd: request.cmd, reply }).is_err() {
                serde_json::json!({ "ok": false, "error": "agent is stopping" })
            } else {
                replies.recv_timeout(REQUEST_TIMEOUT).unwrap_or_else(
                    |_| serde_json::json!({ "ok": false, "error": "agent did not answer in time" }),
                )
            }
        }
        Err(e) => serde_json::json!({ "ok": false, "error": format!("bad request: {e}") }),
    };
    let _ = writeln!(writer, "{answer}");
    ControlFlow::Continue(())
}

/// The socket path for a configuration: `controlSocket` if set, else `agent.sock` next to the
/// configuration file.
pub fn socket_path(config_path: &Path, configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(path) => path.to_owned(),
        None => config_path.parent().unwrap_or(Path::new(".")).join("agent.sock"),
    }
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("no agent is running for this configuration (control socket {0})")]
    NotRunning(String),
    /// The exchange failed.
    #[error("control channel: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not JSON.
    #[error("control channel: bad answer: {0}")]
    BadAnswer(String),
}

/// Sends one request to a running agent and returns its JSON answer.
#[cfg(unix)]
pub fn request(path: &Path, cmd: ControlCmd) -> Result<serde_json::Value, ControlError> {
    use std::os::unix::net::UnixStream;
    let mut stream =
        UnixStream::connect(path).map_err(|_| ControlError::NotRunning(path.display().to_string()))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT + Duration::from_secs(1)))?;
    let text = serde_json::to_string(&Request { cmd }).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    writeln!(stream, "{text}")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(format!("{e}: {line:?}")))
}

/// Windows named pipes are not implemented yet.
#[cfg(not(unix))]
pub fn request(path: &Path, _cmd: ControlCmd) -> Result<serde_json::Value, ControlError> {
    Err(ControlError::NotRunning(path.display().to_string()))
}
