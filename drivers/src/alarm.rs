//! Query deadlines that stop a statement blocked inside a network or driver call.
//!
//! One lazily started, process-wide thread (`drivers-alarm`) sleeps until the earliest armed
//! deadline and runs that alarm's stop action (ODBC `SQLCancel`; for PostgreSQL and MySQL a
//! backstop behind the server-side statement timeout). Dropping the [`Alarm`] disarms it; if the
//! action is running at that moment, the drop waits for it, so an action never touches a
//! statement or connection that was already released.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

type Action = Box<dyn FnOnce() + Send>;

struct Entry {
    action: Mutex<Option<Action>>,
    fired: AtomicBool,
}

/// An armed deadline; disarmed on drop.
pub(crate) struct Alarm {
    entry: Arc<Entry>,
}

impl Alarm {
    /// Runs `action` on the alarm thread at `deadline`, unless the alarm is dropped first.
    pub(crate) fn arm(deadline: Instant, action: impl FnOnce() + Send + 'static) -> Alarm {
        let entry =
            Arc::new(Entry { action: Mutex::new(Some(Box::new(action))), fired: AtomicBool::new(false) });
        let sent =
            sender().lock().unwrap_or_else(|p| p.into_inner()).send((deadline, Arc::downgrade(&entry)));
        if sent.is_err() {
            tracing::warn!("alarm thread is gone; deadline relies on the server-side timeout only");
        }
        Alarm { entry }
    }

    /// Disarms (waiting for a running action) and says whether the action ran.
    pub(crate) fn disarm(self) -> bool {
        let entry = self.entry.clone();
        drop(self);
        entry.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // Waits while the action runs (it holds the lock).
        self.entry.action.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

type Arm = (Instant, Weak<Entry>);

fn sender() -> &'static Mutex<Sender<Arm>> {
    static SENDER: OnceLock<Mutex<Sender<Arm>>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Arm>();
        // Detached on purpose: it owns nothing but weak references and sleeps when idle; it
        // ends only with the process.
        let spawned = std::thread::Builder::new().name("drivers-alarm".into()).spawn(move || {
            let mut seq = 0u64;
            let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut entries: std::collections::HashMap<u64, Weak<Entry>> = std::collections::HashMap::new();
            loop {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    if let Some(entry) = entries.remove(&id).and_then(|w| w.upgrade()) {
                        let mut slot = entry.action.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(action) = slot.take() {
                            entry.fired.store(true, Ordering::SeqCst);
                            action();
                        }
                    }
                }
                let next = match heap.peek() {
                    Some(Reverse((at, _))) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok((at, entry)) => {
                        seq += 1;
                        heap.push(Reverse((at, seq)));
                        entries.insert(seq, entry);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                // Forget alarms dropped long before their deadline.
                if entries.len() > 1024 {
                    entries.retain(|_, w| w.strong_count() > 0);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the alarm thread");
        }
        Mutex::new(tx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_at_the_deadline_unless_dropped() {
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let start = Instant::now();
        let alarm = Alarm::arm(start + Duration::from_millis(50), move || tx.send("fired").unwrap());
        let dropped = Alarm::arm(start + Duration::from_millis(20), move || tx2.send("dropped").unwrap());
        drop(dropped);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "fired");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(alarm.disarm());
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }
}
