//! `db add|edit|test|list|remove`: the local databases, their passwords in the vault.
//!
//! The flags edit a connection as the JSON object it is in the configuration file, then read it
//! back as a `ConnectionConfig`, so this module does not depend on which fields each database
//! type has; a flag whose field this build does not know is refused, never silently dropped.
//! Passwords come from a no-echo prompt (`--password`) or stdin (`--password-stdin`), never
//! from a flag value. Testing, saving (password into the vault under `db:<name>`), listing and
//! removing are `mini_connector::setup::databases`; this module parses, prompts and prints.

use std::path::PathBuf;
use std::str::FromStr as _;

use drivers::DbKind;
use mini_connector::config::{AgentConfig, ConnectionConfig};
use mini_connector::secrets::db_password_id;
use mini_connector::setup::databases::{PasswordChange, Probe, TEST_TIMEOUT, describe, target};
use mini_connector::setup::{self, databases};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::output::{self, escape};
use super::{ConfigArg, Fail, Outcome, absolute, print_json, secret_from_prompt, secret_from_stdin};
use crate::exit;

/// `db`: the local databases.
#[derive(Debug, clap::Subcommand)]
pub enum DbCmd {
    /// Add a database connection. Tests it first (unless --no-test) and stores its password
    /// in the vault.
    #[command(after_help = "\
Examples:
  mini-connector db add --name erp --type sqlite --path /srv/erp/erp.db
  mini-connector db add --name sap --type postgres --host db.local --port 5432 --database erp --user readonly --password
  printf '%s\\n' \"$PGPASSWORD\" | mini-connector db add --name sap --type postgres --host db.local --database erp --user readonly --password-stdin
  mini-connector db add --name stock --type mysql --host 127.0.0.1 --db stock --user ro --password
  mini-connector db add --name mssql --type odbc --dsn ERP --dialect sqlserver --user ro --password

The password is asked for without echo (--password) or read from stdin (--password-stdin);
it is never accepted as a flag value. It is stored encrypted in the vault (id db:<name>).

Exit codes: 0 ok; 1 the connection test failed (nothing saved); 2 bad usage, a name that
exists, or an invalid value; 4 VAULT_DECRYPT_ERROR (see `mini-connector vault reset`).")]
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Name the cloud console uses for this connection.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: ConnFields,
        #[command(flatten)]
        password: PasswordInput,
        /// Save without trying to connect.
        #[arg(long)]
        no_test: bool,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"connection", "action", "passwordStored", "test", "agent"}}.
        #[arg(long)]
        json: bool,
    },
    /// Change a connection: only the given flags change; an empty value removes a field.
    #[command(after_help = "\
Examples:
  mini-connector db edit sap --password            # new password, asked without echo
  mini-connector db edit sap --host db2.local --port 5433
  mini-connector db edit sap --remove-password

Exit codes: 0 ok; 1 the connection test failed (nothing saved); 2 unknown connection or bad
value; 4 VAULT_DECRYPT_ERROR.")]
    Edit {
        #[command(flatten)]
        config: ConfigArg,
        /// The connection to change.
        name: String,
        #[command(flatten)]
        fields: ConnFields,
        #[command(flatten)]
        password: PasswordInput,
        /// Delete the stored password (trust/peer authentication, or a password reference).
        #[arg(long, conflicts_with_all = ["password", "password_stdin"])]
        remove_password: bool,
        /// Save without trying to connect.
        #[arg(long)]
        no_test: bool,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"connection", "action", "password", "test", "agent"}}.
        #[arg(long)]
        json: bool,
    },
    /// Connect to a configured database with its stored password, run `SELECT 1`, and check
    /// whether its user could write.
    #[command(
        after_help = "Exit codes: 0 ok; 1 the connection failed; 2 unknown connection; 4 VAULT_DECRYPT_ERROR."
    )]
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// The connection to test.
        name: String,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"name", "type", "latencyMs",
        /// "serverVersion", "privileges", "privilegeError"}}; a failed test is
        /// {"ok": false, "error": {"code", "message"}}.
        #[arg(long)]
        json: bool,
    },
    /// List the configured connections and whether a password is stored (never the password).
    #[command(after_help = "Exit codes: 0 ok; 2 bad configuration.")]
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON: {"ok": true, "data": {"connections": [{"name", "type", ..., "passwordStored"}]}}.
        #[arg(long)]
        json: bool,
    },
    /// Remove a connection and its stored password.
    #[command(after_help = "Exit codes: 0 ok; 2 unknown connection.")]
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The connection to remove.
        name: String,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"connection", "action", "passwordRemoved", "agent"}}.
        #[arg(long)]
        json: bool,
    },
}

/// The connection fields a flag can set (all optional; which are needed depends on --type).
#[derive(Debug, Default, clap::Args)]
pub struct ConnFields {
    /// Database type: sqlite, postgres (postgresql, pg), mysql (mariadb), odbc, mongodb (mongo),
    /// tally.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// SQLite: the database file (stored as an absolute path).
    #[arg(long, value_name = "FILE", value_parser = super::path_or_empty)]
    path: Option<PathBuf>,
    /// PostgreSQL / MySQL: server host name or address.
    #[arg(long)]
    host: Option<String>,
    /// PostgreSQL / MySQL: TCP port (default 5432 / 3306); "" or 0 removes it.
    #[arg(long, value_parser = super::port_or_empty)]
    port: Option<u16>,
    /// Database (schema) name.
    #[arg(long, visible_alias = "db", value_name = "NAME")]
    database: Option<String>,
    /// Database user (ideally a SELECT-only one).
    #[arg(long)]
    user: Option<String>,
    /// ODBC: data source name from odbc.ini.
    #[arg(long)]
    dsn: Option<String>,
    /// A driver connection string instead of host/port/... It must not contain a password:
    /// use --password, which goes to the vault.
    #[arg(long, value_name = "STRING")]
    connection_string: Option<String>,
    /// PostgreSQL / MySQL TLS: disable, prefer, require, verify-ca, verify-full.
    #[arg(long, value_name = "MODE")]
    ssl_mode: Option<String>,
    /// PEM file of the CA the server certificate must chain to (verify-ca, verify-full);
    /// stored as an absolute path; "" removes it.
    #[arg(long, value_name = "FILE", value_parser = super::path_or_empty)]
    ssl_root_cert: Option<PathBuf>,
    /// Let the password travel in clear text when the server asks for it on a connection
    /// without TLS (true/false; default false).
    #[arg(long, value_name = "BOOL")]
    allow_cleartext_password: Option<bool>,
    /// ODBC: the database behind the DSN: sqlserver, oracle, hana, postgres, mysql, sqlite,
    /// generic.
    #[arg(long, value_name = "NAME")]
    dialect: Option<String>,
    /// Tally: the company to export from (default: the company loaded in TallyPrime); "" removes it.
    #[arg(long, value_name = "NAME")]
    company: Option<String>,
    /// Pool: fewest idle connections kept.
    #[arg(long, value_name = "N")]
    pool_min: Option<u32>,
    /// Pool: most connections.
    #[arg(long, value_name = "N")]
    pool_max: Option<u32>,
}

/// Where a database password comes from: never a flag value.
#[derive(Debug, clap::Args)]
pub struct PasswordInput {
    /// Ask for the database password on the terminal, without echo.
    #[arg(long, conflicts_with = "password_stdin")]
    password: bool,
    /// Read the database password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordInput {
    fn read(&self) -> Result<Option<Zeroizing<String>>, Fail> {
        if self.password_stdin {
            secret_from_stdin("password").map(Some)
        } else if self.password {
            secret_from_prompt("Database password: ", "password", "--password-stdin").map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `db ...`.
pub fn db(command: DbCmd) -> Outcome {
    match command {
        DbCmd::Add { config, name, fields, password, no_test, json } => {
            add(&config, &name, &fields, &password, no_test, json)
        }
        DbCmd::Edit { config, name, fields, password, remove_password, no_test, json } => {
            edit(&config, &name, &fields, &password, Change { remove_password, no_test, json })
        }
        DbCmd::Test { config, name, json } => test(&config, &name, json),
        DbCmd::List { config, json } => list(&config, json),
        DbCmd::Remove { config, name, json } => remove(&config, &name, json),
    }
}

/// `db edit`'s switches.
struct Change {
    remove_password: bool,
    no_test: bool,
    json: bool,
}

fn add(
    arg: &ConfigArg,
    name: &str,
    fields: &ConnFields,
    input: &PasswordInput,
    no_test: bool,
    json: bool,
) -> Outcome {
    check_name(name)?;
    let config = arg.load()?;
    if config.connections.iter().any(|c| c.name == name) {
        return Err(Fail::usage(format!(
            "a connection named `{name}` exists already; change it with `mini-connector db edit {name}`"
        )));
    }
    if fields.kind.is_none() {
        return Err(Fail::usage("missing --type (sqlite, postgres, mysql or odbc)"));
    }
    let mut object = Map::new();
    object.insert("name".into(), json!(name));
    let connection = apply(object, fields)?;
    let mut check = config.clone();
    check.connections.push(connection.clone());
    check.validate()?;
    refuse_sqlite_password(&connection, input)?;
    let password = input.read()?;
    let mut test = Value::Null;
    if !no_test {
        let secret = password.as_ref().map(|p| drivers::Secret::new(p.as_str()));
        test = report_test(&connection, &databases::probe(&config, &connection, secret, TEST_TIMEOUT))?;
    }
    let change = match &password {
        Some(p) => PasswordChange::Set(p.clone()),
        None => PasswordChange::Keep,
    };
    let config = databases::save_connection(&arg.path(), connection.clone(), None, change)?;
    say!("added connection `{name}` ({})", describe(&connection));
    if password.is_some() {
        say!("password stored in the vault ({}) as {}", config.vault_dir().display(), db_password_id(name));
    }
    let agent = restart_hint(arg, &config);
    if json {
        print_json(&json!({
            "connection": name,
            "action": "added",
            "passwordStored": password.is_some(),
            "test": test,
            "agent": agent,
        }));
    }
    Ok(())
}

fn edit(arg: &ConfigArg, name: &str, fields: &ConnFields, input: &PasswordInput, change: Change) -> Outcome {
    let Change { remove_password, no_test, json } = change;
    let config = arg.load()?;
    let index = setup::find(&config, name)?;
    let Value::Object(object) = serde_json::to_value(&config.connections[index]).map_err(Fail::runtime)?
    else {
        return Err(Fail::runtime(anyhow::anyhow!("connection `{name}` is not a JSON object")));
    };
    let mut connection = apply(object, fields)?;
    refuse_sqlite_password(&connection, input)?;
    let password = input.read()?;
    if password.is_some() || remove_password {
        // The vault is now the one source of this password.
        connection.password_ref = None;
    }
    let mut check = config.clone();
    check.connections[index] = connection.clone();
    check.validate()?;
    let mut test = Value::Null;
    if !no_test {
        let secret = match &password {
            Some(p) => Some(drivers::Secret::new(p.as_str())),
            None if remove_password => None,
            None => config.db_password(name)?,
        };
        test = report_test(&connection, &databases::probe(&check, &connection, secret, TEST_TIMEOUT))?;
    }
    let change = match &password {
        Some(p) => PasswordChange::Set(p.clone()),
        None if remove_password => PasswordChange::Remove,
        None => PasswordChange::Keep,
    };
    let config = databases::save_connection(&arg.path(), connection.clone(), Some(name), change)?;
    say!("updated connection `{name}` ({})", describe(&connection));
    if password.is_some() {
        say!("new password stored in the vault as {}", db_password_id(name));
    } else if remove_password {
        say!("stored password removed");
    }
    let agent = restart_hint(arg, &config);
    if json {
        let password = match (&password, remove_password) {
            (Some(_), _) => "stored",
            (None, true) => "removed",
            (None, false) => "unchanged",
        };
        print_json(&json!({
            "connection": name,
            "action": "updated",
            "password": password,
            "test": test,
            "agent": agent,
        }));
    }
    Ok(())
}

fn test(arg: &ConfigArg, name: &str, json: bool) -> Outcome {
    let config = arg.load()?;
    let connection = config.connections[setup::find(&config, name)?].clone();
    let password = config.db_password(name)?;
    let probe = databases::probe(&config, &connection, password, TEST_TIMEOUT);
    if json {
        // A failed test is the error envelope with the spec's code (DATABASE_UNAVAILABLE...).
        if let Some((code, message)) = &probe.error {
            return Err(Fail::coded(exit::FAILURE, code.as_str(), message.clone()));
        }
        print_json(&json!({
            "name": name,
            "type": connection.kind.as_str(),
            "latencyMs": probe.latency_ms,
            "serverVersion": probe.server_version,
            "privileges": probe.privileges,
            "privilegeError": probe.privilege_error,
        }));
        return Ok(());
    }
    report_test(&connection, &probe).map(drop)
}

fn list(arg: &ConfigArg, json: bool) -> Outcome {
    let config = arg.load()?;
    // Only names are read from the vault; one that cannot be opened leaves "unknown".
    let stored: Option<Vec<String>> = match databases::stored_ids(&config) {
        Ok(ids) => Some(ids),
        Err(e) => {
            eprintln!("warning: {}", escape(&e.to_string()));
            None
        }
    };
    let has_password = |name: &str| stored.as_ref().map(|ids| ids.contains(&db_password_id(name)));
    if json {
        let connections: Vec<Value> = config
            .connections
            .iter()
            .map(|c| {
                let mut value = serde_json::to_value(c).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    if let Some(Value::String(text)) = object.get_mut("connectionString") {
                        *text = mini_connector::logging::redact(text);
                    }
                    object.insert("passwordStored".into(), json!(has_password(&c.name)));
                }
                value
            })
            .collect();
        print_json(&json!({ "connections": connections }));
        return Ok(());
    }
    if config.connections.is_empty() {
        println!("no connections; add one with `mini-connector db add --name NAME --type ...`");
        return Ok(());
    }
    let mut table = output::Table::new(&["NAME", "TYPE", "TARGET", "PASSWORD"]);
    for c in &config.connections {
        let password = match has_password(&c.name) {
            Some(true) => "stored",
            Some(false) => "-",
            None => "unknown",
        };
        table.push(&[c.name.as_str(), c.kind.as_str(), target(c).as_str(), password]);
    }
    print!("{table}");
    Ok(())
}

fn remove(arg: &ConfigArg, name: &str, json: bool) -> Outcome {
    let removed = databases::remove_database(&arg.path(), name)?;
    say!("removed connection `{name}`");
    if removed.password_removed {
        say!("removed its password from the vault");
    }
    if let Some(e) = &removed.vault_error {
        eprintln!("warning: the connection is gone, but its vault entry could not be removed: {e}");
    }
    let agent = restart_hint(arg, &removed.config);
    if json {
        print_json(&json!({
            "connection": name,
            "action": "removed",
            "passwordRemoved": removed.password_removed,
            "agent": agent,
        }));
    }
    Ok(())
}

/// SQLite files and TallyPrime's XML gateway have no password; a typed one would sit in the
/// vault unused.
fn refuse_sqlite_password(connection: &ConnectionConfig, input: &PasswordInput) -> Result<(), Fail> {
    let typed = input.password || input.password_stdin;
    if connection.kind == DbKind::Sqlite && typed {
        return Err(Fail::usage("--type sqlite has no password (the agent opens the file read-only)"));
    }
    if connection.kind == DbKind::Tally && typed {
        return Err(Fail::usage("--type tally has no password (TallyPrime's XML gateway has no login)"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Fail> {
    databases::check_name(name)
        .map_err(|_| Fail::usage("--name must be 1-128 characters, no control characters or outer spaces"))
}

/// Applies the flags to a connection's JSON object and reads it back as a `ConnectionConfig`.
fn apply(mut object: Map<String, Value>, fields: &ConnFields) -> Result<ConnectionConfig, Fail> {
    let mut set = |key: &str, value: Option<Value>| match value {
        Some(Value::String(s)) if s.is_empty() => {
            object.remove(key);
        }
        Some(Value::Bool(false)) => {
            object.remove(key);
        }
        Some(Value::Number(n)) if n.as_u64() == Some(0) && key == "port" => {
            object.remove(key);
        }
        Some(value) => {
            object.insert(key.to_owned(), value);
        }
        None => {}
    };
    if let Some(kind) = &fields.kind {
        let kind = DbKind::from_str(kind).map_err(|e| Fail::usage(format!("--type: {e}")))?;
        set("type", Some(json!(kind.as_str())));
    }
    if let Some(path) = &fields.path {
        let path =
            if path.as_os_str().is_empty() { String::new() } else { absolute(path).display().to_string() };
        set("path", Some(json!(path)));
    }
    if let Some(text) = &fields.connection_string
        && drivers::connection_string_has_password(text)
    {
        return Err(Fail::usage(
            "--connection-string must not contain a password: give it with --password (it goes to the vault)",
        ));
    }
    if let Some(mode) = &fields.ssl_mode
        && !mode.is_empty()
        && mode.parse::<drivers::SslMode>().is_err()
    {
        return Err(Fail::usage("--ssl-mode must be disable, prefer, require, verify-ca or verify-full"));
    }
    if let Some(path) = &fields.ssl_root_cert {
        let path =
            if path.as_os_str().is_empty() { String::new() } else { absolute(path).display().to_string() };
        set("sslRootCert", Some(json!(path)));
    }
    let given = [
        ("host", fields.host.as_ref().map(|v| json!(v)), "--host"),
        ("port", fields.port.map(|v| json!(v)), "--port"),
        ("database", fields.database.as_ref().map(|v| json!(v)), "--database"),
        ("user", fields.user.as_ref().map(|v| json!(v)), "--user"),
        ("dsn", fields.dsn.as_ref().map(|v| json!(v)), "--dsn"),
        ("connectionString", fields.connection_string.as_ref().map(|v| json!(v)), "--connection-string"),
        ("sslMode", fields.ssl_mode.as_ref().map(|v| json!(v.to_ascii_lowercase())), "--ssl-mode"),
        (
            "allowCleartextPassword",
            fields.allow_cleartext_password.map(|v| json!(v)),
            "--allow-cleartext-password",
        ),
        ("dialect", fields.dialect.as_ref().map(|v| json!(v.to_ascii_lowercase())), "--dialect"),
        ("company", fields.company.as_ref().map(|v| json!(v)), "--company"),
        ("poolMin", fields.pool_min.map(|v| json!(v)), "--pool-min"),
        ("poolMax", fields.pool_max.map(|v| json!(v)), "--pool-max"),
    ];
    for (key, value, _) in &given {
        set(key, value.clone());
    }
    let connection: ConnectionConfig = serde_json::from_value(Value::Object(object.clone()))
        .map_err(|e| Fail::usage(format!("invalid connection: {e}")))?;
    // A field this build's ConnectionConfig does not have would vanish here: refuse instead.
    let back = serde_json::to_value(&connection).map_err(Fail::runtime)?;
    for (key, value, flag) in &given {
        let wanted = value
            .as_ref()
            .is_some_and(|v| v != &json!("") && v != &json!(false) && !(key == &"port" && v == &json!(0)));
        if wanted && back.get(*key).is_none_or(Value::is_null) {
            return Err(Fail::usage(format!("{flag} is not supported by this build's connection settings")));
        }
    }
    check_required(&connection, &back)?;
    Ok(connection)
}

/// What each database type needs, with the flags that give it.
fn check_required(connection: &ConnectionConfig, value: &Value) -> Result<(), Fail> {
    let has = |key: &str| value.get(key).is_some_and(|v| !v.is_null() && v != &json!(""));
    let missing = match connection.kind {
        DbKind::Sqlite if !has("path") => Some("--type sqlite needs --path FILE"),
        DbKind::Postgres | DbKind::Mysql if !has("host") && !has("connectionString") => Some(
            "this type needs --host (and usually --database, --user, --password), or --connection-string",
        ),
        DbKind::Odbc if !has("dsn") && !has("connectionString") => {
            Some("--type odbc needs --dsn or --connection-string")
        }
        DbKind::Mongodb if !has("host") && !has("connectionString") => Some(
            "--type mongodb needs --host (and usually --database, --user, --password), or --connection-string",
        ),
        _ => None,
    };
    match missing {
        Some(message) => Err(Fail::usage(message)),
        None => Ok(()),
    }
}

/// Prints a test's outcome (text view) and gives it for `--json` (`latencyMs`,
/// `serverVersion`, `privileges`, `privilegeError`); a failed connection is exit 1.
fn report_test(connection: &ConnectionConfig, probe: &Probe) -> Result<Value, Fail> {
    if let Some((code, error)) = &probe.error {
        return Err(Fail::coded(
            exit::FAILURE,
            code.as_str(),
            format!(
                "cannot connect to `{}` ({}): {error}; nothing was saved (use --no-test to save anyway)",
                connection.name,
                describe(connection)
            ),
        ));
    }
    say!(
        "connection `{}` ({}): ok in {} ms",
        escape(&connection.name),
        escape(&describe(connection)),
        probe.latency_ms.unwrap_or_default()
    );
    if let Some(privileges) = probe.privileges.as_ref().filter(|p| p.can_write || p.superuser) {
        let who = if privileges.user.is_empty() {
            "the agent's OS user".to_owned()
        } else {
            format!("user `{}`", escape(&privileges.user))
        };
        say!("warning: {who} can change data{}:", if privileges.superuser { " (superuser)" } else { "" });
        for finding in &privileges.findings {
            say!("  - {}", escape(finding));
        }
        say!("  The agent stays read-only regardless (read-only sessions, statement check), but a");
        say!("  SELECT-only user is safer. An administrator can create one with:");
        for line in privileges.suggested_sql.lines() {
            say!("    {}", escape(line));
        }
    }
    if let Some(error) = &probe.privilege_error {
        say!("note: could not check the user's privileges: {}", escape(error));
    }
    Ok(json!({
        "latencyMs": probe.latency_ms,
        "serverVersion": probe.server_version,
        "privileges": probe.privileges,
        "privilegeError": probe.privilege_error,
    }))
}

fn restart_hint(arg: &ConfigArg, config: &AgentConfig) -> &'static str {
    super::reload_running_agent(&arg.path(), config)
}
