//! Mini Connector's desktop app: the FLTK dashboard, the status indicator and the first-run
//! setup wizard (spec §3.1–§3.5, §8.1), drawn over a [`protocol::control::Backend`] — an agent
//! in the same process or one running as a service behind the control socket.
//!
//! - [`model`]: the view logic as plain functions and structs (what every section shows for a
//!   status, an event sequence or a reply; the wizard's state machine; the rolling latency
//!   window; the Exit rule), unit-tested without a display.
//! - `ui` (private): FLTK widgets that draw what the model says. FLTK owns the calling thread;
//!   backend requests run on worker threads and come back through a channel + `app::awake()`.
//! - [`fake::ScriptedBackend`]: canned data and a scripted event sequence, for tests and
//!   `examples/preview.rs`.
//! - [`harness`]: Xvfb + xdotool + ImageMagick helpers to drive any build of the app with real
//!   input events and take screenshots (used by `tests/`, reusable for the real binary).
//!
//! Connecting a tray (the `tray` crate) takes a few lines in the binary:
//!
//! ```text
//! let (actions, inbox) = gui::action_channel();
//! let tray = tray::Tray::start(Box::new(move |a| actions.send(match a {
//!     tray::TrayAction::OpenDashboard => gui::UiAction::OpenDashboard,
//!     tray::TrayAction::TogglePause => gui::UiAction::TogglePause,
//!     tray::TrayAction::ViewLastActivity => gui::UiAction::ViewLastActivity,
//!     tray::TrayAction::Reconnect => gui::UiAction::Reconnect,
//!     tray::TrayAction::Exit => gui::UiAction::Exit,
//! })))?;
//! let mut options = gui::GuiOptions::new(state_dir);
//! options.actions = Some(inbox);
//! options.close_to_tray = true;
//! options.on_status = Some(Box::new(move |indicator, tooltip, paused| tray.set_state(indicator, tooltip, paused)));
//! gui::run(backend, options)?;
//! ```
//!
//! ```no_run
//! use std::sync::Arc;
//! let backend = Arc::new(gui::fake::ScriptedBackend::demo(std::time::Duration::from_secs(3)));
//! gui::run(backend, gui::GuiOptions::new("/tmp/mc-gui-state")).unwrap();
//! ```

pub mod fake;
pub mod harness;
pub mod model;
mod ui;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use protocol::control::{Backend, Indicator};

/// What the tray menu (spec §3.3) can ask the window to do; the `tray` crate's `TrayAction`
/// maps one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiAction {
    /// Show (and raise) the dashboard.
    OpenDashboard,
    /// Pause, or resume when paused.
    TogglePause,
    /// Show the Activity Log.
    ViewLastActivity,
    /// Drop the link and dial again.
    Reconnect,
    /// Exit (asks first while commands run, in-process only).
    Exit,
}

/// Sends [`UiAction`]s into a running window from any thread (e.g. the tray's).
#[derive(Debug, Clone)]
pub struct ActionSender(Sender<UiAction>);

impl ActionSender {
    /// Queues an action; the window handles it at once (ignored once it closed).
    pub fn send(&self, action: UiAction) {
        let _ = self.0.send(action);
    }
}

/// The receiving end, handed to [`GuiOptions::actions`].
#[derive(Debug)]
pub struct ActionReceiver(Receiver<UiAction>);

/// A channel for [`UiAction`]s: keep the sender (give it to the tray), put the receiver in
/// [`GuiOptions::actions`].
pub fn action_channel() -> (ActionSender, ActionReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ActionSender(tx), ActionReceiver(rx))
}

/// A callback for status changes: indicator, tooltip, paused (the tray's `set_state`).
pub type StatusHook = Box<dyn Fn(Indicator, &str, bool) + 'static>;

/// How the window starts.
pub struct GuiOptions {
    /// Where the wizard keeps its progress (no secrets): `wizard-progress.json`.
    pub state_dir: PathBuf,
    /// `Some(true)`: open the setup wizard; `Some(false)`: never; `None`: when no API key is
    /// stored or a previous run left the wizard half-way.
    pub start_in_wizard: Option<bool>,
    /// Start with the dashboard hidden (a tray icon shows it on `OpenDashboard`). The wizard
    /// shows regardless when it is needed.
    pub start_hidden: bool,
    /// Closing the window hides it instead of exiting (when a tray can bring it back).
    pub close_to_tray: bool,
    /// Actions from a tray (see [`action_channel`]).
    pub actions: Option<ActionReceiver>,
    /// Called on the UI thread whenever the indicator, tooltip or paused flag changes.
    pub on_status: Option<StatusHook>,
}

impl GuiOptions {
    /// Defaults: decide the wizard from the agent's settings, show the window, Close exits.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            start_in_wizard: None,
            start_hidden: false,
            close_to_tray: false,
            actions: None,
            on_status: None,
        }
    }
}

impl fmt::Debug for GuiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuiOptions")
            .field("state_dir", &self.state_dir)
            .field("start_in_wizard", &self.start_in_wizard)
            .field("start_hidden", &self.start_hidden)
            .field("close_to_tray", &self.close_to_tray)
            .field("actions", &self.actions.is_some())
            .field("on_status", &self.on_status.is_some())
            .finish()
    }
}

/// Why the window could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuiError {
    /// No display to open a window on (no `DISPLAY` on X11). FLTK would exit the process.
    #[error("no display: set DISPLAY (X11), or use the CLI on a server")]
    NoDisplay,
    /// A thread or a process could not be started, or a file written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The screenshot harness ([`harness`]) saw something else than expected.
    #[error("gui harness: {0}")]
    Harness(String),
}

/// Whether a desktop session is there to open a window on.
pub fn display_available() -> bool {
    if cfg!(any(windows, target_os = "macos")) {
        return true;
    }
    std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
}

/// Runs the desktop app on the calling thread (FLTK must own it: call from `main`) until the
/// user exits. With an in-process backend, Exit stops the agent (asking first while commands
/// run); attached to a service, it just closes.
pub fn run(backend: Arc<dyn Backend>, options: GuiOptions) -> Result<(), GuiError> {
    if !display_available() {
        return Err(GuiError::NoDisplay);
    }
    ui::run(backend, options)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<ActionSender>();
    is::<fake::ScriptedBackend>();
}
