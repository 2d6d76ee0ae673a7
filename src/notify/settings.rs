//! The `notifications` section of the configuration file (all optional).
//!
//! ```json
//! "notifications": {
//!   "events": { "connectionLost": { "desktop": true, "email": true },
//!               "commandFailed": { "email": true } },
//!   "email": { "smtpHost": "smtp.example.com", "smtpPort": 587, "tls": "starttls",
//!              "username": "alerts@example.com", "from": "alerts@example.com",
//!              "to": ["ops@example.com"] }
//! }
//! ```
//!
//! The SMTP password is never here: `mini-connector notify set-password` puts it in the vault
//! (id `smtp:password`, `passwordRef` `vault://smtp`, the default), or `passwordRef` names an
//! `env:VARIABLE` / `file:PATH`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::control::NoticeKind;

/// The vault id of the SMTP password.
pub const SMTP_PASSWORD_ID: &str = "smtp:password";
/// The `passwordRef` that means "the vault" (the default).
pub const VAULT_REF: &str = "vault://smtp";

/// `notifications` (spec §8.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where each event goes; absent events use the spec's defaults ([`Route::default_for`]).
    #[serde(default)]
    pub events: EventRoutes,
    /// The SMTP server; without it no email is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// At most one notice per event kind per this many minutes (default 15); the ones held back
    /// are counted and summarised when the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_minutes: Option<u64>,
    /// Also notify when the link is back after a "connection lost" notice (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_restored: Option<bool>,
}

/// Per-event routing; `None` = the spec's default for that event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRoutes {
    /// Connection lost for more than 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_lost: Option<RouteConfig>,
    /// A workflow command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_failed: Option<RouteConfig>,
    /// Schema change detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<RouteConfig>,
    /// API key revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_revoked: Option<RouteConfig>,
    /// New version available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<RouteConfig>,
    /// Offline queue disk warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_disk_warning: Option<RouteConfig>,
}

/// One event's sinks as written in the file; absent flags take the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Show a desktop notification (where the session has a notification service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
    /// Send an email (when `notifications.email` is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<bool>,
}

/// Where one event goes, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Desktop notification.
    pub desktop: bool,
    /// Email.
    pub email: bool,
}

impl Route {
    /// Spec §8.3's defaults: a desktop notification for every event but "new version" (an
    /// in-app banner), and email only for "connection lost" ("if configured").
    pub fn default_for(kind: NoticeKind) -> Self {
        match kind {
            NoticeKind::ConnectionLost => Self { desktop: true, email: true },
            NoticeKind::NewVersion => Self { desktop: false, email: false },
            _ => Self { desktop: true, email: false },
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, required (port 587; the default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all: only to a relay on this machine (`localhost`, `127.0.0.1`, `::1`).
    NoneLocalhostOnly,
}

/// `notifications.email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub smtp_host: String,
    /// Default: 587 for `starttls`, 465 for `implicit`, 25 for `none-localhost-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `implicit` or `none-localhost-only`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP AUTH user; without it no AUTH is attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Where the password is: `vault://smtp` (default; `notify set-password` stores it),
    /// `env:VARIABLE` or `file:PATH`. Never the password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<String>,
    /// Extra CA certificate (PEM) to trust for the SMTP server (private CA); the public web
    /// roots are always trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<PathBuf>,
    /// The sender address.
    pub from: String,
    /// Recipients (at least one).
    pub to: Vec<String>,
}

impl EmailConfig {
    /// The port, defaulted by the TLS mode.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::NoneLocalhostOnly => 25,
        })
    }

    /// The password reference, defaulted.
    pub fn password_ref(&self) -> &str {
        self.password_ref.as_deref().unwrap_or(VAULT_REF)
    }
}

impl NotificationsConfig {
    /// Where `kind` goes.
    pub fn route(&self, kind: NoticeKind) -> Route {
        let e = &self.events;
        let configured = match kind {
            NoticeKind::ConnectionLost => e.connection_lost,
            NoticeKind::CommandFailed => e.command_failed,
            NoticeKind::SchemaChange => e.schema_change,
            NoticeKind::KeyRevoked => e.key_revoked,
            NoticeKind::NewVersion => e.new_version,
            NoticeKind::QueueDiskWarning => e.queue_disk_warning,
        }
        .unwrap_or_default();
        let default = Route::default_for(kind);
        Route {
            desktop: configured.desktop.unwrap_or(default.desktop),
            email: configured.email.unwrap_or(default.email) && self.email.is_some(),
        }
    }

    /// The rate-limit window.
    pub fn min_interval(&self) -> Duration {
        Duration::from_secs(60 * self.min_interval_minutes.unwrap_or(15))
    }

    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_interval_minutes.is_some_and(|m| m > 24 * 60) {
            return Err("minIntervalMinutes: at most 1440 (one day)".into());
        }
        let Some(email) = &self.email else { return Ok(()) };
        if email.smtp_host.trim().is_empty() || email.smtp_host.contains(char::is_whitespace) {
            return Err("email.smtpHost: must be a host name".into());
        }
        if email.smtp_port == Some(0) {
            return Err("email.smtpPort: must be 1-65535".into());
        }
        if email.tls == SmtpTls::NoneLocalhostOnly && !is_loopback_host(&email.smtp_host) {
            return Err(
                "email.tls: `none-localhost-only` is allowed only for a relay on this machine (localhost, 127.0.0.1, ::1); use `starttls` or `implicit`".into(),
            );
        }
        let reference = email.password_ref();
        if reference != VAULT_REF && drivers::Password::check_reference(reference).is_err() {
            return Err(format!(
                "email.passwordRef: must be {VAULT_REF} (the vault, set with `mini-connector notify set-password`), env:VARIABLE or file:PATH"
            ));
        }
        if email.password_ref.is_some() && email.username.is_none() {
            return Err("email.passwordRef: set email.username too (AUTH needs both)".into());
        }
        check_address("email.from", &email.from)?;
        if email.to.is_empty() {
            return Err("email.to: list at least one recipient".into());
        }
        for to in &email.to {
            check_address("email.to", to)?;
        }
        Ok(())
    }
}

fn check_address(field: &str, address: &str) -> Result<(), String> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("{field}: `{address}` is not an email address ({e})"))
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> NotificationsConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn routes_default_to_the_spec_and_email_needs_a_server() {
        let none = NotificationsConfig::default();
        assert_eq!(none.route(NoticeKind::ConnectionLost), Route { desktop: true, email: false });
        assert_eq!(none.route(NoticeKind::NewVersion), Route { desktop: false, email: false });
        let config = parse(serde_json::json!({
            "events": {"commandFailed": {"email": true, "desktop": false}},
            "email": {"smtpHost": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}
        }));
        config.validate().unwrap();
        assert_eq!(config.route(NoticeKind::ConnectionLost), Route { desktop: true, email: true });
        assert_eq!(config.route(NoticeKind::CommandFailed), Route { desktop: false, email: true });
        assert_eq!(config.route(NoticeKind::SchemaChange), Route { desktop: true, email: false });
        assert_eq!(config.email.as_ref().unwrap().port(), 587);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let base = || serde_json::json!({"email": {"smtpHost": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"]}});
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"tls": "none-localhost-only"}), "email.tls"),
            (serde_json::json!({"passwordRef": "hunter2"}), "email.passwordRef"),
            (serde_json::json!({"to": []}), "email.to"),
            (serde_json::json!({"from": "not an address"}), "email.from"),
            (serde_json::json!({"smtpPort": 0}), "email.smtpPort"),
        ];
        for (patch, field) in cases {
            let mut json = base();
            for (k, v) in patch.as_object().unwrap() {
                json["email"][k] = v.clone();
            }
            let error = parse(json).validate().unwrap_err();
            assert!(error.starts_with(field), "{error}");
            assert!(!error.contains("hunter2"), "the reference value is not echoed: {error}");
        }
        let mut local = base();
        local["email"]["smtpHost"] = "127.0.0.1".into();
        local["email"]["tls"] = "none-localhost-only".into();
        parse(local).validate().unwrap();
        assert!(
            serde_json::from_value::<NotificationsConfig>(
                serde_json::json!({"email": {"smtpHost": "h", "from": "a@b.c", "to": [], "password": "x"}})
            )
            .is_err(),
            "a password field is refused"
        );
    }
}
