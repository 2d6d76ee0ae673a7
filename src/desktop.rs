//! `mini-connector` without a subcommand on a desktop (or `mini-connector gui`): the desktop
//! app. It attaches to the agent that already runs for the configuration (a service, over the
//! control socket) or runs one in this process, and shows the tray icon where the session has
//! a tray (the window alone works without one).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use mini_connector::config::AgentConfig;

/// Opens the window for the configuration at `config_path` and returns when the user exits.
pub fn run(config_path: &Path) -> ExitCode {
    // The agent's log goes to files (there is no terminal to read it on a desktop).
    let config = AgentConfig::load(config_path).ok();
    let level = config.as_ref().map_or("info", |c| c.log_level.as_str()).to_owned();
    let log_dir = config.as_ref().map_or_else(mini_connector::logging::default_log_dir, AgentConfig::log_dir);
    if mini_connector::logging::init(&level, Some(&log_dir)).is_err() {
        let _ = mini_connector::logging::init(&level, None);
    }
    let backend: Arc<dyn mini_connector::protocol::control::Backend> =
        Arc::from(mini_connector::handle::attach_or_local(config_path));
    let state_dir = config_path.parent().unwrap_or(Path::new(".")).to_owned();
    let mut options = gui::GuiOptions::new(state_dir);

    let (actions, inbox) = gui::action_channel();
    let tray = tray::Tray::start(Box::new(move |action| {
        actions.send(match action {
            tray::TrayAction::OpenDashboard => gui::UiAction::OpenDashboard,
            tray::TrayAction::TogglePause => gui::UiAction::TogglePause,
            tray::TrayAction::ViewLastActivity => gui::UiAction::ViewLastActivity,
            tray::TrayAction::Reconnect => gui::UiAction::Reconnect,
            tray::TrayAction::Exit => gui::UiAction::Exit,
        });
    }));
    match tray {
        Ok(tray) => {
            options.actions = Some(inbox);
            options.close_to_tray = true;
            options.on_status = Some(Box::new(move |indicator, tooltip: &str, paused| {
                tray.set_state(indicator, tooltip, paused);
            }));
        }
        Err(e) => tracing::info!(reason = %e, "no tray icon; the window alone shows the status"),
    }
    let result = gui::run(backend.clone(), options);
    // Exit stops an in-process agent (the window asked first while commands ran).
    if backend.in_process() {
        let _ = backend.request(mini_connector::protocol::control::ControlRequest::Stop);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
