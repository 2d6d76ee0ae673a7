//! The admin API and the CLI against a running gateway.

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gateway::AdminClient;
use protocol::{ErrorBody, ErrorCode, ExecutionError, Inbound, Outbound, SchemaDiscovery, now_rfc3339};
use serde_json::json;

use crate::common::{FakeAgent, TestGateway, WAIT, col, schema as db_schema, start_with, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

fn with_admin() -> Arc<TestGateway> {
    Arc::new(start_with(|c| c.admin_listen = Some("127.0.0.1:0".parse().unwrap())))
}

fn cli(gw: &TestGateway, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--data-dir").arg(&gw.dir).args(args).env("RUST_LOG", "off").output().unwrap()
}

#[test]
fn admin_api_requires_the_token_and_answers_queries() {
    let _w = watchdog("admin_api");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let addr = gw.admin_addr().unwrap();
    let bad = AdminClient::new(addr, "wrong");
    assert_eq!(bad.call("GET", "/admin/connectors", None, WAIT).unwrap().0, 401);
    let client = AdminClient::from_data_dir(&gw.dir).unwrap().expect("admin.json written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(gw.dir.join("admin.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (status, list) = client.call("GET", "/admin/connectors", None, WAIT).unwrap();
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "Warehouse");
    assert_eq!(list[0]["connected"], false);

    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let client2 = client.clone();
    let asker = thread::spawn(move || {
        let body = json!({"connector": "Warehouse", "sql": "SELECT ?", "params": [5], "waitMs": 10_000});
        client2.call("POST", "/admin/query", Some(&body), WAIT).unwrap()
    });
    let cmd = agent.expect_command();
    assert_eq!(cmd.payload.params, vec![json!(5)]);
    agent.answer_inline(&cmd, vec![col("v", "integer")], vec![vec![json!(5)]]);
    agent.expect_ack(&cmd.command_id);
    let (status, outcome) = asker.join().unwrap();
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["rows"], json!([[5]]));
    assert_eq!(outcome["rowCount"], 1);
    assert_eq!(outcome["commandId"], cmd.command_id.as_str());

    let (status, answer) = client
        .call("POST", "/admin/query", Some(&json!({"connector": "Nobody", "sql": "SELECT 1"})), WAIT)
        .unwrap();
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("UNKNOWN_CONNECTOR")));

    let (status, _) =
        client.call("POST", "/admin/schema-request", Some(&json!({"connector": "Warehouse"})), WAIT).unwrap();
    assert_eq!(status, 202);
    assert!(matches!(agent.recv(), Inbound::SchemaRequest(_)));

    let (status, answer) =
        client.call("POST", "/admin/keys/revoke", Some(&json!({"key": "Warehouse"})), WAIT).unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["revoked"].as_array().unwrap().len(), 1);
    agent.expect_error(ErrorCode::AuthFailed);
    agent.expect_closed();
}

#[test]
fn cli_keys_query_connectors_schema_and_revoke() {
    let _w = watchdog("cli");
    let gw = with_admin();

    let out = cli(&gw, &["keys", "create", "--tenant", "acme", "--name", "Warehouse", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = created["data"]["apiKey"].as_str().unwrap().to_owned();
    assert!(protocol::ApiKey::parse(&key).is_ok());

    let out = cli(&gw, &["keys", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Warehouse") && text.contains("vmc_acme_****_") && text.contains("active"),
        "{text}"
    );
    assert!(!text.contains(&key));

    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    agent.send(&Outbound::SchemaDiscovery(SchemaDiscovery {
        timestamp: now_rfc3339(),
        schema: vec![db_schema("erp")],
    }));
    agent.heartbeat(0);
    gw.wait_event(|e| {
        matches!(e, gateway::GatewayEvent::Frame { frame: Outbound::Heartbeat(_), .. }).then_some(())
    });

    // query: text table, then a remote error.
    let gw2 = gw.clone();
    let runner = thread::spawn(move || {
        cli(
            &gw2,
            &[
                "query",
                "--connector",
                "Warehouse",
                "--param",
                "3",
                "--param",
                "abc",
                "SELECT id, name FROM t",
            ],
        )
    });
    let cmd = agent.expect_command();
    assert_eq!(cmd.payload.params, vec![json!(3), json!("abc")]);
    agent.answer_inline(
        &cmd,
        vec![col("id", "integer"), col("name", "text")],
        vec![vec![json!(1), json!("Ada Lovelace")], vec![json!(22), json!(null)]],
    );
    agent.expect_ack(&cmd.command_id);
    let out = runner.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id  name");
    assert_eq!(lines[2], "1   Ada Lovelace");
    assert_eq!(lines[3], "22  NULL");
    assert_eq!(lines[4], "(2 rows)");

    let gw2 = gw.clone();
    let runner =
        thread::spawn(move || cli(&gw2, &["query", "--connector", "Warehouse", "--json", "DROP TABLE t"]));
    let cmd = agent.expect_command();
    agent.send(&Outbound::ExecutionError(ExecutionError {
        command_id: Some(cmd.command_id.clone()),
        execution_id: None,
        activity_id: None,
        error: ErrorBody::new(ErrorCode::WriteOperationRejected, "DROP is a write"),
    }));
    // An `execution_error` is acknowledged like a result (the agent stops re-sending it).
    agent.expect_ack(&cmd.command_id);
    let out = runner.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // --json: the agent's error is the failure envelope on stdout, not text.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc,
        json!({"ok": false, "error": {"code": "WRITE_OPERATION_REJECTED", "message": "DROP is a write"}})
    );

    let out = cli(&gw, &["query", "--connector", "Nobody", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(3), "an unknown connector is 'not found'");

    let out = cli(&gw, &["connectors", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = &list["data"]["connectors"];
    assert_eq!(list[0]["connected"], true);
    let out = cli(&gw, &["connectors"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("online"));

    let out = cli(&gw, &["schema", "--connector", "Warehouse", "--json"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["data"]["schemas"], serde_json::to_value(vec![db_schema("erp")]).unwrap());
    // Without --json: a text view of the tables and columns.
    let out = cli(&gw, &["schema", "--connector", "Warehouse"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("erp (") && !text.starts_with('{'), "{text}");

    // revoke through the running gateway kicks the agent.
    let out = cli(&gw, &["keys", "revoke", "Warehouse"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.expect_error(ErrorCode::AuthFailed);
    agent.expect_closed();
    let out = cli(&gw, &["keys", "revoke", "Warehouse"]);
    assert_eq!(out.status.code(), Some(1), "no usable key left: KEY_CONFLICT");
}

#[test]
fn cli_revokes_in_the_database_when_no_gateway_runs() {
    let _w = watchdog("cli_offline");
    let dir = crate::common::temp_dir();
    let run = |args: &[&str]| {
        Command::new(BIN).arg("--data-dir").arg(&dir).args(args).env("RUST_LOG", "off").output().unwrap()
    };
    assert!(run(&["keys", "create", "--tenant", "acme", "--name", "Shop"]).status.success());
    let out = run(&["keys", "rotate", "Shop", "--json"]);
    assert!(out.status.success());
    let out = run(&["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = &list["data"]["keys"];
    assert_eq!(list[0]["state"], "expiring");
    assert_eq!(list[1]["state"], "active");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(run(&["keys", "revoke", &id]).status.success());
    let out = run(&["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = &list["data"]["keys"];
    assert_eq!(list[0]["state"], "revoked");
    let out = run(&["query", "--connector", "Shop", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(3), "no gateway running");
    let out = run(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
    let _ = std::fs::remove_dir_all(dir);
    let _ = Duration::ZERO;
}

/// A buffered result goes to the admin caller from its spool file: the same JSON as from
/// values, every row, with an exact `Content-Length` (the client reads the whole body).
#[test]
fn admin_query_streams_a_buffered_result_from_its_spool() {
    use crate::chunks::{buffered, stream};
    use crate::common::Chunk;

    let _w = watchdog("admin_spool");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let client = AdminClient::from_data_dir(&gw.dir).unwrap().expect("admin.json written");
    let asker = thread::spawn(move || {
        let body = json!({"connector": "Warehouse", "sql": "SELECT * FROM big", "waitMs": 10_000});
        client.call("POST", "/admin/query", Some(&body), WAIT).unwrap()
    });
    let cmd = agent.expect_command();
    let raw = stream(5_000);
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 4 + 1).collect();
    for (seq, piece) in pieces.iter().enumerate() {
        let last = seq + 1 == pieces.len();
        let (status, body) = Chunk::signed(&hmac, &conn, &cmd.command_id, seq as u32, last, piece).post(&gw);
        assert_eq!(status, 200, "{body}");
    }
    let buffer_key = format!("Warehouse:{}", cmd.command_id);
    agent.send(&buffered(&cmd, &buffer_key, pieces.len() as u32, &raw, 5_000));
    agent.expect_ack(&cmd.command_id);
    let (status, outcome) = asker.join().unwrap();
    assert_eq!(status, 200, "{outcome}");
    let rows = outcome["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5_000);
    assert_eq!(rows[4_999], json!([4_999, format!("row 4999 \u{e9}t\u{e9} {}", "x".repeat(4_999 % 50))]));
    assert_eq!(outcome["columns"][1]["name"], "note");
    assert_eq!(outcome["rowCount"], 5_000);
    assert_eq!(outcome["buffered"]["bufferKey"], buffer_key.as_str());
    assert_eq!(outcome["buffered"]["byteCount"], raw.len());
    assert_eq!(gw.buffered_results(), 0);
}
