//! `db add|edit|test|list|remove` against the real binary: a real SQLite connection test, a
//! network connection whose password goes to the vault and nowhere else, and bad inputs.

use serde_json::json;

use crate::cli_configure::Sandbox;
use crate::support::sample_erp;

const URL: &str = "wss://console.example.com/ws";
const PASSWORD: &str = "Sup3r-s3cret-DB-passw0rd";

#[test]
fn db_add_tests_a_real_sqlite_database_then_list_and_test_report_it() {
    let sandbox = Sandbox::new("db-sqlite");
    sandbox.configure(URL);
    let erp = sample_erp();
    let out = sandbox
        .run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", erp.to_str().unwrap()], None)
        .ok();
    assert!(out.stdout.contains("connection `erp`") && out.stdout.contains("ok in"), "{out:?}");

    let list = sandbox.run(&["db", "list", "--json"], None).ok().json();
    let connections = list["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0]["name"], "erp");
    assert_eq!(connections[0]["type"], "sqlite");
    assert_eq!(connections[0]["path"], erp.to_str().unwrap());
    assert_eq!(connections[0]["passwordStored"], false);
    let text = sandbox.run(&["db", "list"], None).ok();
    assert!(text.stdout.contains("NAME") && text.stdout.contains("erp"), "{text:?}");

    let tested = sandbox.run(&["db", "test", "erp", "--json"], None).ok().json();
    assert_eq!(tested["name"], "erp");
    assert_eq!(tested["type"], "sqlite");
    assert!(tested["latencyMs"].is_u64(), "{tested}");
    assert!(tested["privileges"]["suggestedSql"].is_string(), "{tested}");

    // A second connection of the same name is refused; edit changes it.
    let out = sandbox.run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", "x.db"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("db edit erp"), "{out:?}");
    sandbox.run(&["db", "edit", "erp", "--pool-max", "3", "--no-test"], None).ok();
    assert_eq!(sandbox.config_json()["connections"][0]["poolMax"], 3);

    sandbox.run(&["db", "remove", "erp"], None).ok();
    let list = sandbox.run(&["db", "list", "--json"], None).ok().json();
    assert_eq!(list["connections"], json!([]));
}

#[test]
fn a_failing_connection_test_reports_the_driver_error_and_saves_nothing() {
    let sandbox = Sandbox::new("db-missing");
    sandbox.configure(URL);
    let missing = sandbox.path("no-such.db");
    let out = sandbox
        .run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", missing.to_str().unwrap()], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot connect to `erp`"), "{out:?}");
    assert!(out.stderr.contains("not found"), "the driver's own reason: {out:?}");
    assert_eq!(sandbox.config_json()["connections"], json!([]));
    // --no-test saves it anyway; `db test` then fails with exit 1.
    sandbox
        .run(
            &[
                "db",
                "add",
                "--name",
                "erp",
                "--type",
                "sqlite",
                "--path",
                missing.to_str().unwrap(),
                "--no-test",
            ],
            None,
        )
        .ok();
    let out = sandbox.run(&["db", "test", "erp", "--json"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["ok"], false);
    assert_eq!(out.json()["error"]["code"], "DATABASE_UNAVAILABLE", "the spec's code: {out:?}");
}

#[test]
fn a_database_password_goes_to_the_vault_and_nowhere_else() {
    let sandbox = Sandbox::new("db-password");
    let key = sandbox.configure(URL);
    let out = sandbox.run(
        &[
            "db",
            "add",
            "--name",
            "sap",
            "--type",
            "postgres",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--database",
            "erp",
            "--user",
            "readonly",
            "--password-stdin",
            "--no-test",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("db:sap"), "{out:?}");

    let list = sandbox.run(&["db", "list", "--json"], None).ok();
    assert!(!list.stdout.contains(PASSWORD));
    let list = list.json();
    assert_eq!(list["connections"][0]["name"], "sap");
    assert_eq!(list["connections"][0]["type"], "postgres");
    assert_eq!(list["connections"][0]["host"], "127.0.0.1");
    assert_eq!(list["connections"][0]["passwordStored"], true);
    let vault = sandbox.run(&["vault", "status", "--json"], None).ok().json();
    assert_eq!(vault["credentials"], json!(["db:sap"]));

    // Nothing listens on port 1: the test fails with the driver's reason, never the password.
    let out = sandbox.run(&["db", "test", "sap"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot connect to `sap`"), "{out:?}");
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD));

    sandbox.assert_nowhere(PASSWORD);
    sandbox.assert_nowhere(key.expose());

    sandbox.run(&["db", "remove", "sap"], None).ok();
    let vault = sandbox.run(&["vault", "status", "--json"], None).ok().json();
    assert_eq!(vault["credentials"], json!([]), "the password left the vault with the connection");
}

#[test]
fn bad_db_inputs_get_clear_errors() {
    let sandbox = Sandbox::new("db-bad");
    sandbox.configure(URL);
    let out = sandbox.run(&["db", "test", "nope"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("unknown connection `nope`"), "{out:?}");
    let out = sandbox.run(&["db", "remove", "nope"], None);
    assert_eq!(out.code, Some(2), "{out:?}");

    // Never a password as a flag value.
    let out = sandbox.run(
        &[
            "db",
            "add",
            "--name",
            "x",
            "--type",
            "postgres",
            "--host",
            "h",
            "--password",
            PASSWORD,
            "--no-test",
        ],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = sandbox.run(
        &["db", "add", "--name", "x", "--type", "postgres", "--host", "h", &format!("--password={PASSWORD}")],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    // Nor inside a connection string.
    let out = sandbox.run(
        &[
            "db",
            "add",
            "--name",
            "x",
            "--type",
            "postgres",
            "--connection-string",
            &format!("postgres://ro:{PASSWORD}@db/erp"),
            "--no-test",
        ],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--password"), "{out:?}");

    let out = sandbox.run(&["db", "add", "--type", "sqlite", "--path", "x.db"], None);
    assert_eq!(out.code, Some(2), "missing --name: {out:?}");
    let out = sandbox.run(&["db", "add", "--name", "x", "--type", "sqlite"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--path"), "{out:?}");
    let out = sandbox.run(&["db", "add", "--name", "x", "--type", "oracle9", "--path", "x.db"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = sandbox
        .run(&["db", "add", "--name", "x", "--type", "postgres", "--host", "h", "--password-stdin"], None);
    assert_eq!(out.code, Some(2), "empty stdin: {out:?}");

    assert_eq!(sandbox.config_json()["connections"], json!([]));
    sandbox.assert_nowhere(PASSWORD);
}

/// `scheme://user:password@host:port/database` from the drivers' test servers
/// (`scripts/db-servers.sh env`).
fn server(var: &str) -> Option<(String, String, String, String, String)> {
    let url = std::env::var(var).ok()?;
    let (_, rest) = url.split_once("://")?;
    let (userinfo, rest) = rest.split_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    let (hostport, database) = rest.split_once('/')?;
    let (host, port) = hostport.split_once(':')?;
    // MongoDB's URL names the login's database after `?authSource=`.
    let database = database.split('?').next().unwrap_or(database);
    Some((user.into(), password.into(), host.into(), port.into(), database.into()))
}

#[test]
fn db_add_and_test_a_real_server_with_the_password_from_the_vault() {
    for (var, kind) in
        [("MC_TEST_PG_URL", "postgres"), ("MC_TEST_MYSQL_URL", "mysql"), ("MC_TEST_MONGO_URL", "mongodb")]
    {
        let Some((user, password, host, port, database)) = server(var) else {
            eprintln!(
                "skipping the {kind} part: {var} is not set (scripts/db-servers.sh start; eval \"$(scripts/db-servers.sh env)\")"
            );
            continue;
        };
        let sandbox = Sandbox::new(&format!("db-{kind}"));
        sandbox.configure(URL);
        let args =
            ["--type", kind, "--host", &host, "--port", &port, "--database", &database, "--user", &user];
        let add = |name: &str, secret: &str| {
            let mut argv = vec!["db", "add", "--name", name, "--password-stdin"];
            argv.extend(args);
            sandbox.run(&argv, Some(&format!("{secret}\n")))
        };
        let out = add("wrong", "not-the-password");
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("authentication failed"), "the driver's reason: {out:?}");
        assert!(!out.stderr.contains("not-the-password"));

        let out = add("erp", &password);
        assert_eq!(out.code, Some(0), "{out:?}");
        let tested = sandbox.run(&["db", "test", "erp", "--json"], None).ok().envelope();
        assert_eq!(tested["ok"], true, "the stored password opens it: {tested}");
        let tested = &tested["data"];
        assert_eq!(tested["privileges"]["canWrite"], false, "{tested}");
        sandbox.assert_nowhere(&password);
    }
}

#[test]
fn tls_settings_are_stored_validated_and_used() {
    let (Some((user, password, _, port, database)), Ok(ca)) =
        (server("MC_TEST_PG_URL"), std::env::var("MC_DB_CA"))
    else {
        eprintln!(
            "skipping: MC_TEST_PG_URL / MC_DB_CA not set (scripts/db-servers.sh start; eval \"$(scripts/db-servers.sh env)\")"
        );
        return;
    };
    let sandbox = Sandbox::new("db-tls");
    sandbox.configure(URL);
    let base = ["--type", "postgres", "--port", &port, "--database", &database, "--user", &user];
    let add = |name: &str, extra: &[&str]| {
        let mut argv = vec!["db", "add", "--name", name, "--password-stdin"];
        argv.extend(base);
        argv.extend(extra);
        sandbox.run(&argv, Some(&format!("{password}\n")))
    };
    // The test servers' certificate names `localhost` and comes from the CA in MC_DB_CA.
    let out = add("erp", &["--host", "localhost", "--ssl-mode", "verify-full", "--ssl-root-cert", &ca]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let stored = &sandbox.config_json()["connections"][0];
    assert_eq!(
        (stored["sslMode"].as_str(), stored["sslRootCert"].as_str()),
        (Some("verify-full"), Some(ca.as_str()))
    );
    // The same certificate does not name 127.0.0.1: the connection test says why.
    let out = add("by-ip", &["--host", "127.0.0.1", "--ssl-mode", "verify-full", "--ssl-root-cert", &ca]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("TLS") && out.stderr.contains("127.0.0.1"), "{out:?}");
    let out = add("bad", &["--host", "h", "--ssl-mode", "verify-everything", "--no-test"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("verify-full"), "{out:?}");
    let out = add("bad", &["--host", "h", "--ssl-mode", "verify-ca", "--no-test"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("sslRootCert"), "{out:?}");
    let out =
        add("clear", &["--host", "127.0.0.1", "--allow-cleartext-password", "true", "--ssl-mode", "disable"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let stored = &sandbox.config_json()["connections"][1];
    assert_eq!(stored["allowCleartextPassword"], true, "{stored}");
    sandbox.assert_nowhere(&password);
}

/// MongoDB and Tally connections are configured like the others: the fields each needs, the
/// Tally company (Unicode kept as written), and no password for TallyPrime's gateway.
#[test]
fn mongodb_and_tally_connections_are_stored_with_their_own_fields() {
    let sandbox = Sandbox::new("db-mongo-tally");
    sandbox.configure(URL);
    let out = sandbox.run(&["db", "add", "--name", "docs", "--type", "mongodb", "--no-test"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--type mongodb needs --host"), "{out:?}");
    let out = sandbox.run(
        &["db", "add", "--name", "books", "--type", "tally", "--company", "x", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--type tally has no password"), "{out:?}");
    let out = sandbox.run(
        &["db", "add", "--name", "books", "--type", "tally", "--company", "x", "--dsn", "erp", "--no-test"],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");

    let company = "शर्मा ट्रेडर्स";
    for args in [
        &[
            "db",
            "add",
            "--name",
            "docs",
            "--type",
            "mongo",
            "--host",
            "127.0.0.1",
            "--database",
            "erp",
            "--no-test",
        ][..],
        &[
            "db",
            "add",
            "--name",
            "books",
            "--type",
            "tally",
            "--port",
            "9000",
            "--company",
            company,
            "--no-test",
        ],
    ] {
        let out = sandbox.run(args, None);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let connections = sandbox.config_json()["connections"].clone();
    assert_eq!(connections[0]["type"], json!("mongodb"));
    assert_eq!(connections[0]["database"], json!("erp"));
    assert_eq!(connections[1]["type"], json!("tally"));
    assert_eq!(connections[1]["company"], json!(company));
    assert_eq!(connections[1]["port"], json!(9000));
    sandbox.assert_nowhere(PASSWORD);
}
