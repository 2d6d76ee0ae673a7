//! The headless path a newcomer follows, against a real PostgreSQL server: `configure` (API key
//! into the vault), `db add --type postgres --password-stdin` (password into the vault), `start`,
//! then queries through the real gateway. Needs the servers `scripts/db-servers.sh` starts; when
//! `MC_REQUIRE_DB_SERVERS=1` (CI) a missing server fails the test instead of skipping it.

use std::io::Write as _;
use std::process::{Command, Stdio};

use gateway::{GatewayEvent, QueryError};
use mini_connector::protocol::{ErrorCode, Outbound};
use serde_json::json;

use crate::e2e_query::request;
use crate::support::{AgentProc, World, wait_event};

/// (host, port, database, user, password) of the read-only PostgreSQL user, if configured.
fn pg_server() -> Option<(String, String, String, String, String)> {
    let Ok(url) = std::env::var("MC_TEST_PG_URL") else {
        assert!(
            std::env::var("MC_REQUIRE_DB_SERVERS").as_deref() != Ok("1"),
            "MC_REQUIRE_DB_SERVERS=1 but MC_TEST_PG_URL is not set: start scripts/db-servers.sh"
        );
        eprintln!("skipping: MC_TEST_PG_URL not set (run scripts/db-servers.sh start)");
        return None;
    };
    // postgres://user:password@host:port/database
    let rest = url.strip_prefix("postgres://")?;
    let (credentials, rest) = rest.split_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let (host_port, database) = rest.split_once('/')?;
    let (host, port) = host_port.split_once(':')?;
    Some((host.into(), port.into(), database.into(), user.into(), password.into()))
}

fn run(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn headless_setup_with_postgres_answers_queries_and_keeps_secrets_local() {
    let Some((host, port, database, user, password)) = pg_server() else { return };
    let world = World::new("pg-e2e");
    let events = world.gateway.subscribe();
    // A second subscription nobody reads until the end: every frame the gateway decoded.
    let traffic = world.gateway.subscribe();
    let key = world.key("Postgres");
    let dir = world.dir.0.join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    let config_arg = config.to_str().unwrap();
    let ca = world.gateway.ca_cert_path();
    // The vault's install secret stays in the sandbox too (not in the real user's state dir).
    let key_dir = dir.join("vault-keys");

    let (code, out) = run(
        &[
            "configure",
            "--config",
            config_arg,
            "--name",
            "Postgres",
            "--cloud-url",
            &world.gateway.ws_url(),
            "--ca-cert",
            ca.to_str().unwrap(),
            "--vault-key-dir",
            key_dir.to_str().unwrap(),
            "--api-key-stdin",
        ],
        &format!("{}\n", key.expose()),
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(
        &[
            "db",
            "add",
            "--config",
            config_arg,
            "--name",
            "erp",
            "--type",
            "postgres",
            "--host",
            &host,
            "--port",
            &port,
            "--database",
            &database,
            "--user",
            &user,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    assert_eq!(code, Some(0), "{out}");
    // Keep the agent's logs inside the sandbox.
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    value["logDir"] = json!(dir.join("logs"));
    std::fs::write(&config, serde_json::to_vec_pretty(&value).unwrap()).unwrap();

    let agent = AgentProc::start(&config);
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));

    let outcome = world
        .gateway
        .query("Postgres", request("SELECT id, name, credit_limit FROM customers ORDER BY id LIMIT 3"))
        .unwrap();
    assert_eq!(outcome.row_count, 3);
    assert_eq!(outcome.rows[0][0], json!(1));
    assert_eq!(outcome.rows[0][1], json!("Müller GmbH"));
    // NUMERIC travels as an exact decimal string.
    assert!(outcome.rows[0][2].is_string(), "{:?}", outcome.rows[0][2]);

    // Writes and side-effect functions are refused by the gate in the PostgreSQL dialect.
    for (sql, code) in [
        ("DELETE FROM customers", ErrorCode::WriteKeywordDetected),
        ("SELECT pg_sleep(60)", ErrorCode::WriteOperationRejected),
        ("SELECT nextval('customers_id_seq')", ErrorCode::WriteOperationRejected),
    ] {
        match world.gateway.query("Postgres", request(sql)) {
            Err(QueryError::Remote(body)) => assert_eq!(body.code, code, "{sql}: {}", body.message),
            other => panic!("{sql}: expected a rejection, got {other:?}"),
        }
    }

    // Neither the API key nor the database password is in any file the agent side wrote.
    let random_part = key.expose().split('_').nth(2).unwrap().to_owned();
    let mut files = vec![dir.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&random_part), "API key found in {}", path.display());
            assert!(!text.contains(&password), "DB password found in {}", path.display());
        }
    }
    let log = agent.log_text();
    assert!(!log.contains(&password) && !log.contains(&random_part));

    // The link traffic, as the gateway decoded it: no frame after `auth` carries either secret
    // (the schema broadcast and the results included).
    world.gateway.request_schema("Postgres").unwrap();
    wait_event(&events, |e| {
        matches!(e, GatewayEvent::Frame { frame: Outbound::SchemaDiscovery(_), .. }).then_some(())
    });
    let mut frames = 0;
    while let Ok(event) = traffic.try_recv() {
        if let GatewayEvent::Frame { frame, .. } = event {
            let text = serde_json::to_string(&frame).unwrap();
            assert!(!text.contains(&password), "DB password on the wire: {text}");
            assert!(!text.contains(&random_part), "API key outside `auth`: {text}");
            frames += 1;
        }
    }
    assert!(frames >= 4, "expected schema, status and result frames, saw {frames}");
}
