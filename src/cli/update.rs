//! `update check|apply` (spec §9.3, docs/UPDATES.md): manual and offline updates over
//! [`mini_connector::update`]. `update probe` is the trial run `apply` starts in the new binary.

use std::path::PathBuf;
use std::process::ExitCode;

use mini_connector::update::{self, Keyring, Paths, Source, UpdateError};

use super::ConfigArg;
use crate::exit;

/// `mini-connector update …`.
#[derive(Debug, clap::Subcommand)]
pub enum UpdateCmd {
    /// Read the signed update manifest and say whether a newer version is available
    /// (exit 0 either way).
    #[command(after_help = "Exit codes: 0 answered (update or not); 1 cannot fetch; 2 usage;
5 refused (signature, bad manifest).")]
    Check {
        #[command(flatten)]
        from: FromArgs,
    },
    /// Download, verify and install a newer version: the binary is replaced atomically, the
    /// old one kept as `<binary>.previous`, and the new one must start and reach the cloud
    /// (`update probe`) within 60 s or it is rolled back.
    #[command(after_help = "Examples:
  mini-connector update apply --yes
  mini-connector update apply --yes --file /media/usb/mini-connector-update/

Exit codes: 0 installed; 1 cannot fetch or write; 2 usage / not confirmed;
5 refused (signature, tampered, bad manifest); 6 not newer (downgrade refused);
7 the new version failed its trial run and was rolled back.")]
    Apply {
        #[command(flatten)]
        from: FromArgs,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// The trial run of a freshly installed binary: load the configuration and authenticate
    /// to the cloud; exit 0 when it works.
    #[command(hide = true)]
    Probe {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Where `check` and `apply` read the update from, and how they answer.
#[derive(Debug, clap::Args)]
pub struct FromArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The manifest URL (default: `updateUrl`, else https://<cloudUrl host>/updates/manifest.json).
    #[arg(long)]
    url: Option<String>,
    /// The offline package instead of a URL: a directory with manifest.json,
    /// manifest.json.minisig, the binary and its .minisig (or the manifest.json in it).
    #[arg(long, conflicts_with = "url")]
    file: Option<PathBuf>,
    /// One JSON line: {"ok": true, "data": {...}}.
    #[arg(long)]
    json: bool,
}

/// Exit code: the files were refused (bad signature, tampered, invalid manifest).
pub const REFUSED: u8 = 5;
/// Exit code: nothing to install (same or older version, or `minVersion`).
pub const NOT_NEWER: u8 = 6;
/// Exit code: the new version failed its trial run and was rolled back.
pub const ROLLED_BACK: u8 = 7;

fn exit_code(e: &UpdateError) -> u8 {
    match e {
        e if e.is_refusal() => REFUSED,
        UpdateError::NotNewer { .. } | UpdateError::TooOld { .. } => NOT_NEWER,
        UpdateError::RolledBack { .. } => ROLLED_BACK,
        _ => exit::FAILURE,
    }
}

/// Runs an `update` subcommand and returns its exit code.
pub fn update(command: UpdateCmd) -> ExitCode {
    match command {
        UpdateCmd::Probe { config } => match update::probe(&config.path()) {
            Ok(()) => ExitCode::from(exit::OK),
            Err(reason) => {
                eprintln!("error: {reason}");
                ExitCode::from(exit::FAILURE)
            }
        },
        UpdateCmd::Check { from: FromArgs { config, url, file, json } } => {
            let result = source(&config, url.as_deref(), file.as_deref())
                .and_then(|source| update::check(&source, &Keyring::builtin()).map_err(Failure::Update));
            match result {
                Ok((_, report)) => {
                    if json {
                        super::output::print_ok(&report);
                    } else if report.update_available {
                        println!(
                            "update available: {} (installed {}); install it with `mini-connector update apply`",
                            report.latest, report.current
                        );
                    } else {
                        println!(
                            "up to date: installed {}, latest {}{}",
                            report.current,
                            report.latest,
                            report.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
                        );
                    }
                    ExitCode::from(exit::OK)
                }
                Err(e) => e.report(json),
            }
        }
        UpdateCmd::Apply { from: FromArgs { config, url, file, json }, yes } => {
            let keys = Keyring::builtin();
            let result = source(&config, url.as_deref(), file.as_deref()).and_then(|source| {
                if !yes {
                    let (_, report) = update::check(&source, &keys).map_err(Failure::Update)?;
                    if report.update_available && !confirm(&report.latest)? {
                        return Err(Failure::Usage("not confirmed; nothing changed".into()));
                    }
                }
                let paths = Paths::current().map_err(Failure::Update)?;
                update::apply(&source, &keys, &paths, &config.path(), update::trial_timeout())
                    .map_err(Failure::Update)
            });
            match result {
                Ok(applied) => {
                    if json {
                        super::output::print_ok(&applied);
                    } else {
                        println!(
                            "updated {} → {}: {} (previous kept as {}); restart the agent or its service to run it",
                            applied.from,
                            applied.to,
                            applied.exe.display(),
                            applied.previous.display()
                        );
                    }
                    ExitCode::from(exit::OK)
                }
                Err(e) => e.report(json),
            }
        }
    }
}

enum Failure {
    Usage(String),
    Update(UpdateError),
}

impl Failure {
    fn report(self, json: bool) -> ExitCode {
        let (code, text, exit) = match &self {
            Self::Usage(m) => ("USAGE", m.clone(), exit::CONFIG),
            Self::Update(e) => (e.code(), e.to_string(), exit_code(e)),
        };
        if json {
            super::output::print_error(code, &text);
        } else {
            eprintln!("error: {code}: {}", super::output::escape(&text));
        }
        ExitCode::from(exit)
    }
}

fn source(config: &ConfigArg, url: Option<&str>, file: Option<&std::path::Path>) -> Result<Source, Failure> {
    if let Some(file) = file {
        return Ok(Source::dir(&super::absolute(file)));
    }
    let loaded = config.load().map_err(|f| Failure::Usage(format!("{:#}", f.error)))?;
    let url = Source::manifest_url(&loaded, url);
    Source::https(&loaded, &url).map_err(Failure::Update)
}

fn confirm(version: &str) -> Result<bool, Failure> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage("no terminal to confirm on; pass --yes".into()));
    }
    eprint!("install version {version}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// At `start`, before the agent dials: restores the previous binary when an update was cut
/// off before its trial passed, and restarts ([`update::restart_exit`]). `None`: carry on.
pub fn recover_at_start() -> Option<ExitCode> {
    let paths = Paths::current().ok()?;
    match update::recover_interrupted(&paths) {
        Ok(true) => {
            tracing::warn!("an interrupted update was rolled back; restarting the previous binary");
            Some(ExitCode::from(update::restart_exit()))
        }
        Ok(false) => None,
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "cannot roll back an interrupted update");
            None
        }
    }
}

/// At `start`, once the agent runs: the automatic updater when `autoUpdate` is on.
pub fn auto_updater(
    config_path: &std::path::Path,
    config: &mini_connector::config::AgentConfig,
    inbox: crossbeam_channel::Sender<mini_connector::supervisor::SupMsg>,
    grace: std::time::Duration,
) -> Option<update::AutoUpdater> {
    if !config.auto_update {
        return None;
    }
    update::spawn_auto(&super::absolute(config_path), config, inbox, grace)
        .inspect_err(|e| tracing::warn!(error = %e, "automatic updates are off: cannot start their thread"))
        .ok()
}
