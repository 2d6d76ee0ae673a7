//! `schema discover|show|diff|approve` and `schema private add|remove` (spec §4.3): the local
//! schema browser on the command line.
//!
//! `schema discover` keeps a local copy of each connection's discovered schema in
//! `<config dir>/schema/<connection>.json`. That copy holds every name, private ones included,
//! and never leaves the machine; `schema show --visible` prints what the cloud receives
//! instead (`policy::visible_schema`). `approve` and `private` edit `schemaPolicy.<connection>`
//! in the configuration file (`approve` also keeps the approved snapshot,
//! `<connection>.approved.json`); the running agent reads its policy when it starts. The files
//! and the policy edits are `mini_connector::setup::schema` (shared with the desktop app's
//! schema browser); this module parses, shows progress and prints.

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use drivers::{DatabaseSchema, SchemaDiff, Table, TableKind};
use mini_connector::config::{AgentConfig, ConnectionConfig};
use mini_connector::policy::SchemaPolicy;
use mini_connector::setup;
use mini_connector::setup::schema::{names_table, qualified};
use serde_json::{Value, json};

use super::output::{self, escape};
use super::{ConfigArg, Fail, Outcome, print_json};
use crate::exit;

/// `schema`: discovered tables and columns, what is private, what is approved.
#[derive(Debug, clap::Subcommand)]
pub enum SchemaCmd {
    /// Discover the schema of each configured connection (or one) and save it locally in
    /// `<config dir>/schema/<connection>.json` (private names included; it never leaves the
    /// machine).
    #[command(after_help = "\
Examples:
  mini-connector schema discover
  mini-connector schema discover --connection erp --json

Exit codes: 0 ok; 1 a database could not be read (the others are still saved); 2 unknown
connection or bad configuration; 4 VAULT_DECRYPT_ERROR.")]
    Discover {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this connection (default: all).
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        /// Print JSON: {"connections": [{"name", "ok", "tables", "views", "columns", "file", "error"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print the saved schema as a tree: columns with type and nullability, primary and foreign
    /// keys, row estimates; private tables and columns are marked `[private]`.
    #[command(after_help = "\
Examples:
  mini-connector schema show --connection erp
  mini-connector schema show --visible          # exactly what the cloud receives
  mini-connector schema show --json

JSON: {\"schemas\": [{\"connection\", \"dbType\", \"tables\": [{\"name\", \"kind\", \"columns\": [{\"name\",
\"dataType\", \"nullable\", ..., \"private\"}], \"primaryKey\", \"foreignKeys\", \"private\",
\"approved\"}]}]}; with --visible, the schema as broadcast (no private entries, no markers).

Exit codes: 0 ok; 2 unknown connection, no saved schema (run `schema discover`) or bad
configuration.")]
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this connection (default: all with a saved schema).
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print only what the cloud would receive (private and unapproved tables left out).
        #[arg(long)]
        visible: bool,
    },
    /// Discover the schema now and compare it with the saved copy (the saved copy is not
    /// changed; `schema discover` replaces it).
    #[command(after_help = "\
Examples:
  mini-connector schema diff --connection erp
  mini-connector schema diff --json

JSON: {\"connections\": [{\"name\", \"identical\", \"diff\": {\"addedTables\", \"removedTables\",
\"changedTables\": [{\"table\", \"addedColumns\", \"removedColumns\", \"changedColumns\",
\"changedProperties\"}]}}]}.

Exit codes: 0 identical; 1 different (or a database could not be read: see stderr);
2 unknown connection, no saved schema (run `schema discover`) or bad configuration;
4 VAULT_DECRYPT_ERROR.")]
    Diff {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this connection (default: all).
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the tables the cloud may see and query (`schemaPolicy.<connection>.approvedTables`):
    /// the given ones, or every table of the saved discovery. Private tables stay private.
    #[command(after_help = "\
Examples:
  mini-connector schema approve --connection erp                       # all discovered tables
  mini-connector schema approve --connection erp --tables customers,orders
  mini-connector schema approve --connection erp --clear               # no approval list

A running agent is told to reload (it keeps its cloud link; `mini-connector reload` by hand).

Exit codes: 0 ok; 2 unknown connection or table, no saved schema (run `schema discover`),
or bad configuration.")]
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        /// The connection (may be left out when only one is configured, or without --tables
        /// to approve every discovered table of every connection).
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        /// Comma-separated table names (`schema.table` where the database has schemas).
        #[arg(long, value_delimiter = ',', value_name = "A,B,...", conflicts_with = "clear")]
        tables: Option<Vec<String>>,
        /// Remove the approval list: every table that is not private is visible again.
        #[arg(long)]
        clear: bool,
        /// Print JSON (docs/CLI.md): {"ok": true, "data": {"connections": [{"connection",
        /// "approvedTables"}], "agent"}}; `approvedTables` null means no approval list.
        #[arg(long)]
        json: bool,
    },
    /// Mark tables or columns private (never shown to nor queryable by the cloud), or unmark them.
    Private {
        #[command(subcommand)]
        command: PrivateCmd,
    },
}

/// `schema private add|remove`.
#[derive(Debug, clap::Subcommand)]
pub enum PrivateCmd {
    /// Mark a table (`--table T`) or a column (`--column T.C`) private.
    #[command(after_help = "\
Examples:
  mini-connector schema private add --connection erp --table payroll
  mini-connector schema private add --connection erp --column customers.email

A running agent is told to reload (it keeps its cloud link; `mini-connector reload` by hand).

Exit codes: 0 ok; 2 unknown connection, bad name or bad configuration.")]
    Add(PrivateArgs),
    /// Make a private table or column visible again.
    #[command(
        after_help = "Exit codes: 0 ok (also when it was not private); 2 unknown connection, bad name \
                            or bad configuration."
    )]
    Remove(PrivateArgs),
}

/// What `schema private add|remove` acts on.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["table", "column"])))]
pub struct PrivateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The connection.
    #[arg(long, value_name = "NAME")]
    connection: String,
    /// A table (`schema.table` where the database has schemas).
    #[arg(long, value_name = "T")]
    table: Option<String>,
    /// A column, as `table.column` (`schema.table.column`).
    #[arg(long, value_name = "T.C")]
    column: Option<String>,
    /// Print JSON (docs/CLI.md): {"ok": true, "data": {"connection", "table", "column",
    /// "private", "changed", "agent"}}.
    #[arg(long)]
    json: bool,
}

/// `schema ...`. `diff` exits 1 when the schema changed, without an error message.
pub fn schema(command: SchemaCmd) -> ExitCode {
    let outcome = match command {
        SchemaCmd::Discover { config, connection, json } => discover(&config, connection.as_deref(), json),
        SchemaCmd::Show { config, connection, json, visible } => {
            show(&config, connection.as_deref(), json, visible)
        }
        SchemaCmd::Diff { config, connection, json } => match diff(&config, connection.as_deref(), json) {
            Ok(true) => return ExitCode::from(exit::OK),
            Ok(false) => return ExitCode::from(exit::FAILURE),
            Err(fail) => Err(fail),
        },
        SchemaCmd::Approve { config, connection, tables, clear, json } => {
            approve(&config, connection.as_deref(), tables, clear, json)
        }
        SchemaCmd::Private { command: PrivateCmd::Add(args) } => private(&args, true),
        SchemaCmd::Private { command: PrivateCmd::Remove(args) } => private(&args, false),
    };
    crate::finish(outcome)
}

// ---------------------------------------------------------------------------------------------
// The saved copy

fn schema_file(config_path: &Path, connection: &str) -> PathBuf {
    setup::schema::schema_file(config_path, connection)
}

fn save_schema(file: &Path, schema: &DatabaseSchema) -> Result<(), Fail> {
    Ok(setup::schema::save_schema(file, schema)?)
}

/// The saved discovery of `connection`; `None` when there is none yet.
fn load_saved(file: &Path) -> Result<Option<DatabaseSchema>, Fail> {
    Ok(setup::schema::load_saved(file)?)
}

fn require_saved(arg: &ConfigArg, name: &str) -> Result<DatabaseSchema, Fail> {
    load_saved(&schema_file(&arg.path(), name))?.ok_or_else(|| {
        Fail::usage(format!(
            "no saved schema for connection `{name}`; run `mini-connector schema discover --connection {name}` first"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The connections a command acts on: the named one, or all.
fn selected<'a>(config: &'a AgentConfig, name: Option<&str>) -> Result<Vec<&'a ConnectionConfig>, Fail> {
    match name {
        Some(name) => Ok(vec![find(config, name)?]),
        None if config.connections.is_empty() => Err(Fail::usage(
            "no connections configured; add one with `mini-connector db add --name NAME --type ...`",
        )),
        None => Ok(config.connections.iter().collect()),
    }
}

fn find<'a>(config: &'a AgentConfig, name: &str) -> Result<&'a ConnectionConfig, Fail> {
    Ok(&config.connections[setup::find(config, name)?])
}

struct Counts {
    tables: usize,
    views: usize,
    columns: usize,
}

fn counts(schema: &DatabaseSchema) -> Counts {
    Counts {
        tables: schema.tables.iter().filter(|t| t.kind == TableKind::Table).count(),
        views: schema.tables.iter().filter(|t| t.kind == TableKind::View).count(),
        columns: schema.tables.iter().map(|t| t.columns.len()).sum(),
    }
}

/// Opens the database with its vault password and discovers its schema, with a progress line
/// on stderr (a terminal) when the catalogue is big or slow.
fn discover_now(config: &AgentConfig, connection: &ConnectionConfig) -> Result<DatabaseSchema, Fail> {
    let name = &connection.name;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = None::<Instant>;
    let mut shown = false;
    let result = setup::schema::discover_schema(config, connection, &mut |p| {
        let big = p.total.is_some_and(|t| t >= 200) || started.elapsed() > Duration::from_secs(1);
        if !terminal || !big || last.is_some_and(|l| l.elapsed() < Duration::from_millis(200)) {
            return;
        }
        last = Some(Instant::now());
        shown = true;
        match p.total {
            Some(total) => eprint!("\rdiscovering `{name}`: {}/{total} tables", p.done),
            None => eprint!("\rdiscovering `{name}`: {} tables", p.done),
        }
    });
    if shown {
        eprintln!();
    }
    Ok(result?)
}

fn restart_hint(arg: &ConfigArg, config: &AgentConfig) -> &'static str {
    super::reload_running_agent(&arg.path(), config)
}

// ---------------------------------------------------------------------------------------------
// discover

fn discover(arg: &ConfigArg, name: Option<&str>, json: bool) -> Outcome {
    let config = arg.load()?;
    let mut reports = Vec::new();
    let mut first_failure: Option<Fail> = None;
    for connection in selected(&config, name)? {
        let file = schema_file(&arg.path(), &connection.name);
        let result = discover_now(&config, connection).and_then(|schema| {
            save_schema(&file, &schema)?;
            Ok(schema)
        });
        match result {
            Ok(schema) => {
                let c = counts(&schema);
                if !json {
                    println!(
                        "`{}`: {} tables, {} views, {} columns; saved to {}",
                        escape(&connection.name),
                        c.tables,
                        c.views,
                        c.columns,
                        file.display()
                    );
                }
                reports.push(json!({
                    "name": connection.name, "ok": true, "tables": c.tables, "views": c.views,
                    "columns": c.columns, "file": file, "error": null,
                }));
            }
            Err(fail) => {
                // A vault that cannot be decrypted fails every connection alike: stop here.
                if fail.code == exit::VAULT {
                    return Err(fail);
                }
                if !json {
                    eprintln!("error: {}", escape(&format!("{:#}", fail.error)));
                }
                reports.push(json!({
                    "name": connection.name, "ok": false, "tables": null, "views": null,
                    "columns": null, "file": null, "error": format!("{:#}", fail.error),
                }));
                first_failure.get_or_insert(fail);
            }
        }
    }
    if json {
        print_json(&json!({ "connections": reports }));
    }
    match first_failure {
        None => Ok(()),
        // Already printed (or in the JSON): exit 1 with a short summary.
        Some(_) => Err(Fail::reported(
            exit::FAILURE,
            format!(
                "{} connection(s) could not be discovered",
                reports.iter().filter(|r| r["ok"] == json!(false)).count()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// show

fn show(arg: &ConfigArg, name: Option<&str>, json: bool, visible: bool) -> Outcome {
    let config = arg.load()?;
    let mut saved = Vec::new();
    match name {
        Some(name) => {
            find(&config, name)?;
            saved.push(require_saved(arg, name)?);
        }
        None => {
            for connection in selected(&config, None)? {
                match load_saved(&schema_file(&arg.path(), &connection.name))? {
                    Some(schema) => saved.push(schema),
                    None if !json => println!(
                        "`{}`: not discovered yet (mini-connector schema discover --connection {})\n",
                        escape(&connection.name),
                        escape(&connection.name)
                    ),
                    None => {}
                }
            }
            if saved.is_empty() {
                return Err(Fail::usage("no saved schema; run `mini-connector schema discover` first"));
            }
        }
    }
    let policy_of = |schema: &DatabaseSchema| config.schema_policy.get(&schema.connection).cloned();
    if json {
        let schemas: Vec<Value> = saved
            .iter()
            .map(|schema| {
                let policy = policy_of(schema).unwrap_or_default();
                if visible {
                    serde_json::to_value(mini_connector::policy::visible_schema(schema, &policy.to_gate()))
                        .unwrap_or_default()
                } else {
                    marked(schema, &policy)
                }
            })
            .collect();
        print_json(&json!({ "schemas": schemas }));
        return Ok(());
    }
    for schema in &saved {
        let policy = policy_of(schema).unwrap_or_default();
        if visible {
            let shown = mini_connector::policy::visible_schema(schema, &policy.to_gate());
            print_tree(&shown, &SchemaPolicy::default(), " (as the cloud sees it)");
        } else {
            print_tree(schema, &policy, "");
        }
    }
    Ok(())
}

/// Private marks, and the approval list on its own.
struct Marks {
    private: gate::Policy,
    approved: gate::Policy,
}

impl Marks {
    fn new(policy: &SchemaPolicy) -> Self {
        let full = policy.to_gate();
        let approved =
            gate::Policy { approved_tables: full.approved_tables.clone(), ..gate::Policy::default() };
        let private = gate::Policy { approved_tables: None, ..full };
        Self { private, approved }
    }

    fn table_private(&self, t: &Table) -> bool {
        self.private.hides_table(t.schema.as_deref(), &t.name)
    }

    /// Whether the approval list (if any) lets the table through; private ones stay hidden.
    fn table_approved(&self, t: &Table) -> bool {
        !self.approved.hides_table(t.schema.as_deref(), &t.name)
    }

    fn column_private(&self, t: &Table, column: &str) -> bool {
        self.private.hides_column(t.schema.as_deref(), &t.name, column)
    }
}

/// The schema as JSON with `private` on tables and columns and `approved` on tables.
fn marked(schema: &DatabaseSchema, policy: &SchemaPolicy) -> Value {
    let marks = Marks::new(policy);
    let mut value = serde_json::to_value(schema).unwrap_or_default();
    if let Some(tables) = value.get_mut("tables").and_then(Value::as_array_mut) {
        for (table, t) in tables.iter_mut().zip(&schema.tables) {
            if let Some(columns) = table.get_mut("columns").and_then(Value::as_array_mut) {
                for (column, c) in columns.iter_mut().zip(&t.columns) {
                    column["private"] = json!(marks.column_private(t, &c.name));
                }
            }
            table["private"] = json!(marks.table_private(t));
            table["approved"] = json!(marks.table_approved(t));
        }
    }
    value
}

fn print_tree(schema: &DatabaseSchema, policy: &SchemaPolicy, note: &str) {
    let marks = Marks::new(policy);
    let c = counts(schema);
    // Names come from the database: escaped (a tab, newline or escape sequence in a name must
    // neither break the layout nor reach the terminal), padded by display width.
    println!(
        "{} ({}): {} tables, {} views, {} columns{note}",
        escape(&schema.connection),
        schema.db_type,
        c.tables,
        c.views,
        c.columns
    );
    let list = |names: &[String]| names.iter().map(|n| escape(n).into_owned()).collect::<Vec<_>>().join(", ");
    for t in &schema.tables {
        let mut head = format!("  {}", escape(&qualified(t)));
        if t.kind == TableKind::View {
            head.push_str(" (view)");
        }
        if let Some(rows) = t.row_count_estimate {
            head.push_str(&format!("  ~{rows} rows"));
        }
        if marks.table_private(t) {
            head.push_str("  [private]");
        } else if !marks.table_approved(t) {
            head.push_str("  [not approved]");
        }
        println!("{head}");
        let mut columns = output::Table::new(&["", "", ""]);
        for column in &t.columns {
            let data_type = if column.data_type.is_empty() { "-" } else { column.data_type.as_str() };
            let mut flags = if column.nullable { "null    " } else { "not null" }.to_owned();
            if t.primary_key.contains(&column.name) {
                flags.push_str("  PK");
            }
            if marks.column_private(t, &column.name) {
                flags.push_str("  [private]");
            }
            columns.push(&[column.name.as_str(), data_type, flags.as_str()]);
        }
        // The header row of the shared renderer is empty here: skip it.
        for line in columns.render().lines().skip(1) {
            println!("    {line}");
        }
        if t.primary_key.len() > 1 {
            println!("    primary key ({})", list(&t.primary_key));
        }
        for fk in &t.foreign_keys {
            println!(
                "    foreign key ({}) -> {}({})",
                list(&fk.columns),
                escape(&fk.ref_table),
                list(&fk.ref_columns)
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// diff

/// `Ok(true)` when every compared schema is identical to its saved copy.
fn diff(arg: &ConfigArg, name: Option<&str>, json: bool) -> Result<bool, Fail> {
    let config = arg.load()?;
    let connections = selected(&config, name)?;
    // Every saved copy first: a missing one is a usage error before any database is opened.
    let saved: Vec<DatabaseSchema> =
        connections.iter().map(|c| require_saved(arg, &c.name)).collect::<Result<_, _>>()?;
    let mut identical = true;
    let mut reports = Vec::new();
    for (connection, old) in connections.iter().zip(&saved) {
        let new = discover_now(&config, connection)?;
        let changes = drivers::diff(old, &new);
        identical &= changes.is_empty();
        if json {
            reports.push(json!({
                "name": connection.name,
                "identical": changes.is_empty(),
                "diff": changes,
            }));
        } else {
            print_diff(&connection.name, &changes);
        }
    }
    if json {
        print_json(&json!({ "connections": reports }));
    } else if !identical {
        println!("to save the current schema as the reference: mini-connector schema discover");
    }
    Ok(identical)
}

fn print_diff(name: &str, changes: &SchemaDiff) {
    if changes.is_empty() {
        println!("`{}`: no change since the last discovery", escape(name));
        return;
    }
    println!("`{}`: changed since the last discovery", escape(name));
    for table in &changes.added_tables {
        println!("  + table {}", escape(table));
    }
    for table in &changes.removed_tables {
        println!("  - table {}", escape(table));
    }
    for change in &changes.changed_tables {
        println!("  ~ table {}", escape(&change.table));
        for column in &change.added_columns {
            println!("      + column {}", escape(column));
        }
        for column in &change.removed_columns {
            println!("      - column {}", escape(column));
        }
        for column in &change.changed_columns {
            let describe = |c: &drivers::Column| {
                format!("{} {}", escape(&c.data_type), if c.nullable { "null" } else { "not null" })
            };
            println!(
                "      ~ column {} ({}): {} -> {}",
                escape(&column.column),
                column.fields.join(", "),
                describe(&column.before),
                describe(&column.after)
            );
        }
        for property in &change.changed_properties {
            println!("      ~ {}", escape(property));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// approve

fn approve(
    arg: &ConfigArg,
    name: Option<&str>,
    tables: Option<Vec<String>>,
    clear: bool,
    json: bool,
) -> Outcome {
    let mut config = arg.load()?;
    let names: Vec<String> = match (name, &tables) {
        (Some(name), _) => vec![find(&config, name)?.name.clone()],
        (None, Some(_)) | (None, None) if clear => {
            return Err(Fail::usage("--clear needs --connection NAME"));
        }
        (None, Some(_)) if config.connections.len() != 1 => {
            return Err(Fail::usage("--tables needs --connection NAME (several connections are configured)"));
        }
        (None, _) => selected(&config, None)?.iter().map(|c| c.name.clone()).collect(),
    };
    let mut messages = Vec::new();
    let mut data = Vec::new();
    let mut snapshots = Vec::new();
    for name in &names {
        let approved = if clear {
            None
        } else {
            let saved = load_saved(&schema_file(&arg.path(), name))?;
            if let Some(schema) = &saved {
                snapshots.push((name.clone(), schema.clone()));
            }
            Some(match &tables {
                Some(given) => approved_from_list(name, given, saved.as_ref())?,
                None => {
                    let saved = saved.ok_or_else(|| {
                        Fail::usage(format!(
                            "no saved schema for connection `{name}`; run `mini-connector schema discover --connection {name}` first, or give --tables"
                        ))
                    })?;
                    saved.tables.iter().map(qualified).collect()
                }
            })
        };
        messages.push(match &approved {
            None => format!("`{name}`: no approval list (every table that is not private is visible)"),
            Some(set) => format!(
                "`{name}`: {} table(s) approved: {}",
                set.len(),
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
        data.push(json!({ "connection": name, "approvedTables": approved }));
        setup::schema::set_approved(&mut config, name, approved);
    }
    config.save(&arg.path())?;
    // The schema as approved: what the desktop app's schema browser compares with.
    for (name, schema) in &snapshots {
        save_schema(&setup::schema::approved_file(&arg.path(), name), schema)?;
    }
    for message in messages {
        say!("{}", escape(&message));
    }
    let agent = restart_hint(arg, &config);
    if json {
        print_json(&json!({ "connections": data, "agent": agent }));
    }
    Ok(())
}

/// The `--tables` list, checked against the saved discovery when there is one.
fn approved_from_list(
    connection: &str,
    given: &[String],
    saved: Option<&DatabaseSchema>,
) -> Result<BTreeSet<String>, Fail> {
    let set: BTreeSet<String> = given.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
    if set.is_empty() {
        return Err(Fail::usage(
            "--tables is empty; name at least one table (or use --clear to remove the approval list)",
        ));
    }
    match saved {
        Some(schema) => {
            let unknown: Vec<&str> = set
                .iter()
                .filter(|name| !schema.tables.iter().any(|t| names_table(name, t)))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(Fail::usage(format!(
                    "not in the saved schema of `{connection}`: {} (run `mini-connector schema discover` if the database changed)",
                    unknown.join(", ")
                )));
            }
        }
        None => eprintln!(
            "note: no saved schema for `{connection}`; the table names are not checked (run `mini-connector schema discover`)"
        ),
    }
    Ok(set)
}

// ---------------------------------------------------------------------------------------------
// private

fn private(args: &PrivateArgs, add: bool) -> Outcome {
    let arg = &args.config;
    let config = arg.load()?;
    let name = find(&config, &args.connection)?.name.clone();
    let (table, column, what) = match (&args.table, &args.column) {
        (Some(table), _) => {
            let table = check_part(table, "--table")?;
            let what = format!("table `{table}`");
            (table, None, what)
        }
        (None, Some(column)) => {
            let (table, column) = column
                .trim()
                .rsplit_once('.')
                .ok_or_else(|| Fail::usage("--column must be TABLE.COLUMN (e.g. customers.email)"))?;
            let table = check_part(table, "--column (table part)")?;
            let column = check_part(column, "--column (column part)")?;
            let what = format!("column `{table}.{column}`");
            (table, Some(column), what)
        }
        (None, None) => return Err(Fail::usage("give --table T or --column T.C")),
    };
    let (config, changed) = setup::schema::mark_private(&arg.path(), &name, &table, column.as_deref(), add)?;
    let data = |agent: Option<&str>| {
        json!({
            "connection": name,
            "table": table,
            "column": column,
            "private": add,
            "changed": changed,
            "agent": agent,
        })
    };
    if !changed {
        say!(
            "{} of `{}` {}; nothing changed",
            escape(&what),
            escape(&name),
            if add { "is private already" } else { "was not private" }
        );
        if args.json {
            print_json(&data(None));
        }
        return Ok(());
    }
    say!(
        "{} of `{}` is {}",
        escape(&what),
        escape(&name),
        if add { "now private" } else { "no longer private" }
    );
    if add {
        warn_if_unknown(arg, &name, args);
    }
    let agent = restart_hint(arg, &config);
    if args.json {
        print_json(&data(Some(agent)));
    }
    Ok(())
}

/// A part of `--table` / `--column`, checked (the flag named in the error).
fn check_part(text: &str, flag: &str) -> Result<String, Fail> {
    setup::schema::check_part(text, flag).map_err(|e| Fail::usage(e.to_string()))
}

/// A note when the saved discovery has no such table or column (a typo protects nothing).
fn warn_if_unknown(arg: &ConfigArg, connection: &str, args: &PrivateArgs) {
    let Ok(Some(schema)) = load_saved(&schema_file(&arg.path(), connection)) else { return };
    let found = match (&args.table, &args.column) {
        (Some(table), _) => schema.tables.iter().any(|t| names_table(table.trim(), t)),
        (None, Some(column)) => column.trim().rsplit_once('.').is_some_and(|(table, column)| {
            schema.tables.iter().any(|t| {
                names_table(table, t) && t.columns.iter().any(|c| c.name.eq_ignore_ascii_case(column))
            })
        }),
        (None, None) => true,
    };
    if !found {
        eprintln!(
            "note: the saved schema of `{connection}` has no such name; check the spelling (it is kept private anyway)"
        );
    }
}
