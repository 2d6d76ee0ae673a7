//! Connecting, authenticating and staying connected: the real agent binary against the real
//! gateway over TLS 1.3 on loopback.

use std::time::{Duration, Instant};

use gateway::{GatewayConfig, GatewayEvent};
use mini_connector::protocol::{ErrorCode, Outbound};

use crate::support::{AgentProc, TempDir, World, connected_agent, wait_event};

#[test]
fn agent_authenticates_and_broadcasts_its_schema() {
    let world = World::new("auth-ok");
    let events = world.gateway.subscribe();
    let _agent = connected_agent(&world, "Warehouse", serde_json::json!({}));
    let schema = wait_event(&events, |e| match e {
        GatewayEvent::Frame { connector, frame: Outbound::SchemaDiscovery(s), .. }
            if connector == "Warehouse" =>
        {
            Some(s.schema.clone())
        }
        _ => None,
    });
    assert_eq!(schema.len(), 1);
    let names: Vec<_> = schema[0].tables.iter().map(|t| t.name.as_str()).collect();
    for table in ["customers", "invoices", "order_lines", "orders", "products"] {
        assert!(names.contains(&table), "{table} missing from {names:?}");
    }
    let info = world.gateway.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert!(info.connected);
}

#[test]
fn unknown_key_is_refused_with_auth_failed() {
    let world = World::new("auth-failed");
    let events = world.gateway.subscribe();
    // Well-formed (passes the local checksum check) but never issued by this gateway.
    let stranger = mini_connector::protocol::ApiKey::generate("acme").unwrap();
    let agent = AgentProc::start(&world.agent_config("Ghost", stranger.expose(), serde_json::json!({})));
    let code = wait_event(&events, |e| match e {
        GatewayEvent::AgentRejected { code, .. } => Some(*code),
        _ => None,
    });
    assert_eq!(code, ErrorCode::AuthFailed);
    agent.wait_log("AUTH_FAILED");
    assert!(!agent.log_text().contains(stranger.expose()), "the API key must never be logged");
}

#[test]
fn second_agent_with_the_same_key_gets_duplicate_connection() {
    let world = World::new("dup");
    let events = world.gateway.subscribe();
    let key = world.key("Dup");
    let config = world.agent_config("Dup", key.expose(), serde_json::json!({}));
    let _first = AgentProc::start(&config);
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    let second = AgentProc::start(&world.agent_config("Dup", key.expose(), serde_json::json!({})));
    let code = wait_event(&events, |e| match e {
        GatewayEvent::AgentRejected { code, .. } => Some(*code),
        _ => None,
    });
    assert_eq!(code, ErrorCode::DuplicateConnection);
    second.wait_log("DUPLICATE_CONNECTION");
    // The first session is untouched and still answers.
    let outcome = world.gateway.query("Dup", crate::e2e_query::request("SELECT 1 AS one")).unwrap();
    assert_eq!(outcome.rows, vec![vec![serde_json::json!(1)]]);
}

#[test]
fn revoking_the_key_disconnects_the_agent_at_once() {
    let world = World::new("revoke");
    let agent = connected_agent(&world, "Revoked", serde_json::json!({}));
    let events = world.gateway.subscribe();
    let started = Instant::now();
    world.gateway.keys().revoke("Revoked").unwrap();
    wait_event(&events, |e| match e {
        GatewayEvent::AgentDisconnected { connector, .. } if connector == "Revoked" => Some(()),
        _ => None,
    });
    assert!(started.elapsed() < Duration::from_secs(5), "revocation took {:?}", started.elapsed());
    agent.wait_log("AUTH_FAILED");
    assert!(!world.gateway.connectors().iter().any(|c| c.name == "Revoked" && c.connected));
}

#[test]
fn malformed_key_is_refused_locally_before_dialling() {
    let world = World::new("badkey");
    let events = world.gateway.subscribe();
    let mut agent =
        AgentProc::start(&world.agent_config("Typo", "vmc_acme_notavalidkey_00000", serde_json::json!({})));
    assert_eq!(agent.wait_exit(), Some(2));
    assert!(agent.log_text().contains("invalid API key format"), "{}", agent.log_text());
    assert!(events.try_recv().is_err(), "nothing may reach the gateway");
}

#[test]
fn heartbeats_arrive_at_the_configured_period() {
    let world = World::new("heartbeat");
    let events = world.gateway.subscribe();
    let _agent = connected_agent(&world, "Beat", serde_json::json!({ "heartbeatIntervalMs": 1000 }));
    let mut beats = Vec::new();
    while beats.len() < 4 {
        let (at, status, active) = wait_event(&events, |e| match e {
            GatewayEvent::Frame { connector, at, frame: Outbound::Heartbeat(h), .. }
                if connector == "Beat" =>
            {
                Some((*at, h.status, h.active_commands))
            }
            _ => None,
        });
        assert_eq!(status, mini_connector::protocol::AgentStatus::Ready);
        assert_eq!(active, 0);
        beats.push(at);
    }
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(700) && gap < Duration::from_millis(1300),
            "heartbeat gap {gap:?}"
        );
    }
}

#[test]
fn agent_retries_until_the_gateway_comes_up() {
    let dir = TempDir::new("late-gateway");
    // Reserve a port, then free it: nothing listens there when the agent starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // A first gateway only to obtain a certificate and a key in the data dir.
    let mut config = GatewayConfig::new(dir.0.join("gw"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    let probe = gateway::Gateway::start(config.clone()).unwrap();
    let key = probe.keys().create("acme", "Late").unwrap().1;
    let ca = probe.ca_cert_path();
    probe.shutdown();

    let agent_dir = dir.0.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    std::fs::write(agent_dir.join("api-key"), key.expose()).unwrap();
    let config_path = agent_dir.join("config.json");
    let agent_config = serde_json::json!({
        "connectorName": "Late",
        "apiKeyRef": format!("file:{}", agent_dir.join("api-key").display()),
        "cloudUrl": format!("wss://127.0.0.1:{}/ws", addr.port()),
        "caCertPath": ca,
        "reconnectMaxMs": 1000,
        "connections": [{ "name": "erp", "type": "sqlite", "path": crate::support::sample_erp() }]
    });
    std::fs::write(&config_path, serde_json::to_vec(&agent_config).unwrap()).unwrap();
    let agent = AgentProc::start(&config_path);
    agent.wait_log("cannot reach the cloud");

    config.listen = addr;
    let gateway = gateway::Gateway::start(config).unwrap();
    let events = gateway.subscribe();
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    let outcome = gateway.query("Late", crate::e2e_query::request("SELECT 2 AS two")).unwrap();
    assert_eq!(outcome.rows, vec![vec![serde_json::json!(2)]]);
}

#[test]
fn a_gateway_shutdown_is_a_restart_the_agent_keeps_running() {
    // A gateway redeploy sends `shutdown` (mode `restart`); the agent drains, drops the link
    // and keeps dialling. Before, it exited 0 and `Restart=on-failure` never brought it back.
    let world = World::new("shutdown");
    let mut agent = connected_agent(&world, "Stopper", serde_json::json!({}));
    world.gateway.shutdown();
    agent.wait_log("the cloud is restarting");
    agent.wait_log("reconnecting");
    agent.wait_log("disconnected from the cloud");
    assert_eq!(agent.try_exit(), None, "the agent exited: {}", agent.log_text());
}

#[test]
fn api_key_never_appears_in_the_agent_log_or_config() {
    let world = World::new("secrets");
    let events = world.gateway.subscribe();
    let key = world.key("Quiet");
    let config = world.agent_config("Quiet", key.expose(), serde_json::json!({ "logLevel": "trace" }));
    let agent = AgentProc::start(&config);
    wait_event(&events, |e| matches!(e, GatewayEvent::AgentConnected { .. }).then_some(()));
    world.gateway.query("Quiet", crate::e2e_query::request("SELECT name FROM customers LIMIT 3")).unwrap();
    let random_part = key.expose().split('_').nth(2).unwrap().to_owned();
    // Trace level logs every frame decision; none of it may carry the key.
    let log = agent.log_text();
    assert!(!log.is_empty());
    assert!(!log.contains(&random_part), "API key found in the agent log");
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(!config_text.contains(&random_part), "API key found in the config file");
    // The key travels only by reference.
    assert!(config_text.contains("\"apiKeyRef\": \"file:"));
}

/// Issue 12: a start with the API key and a database password in the vault derives the vault
/// key (PBKDF2, 600,000 rounds) once, not once per secret read (the key check in `main`, the
/// one in `Agent::start`, each database password, the link's first `auth`: four before). The
/// real binary logs each vault open at debug level; counted once the agent is connected.
#[test]
fn a_start_with_vault_secrets_derives_the_vault_key_once() {
    let world = World::new("auth-vault-once");
    let events = world.gateway.subscribe();
    let key = world.key("Vaulted");
    let config_path = world.agent_config("Vaulted", key.expose(), serde_json::json!({}));
    let dir = config_path.parent().unwrap().to_owned();
    std::fs::remove_file(dir.join("api-key")).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    value["apiKeyRef"] = "vault://apikey".into();
    value["vaultDir"] = dir.join("vault").to_str().unwrap().into();
    value["vaultKeyDir"] = dir.join("vault-keys").to_str().unwrap().into();
    value["logLevel"] = "debug".into();
    // A network database opens lazily (nothing listens on port 1): only its password is read.
    value["connections"].as_array_mut().unwrap().push(serde_json::json!({
        "name": "pg", "type": "postgres", "host": "127.0.0.1", "port": 1, "database": "erp", "user": "reader"
    }));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    {
        let config = mini_connector::config::AgentConfig::load(&config_path).unwrap();
        let vault = config.open_vault().unwrap();
        vault::ApiKeyStore::Vault.store(&vault, key.expose().as_bytes()).unwrap();
        vault.put(&mini_connector::secrets::db_password_id("pg"), b"pg-s3cret").unwrap();
    }

    let agent = AgentProc::start(&config_path);
    wait_event(&events, |e| match e {
        GatewayEvent::AgentConnected { connector, .. } if connector == "Vaulted" => Some(()),
        _ => None,
    });
    let log = agent.log_text();
    assert_eq!(
        log.matches("vault opened (key derived)").count(),
        1,
        "one key derivation per start; the agent's log:\n{log}"
    );
    assert!(!log.contains(key.expose()) && !log.contains("pg-s3cret"), "a secret is in the log");
}
