//! The open-file limit. A connection holds one descriptor (`server.rs`), so the soft limit
//! (often 1,024), not memory, would cap a node's sessions: [`raise_open_files`] lifts it to
//! the hard limit at start. Raising the hard limit takes a privilege the gateway should not
//! have; that is the operator's (`LimitNOFILE=` in a systemd unit, `ulimit -Hn`).

/// Descriptors kept for what is not a connection: listeners, `gateway.db` and its WAL, spool
/// files, the reactor, admin connections.
pub(crate) const RESERVED: u64 = 64;

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force
/// afterwards (`u64::MAX`: unlimited), or `None` where there is no such limit (not Unix). A
/// failed raise is logged and leaves the limit as it was.
pub(crate) fn raise_open_files() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open-file limit: {e}");
            }
        }
        // `None` is RLIM_INFINITY.
        Some(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}
