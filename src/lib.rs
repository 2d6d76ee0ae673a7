//! Mini Connector: the on-premise agent.
//!
//! The agent dials out to the cloud gateway over WSS (TLS 1.3), authenticates with its API key,
//! broadcasts schema metadata and runs the read-only queries the cloud sends, streaming the rows
//! back. It is built from named OS threads, each an actor with a closed message enum, talking
//! over crossbeam channels (see `docs/ARCHITECTURE.md`):
//!
//! - [`link`]: the socket (TLS 1.3 WebSocket), driven by `polling` ([`wsio`]);
//! - [`supervisor`]: the only writer of agent state;
//! - [`heartbeat`], [`worker`] (pool), [`uploader`] (HTTPS chunks, [`https`]);
//! - [`protocol`]: the wire types, shared with the reference gateway;
//! - [`config`], [`tls`]: configuration and the one TLS client configuration;
//! - [`secrets`]: the vault directory, the API key behind `apiKeyRef`, database passwords;
//! - [`control`]: the local control socket / pipe (typed [`protocol::control`] messages);
//!   [`handle`]: the same API for an agent in this process ([`handle::AgentHandle`]) and the
//!   desktop app's [`protocol::control::Backend`]s;
//! - [`notify`]: spec §8.3 notifications (desktop, email over SMTP/TLS) on their own threads.
//! - [`setup`]: setup work returning data (configure, key, databases, schema, PIN, service),
//!   what the CLI and the desktop app call.
//! - [`diag`]: the diagnostic bundle (spec §8.2), a ZIP for support without secrets, rows or
//!   private names.
//!
//! ```
//! use mini_connector::protocol::{ApiKey, Frame, Inbound};
//! let key = ApiKey::generate("acme").unwrap();
//! assert!(ApiKey::parse(key.expose()).is_ok());
//! assert!(Inbound::decode(r#"{"type":"schema_request"}"#).is_ok());
//! ```

pub mod agent;
pub mod config;
pub mod control;
pub mod diag;
pub mod doctor;
pub mod handle;
pub mod heartbeat;
pub mod https;
pub mod link;
pub mod logging;
pub mod longpoll;
pub mod notify;
pub mod policy;
pub mod prompt;
pub mod proxy;
pub mod secrets;
pub mod setup;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod update;
pub mod uploader;
pub mod worker;

/// The wire types, shared with the reference gateway (the `protocol` crate).
pub use ::protocol;
/// The polled WebSocket both ends use.
pub use ::protocol::wsio;

use std::thread::JoinHandle;

/// Spawns a named thread (names show up in logs, `top -H` and panic messages).
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(body)
}

/// Joins a thread and re-raises its panic, so a crashed role is never silently lost.
pub fn join_named<T>(handle: JoinHandle<T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
