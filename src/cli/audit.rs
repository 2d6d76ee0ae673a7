//! `audit`: the local audit log (spec §7.3) kept in the queue database: every command received
//! and executed, hash-chained. Opened read-only, so it works while the agent runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue::{AuditRecord, AuditReport, Store};
use serde_json::json;

use super::{ConfigArg, Fail, Outcome, absolute, print_json};

/// `audit [--since] [--json] [--verify]`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  mini-connector audit --since 24h
  mini-connector audit --since 2026-01-31T08:00:00Z --json
  mini-connector audit --verify

Query text is shown as its SHA-256 unless the agent keeps full text (auditQueryText).
--verify checks the whole hash chain (not only the records shown): an edited, deleted,
reordered or cut-off record is named.

Exit codes: 0 ok; 1 the audit chain is broken (--verify) or the queue database cannot be
read; 2 bad usage.")]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The queue database (default: the configuration's `queuePath`, else `queue.db` next to
    /// the configuration file).
    #[arg(long, value_name = "FILE", env = "MINI_CONNECTOR_QUEUE")]
    pub queue: Option<PathBuf>,
    /// Only records since an RFC 3339 time (2026-01-31T08:00:00Z) or a duration ago (90m, 24h, 7d).
    #[arg(long, value_name = "TIME|DURATION")]
    pub since: Option<String>,
    /// Print one JSON document: {"queue", "instanceId", "records": [...], "verify"?}.
    #[arg(long)]
    pub json: bool,
    /// Check the hash chain; exit 1 naming the first bad record when it is broken.
    #[arg(long)]
    pub verify: bool,
}

/// `audit`: finds the queue database and runs [`run`].
pub fn audit(args: &AuditArgs) -> Outcome {
    let path = match &args.queue {
        Some(path) => absolute(path),
        // `queuePath` of the configuration (default: `queue.db` next to it).
        None => args.config.load()?.queue_path(),
    };
    run(&path, args)
}

/// Prints the audit records of the queue database at `path` (and the chain check).
pub fn run(path: &Path, args: &AuditArgs) -> Outcome {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    if !path.exists() {
        return Err(Fail::coded(
            crate::exit::FAILURE,
            "IO",
            format!("no queue database at {} (the agent creates it when it starts)", path.display()),
        ));
    }
    let store = Store::open_read_only(path).map_err(|e| {
        Fail::runtime(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
    })?;
    let records = store.audit_records(since).map_err(Fail::runtime)?;
    let report = if args.verify { Some(store.verify_audit().map_err(Fail::runtime)?) } else { None };

    if args.json {
        let mut doc = json!({
            "queue": path.display().to_string(),
            "instanceId": store.instance_id(),
            "records": records,
        });
        if let Some(report) = &report {
            doc["verify"] = serde_json::to_value(report).unwrap_or_default();
        }
        print_json(&doc);
    } else {
        print_table(&records);
        if let Some(report) = report.as_ref().filter(|r| r.ok) {
            println!(
                "audit chain ok: {} records, head at seq {}",
                report.records,
                report.head_seq.unwrap_or(0)
            );
        }
    }
    match report {
        // The verdict is in the printed data (`verify`); exit 1.
        Some(report) if !report.ok => Err(Fail::reported(crate::exit::FAILURE, broken(&report))),
        _ => Ok(()),
    }
}

/// The message for a broken chain, naming the first bad record.
fn broken(report: &AuditReport) -> String {
    let why = report.why.as_deref().unwrap_or("unknown");
    match report.first_bad_seq {
        Some(seq) => format!("audit chain broken at record {seq}: {why}"),
        None => format!("audit chain broken: {why}"),
    }
}

/// `--since`: an RFC 3339 time, or a duration back from now.
fn parse_since(text: &str) -> Result<i64, Fail> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(t) => t,
        Err(_) => match humantime::parse_duration(text) {
            Ok(d) => SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
            Err(_) => {
                return Err(Fail::usage(format!(
                    "--since {text:?}: expected an RFC 3339 time (2026-01-31T08:00:00Z) or a duration (90m, 24h, 7d)"
                )));
            }
        },
    };
    let ms = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn print_table(records: &[AuditRecord]) {
    if records.is_empty() {
        println!("no audit records");
        return;
    }
    let mut table = super::output::Table::new(&[
        "SEQ",
        "TIME",
        "EVENT",
        "COMMAND",
        "CONNECTION",
        "ROWS",
        "MS",
        "OUTCOME",
        "QUERY SHA-256",
    ])
    .right(0)
    .right(5)
    .right(6);
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let num = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for r in records {
        let hash = r.query_hash.as_deref().map_or_else(|| "-".to_owned(), |h| h.chars().take(16).collect());
        table.push(&[
            r.seq.to_string(),
            r.time.clone(),
            r.event.clone(),
            text(&r.command_id),
            text(&r.connection),
            num(r.row_count),
            num(r.duration_ms),
            text(&r.outcome),
            hash,
        ]);
    }
    print!("{table}");
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(parse_since("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        let ago = parse_since("1h").unwrap();
        let now = queue::now_ms();
        assert!((now - 3_600_000 - ago).abs() < 5_000, "{ago} vs {now}");
        let bad = parse_since("yesterday-ish").unwrap_err();
        assert_eq!(bad.code, crate::exit::CONFIG);
    }
}
