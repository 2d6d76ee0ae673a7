//! Notifications (spec §8.3): desktop notifications and email for the six events.
//!
//! - [`Notifier`] (pure logic, fake-clock tests) turns the agent's [`AgentEvent`] stream into
//!   [`Notice`]s: connection lost for more than 5 minutes (once per outage, and "restored"),
//!   command failed, schema change, key revoked, new version (an `AgentEvent::Notice` of kind
//!   `new_version` fed by whoever checks for updates), queue disk warning. At most one notice
//!   per kind per `minIntervalMinutes` (15): the rest are counted and summarised.
//! - [`spawn`] starts two named threads: `notify` (runs the [`Notifier`], ticks every
//!   [`TICK`]) and `notify-send` (delivers, so a slow SMTP server delays nothing else). The
//!   agent hands events over with [`NotifySender::send`], which never blocks: both channels are
//!   bounded and a full one drops (and counts) instead of waiting.
//! - Sinks ([`sinks`]): desktop through notify-rust (libdbus on Linux, toasts on Windows), skipped
//!   quietly with one debug log when the session has no notification service; email through
//!   lettre's blocking SMTP transport on rustls (implicit TLS or required STARTTLS; plain only to
//!   a loopback relay). The SMTP password is in the vault (`notify set-password`), never in the
//!   configuration, a log line or an error.
//!
//! Hook for the supervisor / `AgentHandle`: keep the [`NotifySender`] from
//! `notify::spawn(&config)` and call `sender.send(event.clone())` for every [`AgentEvent`] it
//! publishes (status snapshots, activity, notices); call [`NotifySender::shutdown`] on stop.

pub mod cli;
mod notifier;
pub mod settings;
pub mod sinks;

use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

pub use notifier::{Notifier, Policy, kind_label};
pub use settings::NotificationsConfig;
pub use sinks::desktop_available;

use crate::config::AgentConfig;
use crate::protocol::control::{AgentEvent, Notice};

/// How often the `notify` thread looks at the clock with no event.
pub const TICK: Duration = Duration::from_secs(5);
/// Events waiting for the `notify` thread.
const EVENT_QUEUE: usize = 1024;
/// Notices waiting for delivery.
const DELIVERY_QUEUE: usize = 64;

/// What can go wrong with notifications. Never carries the SMTP password.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The `notifications` configuration cannot be used.
    #[error("notifications: {0}")]
    Config(String),
    /// The SMTP password could not be read.
    #[error("cannot read the SMTP password from {reference}: {reason}")]
    Password {
        /// `passwordRef` (never the password).
        reference: String,
        /// Why.
        reason: String,
    },
    /// The vault could not store the password.
    #[error("{0}")]
    Vault(String),
    /// The SMTP server refused or could not be reached.
    #[error("email not sent: {0}")]
    Email(String),
    /// The desktop notification service refused or is absent.
    #[error("desktop notification not shown: {0}")]
    Desktop(String),
    /// A thread could not be started.
    #[error("cannot start the notification thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What the delivery thread does with one notice, decided by the per-event routes.
#[derive(Debug)]
pub struct Dispatcher {
    config: NotificationsConfig,
    connector: String,
    email: Option<sinks::EmailSink>,
    /// `None` until the first desktop notice; then whether the session has a service.
    desktop: Option<bool>,
}

/// Which sinks took one notice.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Shown on the desktop.
    pub desktop: Option<Result<(), String>>,
    /// Mailed.
    pub email: Option<Result<(), String>>,
}

impl Dispatcher {
    /// Sinks for `config`'s `notifications` section. Fails when email is configured but its
    /// password or CA certificate cannot be read.
    pub fn new(config: &AgentConfig) -> Result<Self, NotifyError> {
        let notifications = config.notifications.clone().unwrap_or_default();
        let email = match &notifications.email {
            Some(email) => Some(sinks::EmailSink::new(config, email)?),
            None => None,
        };
        Ok(Self { config: notifications, connector: config.connector_name.clone(), email, desktop: None })
    }

    /// Like [`Self::new`] with email off (the agent's fallback when the email settings cannot
    /// be used: a missing password must not stop the agent).
    pub fn desktop_only(config: &AgentConfig) -> Self {
        let mut notifications = config.notifications.clone().unwrap_or_default();
        notifications.email = None;
        Self { config: notifications, connector: config.connector_name.clone(), email: None, desktop: None }
    }

    /// Delivers `notice` where its route says. `force` sends it to every configured sink
    /// (`notify test`).
    pub fn deliver(&mut self, notice: &Notice, force: bool) -> Delivery {
        let route = self.config.route(notice.kind);
        let mut delivery = Delivery::default();
        if route.desktop || force {
            let available = *self.desktop.get_or_insert_with(|| {
                let available = desktop_available();
                if !available {
                    tracing::debug!(
                        "no desktop notification service in this session: desktop notifications skipped"
                    );
                }
                available
            });
            if available {
                delivery.desktop = Some(sinks::show_desktop(notice).map_err(|e| e.to_string()));
            }
        }
        if let Some(email) = &self.email
            && (route.email || force)
        {
            delivery.email = Some(email.send(&self.connector, notice).map_err(|e| e.to_string()));
        }
        delivery
    }
}

/// The agent's end of the notification threads (see the module docs).
#[derive(Debug)]
pub struct NotifySender {
    events: Option<Sender<AgentEvent>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl NotifySender {
    /// Hands `event` to the `notify` thread; never blocks (a full queue drops the event and
    /// counts it, see [`Self::dropped`]).
    pub fn send(&self, event: AgentEvent) {
        if let Some(events) = &self.events
            && let Err(TrySendError::Full(_)) = events.try_send(event)
        {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Events and notices dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops both threads after the notices already queued are delivered.
    pub fn shutdown(mut self) {
        self.events = None;
        for thread in self.threads.drain(..) {
            crate::join_named(thread);
        }
    }
}

/// Starts the `notify` and `notify-send` threads for `config` (see the module docs). With no
/// `notifications` section the spec's defaults apply (desktop notifications where the session
/// has them, no email). Email settings that cannot be used (no password stored, unreadable
/// `caCertPath`) turn email off with a warning; only a failure to start a thread is an error.
pub fn spawn(config: &AgentConfig) -> Result<NotifySender, NotifyError> {
    let notifications = config.notifications.clone().unwrap_or_default();
    let policy = Policy {
        min_interval: notifications.min_interval(),
        notify_restored: notifications.notify_restored.unwrap_or(true),
        ..Policy::default()
    };
    let mut dispatcher = Dispatcher::new(config).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "email notifications are off");
        Dispatcher::desktop_only(config)
    });
    spawn_with(policy, move |notice| {
        let delivery = dispatcher.deliver(notice, false);
        for (sink, result) in [("desktop", &delivery.desktop), ("email", &delivery.email)] {
            match result {
                Some(Ok(())) => tracing::info!(kind = ?notice.kind, sink, "notification sent"),
                Some(Err(e)) => tracing::warn!(kind = ?notice.kind, sink, error = %e, "notification failed"),
                None => {}
            }
        }
    })
}

/// [`spawn`] with any delivery function (tests use a channel).
pub fn spawn_with(
    policy: Policy,
    mut deliver: impl FnMut(&Notice) + Send + 'static,
) -> Result<NotifySender, NotifyError> {
    let (events_tx, events_rx) = bounded::<AgentEvent>(EVENT_QUEUE);
    let (notices_tx, notices_rx) = bounded::<Notice>(DELIVERY_QUEUE);
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender_dropped = dropped.clone();
    let deliverer = crate::spawn_named("notify-send", move || {
        for notice in notices_rx {
            deliver(&notice);
        }
    })?;
    let observer =
        crate::spawn_named("notify", move || observe_loop(policy, &events_rx, &notices_tx, &dropped))?;
    Ok(NotifySender { events: Some(events_tx), threads: vec![observer, deliverer], dropped: sender_dropped })
}

fn observe_loop(
    policy: Policy,
    events: &Receiver<AgentEvent>,
    notices: &Sender<Notice>,
    dropped: &std::sync::atomic::AtomicU64,
) {
    let mut notifier = Notifier::new(policy);
    loop {
        let out = match events.recv_timeout(TICK) {
            Ok(event) => notifier.observe(&event, SystemTime::now()),
            Err(RecvTimeoutError::Timeout) => notifier.tick(SystemTime::now()),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for notice in out {
            if notices.try_send(notice).is_err() {
                dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("notification delivery is behind (slow SMTP server?): a notice was dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests;
