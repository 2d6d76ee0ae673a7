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
    },
    /// Store the SMTP password (`notifications.email.username`'s) in the vault.
    SetPassword {
        /// Configuration file (default: the usual one, as for `start`).
        #[arg(long, env = "MINI_CONNECTOR_CONFIG")]
        config: Option<PathBuf>,
        /// Read the password from the first line of stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
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
        NotifyCmd::Test { config, event } => {
            let config = match AgentConfig::load(&config.unwrap_or_else(|| default_config.clone())) {
                Ok(c) => c,
                Err(e) => return fail(2, &e.to_string()),
            };
            let mut dispatcher = match Dispatcher::new(&config) {
                Ok(d) => d,
                Err(e) => return fail(2, &e.to_string()),
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
            for (sink, result) in [("desktop", &delivery.desktop), ("email", &delivery.email)] {
                match result {
                    Some(Ok(())) => println!("{sink}: sent"),
                    Some(Err(e)) => {
                        failed = true;
                        println!("{sink}: FAILED: {e}");
                    }
                    None if sink == "desktop" => {
                        println!("desktop: skipped (no notification service in this session)")
                    }
                    None => println!("email: skipped (no notifications.email in the configuration)"),
                }
            }
            ExitCode::from(if failed { 1 } else { 0 })
        }
        NotifyCmd::SetPassword { config, password_stdin } => {
            let config = match AgentConfig::load(&config.unwrap_or_else(|| default_config.clone())) {
                Ok(c) => c,
                Err(e) => return fail(2, &e.to_string()),
            };
            let password = if password_stdin {
                let mut text = Zeroizing::new(String::new());
                if let Err(e) = std::io::stdin().take(64 * 1024).read_to_string(&mut text) {
                    return fail(2, &format!("cannot read the SMTP password from stdin: {e}"));
                }
                Zeroizing::new(text.lines().next().unwrap_or_default().to_owned())
            } else {
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
                    println!("SMTP password stored in the vault as {}", super::settings::SMTP_PASSWORD_ID);
                    ExitCode::from(0)
                }
                Err(e) => fail(1, &e.to_string()),
            }
        }
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
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
