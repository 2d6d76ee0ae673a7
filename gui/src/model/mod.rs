//! The view logic, free of widgets: what every section shows for a given status, event
//! sequence and reply. The widgets in `ui` only draw what these functions return, so all of it
//! is tested without a display.

pub mod activity;
pub mod bundle;
pub mod doctor;
pub mod format;
pub mod forms;
pub mod latency;
pub mod schema;
pub mod status;
pub mod wizard;

use std::collections::VecDeque;

use protocol::control::{AgentEvent, Notice, NoticeKind, StatusSnapshot};

use self::activity::ActivityLog;
use self::latency::LatencyWindow;
use self::status::StatusView;

/// The six dashboard sections (spec §3.4.1), in sidebar order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// Status card, last activity, uptime, bytes today, pending commands.
    Overview,
    /// The live command feed with filters.
    Activity,
    /// Configured databases: health, add/edit/test/remove.
    Connections,
    /// Tables and columns, private marks, samples, diff, approve.
    Schema,
    /// Name, key, cloud URL, proxy, CA, log level, auto-start, PIN.
    Settings,
    /// Link health, latency graph, pools, queue, bytes, errors.
    Diagnostics,
}

impl Section {
    /// Sidebar order.
    pub const ALL: [Self; 6] =
        [Self::Overview, Self::Activity, Self::Connections, Self::Schema, Self::Settings, Self::Diagnostics];

    /// The sidebar label and section title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Activity => "Activity Log",
            Self::Connections => "Connections",
            Self::Schema => "Schema Browser",
            Self::Settings => "Settings",
            Self::Diagnostics => "Diagnostics",
        }
    }

    /// Index in [`Self::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// Geometry the window and the screenshot harness share (pixels from the window's top-left).
pub mod layout {
    /// Default window size.
    pub const WINDOW: (i32, i32) = (1100, 720);
    /// Smallest window size.
    pub const MIN_WINDOW: (i32, i32) = (900, 600);
    /// Sidebar width.
    pub const SIDEBAR_W: i32 = 180;
    /// The status dot in the sidebar header: centre and radius.
    pub const STATUS_DOT: (i32, i32, i32) = (24, 30, 7);
    /// First sidebar entry's top, and each entry's height.
    pub const NAV_TOP: i32 = 72;
    /// Height of a sidebar entry.
    pub const NAV_H: i32 = 40;
    /// The Pause/Resume button in the sidebar: its distance from the window's bottom.
    pub const PAUSE_FROM_BOTTOM: i32 = 56;
    /// Wizard window size.
    pub const WIZARD: (i32, i32) = (640, 480);

    /// The centre of sidebar entry `i`.
    pub fn nav_center(i: usize) -> (i32, i32) {
        (SIDEBAR_W / 2, NAV_TOP + NAV_H * i as i32 + NAV_H / 2)
    }
}

/// What changed after an event, so the window redraws only that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// The status (dot, title, Overview, Diagnostics).
    pub status: bool,
    /// The activity feed.
    pub activity: bool,
    /// The error log.
    pub log: bool,
    /// The banner.
    pub notice: bool,
    /// The agent stopped.
    pub stopped: bool,
}

/// A line of the Diagnostics error log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `warn` or `error`.
    pub level: String,
    /// The message.
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// How many log lines Diagnostics keeps (spec §8.1: the last 100 errors).
pub const MAX_LOG_LINES: usize = 100;

/// Everything the dashboard shows that comes from the agent's event stream.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The last snapshot.
    pub status: Option<StatusSnapshot>,
    /// The feed.
    pub activity: ActivityLog,
    /// The latency graph.
    pub latency: LatencyWindow,
    /// Warn/error lines, newest first.
    pub log: VecDeque<LogLine>,
    /// The banner's notice (the newest one not dismissed).
    pub banner: Option<Notice>,
    /// The agent stopped, and why.
    pub stopped: Option<String>,
}

impl Live {
    /// Applies one event; `now_secs` is a monotonic clock for the latency graph.
    pub fn apply(&mut self, event: AgentEvent, now_secs: f64) -> Changed {
        let mut changed = Changed::default();
        match event {
            AgentEvent::Status(s) => {
                if let Some(ms) = s.latency_ms
                    && s.connected
                {
                    self.latency.push(now_secs, ms);
                }
                self.status = Some(*s);
                self.stopped = None;
                changed.status = true;
            }
            AgentEvent::Activity(e) => {
                self.activity.apply(e);
                changed.activity = true;
            }
            AgentEvent::Log { level, message, at } => {
                self.log.push_front(LogLine { level, message, at });
                self.log.truncate(MAX_LOG_LINES);
                changed.log = true;
            }
            AgentEvent::Notice(n) => {
                self.banner = Some(n);
                changed.notice = true;
            }
            AgentEvent::Stopped { reason } => {
                self.stopped = Some(reason);
                changed.stopped = true;
                changed.status = true;
            }
        }
        changed
    }

    /// The status indicator now.
    pub fn view(&self) -> StatusView {
        match (&self.stopped, &self.status) {
            (Some(reason), _) => StatusView::stopped(reason),
            (None, Some(s)) => StatusView::of(s),
            (None, None) => StatusView::starting(),
        }
    }

    /// The banner's text and tint (`0xRRGGBB`), when there is one.
    pub fn banner_text(&self) -> Option<(String, u32)> {
        let n = self.banner.as_ref()?;
        let tint = match n.kind {
            NoticeKind::NewVersion => 0xE8F0FC,
            NoticeKind::SchemaChange | NoticeKind::QueueDiskWarning => 0xFFF4D6,
            NoticeKind::ConnectionLost | NoticeKind::CommandFailed | NoticeKind::KeyRevoked => 0xFBE4E4,
        };
        let body = n.body.lines().next().unwrap_or("");
        Some((if body.is_empty() { n.title.clone() } else { format!("{} — {body}", n.title) }, tint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::{Indicator, Outcome};

    fn status(indicator: Indicator) -> AgentEvent {
        AgentEvent::Status(Box::new(status::tests::snapshot(indicator)))
    }

    #[test]
    fn an_event_sequence_drives_the_title_red_green_grey() {
        let mut live = Live::default();
        assert_eq!(live.view().title, "Mini Connector — Starting");
        let mut titles = Vec::new();
        for (i, ind) in
            [Indicator::Disconnected, Indicator::Reconnecting, Indicator::Connected, Indicator::Paused]
                .into_iter()
                .enumerate()
        {
            let c = live.apply(status(ind), i as f64);
            assert!(c.status && !c.activity);
            titles.push((live.view().title, live.view().rgb));
        }
        assert_eq!(
            titles,
            [
                ("Mini Connector — Disconnected".to_owned(), 0xD64545),
                ("Mini Connector — Reconnecting".to_owned(), 0x2F6FDB),
                ("Mini Connector — Connected".to_owned(), 0x2E9E5B),
                ("Mini Connector — Paused".to_owned(), 0x8A8F98),
            ]
        );
        let c = live.apply(AgentEvent::Stopped { reason: "stopped by the operator".into() }, 9.0);
        assert!(c.stopped);
        assert_eq!(live.view().label, "Stopped");
    }

    #[test]
    fn latency_is_graphed_only_while_connected() {
        let mut live = Live::default();
        live.apply(status(Indicator::Disconnected), 0.0);
        live.apply(status(Indicator::Connected), 1.0);
        live.apply(status(Indicator::Connected), 2.0);
        assert_eq!(live.latency.values(), [0.42, 0.42]);
    }

    #[test]
    fn activity_log_lines_and_banner() {
        let mut live = Live::default();
        let e = activity::tests::entry("q-1", "2026-12-02T12:00:00Z", None, Outcome::Running);
        assert!(live.apply(AgentEvent::Activity(e), 0.0).activity);
        for i in 0..(MAX_LOG_LINES + 3) {
            live.apply(
                AgentEvent::Log { level: "warn".into(), message: format!("m{i}"), at: String::new() },
                0.0,
            );
        }
        assert_eq!(live.log.len(), MAX_LOG_LINES);
        assert_eq!(live.log[0].message, format!("m{}", MAX_LOG_LINES + 2));
        assert_eq!(live.banner_text(), None);
        live.apply(
            AgentEvent::Notice(Notice {
                kind: NoticeKind::NewVersion,
                title: "Mini Connector 0.2.0 is available".into(),
                body: "Restart to update.\nDetails".into(),
                at: String::new(),
            }),
            0.0,
        );
        assert_eq!(
            live.banner_text(),
            Some(("Mini Connector 0.2.0 is available — Restart to update.".into(), 0xE8F0FC))
        );
    }

    #[test]
    fn sections_and_layout() {
        let titles: Vec<_> = Section::ALL.iter().map(|s| s.title()).collect();
        assert_eq!(
            titles,
            ["Overview", "Activity Log", "Connections", "Schema Browser", "Settings", "Diagnostics"]
        );
        assert_eq!(Section::Diagnostics.index(), 5);
        assert_eq!(layout::nav_center(0), (90, 92));
    }
}
