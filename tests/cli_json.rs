//! `mini-connector`'s output contract (docs/CLI.md), against the real binary:
//!
//! - every `--json` answer is one line in the envelope, errors included, and its shape is
//!   pinned by a golden file (`tests/golden/agent-*.json`, `golden/normalise.rs`);
//! - text output never lets database text drive the terminal: control characters and escape
//!   sequences in names are shown escaped, tables line up with CJK, emoji and combining marks;
//! - no Rust debug formatting reaches the user.
//!
//! `MC_CLI_BIN=/path/to/mini-connector` runs them against another build (e.g. main's, where
//! they fail).

use std::path::Path;

use protocol::term::width;
use serde_json::json;

use crate::cli_configure::{Run, Sandbox};
use crate::support::sample_erp;

#[path = "golden/normalise.rs"]
mod golden;

const URL: &str = "wss://console.example.com/ws";

/// A configured sandbox with a copy of the sample ERP (inside the sandbox, so its path
/// normalises) as connection `erp`.
fn erp_sandbox(tag: &str) -> Sandbox {
    let sandbox = Sandbox::new(tag);
    sandbox.configure(URL);
    let erp = sandbox.path("erp.db");
    std::fs::copy(sample_erp(), &erp).unwrap();
    sandbox
        .run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", erp.to_str().unwrap()], None)
        .ok();
    sandbox
}

#[track_caller]
fn golden(sandbox: &Sandbox, name: &str, run: &Run) {
    golden::check(name, &run.stdout, &sandbox.dir.0);
}

/// A SQLite database whose names carry what an attacker would store: an OSC title sequence, a
/// colour sequence, a tab, a newline, a bidi override, and CJK / emoji / combining names.
fn hostile_db(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE \"evil\x1b]0;pwned\x07\" (\"a\tb\" TEXT, \"line\nbreak\" INTEGER, \"\x1b[31mred\" TEXT);
         CREATE TABLE \"顧客\" (\"名前\" TEXT, \"🙂\" TEXT, \"cafe\u{301}\" TEXT, \"x\" TEXT);
         CREATE TABLE \"rtl\u{202e}txt\" (id INTEGER PRIMARY KEY);",
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Errors are envelopes too

#[test]
fn json_errors_are_one_line_envelopes_with_codes() {
    let sandbox = Sandbox::new("json-errors");
    // No configuration yet.
    let out = sandbox.run(&["db", "list", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "NOT_CONFIGURED", "{out:?}");
    golden(&sandbox, "agent-error-not-configured", &out);

    sandbox.configure(URL);
    let out = sandbox.run(&["db", "test", "nope", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "UNKNOWN_CONNECTION", "the spec's code: {out:?}");
    assert!(out.stderr.is_empty(), "stdout carries the error: {out:?}");

    // A refused command line of a --json call.
    let out = sandbox.run(&["db", "list", "--json", "--no-such-flag"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "USAGE", "{out:?}");
    golden(&sandbox, "agent-error-usage", &out);

    let out = sandbox.run(&["schema", "show", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["ok"], false, "{out:?}");

    let out = sandbox.run(&["status", "--json"], None);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "NOT_RUNNING", "{out:?}");
    golden(&sandbox, "agent-status-not-running", &out);

    let out = sandbox.run(&["activity", "--json"], None);
    assert_eq!((out.code, &out.json()["error"]["code"]), (Some(3), &json!("NOT_RUNNING")), "{out:?}");

    let out = sandbox.run(&["sql", "check", "--json", "--dialect", "db2", "SELECT 1"], None);
    assert_eq!((out.code, &out.json()["error"]["code"]), (Some(2), &json!("USAGE")), "{out:?}");

    let out = sandbox.run(&["audit", "--json", "--queue", sandbox.path("none.db").to_str().unwrap()], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    golden(&sandbox, "agent-audit-no-queue", &out);
}

#[test]
fn db_test_json_failure_is_the_error_envelope_with_the_spec_code() {
    let sandbox = Sandbox::new("json-dbtest-fail");
    sandbox.configure(URL);
    let missing = sandbox.path("missing.db");
    sandbox
        .run(
            &[
                "db",
                "add",
                "--name",
                "gone",
                "--type",
                "sqlite",
                "--path",
                missing.to_str().unwrap(),
                "--no-test",
            ],
            None,
        )
        .ok();
    let out = sandbox.run(&["db", "test", "gone", "--json"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.is_empty(), "no text error besides the envelope: {out:?}");
    golden(&sandbox, "agent-db-test-failed", &out);
}

// ---------------------------------------------------------------------------------------------
// Golden shapes, one per command

#[test]
fn golden_db_list() {
    let sandbox = erp_sandbox("golden-db-list");
    golden(&sandbox, "agent-db-list", &sandbox.run(&["db", "list", "--json"], None).ok());
}

#[test]
fn golden_db_test() {
    let sandbox = erp_sandbox("golden-db-test");
    golden(&sandbox, "agent-db-test", &sandbox.run(&["db", "test", "erp", "--json"], None).ok());
}

#[test]
fn golden_schema_discover_show_diff() {
    // A small database of its own: the shape is pinned, not the sample ERP's contents.
    let sandbox = Sandbox::new("golden-schema");
    sandbox.configure(URL);
    let db = sandbox.path("small.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL DEFAULT 0);
             CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;",
        )
        .unwrap();
    sandbox
        .run(&["db", "add", "--name", "small", "--type", "sqlite", "--path", db.to_str().unwrap()], None)
        .ok();
    sandbox
        .run(&["schema", "private", "add", "--connection", "small", "--column", "customers.email"], None)
        .ok();
    golden(&sandbox, "agent-schema-discover", &sandbox.run(&["schema", "discover", "--json"], None).ok());
    golden(&sandbox, "agent-schema-show", &sandbox.run(&["schema", "show", "--json"], None).ok());
    golden(
        &sandbox,
        "agent-schema-show-visible",
        &sandbox.run(&["schema", "show", "--visible", "--json"], None).ok(),
    );
    golden(&sandbox, "agent-schema-diff", &sandbox.run(&["schema", "diff", "--json"], None).ok());
}

#[test]
fn golden_key_show_and_vault_status() {
    let sandbox = erp_sandbox("golden-key");
    golden(&sandbox, "agent-key-show", &sandbox.run(&["key", "show", "--json"], None).ok());
    golden(&sandbox, "agent-vault-status", &sandbox.run(&["vault", "status", "--json"], None).ok());
}

#[test]
fn golden_config_check() {
    let sandbox = erp_sandbox("golden-config-check");
    golden(&sandbox, "agent-config-check", &sandbox.run(&["config", "check", "--json"], None).ok());
    std::fs::write(&sandbox.config, "{\"connectorName\": 5}").unwrap();
    let out = sandbox.run(&["config", "check", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    golden(&sandbox, "agent-config-check-invalid", &out);
}

#[test]
fn golden_sql_check() {
    let sandbox = Sandbox::new("golden-sql");
    golden(
        &sandbox,
        "agent-sql-check-allow",
        &sandbox.run(&["sql", "check", "--json", "SELECT 1"], None).ok(),
    );
    let out = sandbox.run(&["sql", "check", "--json", "DELETE FROM t"], None);
    assert_eq!(out.code, Some(1), "a rejection is a verdict, exit 1: {out:?}");
    golden(&sandbox, "agent-sql-check-reject", &out);
}

#[test]
fn golden_diag_bundle() {
    let sandbox = erp_sandbox("golden-diag");
    let zip = sandbox.path("support.zip");
    let out = sandbox.run(&["diag", "bundle", "--out", zip.to_str().unwrap(), "--json"], None).ok();
    golden(&sandbox, "agent-diag-bundle", &out);
}

#[test]
fn golden_service_status() {
    let sandbox = erp_sandbox("golden-service");
    let units = sandbox.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let out = sandbox.run(&["service", "status", "--unit-dir", units.to_str().unwrap(), "--json"], None);
    golden(&sandbox, "agent-service-status", &out);
}

#[test]
fn golden_status_activity_control_and_doctor_of_a_running_agent() {
    let world = crate::support::World::new("golden-control");
    let agent = crate::support::connected_agent(&world, "Gold", json!({}));
    let config = agent.config.to_str().unwrap();
    world.gateway.query("Gold", crate::e2e_query::request("SELECT 1 AS one")).unwrap();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = crate::support::cli(&[args, &["--json", "--config", config]].concat());
        assert_eq!(code, Some(0), "{args:?}: {stdout}{stderr}");
        stdout
    };
    golden::check_shape("agent-status", &run(&["status"]));
    golden::check_shape("agent-activity", &run(&["activity"]));
    golden::check("agent-pause", &run(&["pause"]), Path::new(""));
    golden::check("agent-resume", &run(&["resume"]), Path::new(""));
    golden::check_shape("agent-doctor", &run(&["doctor"]));
    golden::check("agent-stop", &run(&["stop"]), Path::new(""));
}

// ---------------------------------------------------------------------------------------------
// Text output: escaped, aligned

/// The display column where each line's `n`-th two-space-separated cell starts.
fn starts(lines: &[&str], n: usize) -> Vec<usize> {
    lines
        .iter()
        .map(|l| {
            let cells: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
            let head = &l[..l.rfind(cells[n]).unwrap()];
            width(head)
        })
        .collect()
}

#[test]
fn db_list_aligns_wide_names_and_escapes_control_characters() {
    let sandbox = Sandbox::new("text-db-list");
    sandbox.configure(URL);
    for (name, file) in
        [("東京支店", "a.db"), ("cafe\u{301}", "b.db"), ("🙂🙂", "c.db"), ("plain", "tab\there.db")]
    {
        let path = sandbox.path(file);
        sandbox
            .run(
                &[
                    "db",
                    "add",
                    "--name",
                    name,
                    "--type",
                    "sqlite",
                    "--path",
                    path.to_str().unwrap(),
                    "--no-test",
                ],
                None,
            )
            .ok();
    }
    let out = sandbox.run(&["db", "list"], None).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "a tab in a path never breaks a row: {}", out.stdout);
    assert!(out.stdout.contains("tab\\there.db"), "{}", out.stdout);
    let type_starts = starts(&lines, 1);
    assert!(
        type_starts.iter().all(|s| *s == type_starts[0]),
        "TYPE column misaligned {type_starts:?}:\n{}",
        out.stdout
    );
}

#[test]
fn schema_show_never_prints_escape_sequences_from_the_database() {
    let sandbox = Sandbox::new("text-schema-hostile");
    sandbox.configure(URL);
    let db = sandbox.path("hostile.db");
    hostile_db(&db);
    sandbox.run(&["db", "add", "--name", "h", "--type", "sqlite", "--path", db.to_str().unwrap()], None).ok();
    let discover = sandbox.run(&["schema", "discover"], None).ok();
    let show = sandbox.run(&["schema", "show"], None).ok();
    for out in [&discover, &show] {
        let raw: Vec<char> =
            out.stdout.chars().filter(|c| c.is_control() && *c != '\n' || *c == '\u{202e}').collect();
        assert!(raw.is_empty(), "raw control characters {raw:?} printed:\n{}", out.stdout);
    }
    let text = &show.stdout;
    assert!(text.contains("evil\\x1b]0;pwned\\x07"), "{text}");
    assert!(
        text.contains("a\\tb") && text.contains("line\\nbreak") && text.contains("\\x1b[31mred"),
        "{text}"
    );
    assert!(text.contains("rtl\\u{202e}txt"), "{text}");
    // The JSON stays exact.
    let json = sandbox.run(&["schema", "show", "--json"], None).ok().json();
    let names: Vec<&str> = json["schemas"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"evil\x1b]0;pwned\x07"), "{names:?}");

    // The columns of `顧客` line up: their types start at one display column.
    let lines: Vec<&str> = text.lines().skip_while(|l| !l.contains("顧客")).skip(1).take(4).collect();
    assert_eq!(lines.len(), 4, "{text}");
    let type_starts = starts(&lines, 1);
    assert!(
        type_starts.iter().all(|s| *s == type_starts[0]),
        "misaligned {type_starts:?}:\n{}",
        lines.join("\n")
    );
}

#[test]
fn sample_erp_reports_counts_not_debug_values() {
    let sandbox = Sandbox::new("text-sample-erp");
    let out = sandbox.run(&["sample-erp", sandbox.path("erp.db").to_str().unwrap()], None).ok();
    assert!(!out.stdout.contains("FixtureStats") && !out.stdout.contains('{'), "{out:?}");
    assert!(out.stdout.contains("customers"), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Commands that change things answer `--json` too (data: what was done)

#[test]
fn golden_configure_and_key_rotate() {
    let sandbox = Sandbox::new("golden-configure");
    let key = mini_connector::protocol::ApiKey::generate("acme").unwrap();
    let out = sandbox
        .run(
            &["configure", "--name", "Warehouse", "--cloud-url", URL, "--api-key-stdin", "--json"],
            Some(&format!("{}\n", key.expose())),
        )
        .ok();
    assert!(!out.stdout.contains(key.expose()), "never the key: {out:?}");
    golden(&sandbox, "agent-configure", &out);
    let out = sandbox.run(&["configure", "--heartbeat-ms", "20000", "--json"], None).ok();
    assert_eq!(out.json()["action"], "updated", "{out:?}");
    assert!(out.json()["apiKey"].is_null(), "key unchanged: {out:?}");

    let new = mini_connector::protocol::ApiKey::generate("acme").unwrap();
    let out =
        sandbox.run(&["key", "rotate", "--api-key-stdin", "--json"], Some(&format!("{}\n", new.expose())));
    let out = out.ok();
    assert!(!out.stdout.contains(new.expose()), "never the key: {out:?}");
    golden(&sandbox, "agent-key-rotate", &out);

    // With --json nothing prompts: the secret comes from the stdin flag, or the call is refused.
    let out = sandbox.run(&["key", "rotate", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "USAGE", "{out:?}");
    assert!(out.json()["error"]["message"].as_str().unwrap().contains("--api-key-stdin"), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // A bad key: the envelope, nothing stored.
    let out = sandbox.run(&["key", "rotate", "--api-key-stdin", "--json"], Some("not-a-key\n"));
    assert_eq!((out.code, out.json()["ok"].clone()), (Some(2), json!(false)), "{out:?}");
}

#[test]
fn golden_db_add_edit_remove() {
    let sandbox = Sandbox::new("golden-db-change");
    sandbox.configure(URL);
    let erp = sandbox.path("erp.db");
    std::fs::copy(sample_erp(), &erp).unwrap();
    let out = sandbox
        .run(
            &["db", "add", "--name", "erp", "--type", "sqlite", "--path", erp.to_str().unwrap(), "--json"],
            None,
        )
        .ok();
    golden(&sandbox, "agent-db-add", &out);
    let out = sandbox.run(&["db", "edit", "erp", "--pool-max", "4", "--no-test", "--json"], None).ok();
    golden(&sandbox, "agent-db-edit", &out);
    let out = sandbox.run(&["db", "remove", "erp", "--json"], None).ok();
    golden(&sandbox, "agent-db-remove", &out);

    let out = sandbox.run(&["db", "remove", "erp", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "UNKNOWN_CONNECTION", "{out:?}");
    // A database that cannot be opened: the spec's code, nothing saved.
    let gone = sandbox.path("nowhere/missing.db");
    let out = sandbox.run(
        &["db", "add", "--name", "gone", "--type", "sqlite", "--path", gone.to_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "DATABASE_UNAVAILABLE", "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn golden_schema_approve_and_private() {
    let sandbox = Sandbox::new("golden-schema-change");
    sandbox.configure(URL);
    let db = sandbox.path("small.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL);",
        )
        .unwrap();
    sandbox
        .run(&["db", "add", "--name", "small", "--type", "sqlite", "--path", db.to_str().unwrap()], None)
        .ok();
    sandbox.run(&["schema", "discover"], None).ok();
    let out = sandbox.run(&["schema", "approve", "--connection", "small", "--json"], None).ok();
    golden(&sandbox, "agent-schema-approve", &out);
    let out = sandbox
        .run(
            &["schema", "private", "add", "--connection", "small", "--column", "customers.email", "--json"],
            None,
        )
        .ok();
    golden(&sandbox, "agent-schema-private-add", &out);
    let again = sandbox
        .run(
            &["schema", "private", "add", "--connection", "small", "--column", "customers.email", "--json"],
            None,
        )
        .ok();
    assert_eq!(again.json()["changed"], false, "{again:?}");
    let out =
        sandbox.run(&["schema", "approve", "--connection", "small", "--tables", "nope", "--json"], None);
    assert_eq!((out.code, out.json()["error"]["code"].clone()), (Some(2), json!("INVALID_INPUT")), "{out:?}");
}

#[test]
fn golden_service_install_and_uninstall() {
    let sandbox = erp_sandbox("golden-service-install");
    let units = sandbox.path("units");
    let unit_dir = units.to_str().unwrap();
    let out = sandbox.run(&["service", "install", "--unit-dir", unit_dir, "--json"], None).ok();
    // The steps name this binary's path: the shape is pinned, the unit checked. Warnings
    // depend on the machine (e.g. no `systemd-analyze`): a list, whatever it holds.
    let without_warnings = |stdout: &str| {
        let mut value: serde_json::Value = serde_json::from_str(stdout).unwrap();
        let warnings = value["data"].as_object_mut().unwrap().remove("warnings");
        assert!(warnings.is_some_and(|w| w.is_array()), "{stdout}");
        format!("{value}\n")
    };
    golden::check_shape("agent-service-install", &without_warnings(&out.stdout));
    let data = out.json();
    assert_eq!(data["unit"], json!(units.join("mini-connector.service")), "{out:?}");
    assert!(units.join("mini-connector.service").exists());
    assert!(!data["steps"].as_array().unwrap().is_empty(), "{out:?}");
    let out = sandbox.run(&["service", "uninstall", "--unit-dir", unit_dir, "--json"], None).ok();
    golden::check_shape("agent-service-uninstall", &without_warnings(&out.stdout));
    assert!(!units.join("mini-connector.service").exists());
}

#[test]
fn notify_json_answers_and_never_prompts() {
    let sandbox = Sandbox::new("json-notify");
    sandbox.configure(URL);
    let out = sandbox.run(&["notify", "test", "--json"], None).ok();
    golden(&sandbox, "agent-notify-test", &out);
    let out = sandbox.run(&["notify", "set-password", "--json"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.json()["error"]["code"], "USAGE", "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let out = sandbox.run(&["notify", "set-password", "--password-stdin", "--json"], Some("s3cret-smtp\n"));
    let out = out.ok();
    assert!(!out.stdout.contains("s3cret-smtp"), "{out:?}");
    golden(&sandbox, "agent-notify-set-password", &out);
}

#[test]
fn start_daemon_json_gives_the_pid_or_the_error_envelope() {
    let world = crate::support::World::new("json-daemon");
    let key = world.key("JsonBg");
    let config = world.agent_config("JsonBg", key.expose(), json!({}));
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = crate::support::cli(&["start", "--daemon", "--json", "--config", config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    golden::check_shape("agent-start-daemon", &stdout);
    let again = crate::support::cli(&["start", "--daemon", "--json", "--config", config]);
    let stop = crate::support::cli(&["stop", "--config", config]);
    assert_eq!(stop.0, Some(0), "{stop:?}");
    assert_eq!(again.0, Some(1), "{again:?}");
    let envelope: serde_json::Value = serde_json::from_str(&again.1).unwrap();
    assert_eq!(envelope["error"]["code"], "ALREADY_RUNNING", "{again:?}");
    assert!(again.2.is_empty(), "nothing on stderr: {again:?}");
}

#[test]
fn golden_vault_reset() {
    let sandbox = Sandbox::new("golden-vault-reset");
    sandbox.configure(URL);
    // Another install id = another machine's vault (VAULT_DECRYPT_ERROR).
    std::fs::write(sandbox.path("etc/vault/install-id"), "00000000-0000-4000-8000-000000000000").unwrap();
    let out = sandbox.run(&["vault", "reset", "--json"], None).ok();
    assert_eq!(out.json()["reenter"], json!(["mini-connector key rotate"]), "{out:?}");
    // The moved file's name carries the time: checked, then pinned without it.
    let mut value = out.envelope();
    let moved = value["data"]["movedTo"].as_str().unwrap().to_owned();
    assert!(Path::new(&moved).exists(), "{out:?}");
    let stem = moved.rsplit_once('-').unwrap().0;
    value["data"]["movedTo"] = json!(format!("{stem}-<time>"));
    golden::check("agent-vault-reset", &format!("{value}\n"), &sandbox.dir.0);
    let out = sandbox.run(&["vault", "reset", "--json"], None).ok();
    golden(&sandbox, "agent-vault-reset-nothing", &out);
}
