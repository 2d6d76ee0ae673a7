//! `connector-gateway`'s output contract (docs/CLI.md), against the real binary and a running
//! gateway with a fake agent:
//!
//! - every `--json` answer is one line in the envelope, errors included, its shape pinned by
//!   `tests/golden/gateway-*.json` (the normaliser is the agent tests' `golden/normalise.rs`);
//! - exit codes: 0 ok, 1 runtime, 2 usage, 3 not found / not running;
//! - `query` and `schema` text never print raw control characters from the database, and
//!   tables line up with CJK, emoji and combining marks;
//! - `serve` writes no colour codes into a pipe and no Rust debug values.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use protocol::{Outbound, SchemaDiscovery, now_rfc3339};
use serde_json::json;

use crate::common::{FakeAgent, TestGateway, col, start_with, watchdog};

#[path = "../../tests/golden/normalise.rs"]
mod golden;

/// `MC_GATEWAY_BIN` runs these tests against another build (e.g. main's, where they fail).
fn bin() -> std::ffi::OsString {
    std::env::var_os("MC_GATEWAY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_connector-gateway").into())
}

fn with_admin() -> Arc<TestGateway> {
    Arc::new(start_with(|c| c.admin_listen = Some("127.0.0.1:0".parse().unwrap())))
}

fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin()).arg("--data-dir").arg(dir).args(args).env("RUST_LOG", "off").output().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
/// The agent broadcasts `schema`; returns once the gateway has it (the heartbeat after it arrived).
fn broadcast(gw: &TestGateway, agent: &mut FakeAgent, schema: protocol::DatabaseSchema) {
    agent
        .send(&Outbound::SchemaDiscovery(SchemaDiscovery { timestamp: now_rfc3339(), schema: vec![schema] }));
    agent.heartbeat(0);
    gw.wait_event(|e| {
        matches!(e, gateway::GatewayEvent::Frame { frame: Outbound::Heartbeat(_), .. }).then_some(())
    });
}

fn golden(gw: &TestGateway, name: &str, out: &std::process::Output) {
    golden::check(name, &stdout(out), &gw.dir);
}

/// The display column where each line's `n`-th two-space-separated cell starts.
fn starts(lines: &[&str], n: usize) -> Vec<usize> {
    lines
        .iter()
        .map(|l| {
            let cells: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
            protocol::term::width(&l[..l.rfind(cells[n]).unwrap()])
        })
        .collect()
}

fn no_raw_controls(text: &str) {
    let raw: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n' || *c == '\u{202e}').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} printed:\n{text}");
}

#[test]
fn every_json_answer_is_an_envelope_pinned_by_a_golden_file() {
    let _w = watchdog("cli_json_golden");
    let gw = with_admin();

    let out = cli(&gw.dir, &["keys", "create", "--tenant", "acme", "--name", "Warehouse", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&gw, "gateway-keys-create", &out);
    let key = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["data"]["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    golden(&gw, "gateway-keys-list", &cli(&gw.dir, &["keys", "list", "--json"]));

    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let schema = serde_json::from_value(json!({"connection": "erp", "dbType": "sqlite", "tables": [
        {"name": "t", "kind": "table", "columns": [{"name": "id", "dataType": "INTEGER", "wireType": "integer", "nullable": false}], "primaryKey": ["id"], "foreignKeys": []}
    ]}))
    .unwrap();
    broadcast(&gw, &mut agent, schema);
    golden(&gw, "gateway-connectors", &cli(&gw.dir, &["connectors", "--json"]));
    golden(&gw, "gateway-schema", &cli(&gw.dir, &["schema", "--connector", "Warehouse", "--json"]));

    let gw2 = gw.clone();
    let runner = thread::spawn(move || {
        cli(&gw2.dir, &["query", "--connector", "Warehouse", "--json", "SELECT id FROM t"])
    });
    let cmd = agent.expect_command();
    agent.answer_inline(&cmd, vec![col("id", "integer")], vec![vec![json!(1)], vec![json!(2)]]);
    agent.expect_ack(&cmd.command_id);
    let out = runner.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&gw, "gateway-query", &out);

    // Errors: one line on stdout, nothing else; exit codes by kind.
    let out = cli(&gw.dir, &["query", "--connector", "Nobody", "--json", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(3), "unknown connector: not found");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&gw, "gateway-error-unknown-connector", &out);
    let out = cli(&gw.dir, &["schema", "--connector", "Nobody", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let out = cli(&gw.dir, &["keys", "create", "--tenant", "NOT VALID", "--name", "x", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    golden(&gw, "gateway-error-invalid", &out);
    let out = cli(&gw.dir, &["connectors", "--json", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    golden(&gw, "gateway-error-usage", &out);

    let out = cli(&gw.dir, &["decommission", "Warehouse", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&gw, "gateway-decommission", &out);
    let out = cli(&gw.dir, &["keys", "revoke", "Warehouse", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    golden(&gw, "gateway-keys-revoke", &out);

    // No gateway running: exit 3, NOT_RUNNING.
    let empty = crate::common::temp_dir();
    let out = cli(&empty, &["connectors", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "NOT_RUNNING");
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn query_and_schema_text_escape_database_text_and_align_wide_cells() {
    let _w = watchdog("cli_text_hostile");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let schema = serde_json::from_value(json!({"connection": "erp\u{1b}[2J", "dbType": "sqlite", "tables": [
        {"name": "evil\u{1b}]0;pwned\u{7}", "kind": "table", "columns": [
            {"name": "a\tb", "dataType": "TEXT", "wireType": "text", "nullable": true},
            {"name": "顧客名", "dataType": "TEXT", "wireType": "text", "nullable": true},
            {"name": "cafe\u{301}", "dataType": "TEXT", "wireType": "text", "nullable": true}
        ], "primaryKey": [], "foreignKeys": []}
    ]}))
    .unwrap();
    broadcast(&gw, &mut agent, schema);

    let out = cli(&gw.dir, &["schema", "--connector", "Warehouse"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    no_raw_controls(&text);
    assert!(text.contains("evil\\x1b]0;pwned\\x07") && text.contains("a\\tb"), "{text}");
    let columns: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).collect();
    let type_starts = starts(&columns, 1);
    assert!(type_starts.iter().all(|s| *s == type_starts[0]), "{type_starts:?}\n{text}");

    let gw2 = gw.clone();
    let runner =
        thread::spawn(move || cli(&gw2.dir, &["query", "--connector", "Warehouse", "SELECT * FROM t"]));
    let cmd = agent.expect_command();
    agent.answer_inline(
        &cmd,
        vec![col("name\u{1b}[1m", "text"), col("n", "integer")],
        vec![
            vec![json!("東京支店"), json!(1)],
            vec![json!("🙂🙂"), json!(2)],
            vec![json!("cafe\u{301}"), json!(3)],
            vec![json!("line\nbreak\ttab"), json!(4)],
            vec![json!("\u{1b}]52;c;cHduZWQ=\u{7}"), json!(5)],
            vec![json!("abc\u{202e}fed"), json!(6)],
        ],
    );
    agent.expect_ack(&cmd.command_id);
    let out = runner.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    no_raw_controls(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 6 + 1, "header, rule, one line per row, count:\n{text}");
    assert!(text.contains("line\\nbreak\\ttab") && text.contains("\\x1b]52;c;cHduZWQ=\\x07"), "{text}");
    let rows = &lines[2..8];
    let n_starts = starts(rows, 1);
    assert!(n_starts.iter().all(|s| *s == n_starts[0]), "{n_starts:?}\n{text}");
}

#[test]
fn serve_writes_no_colour_codes_or_debug_values_into_a_pipe() {
    let _w = watchdog("cli_serve_plain");
    let dir = crate::common::temp_dir();
    let child = Command::new(bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the start line, then stop it.
    let admin = dir.join("admin.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !admin.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    #[cfg(unix)]
    unsafe_free_interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("gateway started"), "{stderr}");
    assert!(!stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'), "colour codes in a pipe:\n{stderr}");
    assert!(!stderr.contains("Some(") && !stderr.contains("None"), "debug values:\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGINT through `kill` (no `unsafe` in the tests).
#[cfg(unix)]
fn unsafe_free_interrupt(pid: u32) {
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
}
