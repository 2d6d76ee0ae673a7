//! The Diagnostics section's "Run checks": a `doctor` report ([`DoctorReport`], the same checks
//! as `mini-connector doctor`) as table rows with their verdict colours.

use protocol::control::{DoctorReport, DoctorStep, StepStatus, Verdict as ReportVerdict};

use super::status::{DiagRow, Verdict};

/// A step's name as the table shows it.
pub fn label(name: &str) -> String {
    match name {
        "config" => "Configuration".into(),
        "dns" => "DNS".into(),
        "proxy" => "Proxy".into(),
        "tcp" => "TCP".into(),
        "tls" => "TLS".into(),
        "websocket" => "WebSocket".into(),
        "auth" => "API key".into(),
        "clock" => "Clock".into(),
        other => match other.strip_prefix("database:") {
            Some(db) => format!("Database {db}"),
            None => other.into(),
        },
    }
}

/// The colour a step's verdict gets (skipped steps are plain).
pub fn verdict(status: StepStatus) -> Verdict {
    match status {
        StepStatus::Ok => Verdict::Ok,
        StepStatus::Warn => Verdict::Warn,
        StepStatus::Fail => Verdict::Bad,
        StepStatus::Skipped => Verdict::Info,
    }
}

fn row(step: &DoctorStep) -> DiagRow {
    // The table has one line per row: the detail's lines joined, then the hint.
    let mut value = step.detail.lines().map(str::trim).collect::<Vec<_>>().join("; ");
    if let Some(hint) = &step.hint {
        value.push_str(" — ");
        value.push_str(hint.lines().next().unwrap_or_default().trim());
    }
    DiagRow { label: label(&step.name), value, verdict: verdict(step.status) }
}

/// The rows for a report: a summary row (`at`: when it ran), then one per step.
pub fn rows(report: &DoctorReport, at: &str) -> Vec<DiagRow> {
    let count = |status| report.steps.iter().filter(|s| s.status == status).count();
    let (summary, verdict) = match report.verdict {
        ReportVerdict::Ok => (format!("all {} checks passed ({at})", report.steps.len()), Verdict::Ok),
        ReportVerdict::Warn => {
            (format!("{} warning(s), the agent can work ({at})", count(StepStatus::Warn)), Verdict::Warn)
        }
        ReportVerdict::Fail => (
            format!(
                "{} failed, {} warning(s), {} skipped ({at})",
                count(StepStatus::Fail),
                count(StepStatus::Warn),
                count(StepStatus::Skipped)
            ),
            Verdict::Bad,
        ),
    };
    let mut rows = vec![DiagRow { label: "Checks".into(), value: summary, verdict }];
    rows.extend(report.steps.iter().map(row));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, status: StepStatus, detail: &str, hint: Option<&str>) -> DoctorStep {
        DoctorStep::new(name, status, detail, hint)
    }

    #[test]
    fn a_report_becomes_a_summary_and_one_coloured_row_per_step() {
        let report = DoctorReport::new(vec![
            step("config", StepStatus::Ok, "config.json loads", None),
            step(
                "tls",
                StepStatus::Fail,
                "TLS inspection suspected: issued by CN=Corp CA\ncertificate 0: subject CN=x",
                Some("set caCertPath to its CA"),
            ),
            step("websocket", StepStatus::Skipped, "skipped: the TLS handshake failed", None),
            step(
                "database:erp",
                StepStatus::Warn,
                "connected\nuser can write",
                Some("a SELECT-only user\nSQL"),
            ),
        ]);
        let rows = rows(&report, "10:42:00");
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].label, "Checks");
        assert_eq!(rows[0].verdict, Verdict::Bad);
        assert_eq!(rows[0].value, "1 failed, 1 warning(s), 1 skipped (10:42:00)");
        assert_eq!((rows[1].label.as_str(), rows[1].verdict), ("Configuration", Verdict::Ok));
        assert_eq!(rows[2].label, "TLS");
        assert_eq!(rows[2].verdict, Verdict::Bad);
        assert_eq!(
            rows[2].value,
            "TLS inspection suspected: issued by CN=Corp CA; certificate 0: subject CN=x — set caCertPath to its CA"
        );
        assert_eq!((rows[3].label.as_str(), rows[3].verdict), ("WebSocket", Verdict::Info));
        assert_eq!(rows[4].label, "Database erp");
        assert_eq!(rows[4].verdict, Verdict::Warn);
        assert!(rows[4].value.ends_with("— a SELECT-only user"), "{}", rows[4].value);
    }

    #[test]
    fn a_clean_report_says_so() {
        let report = DoctorReport::new(vec![step("auth", StepStatus::Ok, "key accepted", None)]);
        let rows = rows(&report, "now");
        assert_eq!(rows[0].verdict, Verdict::Ok);
        assert_eq!(rows[0].value, "all 1 checks passed (now)");
        assert_eq!(rows[1].label, "API key");
    }
}
