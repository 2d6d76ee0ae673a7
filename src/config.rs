//! Agent configuration (spec Appendix B): a plain JSON file with no secrets in it.
//!
//! Database passwords live in the vault and the API key behind `apiKeyRef`; the file itself can
//! be read by anyone who may read the machine's configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::protocol::{ApiKey, ApiKeyFormatError};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON or a field has the wrong type.
    #[error("invalid config {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// serde's message, naming the field and line.
        reason: String,
    },
    /// A field has a value the agent cannot use.
    #[error("invalid config field `{field}`: {reason}")]
    Field {
        /// The JSON field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key could not be loaded from `apiKeyRef`.
    #[error("cannot load API key from {reference}: {reason}")]
    ApiKey {
        /// The reference (never the key).
        reference: String,
        /// What went wrong.
        reason: String,
    },
    /// The API key is malformed (checked before dialling).
    #[error(transparent)]
    KeyFormat(#[from] ApiKeyFormatError),
    /// The credential vault failed: it cannot be decrypted on this machine
    /// (`VAULT_DECRYPT_ERROR`), is damaged, or cannot be read or written.
    #[error("{what}: {source}{hint}", hint = crate::secrets::reentry_hint(.source))]
    Vault {
        /// What was being done (`loading the API key from vault://apikey`), never a secret.
        what: String,
        /// The vault's error.
        source: vault::VaultError,
    },
    /// The configuration file could not be written.
    #[error("cannot write config {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// Whether this is `VAULT_DECRYPT_ERROR`: the stored credentials cannot be read on this
    /// machine any more and must be entered again (after `mini-connector vault reset`).
    pub fn is_vault_decrypt(&self) -> bool {
        matches!(self, Self::Vault { source, .. } if source.needs_reentry())
    }
}

/// The agent's configuration file. Unknown fields are refused (a typo such as
/// `heartbeatIntervalMS` would otherwise be ignored silently); see [`AgentConfig::load`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Friendly name of this connector.
    pub connector_name: String,
    /// Where the API key is, never the key itself: `vault://apikey` (the machine-bound vault),
    /// `keychain://<service>/<user>` (Windows Credential Manager / macOS Keychain),
    /// `file:<path>` (a 0600 file) or `env:<VARIABLE>`.
    pub api_key_ref: String,
    /// `wss://host[:port]/path` of the cloud gateway.
    pub cloud_url: String,
    /// Other nodes of the same gateway (a cluster), `wss://host[:port]/path` each, at most
    /// [`MAX_CLOUD_URL_FALLBACKS`]: the link dials them in turn when `cloudUrl` cannot be
    /// reached or its session drops ([`crate::link`]). `caCertPath`, `pinnedSpki` and the proxy
    /// apply to every one, and their hosts may receive result chunks like `cloudUrl`'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud_url_fallbacks: Vec<String>,
    /// Extra CA certificate (PEM) to trust for the gateway, e.g. a private CA or SSL inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<PathBuf>,
    /// Hosts besides `cloudUrl`'s that the cloud may name as the chunk upload URL in
    /// `connected`: `host` (port 443) or `host:port`. Uploads are `https` only, always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upload_hosts: Vec<String>,
    /// HTTP CONNECT proxy, `http://host:port` (no credentials: see `proxyUser`). Without it the
    /// environment's `HTTPS_PROXY`/`ALL_PROXY` is used; `NO_PROXY` applies to both
    /// ([`crate::proxy`]).
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// The proxy's Basic-auth user; its password is in the vault (`proxy:password`), never here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
    /// SPKI SHA-256 pins, `sha256/BASE64`: when set, some certificate of the cloud's chain (leaf,
    /// intermediate or CA) must have one of these public keys, on top of normal verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_spki: Vec<String>,
    /// Heartbeat period.
    #[serde(default = "defaults::heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// WebSocket ping after this long without a write on the link, so middleboxes that cut
    /// idle connections (commonly after 30–60 s) see traffic.
    #[serde(default = "defaults::keepalive_ms")]
    pub keepalive_interval_ms: u64,
    /// Default query timeout when a command gives none.
    #[serde(default = "defaults::command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// Offline queue size limit (used by the queue). Spelled `offlineQueueMaxMB` (spec
    /// Appendix B); camelCase `offlineQueueMaxMb` is read too.
    #[serde(
        default = "defaults::offline_queue_mb",
        rename = "offlineQueueMaxMB",
        alias = "offlineQueueMaxMb"
    )]
    pub offline_queue_max_mb: u64,
    /// Longest query text a command may carry, in bytes (256 KiB default, at most 1 MiB);
    /// longer texts are refused unparsed with `WRITE_OPERATION_REJECTED`.
    #[serde(default = "defaults::max_sql_bytes")]
    pub max_sql_bytes: u64,
    /// Upper bound of a command's `payload.timeout` (10 min default): a longer timeout is
    /// capped to it.
    #[serde(default = "defaults::max_command_timeout_ms")]
    pub max_command_timeout_ms: u64,
    /// Largest result one command may produce, in MiB of NDJSON before compression (1024
    /// default); a larger result stops the query with `PAYLOAD_TOO_LARGE`, not retryable.
    #[serde(default = "defaults::max_result_mb", rename = "maxResultMB", alias = "maxResultMb")]
    pub max_result_mb: u64,
    /// `error`, `warn`, `info`, `debug` or `trace` ([`LOG_LEVELS`]; `off` is read too).
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// Whether to look for updates.
    #[serde(default = "defaults::yes")]
    pub auto_update: bool,
    /// The signed update manifest (`https://…/manifest.json`, docs/UPDATES.md); when absent,
    /// `https://<cloudUrl's host[:port]>/updates/manifest.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_url: Option<String>,
    /// Directory for the rotating log files; when absent, a directory of this configuration's
    /// own under the platform's log directory ([`Self::log_dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// Number of query worker threads: how many commands run at once (default 10, the
    /// largest pool of spec §5.3, so the pools grow from `poolMin` to `poolMax` with the queue).
    #[serde(default = "defaults::workers")]
    pub workers: u32,
    /// Commands that may wait in the durable queue for a free worker (default 1000); beyond it
    /// a command is refused with `AGENT_BUSY` (retryable).
    #[serde(default = "defaults::max_queued_commands")]
    pub max_queued_commands: u32,
    /// The durable command queue and audit log (SQLite). When absent: `$STATE_DIRECTORY/queue.db`
    /// under systemd, else `queue.db` next to the config file. Relative to the config file's
    /// directory. See [`Self::queue_path`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_path: Option<PathBuf>,
    /// Keep each command's full query text in the audit log (default false: its SHA-256 only,
    /// since a query can carry data in literals).
    #[serde(default)]
    pub audit_query_text: bool,
    /// Longest wait between reconnection attempts.
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Local control socket for `status`, `pause`, `stop`...; `agent.sock` next to the config
    /// file when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Directory of the credential vault (database passwords; the API key on Linux). When
    /// absent: `$STATE_DIRECTORY/vault` under systemd, else `vault/` next to the config file.
    /// A relative path is relative to the config file's directory. See [`Self::vault_dir`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_dir: Option<PathBuf>,
    /// Directory of the vault's install secret, key material kept outside `vaultDir` so a copy
    /// of the vault directory does not decrypt. When absent: `vault-keys/` beside the vault
    /// directory if `vaultDir` is set or under systemd, else the user's state directory
    /// (`$XDG_STATE_HOME/mini-connector/vault-keys`, `%LOCALAPPDATA%\MiniConnector\vault-keys`;
    /// the login Keychain on macOS). `service install` pins it. See [`Self::vault_key_dir`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_key_dir: Option<PathBuf>,
    /// The local PIN that guards credential views and connection edits in the desktop app
    /// (spec §7.3), as `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64); never the PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pin_hash: Option<String>,
    /// The file this configuration was loaded from (absolute; not part of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The vault handle shared while held ([`Self::hold_vault`]; not part of the file).
    #[serde(skip)]
    pub(crate) vault_share: crate::secrets::VaultShare,
    /// Local databases.
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    /// Per connection name: private tables/columns and the approved tables (spec §4.3).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub schema_policy: std::collections::BTreeMap<String, crate::policy::SchemaPolicy>,
    /// Desktop and email notifications (spec §8.3); see [`crate::notify::settings`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notify::NotificationsConfig>,
}

/// One local database.
///
/// Which fields apply depends on `type` (checked by `drivers::ConnectionSpec::validate`):
/// `sqlite` needs `path`; `postgres` and `mysql` need `host` (or `connectionString`) and
/// `user`; `odbc` needs `dsn` or `connectionString` and usually a `dialect`; `mongodb` needs
/// `host` or `connectionString`; `tally` takes `host` (default localhost), `port` (default 9000)
/// and `company`, and no password. Passwords never
/// appear in this file: `passwordRef` points at them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Name commands use to address it.
    pub name: String,
    /// Database type: `sqlite`, `postgres`, `mysql` (MariaDB too), `odbc`, `mongodb` or `tally`.
    #[serde(rename = "type")]
    pub kind: drivers::DbKind,
    /// SQLite: path of the database file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL / MySQL: server host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// PostgreSQL / MySQL: TCP port (default 5432 / 3306).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// PostgreSQL / MySQL: database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Database user (a SELECT-only user is strongly advised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Where the password is: `env:<VARIABLE>` or `file:<path>` (interim until the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<String>,
    /// A driver connection string instead of host/port/database (PostgreSQL key=value or URL,
    /// `mysql://` URL, ODBC `Driver=...;...`); it must not contain a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// ODBC: data source name from odbc.ini.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// PostgreSQL / MySQL TLS: `disable`, `prefer` (default), `require`, `verify-ca` or
    /// `verify-full` (see `drivers::SslMode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<drivers::SslMode>,
    /// PEM file of the CA certificate(s) the server's certificate must chain to, for
    /// `verify-ca` (required) and `verify-full` (default: the public Web PKI roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<PathBuf>,
    /// Let the password travel in clear text when the server asks for it on a connection
    /// without TLS (PostgreSQL `password`, MySQL `mysql_clear_password`); refused by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_cleartext_password: bool,
    /// ODBC: `sqlserver`, `oracle`, `hana`, `postgres`, `mysql`, `sqlite` or `generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<drivers::OdbcDialect>,
    /// Tally: the company the XML gateway exports from (default: the one loaded in TallyPrime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Pool: most connections.
    #[serde(default = "defaults::pool_max")]
    pub pool_max: u32,
    /// Pool: fewest idle connections kept.
    #[serde(default = "defaults::pool_min")]
    pub pool_min: u32,
    /// Pool: how long to wait for a free connection.
    #[serde(default = "defaults::acquire_ms")]
    pub acquire_timeout_ms: u64,
}

/// The values `logLevel` takes (any case); `off` is accepted as well (no log at all).
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Most entries of `cloudUrlFallbacks`.
pub const MAX_CLOUD_URL_FALLBACKS: usize = 16;

/// Shortest `keepaliveIntervalMs`: more often would only add traffic.
pub const KEEPALIVE_MIN_MS: u64 = 100;
/// Longest `keepaliveIntervalMs` (10 min): idle cuts come much sooner.
pub const KEEPALIVE_MAX_MS: u64 = 600_000;

mod defaults {
    pub fn heartbeat_ms() -> u64 {
        30_000
    }
    pub fn keepalive_ms() -> u64 {
        20_000
    }
    pub fn command_timeout_ms() -> u64 {
        30_000
    }
    pub fn offline_queue_mb() -> u64 {
        500
    }
    pub fn max_sql_bytes() -> u64 {
        gate::DEFAULT_MAX_SQL_BYTES as u64
    }
    pub fn max_command_timeout_ms() -> u64 {
        600_000
    }
    pub fn max_result_mb() -> u64 {
        1024
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn workers() -> u32 {
        10
    }
    pub fn max_queued_commands() -> u32 {
        1000
    }
    pub fn reconnect_max_ms() -> u64 {
        60_000
    }
    pub fn pool_max() -> u32 {
        10
    }
    pub fn pool_min() -> u32 {
        2
    }
    pub fn acquire_ms() -> u64 {
        10_000
    }
}

/// What one command may ask of the agent (see [`AgentConfig::command_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    /// Timeout of a command that gives none (`commandTimeoutMs`).
    pub default_timeout: std::time::Duration,
    /// Cap on `payload.timeout` (`maxCommandTimeoutMs`).
    pub max_timeout: std::time::Duration,
    /// What the gate may spend on one text (`maxSqlBytes`).
    pub gate: gate::Limits,
    /// Largest result, in NDJSON bytes before compression (`maxResultMB`).
    pub max_result_bytes: u64,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits {
            default_timeout: std::time::Duration::from_millis(defaults::command_timeout_ms()),
            max_timeout: std::time::Duration::from_millis(defaults::max_command_timeout_ms()),
            gate: gate::Limits::default(),
            max_result_bytes: defaults::max_result_mb() << 20,
        }
    }
}

impl AgentConfig {
    /// The per-command limits this configuration sets.
    pub fn command_limits(&self) -> CommandLimits {
        let mut gate = gate::Limits::default();
        gate.max_sql_bytes = usize::try_from(self.max_sql_bytes).unwrap_or(gate::MAX_SQL_BYTES);
        CommandLimits {
            default_timeout: std::time::Duration::from_millis(self.command_timeout_ms),
            max_timeout: std::time::Duration::from_millis(self.max_command_timeout_ms),
            gate,
            max_result_bytes: self.max_result_mb.saturating_mul(1 << 20),
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config = Self::parse(&text)
            .map_err(|reason| ConfigError::Parse { path: path.display().to_string(), reason })?;
        config.validate()?;
        config.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        Ok(config)
    }

    /// Reads the JSON text of a configuration file (not validated yet): a secret where it does
    /// not belong and an unknown field are refused by name, with the nearest known field.
    fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(object) = value.as_object() {
            if object.contains_key("apiKey") {
                return Err("field `apiKey`: the API key does not belong in the configuration file; \
                     store it with `mini-connector key rotate` (apiKeyRef points at it)"
                    .to_owned());
            }
            let connections = object.get("connections").and_then(serde_json::Value::as_array);
            for (i, connection) in connections.into_iter().flatten().enumerate() {
                let Some(connection) = connection.as_object() else { continue };
                if let Some(key) = ["password", "pwd", "passwd"].iter().find(|k| connection.contains_key(**k))
                {
                    let name = connection.get("name").and_then(serde_json::Value::as_str).unwrap_or("NAME");
                    return Err(format!(
                        "field `connections[{i}].{key}`: passwords belong in the vault, not in the \
                         configuration file; remove it and run `mini-connector db edit --name {name} --password`"
                    ));
                }
            }
        }
        serde_json::from_str(text).map_err(|e| explain_unknown_field(&e.to_string()))
    }

    /// Validates and writes the configuration to `path` atomically (temporary file, fsync,
    /// rename, fsync of the directory), owner-only (0600) on Unix. Creates the directory
    /// (0700) if needed. The file never holds a secret; 0600 keeps connection details private.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), reason: e.to_string() })?;
        text.push('\n');
        crate::secrets::write_atomic(path, text.as_bytes())
            .map_err(|source| ConfigError::Write { path: path.display().to_string(), source })
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field, reason: &str| Err(ConfigError::Field { field, reason: reason.to_owned() });
        if self.connector_name.trim().is_empty() {
            return field("connectorName", "must not be empty");
        }
        if let Err(reason) = check_gateway_url(&self.cloud_url) {
            return field("cloudUrl", reason);
        }
        if self.cloud_url_fallbacks.len() > MAX_CLOUD_URL_FALLBACKS {
            return field(
                "cloudUrlFallbacks",
                &format!(
                    "has {} entries; at most {MAX_CLOUD_URL_FALLBACKS} gateway URLs besides cloudUrl",
                    self.cloud_url_fallbacks.len()
                ),
            );
        }
        let mut seen = vec![gateway_identity(&self.cloud_url)];
        for (i, url) in self.cloud_url_fallbacks.iter().enumerate() {
            // Only the origin in the message: a path or query may carry a token.
            let entry = match crate::uploader::url_origin(url) {
                origin if origin.starts_with('(') => format!("entry {}", i + 1),
                origin => format!("entry {} ({origin})", i + 1),
            };
            if let Err(reason) = check_gateway_url(url) {
                return field("cloudUrlFallbacks", &format!("{entry} {reason}"));
            }
            let identity = gateway_identity(url);
            if seen.contains(&identity) {
                let what = if seen[0] == identity { "cloudUrl" } else { "an earlier entry" };
                return field("cloudUrlFallbacks", &format!("{entry} repeats {what}"));
            }
            seen.push(identity);
        }
        if let Err(reason) = self.upload_policy() {
            return field("uploadHosts", &reason);
        }
        if let Err(reason) = crate::secrets::check_api_key_ref(&self.api_key_ref) {
            return field("apiKeyRef", &reason);
        }
        if !(1_000..=3_600_000).contains(&self.heartbeat_interval_ms) {
            return field("heartbeatIntervalMs", "must be between 1000 and 3600000");
        }
        if !(KEEPALIVE_MIN_MS..=KEEPALIVE_MAX_MS).contains(&self.keepalive_interval_ms) {
            return field(
                "keepaliveIntervalMs",
                &format!("must be between {KEEPALIVE_MIN_MS} and {KEEPALIVE_MAX_MS}"),
            );
        }
        if self.command_timeout_ms == 0 {
            return field("commandTimeoutMs", "must be positive");
        }
        if !(1_000..=86_400_000).contains(&self.max_command_timeout_ms) {
            return field("maxCommandTimeoutMs", "must be between 1000 and 86400000");
        }
        if self.command_timeout_ms > self.max_command_timeout_ms {
            return field("commandTimeoutMs", "must not exceed maxCommandTimeoutMs");
        }
        if !(1..=gate::MAX_SQL_BYTES as u64).contains(&self.max_sql_bytes) {
            return field("maxSqlBytes", &format!("must be between 1 and {}", gate::MAX_SQL_BYTES));
        }
        if !(1..=1 << 20).contains(&self.max_result_mb) {
            return field("maxResultMB", "must be between 1 and 1048576");
        }
        if !(1..=64).contains(&self.workers) {
            return field("workers", "must be between 1 and 64");
        }
        if !(1..=100_000).contains(&self.max_queued_commands) {
            return field("maxQueuedCommands", "must be between 1 and 100000");
        }
        if !(1..=1 << 20).contains(&self.offline_queue_max_mb) {
            return field("offlineQueueMaxMB", "must be between 1 and 1048576");
        }
        if !self.log_level.eq_ignore_ascii_case("off")
            && !LOG_LEVELS.iter().any(|l| self.log_level.eq_ignore_ascii_case(l))
        {
            return field(
                "logLevel",
                &format!("must be one of {}, not `{}`", LOG_LEVELS.join(", "), self.log_level),
            );
        }
        if let Some(proxy) = &self.proxy_url
            && !proxy.starts_with("http://")
        {
            return field("proxyUrl", "must be an http:// CONNECT proxy URL");
        }
        if let Some(url) = &self.update_url
            && (!url.starts_with("https://")
                || url.parse::<ureq::http::Uri>().map(|u| u.host().is_none()).unwrap_or(true))
        {
            return field("updateUrl", "must be an https:// URL with a host");
        }
        if let Some(user) = &self.proxy_user
            && (user.is_empty() || user.contains(':') || user.chars().any(char::is_control))
        {
            return field("proxyUser", "must be a non-empty user name without `:`");
        }
        for pin in &self.pinned_spki {
            if let Err(e) = crate::tls::parse_pin(pin) {
                return field("pinnedSpki", &e.to_string());
            }
        }
        let mut names = std::collections::HashSet::new();
        for connection in &self.connections {
            if !names.insert(connection.name.as_str()) {
                return field("connections", &format!("duplicate connection name `{}`", connection.name));
            }
            if let Err(e) = Self::connection_spec(connection).validate() {
                return field("connections", &format!("connection `{}`: {e}", connection.name));
            }
            if let Some(text) = &connection.connection_string
                && drivers::connection_string_has_password(text)
            {
                return field(
                    "connections",
                    &format!(
                        "connection `{}`: the connection string contains a password; store it with `mini-connector db edit --password` instead",
                        connection.name
                    ),
                );
            }
            if let Some(reference) = &connection.password_ref
                && let Err(e) = drivers::Password::check_reference(reference)
            {
                return field("connections", &format!("connection `{}`: passwordRef: {e}", connection.name));
            }
            if connection.pool_max == 0 || connection.pool_min > connection.pool_max {
                return field(
                    "connections",
                    &format!("connection `{}`: need 0 <= poolMin <= poolMax, poolMax >= 1", connection.name),
                );
            }
        }
        if let Some(notifications) = &self.notifications
            && let Err(reason) = notifications.validate()
        {
            return field("notifications", &reason);
        }
        if let Some(hash) = &self.local_pin_hash
            && !crate::setup::pin::is_valid_hash(hash)
        {
            return field("localPinHash", "is not a PIN hash this agent wrote (remove it to clear the PIN)");
        }
        for name in self.schema_policy.keys() {
            if !self.connections.iter().any(|c| &c.name == name) {
                return field("schemaPolicy", &format!("no connection named `{name}`"));
            }
        }
        Ok(())
    }

    /// Every gateway URL the link may dial, in order: `cloudUrl`, then `cloudUrlFallbacks`.
    pub fn gateway_urls(&self) -> Vec<String> {
        std::iter::once(&self.cloud_url).chain(&self.cloud_url_fallbacks).cloned().collect()
    }

    /// Where chunks may be uploaded: the host and port of every gateway URL, and `uploadHosts`.
    pub fn upload_policy(&self) -> Result<crate::uploader::UploadPolicy, String> {
        crate::uploader::UploadPolicy::for_gateways(&self.gateway_urls(), &self.upload_hosts)
    }

    /// Where the durable queue is: `queuePath` (relative to the config file's directory), else
    /// `$STATE_DIRECTORY/queue.db` when systemd runs the agent, else `queue.db` next to the config.
    pub fn queue_path(&self) -> PathBuf {
        match &self.queue_path {
            Some(path) if path.is_absolute() => path.clone(),
            Some(path) => self.config_dir().join(path),
            None => crate::secrets::state_directory().unwrap_or_else(|| self.config_dir()).join("queue.db"),
        }
    }

    /// Where the rotating log files go: `logDir` as given, else a directory of this
    /// configuration's own under the platform's log directory
    /// ([`crate::logging::default_log_dir`]): `<config dir name>-<first 8 bytes of the SHA-256
    /// of the config file's absolute path, hex>`. Two agents with different configurations
    /// never share a log directory, so `logs --config A` never shows B's lines.
    pub fn log_dir(&self) -> PathBuf {
        if let Some(dir) = &self.log_dir {
            return dir.clone();
        }
        let base = crate::logging::default_log_dir();
        let Some(source) = &self.source else {
            return base;
        };
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(source.as_os_str().as_encoded_bytes());
        let name: String = source
            .parent()
            .and_then(Path::file_name)
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .take(40)
                    .collect()
            })
            .unwrap_or_default();
        let tag = hex::encode(&digest[..8]);
        base.join(if name.is_empty() { tag } else { format!("{name}-{tag}") })
    }

    /// Settings of the durable queue.
    pub fn store_config(&self) -> queue::StoreConfig {
        queue::StoreConfig {
            max_bytes: self.offline_queue_max_mb.saturating_mul(1 << 20),
            audit_query_text: self.audit_query_text,
            ..queue::StoreConfig::default()
        }
    }

    /// Keepalive ping period (`keepaliveIntervalMs`).
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    /// Heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Reads the API key from `apiKeyRef` and checks its format. The key is held only as long
    /// as the caller keeps the returned value (it zeroizes on drop).
    ///
    /// `file:` and `env:` are read directly; `vault://apikey` opens the vault
    /// ([`Self::vault_dir`]); `keychain://<service>/<user>` asks the OS credential store.
    /// Neither the key nor any part of it is ever in an error.
    pub fn load_api_key(&self) -> Result<ApiKey, ConfigError> {
        let reference = self.api_key_ref.clone();
        let fail = |reason: String| ConfigError::ApiKey { reference: reference.clone(), reason };
        let text = if let Some(path) = self.api_key_ref.strip_prefix("file:") {
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?)
        } else if let Some(var) = self.api_key_ref.strip_prefix("env:") {
            Zeroizing::new(std::env::var(var).map_err(|e| fail(e.to_string()))?)
        } else {
            crate::secrets::load_stored_api_key(self)?
        };
        Ok(ApiKey::parse(&text)?)
    }

    /// The driver specification the agent opens: like [`Self::connection_spec`], with the
    /// password taken from the vault when the connection has no `passwordRef`. The secret is
    /// zeroized when the spec is dropped, right after the pool is built.
    pub fn resolved_connection_spec(
        &self,
        connection: &ConnectionConfig,
    ) -> Result<drivers::ConnectionSpec, ConfigError> {
        let mut spec = Self::connection_spec(connection);
        if connection.password_ref.is_none()
            && !matches!(connection.kind, drivers::DbKind::Sqlite | drivers::DbKind::Tally)
            && let Some(secret) = self.db_password(&connection.name)?
        {
            spec.password = drivers::Password::Value(secret);
        }
        Ok(spec)
    }

    /// The driver specification of one connection. The password stays a reference here;
    /// `drivers::Database::open` resolves it (and errors name the reference, not the value).
    pub fn connection_spec(connection: &ConnectionConfig) -> drivers::ConnectionSpec {
        drivers::ConnectionSpec {
            name: connection.name.clone(),
            kind: connection.kind,
            path: connection.path.clone().unwrap_or_default(),
            pool: drivers::PoolSettings {
                min_connections: connection.pool_min,
                max_connections: connection.pool_max,
                acquire_timeout: Duration::from_millis(connection.acquire_timeout_ms),
                ..drivers::PoolSettings::default()
            },
            host: connection.host.clone(),
            port: connection.port,
            database: connection.database.clone(),
            user: connection.user.clone(),
            password: match &connection.password_ref {
                Some(reference) => drivers::Password::Reference(reference.clone()),
                None => drivers::Password::None,
            },
            connection_string: connection.connection_string.clone().map(drivers::Secret::new),
            dsn: connection.dsn.clone(),
            ssl_mode: connection.ssl_mode.unwrap_or_default(),
            ssl_root_cert: connection.ssl_root_cert.clone(),
            allow_cleartext_password: connection.allow_cleartext_password,
            dialect: connection.dialect,
            company: connection.company.clone(),
        }
    }
}

/// Why `url` cannot be a gateway URL (`cloudUrl` or an entry of `cloudUrlFallbacks`).
fn check_gateway_url(url: &str) -> Result<(), &'static str> {
    if !url.starts_with("wss://") {
        return Err("must start with wss:// (TLS is required)");
    }
    if url.parse::<ureq::http::Uri>().map(|u| u.host().is_none()).unwrap_or(true) {
        return Err("is not a valid URL with a host");
    }
    Ok(())
}

/// What makes two gateway URLs the same endpoint: host (any case), port (443 when absent) and
/// path (not the query), so `wss://GW.example.com/ws` repeats `wss://gw.example.com:443/ws`.
fn gateway_identity(url: &str) -> Option<(String, u16, String)> {
    let uri = url.parse::<ureq::http::Uri>().ok()?;
    let host = uri.host()?.to_ascii_lowercase();
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Some((host, uri.port_u16().unwrap_or(443), path.to_owned()))
}

/// serde's `unknown field `x`, expected one of `a`, `b`` with the nearest known name instead of
/// the whole list (`did you mean `heartbeatIntervalMs`?`); other messages unchanged.
fn explain_unknown_field(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((field, rest)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // `, expected one of `a`, `b` at line 3 column 9` / `, expected `a` at ...`.
    let (expected, position) = match rest.rfind(" at line ") {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let nearest = known
        .iter()
        .map(|k| {
            (strsim::normalized_damerau_levenshtein(&field.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k)
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, k)) => format!("unknown field `{field}`{position} (did you mean `{k}`?)"),
        None => format!("unknown field `{field}`{position} (known fields: {})", known.join(", ")),
    }
}

/// A minimal valid configuration with `extra`'s fields merged in; `source` is where it says it
/// was loaded from (tests of this and other modules).
#[cfg(test)]
pub(crate) fn test_config(extra: serde_json::Value, source: Option<&str>) -> AgentConfig {
    let mut value = serde_json::json!({
        "connectorName": "t",
        "apiKeyRef": "vault://apikey",
        "cloudUrl": "wss://example.com/ws",
    });
    value.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let mut config: AgentConfig = serde_json::from_value(value).unwrap();
    config.source = source.map(PathBuf::from);
    config
}

#[cfg(test)]
mod tests {
    use super::AgentConfig;

    fn config(extra: serde_json::Value) -> AgentConfig {
        super::test_config(extra, None)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "connectorName": "t",
            "apiKeyRef": "vault://apikey",
            "cloudUrl": "wss://example.com/ws",
            "connections": [{ "name": "erp", "type": "sqlite", "path": "/tmp/erp.db" }],
        })
    }

    fn load_text(value: &serde_json::Value) -> Result<AgentConfig, String> {
        let dir = std::env::temp_dir().join(format!("mc-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = dir.join(format!("{}.json", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::write(&path, value.to_string()).unwrap();
        let out = AgentConfig::load(&path).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn unknown_fields_are_refused_by_name_with_the_nearest_known_one() {
        let mut value = base();
        value["heartbeatIntervalMS"] = 15000.into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("unknown field `heartbeatIntervalMS`"), "{err}");
        assert!(err.contains("did you mean `heartbeatIntervalMs`?"), "{err}");
        let mut value = base();
        value["connections"][0]["poolmax"] = 3.into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("unknown field `poolmax`") && err.contains("`poolMax`"), "{err}");
        let mut value = base();
        value["frobnicate"] = true.into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("unknown field `frobnicate`") && err.contains("known fields: "), "{err}");
    }

    #[test]
    fn a_password_in_a_connection_is_sent_to_the_vault_and_never_echoed() {
        let mut value = base();
        value["connections"][0]["password"] = "hunter2-secret".into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("connections[0].password"), "{err}");
        assert!(err.contains("vault") && err.contains("db edit --name erp --password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let mut value = base();
        value["apiKey"] = "vmc_acme_secret".into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("`apiKey`") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn bad_enum_values_are_refused_with_the_allowed_ones() {
        let mut value = base();
        value["logLevel"] = "verbose".into();
        let err = load_text(&value).unwrap_err();
        assert!(err.contains("logLevel") && err.contains("error, warn, info, debug, trace"), "{err}");
        for ok in ["info", "DEBUG", "Warn", "off"] {
            let mut value = base();
            value["logLevel"] = ok.into();
            load_text(&value).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (field, bad, allowed) in [
            ("type", "postgresq", "`postgres`"),
            ("sslMode", "strict", "`verify-full`"),
            ("dialect", "db2", "`sqlserver`"),
        ] {
            let mut value = base();
            value["connections"][0][field] = bad.into();
            let err = load_text(&value).unwrap_err();
            assert!(err.contains(bad) && err.contains(allowed), "{field}: {err}");
        }
    }

    #[test]
    fn a_config_written_by_an_older_version_still_loads() {
        // Every field the spec's Appendix B example and earlier releases wrote.
        let value = serde_json::json!({
            "connectorName": "Warehouse SAP", "apiKeyRef": "vault://apikey",
            "cloudUrl": "wss://connector.example.com/ws", "heartbeatIntervalMs": 30000,
            "commandTimeoutMs": 30000, "offlineQueueMaxMB": 500, "logLevel": "info",
            "autoUpdate": true, "proxyUrl": null, "offlineQueueMaxMb": null,
            "connections": [{ "name": "erp", "type": "sqlite", "path": "/tmp/erp.db",
                "poolMax": 10, "poolMin": 2, "acquireTimeoutMs": 10000 }],
        });
        let mut value = value;
        value.as_object_mut().unwrap().remove("offlineQueueMaxMb");
        load_text(&value).unwrap();
        let mut saved = serde_json::to_value(load_text(&base()).unwrap()).unwrap();
        saved["connections"][0]["name"] = "erp".into();
        load_text(&saved).expect("what save() writes loads again");
    }

    #[test]
    fn cloud_url_fallbacks_are_optional_and_round_trip_in_order() {
        let plain = config(serde_json::json!({}));
        assert!(plain.cloud_url_fallbacks.is_empty());
        assert_eq!(plain.gateway_urls(), vec!["wss://example.com/ws".to_owned()]);
        let saved = serde_json::to_value(&plain).unwrap();
        assert!(saved.get("cloudUrlFallbacks").is_none(), "not written when empty: {saved}");

        let mut value = base();
        value["cloudUrlFallbacks"] =
            serde_json::json!(["wss://gw2.example.com/ws", "wss://10.0.0.7:8443/ws"]);
        let loaded = load_text(&value).unwrap();
        assert_eq!(
            loaded.gateway_urls(),
            ["wss://example.com/ws", "wss://gw2.example.com/ws", "wss://10.0.0.7:8443/ws"]
        );
        let saved = serde_json::to_value(&loaded).unwrap();
        assert_eq!(saved["cloudUrlFallbacks"], value["cloudUrlFallbacks"]);
        assert_eq!(load_text(&saved).unwrap().cloud_url_fallbacks, loaded.cloud_url_fallbacks);
    }

    #[test]
    fn each_cloud_url_fallback_is_checked_like_cloud_url_and_named_by_its_origin_only() {
        let check = |fallbacks: serde_json::Value| {
            let mut value = base();
            value["cloudUrlFallbacks"] = fallbacks;
            load_text(&value)
        };
        for (fallbacks, expected) in [
            (
                serde_json::json!(["wss://gw2.example.com/ws", "ws://gw3.example.com/ws?token=s3cret"]),
                "entry 2 (ws://gw3.example.com:443) must start with wss://",
            ),
            (
                serde_json::json!(["https://gw2.example.com/ws"]),
                "entry 1 (https://gw2.example.com:443) must start with wss://",
            ),
            (serde_json::json!(["wss://"]), "entry 1 is not a valid URL with a host"),
            (serde_json::json!([""]), "entry 1 must start with wss://"),
            (
                serde_json::json!(["wss://EXAMPLE.com:443/ws?token=s3cret"]),
                "entry 1 (wss://example.com:443) repeats cloudUrl",
            ),
            (
                serde_json::json!(["wss://gw2.example.com/ws", "wss://gw2.example.com:443/ws"]),
                "entry 2 (wss://gw2.example.com:443) repeats an earlier entry",
            ),
        ] {
            let err = check(fallbacks.clone()).unwrap_err();
            assert!(err.contains("invalid config field `cloudUrlFallbacks`"), "{fallbacks}: {err}");
            assert!(err.contains(expected), "{fallbacks}: {err}");
            assert!(!err.contains("s3cret"), "a URL's query never shows: {err}");
        }
        // Another path on the same node is another endpoint, not a repeat.
        check(serde_json::json!(["wss://example.com/ws2"])).unwrap();
        // At most 16.
        let many: Vec<String> =
            (0..=super::MAX_CLOUD_URL_FALLBACKS).map(|i| format!("wss://gw{i}.example.com/ws")).collect();
        let err = check(serde_json::json!(many)).unwrap_err();
        assert!(err.contains("has 17 entries; at most 16"), "{err}");
        check(serde_json::json!(many[..16])).unwrap();
        // Not a list of strings: serde names the field.
        let err = check(serde_json::json!("wss://gw2.example.com/ws")).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn chunks_may_go_to_the_host_and_port_of_any_gateway_url() {
        let with = config(serde_json::json!({
            "cloudUrlFallbacks": ["wss://GW2.example.com:8443/ws", "wss://[::1]:9443/ws"],
            "uploadHosts": ["files.example.com"],
        }));
        let policy = with.upload_policy().unwrap();
        for ok in [
            "https://example.com/upload",
            "https://gw2.example.com:8443/upload",
            "https://[::1]:9443/upload",
            "https://files.example.com/upload",
        ] {
            policy.check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in ["https://gw2.example.com/upload", "https://gw3.example.com:8443/upload"] {
            let err = policy.check(refused).unwrap_err();
            assert!(err.contains("cloudUrlFallbacks") && err.contains("uploadHosts"), "{refused}: {err}");
        }
        let without = config(serde_json::json!({}));
        assert!(without.upload_policy().unwrap().check("https://gw2.example.com:8443/upload").is_err());
    }

    #[test]
    fn keepalive_defaults_below_common_idle_timeouts_and_is_range_checked() {
        let default = config(serde_json::json!({}));
        assert_eq!(default.keepalive_interval_ms, 20_000);
        assert!(default.validate().is_ok());
        assert_eq!(
            config(serde_json::json!({"keepaliveIntervalMs": 500})).keepalive_interval().as_millis(),
            500
        );
        for bad in [0, 99, 600_001] {
            let err = config(serde_json::json!({ "keepaliveIntervalMs": bad })).validate().unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("keepaliveIntervalMs") && text.contains("between 100 and 600000"),
                "{text}"
            );
        }
    }
}
