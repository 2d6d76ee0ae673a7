//! `diag bundle` (spec §8.2) after a real session: the agent binary against the in-process
//! gateway, its API key, a database password and an SMTP password in the vault, a table, a
//! column and (through a view over them) a view kept private, queries returning marker values.
//! Every file of the bundle is opened and searched for each secret, each marker row value,
//! each private name and the vault file's content — with the agent running (it builds the
//! bundle over the control socket) and stopped (the CLI builds it), plus a proxy password.

use crate::support::cli_stdin;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gateway::{GatewayEvent, QueryError};
use mini_connector::config::AgentConfig;
use serde_json::{Value, json};

use crate::e2e_query::request;
use crate::support::{AgentProc, WATCHDOG, World, cli, wait_event};

const DB_PASSWORD: &str = "DbPw-zq-Secret-8812";
const SMTP_PASSWORD: &str = "SmtpPw-zq-Secret-3307";
const PROXY_PASSWORD: &str = "ProxyPw-zq-Secret-5521";
/// Row values no bundle may hold: public columns, a private column, a private table.
const MARKERS: [&str; 4] =
    ["ROWMARK-public-name-7731", "ROWMARK-public-city-2290", "ROWMARK-ssn-4411", "ROWMARK-payroll-9902"];
/// Names no bundle may hold.
const PRIVATE_NAMES: [&str; 3] = ["payroll_zq", "ssn_zq", "v_pay_zq"];

/// A database with a private table, a table with a private column, and a view over the private
/// table (private too, derived by discovery).
fn create_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE staff_zq (id INTEGER PRIMARY KEY, name TEXT, city TEXT, ssn_zq TEXT);
         INSERT INTO staff_zq VALUES (1, '{n}', '{c}', '{s}'), (2, '{n}-2', 'x', '{s}-2'), (3, '{n}-3', 'y', '{s}-3');
         CREATE TABLE payroll_zq (id INTEGER PRIMARY KEY, note TEXT);
         INSERT INTO payroll_zq VALUES (1, '{p}');
         CREATE VIEW v_pay_zq AS SELECT note FROM payroll_zq;",
        n = MARKERS[0],
        c = MARKERS[1],
        s = MARKERS[2],
        p = MARKERS[3],
    ))
    .unwrap();
}

/// Every file of a ZIP, by name.
fn unzip(path: &Path) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let name = file.name().unwrap().into_owned();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap_or_else(|e| panic!("{name}: not UTF-8 text: {e}"));
            (name, text)
        })
        .collect()
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing from the bundle")).1
}

/// Everything that must not be in a bundle: the secrets (whole, and the API key's random
/// part), the marker row values, the private names, and every line of the vault's files.
fn forbidden(key: &str, vault_dirs: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = vec![key.to_owned(), key.split('_').nth(2).unwrap().to_owned()];
    out.extend([DB_PASSWORD, SMTP_PASSWORD, PROXY_PASSWORD].map(String::from));
    out.extend(MARKERS.map(String::from));
    out.extend(PRIVATE_NAMES.map(String::from));
    for entry in vault_dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()) {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        // Long runs of the (encrypted, encoded) content: any of them in the bundle is a copy.
        for piece in text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
            if piece.len() >= 24 {
                out.push(piece.to_owned());
            }
        }
    }
    out
}

fn assert_clean(files: &[(String, String)], forbidden: &[String]) {
    for (name, text) in files {
        let lower = text.to_lowercase();
        for bad in forbidden {
            assert!(!lower.contains(&bad.to_lowercase()), "{name} contains {bad:?}:\n{text}");
        }
    }
}

/// The files every bundle has, and the command records with their row counts.
fn assert_complete(files: &[(String, String)], running: bool) {
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "manifest.json",
        "errors.log",
        "commands.json",
        "system.json",
        "config.json",
        "schema/erp.json",
        "doctor.json",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    assert_eq!(names.contains(&"status.json"), running, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("logs/agent") && n.ends_with(".log")), "{names:?}");
    let log = files.iter().find(|(n, _)| n.starts_with("logs/agent")).unwrap();
    assert!(log.1.contains("command done"), "{}", log.1);

    let manifest: Value = serde_json::from_str(file(files, "manifest.json")).unwrap();
    let listed: Vec<&str> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names[1..], "the manifest lists every other file");
    assert!(manifest["neverIncluded"].as_array().unwrap().len() >= 4);

    let commands: Value = serde_json::from_str(file(files, "commands.json")).unwrap();
    let list = commands["commands"].as_array().unwrap();
    let answered: Vec<&Value> = list.iter().filter(|c| c["state"] == "answered").collect();
    assert!(answered.iter().any(|c| c["rowCount"] == 3), "{commands:#}");
    let denied =
        list.iter().find(|c| c["code"] == "SCHEMA_ACCESS_DENIED").expect("the denied query is recorded");
    assert_eq!(denied["query"]["redacted"], true);
    assert!(denied["query"]["length"].as_u64().unwrap() > 10 && denied["query"]["sha256Prefix"].is_string());
    for c in list {
        for field in
            ["commandId", "state", "attempts", "receivedAt", "durationMs", "rowCount", "resultBytes", "code"]
        {
            assert!(c.get(field).is_some(), "{field} missing in {c}");
        }
    }

    let schema: Value = serde_json::from_str(file(files, "schema/erp.json")).unwrap();
    let tables: Vec<&str> =
        schema["schema"]["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tables, ["staff_zq"], "{schema:#}");
    let columns = schema["schema"]["tables"][0]["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 3, "the private column is left out: {columns:?}");

    let system: Value = serde_json::from_str(file(files, "system.json")).unwrap();
    for field in ["os", "arch", "cpuCount", "agentVersion", "hostname"] {
        assert!(!system[field].is_null(), "{field}: {system:#}");
    }
    if cfg!(target_os = "linux") {
        assert!(system["memoryTotalBytes"].as_u64().unwrap() > 0);
        assert!(!system["network"]["interfaces"].as_array().unwrap().is_empty());
    }
    let config: Value = serde_json::from_str(file(files, "config.json")).unwrap();
    assert_eq!(config["apiKeyRef"], "[removed]");
    assert_eq!(config["schemaPolicy"]["erp"]["privateTables"], 1);
    let doctor: Value = serde_json::from_str(file(files, "doctor.json")).unwrap();
    assert!(doctor.is_object());
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_bundle_after_a_session_holds_no_secret_no_row_and_no_private_name() {
    let world = World::new("diag");
    let dir = world.dir.0.join("diag");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("private.db");
    create_database(&db);
    let key = world.key("Diag");
    let config_path = world.agent_config(
        "Diag",
        key.expose(),
        json!({
            "connections": [{ "name": "erp", "type": "sqlite", "path": db }],
            "schemaPolicy": { "erp": { "privateTables": ["payroll_zq"], "privateColumns": { "staff_zq": ["ssn_zq"] } } },
            "vaultDir": dir.join("vault"),
            "vaultKeyDir": dir.join("vault-keys"),
        }),
    );
    let c = config_path.to_str().unwrap();
    // The API key moves into the vault (apiKeyRef = vault://apikey), with the database and SMTP
    // passwords next to it.
    let (code, out, err) = cli_stdin(&["key", "rotate", "--config", c, "--api-key-stdin"], key.expose());
    assert_eq!(code, Some(0), "{out}{err}");
    std::fs::remove_file(config_path.with_file_name("api-key")).unwrap();
    let config = AgentConfig::load(&config_path).unwrap();
    assert_eq!(config.api_key_ref, "vault://apikey");
    let vault = config.open_vault().unwrap();
    vault.put("db:erp", DB_PASSWORD.as_bytes()).unwrap();
    vault.put("smtp:password", SMTP_PASSWORD.as_bytes()).unwrap();
    drop(vault);

    let events = world.gateway.subscribe();
    let mut agent = AgentProc::start(&config_path);
    wait_event(&events, |e| {
        matches!(e, GatewayEvent::AgentConnected { connector, .. } if connector == "Diag").then_some(())
    });
    // Until the schema is discovered nothing named runs on a connection with private objects.
    let deadline = Instant::now() + WATCHDOG;
    let rows = loop {
        match world.gateway.query("Diag", request("SELECT id, name, city FROM staff_zq ORDER BY id")) {
            Ok(outcome) => break outcome,
            Err(QueryError::Remote(e))
                if e.code.to_string().contains("SCHEMA_ACCESS_DENIED") && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(rows.row_count, 3);
    assert_eq!(rows.rows[0][1], MARKERS[0], "the marker values really travelled");
    let denied = world.gateway.query("Diag", request("SELECT note FROM payroll_zq")).unwrap_err();
    assert!(denied.to_string().contains("SCHEMA_ACCESS_DENIED"), "{denied}");
    // The raw log names the private view (the scrubbing below has something to remove).
    let log_dir = config_path.with_file_name("logs");
    let raw: String = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(raw.contains("v_pay_zq"), "expected the private view in the raw log:\n{raw}");

    let forbidden = forbidden(key.expose(), &[dir.join("vault"), dir.join("vault-keys")]);

    // 1. While the agent runs: it builds the bundle (over the control socket).
    let running = dir.join("running.zip");
    let (code, out, err) =
        cli(&["diag", "bundle", "--config", c, "--out", running.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let info: Value = crate::support::json_answer(&out);
    assert_eq!(info["builtBy"], "agent", "{info}");
    assert_eq!(info["path"], running.to_str().unwrap());
    #[cfg(unix)]
    assert_eq!(mode(&running), 0o600);
    let files = unzip(&running);
    assert_eq!(info["files"].as_array().unwrap().len(), files.len());
    assert_complete(&files, true);
    assert_clean(&files, &forbidden);
    let status: Value = serde_json::from_str(file(&files, "status.json")).unwrap();
    assert_eq!(status["connectorName"], "Diag");

    // Never overwrites: the same path again is refused and the file stays as it was.
    let before = std::fs::read(&running).unwrap();
    let (code, out, err) = cli(&["diag", "bundle", "--config", c, "--out", running.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&running).unwrap(), before);
    // ...also when asked over the socket directly.
    let socket = mini_connector::control::socket_path(&config_path, None);
    let reply = mini_connector::control::call(
        &socket,
        &mini_connector::protocol::control::ControlRequest::DiagBundle {
            out: Some(running.display().to_string()),
        },
    )
    .unwrap();
    assert!(
        matches!(&reply, mini_connector::protocol::control::ControlReply::Error { code, .. } if code == "FILE_EXISTS"),
        "{reply:?}"
    );

    // 2. Stopped: the CLI builds it; with a proxy password in the configuration too.
    let (code, out, err) = cli(&["stop", "--config", c]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(agent.wait_exit(), Some(0));
    let mut raw_config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    raw_config["proxyUrl"] = json!(format!("http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:3128"));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&raw_config).unwrap()).unwrap();
    let here = dir.join("cwd");
    std::fs::create_dir_all(&here).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(["diag", "bundle", "--config", c])
        .current_dir(&here)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("no agent running"), "{stdout}");
    let written: Vec<PathBuf> = std::fs::read_dir(&here).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(written.len(), 1, "one file, no temporary left: {written:?}");
    let name = written[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("mini-connector-diag-Diag-") && name.ends_with("Z.zip"), "{name}");
    let files = unzip(&written[0]);
    assert_complete(&files, false);
    assert_clean(&files, &forbidden);
    let config: Value = serde_json::from_str(file(&files, "config.json")).unwrap();
    assert_eq!(config["proxyUrl"], "http://[credentials removed]@127.0.0.1:3128");
}

#[test]
fn the_desktop_apps_in_process_backend_builds_the_bundle_with_and_without_a_running_agent() {
    use mini_connector::protocol::control::{Backend as _, ControlReply, ControlRequest};
    let world = World::new("diag-local");
    let key = world.key("DiagLocal");
    let config_path = world.agent_config("DiagLocal", key.expose(), json!({}));
    let events = world.gateway.subscribe();
    let backend = mini_connector::handle::LocalBackend::new(config_path.clone());
    wait_event(&events, |e| {
        matches!(e, GatewayEvent::AgentConnected { connector, .. } if connector == "DiagLocal").then_some(())
    });
    let dir = config_path.parent().unwrap().to_owned();
    let ask = |name: &str| {
        backend.request(ControlRequest::DiagBundle { out: Some(dir.join(name).display().to_string()) })
    };

    let ControlReply::Bundle(info) = ask("live.zip") else { panic!("no bundle") };
    assert!(info.files.contains(&"status.json".to_owned()), "{info:?}");
    let files = unzip(Path::new(&info.path));
    assert_clean(&files, &[key.expose().to_owned(), key.expose().split('_').nth(2).unwrap().to_owned()]);
    assert!(matches!(ask("live.zip"), ControlReply::Error { code, .. } if code == "FILE_EXISTS"));
    let relative = backend.request(ControlRequest::DiagBundle { out: Some("relative.zip".into()) });
    assert!(matches!(&relative, ControlReply::Error { code, .. } if code == "INVALID_INPUT"), "{relative:?}");

    assert_eq!(backend.request(ControlRequest::Stop), ControlReply::Stopping);
    let ControlReply::Bundle(info) = ask("stopped.zip") else { panic!("no bundle") };
    assert!(!info.files.contains(&"status.json".to_owned()), "{info:?}");
    assert!(info.files.contains(&"commands.json".to_owned()));
}
