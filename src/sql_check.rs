//! `mini-connector sql check`: runs the read-only gate offline, so an admin (or the cloud team)
//! can see what the agent would do with a query without any database.
//!
//! Exit status: [`exit::ALLOW`] (0) when the query is allowed (or a `--batch` ran to the end),
//! [`exit::REJECT`] (1) when it is rejected, [`exit::USAGE`] (2) for a usage or I/O error.
//! The check uses an empty privacy policy: it answers "is this read-only", not "may this cloud
//! see these tables".

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Subcommand};
use gate::{Dialect, Policy, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exit codes of `sql check`.
pub mod exit {
    /// The query is allowed; or `--batch` processed its whole input.
    pub const ALLOW: u8 = 0;
    /// The query is rejected.
    pub const REJECT: u8 = 1;
    /// Bad usage, unreadable input or unwritable output.
    pub const USAGE: u8 = 2;
}

/// What a text is checked as: SQL in a dialect, a MongoDB query document, or Tally's SQL
/// subset (`--dialect mongodb|tally`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// SQL in one dialect.
    Sql(Dialect),
    /// A MongoDB find or aggregate document (JSON).
    Mongo,
    /// Tally's SQL subset, translated into a collection export.
    Tally,
}

impl FromStr for Language {
    type Err = gate::UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mongodb" | "mongo" => Ok(Language::Mongo),
            "tally" => Ok(Language::Tally),
            _ => s.parse().map(Language::Sql),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Language::Sql(d) => d.fmt(f),
            Language::Mongo => f.write_str("mongodb"),
            Language::Tally => f.write_str("tally"),
        }
    }
}

/// The gate's verdict on `text` as `language` (no parameters, default limits).
fn judge(text: &str, language: Language, policy: &Policy) -> Result<gate::Checked, Rejection> {
    let target = match language {
        Language::Sql(dialect) => return gate::check(text, dialect, policy),
        Language::Mongo => gate::Target::MONGO,
        Language::Tally => gate::Target::TALLY,
    };
    gate::check_with(text, 0, target, policy, &gate::Limits::default())
}

/// `mini-connector sql ...`
#[derive(Debug, Subcommand)]
pub enum SqlCmd {
    /// Check queries against the read-only gate, offline.
    Check(SqlCheckArgs),
}

/// Runs a `mini-connector sql` subcommand.
pub fn run_sql(cmd: &SqlCmd) -> ExitCode {
    match cmd {
        SqlCmd::Check(args) => run(args),
    }
}

/// Arguments of `mini-connector sql check`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Prints `allow`, or `reject CODE: reason`. Exit status: 0 allow, 1 reject, 2 usage or I/O error.

Examples:
  mini-connector sql check --dialect postgres \"SELECT id, total FROM orders WHERE total > 100\"
  echo \"SELECT SLEEP(10)\" | mini-connector sql check --dialect mysql --json
  mini-connector sql check --dialect mongodb '{\"collection\": \"orders\", \"pipeline\": [{\"$out\": \"x\"}]}'
  mini-connector sql check --dialect tally \"SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors'\"
  mini-connector sql check --batch < queries.jsonl > verdicts.jsonl

--batch reads JSON lines {\"id\": any, \"dialect\": \"postgres\", \"sql\": \"...\"} (dialect
optional, default --dialect) and writes, in order, one line per input line:
{\"id\":..,\"verdict\":\"allow\"|\"reject\"|\"error\",\"code\":..,\"reason\":..}
A bad line gives verdict \"error\" and the batch goes on.")]
pub struct SqlCheckArgs {
    /// Dialect of the target database: postgres, mysql, sqlite, mssql, oracle, hana, generic
    /// (aliases: postgresql, mariadb, sqlserver); `mongodb` for a MongoDB query document,
    /// `tally` for Tally's SQL subset.
    #[arg(long, default_value_t = Language::Sql(Dialect::Generic))]
    pub dialect: Language,
    /// Print one JSON object {"verdict","code","reason"} instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read JSON lines from stdin and write one JSON verdict line per input line.
    #[arg(long, conflicts_with_all = ["sql", "json"])]
    pub batch: bool,
    /// The query text; read from stdin when absent.
    pub sql: Option<String>,
}

/// One verdict as printed by `--json` and `--batch`.
#[derive(Debug, Serialize)]
struct Verdict<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    verdict: &'static str,
    code: Option<&'static str>,
    reason: Option<String>,
}

impl<'a> Verdict<'a> {
    fn of(id: Option<&'a Value>, result: &Result<gate::Checked, Rejection>) -> Self {
        match result {
            Ok(_) => Verdict { id, verdict: "allow", code: None, reason: None },
            Err(r) => {
                Verdict { id, verdict: "reject", code: Some(r.code.as_str()), reason: Some(r.reason.clone()) }
            }
        }
    }

    fn error(id: Option<&'a Value>, reason: String) -> Self {
        Verdict { id, verdict: "error", code: None, reason: Some(reason) }
    }
}

/// Runs `sql check` and returns its exit status.
pub fn run(args: &SqlCheckArgs) -> ExitCode {
    if args.batch {
        return match run_batch(args.dialect, io::stdin().lock(), io::stdout().lock()) {
            Ok(()) => ExitCode::from(exit::ALLOW),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit::USAGE)
            }
        };
    }
    let sql = match &args.sql {
        Some(sql) => sql.clone(),
        None => {
            let mut stdin = io::stdin().lock();
            if stdin.is_terminal() {
                return usage(args.json, "give the query as an argument or on stdin (see --help)");
            }
            let mut text = String::new();
            if let Err(e) = stdin.read_to_string(&mut text) {
                return usage(args.json, &format!("cannot read the query from stdin: {e}"));
            }
            text
        }
    };
    let result = judge(&sql, args.dialect, &Policy::default());
    // `--json`: the verdict in the envelope (a rejection is a verdict, not a failure: exit 1).
    let line = if args.json {
        crate::cli::output::ok_line(&Verdict::of(None, &result))
    } else {
        match &result {
            Ok(_) => "allow".to_owned(),
            // The reason may quote the SQL: escaped.
            Err(r) => format!("reject {}: {}", r.code, crate::cli::output::escape(&r.reason)),
        }
    };
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        eprintln!("error: cannot write the verdict: {e}");
        return ExitCode::from(exit::USAGE);
    }
    ExitCode::from(if result.is_ok() { exit::ALLOW } else { exit::REJECT })
}

/// A usage error: the envelope (`USAGE`) with `--json`, else `error: …` on stderr; exit 2.
fn usage(json: bool, message: &str) -> ExitCode {
    if json {
        crate::cli::output::print_error("USAGE", message);
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(exit::USAGE)
}

/// One input line of `--batch`.
#[derive(Debug, Deserialize)]
struct BatchLine {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    dialect: Option<String>,
    sql: String,
}

/// Longest input line read whole; longer lines are skipped with an error verdict.
const MAX_LINE_BYTES: u64 = (gate::MAX_SQL_BYTES as u64) * 2 + 64 * 1024;

/// Streams `input` (JSON lines) to `output` (one JSON verdict line per non-blank input line).
/// Output is flushed whenever no further input is buffered, so a caller can feed one line and
/// wait for its answer. Fails only on an I/O error.
pub fn run_batch(default_dialect: Language, input: impl Read, output: impl Write) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut writer = BufWriter::with_capacity(64 * 1024, output);
    let mut buf = Vec::with_capacity(4096);
    let policy = Policy::default();
    loop {
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
        buf.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let too_long = buf.last() != Some(&b'\n') && n as u64 == MAX_LINE_BYTES;
        if too_long {
            skip_line(&mut reader)?;
        }
        let Some(json) = answer(&buf, too_long, default_dialect, &policy) else { continue };
        writer.write_all(json.as_bytes())?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}

/// The verdict line for one input line; `None` for a blank line.
fn answer(raw: &[u8], too_long: bool, default_dialect: Language, policy: &Policy) -> Option<String> {
    let line = match std::str::from_utf8(raw) {
        Ok(line) => line.trim(),
        Err(_) if !too_long => return Some(error_line(None, "input line is not valid UTF-8".into())),
        // A line cut at the limit may end inside a character.
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or_default().trim(),
    };
    if line.is_empty() {
        return None;
    }
    if too_long {
        return Some(error_line(None, format!("input line longer than {MAX_LINE_BYTES} bytes")));
    }
    let item: BatchLine = match serde_json::from_str(line) {
        Ok(item) => item,
        Err(e) => {
            // Echo the id when the line is JSON with an id, even if the rest is wrong.
            let id = serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("id").cloned());
            return Some(error_line(id.as_ref(), format!("bad input line: {e}")));
        }
    };
    let dialect = match item.dialect.as_deref().map(str::parse::<Language>).transpose() {
        Ok(d) => d.unwrap_or(default_dialect),
        Err(e) => return Some(error_line(Some(&item.id), e.to_string())),
    };
    let result = judge(&item.sql, dialect, policy);
    Some(to_json(&Verdict::of(Some(&item.id), &result)))
}

fn error_line(id: Option<&Value>, reason: String) -> String {
    to_json(&Verdict::error(Some(id.unwrap_or(&Value::Null)), reason))
}

fn to_json(verdict: &Verdict<'_>) -> String {
    // Serializing these plain fields cannot fail; keep a valid line if it ever did.
    serde_json::to_string(verdict).unwrap_or_else(|_| {
        r#"{"id":null,"verdict":"error","code":null,"reason":"internal error"}"#.to_owned()
    })
}

/// Discards the rest of an over-long line.
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        run_batch(Language::Sql(Dialect::Generic), input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn batch_answers_every_line_in_order_and_survives_bad_lines() {
        let out = batch(concat!(
            "{\"id\": 1, \"dialect\": \"postgres\", \"sql\": \"SELECT 1\"}\n",
            "{\"id\": \"two\", \"dialect\": \"mysql\", \"sql\": \"SELECT SLEEP(1)\"}\n",
            "\n",
            "not json\n",
            "{\"id\": 4, \"dialect\": \"db2\", \"sql\": \"SELECT 1\"}\n",
            "{\"id\": 5}\n",
            "{\"sql\": \"DELETE FROM t\"}",
        ));
        assert_eq!(out.len(), 6);
        assert_eq!(out[0], serde_json::json!({"id": 1, "verdict": "allow", "code": null, "reason": null}));
        assert_eq!(out[1]["id"], "two");
        assert_eq!(out[1]["verdict"], "reject");
        assert_eq!(out[1]["code"], "WRITE_OPERATION_REJECTED");
        assert_eq!(out[2]["verdict"], "error");
        assert_eq!(out[2]["id"], Value::Null);
        assert_eq!(out[3]["verdict"], "error");
        assert_eq!(out[3]["id"], 4);
        assert!(out[3]["reason"].as_str().unwrap().contains("db2"));
        assert_eq!(out[4]["verdict"], "error");
        assert_eq!(out[4]["id"], 5);
        assert_eq!(out[5]["code"], "WRITE_KEYWORD_DETECTED");
        assert_eq!(out[5]["id"], Value::Null);
    }

    #[test]
    fn batch_reports_invalid_utf8_and_over_long_lines() {
        let mut input = b"\xff\xfe\n".to_vec();
        input.extend_from_slice(b"{\"id\":1,\"sql\":\"SELECT 1\"}\n");
        let mut out = Vec::new();
        run_batch(Language::Sql(Dialect::Generic), &input[..], &mut out).unwrap();
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["verdict"], "error");
        assert_eq!(lines[1]["verdict"], "allow");
    }
}
