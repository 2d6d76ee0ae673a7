//! MongoDB end to end: `db add --type mongodb` (password into the vault), the real agent, the
//! reference gateway and a real MongoDB-wire-compatible server (SecantusDB from PyPI, started by
//! `scripts/db-servers.sh`; no `mongod` installs here). The agent logs in as the database's
//! **owner**, so only our own layers stand between a hostile console and a write.

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{ErrorCode, Outbound};
use serde_json::{Value, json};

use crate::e2e_query::request;
use crate::support::{AgentProc, DbUrl, World, cli_stdin, server_url, wait_event};

#[test]
fn an_owner_login_reads_documents_and_nothing_a_console_sends_writes() {
    let Some(url) = server_url("MC_TEST_MONGO_OWNER_URL") else { return };
    let url = DbUrl::parse(url.split('?').next().unwrap_or(&url));
    let world = World::new("mongo-e2e");
    let events = world.gateway.subscribe();
    let traffic = world.gateway.subscribe();
    let key = world.key("Mongo");
    let keys = world.dir.0.join("mongo-vault-keys");
    let config = world.agent_config("Mongo", key.expose(), json!({"connections": [], "vaultKeyDir": keys}));
    let config_arg = config.to_str().unwrap();
    let port = url.port.to_string();
    let (code, out, err) = cli_stdin(
        &[
            "db",
            "add",
            "--config",
            config_arg,
            "--name",
            "docs",
            "--type",
            "mongodb",
            "--host",
            &url.host,
            "--port",
            &port,
            "--database",
            &url.database,
            "--user",
            &url.user,
            "--password-stdin",
        ],
        &format!("{}\n", url.password),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    // Private: a collection and a field (configured before the start).
    let mut value: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    value["schemaPolicy"] =
        json!({"docs": {"privateTables": ["payroll"], "privateColumns": {"customers": ["iban"]}}});
    std::fs::write(&config, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    let (code, out, err) = cli_stdin(&["db", "test", "--config", config_arg, "docs", "--json"], "");
    assert_eq!(code, Some(0), "db test: {out}{err}");
    let tested: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tested["data"]["privileges"]["canWrite"], true, "the owner login is flagged: {tested}");

    let agent = AgentProc::start(&config);
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    // The first schema broadcast (with private objects, nothing runs before it): sampled fields, mixed types, no private collection or field, no data.
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(s), .. } => {
            Some(serde_json::to_value(s).unwrap())
        }
        _ => None,
    });
    let text = schema.to_string();
    assert!(text.contains("\"customers\"") && text.contains("int|long|string"), "{text}");
    assert!(text.contains("presence"), "{text}");
    assert!(!text.contains("payroll") && !text.contains("iban"), "private things stay local: {text}");
    assert!(!text.contains("Müller"), "no data in the schema");

    let find = json!({"collection": "customers", "filter": {"_id": {"$lte": 3}},
                      "projection": {"code": 1, "name": 1}, "sort": {"_id": 1}});
    let outcome = world.gateway.query("Mongo", request(&find.to_string())).unwrap();
    assert_eq!(outcome.row_count, 3);
    assert_eq!(outcome.rows[0], [json!(1), json!("C001"), json!("Łódź Trading 1")]);

    // The private field is removed at the source, even through $$ROOT.
    let root = json!({"collection": "customers", "pipeline": [{"$limit": 2}, {"$replaceWith": "$$ROOT"}]});
    let outcome = world.gateway.query("Mongo", request(&root.to_string())).unwrap();
    assert_eq!(outcome.row_count, 2);
    let text = serde_json::to_string(&outcome.rows).unwrap();
    assert!(!text.contains("iban") && text.contains("address"), "{text}");

    for (query, code) in [
        (
            json!({"collection": "orders", "pipeline": [{"$out": "stolen"}]}),
            ErrorCode::WriteOperationRejected,
        ),
        (
            json!({"collection": "orders", "pipeline": [{"$merge": {"into": "orders"}}]}),
            ErrorCode::WriteOperationRejected,
        ),
        (
            json!({"collection": "orders", "filter": {"$where": "sleep(100) || true"}}),
            ErrorCode::WriteOperationRejected,
        ),
        (json!({"collection": "payroll"}), ErrorCode::SchemaAccessDenied),
        (json!({"collection": "customers", "projection": {"iban": 1}}), ErrorCode::SchemaAccessDenied),
        (
            json!({"collection": "orders", "pipeline": [{"$lookup": {"from": "payroll", "as": "p", "pipeline": []}}]}),
            ErrorCode::SchemaAccessDenied,
        ),
    ] {
        match world.gateway.query("Mongo", request(&query.to_string())) {
            Err(QueryError::Remote(body)) => assert_eq!(body.code, code, "{query}: {}", body.message),
            other => panic!("{query}: expected a rejection, got {other:?}"),
        }
    }
    // Looked at directly (the agent's policy refuses a collection discovery did not see).
    let direct = drivers::Database::open(&drivers::ConnectionSpec {
        name: "check".into(),
        kind: drivers::DbKind::Mongodb,
        host: Some(url.host.clone()),
        port: Some(url.port),
        database: Some(url.database.clone()),
        user: Some(url.user.clone()),
        password: drivers::Password::Value(drivers::Secret::new(url.password.clone())),
        ..drivers::ConnectionSpec::default()
    })
    .unwrap();
    let schema = direct.discover().unwrap();
    assert!(!schema.tables.iter().any(|t| t.name == "stolen"), "no collection was written");

    // The password is nowhere but the vault (encrypted), neither in files nor on the wire.
    let log = agent.log_text();
    assert!(!log.contains(&url.password), "password in the agent log");
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(!config_text.contains(&url.password), "password in the config");
    while let Ok(event) = traffic.try_recv() {
        if let GatewayEvent::Frame { frame, .. } = event {
            assert!(!serde_json::to_string(&frame).unwrap().contains(&url.password), "password on the wire");
        }
    }
}
