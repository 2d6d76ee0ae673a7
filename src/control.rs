//! The local control channel: how the CLI (`mini-connector status|pause|resume|reconnect|stop|
//! activity`) and the desktop app reach a running agent.
//!
//! On Unix a socket, mode 0600, next to the configuration file (or at `controlSocket`): only the
//! same OS user (or root) can open it. On Windows a local named pipe derived from that path,
//! whose ACL admits only its owner, SYSTEM and Administrators, and which refuses remote clients.
//! Never a TCP port.
//!
//! The messages are the typed ones of [`protocol::control`]: one request per connection, a
//! [`ControlRequest`] JSON line answered by one [`ControlReply`] JSON line. `{"cmd":"subscribe"}`
//! keeps the connection open instead and streams [`AgentEvent`] lines, the current status first.
//! The control thread forwards each request to the supervisor, the only writer of agent state,
//! and relays its answer; setup requests ([`ControlRequest::Setup`]) run on a short-lived thread
//! of their own ([`crate::setup::execute`]), and so do `doctor` ([`crate::doctor::run`]) and
//! diagnostic bundles ([`ControlRequest::DiagBundle`], [`crate::diag`], with the supervisor's
//! status); each subscription runs on a thread that writes its events.
//!
//! **Subscribers cannot hold the agent up.** The supervisor keeps at most
//! [`MAX_SUBSCRIBERS`] ([`Subscribers`]), each with a queue of [`SUBSCRIBER_QUEUE`] events; it
//! never waits on one: a subscriber whose queue is full (a client that stopped reading) or
//! gone is dropped, and its connection closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};

use crate::protocol::control::{AgentEvent, ControlReply, ControlRequest};
use crate::supervisor::SupMsg;

/// How long a control request may take end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a setup request may take (a connection test, a discovery of a large database).
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest request line accepted (a setup form is a few hundred bytes).
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Setup requests running at once on the socket.
const MAX_SETUP_THREADS: usize = 4;
/// Subscribers at once (the GUI, a CLI watching, a few spare).
pub const MAX_SUBSCRIBERS: usize = 8;
/// Events that may wait for one subscriber; a subscriber this far behind is dropped.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// The control commands of the CLI. Kept for callers that only need a verb; the wire carries
/// the [`ControlRequest`] each converts to.
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
    /// Re-read connections and schema privacy from the configuration, keeping the link.
    Reload,
}

impl From<ControlCmd> for ControlRequest {
    fn from(cmd: ControlCmd) -> Self {
        match cmd {
            ControlCmd::Status => Self::Status,
            ControlCmd::Pause => Self::Pause,
            ControlCmd::Resume => Self::Resume,
            ControlCmd::Reconnect => Self::Reconnect,
            ControlCmd::Stop => Self::Stop,
            ControlCmd::Activity => Self::Activity { limit: None },
            ControlCmd::Reload => Self::Reload,
        }
    }
}

/// The supervisor's subscribers: bounded queues, dropped when full or gone.
#[derive(Debug, Default)]
pub struct Subscribers {
    queues: Vec<Sender<AgentEvent>>,
}

impl Subscribers {
    /// A new subscriber whose first event is `first`; `None` when [`MAX_SUBSCRIBERS`] are
    /// already subscribed.
    pub fn add(&mut self, first: AgentEvent) -> Option<Receiver<AgentEvent>> {
        // (Subscribers whose connection closed are pruned by the next `publish`, at most a
        // second away while anyone listens.)
        if self.queues.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        let _ = tx.try_send(first);
        self.queues.push(tx);
        Some(rx)
    }

    /// Queues `event` for every subscriber without waiting; drops those that are full or gone.
    pub fn publish(&mut self, event: &AgentEvent) {
        self.queues.retain(|q| match q.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("a control subscriber stopped reading; dropping it");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Whether anyone listens.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// How many listen.
    pub fn len(&self) -> usize {
        self.queues.len()
    }
}

/// Asks the supervisor (in this process) and waits for its answer.
pub fn ask(supervisor: &Sender<SupMsg>, request: ControlRequest) -> ControlReply {
    let (reply, replies) = crossbeam_channel::bounded(1);
    if supervisor.send(SupMsg::Control { request, reply }).is_err() {
        return ControlReply::error("NOT_RUNNING", "the agent is stopping");
    }
    replies
        .recv_timeout(REQUEST_TIMEOUT)
        .unwrap_or_else(|_| ControlReply::error("NOT_RUNNING", "the agent did not answer in time"))
}

/// Subscribes to the supervisor (in this process): the current status, then every change.
pub fn subscribe(supervisor: &Sender<SupMsg>) -> Result<Receiver<AgentEvent>, ControlReply> {
    let (reply, replies) = crossbeam_channel::bounded(1);
    if supervisor.send(SupMsg::Subscribe { reply }).is_err() {
        return Err(ControlReply::error("NOT_RUNNING", "the agent is stopping"));
    }
    match replies.recv_timeout(REQUEST_TIMEOUT) {
        Ok(Some(events)) => Ok(events),
        Ok(None) => Err(ControlReply::error(
            "BUSY",
            format!("{MAX_SUBSCRIBERS} subscribers are already connected to this agent"),
        )),
        Err(_) => Err(ControlReply::error("NOT_RUNNING", "the agent did not answer in time")),
    }
}

/// What the control thread serves with.
#[derive(Debug, Clone)]
struct Context {
    supervisor: Sender<SupMsg>,
    /// The configuration file, for setup requests (`None`: setup is refused).
    config_path: Option<PathBuf>,
    setups: Arc<AtomicUsize>,
}

/// The control thread. Dropping the handle stops it and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds the socket (refusing if another agent answers on it) and starts the thread.
    /// Setup requests edit `config_path` (refused when `None`).
    #[cfg(unix)]
    pub fn start(
        path: &Path,
        supervisor: Sender<SupMsg>,
        config_path: Option<PathBuf>,
    ) -> std::io::Result<Self> {
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
        let context = Context { supervisor, config_path, setups: Arc::new(AtomicUsize::new(0)) };
        let thread = crate::spawn_named("control", move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
                let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
                let Ok(writer) = stream.try_clone() else { continue };
                if serve(stream, writer, &context).is_break() {
                    return;
                }
            }
        })?;
        Ok(Self { path: path.to_owned(), thread: Some(thread) })
    }

    /// Creates the named pipe (refusing if another agent owns it) and starts the thread.
    /// Setup requests edit `config_path` (refused when `None`).
    #[cfg(windows)]
    pub fn start(
        path: &Path,
        supervisor: Sender<SupMsg>,
        config_path: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let name = pipe::name(path);
        // The first instance is created here so that a second agent fails at once.
        let first = pipe::create(&name, true).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("another agent is running, or the control pipe {name} is unusable: {e}"),
            )
        })?;
        let context = Context { supervisor, config_path, setups: Arc::new(AtomicUsize::new(0)) };
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
                if serve(stream, writer, &context).is_break() {
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

/// Writes one JSON line.
fn write_line(writer: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    writeln!(writer, "{text}")?;
    writer.flush()
}

/// Handles one connection. `Break` ends the control thread.
fn serve(
    reader: impl Read,
    mut writer: impl Write + Send + 'static,
    context: &Context,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow;
    let mut line = String::new();
    if BufReader::new(reader.take(MAX_REQUEST_BYTES)).read_line(&mut line).is_err() {
        return ControlFlow::Continue(());
    }
    if line.contains("\"__close\"") {
        return ControlFlow::Break(());
    }
    let request = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = write_line(&mut writer, &ControlReply::error("BAD_REQUEST", format!("bad request: {e}")));
            return ControlFlow::Continue(());
        }
    };
    let answer = match request {
        ControlRequest::Subscribe => match subscribe(&context.supervisor) {
            Ok(events) => {
                let streamed = crate::spawn_named("control-events", move || {
                    for event in events {
                        if write_line(&mut writer, &event).is_err() {
                            return; // the client left: dropping `events` unsubscribes
                        }
                    }
                });
                if streamed.is_err() {
                    tracing::warn!("cannot start a thread for a control subscriber");
                }
                return ControlFlow::Continue(());
            }
            Err(reply) => reply,
        },
        ControlRequest::Setup(setup) => {
            return on_setup_thread(context, writer, "control-setup", move |config_path| {
                crate::setup::execute(config_path, *setup)
            });
        }
        // Dials and opens databases for up to a minute: on its own thread, like setup work.
        ControlRequest::Doctor => {
            return on_setup_thread(context, writer, "control-doctor", |config_path| {
                ControlReply::Doctor(crate::doctor::run(config_path))
            });
        }
        // Discovers each schema and reads the logs: on its own thread, like setup work.
        ControlRequest::DiagBundle { out } => {
            let supervisor = context.supervisor.clone();
            return on_setup_thread(context, writer, "control-diag", move |config_path| {
                let status = match ask(&supervisor, ControlRequest::Status) {
                    ControlReply::Status(status) => Some(status),
                    _ => None,
                };
                diag_reply(config_path, out.as_deref(), status.as_deref())
            });
        }
        // The agent answering is running already.
        ControlRequest::Start => ControlReply::Ok,
        other => ask(&context.supervisor, other),
    };
    let _ = write_line(&mut writer, &answer);
    ControlFlow::Continue(())
}

/// Answers a request that works on the configuration file (setup work, `doctor`) on a thread
/// of its own, at most [`MAX_SETUP_THREADS`] at once, so the control thread keeps serving.
fn on_setup_thread(
    context: &Context,
    mut writer: impl Write + Send + 'static,
    name: &str,
    work: impl FnOnce(&Path) -> ControlReply + Send + 'static,
) -> std::ops::ControlFlow<()> {
    let Some(config_path) = context.config_path.clone() else {
        let reply = ControlReply::error("BAD_REQUEST", "this agent was started without a configuration file");
        let _ = write_line(&mut writer, &reply);
        return std::ops::ControlFlow::Continue(());
    };
    if context.setups.fetch_add(1, Ordering::AcqRel) >= MAX_SETUP_THREADS {
        context.setups.fetch_sub(1, Ordering::AcqRel);
        let _ =
            write_line(&mut writer, &ControlReply::error("BUSY", "too many setup requests at once; retry"));
        return std::ops::ControlFlow::Continue(());
    }
    let setups = context.setups.clone();
    let spawned = crate::spawn_named(name, move || {
        let reply = work(&config_path);
        let _ = write_line(&mut writer, &reply);
        setups.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        context.setups.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!("cannot start a thread ({name}) for a control request");
    }
    std::ops::ControlFlow::Continue(())
}

/// Builds a diagnostic bundle for a control request: `out`, or the default file name in the
/// configuration's directory (the agent's working directory means nothing to the caller).
pub fn diag_reply(
    config_path: &Path,
    out: Option<&str>,
    status: Option<&crate::protocol::control::StatusSnapshot>,
) -> ControlReply {
    let out = match out {
        Some(out) if !Path::new(out).is_absolute() => {
            return ControlReply::error("INVALID_INPUT", format!("the bundle path must be absolute: {out}"));
        }
        Some(out) => PathBuf::from(out),
        None => {
            let name = crate::config::AgentConfig::load(config_path)
                .map(|c| c.connector_name)
                .unwrap_or_else(|_| "connector".into());
            config_path.parent().unwrap_or(Path::new(".")).join(crate::diag::default_file_name(&name))
        }
    };
    match crate::diag::bundle_with(config_path, Some(&out), status) {
        Ok(info) => {
            tracing::info!(path = %info.path, bytes = info.bytes, "diagnostic bundle written");
            ControlReply::Bundle(info)
        }
        Err(e) => ControlReply::error(e.code(), e.to_string()),
    }
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
    /// The answer was not the expected JSON.
    #[error("control channel: bad answer: {0}")]
    BadAnswer(String),
}

/// A connection to a running agent's control channel.
#[cfg(unix)]
type Stream = std::os::unix::net::UnixStream;
/// A connection to a running agent's control channel.
#[cfg(windows)]
type Stream = std::fs::File;

/// Opens a connection and writes `request`; `timeout` bounds each read.
fn open(path: &Path, request: &ControlRequest, timeout: Option<Duration>) -> Result<Stream, ControlError> {
    #[cfg(unix)]
    let mut stream = {
        let stream =
            Stream::connect(path).map_err(|_| ControlError::NotRunning(path.display().to_string()))?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        stream
    };
    #[cfg(windows)]
    let mut stream = {
        let _ = timeout; // synchronous pipes have no read timeout; the agent answers or closes
        let name = pipe::name(path);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
            .map_err(|_| ControlError::NotRunning(name.clone()))?
    };
    let text = serde_json::to_string(request).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    writeln!(stream, "{text}")?;
    stream.flush()?;
    Ok(stream)
}

/// Sends one request to a running agent and returns its answer.
pub fn call(path: &Path, request: &ControlRequest) -> Result<ControlReply, ControlError> {
    let timeout = match request {
        ControlRequest::Setup(_) | ControlRequest::Doctor | ControlRequest::DiagBundle { .. } => {
            SETUP_TIMEOUT
        }
        _ => REQUEST_TIMEOUT + Duration::from_secs(1),
    };
    let stream = open(path, request, Some(timeout))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(ControlError::BadAnswer("the agent closed the connection without answering".into()));
    }
    serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(format!("{e}: {line:?}")))
}

/// Sends one command to a running agent and returns its answer as JSON (the
/// [`ControlReply`] serialized). Prefer [`call`].
pub fn request(path: &Path, cmd: ControlCmd) -> Result<serde_json::Value, ControlError> {
    let reply = call(path, &cmd.into())?;
    serde_json::to_value(reply).map_err(|e| ControlError::BadAnswer(e.to_string()))
}

/// The events of a subscription over the control channel, one per line; ends when the agent
/// closes the connection (it stopped, or dropped this subscriber as too slow).
#[derive(Debug)]
pub struct EventStream {
    first: Option<String>,
    lines: std::io::Lines<BufReader<Stream>>,
}

impl Iterator for EventStream {
    type Item = Result<AgentEvent, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.first.take() {
            Some(line) => line,
            None => match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e.into())),
            },
        };
        Some(serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(format!("{e}: {line:?}"))))
    }
}

/// Subscribes to a running agent's events over its control channel. `idle` bounds the wait
/// for each event (the agent sends a status at least every second); `None` waits forever.
pub fn events(path: &Path, idle: Option<Duration>) -> Result<EventStream, ControlError> {
    let stream = open(path, &ControlRequest::Subscribe, idle)?;
    let mut reader = BufReader::new(stream);
    // The first line is the current status, or an error reply (too many subscribers).
    let mut first = String::new();
    reader.read_line(&mut first)?;
    if let Ok(ControlReply::Error { code, message }) = serde_json::from_str::<ControlReply>(&first) {
        return Err(ControlError::BadAnswer(format!("{code}: {message}")));
    }
    if first.is_empty() {
        return Err(ControlError::BadAnswer("the agent closed the subscription at once".into()));
    }
    Ok(EventStream { first: Some(first.trim_end().to_owned()), lines: reader.lines() })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AgentEvent {
        AgentEvent::Log { level: "warn".into(), message: format!("event {n}"), at: String::new() }
    }

    #[test]
    fn a_subscriber_that_stops_reading_is_dropped_without_blocking() {
        let mut subscribers = Subscribers::default();
        let slow = subscribers.add(event(0)).unwrap();
        let fast = subscribers.add(event(0)).unwrap();
        let mut read = 0;
        let started = std::time::Instant::now();
        for n in 1..=SUBSCRIBER_QUEUE * 2 {
            subscribers.publish(&event(n));
            read += fast.try_iter().count();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "publishing never waits");
        assert_eq!(subscribers.len(), 1, "the full subscriber was dropped, the reading one kept");
        assert_eq!(read, SUBSCRIBER_QUEUE * 2 + 1, "the reading one got everything");
        // The slow one gets what fit in its queue, then the end of the stream.
        assert_eq!(slow.iter().count(), SUBSCRIBER_QUEUE);
    }

    #[test]
    fn subscribers_are_limited_and_a_closed_one_frees_its_place() {
        let mut subscribers = Subscribers::default();
        let mut held: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| subscribers.add(event(0)).unwrap()).collect();
        assert!(subscribers.add(event(0)).is_none(), "no more than MAX_SUBSCRIBERS");
        held.pop();
        subscribers.publish(&event(1));
        assert!(subscribers.add(event(0)).is_some(), "a closed subscriber is pruned by the next publish");
    }
}
