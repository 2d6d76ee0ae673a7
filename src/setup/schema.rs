//! The local schema browser (spec §4.3): discovery, private marks, approval, sample rows.
//!
//! Each discovery is saved in `<config dir>/schema/<connection>.json` (every name, private ones
//! included; it never leaves the machine). Approving stores that schema as the approved
//! snapshot, `<config dir>/schema/<connection>.approved.json`, and sets
//! `schemaPolicy.<connection>.approvedTables` to its tables; [`SchemaView::changes`] compares a
//! discovery with that snapshot. Private marks are `schemaPolicy.<connection>.privateTables` /
//! `privateColumns`. The running agent reads its policy when it starts.
//!
//! Sample rows are read through the driver like any command: a query checked by the read-only
//! gate (with the private marks), in a read-only session, at most [`MAX_SAMPLE_ROWS`] rows;
//! private columns are never selected and come back as `None`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drivers::{DatabaseSchema, SchemaDiff, Table};

use super::databases::{ENOUGH, TextRows};
use super::{Result, SetupError, find, load};
use crate::config::{AgentConfig, ConnectionConfig};
use crate::policy::SchemaPolicy;
use crate::protocol::ErrorCode;
use crate::protocol::control::{SampleRows, SchemaChange, SchemaView};

/// The most rows [`sample`] reads.
pub const MAX_SAMPLE_ROWS: u32 = 20;
/// How long a sample query may run.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `<config dir>/schema/<connection><suffix>.json`. The name is escaped so that any connection
/// name gives one plain file name in that directory.
fn file(config_path: &Path, connection: &str, suffix: &str) -> PathBuf {
    let mut name = String::new();
    for (i, c) in connection.chars().enumerate() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0) {
            name.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    config_path.parent().unwrap_or(Path::new(".")).join("schema").join(format!("{name}{suffix}.json"))
}

/// The saved discovery of `connection`.
pub fn schema_file(config_path: &Path, connection: &str) -> PathBuf {
    file(config_path, connection, "")
}

/// The approved snapshot of `connection`.
pub fn approved_file(config_path: &Path, connection: &str) -> PathBuf {
    file(config_path, connection, ".approved")
}

/// Writes a schema file atomically.
pub fn save_schema(file: &Path, schema: &DatabaseSchema) -> Result<()> {
    let mut text = serde_json::to_string_pretty(schema).map_err(|e| SetupError::io(e.to_string()))?;
    text.push('\n');
    crate::secrets::write_atomic(file, text.as_bytes())
        .map_err(|e| SetupError::io(format!("cannot write {}: {e}", file.display())))
}

/// A saved schema file; `None` when there is none yet.
pub fn load_saved(file: &Path) -> Result<Option<DatabaseSchema>> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            SetupError::invalid(format!(
                "the saved schema {} is damaged ({e}); run `mini-connector schema discover` again",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SetupError::io(format!("cannot read {}: {e}", file.display()))),
    }
}

/// Moves a connection's schema files along with a rename.
pub(crate) fn rename_files(config_path: &Path, old: &str, new: &str) {
    for (from, to) in [
        (schema_file(config_path, old), schema_file(config_path, new)),
        (approved_file(config_path, old), approved_file(config_path, new)),
    ] {
        if from.exists() {
            let _ = std::fs::rename(from, to);
        }
    }
}

/// Deletes a removed connection's schema files.
pub(crate) fn remove_files(config_path: &Path, name: &str) {
    let _ = std::fs::remove_file(schema_file(config_path, name));
    let _ = std::fs::remove_file(approved_file(config_path, name));
}

/// `schema.table`, or `table` where the database has no schemas.
pub fn qualified(table: &Table) -> String {
    match &table.schema {
        Some(schema) => format!("{schema}.{}", table.name),
        None => table.name.clone(),
    }
}

/// Whether the policy name `name` (`t` or `s.t`) designates `table`, the way the gate matches.
pub fn names_table(name: &str, table: &Table) -> bool {
    let only =
        gate::Policy { approved_tables: Some(BTreeSet::from([name.to_owned()])), ..gate::Policy::default() };
    !only.hides_table(table.schema.as_deref(), &table.name)
}

/// Opens the database with its vault password and discovers its schema, reporting progress.
pub fn discover_schema(
    config: &AgentConfig,
    connection: &ConnectionConfig,
    progress: &mut dyn FnMut(drivers::DiscoveryProgress),
) -> Result<DatabaseSchema> {
    let mut spec = config.resolved_connection_spec(connection)?;
    spec.pool.min_connections = 1;
    spec.pool.max_connections = spec.pool.max_connections.clamp(1, 2);
    let name = &connection.name;
    let database = drivers::Database::open(&spec).map_err(|e| SetupError::Database {
        code: super::driver_code(&e),
        message: format!("cannot open connection `{name}`: {e}"),
    })?;
    drop(spec);
    database.discover_with_progress(progress).map_err(|e| SetupError::Database {
        code: super::driver_code(&e),
        message: format!("cannot discover the schema of `{name}`: {e}"),
    })
}

/// Discovers a connection's schema now, saves it as the local copy and returns it with its
/// private marks and its changes against the approved snapshot.
pub fn discover(config_path: &Path, connection: &str) -> Result<SchemaView> {
    let config = load(config_path)?;
    let entry = &config.connections[find(&config, connection)?];
    let schema = discover_schema(&config, entry, &mut |_| {})?;
    save_schema(&schema_file(config_path, connection), &schema)?;
    view(config_path, &config, schema)
}

/// The browser's view of `schema` for its connection.
pub fn view(config_path: &Path, config: &AgentConfig, schema: DatabaseSchema) -> Result<SchemaView> {
    let policy = config.schema_policy.get(&schema.connection).cloned().unwrap_or_default();
    let approved = load_saved(&approved_file(config_path, &schema.connection))?;
    let changes = approved.as_ref().map(|old| changes(&drivers::diff(old, &schema))).unwrap_or_default();
    let private_columns = policy
        .private_columns
        .iter()
        .flat_map(|(table, columns)| columns.iter().map(move |c| format!("{table}.{c}")))
        .collect();
    Ok(SchemaView {
        schema,
        private_tables: policy.private_tables.iter().cloned().collect(),
        private_columns,
        changes,
        approved_before: approved.is_some(),
    })
}

/// A diff as the browser lists it.
pub fn changes(diff: &SchemaDiff) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    out.extend(diff.added_tables.iter().map(|t| SchemaChange::TableAdded { table: t.clone() }));
    out.extend(diff.removed_tables.iter().map(|t| SchemaChange::TableRemoved { table: t.clone() }));
    for table in &diff.changed_tables {
        let name = &table.table;
        out.extend(
            table
                .added_columns
                .iter()
                .map(|c| SchemaChange::ColumnAdded { table: name.clone(), column: c.clone() }),
        );
        out.extend(
            table
                .removed_columns
                .iter()
                .map(|c| SchemaChange::ColumnRemoved { table: name.clone(), column: c.clone() }),
        );
        for column in &table.changed_columns {
            out.push(SchemaChange::ColumnChanged {
                table: name.clone(),
                column: column.column.clone(),
                before: describe_column(&column.before),
                after: describe_column(&column.after),
            });
        }
    }
    out
}

/// `integer not null`.
pub fn describe_column(column: &drivers::Column) -> String {
    format!("{} {}", column.data_type, if column.nullable { "null" } else { "not null" })
}

/// The saved discovery, or a new one (saved) when there is none yet.
fn saved_or_discover(config_path: &Path, config: &AgentConfig, connection: &str) -> Result<DatabaseSchema> {
    let entry = &config.connections[find(config, connection)?];
    match load_saved(&schema_file(config_path, connection))? {
        Some(schema) => Ok(schema),
        None => {
            let schema = discover_schema(config, entry, &mut |_| {})?;
            save_schema(&schema_file(config_path, connection), &schema)?;
            Ok(schema)
        }
    }
}

/// Approves the connection's current (saved) discovery: it becomes the approved snapshot and
/// its tables the approved ones (`approvedTables`). Discovers first when nothing is saved.
pub fn approve_schema(config_path: &Path, connection: &str) -> Result<SchemaView> {
    let mut config = load(config_path)?;
    let schema = saved_or_discover(config_path, &config, connection)?;
    let tables: BTreeSet<String> = schema.tables.iter().map(qualified).collect();
    set_approved(&mut config, connection, Some(tables));
    config.save(config_path)?;
    save_schema(&approved_file(config_path, connection), &schema)?;
    view(config_path, &config, schema)
}

/// Sets (or, with `None`, removes) a connection's approval list in `config`, dropping a policy
/// that is left empty.
pub fn set_approved(config: &mut AgentConfig, connection: &str, approved: Option<BTreeSet<String>>) {
    let policy = config.schema_policy.entry(connection.to_owned()).or_default();
    policy.approved_tables = approved;
    if *policy == SchemaPolicy::default() {
        config.schema_policy.remove(connection);
    }
}

/// A table or column name part, trimmed and checked.
pub fn check_part(text: &str, what: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('.') || text.ends_with('.') || text.chars().any(char::is_control) {
        return Err(SetupError::invalid(format!("{what}: `{text}` is not a valid name")));
    }
    Ok(text.to_owned())
}

/// Marks `table` (or its `column`) private, or public again, in the configuration. Returns the
/// saved configuration and whether anything changed (nothing is written when not).
pub fn mark_private(
    config_path: &Path,
    connection: &str,
    table: &str,
    column: Option<&str>,
    private: bool,
) -> Result<(AgentConfig, bool)> {
    let mut config = load(config_path)?;
    let name = config.connections[find(&config, connection)?].name.clone();
    let table = check_part(table, "table")?;
    let policy = config.schema_policy.entry(name.clone()).or_default();
    let changed = match column {
        None if private => policy.private_tables.insert(table),
        None => {
            let before = policy.private_tables.len();
            policy.private_tables.retain(|t| !t.eq_ignore_ascii_case(&table));
            before != policy.private_tables.len()
        }
        Some(column) => {
            let column = check_part(column, "column")?;
            if private {
                policy.private_columns.entry(table).or_default().insert(column)
            } else {
                let mut changed = false;
                for (t, columns) in policy.private_columns.iter_mut() {
                    if t.eq_ignore_ascii_case(&table) {
                        let before = columns.len();
                        columns.retain(|c| !c.eq_ignore_ascii_case(&column));
                        changed |= before != columns.len();
                    }
                }
                policy.private_columns.retain(|_, columns| !columns.is_empty());
                changed
            }
        }
    };
    if *policy == SchemaPolicy::default() {
        config.schema_policy.remove(&name);
    }
    if changed {
        config.save(config_path)?;
    }
    Ok((config, changed))
}

/// Marks a table or column private (or public again) and returns the browser's view.
pub fn set_private(
    config_path: &Path,
    connection: &str,
    table: &str,
    column: Option<&str>,
    private: bool,
) -> Result<SchemaView> {
    let (config, _) = mark_private(config_path, connection, table, column, private)?;
    let schema = saved_or_discover(config_path, &config, connection)?;
    view(config_path, &config, schema)
}

/// Up to `limit` (at most [`MAX_SAMPLE_ROWS`]) rows of `table`, for the browser only. Private
/// columns are not selected (`None` in their place); a private table is refused
/// (`SCHEMA_ACCESS_DENIED`). The query goes through the read-only gate and a read-only session.
pub fn sample(config_path: &Path, connection: &str, table: &str, limit: u32) -> Result<SampleRows> {
    let config = load(config_path)?;
    let entry = config.connections[find(&config, connection)?].clone();
    let schema = saved_or_discover(config_path, &config, connection)?;
    let wanted = table.trim();
    let found = schema
        .tables
        .iter()
        .find(|t| qualified(t) == wanted)
        .or_else(|| schema.tables.iter().find(|t| names_table(wanted, t)))
        .ok_or_else(|| {
            SetupError::invalid(format!(
                "no table `{wanted}` in the discovered schema of `{connection}` (discover again if it is new)"
            ))
        })?;
    // Private marks only: the browser shows unapproved tables too, never private ones.
    let configured = config.schema_policy.get(connection).cloned().unwrap_or_default();
    let private_only = gate::Policy { approved_tables: None, ..configured.to_gate() };
    let policy = crate::policy::effective_policy(&private_only, &schema);
    if policy.hides_table(found.schema.as_deref(), &found.name) {
        return Err(SetupError::Database {
            code: ErrorCode::SchemaAccessDenied,
            message: format!("`{}` is private: its rows are never read", qualified(found)),
        });
    }
    let columns: Vec<String> = found.columns.iter().map(|c| c.name.clone()).collect();
    let readable: Vec<usize> = (0..columns.len())
        .filter(|&i| !policy.hides_column(found.schema.as_deref(), &found.name, &columns[i]))
        .collect();
    let limit = limit.clamp(1, MAX_SAMPLE_ROWS);
    if readable.is_empty() {
        return Ok(SampleRows { columns, rows: Vec::new() });
    }
    let mut spec = config.resolved_connection_spec(&entry)?;
    spec.pool.min_connections = 1;
    spec.pool.max_connections = 1;
    let database = drivers::Database::open(&spec).map_err(|e| SetupError::database(&e))?;
    drop(spec);
    let target = database.gate_target();
    let sql = sample_sql(target.dialect, found, readable.iter().map(|&i| columns[i].as_str()), limit);
    let checked = gate::check_with(&sql, 0, target, &policy, &gate::Limits::default()).map_err(|r| {
        SetupError::Database { code: crate::policy::rejection_code(r.code), message: r.to_string() }
    })?;
    let mut sink = TextRows { limit: limit as usize, ..TextRows::default() };
    let options = drivers::QueryOptions { timeout: Some(SAMPLE_TIMEOUT), ..Default::default() };
    match database.query(&checked, &[], &options, &mut sink) {
        Ok(_) => {}
        Err(drivers::DriverError::Sink(e)) if e.0 == ENOUGH => {}
        Err(e) => return Err(SetupError::database(&e)),
    }
    let rows = sink
        .rows
        .into_iter()
        .map(|values| {
            let mut full = vec![None; columns.len()];
            for (slot, value) in readable.iter().zip(values) {
                full[*slot] = value;
            }
            full
        })
        .collect();
    Ok(SampleRows { columns, rows })
}

/// `SELECT <columns> FROM <table>` with the dialect's row limit and quoting.
fn sample_sql<'a>(
    dialect: gate::Dialect,
    table: &Table,
    columns: impl Iterator<Item = &'a str>,
    limit: u32,
) -> String {
    let quote = |name: &str| match dialect {
        gate::Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
        gate::Dialect::Mssql => format!("[{}]", name.replace(']', "]]")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    };
    let list: Vec<String> = columns.map(quote).collect();
    let from = match &table.schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(&table.name)),
        None => quote(&table.name),
    };
    match dialect {
        gate::Dialect::Mssql => format!("SELECT TOP {limit} {} FROM {from}", list.join(", ")),
        gate::Dialect::Oracle => {
            format!("SELECT {} FROM {from} FETCH FIRST {limit} ROWS ONLY", list.join(", "))
        }
        gate::Dialect::Generic => format!("SELECT {} FROM {from}", list.join(", ")),
        _ => format!("SELECT {} FROM {from} LIMIT {limit}", list.join(", ")),
    }
}
