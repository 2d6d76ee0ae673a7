//! The setup library (`mini_connector::setup`) as the desktop app and the control socket use
//! it: temp configurations, a real SQLite file, the real reference gateway for the key check,
//! and the real PostgreSQL / MariaDB servers (`scripts/db-servers.sh`) for connection tests.

use std::path::{Path, PathBuf};

use mini_connector::protocol::ApiKey;
use mini_connector::protocol::control::{
    ControlReply, DatabaseForm, SchemaChange, SettingsChange, SetupRequest,
};
use mini_connector::setup::{self, SetupError};

use crate::support::{DbUrl, TempDir, World, server_url};

/// A configured temp directory: `etc/config.json`, the vault under `vault/`, its key under
/// `vault-keys/`, and a fresh copy of the sample ERP as `erp.db`.
struct Setup {
    dir: TempDir,
    config: PathBuf,
    key: ApiKey,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let config = dir.0.join("etc").join("config.json");
        let key = ApiKey::generate("acme").unwrap();
        let view = setup::configure(
            &config,
            SettingsChange {
                connector_name: Some("Warehouse".into()),
                cloud_url: Some("wss://console.example.com/ws".into()),
                api_key: Some(key.expose().to_owned()),
                vault_dir: Some(dir.0.join("vault").display().to_string()),
                vault_key_dir: Some(dir.0.join("vault-keys").display().to_string()),
                ..SettingsChange::default()
            },
        )
        .unwrap();
        assert_eq!(view.api_key_masked.as_deref(), Some(key.masked().as_str()));
        drivers::fixture::create_sample_erp(&dir.0.join("erp.db"), 1).unwrap();
        Self { dir, config, key }
    }

    fn erp(&self) -> String {
        self.dir.0.join("erp.db").display().to_string()
    }

    fn sqlite_form(&self, name: &str) -> DatabaseForm {
        DatabaseForm {
            name: name.into(),
            kind: "sqlite".into(),
            path: Some(self.erp()),
            ..DatabaseForm::default()
        }
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    crate::cli_configure::files_under(dir)
}

#[test]
fn settings_show_the_key_masked_and_configure_changes_fields() {
    let s = Setup::new("setup-settings");
    let view = setup::settings(&s.config).unwrap();
    let masked = view.api_key_masked.clone().unwrap();
    // vmc_<tenant>_****_<last 5>: the prefix and the checksum, never the random part.
    assert_eq!(masked, format!("vmc_acme_****_{}", &s.key.expose()[s.key.expose().len() - 5..]));
    assert!(!view.pin_set);
    assert_eq!(view.connector_name, "Warehouse");

    let view = setup::configure(
        &s.config,
        SettingsChange {
            connector_name: Some("Depot".into()),
            proxy_url: Some("http://user:secret@proxy.local:3128".into()),
            log_level: Some("DEBUG".into()),
            auto_update: Some(false),
            ..SettingsChange::default()
        },
    )
    .unwrap();
    assert_eq!(view.connector_name, "Depot");
    assert_eq!(view.log_level, "debug");
    assert!(!view.auto_update);
    assert_eq!(view.proxy_url.as_deref(), Some("http://proxy.local:3128"), "credentials removed");
    // `Some("")` clears an optional field.
    let view = setup::configure(
        &s.config,
        SettingsChange { proxy_url: Some(String::new()), ..SettingsChange::default() },
    )
    .unwrap();
    assert_eq!(view.proxy_url, None);

    // Bad values are refused with INVALID_INPUT and change nothing.
    let before = s.config_text();
    for change in [
        SettingsChange { log_level: Some("loud".into()), ..SettingsChange::default() },
        SettingsChange { cloud_url: Some("ws://plain.example.com".into()), ..SettingsChange::default() },
        SettingsChange { api_key: Some("vmc_acme_notakey_00000".into()), ..SettingsChange::default() },
        SettingsChange { heartbeat_interval_ms: Some(5), ..SettingsChange::default() },
    ] {
        let e = setup::configure(&s.config, change.clone()).unwrap_err();
        assert_eq!(e.code(), "INVALID_INPUT", "{change:?}: {e}");
    }
    assert_eq!(s.config_text(), before);

    // A new configuration needs a name, a URL and a key.
    let fresh = s.dir.0.join("other").join("config.json");
    let e = setup::configure(&fresh, SettingsChange::default()).unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    assert!(!fresh.exists());
    assert_eq!(setup::settings(&fresh).unwrap_err().code(), "NOT_CONFIGURED");
}

#[test]
fn key_rotate_stores_the_new_key() {
    let s = Setup::new("setup-rotate");
    let new = ApiKey::generate("acme").unwrap();
    let (key, config, old) = setup::store_api_key(&s.config, new.expose()).unwrap();
    assert_eq!(key.masked(), new.masked());
    assert_eq!(old, None, "same store");
    assert_eq!(config.load_api_key().unwrap().expose(), new.expose());
    let e = setup::store_api_key(&s.config, "vmc_acme_abcdefghijklmn_zzzzz").unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    assert!(!e.to_string().contains("abcdefghijklmn"), "the key is not echoed: {e}");
}

#[test]
fn check_key_validates_offline_then_reaches_the_cloud() {
    let world = World::new("setup-check-key");
    let s = Setup::new("setup-check-key-cfg");
    // The gateway's CA, so the TLS handshake can succeed.
    setup::configure(
        &s.config,
        SettingsChange {
            ca_cert_path: Some(world.gateway.ca_cert_path().display().to_string()),
            ..SettingsChange::default()
        },
    )
    .unwrap();
    let key = world.key("wizard");
    let url = world.gateway.ws_url();

    let report = setup::check_key(&s.config, key.expose(), Some(&url)).unwrap();
    assert!(report.format_ok && report.reachable, "{report:?}");
    assert_eq!(report.accepted, None, "the key is not sent");
    assert!(report.latency_ms.is_some());
    assert!(report.message.contains("answered"), "{report:?}");

    // A broken checksum: caught offline.
    let mut broken = key.expose().to_owned();
    let last = broken.pop().unwrap();
    broken.push(if last == '0' { '1' } else { '0' });
    let report = setup::check_key(&s.config, &broken, Some(&url)).unwrap();
    assert!(!report.format_ok, "{report:?}");
    assert!(report.message.contains("checksum"), "{report:?}");
    assert!(!report.message.contains(&broken[9..20]), "no part of the key is echoed");

    // Nobody listening: not reachable, in words, quickly.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = std::time::Instant::now();
    let report =
        setup::check_key(&s.config, key.expose(), Some(&format!("wss://127.0.0.1:{closed}/ws"))).unwrap();
    assert!(report.format_ok && !report.reachable, "{report:?}");
    assert!(report.message.contains("cannot reach 127.0.0.1"), "{report:?}");
    assert!(started.elapsed() < setup::settings::REACH_TIMEOUT * 2);

    // The same through execute(): the reply never carries the key.
    let reply = setup::execute(
        &s.config,
        SetupRequest::CheckKey { api_key: key.expose().to_owned(), cloud_url: Some(url) },
    );
    assert!(matches!(&reply, ControlReply::Key(r) if r.reachable), "{reply:?}");
    assert!(!serde_json::to_string(&reply).unwrap().contains(key.expose()));
}

#[test]
fn a_sqlite_database_is_tested_saved_listed_renamed_and_removed() {
    let s = Setup::new("setup-sqlite");
    let report = setup::test_database(&s.config, s.sqlite_form("erp")).unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.message.contains("SQLite 3."), "the server version: {report:?}");
    assert_eq!(report.code, None);

    let entry = setup::save_database(&s.config, s.sqlite_form("erp"), None).unwrap();
    assert_eq!(entry.form.kind, "sqlite");
    assert_eq!(entry.form.path.as_deref(), Some(s.erp().as_str()));
    assert!(!entry.has_password);
    // Saving the same name again is refused; an edit replaces it.
    let e = setup::save_database(&s.config, s.sqlite_form("erp"), None).unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");

    // The form round-trips through the configuration.
    let listed = setup::list_databases(&s.config).unwrap();
    assert_eq!(listed.len(), 1);
    let back = setup::databases::connection_from_form(&listed[0].form).unwrap();
    assert_eq!(back, mini_connector::config::AgentConfig::load(&s.config).unwrap().connections[0]);

    // Private marks travel with a rename.
    setup::set_private(&s.config, "erp", "customers", Some("email"), true).unwrap();
    setup::approve_schema(&s.config, "erp").unwrap();
    let mut renamed = listed[0].form.clone();
    renamed.name = "sales".into();
    setup::save_database(&s.config, renamed, Some("erp")).unwrap();
    let listed = setup::list_databases(&s.config).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].form.name, "sales");
    assert_eq!(listed[0].private, vec!["customers.email".to_owned()]);
    let view = setup::discover(&s.config, "sales").unwrap();
    assert!(view.approved_before, "the approved snapshot moved too");
    assert!(view.changes.is_empty(), "{:?}", view.changes);

    let removed = setup::remove_database(&s.config, "sales").unwrap();
    assert!(!removed.password_removed);
    assert!(setup::list_databases(&s.config).unwrap().is_empty());
    assert!(!s.config_text().contains("schemaPolicy"), "its policy went with it");
    assert_eq!(setup::remove_database(&s.config, "sales").unwrap_err().code(), "UNKNOWN_CONNECTION");

    // A missing file: a failed test with its code, not an error.
    let mut missing = s.sqlite_form("gone");
    missing.path = Some(s.dir.0.join("no-such.db").display().to_string());
    let report = setup::test_database(&s.config, missing).unwrap();
    assert!(!report.ok);
    assert_eq!(report.code.as_deref(), Some("DATABASE_UNAVAILABLE"));
    assert!(report.message.contains("not found"), "{report:?}");
}

#[test]
fn bad_forms_and_unsupported_types_are_refused_with_a_reason() {
    let s = Setup::new("setup-forms");
    let refuse = |form: DatabaseForm, needle: &str| {
        let e = setup::save_database(&s.config, form.clone(), None).unwrap_err();
        assert_eq!(e.code(), "INVALID_INPUT", "{form:?}: {e}");
        assert!(e.to_string().contains(needle), "{form:?}: {e}");
        let reply = setup::execute(&s.config, SetupRequest::TestDatabase(form));
        assert!(
            matches!(reply, ControlReply::Error { ref code, .. } if code == "INVALID_INPUT"),
            "{reply:?}"
        );
    };
    let form = |kind: &str| DatabaseForm { name: "x".into(), kind: kind.into(), ..DatabaseForm::default() };
    refuse(form("mongodb"), "`host` or `connectionString` is required for mongodb");
    refuse(DatabaseForm { password: Some("x".into()), ..form("tally") }, "tally takes no password");
    refuse(form("oracle9"), "unsupported database type");
    refuse(form("sqlite"), "database file");
    refuse(form("postgres"), "host");
    refuse(DatabaseForm { name: " x".into(), ..s.sqlite_form("x") }, "outer spaces");
    refuse(
        DatabaseForm {
            host: Some("db".into()),
            connection_string: Some("postgres://ro:hunter2@db/erp".into()),
            ..form("postgres")
        },
        "must not contain a password",
    );
    refuse(
        DatabaseForm { host: Some("db".into()), ssl_mode: Some("maybe".into()), ..form("postgres") },
        "TLS mode",
    );
    let mut unknown = form("postgres");
    unknown.host = Some("db".into());
    unknown.options.insert("frobnicate".into(), serde_json::json!(true));
    refuse(unknown, "frobnicate");
    let with_password = DatabaseForm { password: Some("pw".into()), ..s.sqlite_form("x") };
    refuse(with_password, "no password");
    // SQL Server, Oracle and HANA go through ODBC: refused only where ODBC is not built in.
    let mssql = DatabaseForm { dsn: Some("ERP".into()), ..form("sqlserver") };
    let result = setup::databases::connection_from_form(&mssql);
    assert_eq!(result.is_ok(), drivers::ODBC_SUPPORT, "{result:?}");
    match result {
        Ok(connection) => {
            assert_eq!(connection.kind, drivers::DbKind::Odbc);
            assert_eq!(connection.dialect, Some(drivers::OdbcDialect::SqlServer));
        }
        Err(e) => assert!(e.to_string().contains("ODBC"), "{e}"),
    }
    assert!(setup::list_databases(&s.config).unwrap().is_empty());
}

fn pg_form(url: &DbUrl, name: &str) -> DatabaseForm {
    DatabaseForm {
        name: name.into(),
        kind: "postgres".into(),
        host: Some(url.host.clone()),
        port: Some(url.port),
        database: Some(url.database.clone()),
        user: Some(url.user.clone()),
        password: Some(url.password.clone()),
        ..DatabaseForm::default()
    }
}

#[test]
fn real_servers_are_tested_with_the_version_or_the_specific_error() {
    let Some(pg) = server_url("MC_TEST_PG_URL") else { return };
    let Some(my) = server_url("MC_TEST_MYSQL_URL") else { return };
    let (pg, my) = (DbUrl::parse(&pg), DbUrl::parse(&my));
    let s = Setup::new("setup-servers");

    let report = setup::test_database(&s.config, pg_form(&pg, "pg")).unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.message.contains("PostgreSQL"), "{report:?}");
    let report = setup::test_database(
        &s.config,
        DatabaseForm {
            kind: "mysql".into(),
            port: Some(my.port),
            user: Some(my.user.clone()),
            ..pg_form(&my, "my")
        },
    )
    .unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.message.contains("MySQL/MariaDB") && report.message.contains("MariaDB"), "{report:?}");

    // Wrong password: the server's reason and DATABASE_UNAVAILABLE.
    let wrong = DatabaseForm { password: Some("not-the-password".into()), ..pg_form(&pg, "pg") };
    let report = setup::test_database(&s.config, wrong).unwrap();
    assert!(!report.ok);
    assert_eq!(report.code.as_deref(), Some("DATABASE_UNAVAILABLE"));
    assert!(report.message.contains("authentication failed"), "{report:?}");
    assert!(!report.message.contains("not-the-password"));

    // Nobody on the port: refused, quickly, same code.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let report =
        setup::test_database(&s.config, DatabaseForm { port: Some(closed), ..pg_form(&pg, "pg") }).unwrap();
    assert!(!report.ok);
    assert_eq!(report.code.as_deref(), Some("DATABASE_UNAVAILABLE"));
    assert!(report.elapsed_ms < setup::databases::TEST_TIMEOUT.as_millis() as u64 + 2_000, "{report:?}");

    // Saved with its password in the vault; an edit without a password keeps it; a rename
    // moves it.
    let entry = setup::save_database(&s.config, pg_form(&pg, "pg"), None).unwrap();
    assert!(entry.has_password);
    assert!(!s.config_text().contains(&pg.password));
    let mut edit = entry.form.clone();
    edit.name = "erp-pg".into();
    let report = setup::test_database(&s.config, DatabaseForm { name: "pg".into(), ..edit.clone() }).unwrap();
    assert!(report.ok, "the stored password is used: {report:?}");
    let entry = setup::save_database(&s.config, edit, Some("pg")).unwrap();
    assert!(entry.has_password, "the password moved with the rename");
    let config = mini_connector::config::AgentConfig::load(&s.config).unwrap();
    assert!(config.db_password("pg").unwrap().is_none());
    assert_eq!(config.db_password("erp-pg").unwrap().unwrap().expose(), pg.password);
    let report = setup::test_database(&s.config, DatabaseForm { password: None, ..entry.form }).unwrap();
    assert!(report.ok, "{report:?}");
    let removed = setup::remove_database(&s.config, "erp-pg").unwrap();
    assert!(removed.password_removed);
}

#[test]
fn the_schema_browser_discovers_diffs_against_the_approved_schema_and_samples_locally() {
    let s = Setup::new("setup-schema");
    setup::save_database(&s.config, s.sqlite_form("erp"), None).unwrap();

    let view = setup::discover(&s.config, "erp").unwrap();
    assert!(!view.approved_before);
    assert!(view.changes.is_empty());
    assert!(view.schema.tables.iter().any(|t| t.name == "customers"));

    let view = setup::approve_schema(&s.config, "erp").unwrap();
    assert!(view.approved_before && view.changes.is_empty());
    let approved = setup::schema::approved_file(&s.config, "erp");
    assert!(approved.exists());

    // The database changes: the next discovery lists the changes against the approved one.
    {
        let db = rusqlite::Connection::open(s.erp()).unwrap();
        db.execute_batch("CREATE TABLE refunds (id INTEGER PRIMARY KEY, total REAL); ALTER TABLE customers ADD COLUMN vip INTEGER;")
            .unwrap();
    }
    let view = setup::discover(&s.config, "erp").unwrap();
    assert!(
        view.changes.contains(&SchemaChange::TableAdded { table: "refunds".into() }),
        "{:?}",
        view.changes
    );
    assert!(
        view.changes.contains(&SchemaChange::ColumnAdded { table: "customers".into(), column: "vip".into() }),
        "{:?}",
        view.changes
    );
    // Unapproved tables stay hidden from the cloud until approved.
    let policy = &mini_connector::config::AgentConfig::load(&s.config).unwrap().schema_policy["erp"];
    assert!(!policy.approved_tables.as_ref().unwrap().contains("refunds"));
    let view = setup::approve_schema(&s.config, "erp").unwrap();
    assert!(view.changes.is_empty());

    // Samples: at most 20 rows, private columns never read.
    let view = setup::set_private(&s.config, "erp", "customers", Some("email"), true).unwrap();
    assert_eq!(view.private_columns, vec!["customers.email".to_owned()]);
    let rows = setup::sample(&s.config, "erp", "customers", 500).unwrap();
    assert_eq!(rows.rows.len(), 20);
    let email = rows.columns.iter().position(|c| c == "email").unwrap();
    let name = rows.columns.iter().position(|c| c == "name").unwrap();
    assert!(rows.rows.iter().all(|r| r[email].is_none() && r[name].is_some()));
    let rows = setup::sample(&s.config, "erp", "customers", 3).unwrap();
    assert_eq!(rows.rows.len(), 3);

    setup::set_private(&s.config, "erp", "orders", None, true).unwrap();
    let e = setup::sample(&s.config, "erp", "orders", 5).unwrap_err();
    assert_eq!(e.code(), "SCHEMA_ACCESS_DENIED", "{e}");
    // Public again.
    let view = setup::set_private(&s.config, "erp", "orders", None, false).unwrap();
    assert!(view.private_tables.is_empty());
    assert_eq!(setup::sample(&s.config, "erp", "orders", 2).unwrap().rows.len(), 2);
    assert_eq!(setup::sample(&s.config, "erp", "nosuch", 2).unwrap_err().code(), "INVALID_INPUT");
    assert_eq!(setup::discover(&s.config, "nope").unwrap_err().code(), "UNKNOWN_CONNECTION");
}

#[test]
fn the_pin_is_stored_hashed_checked_and_rate_limited() {
    let s = Setup::new("setup-pin");
    // No PIN: everything passes.
    setup::verify_pin(&s.config, "0000").unwrap();
    assert!(matches!(setup::set_pin(&s.config, None, Some("12a4")), Err(SetupError::Invalid(_))));
    setup::set_pin(&s.config, None, Some("482915")).unwrap();
    let text = s.config_text();
    assert!(text.contains("localPinHash") && text.contains("pbkdf2-sha256$"), "{text}");
    assert!(!text.contains("482915"));
    assert!(setup::settings(&s.config).unwrap().pin_set);

    setup::verify_pin(&s.config, "482915").unwrap();
    assert_eq!(setup::verify_pin(&s.config, "000000").unwrap_err().code(), "PIN_INVALID");
    // Changing it needs the current one.
    assert_eq!(setup::set_pin(&s.config, None, Some("1111")).unwrap_err().code(), "INVALID_INPUT");
    assert_eq!(setup::set_pin(&s.config, Some("9999"), Some("1111")).unwrap_err().code(), "PIN_INVALID");
    setup::set_pin(&s.config, Some("482915"), Some("1111")).unwrap();
    setup::verify_pin(&s.config, "1111").unwrap();

    // Five wrong in a row: locked, even for the right PIN.
    for _ in 0..4 {
        assert_eq!(setup::verify_pin(&s.config, "2222").unwrap_err().code(), "PIN_INVALID");
    }
    let e = setup::verify_pin(&s.config, "2222").unwrap_err();
    assert!(matches!(e, SetupError::PinLocked(secs) if secs >= 30), "{e}");
    assert_eq!(setup::verify_pin(&s.config, "1111").unwrap_err().code(), "PIN_LOCKED");
    let reply = setup::execute(&s.config, SetupRequest::VerifyPin { pin: "1111".into() });
    assert!(matches!(reply, ControlReply::Error { ref code, .. } if code == "PIN_LOCKED"), "{reply:?}");
}

#[test]
fn install_writes_the_unit_and_returns_what_it_did() {
    let s = Setup::new("setup-service");
    let units = s.dir.0.join("units");
    let options =
        setup::service::Options { unit_dir: Some(units.clone()), no_start: true, ..Default::default() };
    let log = setup::service::install(&s.config, &options).unwrap();
    let unit = units.join("mini-connector.service");
    assert!(unit.exists());
    assert!(log.lines[0].contains(&unit.display().to_string()), "{log:?}");
    assert!(log.message().contains("start --config"), "{log:?}");
    let found = setup::service::status(Some(units.clone())).unwrap();
    assert!(found.registered);
    assert_eq!(found.config.as_deref(), Some(s.config.as_path()));
    let bad = setup::service::Options { user: "Bad User".into(), ..options };
    assert_eq!(setup::service::install(&s.config, &bad).unwrap_err().code(), "INVALID_INPUT");
    setup::service::uninstall(Some(units.clone())).unwrap();
    assert!(!unit.exists());
}

/// A scripted session through `execute`, as the GUI drives it: no reply, error or file holds
/// the database password or the API key.
#[test]
fn no_reply_ever_carries_a_password_or_the_api_key() {
    let s = Setup::new("setup-secrets");
    let password = "Sup3r-Secret-Passw0rd";
    let mut replies = Vec::new();
    let mut run = |request: SetupRequest| {
        let reply = setup::execute(&s.config, request);
        replies.push(serde_json::to_string(&reply).unwrap());
        reply
    };
    let pg_like = DatabaseForm {
        name: "pg".into(),
        kind: "postgres".into(),
        host: Some("127.0.0.1".into()),
        port: Some(9),
        user: Some("ro".into()),
        password: Some(password.into()),
        ..DatabaseForm::default()
    };
    run(SetupRequest::Settings);
    run(SetupRequest::CheckKey {
        api_key: s.key.expose().into(),
        cloud_url: Some("wss://127.0.0.1:9/ws".into()),
    });
    run(SetupRequest::CheckKey { api_key: format!("{}x", s.key.expose()), cloud_url: None });
    run(SetupRequest::Configure(SettingsChange {
        api_key: Some(s.key.expose().into()),
        ..SettingsChange::default()
    }));
    run(SetupRequest::Configure(SettingsChange {
        api_key: Some(format!("{}0", s.key.expose())),
        ..SettingsChange::default()
    }));
    run(SetupRequest::TestDatabase(pg_like.clone()));
    let saved = run(SetupRequest::SaveDatabase { form: pg_like.clone(), replace: None });
    assert!(matches!(&saved, ControlReply::Databases(list) if list[0].has_password), "{saved:?}");
    run(SetupRequest::ListDatabases);
    run(SetupRequest::TestDatabase(DatabaseForm { password: None, ..pg_like.clone() }));
    run(SetupRequest::SaveDatabase {
        form: DatabaseForm {
            connection_string: Some(format!("postgres://ro:{password}@h/db")),
            ..pg_like.clone()
        },
        replace: Some("pg".into()),
    });
    run(SetupRequest::SaveDatabase {
        form: DatabaseForm { name: "pg2".into(), ..pg_like },
        replace: Some("pg".into()),
    });
    run(SetupRequest::Discover { connection: "pg2".into() });
    run(SetupRequest::Sample { connection: "pg2".into(), table: "t".into(), limit: 5 });
    run(SetupRequest::SetPin { current: None, new: Some("123456".into()) });
    run(SetupRequest::VerifyPin { pin: "654321".into() });
    run(SetupRequest::RemoveDatabase { name: "pg2".into() });
    run(SetupRequest::Settings);
    let random = s.key.expose().split('_').nth(2).unwrap().to_owned();
    for reply in &replies {
        assert!(!reply.contains(password), "{reply}");
        assert!(!reply.contains(&random), "{reply}");
        assert!(!reply.contains("123456") && !reply.contains("654321"), "{reply}");
    }
    assert!(replies.iter().any(|r| r.contains("vmc_acme_****_")), "the masked key is shown");
    for file in files(&s.dir.0) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in [password, random.as_str(), "123456"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
}
