//! The local databases: the add/edit form ([`DatabaseForm`]) and the configuration's
//! [`ConnectionConfig`] both ways, connection tests, saving with the password in the vault
//! (id `db:<name>`), renames and removal.
//!
//! A form becomes the connection's JSON object and is read back as a `ConnectionConfig`, so a
//! field this build does not know is refused, never silently dropped. Types spec §3.5.1 lists
//! that this build cannot reach (SQL Server, Oracle, SAP HANA without ODBC) are
//! refused with the reason. A password is never serialized back out: entries carry
//! `hasPassword` only.

use std::path::Path;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use drivers::{Cell, ColumnMeta, DbKind, RowSink, SinkError};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{Result, SetupError, absolute, find, load};
use crate::config::{AgentConfig, ConfigError, ConnectionConfig};
use crate::protocol::ErrorCode;
use crate::protocol::control::{DatabaseEntry, DatabaseForm, TestReport};
use crate::secrets::db_password_id;

/// How long a connection test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The form's fields that are `ConnectionConfig` fields of the same (camelCase) name.
const FORM_FIELDS: [&str; 10] =
    ["name", "type", "host", "port", "database", "user", "path", "dsn", "connectionString", "sslMode"];

/// What happens to a connection's stored password when it is saved.
#[derive(Debug)]
pub enum PasswordChange {
    /// Keep the stored one (moved along on a rename).
    Keep,
    /// Store this one (the vault becomes its one source: a `passwordRef` is dropped).
    Set(Zeroizing<String>),
    /// Delete the stored one (and any `passwordRef`).
    Remove,
}

/// Whether `name` can name a connection.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) || name != name.trim()
    {
        return Err(SetupError::invalid(
            "the connection name must be 1-128 characters, no control characters or outer spaces",
        ));
    }
    Ok(())
}

/// The form's type: a kind this build has, plus the ODBC dialect for SQL Server, Oracle and
/// SAP HANA. Listed types this build cannot reach are refused with the reason.
fn kind_of(text: &str) -> Result<(DbKind, Option<&'static str>)> {
    let lower = text.trim().to_ascii_lowercase();
    let via_odbc = match lower.as_str() {
        "sqlserver" | "sql server" | "mssql" => Some(("sqlserver", "SQL Server")),
        "oracle" => Some(("oracle", "Oracle")),
        "hana" | "sap hana" | "saphana" => Some(("hana", "SAP HANA")),
        _ => None,
    };
    if let Some((dialect, label)) = via_odbc {
        if !drivers::ODBC_SUPPORT {
            return Err(SetupError::invalid(format!(
                "{label} is reached through ODBC, which this build does not include; use a build with ODBC support"
            )));
        }
        return Ok((DbKind::Odbc, Some(dialect)));
    }
    match lower.as_str() {
        "odbc" if !drivers::ODBC_SUPPORT => {
            Err(SetupError::invalid("this build has no ODBC support; use a build with ODBC support"))
        }
        _ => DbKind::from_str(&lower).map(|kind| (kind, None)).map_err(|e| {
            SetupError::invalid(format!(
                "{e} (expected sqlite, postgres, mysql, odbc, sqlserver, oracle, hana, mongodb or tally)"
            ))
        }),
    }
}

/// The configuration entry a form describes, checked: the type, the fields it needs, a
/// connection string without a password, a known TLS mode, no field this build drops.
pub fn connection_from_form(form: &DatabaseForm) -> Result<ConnectionConfig> {
    check_name(&form.name)?;
    let (kind, dialect) = kind_of(&form.kind)?;
    let mut object = Map::new();
    object.insert("name".into(), json!(form.name));
    object.insert("type".into(), json!(kind.as_str()));
    let text = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(host) = text(&form.host) {
        object.insert("host".into(), json!(host));
    }
    if let Some(port) = form.port.filter(|p| *p != 0) {
        object.insert("port".into(), json!(port));
    }
    if let Some(database) = text(&form.database) {
        object.insert("database".into(), json!(database));
    }
    if let Some(user) = text(&form.user) {
        object.insert("user".into(), json!(user));
    }
    if let Some(path) = text(&form.path) {
        object.insert("path".into(), json!(absolute(Path::new(&path)).display().to_string()));
    }
    if let Some(dsn) = text(&form.dsn) {
        object.insert("dsn".into(), json!(dsn));
    }
    if let Some(cs) = text(&form.connection_string) {
        if drivers::connection_string_has_password(&cs) {
            return Err(SetupError::invalid(
                "the connection string must not contain a password: give it in the password field (it goes to the vault)",
            ));
        }
        object.insert("connectionString".into(), json!(cs));
    }
    if let Some(mode) = text(&form.ssl_mode) {
        let mode = mode.to_ascii_lowercase();
        if mode.parse::<drivers::SslMode>().is_err() {
            return Err(SetupError::invalid(
                "the TLS mode must be disable, prefer, require, verify-ca or verify-full",
            ));
        }
        object.insert("sslMode".into(), json!(mode));
    }
    if let Some(dialect) = dialect {
        object.insert("dialect".into(), json!(dialect));
    }
    if kind == DbKind::Tally && text(&form.password).is_some() {
        return Err(SetupError::invalid("tally takes no password: TallyPrime's XML gateway has no login"));
    }
    for (key, value) in &form.options {
        if FORM_FIELDS.contains(&key.as_str()) || key.eq_ignore_ascii_case("password") {
            return Err(SetupError::invalid(format!("option `{key}` is a form field, not an option")));
        }
        if value.is_null() {
            continue;
        }
        object.insert(key.clone(), value.clone());
    }
    let wanted: Vec<String> = object.keys().cloned().collect();
    let connection: ConnectionConfig = serde_json::from_value(Value::Object(object))
        .map_err(|e| SetupError::invalid(format!("invalid connection: {e}")))?;
    // A field this build's ConnectionConfig does not have would vanish here: refuse instead.
    let back = serde_json::to_value(&connection).map_err(|e| SetupError::invalid(e.to_string()))?;
    for key in &wanted {
        if back.get(key).is_none_or(Value::is_null) {
            return Err(SetupError::invalid(format!(
                "`{key}` is not supported by this build's connection settings"
            )));
        }
    }
    check_required(&connection)?;
    AgentConfig::connection_spec(&connection)
        .validate()
        .map_err(|e| SetupError::invalid(format!("connection `{}`: {e}", connection.name)))?;
    Ok(connection)
}

/// What each type needs.
pub fn check_required(connection: &ConnectionConfig) -> Result<()> {
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let missing = match connection.kind {
        DbKind::Sqlite if connection.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) => {
            Some("a SQLite connection needs the database file")
        }
        DbKind::Postgres | DbKind::Mysql if !has(&connection.host) && !has(&connection.connection_string) => {
            Some(
                "this type needs a host (and usually a database, a user and a password), or a connection string",
            )
        }
        DbKind::Odbc if !has(&connection.dsn) && !has(&connection.connection_string) => {
            Some("an ODBC connection needs a DSN or a connection string")
        }
        _ => None,
    };
    match missing {
        Some(message) => Err(SetupError::invalid(message)),
        None => Ok(()),
    }
}

/// The form that edits `connection` (`password` always `None`; other settings in `options`).
pub fn form_from_connection(connection: &ConnectionConfig) -> DatabaseForm {
    let value = serde_json::to_value(connection).unwrap_or_default();
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let options = value
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter(|(key, value)| !FORM_FIELDS.contains(&key.as_str()) && !value.is_null())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    DatabaseForm {
        name: connection.name.clone(),
        kind: connection.kind.as_str().to_owned(),
        host: connection.host.clone(),
        port: connection.port,
        database: connection.database.clone(),
        user: connection.user.clone(),
        password: None,
        path: connection.path.as_ref().map(|p| p.display().to_string()),
        dsn: connection.dsn.clone(),
        connection_string: text("connectionString"),
        ssl_mode: connection.ssl_mode.map(|m| m.as_str().to_owned()),
        options,
    }
}

/// The vault ids stored (`None`: no vault yet, so none).
pub fn stored_ids(config: &AgentConfig) -> std::result::Result<Vec<String>, ConfigError> {
    match config.open_existing_vault()? {
        None => Ok(Vec::new()),
        Some(vault) => vault
            .ids()
            .map_err(|source| ConfigError::Vault { what: "listing the vault's credentials".into(), source }),
    }
}

/// Every configured database, without secrets.
pub fn list_databases(config_path: &Path) -> Result<Vec<DatabaseEntry>> {
    let config = load(config_path)?;
    let stored = stored_ids(&config)?;
    Ok(config.connections.iter().map(|c| entry(&config, c, &stored)).collect())
}

fn entry(config: &AgentConfig, connection: &ConnectionConfig, stored: &[String]) -> DatabaseEntry {
    let mut private = Vec::new();
    if let Some(policy) = config.schema_policy.get(&connection.name) {
        private.extend(policy.private_tables.iter().cloned());
        for (table, columns) in &policy.private_columns {
            private.extend(columns.iter().map(|c| format!("{table}.{c}")));
        }
    }
    DatabaseEntry {
        form: form_from_connection(connection),
        has_password: stored.contains(&db_password_id(&connection.name)),
        private,
    }
}

/// Tries the form's database (read-only session as the agent sets it up) within
/// [`TEST_TIMEOUT`], saving nothing. The password is the form's, else the stored one of the
/// connection of that name. `Ok` with `ok: false` when it cannot connect.
pub fn test_database(config_path: &Path, form: DatabaseForm) -> Result<TestReport> {
    let config = load(config_path)?;
    let connection = connection_from_form(&form)?;
    if connection.kind == DbKind::Sqlite && form.password.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(SetupError::invalid("a SQLite file has no password (the agent opens it read-only)"));
    }
    let password = match form.password.as_deref() {
        Some(p) if !p.is_empty() => Some(drivers::Secret::new(p)),
        _ if config.connections.iter().any(|c| c.name == connection.name) => {
            config.db_password(&connection.name)?
        }
        _ => None,
    };
    let probe = probe(&config, &connection, password, TEST_TIMEOUT);
    Ok(probe.report())
}

/// Saves a form (an edit when `replace` names the entry it replaces; a rename moves the vault
/// entry and the schema policy). `password: None` keeps the stored one. Tests nothing: the
/// caller tests first ([`test_database`]).
pub fn save_database(config_path: &Path, form: DatabaseForm, replace: Option<&str>) -> Result<DatabaseEntry> {
    let connection = connection_from_form(&form)?;
    let password = match form.password {
        Some(p) if !p.is_empty() => {
            if connection.kind == DbKind::Sqlite {
                return Err(SetupError::invalid(
                    "a SQLite file has no password (the agent opens it read-only)",
                ));
            }
            PasswordChange::Set(Zeroizing::new(p))
        }
        _ => PasswordChange::Keep,
    };
    let config = save_connection(config_path, connection.clone(), replace, password)?;
    let stored = stored_ids(&config)?;
    Ok(entry(&config, &config.connections[find(&config, &connection.name)?], &stored))
}

/// Saves `connection`: added when `replace` is `None` (the name must be new), else in place of
/// `replace`. Handles the password (vault), a rename (vault entry, schema policy, saved schema
/// files), and puts the vault back when the configuration cannot be written.
pub fn save_connection(
    config_path: &Path,
    mut connection: ConnectionConfig,
    replace: Option<&str>,
    password: PasswordChange,
) -> Result<AgentConfig> {
    let mut config = load(config_path)?;
    let name = connection.name.clone();
    check_name(&name)?;
    let exists = |config: &AgentConfig| config.connections.iter().any(|c| c.name == name);
    let old_name = match replace {
        None => {
            if exists(&config) {
                return Err(SetupError::invalid(format!("a connection named `{name}` exists already")));
            }
            None
        }
        Some(old) => {
            find(&config, old)?;
            if old != name && exists(&config) {
                return Err(SetupError::invalid(format!("a connection named `{name}` exists already")));
            }
            Some(old.to_owned())
        }
    };
    if !matches!(password, PasswordChange::Keep) {
        connection.password_ref = None;
    }
    if connection.kind == DbKind::Sqlite && matches!(password, PasswordChange::Set(_)) {
        return Err(SetupError::invalid("a SQLite file has no password (the agent opens it read-only)"));
    }
    match &old_name {
        None => config.connections.push(connection),
        Some(old) => {
            let index = find(&config, old)?;
            config.connections[index] = connection;
            if old != &name
                && let Some(policy) = config.schema_policy.remove(old)
            {
                config.schema_policy.insert(name.clone(), policy);
            }
        }
    }
    config.validate()?;
    let renamed = old_name.as_ref().filter(|old| **old != name);
    // The vault first, so a saved configuration never points at a password that is not there.
    match &password {
        PasswordChange::Set(p) => store_password(&config, &name, p)?,
        PasswordChange::Remove => {
            forget_password(&config, &name)?;
        }
        PasswordChange::Keep => {
            if let Some(old) = renamed
                && let Some(secret) = config.db_password(old)?
            {
                let text = Zeroizing::new(secret.expose().to_owned());
                store_password(&config, &name, &text)?;
            }
        }
    }
    if let Err(e) = config.save(config_path) {
        // Put the vault back: a new entry (an added or renamed connection) goes; a replaced
        // password of the same connection cannot be restored and stays.
        let new_entry = old_name.is_none() || renamed.is_some();
        if new_entry && !matches!(password, PasswordChange::Remove) {
            let _ = forget_password(&config, &name);
        }
        return Err(e.into());
    }
    if let Some(old) = renamed {
        let _ = forget_password(&config, old);
        super::schema::rename_files(config_path, old, &name);
    }
    Ok(config)
}

/// What [`remove_database`] did besides removing the entry.
#[derive(Debug)]
pub struct Removed {
    /// A stored password was deleted from the vault.
    pub password_removed: bool,
    /// The vault entry could not be deleted (the connection is gone anyway).
    pub vault_error: Option<String>,
    /// The configuration after the removal.
    pub config: AgentConfig,
}

/// Removes a connection, its schema policy and saved schema files, and its vault entry.
pub fn remove_database(config_path: &Path, name: &str) -> Result<Removed> {
    let mut config = load(config_path)?;
    let index = find(&config, name)?;
    config.connections.remove(index);
    config.schema_policy.remove(name);
    config.save(config_path)?;
    super::schema::remove_files(config_path, name);
    let (password_removed, vault_error) = match forget_password(&config, name) {
        Ok(removed) => (removed, None),
        Err(e) => (false, Some(e.to_string())),
    };
    Ok(Removed { password_removed, vault_error, config })
}

fn store_password(config: &AgentConfig, name: &str, password: &Zeroizing<String>) -> Result<()> {
    let vault = config.open_vault()?;
    vault.put(&db_password_id(name), password.as_bytes()).map_err(|source| {
        SetupError::from(ConfigError::Vault {
            what: format!("storing the password of connection `{name}`"),
            source,
        })
    })
}

/// Removes a stored password; `Ok(false)` when there was none (or no vault).
pub fn forget_password(config: &AgentConfig, name: &str) -> Result<bool> {
    let Some(vault) = config.open_existing_vault()? else { return Ok(false) };
    vault.remove(&db_password_id(name)).map_err(|source| {
        SetupError::from(ConfigError::Vault {
            what: format!("removing the password of connection `{name}`"),
            source,
        })
    })
}

/// What a connection test found.
#[derive(Debug)]
pub struct Probe {
    /// Time to open and answer the first round trip (when it did), milliseconds.
    pub latency_ms: Option<u64>,
    /// The whole test, milliseconds.
    pub elapsed_ms: u64,
    /// `SELECT version()` or the engine's equivalent, when it answered.
    pub server_version: Option<String>,
    /// Why it failed: the spec's code and the driver's message (never the password).
    pub error: Option<(ErrorCode, String)>,
    /// Whether the login could write.
    pub privileges: Option<drivers::PrivilegeReport>,
    /// Why the privileges could not be checked.
    pub privilege_error: Option<String>,
}

impl Probe {
    /// The [`TestReport`] of this probe.
    pub fn report(&self) -> TestReport {
        match &self.error {
            Some((code, message)) => TestReport {
                ok: false,
                message: format!("cannot connect: {message}"),
                code: Some(code.as_str().to_owned()),
                elapsed_ms: self.elapsed_ms,
            },
            None => {
                let mut message = format!("connected in {} ms", self.latency_ms.unwrap_or_default());
                if let Some(version) = &self.server_version {
                    message.push_str(&format!(": {version}"));
                }
                if let Some(p) = self.privileges.as_ref().filter(|p| p.can_write || p.superuser) {
                    let who = if p.user.is_empty() {
                        "the agent's OS user".to_owned()
                    } else {
                        format!("user `{}`", p.user)
                    };
                    message.push_str(&format!(
                        ". Note: {who} can change data{}; the agent stays read-only regardless, but a SELECT-only user is safer",
                        if p.superuser { " (superuser)" } else { "" }
                    ));
                }
                TestReport { ok: true, message, code: None, elapsed_ms: self.elapsed_ms }
            }
        }
    }
}

/// Opens `connection` with a one-connection pool (read-only session, as the agent opens it),
/// pings it, asks its version and whether its login could write, within `timeout`. A password
/// given here fills a connection without a `passwordRef`; else the stored one is used.
pub fn probe(
    config: &AgentConfig,
    connection: &ConnectionConfig,
    password: Option<drivers::Secret>,
    timeout: Duration,
) -> Probe {
    // Without a vault entry yet (a new connection) this is the plain spec.
    let mut spec = config
        .resolved_connection_spec(connection)
        .unwrap_or_else(|_| AgentConfig::connection_spec(connection));
    if let Some(password) = password
        && connection.password_ref.is_none()
    {
        spec.password = drivers::Password::Value(password);
    }
    spec.pool.min_connections = 1;
    spec.pool.max_connections = 1;
    spec.pool.acquire_timeout = timeout;
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = crate::spawn_named("db-test", move || {
        let _ = tx.send(probe_now(&spec, started));
    });
    let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let failed = |code, message: String| Probe {
        latency_ms: None,
        elapsed_ms: elapsed(),
        server_version: None,
        error: Some((code, message)),
        privileges: None,
        privilege_error: None,
    };
    if let Err(e) = spawned {
        return failed(ErrorCode::InternalError, format!("cannot start the test: {e}"));
    }
    // The thread ends by itself (acquire timeout); a test never waits much longer than asked.
    match rx.recv_timeout(timeout + Duration::from_secs(2)) {
        Ok(mut probe) => {
            probe.elapsed_ms = elapsed();
            probe
        }
        Err(_) => failed(
            ErrorCode::DatabaseUnavailable,
            format!("database unavailable: no answer within {} s", timeout.as_secs()),
        ),
    }
}

fn probe_now(spec: &drivers::ConnectionSpec, started: Instant) -> Probe {
    let mut probe = Probe {
        latency_ms: None,
        elapsed_ms: 0,
        server_version: None,
        error: None,
        privileges: None,
        privilege_error: None,
    };
    let database = match drivers::Database::open(spec).and_then(|db| db.ping().map(|()| db)) {
        Ok(db) => db,
        Err(e) => {
            probe.error = Some((super::driver_code(&e), e.to_string()));
            return probe;
        }
    };
    probe.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    probe.server_version = server_version(&database);
    match database.write_privileges() {
        Ok(privileges) => probe.privileges = Some(privileges),
        Err(e) => probe.privilege_error = Some(e.to_string()),
    }
    probe
}

/// The server's version string, through the gate and a read-only query like any other.
fn server_version(database: &drivers::Database) -> Option<String> {
    let sql = match database.kind() {
        DbKind::Sqlite => "SELECT 'SQLite ' || sqlite_version()",
        DbKind::Postgres => "SELECT version()",
        DbKind::Mysql => "SELECT concat('MySQL/MariaDB ', version())",
        DbKind::Odbc | DbKind::Mongodb | DbKind::Tally => return None,
    };
    let checked =
        gate::check_with(sql, 0, database.gate_target(), &gate::Policy::default(), &gate::Limits::default())
            .ok()?;
    let mut sink = TextRows { limit: 1, ..TextRows::default() };
    let options = drivers::QueryOptions { timeout: Some(Duration::from_secs(5)), ..Default::default() };
    let _ = database.query(&checked, &[], &options, &mut sink);
    sink.rows.into_iter().next()?.into_iter().next()?
}

/// Collects up to `limit` rows as text; more stops the query.
#[derive(Debug, Default)]
pub(crate) struct TextRows {
    pub limit: usize,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// The sink error that ends a query once enough rows came.
pub(crate) const ENOUGH: &str = "enough rows";

impl RowSink for TextRows {
    fn columns(&mut self, columns: &[ColumnMeta]) -> std::result::Result<(), SinkError> {
        self.columns = columns.iter().map(|c| c.name.clone()).collect();
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> std::result::Result<(), SinkError> {
        if self.rows.len() >= self.limit {
            return Err(SinkError(ENOUGH.into()));
        }
        self.rows.push(cells.iter().map(|c| Some(cell_text(c))).collect());
        Ok(())
    }
}

/// A value as the schema browser shows it (`NULL` for SQL NULL).
pub fn cell_text(cell: &Cell<'_>) -> String {
    match cell {
        Cell::Null => "NULL".to_owned(),
        Cell::Bool(b) => b.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Text(s) | Cell::Decimal(s) => {
            let mut text: String = s.chars().take(200).collect();
            if s.chars().nth(200).is_some() {
                text.push('…');
            }
            text
        }
        Cell::Bytes(b) => format!("<{} bytes>", b.len()),
    }
}

/// A short, secret-free description: `sqlite /srv/erp.db`, `postgres db.local:5432/erp as ro`.
pub fn describe(connection: &ConnectionConfig) -> String {
    format!("{} {}", connection.kind.as_str(), target(connection))
}

/// Where a connection points, without secrets.
pub fn target(connection: &ConnectionConfig) -> String {
    let value = serde_json::to_value(connection).unwrap_or_default();
    let text =
        |key: &str| value.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(path) = text("path") {
        return path;
    }
    if let Some(dsn) = text("dsn") {
        return format!("dsn {dsn}{}", text("user").map(|u| format!(" as {u}")).unwrap_or_default());
    }
    if let Some(host) = text("host") {
        let port = value.get("port").and_then(Value::as_u64).map(|p| format!(":{p}")).unwrap_or_default();
        let database = text("database").map(|d| format!("/{d}")).unwrap_or_default();
        let user = text("user").map(|u| format!(" as {u}")).unwrap_or_default();
        return format!("{host}{port}{database}{user}");
    }
    if let Some(cs) = text("connectionString") {
        return crate::logging::redact(&cs);
    }
    "-".to_owned()
}
