//! Connections and Settings: the database form's types and validation (shared with the
//! wizard's step 3), the connections table, the §3.5 security notice, the settings change set,
//! and the PIN gate (§7.3).

use std::time::{Duration, Instant};

use protocol::control::{DatabaseEntry, DatabaseForm, DatabaseHealth, SettingsChange, SettingsView};

use super::format;

/// Spec §3.5.1: shown in a tinted box while adding a connection.
pub const SECURITY_NOTICE: &str = "Your database credentials are encrypted and stored only on this device.\n\
They will never be transmitted to the cloud console or any external server.\n\
The cloud only receives table names and column metadata, not your data or passwords.\n\
You can verify this by reviewing all outbound traffic: only WSS connections to connector.[domain] are made.";

/// A database type in the form's dropdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbType {
    /// What the dropdown says.
    pub label: &'static str,
    /// The configuration's `type`.
    pub kind: &'static str,
    /// Default port.
    pub port: Option<u16>,
    /// Why it cannot be used directly, for types listed by the spec but not built in.
    pub refused: Option<&'static str>,
}

/// The dropdown, in the spec's order of §3.5.1 with the built-in ones first.
pub const DB_TYPES: [DbType; 9] = [
    DbType { label: "PostgreSQL", kind: "postgres", port: Some(5432), refused: None },
    DbType { label: "MySQL / MariaDB", kind: "mysql", port: Some(3306), refused: None },
    DbType { label: "SQLite", kind: "sqlite", port: None, refused: None },
    DbType { label: "ODBC (SQL Server, Oracle, SAP HANA, …)", kind: "odbc", port: None, refused: None },
    DbType {
        label: "SQL Server",
        kind: "sqlserver",
        port: Some(1433),
        refused: Some("SQL Server is reached through ODBC: choose ODBC and a DSN"),
    },
    DbType {
        label: "Oracle",
        kind: "oracle",
        port: Some(1521),
        refused: Some("Oracle is reached through ODBC: choose ODBC and a DSN"),
    },
    DbType {
        label: "SAP HANA",
        kind: "hana",
        port: Some(30015),
        refused: Some("SAP HANA is reached through ODBC: choose ODBC and a DSN"),
    },
    DbType { label: "MongoDB", kind: "mongodb", port: Some(27017), refused: None },
    DbType { label: "Tally", kind: "tally", port: Some(9000), refused: None },
];

/// The dropdown entry for a configured `type`.
pub fn db_type(kind: &str) -> Option<&'static DbType> {
    let kind = match kind.trim().to_ascii_lowercase().as_str() {
        "postgresql" | "pg" => "postgres".to_owned(),
        "mariadb" => "mysql".to_owned(),
        "sqlite3" => "sqlite".to_owned(),
        other => other.to_owned(),
    };
    DB_TYPES.iter().find(|t| t.kind == kind)
}

/// Which fields the form shows for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSet {
    /// Host, port, database, user, password.
    pub server: bool,
    /// SQLite file.
    pub path: bool,
    /// ODBC DSN.
    pub dsn: bool,
    /// User, password and "Use Connection String" (Tally's XML gateway has no login).
    pub login: bool,
}

/// The label of the database field: Tally exports from a company, not a database.
pub fn database_label(kind: &str) -> &'static str {
    if db_type(kind).is_some_and(|t| t.kind == "tally") {
        "Company (empty: the one loaded)"
    } else {
        "Database name"
    }
}

/// The fields of a type (a connection string replaces the server fields except the password).
pub fn fields_for(kind: &str, use_connection_string: bool) -> FieldSet {
    match db_type(kind).map(|t| t.kind) {
        Some("sqlite") => FieldSet { server: false, path: true, dsn: false, login: false },
        Some("odbc") => {
            FieldSet { server: !use_connection_string, path: false, dsn: !use_connection_string, login: true }
        }
        Some("tally") => FieldSet { server: true, path: false, dsn: false, login: false },
        _ => FieldSet { server: !use_connection_string, path: false, dsn: false, login: true },
    }
}

/// Checks a form before it is tested or saved; the reason when it cannot be.
pub fn validate_db_form(f: &DatabaseForm) -> Result<(), String> {
    let name = f.name.trim();
    if name.is_empty() {
        return Err("Give the connection a name".into());
    }
    if name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err("The name may use letters, digits, '-', '_' and '.' (at most 64)".into());
    }
    let Some(t) = db_type(&f.kind) else { return Err(format!("Unknown database type '{}'", f.kind)) };
    if let Some(why) = t.refused {
        return Err(why.into());
    }
    let blank = |o: &Option<String>| o.as_deref().is_none_or(|s| s.trim().is_empty());
    let uses_cs = !blank(&f.connection_string);
    match t.kind {
        "sqlite" if blank(&f.path) => return Err("Choose the SQLite database file".into()),
        "sqlite" => {}
        "odbc" if !uses_cs && blank(&f.dsn) => return Err("Enter the ODBC data source name (DSN)".into()),
        "odbc" => {}
        // TallyPrime's XML gateway: host and port default to localhost:9000, no login.
        "tally" if f.port == Some(0) => return Err("The port must be between 1 and 65535".into()),
        "tally" => {}
        _ if uses_cs => {}
        _ => {
            if blank(&f.host) {
                return Err("Enter the database server's host name".into());
            }
            if f.port == Some(0) {
                return Err("The port must be between 1 and 65535".into());
            }
            if blank(&f.user) {
                return Err("Enter the user name (a read-only user is best)".into());
            }
        }
    }
    Ok(())
}

/// Parses the port field: empty is `None`.
pub fn parse_port(text: &str) -> Result<Option<u16>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<u16>() {
        Ok(0) | Err(_) => Err("The port must be a number between 1 and 65535".into()),
        Ok(p) => Ok(Some(p)),
    }
}

/// Where a connection points, without secrets: `db.acme:5432/erp`, a file, a DSN.
pub fn target(f: &DatabaseForm) -> String {
    if let Some(p) = &f.path {
        return p.clone();
    }
    if let Some(d) = &f.dsn {
        return format!("DSN {d}");
    }
    if f.connection_string.is_some() {
        return "connection string".into();
    }
    let mut s = f.host.clone().unwrap_or_default();
    if let Some(p) = f.port {
        s.push_str(&format!(":{p}"));
    }
    if let Some(d) = &f.database {
        s.push_str(&format!("/{d}"));
    }
    s
}

/// Connections table titles.
pub const CONNECTION_COLUMNS: [&str; 6] = ["Name", "Type", "Target", "Health", "Pool", "Tables"];

/// One connections table row, joining the configured entry with its live health.
pub fn connection_row(e: &DatabaseEntry, health: Option<&DatabaseHealth>) -> Vec<String> {
    let h = match health {
        None => "unknown".to_owned(),
        Some(h) if h.healthy => "● healthy".to_owned(),
        Some(h) => format!("● {}", h.error.as_deref().unwrap_or("unreachable")),
    };
    vec![
        e.form.name.clone(),
        db_type(&e.form.kind)
            .map_or_else(|| e.form.kind.clone(), |t| t.label.split(' ').next().unwrap_or(t.label).to_owned()),
        format::ellipsize(&target(&e.form), 40),
        h,
        health
            .and_then(|h| h.pool)
            .map_or_else(|| "–".to_owned(), |p| format!("{}/{}", p.open.saturating_sub(p.idle), p.max)),
        health.and_then(|h| h.tables).map_or_else(|| "–".to_owned(), format::thousands),
    ]
}

/// The Settings section's edits (what the user typed), turned into a change set of only the
/// fields that differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsEdit {
    /// Connector name.
    pub connector_name: String,
    /// Cloud URL.
    pub cloud_url: String,
    /// Proxy URL (empty: none).
    pub proxy_url: String,
    /// CA file (empty: none).
    pub ca_cert_path: String,
    /// Log level.
    pub log_level: String,
    /// Auto-update.
    pub auto_update: bool,
    /// Auto-start.
    pub auto_start: bool,
}

impl SettingsEdit {
    /// The form filled from current settings.
    pub fn from_view(v: &SettingsView) -> Self {
        Self {
            connector_name: v.connector_name.clone(),
            cloud_url: v.cloud_url.clone(),
            proxy_url: v.proxy_url.clone().unwrap_or_default(),
            ca_cert_path: v.ca_cert_path.clone().unwrap_or_default(),
            log_level: v.log_level.clone(),
            auto_update: v.auto_update,
            auto_start: v.auto_start,
        }
    }

    /// Only what changed; `Err` with a reason when a field is not acceptable.
    pub fn change(&self, current: &SettingsView) -> Result<SettingsChange, String> {
        let name = self.connector_name.trim();
        validate_connector_name(name).map_err(|e| e.to_owned())?;
        let url = self.cloud_url.trim();
        if !(url.starts_with("wss://") || url.starts_with("https://")) {
            return Err("The cloud URL must start with wss:// or https://".into());
        }
        let diff = |new: &str, old: &str| (new.trim() != old).then(|| new.trim().to_owned());
        Ok(SettingsChange {
            connector_name: diff(name, &current.connector_name),
            api_key: None,
            cloud_url: diff(url, &current.cloud_url),
            proxy_url: diff(&self.proxy_url, current.proxy_url.as_deref().unwrap_or("")),
            ca_cert_path: diff(&self.ca_cert_path, current.ca_cert_path.as_deref().unwrap_or("")),
            log_level: diff(&self.log_level, &current.log_level),
            auto_update: (self.auto_update != current.auto_update).then_some(self.auto_update),
            auto_start: (self.auto_start != current.auto_start).then_some(self.auto_start),
            ..SettingsChange::default()
        })
    }
}

/// Log levels the Settings menu offers.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Checks a connector name (wizard step 2 and Settings).
pub fn validate_connector_name(name: &str) -> Result<(), &'static str> {
    let name = name.trim();
    if name.is_empty() {
        Err("Give this connector a name, e.g. \"Warehouse SAP\"")
    } else if name.chars().count() > 64 {
        Err("At most 64 characters")
    } else if name.chars().any(char::is_control) {
        Err("No control characters")
    } else {
        Ok(())
    }
}

/// The masked key as Settings shows it; never more than the agent's mask.
pub fn masked_key(v: &SettingsView) -> String {
    match &v.api_key_masked {
        Some(m) if m.contains("****") => m.clone(),
        Some(_) => "stored (hidden)".to_owned(),
        None => "no key stored".to_owned(),
    }
}

/// What the PIN guards (spec §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Replace the API key.
    ReplaceKey,
    /// Add, edit or remove a connection.
    EditConnection,
    /// Change or clear the PIN.
    ChangePin,
}

/// The local PIN gate: once the PIN is verified, guarded actions pass for a few minutes.
#[derive(Debug, Clone, Default)]
pub struct PinGate {
    pin_set: bool,
    unlocked_until: Option<Instant>,
}

impl PinGate {
    /// How long a verified PIN unlocks.
    pub const UNLOCK_FOR: Duration = Duration::from_secs(300);

    /// Follows `SettingsView::pin_set`.
    pub fn set_pin_configured(&mut self, pin_set: bool) {
        if self.pin_set != pin_set {
            self.unlocked_until = None;
        }
        self.pin_set = pin_set;
    }

    /// Whether a guarded action must ask for the PIN first.
    pub fn needs_pin(&self, _what: Guarded, now: Instant) -> bool {
        self.pin_set && self.unlocked_until.is_none_or(|t| now >= t)
    }

    /// The agent accepted the PIN.
    pub fn unlock(&mut self, now: Instant) {
        self.unlocked_until = Some(now + Self::UNLOCK_FOR);
    }

    /// Locks again (the window was hidden, or the user asked).
    pub fn lock(&mut self) {
        self.unlocked_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::PoolUse;

    fn pg_form() -> DatabaseForm {
        DatabaseForm {
            name: "erp".into(),
            kind: "postgres".into(),
            host: Some("db.acme".into()),
            port: Some(5432),
            database: Some("erp".into()),
            user: Some("reader".into()),
            password: Some("s3cret".into()),
            ..DatabaseForm::default()
        }
    }

    #[test]
    fn form_validation_names_the_missing_field() {
        assert_eq!(validate_db_form(&pg_form()), Ok(()));
        let mut f = pg_form();
        f.name = " ".into();
        assert_eq!(validate_db_form(&f).unwrap_err(), "Give the connection a name");
        let mut f = pg_form();
        f.host = None;
        assert!(validate_db_form(&f).unwrap_err().contains("host"));
        let mut f = pg_form();
        f.user = Some(String::new());
        assert!(validate_db_form(&f).unwrap_err().contains("user"));
        let mut f = pg_form();
        f.host = None;
        f.connection_string = Some("host=db.acme dbname=erp".into());
        assert_eq!(validate_db_form(&f), Ok(()), "a connection string replaces the server fields");
        let sqlite = DatabaseForm { name: "local".into(), kind: "sqlite".into(), ..Default::default() };
        assert!(validate_db_form(&sqlite).unwrap_err().contains("SQLite"));
        let odbc = DatabaseForm { name: "mssql".into(), kind: "odbc".into(), ..Default::default() };
        assert!(validate_db_form(&odbc).unwrap_err().contains("DSN"));
        let odbc = DatabaseForm { dsn: Some("MSSQL_ERP".into()), ..odbc };
        assert_eq!(validate_db_form(&odbc), Ok(()), "a DSN needs no host or user");
        let oracle = DatabaseForm { name: "ora".into(), kind: "oracle".into(), ..pg_form() };
        assert!(validate_db_form(&oracle).unwrap_err().contains("ODBC"));
        let mongo = DatabaseForm { kind: "mongodb".into(), ..pg_form() };
        assert_eq!(validate_db_form(&mongo), Ok(()), "MongoDB takes the server fields");
    }

    #[test]
    fn ports_and_field_sets() {
        assert_eq!(parse_port(""), Ok(None));
        assert_eq!(parse_port(" 5432 "), Ok(Some(5432)));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("54a").is_err());
        assert_eq!(
            fields_for("sqlite", false),
            FieldSet { server: false, path: true, dsn: false, login: false }
        );
        assert_eq!(
            fields_for("postgresql", false),
            FieldSet { server: true, path: false, dsn: false, login: true }
        );
        assert_eq!(fields_for("odbc", false), FieldSet { server: true, path: false, dsn: true, login: true });
        assert_eq!(
            fields_for("mysql", true),
            FieldSet { server: false, path: false, dsn: false, login: true }
        );
        let tally = fields_for("tally", true);
        assert_eq!(
            tally,
            FieldSet { server: true, path: false, dsn: false, login: false },
            "no login, no string"
        );
        assert!(database_label("tally").starts_with("Company"));
        assert_eq!(database_label("mongodb"), "Database name");
        let tally_form = DatabaseForm { name: "books".into(), kind: "tally".into(), ..Default::default() };
        assert_eq!(validate_db_form(&tally_form), Ok(()), "localhost:9000 by default");
    }

    #[test]
    fn connection_rows_join_health_and_never_show_a_password() {
        let e = DatabaseEntry {
            form: DatabaseForm { password: None, ..pg_form() },
            has_password: true,
            private: vec![],
        };
        let h = DatabaseHealth {
            name: "erp".into(),
            kind: Some("postgres".into()),
            healthy: false,
            error: Some("connection refused".into()),
            pool: Some(PoolUse { open: 2, idle: 2, max: 8 }),
            tables: Some(1200),
            checked_at: None,
        };
        let r = connection_row(&e, Some(&h));
        assert_eq!(r, ["erp", "PostgreSQL", "db.acme:5432/erp", "● connection refused", "0/8", "1,200"]);
        assert_eq!(connection_row(&e, None)[3], "unknown");
        assert!(!r.concat().contains("s3cret"));
    }

    fn settings() -> SettingsView {
        SettingsView {
            config_path: "/etc/mc.json".into(),
            connector_name: "Warehouse SAP".into(),
            api_key_masked: Some("vmc_acme_****_c4e2a".into()),
            cloud_url: "wss://console.acme.example/ws".into(),
            proxy_url: None,
            ca_cert_path: None,
            log_level: "info".into(),
            auto_update: true,
            auto_start: false,
            pin_set: false,
        }
    }

    #[test]
    fn settings_change_holds_only_what_differs() {
        let v = settings();
        let mut e = SettingsEdit::from_view(&v);
        assert_eq!(e.change(&v), Ok(SettingsChange::default()));
        e.proxy_url = "http://proxy:3128".into();
        e.auto_start = true;
        e.connector_name = " Warehouse SAP ".into();
        let c = e.change(&v).unwrap();
        assert_eq!(
            c,
            SettingsChange {
                proxy_url: Some("http://proxy:3128".into()),
                auto_start: Some(true),
                ..Default::default()
            }
        );
        e.cloud_url = "ftp://x".into();
        assert!(e.change(&v).unwrap_err().contains("wss://"));
        e.cloud_url = v.cloud_url.clone();
        e.connector_name = String::new();
        assert!(e.change(&v).is_err());
    }

    #[test]
    fn the_key_is_only_ever_shown_masked() {
        let mut v = settings();
        assert_eq!(masked_key(&v), "vmc_acme_****_c4e2a");
        v.api_key_masked = Some("vmc_acme_abcdefabcdef_c4e2a".into());
        assert_eq!(masked_key(&v), "stored (hidden)", "an unmasked value from a buggy backend is not shown");
        v.api_key_masked = None;
        assert_eq!(masked_key(&v), "no key stored");
    }

    #[test]
    fn the_pin_gate_asks_until_verified_then_for_five_minutes_not() {
        let now = Instant::now();
        let mut gate = PinGate::default();
        assert!(!gate.needs_pin(Guarded::EditConnection, now), "no PIN set: nothing asked");
        gate.set_pin_configured(true);
        assert!(gate.needs_pin(Guarded::ReplaceKey, now));
        gate.unlock(now);
        assert!(!gate.needs_pin(Guarded::ReplaceKey, now + Duration::from_secs(299)));
        assert!(gate.needs_pin(Guarded::ReplaceKey, now + Duration::from_secs(300)));
        gate.unlock(now);
        gate.lock();
        assert!(gate.needs_pin(Guarded::ChangePin, now));
    }
}
