//! Driving an agent from a UI: [`AgentHandle`] for an agent in this process, and the two
//! [`Backend`]s the desktop app is written against.
//!
//! - [`AgentHandle`]: starts the agent from a configuration file (with its control socket, so
//!   the CLI still reaches it and a second agent refuses to start), then status, pause,
//!   resume, reconnect, stop, and a subscription to its [`AgentEvent`]s (a crossbeam receiver
//!   or a callback). Everything goes through the supervisor's inbox, like the control socket.
//! - [`LocalBackend`]: an in-process agent behind the [`Backend`] API. It starts the agent at
//!   creation when the configuration is complete (else on [`ControlRequest::Start`]), and
//!   restarts it after a setup request that changed the configuration file (or `configure`,
//!   which may store a new key in the vault). Subscribers stay subscribed across restarts: a
//!   restart shows as `stopped`, then the new agent's status.
//! - [`RemoteBackend`]: an agent running as a service, over its control socket / pipe: one
//!   connection per request, one long-lived subscription that reconnects when the service
//!   restarts.
//! - [`attach_or_local`]: remote when an agent already answers on the configuration's control
//!   socket (the GUI must never start a second agent), else local.
//!
//! Setup requests ([`ControlRequest::Setup`]) are carried out by [`crate::setup::execute`] in
//! both cases (by the service's control thread for the remote one), [`ControlRequest::Doctor`]
//! by [`crate::doctor::run`] likewise, and diagnostic bundles ([`ControlRequest::DiagBundle`])
//! by [`crate::control::diag_reply`] with the agent's status.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender};

use crate::agent::Agent;
use crate::config::AgentConfig;
use crate::protocol::control::{
    AgentEvent, Backend, ControlReply, ControlRequest, SetupRequest, StatusSnapshot,
};
use crate::supervisor::SupMsg;

/// How long a stop may take before the handle gives up waiting (commands get 30 s at most).
const STOP_WAIT: Duration = Duration::from_secs(45);
/// Pause between attempts to re-subscribe to a service that went away.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);
/// A subscription over the socket that hears nothing for this long is reopened (the agent
/// sends a status every second).
const SUBSCRIPTION_IDLE: Duration = Duration::from_secs(5);

/// The control socket of a configuration file (its `controlSocket`, else next to it).
pub fn control_socket(config_path: &Path) -> PathBuf {
    let configured = AgentConfig::load(config_path).ok().and_then(|c| c.control_socket);
    crate::control::socket_path(config_path, configured.as_deref())
}

/// An agent running in this process.
#[derive(Debug)]
pub struct AgentHandle {
    inbox: Sender<SupMsg>,
    /// Runs `Agent::wait`.
    waiter: Option<JoinHandle<()>>,
    /// The shutdown reason, once the agent stopped.
    stopped: Receiver<String>,
}

impl AgentHandle {
    /// Loads the configuration at `config_path`, checks the API key and starts the agent with
    /// its control socket.
    pub fn start(config_path: &Path) -> anyhow::Result<Self> {
        let config = AgentConfig::load(config_path)?;
        // The key check here and the start share one vault key derivation.
        let vault_hold = config.hold_vault();
        config.load_api_key()?;
        let socket = crate::control::socket_path(config_path, config.control_socket.as_deref());
        let agent = Agent::start_from(config_path, &config, Some(&socket))?;
        drop(vault_hold);
        let inbox = agent.inbox();
        let (done, stopped) = crossbeam_channel::bounded(1);
        let waiter = crate::spawn_named("agent-wait", move || {
            let _ = done.send(agent.wait());
        })
        .context("starting the agent")?;
        Ok(Self { inbox, waiter: Some(waiter), stopped })
    }

    /// Sends a request to the supervisor and waits for its answer (status, activity, pause,
    /// resume, reconnect, stop).
    pub fn request(&self, request: ControlRequest) -> ControlReply {
        crate::control::ask(&self.inbox, request)
    }

    /// The current status.
    pub fn status(&self) -> Result<StatusSnapshot, ControlReply> {
        match self.request(ControlRequest::Status) {
            ControlReply::Status(snapshot) => Ok(*snapshot),
            other => Err(other),
        }
    }

    /// Refuses new commands until [`AgentHandle::resume`].
    pub fn pause(&self) -> ControlReply {
        self.request(ControlRequest::Pause)
    }

    /// Takes commands again.
    pub fn resume(&self) -> ControlReply {
        self.request(ControlRequest::Resume)
    }

    /// Drops the connection and dials again now.
    pub fn reconnect(&self) -> ControlReply {
        self.request(ControlRequest::Reconnect)
    }

    /// The agent's events: its status now, then every change; bounded (a receiver that is not
    /// read is dropped by the agent, and the channel closes).
    pub fn subscribe(&self) -> Result<Receiver<AgentEvent>, ControlReply> {
        crate::control::subscribe(&self.inbox)
    }

    /// Calls `sink` for every event, from a thread of its own, until the agent stops.
    pub fn subscribe_with(
        &self,
        sink: impl Fn(AgentEvent) + Send + 'static,
    ) -> Result<JoinHandle<()>, ControlReply> {
        let events = self.subscribe()?;
        crate::spawn_named("agent-events", move || {
            for event in events {
                sink(event);
            }
        })
        .map_err(|e| ControlReply::error("IO", format!("cannot start a thread: {e}")))
    }

    /// Whether the agent still runs (it stops by itself on a decommission).
    pub fn is_running(&self) -> bool {
        self.waiter.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Stops the agent gracefully (running commands get up to 30 s) and returns why it stopped.
    pub fn stop(mut self) -> String {
        self.shutdown()
    }

    fn shutdown(&mut self) -> String {
        let Some(waiter) = self.waiter.take() else { return "already stopped".into() };
        let _ = self.inbox.send(SupMsg::Shutdown {
            reason: "stopped by the operator".into(),
            grace: Duration::from_secs(30),
        });
        match self.stopped.recv_timeout(STOP_WAIT) {
            Ok(reason) => {
                let _ = waiter.join();
                reason
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let _ = waiter.join();
                "the agent thread panicked".into()
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => "the agent did not stop in time".into(),
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if self.waiter.is_some() {
            self.shutdown();
        }
    }
}

/// Event sinks shared by every incarnation of a local agent.
type Sinks = Arc<Mutex<Vec<Box<dyn Fn(AgentEvent) + Send + 'static>>>>;

/// Calls every sink with `event`.
fn deliver(sinks: &Sinks, event: &AgentEvent) {
    for sink in sinks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        sink(event.clone());
    }
}

/// An agent in this process behind the [`Backend`] API.
pub struct LocalBackend {
    config_path: PathBuf,
    agent: Mutex<Option<AgentHandle>>,
    sinks: Sinks,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").field("config_path", &self.config_path).finish()
    }
}

impl LocalBackend {
    /// A backend for the configuration at `config_path`; the agent starts now when that
    /// configuration is complete (it loads and its API key is stored), else on
    /// [`ControlRequest::Start`].
    pub fn new(config_path: PathBuf) -> Self {
        let backend = Self { config_path, agent: Mutex::new(None), sinks: Arc::default() };
        if Self::complete(&backend.config_path) {
            let mut agent = backend.agent.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(reply) = backend.start_locked(&mut agent) {
                tracing::warn!(?reply, "the agent did not start");
            }
        }
        backend
    }

    /// Whether the configuration can run an agent (it loads, and its key is stored).
    fn complete(config_path: &Path) -> bool {
        AgentConfig::load(config_path).is_ok_and(|c| c.load_api_key().is_ok())
    }

    /// Starts the agent into `slot` and forwards its events to the sinks.
    fn start_locked(&self, slot: &mut Option<AgentHandle>) -> Result<(), ControlReply> {
        if slot.as_ref().is_some_and(AgentHandle::is_running) {
            return Ok(());
        }
        let handle = AgentHandle::start(&self.config_path)
            .map_err(|e| ControlReply::error("NOT_RUNNING", format!("the agent cannot start: {e:#}")))?;
        let sinks = self.sinks.clone();
        handle.subscribe_with(move |event| deliver(&sinks, &event))?;
        *slot = Some(handle);
        Ok(())
    }

    /// Stops the agent in `slot`, if any.
    fn stop_locked(slot: &mut Option<AgentHandle>) {
        if let Some(handle) = slot.take() {
            let reason = handle.stop();
            tracing::info!(%reason, "in-process agent stopped");
        }
    }

    /// Carries out a setup request; restarts the agent when the configuration changed (or
    /// starts it when the configuration just became complete).
    fn setup(&self, request: SetupRequest) -> ControlReply {
        let restart_always = matches!(request, SetupRequest::Configure(_));
        let before = std::fs::read(&self.config_path).ok();
        let reply = crate::setup::execute(&self.config_path, request);
        if matches!(reply, ControlReply::Error { .. }) {
            return reply;
        }
        let changed = restart_always || std::fs::read(&self.config_path).ok() != before;
        if changed {
            let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
            let was_running = agent.as_ref().is_some_and(AgentHandle::is_running);
            if was_running || Self::complete(&self.config_path) {
                Self::stop_locked(&mut agent);
                if let Err(error) = self.start_locked(&mut agent) {
                    tracing::warn!(?error, "the agent did not start again after a configuration change");
                }
            }
        }
        reply
    }
}

impl Backend for LocalBackend {
    fn request(&self, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Setup(setup) => self.setup(*setup),
            ControlRequest::Doctor => ControlReply::Doctor(crate::doctor::run(&self.config_path)),
            ControlRequest::Start => {
                let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                match self.start_locked(&mut agent) {
                    Ok(()) => ControlReply::Ok,
                    Err(reply) => reply,
                }
            }
            ControlRequest::Stop => {
                let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                Self::stop_locked(&mut agent);
                ControlReply::Stopping
            }
            ControlRequest::Subscribe => {
                ControlReply::error("BAD_REQUEST", "subscribe with Backend::subscribe, not as a request")
            }
            ControlRequest::DiagBundle { out } => {
                // The status now, then the bundle without holding the agent (discovery is slow).
                let status = {
                    let agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                    agent.as_ref().filter(|a| a.is_running()).and_then(|a| a.status().ok())
                };
                crate::control::diag_reply(&self.config_path, out.as_deref(), status.as_ref())
            }
            other => {
                let agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                match agent.as_ref().filter(|a| a.is_running()) {
                    Some(handle) => handle.request(other),
                    None => ControlReply::error("NOT_RUNNING", "the agent is not running"),
                }
            }
        }
    }

    fn subscribe(&self, sink: Box<dyn Fn(AgentEvent) + Send + 'static>) {
        // The current status first, like a subscription over the socket.
        let agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = agent.as_ref().filter(|a| a.is_running())
            && let Ok(status) = handle.status()
        {
            sink(AgentEvent::Status(Box::new(status)));
        }
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
    }

    fn in_process(&self) -> bool {
        true
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        Self::stop_locked(&mut agent);
    }
}

/// An agent running as a service, over its control socket / pipe.
#[derive(Debug)]
pub struct RemoteBackend {
    socket_path: PathBuf,
    /// Never sent on; dropped with the backend, which subscription threads notice within a
    /// second and end.
    _alive: Sender<()>,
    alive_rx: Receiver<()>,
}

impl RemoteBackend {
    /// A backend for the agent answering on `socket_path`.
    pub fn new(socket_path: PathBuf) -> Self {
        let (alive, alive_rx) = crossbeam_channel::bounded(0);
        Self { socket_path, _alive: alive, alive_rx }
    }
}

/// A client-side failure as a reply.
fn client_error(error: &crate::control::ControlError) -> ControlReply {
    match error {
        crate::control::ControlError::NotRunning(_) => ControlReply::error("NOT_RUNNING", error.to_string()),
        _ => ControlReply::error("IO", error.to_string()),
    }
}

impl Backend for RemoteBackend {
    fn request(&self, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Subscribe => {
                ControlReply::error("BAD_REQUEST", "subscribe with Backend::subscribe, not as a request")
            }
            ControlRequest::Start => match crate::control::call(&self.socket_path, &ControlRequest::Status) {
                Ok(ControlReply::Status(_)) => ControlReply::Ok,
                Ok(other) => other,
                Err(e) => ControlReply::error(
                    "NOT_RUNNING",
                    format!(
                        "the agent service is not running; start it with the system's service manager ({e})"
                    ),
                ),
            },
            other => crate::control::call(&self.socket_path, &other).unwrap_or_else(|e| client_error(&e)),
        }
    }

    fn subscribe(&self, sink: Box<dyn Fn(AgentEvent) + Send + 'static>) {
        let path = self.socket_path.clone();
        let alive = self.alive_rx.clone();
        let spawned = crate::spawn_named("remote-events", move || {
            let gone = || matches!(alive.try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected));
            // Whether the last subscription delivered anything (to tell the sink once that the
            // service went away).
            let mut attached = false;
            loop {
                if let Ok(events) = crate::control::events(&path, Some(SUBSCRIPTION_IDLE)) {
                    for event in events {
                        if gone() {
                            return;
                        }
                        match event {
                            Ok(event) => {
                                attached = !matches!(event, AgentEvent::Stopped { .. });
                                sink(event);
                            }
                            Err(_) => break,
                        }
                    }
                }
                if std::mem::take(&mut attached) {
                    sink(AgentEvent::Stopped { reason: "lost the connection to the agent service".into() });
                }
                match alive.recv_timeout(RESUBSCRIBE_EVERY) {
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                    _ => continue,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the subscription thread");
        }
    }

    fn in_process(&self) -> bool {
        false
    }
}

/// The backend for the configuration at `config_path`: the agent answering on its control
/// socket when there is one (a service), else an in-process agent.
pub fn attach_or_local(config_path: &Path) -> Box<dyn Backend> {
    let socket = control_socket(config_path);
    match crate::control::call(&socket, &ControlRequest::Status) {
        Ok(ControlReply::Status(_)) => Box::new(RemoteBackend::new(socket)),
        _ => Box::new(LocalBackend::new(config_path.to_owned())),
    }
}
