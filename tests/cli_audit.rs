//! `audit` against the real binary: the table, `--json`, `--since`, and `--verify` on a whole
//! and on a tampered chain (exit 1 naming the first bad record), while the store is open.

use queue::{Finish, NewCommand, State, Store, StoreConfig};

use crate::cli_configure::Sandbox;

fn command<'a>(id: &'a str, received_at_ms: i64) -> NewCommand<'a> {
    NewCommand {
        command_id: id,
        execution_id: Some("exec-7"),
        activity_id: None,
        idempotency_key: Some(id),
        connection: Some("erp"),
        query: "SELECT secret_column FROM t",
        frame_json: "{}",
        expires_at_ms: None,
        received_at_ms,
    }
}

fn finish(rows: u64) -> Finish<'static> {
    Finish {
        state: State::Answered,
        answer_json: "{}",
        code: Some("ok"),
        retryable: false,
        row_count: Some(rows),
        result_bytes: Some(2),
        buffer_key: None,
        sha256: None,
        duration_ms: 12,
    }
}

#[test]
fn audit_lists_verifies_and_names_the_first_bad_record() {
    let sandbox = Sandbox::new("audit");
    let db = sandbox.path("queue.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let mut store = Store::open(&db, StoreConfig::default()).unwrap();
    // One old command (2020) and one now.
    store.receive(&command("old-cmd", 1_577_836_800_000)).unwrap();
    store.receive(&command("new-cmd", queue::now_ms())).unwrap();
    store.start("new-cmd").unwrap();
    store.finish("new-cmd", &finish(42)).unwrap();

    // While the owner still has it open.
    let text = sandbox.run(&["audit", "--queue", &db_arg, "--verify"], None).ok();
    assert!(text.stdout.contains("SEQ") && text.stdout.contains("executed"), "{text:?}");
    assert!(text.stdout.contains("2020-01-01T00:00:00.000Z"), "{text:?}");
    assert!(text.stdout.contains("audit chain ok: 4 records"), "{text:?}");
    assert!(!text.stdout.contains("secret_column"), "query text is hashed by default");

    let doc = sandbox.run(&["audit", "--queue", &db_arg, "--json", "--since", "24h"], None).ok().json();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "the 2020 record is older than 24h: {doc}");
    assert_eq!(doc["instanceId"], store.instance_id());
    assert_eq!(records[2]["event"], "executed");
    assert_eq!(records[2]["rowCount"], 42);
    assert_eq!(records[2]["durationMs"], 12);
    assert_eq!(records[2]["outcome"], "ok");
    assert_eq!(records[2]["commandId"], "new-cmd");
    assert_eq!(records[2]["queryHash"].as_str().unwrap().len(), 64);
    assert!(doc.get("verify").is_none());
    let since =
        sandbox.run(&["audit", "--queue", &db_arg, "--json", "--since", "2019-12-31T00:00:00Z"], None);
    assert_eq!(since.ok().json()["records"].as_array().unwrap().len(), 4);

    let bad = sandbox.run(&["audit", "--queue", &db_arg, "--since", "last tuesday"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("--since"), "{bad:?}");
    let missing = sandbox.run(&["audit", "--queue", sandbox.path("none.db").to_str().unwrap()], None);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("no queue database"), "{missing:?}");

    // Someone lowers a row count in the file.
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE audit SET row_count = 1 WHERE event = 'executed'", []).unwrap();
    drop(conn);
    let broken = sandbox.run(&["audit", "--queue", &db_arg, "--verify"], None);
    assert_eq!(broken.code, Some(1), "{broken:?}");
    assert!(broken.stderr.contains("audit chain broken at record 4"), "{broken:?}");
    let doc = sandbox.run(&["audit", "--queue", &db_arg, "--verify", "--json"], None);
    assert_eq!(doc.code, Some(1));
    let doc = doc.json();
    assert_eq!(doc["verify"]["ok"], false);
    assert_eq!(doc["verify"]["firstBadSeq"], 4);
}
