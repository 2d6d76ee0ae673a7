//! `service install|uninstall|status`: register the agent with the OS service manager.
//!
//! The work (systemd unit, LaunchAgent plist, Windows service registration) is
//! `mini_connector::setup::service`, shared with the desktop app's "Install as Service"; this
//! module parses flags and prints what was done. `status` checks that the registration runs
//! *this* binary. On Windows, `service run` (hidden) is the service manager's entry point: it
//! runs the agent and maps Stop/Shutdown to its graceful shutdown.

use std::path::PathBuf;

use mini_connector::setup::service::{
    self as setup_service, Log, Options, Registration, is_this_exe, this_exe,
};
use serde_json::json;

use super::{ConfigArg, Fail, Outcome, print_json};
use crate::exit;

/// `service`: register the agent with the OS service manager.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCmd {
    /// Register the agent as a service that starts at boot (macOS: at login) and restarts after
    /// a crash, running `<this binary> start --config <config>`.
    #[command(after_help = "\
Examples:
  sudo mini-connector service install --config /etc/mini-connector/config.json
  sudo mini-connector service install --no-start          # register only
  mini-connector service install --unit-dir ./out         # only write the unit file

Linux, without --unit-dir (needs root): creates the service user (default mini-connector) and
/var/lib/mini-connector, pins the service's paths into the configuration when unset
(vaultDir=/var/lib/mini-connector/vault, copying an existing vault there;
vaultKeyDir=/var/lib/mini-connector/vault-keys, moving the vault's install secret there;
controlSocket in /run/mini-connector; logDir=/var/log/mini-connector), makes the
configuration readable by the service user, writes /etc/systemd/system/mini-connector.service,
checks it with `systemd-analyze verify`, then `systemctl daemon-reload` and
`systemctl enable --now` (unless --no-start). The binary and the configuration must not be under /home, /root or /run/user
(ProtectHome=yes hides them): install the binary to /usr/local/bin first.
macOS: ~/Library/LaunchAgents/com.miniconnector.agent.plist, then `launchctl bootstrap`.
Windows (elevated prompt): the MiniConnector service (LocalSystem, automatic start, restart on
failure); the vault's install secret is copied to %ProgramData%\\MiniConnector\\vault-keys
(vaultKeyDir) and an API key in the Credential Manager is moved into the vault, so the service can
read both.

Exit codes: 0 ok; 1 the service manager failed; 2 bad configuration or usage (e.g. not root).")]
    Install {
        #[command(flatten)]
        config: ConfigArg,
        /// Linux: the account the service runs as (created if missing).
        #[arg(long, default_value = "mini-connector", value_name = "NAME")]
        user: String,
        /// Write the unit / plist into DIR only: no service manager calls, no user or
        /// directory set-up (for packaging, tests, or a look at the result).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Register, but do not enable or start.
        #[arg(long)]
        no_start: bool,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"action": "installed", "manager",
        /// "unit", "steps", "warnings"}}.
        #[arg(long)]
        json: bool,
    },
    /// Stop the service and remove its registration (keeps configuration, vault and logs).
    #[command(
        after_help = "Exit codes: 0 ok (also when nothing was installed); 1 the service manager failed."
    )]
    Uninstall {
        /// Remove the unit / plist from DIR (as given to `install --unit-dir`).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"action": "uninstalled", "manager",
        /// "unit", "steps", "warnings"}}.
        #[arg(long)]
        json: bool,
    },
    /// Whether the service is registered, whether the registration runs this binary, and
    /// whether it is running.
    #[command(after_help = "\
Exit codes: 0 registered and running this binary; 1 registered, but for another binary
(re-run `service install`); 3 not registered.")]
    Status {
        /// Look for the unit / plist in DIR (as given to `install --unit-dir`).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Print JSON: {"manager", "registered", "unit", "exe", "thisExe", "pathMatches",
        /// "config", "active", "agentRunning"}.
        #[arg(long)]
        json: bool,
    },
    /// Windows only: the entry point the service manager starts. Not for interactive use.
    #[command(hide = true)]
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `service ...`.
pub fn service(command: ServiceCmd) -> Outcome {
    match command {
        ServiceCmd::Install { config, user, unit_dir, no_start, json } => {
            config.load()?;
            let unit = setup_service::status(unit_dir.clone()).ok();
            let options = Options { user, unit_dir, no_start };
            print_log(&setup_service::install(&config.path(), &options)?, "installed", unit, json);
            Ok(())
        }
        ServiceCmd::Uninstall { unit_dir, json } => {
            let unit = setup_service::status(unit_dir.clone()).ok();
            print_log(&setup_service::uninstall(unit_dir)?, "uninstalled", unit, json);
            Ok(())
        }
        ServiceCmd::Status { unit_dir, json } => report(&setup_service::status(unit_dir)?, json),
        #[cfg(windows)]
        ServiceCmd::Run { config } => windows::run(config.path()),
        #[cfg(unix)]
        ServiceCmd::Run { .. } => Err(Fail::usage(if cfg!(target_os = "macos") {
            "`service run` is the Windows service entry"
        } else {
            "`service run` is the Windows service entry; systemd runs `start`"
        })),
    }
}

/// Prints what `install` / `uninstall` did: its steps (text), or with `--json` one object
/// (`unit` is the unit file / plist / service name, null when it cannot be told).
fn print_log(log: &Log, action: &str, unit: Option<Registration>, json: bool) {
    if json {
        print_json(&json!({
            "action": action,
            "manager": unit.as_ref().map(|r| r.manager),
            "unit": unit.as_ref().map(|r| r.unit.as_str()),
            "steps": log.lines,
            "warnings": log.warnings,
        }));
        return;
    }
    for line in &log.lines {
        println!("{line}");
    }
    for warning in &log.warnings {
        eprintln!("warning: {warning}");
    }
}

/// Whether an agent answers on the control socket of the configuration at `config`.
fn agent_answers(config: &std::path::Path) -> bool {
    let configured = mini_connector::config::AgentConfig::load(config).ok().and_then(|c| c.control_socket);
    let socket = mini_connector::control::socket_path(config, configured.as_deref());
    socket.exists()
        && mini_connector::control::request(&socket, mini_connector::control::ControlCmd::Status).is_ok()
}

/// Prints a registration; the exit code says registered / other binary / not registered.
fn report(found: &Registration, json: bool) -> Outcome {
    let this = this_exe()?;
    let matches = found.exe.as_deref().map(|exe| is_this_exe(exe, &this));
    let agent_running = found.config.as_deref().map(agent_answers);
    if json {
        print_json(&json!({
            "manager": found.manager,
            "registered": found.registered,
            "unit": found.unit,
            "exe": found.exe,
            "thisExe": this,
            "pathMatches": matches,
            "config": found.config,
            "active": found.active,
            "agentRunning": agent_running,
        }));
    } else if !found.registered {
        println!("not registered ({}: {})", found.manager, found.unit);
    } else {
        let text =
            |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
        println!("registered:     yes ({}: {})", found.manager, found.unit);
        println!("runs:           {}", text(&found.exe));
        println!("config:         {}", text(&found.config));
        if let Some(active) = &found.active {
            println!("service state:  {active}");
        }
        if let Some(running) = agent_running {
            println!("agent answers:  {}", if running { "yes" } else { "no" });
        }
        if matches != Some(true) {
            eprintln!(
                "warning: the registered service does not run this binary ({}); re-run `service install`",
                this.display()
            );
        }
    }
    match (found.registered, matches) {
        // The verdict is in the printed data (`registered`, `pathMatches`): one line with --json.
        (false, _) => Err(Fail::reported(exit::NOT_RUNNING, "the service is not registered")),
        (true, Some(true)) => Ok(()),
        (true, _) => Err(Fail::reported(exit::FAILURE, "the registered service runs another binary")),
    }
}

/// The Windows service's entry point (`service run`): it runs the agent and maps Stop/Shutdown
/// to its graceful shutdown. Registration is `mini_connector::setup::service::windows`.
#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use crossbeam_channel::Sender;
    use mini_connector::agent::Agent;
    use mini_connector::config::AgentConfig;
    use mini_connector::setup::service::windows::SERVICE_NAME;
    use mini_connector::supervisor::SupMsg;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
    use windows_service::{define_windows_service, service_dispatcher};

    use crate::cli::{Fail, Outcome};
    use crate::exit;

    /// How long a stop may take (the agent drains in-flight commands).
    const STOP_WAIT: Duration = Duration::from_secs(45);

    /// The configuration `service run` was started with (the SCM calls `service_main` on its
    /// own thread, without our arguments).
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    /// `service run`: hands this thread to the service control dispatcher until the service
    /// stops.
    pub(super) fn run(config: PathBuf) -> Outcome {
        let _ = CONFIG.set(config);
        service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
            Fail::usage(format!("`service run` is started by the Windows service manager, not by hand ({e})"))
        })
    }

    fn service_main(_arguments: Vec<OsString>) {
        if let Err(e) = run_service() {
            tracing::error!("service failed: {e:#}");
        }
    }

    fn set(handle: ServiceStatusHandle, state: ServiceState, exit_code: ServiceExitCode, wait: Duration) {
        let controls_accepted = if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        };
        let _ = handle.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted,
            exit_code,
            checkpoint: 0,
            wait_hint: wait,
            process_id: None,
        });
    }

    fn run_service() -> anyhow::Result<()> {
        // Stop/Shutdown may arrive before the agent is up: remember it, and forward it to the
        // supervisor (the same Shutdown message Ctrl-C sends) once there is one.
        let inbox: Arc<OnceLock<Sender<SupMsg>>> = Arc::new(OnceLock::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let handle_slot: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
        let grace = Arc::new(OnceLock::<Duration>::new());
        let handler = {
            let (inbox, stopping, handle_slot, grace) =
                (inbox.clone(), stopping.clone(), handle_slot.clone(), grace.clone());
            move |control| match control {
                ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                    stopping.store(true, Ordering::SeqCst);
                    if let Some(handle) = handle_slot.get() {
                        set(*handle, ServiceState::StopPending, ServiceExitCode::NO_ERROR, STOP_WAIT);
                    }
                    if let Some(inbox) = inbox.get() {
                        let grace = grace.get().copied().unwrap_or(Duration::from_secs(30));
                        let _ = inbox.send(SupMsg::Shutdown { reason: "service stop".into(), grace });
                    }
                    ServiceControlHandlerResult::NoError
                }
                ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
                _ => ServiceControlHandlerResult::NotImplemented,
            }
        };
        let handle = service_control_handler::register(SERVICE_NAME, handler)?;
        let _ = handle_slot.set(handle);
        set(handle, ServiceState::StartPending, ServiceExitCode::NO_ERROR, Duration::from_secs(30));

        let failed = |code: u8, error: anyhow::Error| {
            set(
                handle,
                ServiceState::Stopped,
                ServiceExitCode::ServiceSpecific(u32::from(code)),
                Duration::ZERO,
            );
            Err(error)
        };
        let config_path = CONFIG.get().cloned().unwrap_or_default();
        let config = match AgentConfig::load(&config_path) {
            Ok(config) => config,
            Err(e) => return failed(exit::CONFIG, e.into()),
        };
        let log_dir = config.log_dir();
        let _ = mini_connector::logging::init(&config.log_level, Some(&log_dir));
        let agent = match Agent::start(&config, None::<&Path>) {
            Ok(agent) => agent,
            Err(e) => return failed(exit::FAILURE, e),
        };
        let _ = grace.set(Duration::from_millis(config.command_timeout_ms.min(30_000)));
        let _ = inbox.set(agent.inbox());
        if stopping.load(Ordering::SeqCst) {
            let _ =
                agent.inbox().send(SupMsg::Shutdown { reason: "service stop".into(), grace: Duration::ZERO });
        }
        set(handle, ServiceState::Running, ServiceExitCode::NO_ERROR, Duration::ZERO);
        tracing::info!(name = %config.connector_name, "agent started as a Windows service");
        let reason = agent.wait();
        tracing::info!(%reason, "agent stopped");
        set(handle, ServiceState::Stopped, ServiceExitCode::NO_ERROR, Duration::ZERO);
        Ok(())
    }
}
