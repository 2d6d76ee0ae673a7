//! The heartbeat thread: every `heartbeatIntervalMs` it reads the status board and queues a
//! `heartbeat` frame on the link, while the link is authenticated.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, select};

use crate::link::LinkSender;
use crate::protocol::{Heartbeat, Outbound, now_rfc3339};
use crate::supervisor::StatusBoard;

/// The heartbeat thread. Dropping the handle stops and joins it.
#[derive(Debug)]
pub struct HeartbeatHandle {
    // Field order matters: the sender is dropped first, which ends the thread's `select!`,
    // then the thread is joined.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HeartbeatHandle {
    /// Starts ticking.
    pub fn start(interval: Duration, board: Arc<StatusBoard>, link: LinkSender) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = crate::spawn_named("heartbeat", move || {
            let ticks = crossbeam_channel::tick(interval);
            loop {
                select! {
                    recv(ticks) -> _ => {
                        if board.is_connected() {
                            link.frame(Outbound::Heartbeat(Heartbeat {
                                timestamp: now_rfc3339(),
                                status: board.agent_status(),
                                active_commands: board.active_commands(),
                            }));
                        }
                    }
                    recv(stopped) -> _ => return,
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            crate::join_named(thread);
        }
    }
}
