//! What the one-shot commands print: the `--json` envelope, error codes, and text made safe
//! for a terminal (docs/CLI.md).
//!
//! With `--json`, stdout carries exactly one line:
//!
//! - success: `{"ok": true, "data": <the command's data object or array>}`
//! - failure: `{"ok": false, "error": {"code": "<CODE>", "message": "<text>"}}`
//!
//! and the exit code is the documented one either way. The codes are the spec's (Appendix C:
//! `UNKNOWN_CONNECTION`, `DATABASE_UNAVAILABLE`, `VAULT_DECRYPT_ERROR`...) where one applies,
//! else the CLI's own, listed in docs/CLI.md (`USAGE`, `CONFIG_INVALID`, `NOT_CONFIGURED`,
//! `INVALID_INPUT`, `NOT_RUNNING`, `IO`, `FAILED`).
//!
//! Whether `--json` was asked for is read once from the command line ([`init`]), before clap
//! parses it, so that a usage error of a `--json` call is an envelope too.
//!
//! Text output goes through [`protocol::term`]: [`term::escape`] for anything that came from
//! a database, the configuration or another program, [`term::Table`] for tables.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

pub use protocol::term::{self, Table, escape};

use super::Fail;
use crate::exit;

static JSON: AtomicBool = AtomicBool::new(false);

/// Records whether `--json` is on the command line (before a `--`).
pub fn init(args: impl IntoIterator<Item = std::ffi::OsString>) {
    let json = args.into_iter().take_while(|a| a != "--").any(|a| a == "--json");
    JSON.store(json, Ordering::Relaxed);
}

/// Whether this run prints JSON.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A failure that carries its error code (the `code` of the JSON envelope).
#[derive(Debug)]
pub struct Coded {
    /// The spec's or the CLI's code.
    pub code: String,
    /// In words.
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// A failure whose details are already in the printed data (`schema discover` with some
/// connections failed, `db test`...): with `--json` nothing more is printed (the data line was
/// the envelope); as text, `error: <summary>`.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

impl Fail {
    /// A failure with exit code `exit` and envelope code `code`.
    pub fn coded(exit: u8, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: exit, error: Coded { code: code.into(), message: message.into() }.into() }
    }

    /// A failure already told in the printed data: exit `exit`, `summary` on stderr as text.
    pub fn reported(exit: u8, summary: impl Into<String>) -> Self {
        Self { code: exit, error: Reported(summary.into()).into() }
    }

    /// The envelope's error code: the one the failure carries, else one derived from the exit
    /// code (2 `INVALID_INPUT`, 3 `NOT_RUNNING`, 4 `VAULT_DECRYPT_ERROR`, else `FAILED`).
    pub fn error_code(&self) -> String {
        if let Some(coded) = self.error.downcast_ref::<Coded>() {
            return coded.code.clone();
        }
        if let Some(e) = self.error.downcast_ref::<mini_connector::config::ConfigError>() {
            return config_code(e).to_owned();
        }
        match self.code {
            exit::CONFIG => "INVALID_INPUT",
            exit::NOT_RUNNING => "NOT_RUNNING",
            exit::VAULT => "VAULT_DECRYPT_ERROR",
            _ => "FAILED",
        }
        .to_owned()
    }
}

/// The code of a configuration error: `VAULT_DECRYPT_ERROR`, `IO` (a file or the vault cannot
/// be read or written) or `CONFIG_INVALID`.
pub fn config_code(error: &mini_connector::config::ConfigError) -> &'static str {
    use mini_connector::config::ConfigError;
    match error {
        e if e.is_vault_decrypt() => "VAULT_DECRYPT_ERROR",
        ConfigError::Vault { .. } | ConfigError::Write { .. } | ConfigError::Read { .. } => "IO",
        _ => "CONFIG_INVALID",
    }
}

#[derive(Serialize)]
struct Success<'a, T: Serialize + ?Sized> {
    ok: bool,
    data: &'a T,
}

#[derive(Serialize)]
struct Failure<'a> {
    ok: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// The success envelope of `data`, one line.
pub fn ok_line(data: &(impl Serialize + ?Sized)) -> String {
    serde_json::to_string(&Success { ok: true, data }).unwrap_or_default()
}

/// The failure envelope, one line.
pub fn error_line(code: &str, message: &str) -> String {
    serde_json::to_string(&Failure { ok: false, error: ErrorBody { code, message } }).unwrap_or_default()
}

/// Prints `{"ok": true, "data": data}` on one line of stdout.
pub fn print_ok(data: &(impl Serialize + ?Sized)) {
    println!("{}", ok_line(data));
}

/// Prints `{"ok": false, "error": {"code", "message"}}` on one line of stdout.
pub fn print_error(code: &str, message: &str) {
    println!("{}", error_line(code, message));
}

/// Reports a failed command: the envelope on stdout with `--json`, else `error: …` on stderr
/// (escaped: database and OS texts may carry control characters). Gives the exit code.
pub fn report(fail: &Fail) -> u8 {
    let message = format!("{:#}", fail.error);
    if json() {
        if fail.error.downcast_ref::<Reported>().is_none() {
            print_error(&fail.error_code(), &message);
        }
    } else {
        eprintln!("error: {}", escape(&message));
    }
    fail.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_one_line() {
        let data = serde_json::json!({"a": [1, 2], "b": "x\ny"});
        assert_eq!(ok_line(&data), r#"{"ok":true,"data":{"a":[1,2],"b":"x\ny"}}"#);
        assert_eq!(
            error_line("UNKNOWN_CONNECTION", "no `x`\n"),
            r#"{"ok":false,"error":{"code":"UNKNOWN_CONNECTION","message":"no `x`\n"}}"#
        );
    }

    #[test]
    fn codes_come_from_the_failure() {
        assert_eq!(Fail::coded(exit::CONFIG, "USAGE", "bad").error_code(), "USAGE");
        assert_eq!(Fail::usage("bad").error_code(), "INVALID_INPUT");
        assert_eq!(Fail::runtime(anyhow::anyhow!("x")).error_code(), "FAILED");
    }
}
