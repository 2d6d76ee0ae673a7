//! The one error type of the gateway library.

use std::io;

/// Everything that can go wrong in the gateway outside a query (see [`crate::QueryError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A file, socket or thread could not be created, read or written.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// `gateway.db` (keys, command queue) failed.
    #[error("gateway.db: {0}")]
    Db(#[from] rusqlite::Error),
    /// rustls refused the server configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The certificate or key could not be generated or loaded.
    #[error("certificate: {0}")]
    Cert(String),
    /// No API key matches this id or connector name.
    #[error("no key or connector named `{0}`")]
    KeyNotFound(String),
    /// The key operation conflicts with the keys already stored.
    #[error("key conflict: {0}")]
    KeyConflict(String),
    /// A tenant id or connector name is not acceptable.
    #[error("invalid {0}")]
    Invalid(String),
    /// The connector is not connected right now.
    #[error("connector `{0}` is not connected")]
    ConnectorOffline(String),
    /// No key was ever issued for this connector.
    #[error("unknown connector `{0}`")]
    UnknownConnector(String),
    /// The admin API of a running gateway answered with an error or could not be reached.
    #[error("admin api: {0}")]
    Admin(String),
    /// The gateway is shutting down.
    #[error("gateway is shutting down")]
    ShuttingDown,
}

impl From<rcgen::Error> for GatewayError {
    fn from(e: rcgen::Error) -> Self {
        Self::Cert(e.to_string())
    }
}
