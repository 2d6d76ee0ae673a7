//! The local control channel: how `mini-connector status|pause|resume|reconnect|stop` reach a
//! running agent.
//!
//! On Unix a socket, mode 0600, next to the configuration file (or at `controlSocket`): only the
//! same OS user (or root) can open it. On Windows a local named pipe derived from that path,
//! whose ACL admits only its owner, SYSTEM and Administrators, and which refuses remote clients.
//! Never a TCP port. One request per connection: a JSON line `{"cmd":"status"}`, answered by one
//! JSON line. The control thread forwards each request to the supervisor, the only writer of
//! agent state, and relays its answer.

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
                let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
                let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
                let Ok(writer) = stream.try_clone() else { continue };
                if serve(stream, writer, &supervisor).is_break() {
                    return;
                }
            }
        })?;
        Ok(Self { path: path.to_owned(), thread: Some(thread) })
    }

    /// Creates the named pipe (refusing if another agent owns it) and starts the thread.
    #[cfg(windows)]
    pub fn start(path: &Path, supervisor: Sender<SupMsg>) -> std::io::Result<Self> {
        let name = pipe::name(path);
        // The first instance is created here so that a second agent fails at once.
        let first = pipe::create(&name, true).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("another agent is running, or the control pipe {name} is unusable: {e}"),
            )
        })?;
        let thread = crate::spawn_named("control", move || {
            let mut instance = Some(first);
            loop {
                let pending = match instance.take() {
                    Some(p) => p,
                    None => match pipe::create(&name, false) {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let Ok(stream) = pipe::accept(pending) else { continue };
                let Ok(writer) = stream.try_clone() else { continue };
                if serve(stream, writer, &supervisor).is_break() {
                    return;
                }
            }
        })?;
        Ok(Self { path: path.to_owned(), thread: Some(thread) })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        #[cfg(windows)]
        if let Some(thread) = self.thread.take() {
            // Wake the blocking ConnectNamedPipe with a connection that carries the stop request.
            if let Ok(mut stream) =
                std::fs::OpenOptions::new().read(true).write(true).open(pipe::name(&self.path))
            {
                let _ = stream.write_all(b"{\"cmd\":\"__close\"}\n");
            }
            crate::join_named(thread);
        }
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
fn serve(
    reader: impl Read,
    mut writer: impl Write,
    supervisor: &Sender<SupMsg>,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow;
    let mut line = String::new();
    if BufReader::new(reader.take(4096)).read_line(&mut line).is_err() {
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
    let _ = writer.flush();
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

/// Sends one request to a running agent over its named pipe and returns its JSON answer.
#[cfg(windows)]
pub fn request(path: &Path, cmd: ControlCmd) -> Result<serde_json::Value, ControlError> {
    let name = pipe::name(path);
    let mut stream = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|_| ControlError::NotRunning(name.clone()))?;
    let text = serde_json::to_string(&Request { cmd }).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    writeln!(stream, "{text}")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(format!("{e}: {line:?}")))
}

/// The Windows named pipe: created with an ACL for the owner, SYSTEM and Administrators only,
/// local clients only. Compiled and checked here with the Windows target; not run here (no
/// Windows machine in this environment).
#[cfg(windows)]
mod pipe {
    use std::fs::File;
    use std::io;
    use std::os::windows::io::FromRawHandle as _;
    use std::path::Path;

    use sha2::Digest as _;
    use windows_sys::Win32::Foundation::{
        ERROR_PIPE_CONNECTED, GetLastError, INVALID_HANDLE_VALUE, LocalFree,
    };
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
    use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX};
    use windows_sys::Win32::System::Pipes::{
        ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE,
        PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
    };

    /// Protected DACL: generic all to the owner, SYSTEM and built-in Administrators; nobody else.
    const SDDL: &str = "D:P(A;;GA;;;OW)(A;;GA;;;SY)(A;;GA;;;BA)";

    /// `\\.\pipe\mini-connector-<hash of the control path>`: one pipe per configuration.
    pub fn name(path: &Path) -> String {
        let digest = sha2::Sha256::digest(path.to_string_lossy().to_lowercase().as_bytes());
        format!(r"\\.\pipe\mini-connector-{}", hex::encode(&digest[..8]))
    }

    /// A pipe instance waiting for a client.
    pub struct Pending(File);

    /// Creates one pipe instance with the restrictive ACL.
    pub fn create(name: &str, first: bool) -> io::Result<Pending> {
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        let sddl: Vec<u16> = SDDL.encode_utf16().chain(std::iter::once(0)).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        let open_mode = PIPE_ACCESS_DUPLEX | if first { FILE_FLAG_FIRST_PIPE_INSTANCE } else { 0 };
        // SAFETY: every pointer passed is valid for the call: NUL-terminated UTF-16 strings that
        // outlive it, an out-pointer for the descriptor (freed with LocalFree right after
        // CreateNamedPipeW copied it), and SECURITY_ATTRIBUTES on the stack. A valid handle is
        // owned by the returned File from then on, which closes it.
        #[allow(unsafe_code)]
        unsafe {
            if ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            ) == 0
            {
                return Err(io::Error::last_os_error());
            }
            let attributes = SECURITY_ATTRIBUTES {
                nLength: u32::try_from(std::mem::size_of::<SECURITY_ATTRIBUTES>()).unwrap_or(0),
                lpSecurityDescriptor: descriptor,
                bInheritHandle: 0,
            };
            let handle = CreateNamedPipeW(
                wide.as_ptr(),
                open_mode,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                4096,
                4096,
                0,
                &attributes,
            );
            let error = io::Error::last_os_error();
            LocalFree(descriptor);
            if handle == INVALID_HANDLE_VALUE {
                return Err(error);
            }
            Ok(Pending(File::from_raw_handle(handle)))
        }
    }

    /// Blocks until a client connects to this instance.
    pub fn accept(pending: Pending) -> io::Result<File> {
        use std::os::windows::io::AsRawHandle as _;
        // SAFETY: the handle is a live pipe instance owned by `pending.0`; no OVERLAPPED is used
        // (synchronous pipe), so a null pointer is allowed.
        #[allow(unsafe_code)]
        let connected = unsafe { ConnectNamedPipe(pending.0.as_raw_handle(), std::ptr::null_mut()) != 0 };
        // SAFETY: GetLastError has no preconditions.
        #[allow(unsafe_code)]
        if connected || unsafe { GetLastError() } == ERROR_PIPE_CONNECTED {
            Ok(pending.0)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
