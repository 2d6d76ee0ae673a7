//! The one error type of the gateway library.

use std::io;

/// Everything that can go wrong in the gateway outside a query (see [`crate::QueryError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A file, socket or thread could not be created, read or written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A listener could not be bound; the message names the address and the cause once.
    #[error("cannot listen on {addr} ({role}): {cause}")]
    Listen {
        /// `agent port` or `admin API`.
        role: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What went wrong, with a hint.
        cause: String,
    },
    /// `gateway.db` (keys, command queue) failed.
    #[error("gateway.db: {0}")]
    Db(#[from] rusqlite::Error),
    /// Redis (cluster mode: registry, keys, command streams, results) failed. The message never
    /// holds the URL's password.
    #[error("redis: {0}")]
    Redis(String),
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

impl GatewayError {
    /// A bind failure of `role` on `addr`, with a hint for the common causes.
    pub(crate) fn listen(role: &'static str, addr: std::net::SocketAddr, e: &io::Error) -> Self {
        let cause = match e.kind() {
            io::ErrorKind::AddrInUse => "address already in use (another gateway running?)".to_owned(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            io::ErrorKind::AddrNotAvailable => {
                "address not available (no network interface of this machine has it)".to_owned()
            }
            _ => e.to_string(),
        };
        Self::Listen { role, addr, cause }
    }
}

impl From<rcgen::Error> for GatewayError {
    fn from(e: rcgen::Error) -> Self {
        Self::Cert(e.to_string())
    }
}

impl From<redis::RedisError> for GatewayError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}
