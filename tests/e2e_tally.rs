//! Tally end to end: `db add --type tally`, `db test`, `schema discover`, the real agent and the
//! reference gateway, against a **fake TallyPrime XML gateway** (no Tally can run here; the fake
//! is `drivers/tests/tally_fake.rs`, answering from fixtures shaped like real exports and failing
//! the test if any request is not an Export).

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{ErrorCode, Outbound};
use serde_json::{Value, json};

use crate::e2e_query::request;
use crate::support::{AgentProc, World, cli_stdin, wait_event};
use crate::tally_fake::{COMPANY, Fake, Mode};

#[test]
fn ledgers_travel_from_tally_through_the_agent_and_nothing_but_exports_is_sent() {
    let fake = Fake::start(Mode::Normal);
    let world = World::new("tally-e2e");
    let events = world.gateway.subscribe();
    let key = world.key("Books");
    let config = world.agent_config("Books", key.expose(), json!({"connections": []}));
    let config_arg = config.to_str().unwrap();
    let port = fake.port.to_string();
    let add =
        ["db", "add", "--config", config_arg, "--name", "books", "--type", "tally", "--host", "127.0.0.1"];
    let (code, out, err) =
        cli_stdin(&[&add[..], &["--port", &port, "--company", COMPANY, "--json"]].concat(), "");
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli_stdin(&["db", "test", "--config", config_arg, "books", "--json"], "");
    assert_eq!(code, Some(0), "db test: {out}{err}");
    let tested: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tested["data"]["privileges"]["canWrite"], false, "{tested}");
    let (code, out, err) = cli_stdin(&["schema", "discover", "--config", config_arg, "--json"], "");
    assert_eq!(code, Some(0), "schema discover: {out}{err}");
    let discovered: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        discovered["data"]["connections"][0]["tables"], 5,
        "Ledger, Group, StockItem, Voucher, Company"
    );
    // Ledger emails are private (configured before the start).
    let mut value: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    value["schemaPolicy"] = json!({"books": {"privateColumns": {"Ledger": ["Email"]}}});
    std::fs::write(&config, serde_json::to_vec_pretty(&value).unwrap()).unwrap();

    let _agent = AgentProc::start(&config);
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => {
            Some(serde_json::to_value(s).unwrap())
        }
        _ => None,
    });
    let ledger =
        schema["schema"][0]["tables"].as_array().unwrap().iter().find(|t| t["name"] == "Ledger").cloned();
    let columns: Vec<String> =
        ledger.unwrap()["columns"].as_array().unwrap().iter().map(|c| c["name"].to_string()).collect();
    assert!(columns.contains(&"\"ClosingBalance\"".to_owned()), "{columns:?}");
    assert!(!columns.contains(&"\"Email\"".to_owned()), "a private field is not broadcast: {columns:?}");

    let sql = "SELECT Name, ClosingBalance FROM Ledger WHERE Parent = 'Sundry Debtors' ORDER BY Name";
    let outcome = world.gateway.query("Books", request(sql)).unwrap();
    let names: Vec<&str> = outcome.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    // Exactly `Sundry Debtors`: Tally's own formula would also let `sundry debtors` through.
    assert_eq!(names, ["Müller GmbH", "O'Brien & Sons <UK>", "श्री गणेश ट्रेडर्स"], "{:?}", outcome.rows);
    assert!(outcome.rows[0][1].is_string(), "amounts are exact decimals: {:?}", outcome.rows[0]);

    for (sql, code) in [
        ("DELETE FROM Ledger", ErrorCode::WriteKeywordDetected),
        ("SELECT Name FROM Ledger WHERE Name LIKE 'M%'", ErrorCode::SqlSyntaxError),
        ("SELECT Name FROM Ledger WHERE Name = 'x\" OR $$IsLedger:Yes OR \"'", ErrorCode::SqlSyntaxError),
        ("SELECT Email FROM Ledger", ErrorCode::SchemaAccessDenied),
    ] {
        match world.gateway.query("Books", request(sql)) {
            Err(QueryError::Remote(body)) => assert_eq!(body.code, code, "{sql}: {}", body.message),
            other => panic!("{sql}: expected a rejection, got {other:?}"),
        }
    }
    let requests = fake.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.contains("<TALLYREQUEST>Export</TALLYREQUEST>")));
    assert!(requests.iter().all(|r| !r.contains("Email")), "a private field is never even fetched");
}
