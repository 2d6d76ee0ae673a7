//! Registering the agent with the OS service manager (`service install|uninstall|status`, the
//! dashboard's "Install as Service", the auto-start setting).
//!
//! - Linux: a systemd unit from `packaging/systemd/` (hardened, own user, `Restart=on-failure`).
//! - macOS: a LaunchAgent plist from `packaging/launchd/`.
//! - Windows: a real service through `windows-service` (the binary's `service run` is the SCM's
//!   entry).
//!
//! Templates are compiled in with `include_str!` and filled with this binary's canonical path
//! and the absolute configuration path; a value that cannot be written safely is refused.
//! [`status`] reads the registered definition back, so a caller can check that it runs *this*
//! binary. Nothing here prints: what was done comes back as lines ([`Log`]).

use std::path::{Path, PathBuf};

use super::{Result, SetupError, load};

/// How to install.
#[derive(Debug, Clone)]
pub struct Options {
    /// Linux: the account the service runs as (created if missing).
    pub user: String,
    /// Write the unit / plist into this directory only: no service manager calls, no user or
    /// directory set-up.
    pub unit_dir: Option<PathBuf>,
    /// Register, but do not enable or start.
    pub no_start: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { user: "mini-connector".into(), unit_dir: None, no_start: false }
    }
}

/// What was done, in words: lines for the user, and warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Log {
    /// Steps done, in order.
    pub lines: Vec<String>,
    /// Things that did not stop the work but need a look.
    pub warnings: Vec<String>,
}

impl Log {
    fn line(&mut self, text: String) {
        self.lines.push(text);
    }

    #[cfg(unix)]
    fn warn(&mut self, text: String) {
        self.warnings.push(text);
    }

    /// Everything as one message (warnings prefixed `warning:`).
    pub fn message(&self) -> String {
        self.lines
            .iter()
            .cloned()
            .chain(self.warnings.iter().map(|w| format!("warning: {w}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What [`status`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `systemd`, `launchd` or `windows`.
    pub manager: &'static str,
    /// The unit file / plist / service name.
    pub unit: String,
    /// Whether it is registered.
    pub registered: bool,
    /// The program it runs.
    pub exe: Option<PathBuf>,
    /// The configuration it runs with.
    pub config: Option<PathBuf>,
    /// The service manager's word (`active`, `inactive`, `running`...), when it can be asked.
    pub active: Option<String>,
}

/// Registers the agent for the configuration at `config_path` as a service.
pub fn install(config_path: &Path, options: &Options) -> Result<Log> {
    let config = load(config_path)?;
    let mut log = Log::default();
    #[cfg(unix)]
    {
        if cfg!(target_os = "macos") {
            drop(config);
            launchd::install(config_path, options, &mut log)?;
        } else {
            systemd::install(config_path, config, options, &mut log)?;
        }
    }
    #[cfg(windows)]
    {
        drop(config);
        windows::install(config_path, options, &mut log)?;
    }
    Ok(log)
}

/// Stops the service and removes its registration (keeps configuration, vault and logs).
pub fn uninstall(unit_dir: Option<PathBuf>) -> Result<Log> {
    let mut log = Log::default();
    #[cfg(unix)]
    {
        if cfg!(target_os = "macos") {
            launchd::uninstall(unit_dir, &mut log)?;
        } else {
            systemd::uninstall(unit_dir, &mut log)?;
        }
    }
    #[cfg(windows)]
    {
        let _ = unit_dir;
        windows::uninstall(&mut log)?;
    }
    Ok(log)
}

/// Whether the service is registered, and what it runs.
pub fn status(unit_dir: Option<PathBuf>) -> Result<Registration> {
    #[cfg(unix)]
    {
        if cfg!(target_os = "macos") { launchd::status(unit_dir) } else { Ok(systemd::status(unit_dir)) }
    }
    #[cfg(windows)]
    {
        let _ = unit_dir;
        windows::status()
    }
}

/// The dashboard's "Install as Service": what `service install` does with its defaults,
/// returning the steps as one message. On Linux without root, the unit file is written next
/// to the configuration and the message gives the command that installs it (spec §3.2).
pub fn install_service(config_path: &Path) -> Result<String> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if !systemd::is_root() {
        let dir = config_path.parent().unwrap_or(Path::new(".")).to_owned();
        let options = Options { unit_dir: Some(dir), ..Options::default() };
        let mut log = install(config_path, &options)?;
        // The --unit-dir checklist is what `sudo ... service install` does: cut it.
        if let Some(at) = log.lines.iter().position(|l| l.starts_with("(--unit-dir")) {
            log.lines.truncate(at);
        }
        log.line(format!(
            "to install it as a system service, run as root: sudo {} service install --config {}",
            this_exe()?.display(),
            config_path.display()
        ));
        return Ok(log.message());
    }
    Ok(install(config_path, &Options::default())?.message())
}

/// Whether a service registration for `config_path` exists (the Settings' auto-start).
pub fn auto_start_enabled(config_path: &Path) -> bool {
    status(None).is_ok_and(|found| {
        found.registered
            && found
                .config
                .as_deref()
                .is_none_or(|c| c == config_path || c.canonicalize().ok() == config_path.canonicalize().ok())
    })
}

/// Turns auto-start on (installs the service) or off (removes it).
pub fn set_auto_start(config_path: &Path, on: bool) -> Result<()> {
    if on {
        #[cfg(all(unix, not(target_os = "macos")))]
        if !systemd::is_root() {
            return Err(SetupError::invalid(format!(
                "starting with the machine needs the system service, which root installs: sudo {} service install --config {}",
                this_exe()?.display(),
                config_path.display()
            )));
        }
        install(config_path, &Options::default()).map(drop)
    } else {
        uninstall(None).map(drop)
    }
}

/// This binary's canonical path: what a registration must point at.
pub fn this_exe() -> Result<PathBuf> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| SetupError::io(format!("cannot find this program's own path: {e}")))
}

/// Whether `registered` is this binary (same canonical path).
pub fn is_this_exe(registered: &Path, this: &Path) -> bool {
    registered.canonicalize().map(|p| p == this).unwrap_or(registered == this)
}

/// Runs a program, returning its trimmed stdout, or a message with its stderr.
#[cfg(unix)]
fn run(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            format!("{stderr}{stdout}").trim()
        ))
    }
}

/// Whether a program is on PATH.
#[cfg(unix)]
fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Writes a service definition file (0644: the service manager reads it; it holds no secret).
#[cfg(unix)]
fn write_definition(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let written = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, text)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
    })();
    written.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { " (run it with sudo)" } else { "" };
        SetupError::io(format!("cannot write {}: {e}{hint}", path.display()))
    })
}

/// Splits a command line into words, honouring double quotes (enough for our own units).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(current);
    }
    words
}

/// The systemd unit (Linux).
#[cfg(unix)]
pub mod systemd {
    use std::path::{Path, PathBuf};

    use super::{Log, Options, Registration, have, run, this_exe, write_definition};
    use crate::config::AgentConfig;
    use crate::setup::{Result, SetupError};

    /// File name of the unit.
    pub const UNIT_FILE: &str = "mini-connector.service";
    /// Where system units go.
    pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";
    const TEMPLATE: &str = include_str!("../../packaging/systemd/mini-connector.service");
    /// `StateDirectory=mini-connector`.
    const STATE_DIR: &str = "/var/lib/mini-connector";
    /// `LogsDirectory=mini-connector`.
    const LOG_DIR: &str = "/var/log/mini-connector";
    /// `RuntimeDirectory=mini-connector`.
    const RUNTIME_DIR: &str = "/run/mini-connector";
    /// `ConfigurationDirectory=mini-connector`.
    const CONFIG_DIR: &str = "/etc/mini-connector";

    /// Fills the template. Refuses values systemd would read differently from what was meant.
    pub fn render(exe: &Path, config: &Path, user: &str) -> Result<String, String> {
        let exe = unit_value(exe, "the program path")?;
        let config = unit_value(config, "the configuration path")?;
        let user_ok = user.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && user.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && user.len() <= 32;
        if !user_ok {
            return Err(format!("--user `{user}` is not a valid account name ([a-z_][a-z0-9_-]*)"));
        }
        // The template's own header (it says TEMPLATE and how to fill it) is not part of the
        // written unit: that starts with what it is and who wrote it.
        let body = TEMPLATE.find("\n[Unit]").map_or(TEMPLATE, |at| &TEMPLATE[at + 1..]);
        let header = format!(
            "# Mini Connector agent, written by `mini-connector service install` (version {}).\n\
             # Runs {exe} as user {user} with the configuration {config}.\n\
             # Re-run `service install` rather than editing this file (packaging/README.md).\n\n",
            env!("CARGO_PKG_VERSION")
        );
        let text =
            header + &body.replace("{{EXE}}", exe).replace("{{CONFIG}}", config).replace("{{USER}}", user);
        if text.contains("{{") {
            return Err("the unit template has an unknown placeholder".into());
        }
        Ok(text)
    }

    /// What a configuration must hold for the service: the paths [`install`] pins (without
    /// `--unit-dir`), as (field, value).
    pub const SERVICE_PATHS: [(&str, &str); 4] = [
        ("vaultDir", "/var/lib/mini-connector/vault"),
        ("vaultKeyDir", "/var/lib/mini-connector/vault-keys"),
        ("controlSocket", "/run/mini-connector/agent.sock"),
        ("logDir", LOG_DIR),
    ];

    /// What the machine looks like for a unit written with `--unit-dir` (read by
    /// [`Machine::probe`]; a plain value so [`missing_steps`] can be tested).
    #[derive(Debug, Clone, Default)]
    pub struct Machine {
        /// The service account's uid and gid, when it exists.
        pub account: Option<(u32, u32)>,
        /// The configuration file's owner uid, gid and mode bits.
        pub config_file: Option<(u32, u32, u32)>,
        /// The owner uid of the vault directory the configuration names, when it exists.
        pub vault_owner: Option<u32>,
        /// A vault that exists where the configuration (without `vaultDir`) puts it today, and
        /// where its install secret is: both must move when `vaultDir` is pinned.
        pub unpinned_vault: Option<(PathBuf, String)>,
    }

    impl Machine {
        /// Reads the account, the configuration file and the vault directory.
        pub fn probe(config_path: &Path, config: &AgentConfig, user: &str) -> Self {
            use std::os::unix::fs::MetadataExt as _;
            let number = |flag: &str| run("id", &[flag, user]).ok().and_then(|n| n.parse::<u32>().ok());
            let account = number("-u").zip(number("-g"));
            let config_file =
                std::fs::metadata(config_path).ok().map(|m| (m.uid(), m.gid(), m.mode() & 0o7777));
            let vault_owner = config
                .vault_dir
                .as_ref()
                .and_then(|_| std::fs::metadata(config.vault_dir()).ok())
                .map(|m| m.uid());
            let unpinned_vault = (config.vault_dir.is_none()
                && config.vault_dir().join(vault::Vault::FILE_NAME).exists())
            .then(|| {
                let id = std::fs::read_to_string(config.vault_dir().join(vault::Vault::INSTALL_ID_FILE_NAME));
                let secret = id
                    .ok()
                    .filter(|id| !id.trim().is_empty())
                    .map(|id| config.secret_store().location(id.trim()))
                    .unwrap_or_else(|| config.vault_key_dir().display().to_string());
                (config.vault_dir(), secret)
            });
            Self { account, config_file, vault_owner, unpinned_vault }
        }
    }

    /// The steps, as commands or exact values, that must still happen before a unit written
    /// for `exe`, `config_path` and `user` can start; empty when it can start as written.
    pub fn missing_steps(
        exe: &Path,
        config_path: &Path,
        config: &AgentConfig,
        user: &str,
        machine: &Machine,
    ) -> Vec<String> {
        let mut steps = Vec::new();
        if machine.account.is_none() {
            steps.push(format!(
                "create the service account: sudo useradd --system --user-group --home-dir {STATE_DIR} \
                 --no-create-home --shell /usr/sbin/nologin {user}"
            ));
        }
        for (what, path) in [("the program", exe), ("the configuration", config_path)] {
            let hidden = if ["/home/", "/root/", "/run/user/"].iter().any(|p| path.starts_with(p)) {
                Some("ProtectHome=yes")
            } else if ["/tmp/", "/var/tmp/"].iter().any(|p| path.starts_with(p)) {
                Some("PrivateTmp=yes")
            } else {
                None
            };
            if let Some(setting) = hidden {
                steps.push(format!(
                    "{what} {} is hidden from the service ({setting}): put the program in \
                     /usr/local/bin and the configuration in {CONFIG_DIR}/, then write the unit again \
                     from there",
                    path.display()
                ));
            }
        }
        let unset: Vec<String> = SERVICE_PATHS
            .iter()
            .filter(|(field, _)| match *field {
                "vaultDir" => config.vault_dir.is_none(),
                "vaultKeyDir" => config.vault_key_dir.is_none(),
                "controlSocket" => config.control_socket.is_none(),
                _ => config.log_dir.is_none(),
            })
            .map(|(field, value)| format!("\"{field}\": \"{value}\""))
            .collect();
        if !unset.is_empty() {
            steps.push(format!(
                "set the service's directories in {} (the administrator's CLI and the service must \
                 use the same vault; the service can write only under {STATE_DIR}, {LOG_DIR} and \
                 {RUNTIME_DIR}): {}. `sudo mini-connector service install` (without --unit-dir) does \
                 this, and moves an existing vault and its install secret there",
                config_path.display(),
                unset.join(", ")
            ));
        }
        if let Some((vault_dir, secret)) = &machine.unpinned_vault {
            steps.push(format!(
                "the credentials in {} (install secret {secret}) must move with vaultDir and \
                 vaultKeyDir, owned by {user}, or the service starts without them",
                vault_dir.display()
            ));
        }
        match (machine.account, machine.config_file) {
            (Some((uid, gid)), Some((owner, group, mode))) => {
                let readable = mode & 0o004 != 0
                    || (owner == uid && mode & 0o400 != 0)
                    || (group == gid && mode & 0o040 != 0);
                if !readable {
                    steps.push(format!(
                        "let the service read its configuration: sudo chgrp {user} {0} && sudo chmod 0640 {0}",
                        config_path.display()
                    ));
                }
            }
            (None, _) => steps.push(format!(
                "then let the service read its configuration: sudo chgrp {user} {0} && sudo chmod 0640 {0}",
                config_path.display()
            )),
            (Some(_), None) => {}
        }
        if let (Some(owner), Some((uid, _))) = (machine.vault_owner, machine.account)
            && owner != uid
        {
            steps.push(format!(
                "hand the vault to the service account: sudo chown -R {user}: {} {}",
                config.vault_dir().display(),
                config.vault_key_dir().display()
            ));
        }
        steps
    }

    /// A path as it may stand inside `ExecStart="..."`: absolute UTF-8 without `"`, `\`, `%`,
    /// `$` or control characters (which systemd would unescape or expand).
    fn unit_value<'a>(path: &'a Path, what: &str) -> Result<&'a str, String> {
        let text = path.to_str().ok_or_else(|| format!("{what} is not valid UTF-8: {}", path.display()))?;
        if !path.is_absolute() {
            return Err(format!("{what} must be absolute: {text}"));
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '"' | '\\' | '%' | '$') || c.is_control()) {
            return Err(format!("{what} contains {c:?}, which a systemd unit cannot carry safely: {text}"));
        }
        Ok(text)
    }

    /// The program and configuration an installed unit runs (from its `ExecStart=`).
    pub fn registered(unit: &str) -> (Option<PathBuf>, Option<PathBuf>) {
        let Some(line) = unit.lines().find_map(|l| l.trim().strip_prefix("ExecStart=")) else {
            return (None, None);
        };
        let words = super::split_words(line);
        let exe = words.first().map(PathBuf::from);
        let config =
            words.iter().position(|w| w == "--config").and_then(|i| words.get(i + 1)).map(PathBuf::from);
        (exe, config)
    }

    /// Whether systemd manages this machine (`sd_booted()`).
    fn systemd_running() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    pub(super) fn install(
        config_path: &Path,
        mut config: AgentConfig,
        options: &Options,
        log: &mut Log,
    ) -> Result<()> {
        let (user, unit_dir, no_start) = (options.user.as_str(), options.unit_dir.clone(), options.no_start);
        let exe = this_exe()?;
        let system = unit_dir.is_none();
        let unit_path = unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNIT_DIR)).join(UNIT_FILE);
        let unit = render(&exe, config_path, user).map_err(SetupError::invalid)?;
        if system {
            for (what, path) in [("the program", exe.as_path()), ("the configuration", config_path)] {
                if ["/home/", "/root/", "/run/user/"].iter().any(|p| path.starts_with(p)) {
                    return Err(SetupError::invalid(format!(
                        "{what} {} is under /home, /root or /run/user, which the service cannot see \
                         (ProtectHome=yes): copy the binary to /usr/local/bin and the configuration to \
                         {CONFIG_DIR}/, then run `service install` from there",
                        path.display()
                    )));
                }
            }
            if !is_root() {
                return Err(SetupError::invalid(
                    "installing the system service needs root: `sudo mini-connector service install` \
                     (or --unit-dir DIR to only write the unit file)",
                ));
            }
            prepare_system(&mut config, config_path, user, log)?;
        }
        write_definition(&unit_path, &unit)?;
        log.line(format!("wrote {}", unit_path.display()));
        log.line(format!("  runs {} start --config {} as user {user}", exe.display(), config_path.display()));
        if have("systemd-analyze") {
            match run("systemd-analyze", &["verify", &unit_path.to_string_lossy()]) {
                Ok(_) => log.line("  systemd-analyze verify: ok".into()),
                Err(e) => log.warn(e),
            }
        }
        if !system {
            // Nothing was set up: say exactly what is still missing, then how to install it.
            log.line("(--unit-dir: no systemctl calls, no account or directory set-up)".into());
            let steps =
                missing_steps(&exe, config_path, &config, user, &Machine::probe(config_path, &config, user));
            if steps.is_empty() {
                log.line("the account, the configuration and its paths are ready for this unit".into());
            } else {
                log.line("before this unit can start:".into());
                for (n, step) in steps.iter().enumerate() {
                    log.line(format!("  {}. {step}", n + 1));
                }
            }
            log.line(format!(
                "to use it: sudo install -m 0644 {} {SYSTEM_UNIT_DIR}/{UNIT_FILE} && sudo systemctl daemon-reload \
                 && sudo systemctl enable --now {}",
                unit_path.display(),
                UNIT_FILE.trim_end_matches(".service")
            ));
            return Ok(());
        }
        if !systemd_running() || !have("systemctl") {
            log.line(format!(
                "systemd is not running here: start it later with `systemctl enable --now {UNIT_FILE}`"
            ));
            return Ok(());
        }
        run("systemctl", &["daemon-reload"]).map_err(SetupError::io)?;
        if no_start {
            log.line(format!("registered; start it with `sudo systemctl enable --now {UNIT_FILE}`"));
        } else {
            run("systemctl", &["enable", "--now", UNIT_FILE]).map_err(SetupError::io)?;
            log.line(format!(
                "enabled and started; `mini-connector service status` or `journalctl -u {UNIT_FILE}`"
            ));
        }
        Ok(())
    }

    /// The system-wide set-up around the unit (packaging/README.md): the account, the state
    /// directory, the service's paths pinned in the configuration, and read access to it.
    fn prepare_system(config: &mut AgentConfig, config_path: &Path, user: &str, log: &mut Log) -> Result<()> {
        let fail = |e: String| SetupError::io(e);
        if run("id", &["-u", user]).is_err() {
            run(
                "useradd",
                &[
                    "--system",
                    "--user-group",
                    "--home-dir",
                    STATE_DIR,
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ],
            )
            .map_err(fail)?;
            log.line(format!("created system user {user}"));
        }
        let number = |flag: &str| -> Result<u32> {
            run("id", &[flag, user])
                .map_err(fail)?
                .parse()
                .map_err(|e| fail(format!("id {flag} {user}: {e}")))
        };
        let (uid, gid) = (number("-u")?, number("-g")?);
        let own = |path: &Path, mode: u32| -> Result<()> {
            use std::os::unix::fs::PermissionsExt as _;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| fail(format!("{}: {e}", path.display())))
        };
        // Now, not at first start, so `db add` can store passwords before the service ran.
        std::fs::create_dir_all(STATE_DIR).map_err(|e| fail(format!("{STATE_DIR}: {e}")))?;
        own(Path::new(STATE_DIR), 0o700)?;

        // The CLI (run by an administrator) and the service must use the same places.
        let mut pinned = Vec::new();
        let mut moved_from = None;
        // Where the install secret was before (the administrator's own key directory).
        let old_keys = config.secret_store();
        if config.vault_dir.is_none() {
            let old = config.vault_dir();
            let new = Path::new(STATE_DIR).join("vault");
            if old.join(vault::Vault::FILE_NAME).exists() && !new.exists() {
                // Same machine: the copy stays readable (bound to machine + install id, not path).
                std::fs::create_dir_all(&new).map_err(|e| fail(format!("{}: {e}", new.display())))?;
                own(&new, 0o700)?;
                for file in [vault::Vault::FILE_NAME, vault::Vault::INSTALL_ID_FILE_NAME] {
                    std::fs::copy(old.join(file), new.join(file))
                        .map_err(|e| fail(format!("copying {}: {e}", old.join(file).display())))?;
                    own(&new.join(file), 0o600)?;
                }
                moved_from = Some(old);
            }
            config.vault_dir = Some(new);
            pinned.push("vaultDir");
        }
        // The install secret follows the vault: the service cannot read the administrator's key
        // directory (and must not: it is outside the service's state directory).
        let mut secret_moved = None;
        if config.vault_key_dir.is_none() {
            let new_keys = Path::new(STATE_DIR).join("vault-keys");
            let to = vault::SecretStore::files(&new_keys);
            let copied = old_keys.copy_secret(&config.vault_dir(), &to).map_err(|e| {
                fail(format!("copying the vault's install secret to {}: {e}", new_keys.display()))
            })?;
            if moved_from.is_some() {
                secret_moved = copied;
            }
            config.vault_key_dir = Some(new_keys);
            pinned.push("vaultKeyDir");
        }
        if config.control_socket.is_none() {
            config.control_socket = Some(Path::new(RUNTIME_DIR).join("agent.sock"));
            pinned.push("controlSocket");
        }
        if config.log_dir.is_none() {
            config.log_dir = Some(PathBuf::from(LOG_DIR));
            pinned.push("logDir");
        }
        if !pinned.is_empty() {
            config.save(config_path)?;
            log.line(format!(
                "set {} in {} to the service's directories",
                pinned.join(", "),
                config_path.display()
            ));
        }
        // Only once the configuration points at the copy: no credential is left behind twice.
        if let Some(old) = moved_from {
            for file in [vault::Vault::FILE_NAME, vault::Vault::INSTALL_ID_FILE_NAME, "vault.lock"] {
                let _ = std::fs::remove_file(old.join(file));
            }
            let _ = std::fs::remove_dir(&old);
            log.line(format!("moved the vault {} to {}", old.display(), config.vault_dir().display()));
        }
        if let Some(install_id) = secret_moved {
            let _ = old_keys.delete_secret(&install_id);
            log.line(format!(
                "moved the vault's install secret {} to {}",
                old_keys.location(&install_id),
                config.vault_key_dir().display()
            ));
        }
        // root:<service group> 0640; and the configuration directory if it is ours.
        let group_read = |path: &Path, mode: u32| -> Result<()> {
            use std::os::unix::fs::PermissionsExt as _;
            std::os::unix::fs::chown(path, None, Some(gid))
                .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| fail(format!("{}: {e}", path.display())))
        };
        group_read(config_path, 0o640)?;
        if config_path.parent() == Some(Path::new(CONFIG_DIR)) {
            group_read(Path::new(CONFIG_DIR), 0o750)?;
        } else {
            log.line(format!("note: make sure user {user} can read {}", config_path.display()));
        }
        if let Err(e) = config.load_api_key() {
            log.warn(format!("the service will not start until its API key can be loaded: {e}"));
        }
        Ok(())
    }

    pub(super) fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    pub(super) fn uninstall(unit_dir: Option<PathBuf>, log: &mut Log) -> Result<()> {
        let system = unit_dir.is_none();
        let unit_path = unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNIT_DIR)).join(UNIT_FILE);
        if !unit_path.exists() {
            log.line(format!("not installed ({} does not exist)", unit_path.display()));
            return Ok(());
        }
        let managed = system && systemd_running() && have("systemctl");
        if managed {
            // Stops it gracefully (SIGTERM, 45 s) and removes the boot-time link.
            if let Err(e) = run("systemctl", &["disable", "--now", UNIT_FILE]) {
                log.warn(e);
            }
        }
        std::fs::remove_file(&unit_path)
            .map_err(|e| SetupError::io(format!("cannot remove {}: {e}", unit_path.display())))?;
        if managed {
            run("systemctl", &["daemon-reload"]).map_err(SetupError::io)?;
        }
        log.line(format!("removed {} (configuration, vault and logs are kept)", unit_path.display()));
        Ok(())
    }

    pub(super) fn status(unit_dir: Option<PathBuf>) -> Registration {
        let system = unit_dir.is_none();
        let unit_path = unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNIT_DIR)).join(UNIT_FILE);
        let mut found = Registration {
            manager: "systemd",
            unit: unit_path.display().to_string(),
            ..Registration::default()
        };
        let Ok(text) = std::fs::read_to_string(&unit_path) else { return found };
        found.registered = true;
        (found.exe, found.config) = registered(&text);
        if system && systemd_running() && have("systemctl") {
            // `is-active` exits non-zero for "inactive"/"failed"; its stdout is the answer.
            found.active = std::process::Command::new("systemctl")
                .args(["is-active", UNIT_FILE])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_unit_is_filled_and_read_back() {
            let unit =
                render(Path::new("/opt/mini connector/bin"), Path::new("/etc/mc/config.json"), "mc").unwrap();
            assert!(!unit.contains("{{"));
            assert!(
                unit.contains("ExecStart=\"/opt/mini connector/bin\" start --config \"/etc/mc/config.json\"")
            );
            assert!(unit.contains("User=mc"));
            assert!(unit.contains("Restart=on-failure"));
            // The root-only hardware id reaches the unprivileged service under the name and
            // from the path the vault reads.
            let credential =
                format!("LoadCredential={}:{}", vault::HARDWARE_ID_CREDENTIAL, vault::PRODUCT_UUID);
            assert!(unit.contains(&credential), "{unit}");
            assert!(unit.contains(&format!("SetCredential={}:none", vault::HARDWARE_ID_CREDENTIAL)));
            let (exe, config) = registered(&unit);
            assert_eq!(exe.unwrap(), Path::new("/opt/mini connector/bin"));
            assert_eq!(config.unwrap(), Path::new("/etc/mc/config.json"));
        }

        fn config(extra: serde_json::Value) -> AgentConfig {
            crate::config::test_config(extra, Some("/etc/mini-connector/config.json"))
        }

        #[test]
        fn a_unit_dir_unit_lists_what_is_missing_and_nothing_when_ready() {
            let exe = Path::new("/usr/bin/mini-connector");
            let path = Path::new("/etc/mini-connector/config.json");
            let pinned = config(serde_json::json!({
                "vaultDir": "/var/lib/mini-connector/vault",
                "vaultKeyDir": "/var/lib/mini-connector/vault-keys",
                "controlSocket": "/run/mini-connector/agent.sock",
                "logDir": "/var/log/mini-connector",
            }));
            let ready = Machine {
                account: Some((998, 998)),
                config_file: Some((0, 998, 0o640)),
                vault_owner: Some(998),
                unpinned_vault: None,
            };
            assert_eq!(missing_steps(exe, path, &pinned, "mini-connector", &ready), Vec::<String>::new());

            // Each gap, alone, is one step that names the fix.
            let no_account = Machine { account: None, ..ready.clone() };
            let steps = missing_steps(exe, path, &pinned, "mini-connector", &no_account);
            assert!(steps[0].contains("sudo useradd --system"), "{steps:?}");
            let unreadable = Machine { config_file: Some((0, 0, 0o600)), ..ready.clone() };
            let steps = missing_steps(exe, path, &pinned, "mini-connector", &unreadable);
            assert_eq!(steps.len(), 1, "{steps:?}");
            assert!(steps[0].contains("sudo chgrp mini-connector /etc/mini-connector/config.json"));
            let root_vault = Machine { vault_owner: Some(0), ..ready.clone() };
            let steps = missing_steps(exe, path, &pinned, "mini-connector", &root_vault);
            assert_eq!(steps.len(), 1, "{steps:?}");
            assert!(steps[0].contains("sudo chown -R mini-connector: /var/lib/mini-connector/vault"));
            let steps = missing_steps(exe, path, &config(serde_json::json!({})), "mini-connector", &ready);
            assert_eq!(steps.len(), 1, "{steps:?}");
            assert!(steps[0].contains("\"controlSocket\": \"/run/mini-connector/agent.sock\""));
            let old_vault = Machine {
                unpinned_vault: Some(("/etc/mini-connector/vault".into(), "/root/keys/x.key".into())),
                ..ready.clone()
            };
            let steps =
                missing_steps(exe, path, &config(serde_json::json!({})), "mini-connector", &old_vault);
            assert_eq!(steps.len(), 2, "{steps:?}");
            assert!(
                steps[1].contains("/etc/mini-connector/vault (install secret /root/keys/x.key) must move")
            );
            let home = Path::new("/home/alice/mc/config.json");
            let steps = missing_steps(Path::new("/root/mc"), home, &pinned, "mini-connector", &ready);
            assert_eq!(steps.len(), 2, "{steps:?}");
            assert!(steps.iter().all(|s| s.contains("ProtectHome=yes")));
        }

        #[test]
        fn unsafe_values_are_refused() {
            let config = Path::new("/etc/mc/config.json");
            for exe in ["/opt/a\"b", "/opt/a%i", "/opt/$HOME", "/opt/a\\b", "/opt/a\nb", "relative/bin"] {
                assert!(render(Path::new(exe), config, "mc").is_err(), "{exe:?}");
            }
            for user in ["Root", "", "1abc", "a b", "a;b"] {
                assert!(render(Path::new("/usr/bin/mc"), config, user).is_err(), "{user:?}");
            }
        }
    }
}

/// The launchd LaunchAgent (macOS). Compiled on every Unix so Linux builds check it too.
#[cfg(unix)]
pub mod launchd {
    use std::path::{Path, PathBuf};

    use super::{Log, Options, Registration, have, run, this_exe, write_definition};
    use crate::setup::{Result, SetupError};

    /// The job label.
    pub const LABEL: &str = "com.miniconnector.agent";
    const TEMPLATE: &str = include_str!("../../packaging/launchd/com.miniconnector.agent.plist");

    /// Fills the template, XML-escaping every value.
    pub fn render(exe: &Path, config: &Path, log_dir: &Path) -> Result<String, String> {
        let value = |path: &Path, what: &str| -> Result<String, String> {
            let text =
                path.to_str().ok_or_else(|| format!("{what} is not valid UTF-8: {}", path.display()))?;
            if !path.is_absolute() || text.chars().any(char::is_control) {
                return Err(format!("{what} must be an absolute path without control characters: {text}"));
            }
            Ok(text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"))
        };
        let text = TEMPLATE
            .replace("{{EXE}}", &value(exe, "the program path")?)
            .replace("{{CONFIG}}", &value(config, "the configuration path")?)
            .replace("{{LOG_DIR}}", &value(log_dir, "the log directory")?);
        if text.contains("{{") {
            return Err("the plist template has an unknown placeholder".into());
        }
        Ok(text)
    }

    /// The program and configuration a plist runs (from `ProgramArguments`).
    pub fn registered(plist: &str) -> (Option<PathBuf>, Option<PathBuf>) {
        let Some((_, rest)) = plist.split_once("<key>ProgramArguments</key>") else { return (None, None) };
        let array = rest.split_once("</array>").map_or(rest, |(array, _)| array);
        let words: Vec<String> = array
            .split("<string>")
            .skip(1)
            .filter_map(|s| s.split_once("</string>").map(|(v, _)| v))
            .map(|v| v.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
            .collect();
        let exe = words.first().map(PathBuf::from);
        let config =
            words.iter().position(|w| w == "--config").and_then(|i| words.get(i + 1)).map(PathBuf::from);
        (exe, config)
    }

    fn home() -> Result<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| SetupError::invalid("HOME is not set"))
    }

    fn plist_path(dir: Option<PathBuf>) -> Result<PathBuf> {
        let dir = match dir {
            Some(dir) => dir,
            None => home()?.join("Library").join("LaunchAgents"),
        };
        Ok(dir.join(format!("{LABEL}.plist")))
    }

    fn domain() -> Result<String> {
        let uid = run("id", &["-u"]).map_err(SetupError::io)?;
        Ok(format!("gui/{uid}"))
    }

    pub(super) fn install(config_path: &Path, options: &Options, log: &mut Log) -> Result<()> {
        let managed = options.unit_dir.is_none();
        let path = plist_path(options.unit_dir.clone())?;
        let log_dir = home()?.join("Library").join("Logs").join("Mini Connector");
        let plist = render(&this_exe()?, config_path, &log_dir).map_err(SetupError::invalid)?;
        if managed {
            std::fs::create_dir_all(&log_dir)
                .map_err(|e| SetupError::io(format!("{}: {e}", log_dir.display())))?;
        }
        write_definition(&path, &plist)?;
        log.line(format!("wrote {}", path.display()));
        if managed && !options.no_start && have("launchctl") {
            let domain = domain()?;
            // Replace a loaded older definition; "not loaded" is fine.
            let _ = run("launchctl", &["bootout", &format!("{domain}/{LABEL}")]);
            run("launchctl", &["bootstrap", &domain, &path.to_string_lossy()]).map_err(SetupError::io)?;
            log.line(format!("loaded into launchd ({domain}); it starts at every login"));
        }
        Ok(())
    }

    pub(super) fn uninstall(unit_dir: Option<PathBuf>, log: &mut Log) -> Result<()> {
        let managed = unit_dir.is_none();
        let path = plist_path(unit_dir)?;
        if !path.exists() {
            log.line(format!("not installed ({} does not exist)", path.display()));
            return Ok(());
        }
        if managed && have("launchctl") {
            let _ = run("launchctl", &["bootout", &format!("{}/{LABEL}", domain()?)]);
        }
        std::fs::remove_file(&path)
            .map_err(|e| SetupError::io(format!("cannot remove {}: {e}", path.display())))?;
        log.line(format!("removed {} (configuration, vault and logs are kept)", path.display()));
        Ok(())
    }

    pub(super) fn status(unit_dir: Option<PathBuf>) -> Result<Registration> {
        let managed = unit_dir.is_none();
        let path = plist_path(unit_dir)?;
        let mut found =
            Registration { manager: "launchd", unit: path.display().to_string(), ..Registration::default() };
        if let Ok(text) = std::fs::read_to_string(&path) {
            found.registered = true;
            (found.exe, found.config) = registered(&text);
            if managed && have("launchctl") {
                let printed = run("launchctl", &["print", &format!("{}/{LABEL}", domain()?)]);
                found.active = Some(match printed {
                    Ok(text) if text.contains("state = running") => "running".into(),
                    Ok(_) => "loaded".into(),
                    Err(_) => "not loaded".into(),
                });
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_plist_is_escaped_and_read_back() {
            let plist = render(
                Path::new("/Applications/A & B/mini-connector"),
                Path::new("/Users/x/<cfg>.json"),
                Path::new("/Users/x/Library/Logs/Mini Connector"),
            )
            .unwrap();
            assert!(!plist.contains("{{"));
            assert!(plist.contains("<string>/Applications/A &amp; B/mini-connector</string>"));
            let (exe, config) = registered(&plist);
            assert_eq!(exe.unwrap(), Path::new("/Applications/A & B/mini-connector"));
            assert_eq!(config.unwrap(), Path::new("/Users/x/<cfg>.json"));
        }
    }
}

/// The Windows service's registration through the service control manager. The service's
/// entry point (`service run`) is the binary's (it starts the agent).
#[cfg(windows)]
pub mod windows {
    use std::ffi::{OsStr, OsString};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use vault::ApiKeyStore;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl, ServiceFailureActions,
        ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState, ServiceType,
    };
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    use super::{Log, Options, Registration, this_exe};
    use crate::setup::{Result, SetupError, load};

    /// The service's name.
    pub const SERVICE_NAME: &str = "MiniConnector";
    const DISPLAY_NAME: &str = "Mini Connector";
    const DESCRIPTION: &str =
        "Read-only, outbound-only bridge from local databases to the cloud workflow console.";
    /// `ERROR_SERVICE_DOES_NOT_EXIST`.
    const NOT_INSTALLED: i32 = 1060;
    /// How long a stop may take (the agent drains in-flight commands).
    const STOP_WAIT: Duration = Duration::from_secs(45);

    fn scm(e: windows_service::Error) -> SetupError {
        SetupError::io(format!("service manager: {e}"))
    }

    pub(super) fn install(config_path: &Path, options: &Options, log: &mut Log) -> Result<()> {
        if options.unit_dir.is_some() {
            return Err(SetupError::invalid("--unit-dir has no meaning on Windows (no unit file)"));
        }
        let no_start = options.no_start;
        let config_path = config_path.to_owned();
        let mut config = load(&config_path)?;
        // The install secret defaults to the administrator's %LOCALAPPDATA%, which LocalSystem
        // does not see: pin a machine-wide key directory and copy the secret there (DPAPI in
        // machine scope, so SYSTEM can unseal what the administrator sealed; ACL admin + SYSTEM).
        if config.vault_key_dir.is_none() {
            let program_data = std::env::var_os("ProgramData")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
            let new_keys = program_data.join("MiniConnector").join("vault-keys");
            let to = vault::SecretStore::files(&new_keys);
            config.secret_store().copy_secret(&config.vault_dir(), &to).map_err(|source| {
                SetupError::from(crate::config::ConfigError::Vault {
                    what: format!("copying the vault's install secret to {}", new_keys.display()),
                    source,
                })
            })?;
            config.vault_key_dir = Some(new_keys);
            config.save(&config_path)?;
            log.line(format!("set vaultKeyDir to {}", config.vault_key_dir().display()));
        }
        // The Credential Manager is per account: LocalSystem would not see the key stored by the
        // administrator. Move it into the vault, whose ACL admits the writer and SYSTEM.
        if let Ok(store @ ApiKeyStore::Keyring { .. }) = ApiKeyStore::parse(&config.api_key_ref) {
            let key = config.load_api_key()?;
            let vault = config.open_vault()?;
            ApiKeyStore::Vault.store(&vault, key.expose().as_bytes()).map_err(|source| {
                SetupError::from(crate::config::ConfigError::Vault {
                    what: "moving the API key into the vault".into(),
                    source,
                })
            })?;
            config.api_key_ref = ApiKeyStore::Vault.to_string();
            config.save(&config_path)?;
            let _ = store.delete(&vault);
            log.line(format!(
                "moved the API key from the Credential Manager into the vault (apiKeyRef vault://apikey)"
            ));
        }
        let manager = ServiceManager::local_computer(
            None::<&str>,
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        )
        .map_err(scm)?;
        let info = ServiceInfo {
            name: OsString::from(SERVICE_NAME),
            display_name: OsString::from(DISPLAY_NAME),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: this_exe()?,
            launch_arguments: vec![
                "service".into(),
                "run".into(),
                "--config".into(),
                config_path.clone().into(),
            ],
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let service = manager
            .create_service(
                &info,
                ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
            )
            .map_err(scm)?;
        service.set_description(DESCRIPTION).map_err(scm)?;
        // Like systemd's Restart=on-failure: restart after a crash or a failed exit, not a Stop.
        let restart =
            ServiceAction { action_type: ServiceActionType::Restart, delay: Duration::from_secs(5) };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 60 * 60)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart.clone(), restart.clone(), restart]),
            })
            .map_err(scm)?;
        service.set_failure_actions_on_non_crash_failures(true).map_err(scm)?;
        log.line(format!(
            "registered the {SERVICE_NAME} service: {} service run --config {}",
            info.executable_path.display(),
            config_path.display()
        ));
        if !no_start {
            service.start(&[] as &[&OsStr]).map_err(scm)?;
            log.line(format!("started"));
        }
        Ok(())
    }

    pub(super) fn uninstall(log: &mut Log) -> Result<()> {
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).map_err(scm)?;
        let service = match manager.open_service(
            SERVICE_NAME,
            ServiceAccess::STOP | ServiceAccess::DELETE | ServiceAccess::QUERY_STATUS,
        ) {
            Ok(service) => service,
            Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NOT_INSTALLED) => {
                log.line(format!("not installed"));
                return Ok(());
            }
            Err(e) => return Err(scm(e)),
        };
        if service.query_status().map_err(scm)?.current_state != ServiceState::Stopped {
            let _ = service.stop();
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while std::time::Instant::now() < deadline
                && service.query_status().map_err(scm)?.current_state != ServiceState::Stopped
            {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        service.delete().map_err(scm)?;
        log.line(format!("removed the {SERVICE_NAME} service (configuration, vault and logs are kept)"));
        Ok(())
    }

    pub(super) fn status() -> Result<Registration> {
        let mut found =
            Registration { manager: "windows", unit: SERVICE_NAME.into(), ..Registration::default() };
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).map_err(scm)?;
        let service = match manager
            .open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG)
        {
            Ok(service) => service,
            Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NOT_INSTALLED) => {
                return Ok(found);
            }
            Err(e) => return Err(scm(e)),
        };
        found.registered = true;
        // The SCM stores one command line: "C:\path\mini-connector.exe" service run --config "..."
        let command = service.query_config().map_err(scm)?.executable_path.to_string_lossy().into_owned();
        let words = super::split_words(&command);
        found.exe = words.first().map(PathBuf::from);
        found.config =
            words.iter().position(|w| w == "--config").and_then(|i| words.get(i + 1)).map(PathBuf::from);
        found.active = Some(format!("{:?}", service.query_status().map_err(scm)?.current_state));
        Ok(found)
    }
}
