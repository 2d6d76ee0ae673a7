//! `mini-connector notify test|set-password`.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::{Dispatcher, kind_label};
use crate::config::AgentConfig;
use crate::protocol::control::{Notice, NoticeKind};

/// `notify` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NotifyCmd {
    /// Send a test notice through every configured sink (desktop, email) and say what happened.
    Test {
        /// Configuration file (default: the usual one, as for `start`).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG")]
        config: Option<PathBuf>,
        /// Which event the test notice imitates: connection-lost, command-failed, schema-change,
        /// key-revoked, new-version, queue-disk-warning.
        #[arg(long, value_parser = parse_kind, default_value = "connection-lost")]
        event: NoticeKind,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"event", "sinks": [{"sink",
        /// "result": "sent"|"failed"|"skipped", "error"}]}}; exit 1 when a sink failed.
        #[arg(long)]
        json: bool,
    },
    /// Store the SMTP password (`notifications.email.username`'s) in the vault.
    SetPassword {
        /// Configuration file (default: the usual one, as for `start`).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG")]
        config: Option<PathBuf>,
        /// Read the password from the first line of stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"action": "stored", "vaultId"}}.
        /// Needs --password-stdin (no prompt).
        #[arg(long)]
        json: bool,
    },
}

/// `connection-lost`, `connectionLost` or `connection_lost`.
fn parse_kind(text: &str) -> Result<NoticeKind, String> {
    let snake: String = text
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['_', c.to_ascii_lowercase()]
            } else {
                vec![if c == '-' { '_' } else { c }]
            }
        })
        .collect();
    serde_json::from_value(serde_json::Value::String(snake)).map_err(|_| {
        "one of connection-lost, command-failed, schema-change, key-revoked, new-version, queue-disk-warning".into()
    })
}

/// Runs a `notify` subcommand: exit 0 when done, 1 when a sink failed, 2 for a bad
/// configuration or usage.
/// `default_config` is used when `--config` is absent.
pub fn run(cmd: NotifyCmd, default_config: PathBuf) -> ExitCode {
    match cmd {
        NotifyCmd::Test { config, event, json } => {
            let out = Out { json };
            let config = match load(&config.unwrap_or_else(|| default_config.clone())) {
                Ok(c) => c,
                Err((code, message)) => return out.fail(2, code, &message),
            };
            let mut dispatcher = match Dispatcher::new(&config) {
                Ok(d) => d,
                Err(e) => return out.fail(2, "CONFIG_INVALID", &e.to_string()),
            };
            let notice = Notice {
                kind: event,
                title: format!("Test: {}", kind_label(event)),
                body: format!(
                    "This is a test notification from Mini Connector `{}` (`mini-connector notify test`). Nothing is wrong.",
                    config.connector_name
                ),
                at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            let delivery = dispatcher.deliver(&notice, true);
            let mut failed = false;
            let mut sinks = Vec::new();
            for (sink, result) in [("desktop", &delivery.desktop), ("email", &delivery.email)] {
                let (outcome, error) = match result {
                    Some(Ok(())) => ("sent", None),
                    Some(Err(e)) => {
                        failed = true;
                        ("failed", Some(e.to_string()))
                    }
                    None => ("skipped", None),
                };
                sinks.push(serde_json::json!({ "sink": sink, "result": outcome, "error": error }));
                if json {
                    continue;
                }
                match (outcome, &error) {
                    ("sent", _) => println!("{sink}: sent"),
                    (_, Some(e)) => println!("{sink}: FAILED: {}", crate::protocol::term::escape(e)),
                    _ if sink == "desktop" => {
                        println!("desktop: skipped (no notification service in this session)")
                    }
                    _ => println!("email: skipped (no notifications.email in the configuration)"),
                }
            }
            if json {
                // A failed sink is the test's verdict (data, exit 1), as for `doctor`.
                out.ok(&serde_json::json!({ "event": event, "sinks": sinks }));
            }
            ExitCode::from(if failed { 1 } else { 0 })
        }
        NotifyCmd::SetPassword { config, password_stdin, json } => {
            let out = Out { json };
            let fail = |exit: u8, message: &str| out.fail(exit, "USAGE", message);
            let config = match load(&config.unwrap_or_else(|| default_config.clone())) {
                Ok(c) => c,
                Err((code, message)) => return out.fail(2, code, &message),
            };
            let password = if password_stdin {
                let mut text = Zeroizing::new(String::new());
                if let Err(e) = std::io::stdin().take(64 * 1024).read_to_string(&mut text) {
                    return fail(2, &format!("cannot read the SMTP password from stdin: {e}"));
                }
                Zeroizing::new(text.lines().next().unwrap_or_default().to_owned())
            } else {
                if json {
                    return fail(
                        2,
                        "--json does not prompt for the SMTP password; pipe it in with --password-stdin",
                    );
                }
                if !std::io::stdin().is_terminal() {
                    return fail(
                        2,
                        "no terminal to ask for the SMTP password; pipe it in with --password-stdin",
                    );
                }
                match crate::prompt::password("SMTP password: ") {
                    Ok(p) => p,
                    Err(e) => return fail(2, &format!("cannot read the SMTP password: {e}")),
                }
            };
            if password.is_empty() {
                return fail(2, "empty SMTP password");
            }
            match super::sinks::store_password(&config, &password) {
                Ok(()) => {
                    if json {
                        out.ok(&serde_json::json!({
                            "action": "stored",
                            "vaultId": super::settings::SMTP_PASSWORD_ID,
                        }));
                    } else {
                        println!(
                            "SMTP password stored in the vault as {}",
                            super::settings::SMTP_PASSWORD_ID
                        );
                    }
                    ExitCode::from(0)
                }
                Err(e) => out.fail(1, "IO", &e.to_string()),
            }
        }
    }
}

/// Loads the configuration; a failure as (envelope code, message).
fn load(path: &std::path::Path) -> Result<AgentConfig, (&'static str, String)> {
    use crate::config::ConfigError;
    if !path.exists() {
        return Err(("NOT_CONFIGURED", format!("no configuration at {}", path.display())));
    }
    AgentConfig::load(path).map_err(|e| {
        let code = match &e {
            e if e.is_vault_decrypt() => "VAULT_DECRYPT_ERROR",
            ConfigError::Vault { .. } | ConfigError::Write { .. } | ConfigError::Read { .. } => "IO",
            _ => "CONFIG_INVALID",
        };
        (code, e.to_string())
    })
}

/// Text or the `--json` envelope of docs/CLI.md (one line on stdout).
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn ok(self, data: &serde_json::Value) {
        println!("{}", serde_json::json!({ "ok": true, "data": data }));
    }

    /// A failure: `error: …` on stderr, or the failure envelope; exit `exit`.
    fn fail(self, exit: u8, code: &str, message: &str) -> ExitCode {
        if self.json {
            println!("{}", serde_json::json!({ "ok": false, "error": { "code": code, "message": message } }));
        } else {
            eprintln!("error: {}", crate::protocol::term::escape(message));
        }
        ExitCode::from(exit)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_names_in_any_spelling() {
        use crate::protocol::control::NoticeKind;
        assert_eq!(super::parse_kind("connection-lost"), Ok(NoticeKind::ConnectionLost));
        assert_eq!(super::parse_kind("queueDiskWarning"), Ok(NoticeKind::QueueDiskWarning));
        assert_eq!(super::parse_kind("key_revoked"), Ok(NoticeKind::KeyRevoked));
        assert!(super::parse_kind("nope").is_err());
    }
}
