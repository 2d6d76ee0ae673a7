//! The Mini Connector tray icon (spec §3.3): a coloured dot per [`Indicator`] (pulsing while
//! executing, spinning while reconnecting), a tooltip, and the menu Open Dashboard,
//! Pause/Resume, View Last Activity, Reconnect, Exit.
//!
//! - Linux: a StatusNotifierItem (with its `com.canonical.dbusmenu` menu) over libdbus — a
//!   synchronous D-Bus library (`ksni` 0.2), no async runtime, no GTK — on its own `tray`
//!   thread. [`Tray::start`] fails with [`TrayError::NoSessionBus`] when the session has no
//!   D-Bus (a server, a bare X session): the caller runs without a tray. When no
//!   StatusNotifierWatcher (desktop panel) runs yet, the item waits for one and registers when
//!   it appears.
//! - Windows: `Shell_NotifyIconW` on its own message-loop thread (`tray`), re-registered when
//!   Explorer restarts (`TaskbarCreated`).
//! - Elsewhere: [`TrayError::Unsupported`].
//!
//! Menu actions are handed to the `on_action` callback on the tray thread: keep it short (send
//! on a channel, wake the UI).
//!
//! ```no_run
//! use protocol::control::Indicator;
//! let tray = tray::Tray::start(Box::new(|action| println!("{action:?}")));
//! if let Ok(tray) = &tray {
//!     tray.set_state(Indicator::Connected, "Connected to console.example.com", false);
//! }
//! ```

pub mod icon;
#[cfg(all(unix, not(target_os = "macos")))]
mod linux;
#[cfg(windows)]
mod windows;

use protocol::control::Indicator;

/// A menu choice (or a click on the icon: [`TrayAction::OpenDashboard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrayAction {
    /// Show the dashboard window.
    OpenDashboard,
    /// Pause when running, resume when paused.
    TogglePause,
    /// Show the Activity Log.
    ViewLastActivity,
    /// Drop the link and dial again.
    Reconnect,
    /// Quit (the caller asks for confirmation while commands run).
    Exit,
}

/// What the menu shows: the labels, in order, for `paused`.
pub fn menu_labels(paused: bool) -> [(&'static str, TrayAction); 5] {
    [
        ("Open Dashboard", TrayAction::OpenDashboard),
        (if paused { "Resume" } else { "Pause" }, TrayAction::TogglePause),
        ("View Last Activity", TrayAction::ViewLastActivity),
        ("Reconnect", TrayAction::Reconnect),
        ("Exit", TrayAction::Exit),
    ]
}

/// Why there is no tray.
#[derive(Debug, thiserror::Error)]
pub enum TrayError {
    /// Linux: no session D-Bus to publish a StatusNotifierItem on.
    #[error("no tray: no D-Bus session bus ({0})")]
    NoSessionBus(String),
    /// This platform has no tray support here.
    #[error("no tray on this platform")]
    Unsupported,
    /// The platform refused (window class, icon, thread).
    #[error("no tray: {0}")]
    Platform(String),
}

/// The callback menu actions go to.
pub type OnAction = Box<dyn Fn(TrayAction) + Send + Sync>;

/// What the icon shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    indicator: Indicator,
    tooltip: String,
    paused: bool,
}

impl Default for State {
    fn default() -> Self {
        Self { indicator: Indicator::Reconnecting, tooltip: "Starting".into(), paused: false }
    }
}

/// A running tray icon; dropping it removes the icon and stops its thread.
#[derive(Debug)]
pub struct Tray {
    #[cfg(all(unix, not(target_os = "macos")))]
    inner: linux::LinuxTray,
    #[cfg(windows)]
    inner: windows::WindowsTray,
}

impl Tray {
    /// Shows the icon (starting as "reconnecting", until the first [`Self::set_state`]) and
    /// calls `on_action` for each menu choice. Never panics: without a tray the error says why.
    pub fn start(on_action: OnAction) -> Result<Tray, TrayError> {
        #[cfg(all(unix, not(target_os = "macos")))]
        {
            linux::LinuxTray::start(on_action).map(|inner| Tray { inner })
        }
        #[cfg(windows)]
        {
            windows::WindowsTray::start(on_action).map(|inner| Tray { inner })
        }
        #[cfg(not(any(windows, all(unix, not(target_os = "macos")))))]
        {
            let _ = on_action;
            Err(TrayError::Unsupported)
        }
    }

    /// Shows `indicator` (colour, animation), `tooltip` under the title "Mini Connector —
    /// <state>", and the menu's Pause or Resume for `paused`.
    pub fn set_state(&self, indicator: Indicator, tooltip: &str, paused: bool) {
        let state = State { indicator, tooltip: tooltip.to_owned(), paused };
        #[cfg(any(windows, all(unix, not(target_os = "macos"))))]
        self.inner.set_state(state);
        #[cfg(not(any(windows, all(unix, not(target_os = "macos")))))]
        let _ = state;
    }
}

/// The tooltip's title line.
fn title(indicator: Indicator) -> String {
    format!("Mini Connector — {}", indicator.label())
}
