//! Query options, cancellation and statistics.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::DriverError;

/// Shared flag that cancels a running query from another thread.
///
/// Clones share the flag. Cancelling is sticky: a token stays cancelled. Drivers whose query
/// blocks inside a network call register a hook (PostgreSQL cancel request, MySQL
/// `KILL QUERY`, ODBC `SQLCancel`) that [`cancel`](Self::cancel) runs on the calling thread.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Shared>);

#[derive(Default)]
struct Shared {
    cancelled: AtomicBool,
    hooks: Mutex<Hooks>,
}

type Hook = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Hooks {
    next_id: u64,
    list: Vec<(u64, Hook)>,
}

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the query using this token to stop; it ends with [`DriverError::Cancelled`].
    ///
    /// Runs the stop hooks of the running query (if any) before returning; that may take a
    /// network round trip.
    pub fn cancel(&self) {
        if self.0.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        // Hooks run under the lock: a query that finishes meanwhile waits in `HookGuard::drop`
        // until its hook returned, so a hook never acts on a connection already handed back.
        let hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, hook) in &hooks.list {
            hook();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Registers `hook` to run on [`cancel`](Self::cancel) until the guard is dropped; runs it
    /// at once when the token is already cancelled.
    pub(crate) fn on_cancel(&self, hook: impl Fn() + Send + 'static) -> HookGuard {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let hook: Hook = Box::new(move || {
            flag.store(true, Ordering::SeqCst);
            hook();
        });
        let id = {
            let mut hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
            let id = hooks.next_id;
            hooks.next_id += 1;
            if self.is_cancelled() {
                hook();
            }
            hooks.list.push((id, hook));
            id
        };
        HookGuard { token: self.clone(), id, fired }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelToken").field(&self.is_cancelled()).finish()
    }
}

/// Keeps a cancel hook registered; dropping it removes the hook (waiting for a hook that is
/// running right now).
pub(crate) struct HookGuard {
    token: CancelToken,
    id: u64,
    fired: Arc<AtomicBool>,
}

impl HookGuard {
    /// Unregisters the hook (waiting for it if it is running) and says whether it ran.
    pub(crate) fn disarm(self) -> bool {
        let fired = self.fired.clone();
        drop(self);
        fired.load(Ordering::SeqCst)
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let mut hooks = self.token.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks.list.retain(|(id, _)| *id != self.id);
    }
}

/// Per-query limits.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Bound on the whole call, including the wait for a pooled connection; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Cancels the query when set from another thread.
    pub cancel: CancelToken,
}

/// What a finished query delivered to its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Rows pushed to the sink.
    pub rows: u64,
    /// Columns in the result set.
    pub columns: usize,
}

/// How many rows a driver reads between two looks at the clock ([`Interrupt::check_row`]);
/// at 300,000 rows/s that is under 1 ms late.
pub(crate) const CLOCK_EVERY_ROWS: u64 = 256;

/// Deadline and cancel token of one running query, checked by drivers between steps.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt {
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: CancelToken,
}

impl Interrupt {
    pub(crate) fn new(opts: &QueryOptions, start: Instant) -> Self {
        Self {
            // A timeout too large to represent is no timeout.
            deadline: opts.timeout.and_then(|t| start.checked_add(t)),
            cancel: opts.cancel.clone(),
        }
    }

    /// Time left before the deadline, `None` without a deadline.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whole milliseconds left, at least 1; `None` without a deadline (for server-side limits).
    pub(crate) fn remaining_ms(&self) -> Option<u64> {
        self.remaining().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// The error for a query the server stopped: `Cancelled` if the token says so, else `Timeout`.
    pub(crate) fn stopped(&self) -> DriverError {
        if self.cancel.is_cancelled() { DriverError::Cancelled } else { DriverError::Timeout }
    }

    /// [`check`](Self::check) for a loop over rows, given the number of rows read so far:
    /// the cancel flag (one atomic load) every row, the clock only every
    /// [`CLOCK_EVERY_ROWS`] rows (a clock read per row was a measurable share of streaming).
    pub(crate) fn check_row(&self, rows: u64) -> Result<(), DriverError> {
        if self.cancel.is_cancelled() {
            return Err(DriverError::Cancelled);
        }
        if rows.is_multiple_of(CLOCK_EVERY_ROWS) && self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(DriverError::Timeout);
        }
        Ok(())
    }

    /// Whether the query must stop now; cancellation wins over the deadline.
    pub(crate) fn check(&self) -> Result<(), DriverError> {
        if self.cancel.is_cancelled() {
            Err(DriverError::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err(DriverError::Timeout)
        } else {
            Ok(())
        }
    }
}

/// Converts every bound parameter with `convert`, naming the first bad one (1-based) in a
/// `Bind` error. Parameters are always bound, never spliced into the text.
pub(crate) fn convert_params<T>(
    params: &[serde_json::Value],
    convert: impl Fn(&serde_json::Value) -> Result<T, &'static str>,
) -> Result<Vec<T>, DriverError> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| convert(p).map_err(|what| DriverError::Bind(format!("parameter {}: {what}", i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_runs_registered_hooks_once_and_guards_unregister() {
        use std::sync::atomic::AtomicUsize;
        let token = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let guard = token.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let c = calls.clone();
        drop(token.on_cancel(move || {
            c.fetch_add(100, Ordering::SeqCst);
        }));
        token.cancel();
        token.cancel();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(guard.disarm());
        // Registering on a cancelled token runs the hook at once.
        let c = calls.clone();
        let late = token.on_cancel(move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 11);
        assert!(late.disarm());
        assert_eq!(format!("{token:?}"), "CancelToken(true)");
    }

    #[test]
    fn check_row_reads_the_clock_every_n_rows_and_the_cancel_flag_always() {
        let past = QueryOptions { timeout: Some(Duration::ZERO), cancel: CancelToken::new() };
        let interrupt = Interrupt::new(&past, Instant::now());
        assert!(matches!(interrupt.check_row(0), Err(DriverError::Timeout)));
        assert!(interrupt.check_row(1).is_ok(), "no clock read between the every-N rows");
        assert!(matches!(interrupt.check_row(CLOCK_EVERY_ROWS), Err(DriverError::Timeout)));
        past.cancel.cancel();
        assert!(matches!(interrupt.check_row(1), Err(DriverError::Cancelled)));
    }

    #[test]
    fn cancel_is_shared_by_clones() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!token.is_cancelled());
        clone.cancel();
        assert!(token.is_cancelled());
    }
}
