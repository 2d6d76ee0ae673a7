//! The pure part: which [`AgentEvent`]s become which [`Notice`]s, and how often.
//!
//! [`Notifier`] holds no clock and does no I/O: every call takes `now`, so the tests drive it
//! with a fake clock. The `notify` thread ([`super::spawn`]) feeds it every event and calls
//! [`Notifier::tick`] every few seconds (an outage becomes "longer than 5 minutes" with no
//! event at all).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use crate::protocol::control::{AgentEvent, LinkState, Notice, NoticeKind, Outcome, StatusSnapshot};

/// How the [`Notifier`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// An outage becomes a `connectionLost` notice after this long (spec §8.3: 5 minutes).
    pub connection_lost_after: Duration,
    /// Also say when the link is back after a `connectionLost` notice was delivered.
    pub notify_restored: bool,
    /// At most one notice per kind per this window; later ones are counted and summarised.
    pub min_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            connection_lost_after: Duration::from_secs(5 * 60),
            notify_restored: true,
            min_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// Per-kind rate limit state.
#[derive(Debug, Clone)]
struct Window {
    /// When the last notice of this kind went out.
    last_sent: SystemTime,
    /// Notices of this kind held back since then.
    suppressed: u64,
}

/// Turns the agent's event stream into spec §8.3 notices (see the module docs).
///
/// | notice | from |
/// |---|---|
/// | `connection_lost` | status snapshots not connected (and not paused, not key-rejected) for [`Policy::connection_lost_after`]; once per outage; "restored" when it comes back |
/// | `command_failed` | an `Activity` entry with outcome `failed` (once per command id) |
/// | `schema_change` | a connection newly listed in `schemaChanges` |
/// | `key_revoked` | the link state turning `key_rejected` |
/// | `new_version` | an `AgentEvent::Notice` of that kind, fed by whoever checks for updates |
/// | `queue_disk_warning` | `queue.warning` turning true (queue file over 80 % of its cap) |
///
/// Any other `AgentEvent::Notice` passes through, under the same rate limit.
#[derive(Debug)]
pub struct Notifier {
    policy: Policy,
    /// When the current outage started (`None` while connected, paused or key-rejected).
    outage_since: Option<SystemTime>,
    /// The current outage passed the threshold (its notice was delivered or held back).
    outage_handled: bool,
    /// The current outage's `connectionLost` notice was delivered (not held back).
    outage_delivered: bool,
    /// The link state of the previous snapshot.
    last_state: Option<LinkState>,
    last_queue_warning: bool,
    schema_changes: BTreeSet<String>,
    /// Command ids already notified (bounded).
    failed_seen: VecDeque<String>,
    windows: BTreeMap<NoticeKind, Window>,
}

/// How many failed command ids are remembered to avoid notifying one twice.
const FAILED_IDS_KEPT: usize = 256;

impl Notifier {
    /// A notifier with nothing observed yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            outage_since: None,
            outage_handled: false,
            outage_delivered: false,
            last_state: None,
            last_queue_warning: false,
            schema_changes: BTreeSet::new(),
            failed_seen: VecDeque::new(),
            windows: BTreeMap::new(),
        }
    }

    /// The notices `event`, observed at `now`, causes (after rate limiting).
    pub fn observe(&mut self, event: &AgentEvent, now: SystemTime) -> Vec<Notice> {
        let mut out = Vec::new();
        match event {
            AgentEvent::Status(status) => self.status(status, now, &mut out),
            AgentEvent::Activity(entry) => {
                if let Outcome::Failed { code } = &entry.outcome
                    && !self.failed_seen.contains(&entry.command_id)
                {
                    if self.failed_seen.len() == FAILED_IDS_KEPT {
                        self.failed_seen.pop_front();
                    }
                    self.failed_seen.push_back(entry.command_id.clone());
                    let on = entry
                        .connection
                        .as_deref()
                        .map(|c| format!(" on connection `{c}`"))
                        .unwrap_or_default();
                    let workflow =
                        entry.workflow.as_deref().map(|w| format!(" (workflow `{w}`)")).unwrap_or_default();
                    let body = format!("Command {}{on}{workflow} failed with {code}.", entry.command_id);
                    self.emit(NoticeKind::CommandFailed, "A workflow command failed", body, now, &mut out);
                }
            }
            AgentEvent::Notice(notice) => {
                let (kind, title, body) = (notice.kind, notice.title.clone(), notice.body.clone());
                self.emit(kind, &title, body, now, &mut out);
            }
            AgentEvent::Log { .. } | AgentEvent::Stopped { .. } => {}
        }
        out.extend(self.tick(now));
        out
    }

    /// Time passing with no event: an outage crossing the threshold, and summaries of notices
    /// held back by the rate limit whose window has ended.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(since) = self.outage_since
            && !self.outage_handled
            && elapsed(since, now) >= self.policy.connection_lost_after
        {
            let minutes = elapsed(since, now).as_secs() / 60;
            let body = format!(
                "Mini Connector has been disconnected from the cloud for {minutes} minutes (since {}). Workflows cannot reach this machine's databases until it reconnects.",
                humantime::format_rfc3339_seconds(since)
            );
            // Once per outage: held back by the rate limit or not, this outage is handled.
            self.outage_handled = true;
            self.outage_delivered =
                self.emit(NoticeKind::ConnectionLost, "Connection lost", body, now, &mut out);
        }
        let due: Vec<NoticeKind> = self
            .windows
            .iter()
            .filter(|(_, w)| w.suppressed > 0 && elapsed(w.last_sent, now) >= self.policy.min_interval)
            .map(|(kind, _)| *kind)
            .collect();
        for kind in due {
            let window = self.windows.get_mut(&kind).expect("listed above");
            let body = format!(
                "{} more \"{}\" notice(s) since {} were held back so they would not flood you; see the dashboard's activity log.",
                window.suppressed,
                kind_label(kind),
                humantime::format_rfc3339_seconds(window.last_sent)
            );
            window.suppressed = 0;
            window.last_sent = now;
            out.push(notice(kind, &format!("{} (summary)", kind_label(kind)), body, now));
        }
        out
    }

    fn status(&mut self, status: &StatusSnapshot, now: SystemTime, out: &mut Vec<Notice>) {
        let down = !status.connected && !status.paused && status.state != LinkState::KeyRejected;
        if down {
            if self.outage_since.is_none() {
                let since = status
                    .disconnected_since
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .filter(|t| *t <= now)
                    .unwrap_or(now);
                self.outage_since = Some(since);
            }
        } else {
            if status.connected && self.outage_delivered && self.policy.notify_restored {
                let since = self.outage_since.unwrap_or(now);
                let body = format!(
                    "Mini Connector is connected to the cloud again after {} minutes.",
                    elapsed(since, now).as_secs() / 60
                );
                out.push(notice(NoticeKind::ConnectionLost, "Connection restored", body, now));
            }
            self.outage_since = None;
            self.outage_handled = false;
            self.outage_delivered = false;
        }
        if status.state == LinkState::KeyRejected && self.last_state != Some(LinkState::KeyRejected) {
            let body = "The cloud refused this connector's API key (revoked or replaced). Mini Connector stays disconnected until a new key is entered (`mini-connector key rotate`).".to_owned();
            self.emit(NoticeKind::KeyRevoked, "API key revoked", body, now, out);
        }
        self.last_state = Some(status.state);
        if status.queue.warning && !self.last_queue_warning {
            let body = format!(
                "The offline queue uses {} MB of its {} MB cap. Free disk space or raise offlineQueueMaxMB.",
                status.queue.used_bytes >> 20,
                status.queue.cap_bytes >> 20
            );
            self.emit(NoticeKind::QueueDiskWarning, "Offline queue almost full", body, now, out);
        }
        self.last_queue_warning = status.queue.warning;
        let current: BTreeSet<String> = status.schema_changes.iter().cloned().collect();
        let new: Vec<&String> = current.difference(&self.schema_changes).collect();
        if !new.is_empty() {
            let names = new.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            let body = format!(
                "The schema of {names} changed since it was last approved. Review and approve it in the dashboard's Schema Browser (or `mini-connector schema diff`)."
            );
            self.emit(NoticeKind::SchemaChange, "Schema change detected", body, now, out);
        }
        self.schema_changes = current;
    }

    /// Emits `kind` unless its window is open; returns whether it went out.
    fn emit(
        &mut self,
        kind: NoticeKind,
        title: &str,
        body: String,
        now: SystemTime,
        out: &mut Vec<Notice>,
    ) -> bool {
        match self.windows.get_mut(&kind) {
            Some(w) if elapsed(w.last_sent, now) < self.policy.min_interval => {
                w.suppressed += 1;
                false
            }
            Some(w) => {
                let mut body = body;
                if w.suppressed > 0 {
                    body.push_str(&format!(
                        " ({} similar notice(s) were held back before this one.)",
                        w.suppressed
                    ));
                }
                w.suppressed = 0;
                w.last_sent = now;
                out.push(notice(kind, title, body, now));
                true
            }
            None => {
                self.windows.insert(kind, Window { last_sent: now, suppressed: 0 });
                out.push(notice(kind, title, body, now));
                true
            }
        }
    }
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

fn notice(kind: NoticeKind, title: &str, body: String, now: SystemTime) -> Notice {
    Notice { kind, title: title.to_owned(), body, at: humantime::format_rfc3339_seconds(now).to_string() }
}

/// The event's name in words (mail subjects, summaries).
pub fn kind_label(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::ConnectionLost => "Connection lost",
        NoticeKind::CommandFailed => "Command failed",
        NoticeKind::SchemaChange => "Schema change",
        NoticeKind::KeyRevoked => "API key revoked",
        NoticeKind::NewVersion => "New version available",
        NoticeKind::QueueDiskWarning => "Queue disk warning",
    }
}
