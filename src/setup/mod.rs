//! Setup work, as a library: what the CLI's `configure`, `key rotate`, `db …`, `schema …` and
//! `service install` do, and what the desktop app's wizard and forms do. Every function takes
//! the configuration file's path, does its work on the configuration and the vault, and returns
//! data (the `protocol::control` types) or a [`SetupError`]; callers only print or draw.
//!
//! [`execute`] is the single entry for a [`SetupRequest`] (the GUI, the in-process backend and
//! the control socket call it) and answers a [`ControlReply`]; the typed functions behind it are
//! what the CLI calls directly:
//!
//! - [`settings`]: [`settings()`], [`configure`], [`check_key`], [`store_api_key`] (key rotate);
//! - [`databases`]: [`list_databases`], [`test_database`], [`save_database`],
//!   [`remove_database`], and the lower-level [`databases::probe`] / [`databases::save_connection`]
//!   the CLI's flag-by-flag edits use;
//! - [`schema`]: [`discover`], [`sample`], [`set_private`], [`approve_schema`] (the approved
//!   snapshot is kept next to the saved discovery, `schema/<connection>.approved.json`);
//! - [`pin`]: [`set_pin`], [`verify_pin`] (spec §7.3; a salted PBKDF2 hash in `localPinHash`);
//! - [`service`]: [`install_service`] and the service manager details (systemd, launchd, the
//!   Windows service manager).
//!
//! Secrets go in (an API key to check or store, a database password to save, a PIN) but never
//! come out: replies carry masked keys and `hasPassword` flags, and no error message holds a
//! secret (the drivers' and the vault's messages never do; ours never format one).

pub mod databases;
pub mod pin;
pub mod schema;
pub mod service;
pub mod settings;

use std::path::Path;

pub use databases::{list_databases, remove_database, save_database, test_database};
pub use pin::{set_pin, verify_pin};
pub use schema::{approve_schema, discover, sample, set_private};
pub use service::install_service;
pub use settings::{check_key, configure, settings, store_api_key};

use crate::config::{AgentConfig, ConfigError};
use crate::protocol::ErrorCode;
use crate::protocol::control::{ControlReply, SetupRequest};

/// Why setup work failed. [`SetupError::code`] is the code a [`ControlReply::Error`] carries.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A value the caller gave is not usable (`INVALID_INPUT`).
    #[error("{0}")]
    Invalid(String),
    /// No such connection (`UNKNOWN_CONNECTION`).
    #[error("{0}")]
    UnknownConnection(String),
    /// No configuration file yet (`NOT_CONFIGURED`).
    #[error("{0}")]
    NotConfigured(String),
    /// The configuration or the vault failed (`VAULT_DECRYPT_ERROR`, `INVALID_INPUT` for a bad
    /// field, `IO` for a file or vault that cannot be read or written).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database could not be used: the spec's code (`DATABASE_UNAVAILABLE`, `QUERY_FAILED`,
    /// `QUERY_TIMEOUT`, `SCHEMA_ACCESS_DENIED`...) and the driver's message.
    #[error("{message}")]
    Database {
        /// The spec's error code.
        code: ErrorCode,
        /// In words (the driver's messages never hold a password).
        message: String,
    },
    /// A file or a program (service manager) failed (`IO`).
    #[error("{0}")]
    Io(String),
    /// The PIN does not match (`PIN_INVALID`).
    #[error("the PIN is wrong")]
    PinInvalid,
    /// Too many wrong PINs: wait this many seconds (`PIN_LOCKED`).
    #[error("too many wrong PINs; try again in {0} s")]
    PinLocked(u64),
}

/// The result of setup work.
pub type Result<T, E = SetupError> = std::result::Result<T, E>;

impl SetupError {
    /// The code of the [`ControlReply::Error`] for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "INVALID_INPUT",
            Self::UnknownConnection(_) => ErrorCode::UnknownConnection.as_str(),
            Self::NotConfigured(_) => "NOT_CONFIGURED",
            Self::Config(e) if e.is_vault_decrypt() => ErrorCode::VaultDecryptError.as_str(),
            Self::Config(
                ConfigError::Vault { .. } | ConfigError::Write { .. } | ConfigError::Read { .. },
            ) => "IO",
            Self::Config(_) => "INVALID_INPUT",
            Self::Database { code, .. } => code.as_str(),
            Self::Io(_) => "IO",
            Self::PinInvalid => "PIN_INVALID",
            Self::PinLocked(_) => "PIN_LOCKED",
        }
    }

    /// Whether the caller's input is at fault (the CLI's exit 2) rather than the environment
    /// (a database, the disk, a service manager: exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Invalid(_) | Self::UnknownConnection(_) | Self::NotConfigured(_) => true,
            Self::Config(e) => {
                !matches!(e, ConfigError::Vault { .. } | ConfigError::Write { .. } | ConfigError::Read { .. })
            }
            Self::Database { .. } | Self::Io(_) | Self::PinInvalid | Self::PinLocked(_) => false,
        }
    }

    /// An `INVALID_INPUT` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self::Io(message.into())
    }

    pub(crate) fn database(error: &drivers::DriverError) -> Self {
        Self::Database { code: driver_code(error), message: error.to_string() }
    }
}

/// The spec's code for a driver error.
pub fn driver_code(error: &drivers::DriverError) -> ErrorCode {
    use drivers::DriverError as E;
    match error {
        E::Open(_) | E::Unavailable(_) | E::UnsupportedKind(_) | E::Io(_) => ErrorCode::DatabaseUnavailable,
        E::PoolExhausted => ErrorCode::ConnectionPoolExhausted,
        E::WriteRejected(_) => ErrorCode::WriteOperationRejected,
        E::Timeout => ErrorCode::QueryTimeout,
        E::Cancelled => ErrorCode::CommandCancelled,
        _ => ErrorCode::QueryFailed,
    }
}

impl From<SetupError> for ControlReply {
    fn from(error: SetupError) -> Self {
        ControlReply::error(error.code(), error.to_string())
    }
}

/// Does one setup request for the configuration at `config_path` and answers it. Never
/// panics on bad input; every failure is a [`ControlReply::Error`] with its code.
pub fn execute(config_path: &Path, request: SetupRequest) -> ControlReply {
    let reply = match request {
        SetupRequest::Settings => settings(config_path).map(|v| ControlReply::Settings(Box::new(v))),
        SetupRequest::CheckKey { api_key, cloud_url } => {
            let api_key = zeroize::Zeroizing::new(api_key);
            check_key(config_path, &api_key, cloud_url.as_deref()).map(ControlReply::Key)
        }
        SetupRequest::Configure(change) => {
            configure(config_path, change).map(|v| ControlReply::Settings(Box::new(v)))
        }
        SetupRequest::ListDatabases => list_databases(config_path).map(ControlReply::Databases),
        SetupRequest::TestDatabase(form) => test_database(config_path, form).map(ControlReply::Test),
        SetupRequest::SaveDatabase { form, replace } => save_database(config_path, form, replace.as_deref())
            .and_then(|_| list_databases(config_path))
            .map(ControlReply::Databases),
        SetupRequest::RemoveDatabase { name } => remove_database(config_path, &name)
            .and_then(|_| list_databases(config_path))
            .map(ControlReply::Databases),
        SetupRequest::Discover { connection } => {
            discover(config_path, &connection).map(|v| ControlReply::Schema(Box::new(v)))
        }
        SetupRequest::Sample { connection, table, limit } => {
            sample(config_path, &connection, &table, limit).map(ControlReply::Sample)
        }
        SetupRequest::SetPrivate { connection, table, column, private } => {
            set_private(config_path, &connection, &table, column.as_deref(), private)
                .map(|v| ControlReply::Schema(Box::new(v)))
        }
        SetupRequest::ApproveSchema { connection } => {
            approve_schema(config_path, &connection).map(|v| ControlReply::Schema(Box::new(v)))
        }
        SetupRequest::InstallService => install_service(config_path).map(ControlReply::Message),
        SetupRequest::SetPin { current, new } => {
            let current = current.map(zeroize::Zeroizing::new);
            let new = new.map(zeroize::Zeroizing::new);
            set_pin(config_path, current.as_deref().map(String::as_str), new.as_deref().map(String::as_str))
                .map(|()| ControlReply::Ok)
        }
        SetupRequest::VerifyPin { pin } => {
            let pin = zeroize::Zeroizing::new(pin);
            verify_pin(config_path, &pin).map(|()| ControlReply::Ok)
        }
    };
    reply.unwrap_or_else(ControlReply::from)
}

/// Loads the configuration; a missing file is [`SetupError::NotConfigured`].
pub fn load(config_path: &Path) -> Result<AgentConfig> {
    if !config_path.exists() {
        return Err(SetupError::NotConfigured(format!(
            "no configuration at {}; create one with `mini-connector configure --name NAME --cloud-url wss://... --api-key-stdin`",
            config_path.display()
        )));
    }
    Ok(AgentConfig::load(config_path)?)
}

/// The index of connection `name`, or [`SetupError::UnknownConnection`] listing the known ones.
pub fn find(config: &AgentConfig, name: &str) -> Result<usize> {
    config.connections.iter().position(|c| c.name == name).ok_or_else(|| {
        let known: Vec<&str> = config.connections.iter().map(|c| c.name.as_str()).collect();
        SetupError::UnknownConnection(format!(
            "unknown connection `{name}` (configured: {})",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))
    })
}

/// `path` made absolute against the current directory (not resolving links).
pub fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
