//! What the operating system is told so that one process can hold thousands of sessions, each
//! a thread with one socket (`server.rs`).
//!
//! - **Open files.** A connection holds one descriptor, so the soft limit (often 1,024), not
//!   memory, would cap a node's sessions: [`raise_open_files`] lifts it to the hard limit.
//!   Raising the hard limit takes a privilege the gateway should not have; that is the
//!   operator's (`LimitNOFILE=` in a systemd unit, `ulimit -Hn`).
//! - **The futex hash** (Linux 6.16 and later). An idle session thread sleeps on a futex (a
//!   condvar: `protocol::wsio`), and every wake walks the chain of its hash bucket. The kernel
//!   gives a process a private hash sized by its CPUs, not its threads (16 buckets on the
//!   2-CPU benchmark machine): 10,000 sleeping threads were ~625 per bucket, and the reactor
//!   spent most of its time in `futex_wake` (docs/BENCHMARKS.md). [`size_futex_hash`] asks for
//!   two buckets per expected thread. Older kernels share one global hash and refuse the
//!   request.

/// Descriptors kept for what is not a connection: listeners, `gateway.db` and its WAL, spool
/// files, the reactor, admin connections.
pub(crate) const RESERVED_FILES: u64 = 64;

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

/// Sizes this process's futex hash for about `threads` sleeping threads (a power of two, at
/// least twice as many buckets, at most 2^17); returns the buckets set, `None` where the
/// kernel has no per-process hash (before Linux 6.16, or not Linux).
pub(crate) fn size_futex_hash(threads: usize) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // <linux/prctl.h>; not in the libc crate yet.
        const PR_FUTEX_HASH: libc::c_int = 78;
        const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
        let slots = threads.saturating_mul(2).clamp(16, 1 << 17).next_power_of_two() as libc::c_ulong;
        let flags: libc::c_ulong = 0;
        // SAFETY: prctl(2) with integer arguments only: no memory is handed to the kernel.
        #[allow(unsafe_code)]
        let result = unsafe { libc::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots, flags) };
        if result == 0 {
            Some(slots)
        } else {
            tracing::debug!("no per-process futex hash to size: {}", std::io::Error::last_os_error());
            None
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = threads;
        None
    }
}
