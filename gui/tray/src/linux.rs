//! StatusNotifierItem over libdbus (`ksni` 0.2: synchronous, no async runtime, no GTK).
//!
//! Two threads: `tray` runs the ksni service (it owns the D-Bus connection and answers the
//! panel's calls), `tray-anim` applies [`State`] changes and steps the animation frames (only
//! while an animated state shows; otherwise it sleeps until the next change).
//!
//! When the service's D-Bus connection fails (the bus daemon restarted or dropped us: `run`
//! returns an error) it is started again with the same state, a few times. A panic inside
//! ksni (it asserts on some malformed peer calls, e.g. a dbusmenu `Event` on the root item) is
//! not caught: release builds abort on a panic (`panic = "abort"`, for size), so the desktop
//! process ends; nothing here relies on unwinding.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ksni::menu::StandardItem;
use ksni::{Icon, MenuItem, Status, ToolTip};
use protocol::control::Indicator;

use crate::{OnAction, State, TrayAction, TrayError, icon};

/// Time between animation frames.
const FRAME: Duration = Duration::from_millis(250);
/// How often the service is restarted after its D-Bus connection failed before giving up.
const MAX_RESTARTS: u32 = 3;
/// Pause before a restart (a bus daemon that is restarting needs a moment).
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// The model ksni serves.
struct Item {
    state: State,
    frame: usize,
    on_action: Arc<OnAction>,
}

impl Item {
    fn act(&self, action: TrayAction) {
        (self.on_action)(action);
    }
}

impl ksni::Tray for Item {
    fn activate(&mut self, _x: i32, _y: i32) {
        self.act(TrayAction::OpenDashboard);
    }

    fn id(&self) -> String {
        "mini-connector".into()
    }

    fn title(&self) -> String {
        "Mini Connector".into()
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::ApplicationStatus
    }

    fn status(&self) -> Status {
        match self.state.indicator {
            Indicator::Disconnected | Indicator::Warning => Status::NeedsAttention,
            _ => Status::Active,
        }
    }

    fn icon_pixmap(&self) -> Vec<Icon> {
        vec![argb_icon(self.state.indicator, self.frame)]
    }

    fn attention_icon_pixmap(&self) -> Vec<Icon> {
        self.icon_pixmap()
    }

    fn tool_tip(&self) -> ToolTip {
        ToolTip {
            icon_name: String::new(),
            icon_pixmap: Vec::new(),
            title: crate::title(self.state.indicator),
            description: self.state.tooltip.clone(),
        }
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        crate::menu_labels(self.state.paused)
            .into_iter()
            .map(|(label, action)| {
                StandardItem {
                    label: label.into(),
                    activate: Box::new(move |item: &mut Self| item.act(action)),
                    ..Default::default()
                }
                .into()
            })
            .collect()
    }

    fn watcher_offine(&self) -> bool {
        // Keep serving: a panel may start later (and registers us when it does).
        true
    }
}

/// SNI pixmaps are ARGB32 in network byte order.
fn argb_icon(indicator: Indicator, frame: usize) -> Icon {
    let rgba = icon::rgba(indicator, frame);
    let mut data = Vec::with_capacity(rgba.len());
    for px in rgba.chunks_exact(4) {
        data.extend_from_slice(&[px[3], px[0], px[1], px[2]]);
    }
    Icon { width: icon::SIZE as i32, height: icon::SIZE as i32, data }
}

enum Cmd {
    Set(State),
    Stop,
}

pub(crate) struct LinuxTray {
    commands: Sender<Cmd>,
}

impl std::fmt::Debug for LinuxTray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinuxTray")
    }
}

impl LinuxTray {
    pub(crate) fn start(on_action: OnAction) -> Result<Self, TrayError> {
        // Fail here, not in the thread, when there is no session bus.
        dbus::blocking::LocalConnection::new_session().map_err(|e| {
            TrayError::NoSessionBus(e.message().unwrap_or("cannot connect to the session bus").to_owned())
        })?;
        let on_action = Arc::new(on_action);
        let service =
            ksni::TrayService::new(Item { state: State::default(), frame: 0, on_action: on_action.clone() });
        let handle = Arc::new(Mutex::new(Served { handle: service.handle(), stopped: false }));
        let served = handle.clone();
        let (commands, inbox) = channel();
        std::thread::Builder::new()
            .name("tray".into())
            .spawn(move || serve(service, &served, on_action))
            .map_err(|e| TrayError::Platform(format!("cannot start the tray thread: {e}")))?;
        std::thread::Builder::new()
            .name("tray-anim".into())
            .spawn(move || animate(&handle, &inbox))
            .map_err(|e| TrayError::Platform(format!("cannot start the tray thread: {e}")))?;
        Ok(Self { commands })
    }

    pub(crate) fn set_state(&self, state: State) {
        let _ = self.commands.send(Cmd::Set(state));
    }
}

impl Drop for LinuxTray {
    fn drop(&mut self) {
        let _ = self.commands.send(Cmd::Stop);
    }
}

/// The current service's handle (replaced when the service restarts) and whether the tray was
/// stopped (so that a restart racing with `Drop` does not leave a service running).
struct Served {
    handle: ksni::Handle<Item>,
    stopped: bool,
}

type SharedHandle = Arc<Mutex<Served>>;

/// Runs the service until it is shut down (`Ok`). A failed D-Bus connection (`Err`: the bus
/// daemon went away or dropped us) starts a fresh service with the same state, under a new
/// name, registered again with the watcher; after [`MAX_RESTARTS`] failures the tray gives up
/// with a warning (the GUI keeps running without an icon).
fn serve(service: ksni::TrayService<Item>, shared: &SharedHandle, on_action: Arc<OnAction>) {
    let mut service = service;
    let mut restarts = 0;
    loop {
        let error = match service.run() {
            Ok(()) => return,
            Err(e) => e,
        };
        if restarts == MAX_RESTARTS {
            tracing::warn!(error = %error, "tray icon stopped: its D-Bus connection failed {} times", restarts + 1);
            return;
        }
        restarts += 1;
        tracing::warn!(error = %error, restarts, "the tray icon's D-Bus connection failed; restarting it");
        std::thread::sleep(RESTART_PAUSE);
        let mut served = shared.lock().unwrap_or_else(|p| p.into_inner());
        if served.stopped {
            return;
        }
        let state = served.handle.update(|item| item.state.clone());
        service = ksni::TrayService::new(Item { state, frame: 0, on_action: on_action.clone() });
        served.handle = service.handle();
    }
}

fn animate(shared: &SharedHandle, inbox: &Receiver<Cmd>) {
    let handle = || shared.lock().unwrap_or_else(|p| p.into_inner()).handle.clone();
    let mut animated = false;
    loop {
        let cmd = if animated {
            match inbox.recv_timeout(FRAME) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Cmd::Stop),
            }
        } else {
            Some(inbox.recv().unwrap_or(Cmd::Stop))
        };
        match cmd {
            Some(Cmd::Set(state)) => {
                animated = icon::frames(state.indicator) > 1;
                handle().update(|item| {
                    if item.state.indicator != state.indicator {
                        item.frame = 0;
                    }
                    item.state = state;
                });
            }
            Some(Cmd::Stop) => {
                let mut served = shared.lock().unwrap_or_else(|p| p.into_inner());
                served.stopped = true;
                served.handle.shutdown();
                return;
            }
            None => {
                handle().update(|item| item.frame = (item.frame + 1) % icon::frames(item.state.indicator))
            }
        }
    }
}
