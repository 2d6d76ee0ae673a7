//! `service install|uninstall|status`: register the agent with the OS service manager.
//!
//! - Linux: a systemd unit from `packaging/systemd/` (hardened, own user, `Restart=on-failure`).
//! - macOS: a LaunchAgent plist from `packaging/launchd/`.
//! - Windows: a real service through `windows-service` (`service run` is the SCM's entry).
//!
//! Templates are compiled in with `include_str!` and filled with this binary's canonical path
//! and the absolute configuration path; a value that cannot be written safely is refused.
//! `status` reads the registered definition back and checks that it runs *this* binary.

use std::path::{Path, PathBuf};

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
    },
    /// Stop the service and remove its registration (keeps configuration, vault and logs).
    #[command(
        after_help = "Exit codes: 0 ok (also when nothing was installed); 1 the service manager failed."
    )]
    Uninstall {
        /// Remove the unit / plist from DIR (as given to `install --unit-dir`).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
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

/// What `service status` found.
#[derive(Debug, Default)]
struct Registration {
    manager: &'static str,
    /// The unit file / plist / service name.
    unit: String,
    registered: bool,
    exe: Option<PathBuf>,
    config: Option<PathBuf>,
    /// The service manager's word (`active`, `inactive`, `running`...), when it can be asked.
    active: Option<String>,
}

/// `service ...` on Linux and macOS.
#[cfg(unix)]
pub fn service(command: ServiceCmd) -> Outcome {
    if cfg!(target_os = "macos") { launchd::dispatch(command) } else { systemd::dispatch(command) }
}

/// `service ...` on Windows.
#[cfg(windows)]
pub fn service(command: ServiceCmd) -> Outcome {
    windows::dispatch(command)
}

/// This binary's canonical path: what a registration must point at.
fn this_exe() -> Result<PathBuf, Fail> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot find this program's own path: {e}")))
}

/// Whether `registered` is this binary (same canonical path).
fn is_this_exe(registered: &Path, this: &Path) -> bool {
    registered.canonicalize().map(|p| p == this).unwrap_or(registered == this)
}

/// Whether an agent answers on the control socket of the configuration at `config`.
fn agent_answers(config: &Path) -> bool {
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
        (false, _) => {
            Err(Fail { code: exit::NOT_RUNNING, error: anyhow::anyhow!("the service is not registered") })
        }
        (true, Some(true)) => Ok(()),
        (true, _) => Err(Fail::runtime(anyhow::anyhow!("the registered service runs another binary"))),
    }
}

/// Runs a program, returning its trimmed stdout, or a message with its stderr.
#[cfg(unix)]
fn run(program: &str, args: &[&str]) -> Result<String, String> {
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
fn write_definition(path: &Path, text: &str) -> Result<(), Fail> {
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
        Fail::runtime(anyhow::anyhow!("cannot write {}: {e}{hint}", path.display()))
    })
}

/// The systemd unit (Linux).
/// Splits a command line into words, honouring double quotes (enough for our own units).
fn split_words(line: &str) -> Vec<String> {
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

#[cfg(unix)]
pub mod systemd {
    use std::path::{Path, PathBuf};

    use mini_connector::config::AgentConfig;

    use super::{Registration, ServiceCmd, have, run, this_exe, write_definition};
    use crate::cli::{Fail, Outcome};

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
        let text = TEMPLATE.replace("{{EXE}}", exe).replace("{{CONFIG}}", config).replace("{{USER}}", user);
        if text.contains("{{") {
            return Err("the unit template has an unknown placeholder".into());
        }
        Ok(text)
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

    pub(super) fn dispatch(command: ServiceCmd) -> Outcome {
        match command {
            ServiceCmd::Install { config, user, unit_dir, no_start } => {
                install(&config.path(), config.load()?, &user, unit_dir, no_start)
            }
            ServiceCmd::Uninstall { unit_dir } => uninstall(unit_dir),
            ServiceCmd::Status { unit_dir, json } => super::report(&status(unit_dir), json),
            ServiceCmd::Run { .. } => {
                Err(Fail::usage("`service run` is the Windows service entry; systemd runs `start`"))
            }
        }
    }

    fn install(
        config_path: &Path,
        mut config: AgentConfig,
        user: &str,
        unit_dir: Option<PathBuf>,
        no_start: bool,
    ) -> Outcome {
        let exe = this_exe()?;
        let system = unit_dir.is_none();
        let unit_path = unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNIT_DIR)).join(UNIT_FILE);
        let unit = render(&exe, config_path, user).map_err(Fail::usage)?;
        if system {
            for (what, path) in [("the program", exe.as_path()), ("the configuration", config_path)] {
                if ["/home/", "/root/", "/run/user/"].iter().any(|p| path.starts_with(p)) {
                    return Err(Fail::usage(format!(
                        "{what} {} is under /home, /root or /run/user, which the service cannot see \
                         (ProtectHome=yes): copy the binary to /usr/local/bin and the configuration to \
                         {CONFIG_DIR}/, then run `service install` from there",
                        path.display()
                    )));
                }
            }
            if !is_root() {
                return Err(Fail::usage(
                    "installing the system service needs root: `sudo mini-connector service install` \
                     (or --unit-dir DIR to only write the unit file)",
                ));
            }
            prepare_system(&mut config, config_path, user)?;
        }
        write_definition(&unit_path, &unit)?;
        println!("wrote {}", unit_path.display());
        println!("  runs {} start --config {} as user {user}", exe.display(), config_path.display());
        if have("systemd-analyze") {
            match run("systemd-analyze", &["verify", &unit_path.to_string_lossy()]) {
                Ok(_) => println!("  systemd-analyze verify: ok"),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        if !system {
            println!("(--unit-dir: no systemctl calls; copy it to {SYSTEM_UNIT_DIR} to use it)");
            return Ok(());
        }
        if !systemd_running() || !have("systemctl") {
            println!("systemd is not running here: start it later with `systemctl enable --now {UNIT_FILE}`");
            return Ok(());
        }
        run("systemctl", &["daemon-reload"]).map_err(|e| Fail::runtime(anyhow::anyhow!(e)))?;
        if no_start {
            println!("registered; start it with `sudo systemctl enable --now {UNIT_FILE}`");
        } else {
            run("systemctl", &["enable", "--now", UNIT_FILE])
                .map_err(|e| Fail::runtime(anyhow::anyhow!(e)))?;
            println!("enabled and started; `mini-connector service status` or `journalctl -u {UNIT_FILE}`");
        }
        Ok(())
    }

    /// The system-wide set-up around the unit (packaging/README.md): the account, the state
    /// directory, the service's paths pinned in the configuration, and read access to it.
    fn prepare_system(config: &mut AgentConfig, config_path: &Path, user: &str) -> Result<(), Fail> {
        let fail = |e: String| Fail::runtime(anyhow::anyhow!(e));
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
            println!("created system user {user}");
        }
        let number = |flag: &str| -> Result<u32, Fail> {
            run("id", &[flag, user])
                .map_err(fail)?
                .parse()
                .map_err(|e| fail(format!("id {flag} {user}: {e}")))
        };
        let (uid, gid) = (number("-u")?, number("-g")?);
        let own = |path: &Path, mode: u32| -> Result<(), Fail> {
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
            println!("set {} in {} to the service's directories", pinned.join(", "), config_path.display());
        }
        // Only once the configuration points at the copy: no credential is left behind twice.
        if let Some(old) = moved_from {
            for file in [vault::Vault::FILE_NAME, vault::Vault::INSTALL_ID_FILE_NAME, "vault.lock"] {
                let _ = std::fs::remove_file(old.join(file));
            }
            let _ = std::fs::remove_dir(&old);
            println!("moved the vault {} to {}", old.display(), config.vault_dir().display());
        }
        if let Some(install_id) = secret_moved {
            let _ = old_keys.delete_secret(&install_id);
            println!(
                "moved the vault's install secret {} to {}",
                old_keys.location(&install_id),
                config.vault_key_dir().display()
            );
        }
        // root:<service group> 0640; and the configuration directory if it is ours.
        let group_read = |path: &Path, mode: u32| -> Result<(), Fail> {
            use std::os::unix::fs::PermissionsExt as _;
            std::os::unix::fs::chown(path, None, Some(gid))
                .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| fail(format!("{}: {e}", path.display())))
        };
        group_read(config_path, 0o640)?;
        if config_path.parent() == Some(Path::new(CONFIG_DIR)) {
            group_read(Path::new(CONFIG_DIR), 0o750)?;
        } else {
            println!("note: make sure user {user} can read {}", config_path.display());
        }
        if let Err(e) = config.load_api_key() {
            eprintln!("warning: the service will not start until its API key can be loaded: {e}");
        }
        Ok(())
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    fn uninstall(unit_dir: Option<PathBuf>) -> Outcome {
        let system = unit_dir.is_none();
        let unit_path = unit_dir.unwrap_or_else(|| PathBuf::from(SYSTEM_UNIT_DIR)).join(UNIT_FILE);
        if !unit_path.exists() {
            println!("not installed ({} does not exist)", unit_path.display());
            return Ok(());
        }
        let managed = system && systemd_running() && have("systemctl");
        if managed {
            // Stops it gracefully (SIGTERM, 45 s) and removes the boot-time link.
            if let Err(e) = run("systemctl", &["disable", "--now", UNIT_FILE]) {
                eprintln!("warning: {e}");
            }
        }
        std::fs::remove_file(&unit_path)
            .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot remove {}: {e}", unit_path.display())))?;
        if managed {
            run("systemctl", &["daemon-reload"]).map_err(|e| Fail::runtime(anyhow::anyhow!(e)))?;
        }
        println!("removed {} (configuration, vault and logs are kept)", unit_path.display());
        Ok(())
    }

    fn status(unit_dir: Option<PathBuf>) -> Registration {
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

    use super::{Registration, ServiceCmd, have, run, this_exe, write_definition};
    use crate::cli::{Fail, Outcome};

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

    fn home() -> Result<PathBuf, Fail> {
        std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| Fail::usage("HOME is not set"))
    }

    fn plist_path(dir: Option<PathBuf>) -> Result<PathBuf, Fail> {
        let dir = match dir {
            Some(dir) => dir,
            None => home()?.join("Library").join("LaunchAgents"),
        };
        Ok(dir.join(format!("{LABEL}.plist")))
    }

    fn domain() -> Result<String, Fail> {
        let uid = run("id", &["-u"]).map_err(|e| Fail::runtime(anyhow::anyhow!(e)))?;
        Ok(format!("gui/{uid}"))
    }

    pub(super) fn dispatch(command: ServiceCmd) -> Outcome {
        match command {
            ServiceCmd::Install { config, user: _, unit_dir, no_start } => {
                config.load()?;
                let managed = unit_dir.is_none();
                let path = plist_path(unit_dir)?;
                let log_dir = home()?.join("Library").join("Logs").join("Mini Connector");
                let plist = render(&this_exe()?, &config.path(), &log_dir).map_err(Fail::usage)?;
                if managed {
                    std::fs::create_dir_all(&log_dir)
                        .map_err(|e| Fail::runtime(anyhow::anyhow!("{}: {e}", log_dir.display())))?;
                }
                write_definition(&path, &plist)?;
                println!("wrote {}", path.display());
                if managed && !no_start && have("launchctl") {
                    let domain = domain()?;
                    // Replace a loaded older definition; "not loaded" is fine.
                    let _ = run("launchctl", &["bootout", &format!("{domain}/{LABEL}")]);
                    run("launchctl", &["bootstrap", &domain, &path.to_string_lossy()])
                        .map_err(|e| Fail::runtime(anyhow::anyhow!(e)))?;
                    println!("loaded into launchd ({domain}); it starts at every login");
                }
                Ok(())
            }
            ServiceCmd::Uninstall { unit_dir } => {
                let managed = unit_dir.is_none();
                let path = plist_path(unit_dir)?;
                if !path.exists() {
                    println!("not installed ({} does not exist)", path.display());
                    return Ok(());
                }
                if managed && have("launchctl") {
                    let _ = run("launchctl", &["bootout", &format!("{}/{LABEL}", domain()?)]);
                }
                std::fs::remove_file(&path)
                    .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot remove {}: {e}", path.display())))?;
                println!("removed {} (configuration, vault and logs are kept)", path.display());
                Ok(())
            }
            ServiceCmd::Status { unit_dir, json } => {
                let managed = unit_dir.is_none();
                let path = plist_path(unit_dir)?;
                let mut found = Registration {
                    manager: "launchd",
                    unit: path.display().to_string(),
                    ..Registration::default()
                };
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
                super::report(&found, json)
            }
            ServiceCmd::Run { .. } => Err(Fail::usage("`service run` is the Windows service entry")),
        }
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

/// The Windows service: registration through the service control manager, and the service
/// entry point (`service run`) that maps Stop/Shutdown to the agent's graceful shutdown.
#[cfg(windows)]
mod windows {
    use std::ffi::{OsStr, OsString};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use crossbeam_channel::Sender;
    use mini_connector::agent::Agent;
    use mini_connector::config::AgentConfig;
    use mini_connector::supervisor::SupMsg;
    use vault::ApiKeyStore;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo,
        ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::{Registration, ServiceCmd, this_exe};
    use crate::cli::{ConfigArg, Fail, Outcome};
    use crate::exit;

    const SERVICE_NAME: &str = "MiniConnector";
    const DISPLAY_NAME: &str = "Mini Connector";
    const DESCRIPTION: &str =
        "Read-only, outbound-only bridge from local databases to the cloud workflow console.";
    /// `ERROR_SERVICE_DOES_NOT_EXIST`.
    const NOT_INSTALLED: i32 = 1060;
    /// How long a stop may take (the agent drains in-flight commands).
    const STOP_WAIT: Duration = Duration::from_secs(45);

    /// The configuration `service run` was started with (the SCM calls `service_main` on its
    /// own thread, without our arguments).
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    fn scm(e: windows_service::Error) -> Fail {
        Fail::runtime(anyhow::anyhow!("service manager: {e}"))
    }

    pub(super) fn dispatch(command: ServiceCmd) -> Outcome {
        match command {
            ServiceCmd::Install { config, user: _, unit_dir, no_start } => {
                if unit_dir.is_some() {
                    return Err(Fail::usage("--unit-dir has no meaning on Windows (no unit file)"));
                }
                install(&config, no_start)
            }
            ServiceCmd::Uninstall { .. } => uninstall(),
            ServiceCmd::Status { json, .. } => super::report(&status()?, json),
            ServiceCmd::Run { config } => run(config.path()),
        }
    }

    fn install(config_arg: &ConfigArg, no_start: bool) -> Outcome {
        let config_path = config_arg.path();
        let mut config = config_arg.load()?;
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
                Fail::from(mini_connector::config::ConfigError::Vault {
                    what: format!("copying the vault's install secret to {}", new_keys.display()),
                    source,
                })
            })?;
            config.vault_key_dir = Some(new_keys);
            config.save(&config_path)?;
            println!("set vaultKeyDir to {}", config.vault_key_dir().display());
        }
        // The Credential Manager is per account: LocalSystem would not see the key stored by the
        // administrator. Move it into the vault, whose ACL admits the writer and SYSTEM.
        if let Ok(store @ ApiKeyStore::Keyring { .. }) = ApiKeyStore::parse(&config.api_key_ref) {
            let key = config.load_api_key()?;
            let vault = config.open_vault()?;
            ApiKeyStore::Vault.store(&vault, key.expose().as_bytes()).map_err(|source| {
                Fail::from(mini_connector::config::ConfigError::Vault {
                    what: "moving the API key into the vault".into(),
                    source,
                })
            })?;
            config.api_key_ref = ApiKeyStore::Vault.to_string();
            config.save(&config_path)?;
            let _ = store.delete(&vault);
            println!(
                "moved the API key from the Credential Manager into the vault (apiKeyRef vault://apikey)"
            );
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
        println!(
            "registered the {SERVICE_NAME} service: {} service run --config {}",
            info.executable_path.display(),
            config_path.display()
        );
        if !no_start {
            service.start(&[] as &[&OsStr]).map_err(scm)?;
            println!("started");
        }
        Ok(())
    }

    fn uninstall() -> Outcome {
        let manager =
            ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).map_err(scm)?;
        let service = match manager.open_service(
            SERVICE_NAME,
            ServiceAccess::STOP | ServiceAccess::DELETE | ServiceAccess::QUERY_STATUS,
        ) {
            Ok(service) => service,
            Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(NOT_INSTALLED) => {
                println!("not installed");
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
        println!("removed the {SERVICE_NAME} service (configuration, vault and logs are kept)");
        Ok(())
    }

    fn status() -> Result<Registration, Fail> {
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

    define_windows_service!(ffi_service_main, service_main);

    /// `service run`: hands this thread to the service control dispatcher until the service
    /// stops.
    fn run(config: PathBuf) -> Outcome {
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
        let log_dir = config.log_dir.clone().unwrap_or_else(mini_connector::logging::default_log_dir);
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
