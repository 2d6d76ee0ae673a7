//! `configure`, `key show|rotate`, `vault status|reset`: the connector's identity and its API
//! key. The work is `mini_connector::setup::settings`; this module parses flags, prompts and
//! prints.

use std::path::PathBuf;

use mini_connector::protocol::control::SettingsChange;
use mini_connector::setup;
use serde_json::json;
use vault::{ApiKeyStore, Vault};
use zeroize::Zeroizing;

use super::output::escape;
use super::{ConfigArg, Fail, Outcome, absolute, print_json, secret_from_prompt, secret_from_stdin};
use crate::exit;

/// `configure`: create or update the configuration and store the API key.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  echo \"$API_KEY\" | mini-connector configure --name Warehouse --cloud-url wss://console.example.com/ws --api-key-stdin
  mini-connector configure --proxy http://proxy.corp:3128
  echo \"$PROXY_PASSWORD\" | mini-connector configure --proxy http://alice@proxy.corp:3128 --proxy-password-stdin
  mini-connector configure --pin-spki sha256/AAAA...= --pin-spki sha256/BBBB...=
  mini-connector configure --cloud-url-fallback wss://gw2.example.com/ws --cloud-url-fallback wss://gw3.example.com/ws
  mini-connector configure --ca-cert /etc/ssl/corp-root.pem --heartbeat-ms 15000

The key is checked locally (format and checksum), stored in the machine-bound vault (Linux) or
the OS credential store (Windows, macOS), and the configuration gets only a reference to it
(apiKeyRef). Prefer --api-key-stdin: a key on the command line lands in shell history.

Exit codes: 0 ok; 1 the vault or the file could not be written; 2 bad usage, bad value or
malformed key (nothing written); 4 VAULT_DECRYPT_ERROR (see `mini-connector vault reset`).")]
pub struct ConfigureArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Friendly name of this connector (required for a new configuration).
    #[arg(long)]
    name: Option<String>,
    /// wss:// URL of the cloud gateway (required for a new configuration).
    #[arg(long, value_name = "URL")]
    cloud_url: Option<String>,
    /// wss:// URL of another node of the gateway, dialled in turn when the ones before it cannot
    /// be reached (cloudUrlFallbacks). Repeatable, in order; replaces the list; "" removes
    /// every fallback.
    #[arg(long, value_name = "URL")]
    cloud_url_fallback: Vec<String>,
    /// HTTP CONNECT proxy, http://[USER[:PASSWORD]@]host:port; the user goes to proxyUser, the
    /// password to the vault (never the configuration). An empty value removes the proxy.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Read the proxy password from the first line of stdin (for the user in --proxy).
    #[arg(long, conflicts_with = "api_key_stdin")]
    proxy_password_stdin: bool,
    /// Pin the cloud's certificate chain: sha256/BASE64 of a SubjectPublicKeyInfo (leaf,
    /// intermediate or CA). Repeatable; replaces the list; "" removes every pin.
    #[arg(long, value_name = "PIN")]
    pin_spki: Vec<String>,
    /// Extra CA certificate (PEM) to trust for the gateway; an empty value removes it.
    #[arg(long, value_name = "PEM", value_parser = super::path_or_empty)]
    ca_cert: Option<PathBuf>,
    /// Heartbeat period in milliseconds (1000-3600000).
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<u64>,
    /// WebSocket keepalive ping after this many milliseconds without a write (100-600000;
    /// default 20000, below the 30-60 s idle timeouts of common firewalls and proxies).
    #[arg(long, value_name = "MS")]
    keepalive_ms: Option<u64>,
    /// Directory of the credential vault (default: `vault/` next to the configuration file,
    /// or `$STATE_DIRECTORY/vault` under systemd); an empty value goes back to the default.
    #[arg(long, value_name = "DIR", value_parser = super::path_or_empty)]
    vault_dir: Option<PathBuf>,
    /// Directory of the vault's install secret, kept apart from the vault so a copy of the
    /// vault directory cannot be decrypted (default: vault-keys/ beside --vault-dir when that is
    /// set, else the user's state directory, e.g. ~/.local/state/mini-connector/vault-keys);
    /// an empty value goes back to the default.
    #[arg(long, value_name = "DIR", value_parser = super::path_or_empty)]
    vault_key_dir: Option<PathBuf>,
    #[command(flatten)]
    key: KeyInput,
    /// Print JSON (docs/CLI.md): {"ok": true, "data": {"config", "action", "connector",
    /// "cloudUrl", "cloudUrlFallbacks", "proxy", "proxyUser", "proxyPasswordStored",
    /// "pinnedSpki", "apiKey", "apiKeyRef", "vaultDir", "vaultKeyDir"}} (`apiKey` masked, null when unchanged). Secrets
    /// come from the --*-stdin flags only.
    #[arg(long)]
    json: bool,
}

/// Where a new API key comes from.
#[derive(Debug, clap::Args)]
pub struct KeyInput {
    /// The API key (vmc_...). Lands in shell history and process lists: prefer --api-key-stdin.
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_stdin")]
    api_key: Option<String>,
    /// Read the API key from the first line of stdin.
    #[arg(long)]
    api_key_stdin: bool,
}

impl KeyInput {
    /// The key text, if one was given (without prompting).
    fn take(&mut self) -> Result<Option<Zeroizing<String>>, Fail> {
        if self.api_key_stdin {
            return secret_from_stdin("API key").map(Some);
        }
        let key = self.api_key.take().map(Zeroizing::new);
        if key.is_some() {
            eprintln!("note: a key given with --api-key stays in shell history; --api-key-stdin avoids that");
        }
        Ok(key)
    }
}

/// `key`: the API key.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// Show the stored API key, masked (vmc_tenant_****_check), and where it is stored.
    #[command(after_help = "Exit codes: 0 ok; 2 no key / malformed key / bad config; 4 VAULT_DECRYPT_ERROR.")]
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON: {"reference", "masked", "tenant"}.
        #[arg(long)]
        json: bool,
    },
    /// Replace the stored API key (checked locally first). Without a flag it is asked for on
    /// the terminal, without echo.
    #[command(after_help = "\
Examples:
  mini-connector key rotate                      # asks for the key, no echo
  echo \"$NEW_KEY\" | mini-connector key rotate --api-key-stdin

A running agent uses the new key at its next connection (`mini-connector reconnect` to switch now).
Exit codes: 0 ok; 1 the key could not be stored; 2 malformed key or bad usage; 4 VAULT_DECRYPT_ERROR.")]
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        key: KeyInput,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"action": "replaced", "apiKey",
        /// "apiKeyRef", "agentRunning"}}. Needs --api-key-stdin (no prompt).
        #[arg(long)]
        json: bool,
    },
}

/// `vault`: the credential vault itself.
#[derive(Debug, clap::Subcommand)]
pub enum VaultCmd {
    /// Where the vault is, whether it can be decrypted here, and which credentials it holds
    /// (names only, never values).
    #[command(
        after_help = "Exit codes: 0 ok (also when there is no vault yet); 1 I/O error; 4 VAULT_DECRYPT_ERROR."
    )]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON: {"dir", "keyDir", "installSecret", "hardwareBound", "exists", "readable",
        /// "apiKeyStored", "credentials", "error"}.
        #[arg(long)]
        json: bool,
    },
    /// After VAULT_DECRYPT_ERROR (vault copied from another machine, or damaged): move the
    /// unreadable vault file aside and start an empty vault, then list what to re-enter.
    /// Does nothing to a vault that can be read.
    #[command(after_help = "Exit codes: 0 ok (reset, or nothing to reset); 1 failure.")]
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"action": "reset"|"nothing to reset",
        /// "dir", "movedTo", "reenter": [commands]}}.
        #[arg(long)]
        json: bool,
    },
}

fn old_reference_note(old: Option<&str>) {
    if let Some(old) = old.filter(|old| old.starts_with("file:") || old.starts_with("env:")) {
        say!("note: apiKeyRef was {old}; it is no longer read (delete the old copy of the key)");
    }
}

/// An absolute path as text; an empty path stays empty (it removes the field).
fn absolute_or_empty(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() { String::new() } else { absolute(path).display().to_string() }
}

/// `configure`: the flags become a [`SettingsChange`] for `setup::settings::configure_with`.
pub fn configure(mut args: ConfigureArgs) -> Outcome {
    let path = args.config.path();
    let existing = path.exists();
    if !existing && (args.name.is_none() || args.cloud_url.is_none()) {
        return Err(Fail::usage(format!(
            "no configuration at {} yet: a new one needs --name and --cloud-url (and the API key)",
            path.display()
        )));
    }
    if existing {
        // A damaged or invalid file is reported as such (exit 2), before anything else.
        args.config.load()?;
    }
    let key = args.key.take()?;
    let proxy_password = if args.proxy_password_stdin {
        Some(secret_from_stdin("proxy password")?)
    } else {
        // `--proxy http://USER@host:port` on a terminal: ask for the password, without echo.
        let wants_password = args
            .proxy
            .as_deref()
            .and_then(|url| mini_connector::proxy::parse_proxy_url(url).ok())
            .is_some_and(|url| url.user.is_some() && url.password.is_none());
        if wants_password && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            Some(secret_from_prompt("Proxy password: ", "proxy password", "--proxy-password-stdin")?)
        } else {
            None
        }
    };
    let pinned_spki = if args.pin_spki.is_empty() {
        None
    } else {
        for pin in args.pin_spki.iter().filter(|p| !p.trim().is_empty()) {
            mini_connector::tls::parse_pin(pin).map_err(|e| Fail::usage(format!("--pin-spki: {e}")))?;
        }
        Some(std::mem::take(&mut args.pin_spki))
    };
    if key.is_none() && !existing {
        return Err(Fail::usage("a new configuration needs the API key: --api-key-stdin (or --api-key KEY)"));
    }
    if let Some(ca) = &args.ca_cert
        && !ca.as_os_str().is_empty()
    {
        mini_connector::tls::client_config(Some(&absolute(ca)))
            .map_err(|e| Fail::usage(format!("--ca-cert: {e}")))?;
    }
    let change = SettingsChange {
        connector_name: args.name.take(),
        cloud_url: args.cloud_url.take(),
        proxy_url: args.proxy.take(),
        ca_cert_path: args.ca_cert.take().map(|ca| absolute_or_empty(&ca)),
        heartbeat_interval_ms: args.heartbeat_ms,
        keepalive_interval_ms: args.keepalive_ms,
        vault_dir: args.vault_dir.take().map(|d| absolute_or_empty(&d)),
        vault_key_dir: args.vault_key_dir.take().map(|d| absolute_or_empty(&d)),
        api_key: key.as_ref().map(|k| k.as_str().to_owned()),
        ..SettingsChange::default()
    };
    drop(key);
    let cloud_url_fallbacks =
        (!args.cloud_url_fallback.is_empty()).then(|| std::mem::take(&mut args.cloud_url_fallback));
    let net = setup::settings::NetChange { proxy_password, pinned_spki, cloud_url_fallbacks };
    let done = setup::settings::configure_net(&path, change, net)?;
    let config = &done.config;

    say!("{} {}", if done.created { "created" } else { "updated" }, path.display());
    say!("connector:  {}", config.connector_name);
    say!("cloud:      {}", config.cloud_url);
    for url in &config.cloud_url_fallbacks {
        say!("fallback:   {url}");
    }
    if let Some(proxy) = &config.proxy_url {
        // Never the password: it is in the vault (and a URL with one was split above).
        match &config.proxy_user {
            Some(user) if mini_connector::proxy::password_stored(config) => {
                say!("proxy:      {proxy} (user {user}, password in the vault)")
            }
            Some(user) => {
                say!("proxy:      {proxy} (user {user})");
                say!(
                    "note:       no proxy password is stored yet: echo \"$PASSWORD\" | mini-connector configure --proxy-password-stdin"
                );
            }
            None => say!("proxy:      {proxy}"),
        }
    }
    if !config.pinned_spki.is_empty() {
        say!("pinned:     {}", config.pinned_spki.join(", "));
    }
    match &done.key_stored {
        Some(masked) => say!("API key:    {masked} (stored in {})", config.api_key_ref),
        None => say!("API key:    unchanged ({})", config.api_key_ref),
    }
    say!("vault:      {}", config.vault_dir().display());
    say!("vault keys: {}", config.vault_key_dir().display());
    old_reference_note(done.old_reference.as_deref());
    if done.created {
        say!("next:       mini-connector db add --name NAME --type ... ; mini-connector start --daemon");
    }
    if args.json {
        let proxy_password_stored =
            config.proxy_user.is_some() && mini_connector::proxy::password_stored(config);
        print_json(&json!({
            "config": path,
            "action": if done.created { "created" } else { "updated" },
            "connector": config.connector_name,
            "cloudUrl": config.cloud_url,
            "cloudUrlFallbacks": config.cloud_url_fallbacks,
            "proxy": config.proxy_url,
            "proxyUser": config.proxy_user,
            "proxyPasswordStored": proxy_password_stored,
            "pinnedSpki": config.pinned_spki,
            "apiKey": done.key_stored,
            "apiKeyRef": config.api_key_ref,
            "vaultDir": config.vault_dir(),
            "vaultKeyDir": config.vault_key_dir(),
        }));
    }
    Ok(())
}

/// `key show` / `key rotate`.
pub fn key(command: KeyCmd) -> Outcome {
    match command {
        KeyCmd::Show { config, json } => {
            let config = config.load()?;
            let key = config.load_api_key()?;
            if json {
                print_json(&json!({
                    "reference": config.api_key_ref,
                    "masked": key.masked(),
                    "tenant": key.tenant_id(),
                }));
            } else {
                println!("API key:   {}", key.masked());
                println!("stored in: {}", config.api_key_ref);
            }
            Ok(())
        }
        KeyCmd::Rotate { config: arg, mut key, json } => {
            arg.load()?;
            let text = match key.take()? {
                Some(text) => text,
                None => secret_from_prompt("New API key: ", "API key", "--api-key-stdin")?,
            };
            let (key, config, old_reference) = setup::store_api_key(&arg.path(), &text)?;
            drop(text);
            say!("API key replaced: {} (stored in {})", key.masked(), config.api_key_ref);
            old_reference_note(old_reference.as_deref());
            let running = super::agent_running(&arg.path(), &config);
            if running {
                say!(
                    "the running agent uses it at its next connection; `mini-connector reconnect` switches now"
                );
            }
            if json {
                print_json(&json!({
                    "action": "replaced",
                    "apiKey": key.masked(),
                    "apiKeyRef": config.api_key_ref,
                    "agentRunning": running,
                }));
            }
            Ok(())
        }
    }
}

/// `vault status` / `vault reset`.
pub fn vault(command: VaultCmd) -> Outcome {
    match command {
        VaultCmd::Status { config, json } => {
            let config = config.load()?;
            let dir = config.vault_dir();
            let exists = dir.join(Vault::FILE_NAME).exists();
            let opened = if exists { Some(config.open_vault()) } else { None };
            let (readable, credentials, api_key_stored, error, code) = match &opened {
                None => (false, Vec::new(), Some(false), None, exit::OK),
                Some(Ok(vault)) => {
                    let ids = vault.ids().unwrap_or_default();
                    let api_key = match ApiKeyStore::parse(&config.api_key_ref) {
                        Ok(ApiKeyStore::Vault) => Some(ApiKeyStore::Vault.load(vault).is_ok()),
                        _ => None,
                    };
                    (true, ids, api_key, None, exit::OK)
                }
                Some(Err(e)) => {
                    let code = if e.is_vault_decrypt() { exit::VAULT } else { exit::FAILURE };
                    (false, Vec::new(), None, Some(e.to_string()), code)
                }
            };
            let (secret, hardware_bound) = match &opened {
                Some(Ok(vault)) => (Some(config.secret_location(vault)), Some(vault.hardware_bound())),
                _ => (None, None),
            };
            let key_dir = config.vault_key_dir();
            if json {
                print_json(&json!({
                    "dir": dir,
                    "keyDir": key_dir,
                    "installSecret": secret,
                    "hardwareBound": hardware_bound,
                    "exists": exists,
                    "readable": readable,
                    "apiKeyStored": api_key_stored,
                    "credentials": credentials,
                    "error": error,
                }));
            } else {
                println!("vault:        {}", dir.display());
                println!(
                    "key material: {}",
                    secret.as_deref().map_or_else(|| key_dir.display().to_string(), str::to_owned)
                );
                if let Some(bound) = hardware_bound {
                    println!("hardware id:  {}", if bound { "bound (product_uuid)" } else { "not bound" });
                }
                println!(
                    "state:        {}",
                    if !exists {
                        "not created yet"
                    } else if readable {
                        "readable"
                    } else {
                        "UNREADABLE"
                    }
                );
                if let Some(stored) = api_key_stored {
                    println!("API key:      {}", if stored { "stored" } else { "not stored here" });
                }
                println!(
                    "credentials:  {}",
                    if credentials.is_empty() { "-".into() } else { credentials.join(", ") }
                );
                if let Some(error) = &error {
                    eprintln!("error: {error}");
                }
            }
            if code == exit::OK {
                Ok(())
            } else {
                // The state is in the printed data (`readable`, `error`): one line with --json.
                Err(Fail::reported(code, "vault unreadable"))
            }
        }
        VaultCmd::Reset { config, json } => {
            let config = config.load()?;
            let dir = config.vault_dir();
            let nothing = |text: String| {
                say!("{text}; nothing to reset");
                if json {
                    print_json(&json!({
                        "action": "nothing to reset",
                        "dir": dir,
                        "movedTo": null,
                        "reenter": [],
                    }));
                }
                Ok(())
            };
            match config.open_existing_vault() {
                Ok(None) => return nothing(format!("no vault at {} yet", dir.display())),
                Ok(Some(_)) => {
                    return nothing(format!("the vault at {} can be read on this machine", dir.display()));
                }
                Err(e) if e.is_vault_decrypt() => {}
                Err(e) => return Err(e.into()),
            }
            let (_, aside) = config.reset_vault()?;
            say!("started an empty vault in {}", dir.display());
            if let Some(aside) = &aside {
                say!("the unreadable file was moved to {}", aside.display());
            }
            let mut reenter = Vec::new();
            if config.api_key_ref == ApiKeyStore::Vault.to_string() {
                reenter.push("mini-connector key rotate".to_owned());
            }
            for connection in config.connections.iter().filter(|c| c.kind != drivers::DbKind::Sqlite) {
                reenter.push(format!("mini-connector db edit {} --password", connection.name));
            }
            say!("re-enter the credentials it held:");
            for command in &reenter {
                let note =
                    if command.ends_with("key rotate") { "                 # the API key" } else { "" };
                say!("  {}{note}", escape(command));
            }
            if json {
                print_json(&json!({ "action": "reset", "dir": dir, "movedTo": aside, "reenter": reenter }));
            }
            Ok(())
        }
    }
}
