//! The Activity Log: entries kept by command id (a later event for the same command updates
//! it), newest first, filtered by date, status and workflow, formatted as table rows.

use protocol::control::{ActivityEntry, Outcome};

use super::format;

/// How many entries the window keeps.
pub const MAX_ENTRIES: usize = 1000;

/// The status filter's choices, in the order the menu lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    /// Everything.
    #[default]
    All,
    /// Still running.
    Running,
    /// Answered (inline or chunked).
    Ok,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl StatusFilter {
    /// Menu order.
    pub const ALL: [Self; 5] = [Self::All, Self::Running, Self::Ok, Self::Failed, Self::Cancelled];

    /// Menu label.
    pub fn label(self) -> &'static str {
        match self {
            Self::All => "All statuses",
            Self::Running => "Running",
            Self::Ok => "OK",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }

    fn matches(self, outcome: &Outcome) -> bool {
        match self {
            Self::All => true,
            Self::Running => matches!(outcome, Outcome::Running),
            Self::Ok => matches!(outcome, Outcome::Inline | Outcome::Chunked),
            Self::Failed => matches!(outcome, Outcome::Failed { .. }),
            Self::Cancelled => matches!(outcome, Outcome::Cancelled),
        }
    }
}

/// The filter row above the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// `YYYY-MM-DD`, or empty for any date.
    pub date: String,
    /// Status.
    pub status: StatusFilter,
    /// Part of the workflow name (case-insensitive), or empty.
    pub workflow: String,
}

impl ActivityFilter {
    /// Whether the date field holds something usable (empty or a `YYYY-MM-DD` date); the
    /// field turns red otherwise.
    pub fn date_valid(&self) -> bool {
        let d = self.date.trim();
        d.is_empty() || (d.len() == 10 && format::date_of(d) == Some(d))
    }

    /// Whether an entry passes.
    pub fn matches(&self, e: &ActivityEntry) -> bool {
        let date = self.date.trim();
        if !date.is_empty() && self.date_valid() && format::date_of(&e.received_at) != Some(date) {
            return false;
        }
        if !self.status.matches(&e.outcome) {
            return false;
        }
        let wf = self.workflow.trim().to_lowercase();
        wf.is_empty() || e.workflow.as_deref().is_some_and(|w| w.to_lowercase().contains(&wf))
    }
}

/// The feed: newest first, one entry per command.
#[derive(Debug, Clone, Default)]
pub struct ActivityLog {
    entries: Vec<ActivityEntry>,
}

impl ActivityLog {
    /// Replaces everything with a fetched list (newest first).
    pub fn replace(&mut self, mut entries: Vec<ActivityEntry>) {
        entries.truncate(MAX_ENTRIES);
        self.entries = entries;
    }

    /// A received or finished command: updates the entry with the same id in place, or adds it
    /// on top.
    pub fn apply(&mut self, entry: ActivityEntry) {
        if let Some(old) = self.entries.iter_mut().find(|e| e.command_id == entry.command_id) {
            *old = entry;
        } else {
            self.entries.insert(0, entry);
            self.entries.truncate(MAX_ENTRIES);
        }
    }

    /// All entries, newest first.
    pub fn entries(&self) -> &[ActivityEntry] {
        &self.entries
    }

    /// Entries passing a filter, newest first.
    pub fn filtered<'a>(
        &'a self,
        filter: &'a ActivityFilter,
    ) -> impl Iterator<Item = &'a ActivityEntry> + 'a {
        self.entries.iter().filter(move |e| filter.matches(e))
    }

    /// The newest entry.
    pub fn last(&self) -> Option<&ActivityEntry> {
        self.entries.first()
    }
}

/// Column titles of the activity table.
pub const COLUMNS: [&str; 8] =
    ["Time", "Command", "Connection", "Workflow", "Status", "Rows", "Duration", "Bytes"];

/// Which columns hold numbers (right-aligned, tabular face).
pub const NUMERIC: [bool; 8] = [false, false, false, false, false, true, true, true];

/// How an outcome reads in the Status column.
pub fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Running => "running".to_owned(),
        Outcome::Inline => "ok".to_owned(),
        Outcome::Chunked => "ok (uploaded)".to_owned(),
        Outcome::Failed { code } => format!("failed: {code}"),
        Outcome::Cancelled => "cancelled".to_owned(),
    }
}

/// One table row (matches [`COLUMNS`]).
pub fn row(e: &ActivityEntry) -> Vec<String> {
    let dash = || "–".to_owned();
    vec![
        format::time_of_day(&e.received_at),
        format::ellipsize(&e.command_id, 14),
        e.connection.clone().unwrap_or_else(dash),
        e.workflow.clone().unwrap_or_else(dash),
        outcome_text(&e.outcome),
        e.rows.map_or_else(dash, format::thousands),
        e.duration_ms.map_or_else(dash, format::duration_ms),
        e.bytes.map_or_else(dash, format::bytes),
    ]
}

/// The Overview's "last activity" line.
pub fn summary(e: &ActivityEntry) -> String {
    let r = row(e);
    format!("{}  {}  {}  {}  {} rows  {}", r[0], r[1], r[2], r[4], r[5], r[6])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(id: &str, at: &str, workflow: Option<&str>, outcome: Outcome) -> ActivityEntry {
        ActivityEntry {
            command_id: id.into(),
            received_at: at.into(),
            finished_at: None,
            connection: Some("erp".into()),
            workflow: workflow.map(Into::into),
            outcome,
            rows: Some(50_000),
            duration_ms: Some(1200),
            bytes: Some(2_400_000),
        }
    }

    fn sample_log() -> ActivityLog {
        let mut log = ActivityLog::default();
        log.apply(entry("q-1", "2026-12-01T09:00:00Z", Some("Invoices nightly"), Outcome::Inline));
        log.apply(entry(
            "q-2",
            "2026-12-02T12:03:55Z",
            Some("Stock sync"),
            Outcome::Failed { code: "QUERY_TIMEOUT".into() },
        ));
        log.apply(entry("q-3", "2026-12-02T12:04:31Z", None, Outcome::Running));
        log
    }

    #[test]
    fn a_later_event_for_the_same_command_updates_it_in_place() {
        let mut log = sample_log();
        assert_eq!(log.last().unwrap().command_id, "q-3");
        log.apply(entry("q-3", "2026-12-02T12:04:31Z", None, Outcome::Chunked));
        assert_eq!(log.entries().len(), 3);
        assert_eq!(log.last().unwrap().outcome, Outcome::Chunked);
        let ids: Vec<_> = log.entries().iter().map(|e| e.command_id.as_str()).collect();
        assert_eq!(ids, ["q-3", "q-2", "q-1"]);
    }

    #[test]
    fn the_log_keeps_a_bounded_number_of_entries() {
        let mut log = ActivityLog::default();
        for i in 0..MAX_ENTRIES + 5 {
            log.apply(entry(&format!("q-{i}"), "2026-12-02T00:00:00Z", None, Outcome::Inline));
        }
        assert_eq!(log.entries().len(), MAX_ENTRIES);
        assert_eq!(log.last().unwrap().command_id, format!("q-{}", MAX_ENTRIES + 4));
    }

    #[test]
    fn filters_by_date_status_and_workflow() {
        let log = sample_log();
        let ids = |f: &ActivityFilter| log.filtered(f).map(|e| e.command_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&ActivityFilter::default()), ["q-3", "q-2", "q-1"]);
        let by_date = ActivityFilter { date: "2026-12-01".into(), ..Default::default() };
        assert_eq!(ids(&by_date), ["q-1"]);
        let failed = ActivityFilter { status: StatusFilter::Failed, ..Default::default() };
        assert_eq!(ids(&failed), ["q-2"]);
        let ok = ActivityFilter { status: StatusFilter::Ok, ..Default::default() };
        assert_eq!(ids(&ok), ["q-1"]);
        let wf = ActivityFilter { workflow: "stock".into(), ..Default::default() };
        assert_eq!(ids(&wf), ["q-2"]);
        let both = ActivityFilter {
            date: "2026-12-02".into(),
            status: StatusFilter::Running,
            workflow: String::new(),
        };
        assert_eq!(ids(&both), ["q-3"]);
    }

    #[test]
    fn a_half_typed_date_does_not_hide_everything() {
        let log = sample_log();
        let f = ActivityFilter { date: "2026-12".into(), ..Default::default() };
        assert!(!f.date_valid());
        assert_eq!(log.filtered(&f).count(), 3);
    }

    #[test]
    fn rows_format_numbers_and_outcomes() {
        let log = sample_log();
        let r = row(&log.entries()[1]);
        assert_eq!(
            r,
            ["12:03:55", "q-2", "erp", "Stock sync", "failed: QUERY_TIMEOUT", "50,000", "1.2 s", "2.4 MB"]
        );
        assert_eq!(row(&log.entries()[0])[3], "–");
        assert_eq!(summary(&log.entries()[0]), "12:04:31  q-3  erp  running  50,000 rows  1.2 s");
    }
}
