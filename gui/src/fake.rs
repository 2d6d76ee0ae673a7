//! [`ScriptedBackend`]: a [`Backend`] answering from canned data and playing a scripted event
//! sequence, for the GUI's tests, the Xvfb screenshots and `examples/preview.rs`.
//!
//! It behaves like a small agent: Pause/Resume/Reconnect change the state it streams, setup
//! requests change its settings, databases and schema, and while connected it streams a status
//! every second (with a varying latency for the graph) and now and then a finished command.
//! Nothing touches the network, a database or the disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use protocol::ApiKey;
use protocol::control::{
    ActivityEntry, AgentEvent, Backend, ControlReply, ControlRequest, DatabaseEntry, DatabaseForm,
    DatabaseHealth, DoctorReport, DoctorStep, Indicator, KeyReport, LinkState, Notice, NoticeKind, Outcome,
    PoolUse, QueueStatus, SampleRows, SchemaChange, SchemaView, SettingsView, SetupRequest, StatusSnapshot,
    StepStatus, TestReport,
};
use protocol::schema::{Column, DatabaseSchema, DbKind, ForeignKey, Table, TableKind, WireType};

use crate::model::schema::qualified;

/// One step of a script: wait, then stream an event.
#[derive(Debug, Clone)]
pub struct ScriptStep {
    /// Delay after the previous step.
    pub after: Duration,
    /// What to stream. A `Status` also becomes the backend's state.
    pub event: AgentEvent,
}

/// The PIN the fake accepts when [`ScriptedBackend::with_pin`] set one.
pub const FAKE_PIN: &str = "2468";

type Sink = Box<dyn Fn(AgentEvent) + Send + 'static>;

#[derive(Debug)]
struct State {
    status: StatusSnapshot,
    settings: SettingsView,
    databases: Vec<DatabaseEntry>,
    schemas: BTreeMap<String, SchemaView>,
    activity: Vec<ActivityEntry>,
    requests: Vec<String>,
    next_command: u64,
}

struct Shared {
    state: Mutex<State>,
    sinks: Mutex<Vec<Sink>>,
    script: Mutex<Vec<ScriptStep>>,
    playing: AtomicBool,
    stopped: AtomicBool,
    started: Instant,
    test_delay: Duration,
    in_process: bool,
}

/// A scripted, in-memory [`Backend`].
#[derive(Clone)]
pub struct ScriptedBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBackend").field("in_process", &self.shared.in_process).finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn ago_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

fn col(name: &str, ty: &str, wire: WireType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        data_type: ty.into(),
        wire_type: wire,
        nullable,
        default: None,
        enum_values: vec![],
        presence: None,
    }
}

fn table(
    schema: &str,
    name: &str,
    columns: Vec<Column>,
    pk: &[&str],
    fks: Vec<ForeignKey>,
    rows: u64,
) -> Table {
    Table {
        schema: Some(schema.into()),
        name: name.into(),
        kind: TableKind::Table,
        columns,
        primary_key: pk.iter().map(|s| (*s).to_owned()).collect(),
        foreign_keys: fks,
        row_count_estimate: Some(rows),
        indexes: Vec::new(),
        reads: None,
    }
}

/// The demo ERP schema the fake discovers.
pub fn demo_schema(connection: &str) -> SchemaView {
    use WireType::*;
    let customers = table(
        "public",
        "customers",
        vec![
            col("id", "integer", Integer, false),
            col("name", "text", Text, false),
            col("email", "text", Text, true),
            col("tax_id", "varchar(20)", Text, true),
            col("created_at", "timestamptz", TimestampTz, false),
        ],
        &["id"],
        vec![],
        1284,
    );
    let fk = |c: &str, t: &str| ForeignKey {
        columns: vec![c.into()],
        ref_table: t.into(),
        ref_columns: vec!["id".into()],
    };
    let orders = table(
        "public",
        "orders",
        vec![
            col("id", "integer", Integer, false),
            col("customer_id", "integer", Integer, false),
            col("total", "numeric(12,2)", Decimal, false),
            col("status", "text", Text, false),
            col("shipped_at", "date", Date, true),
        ],
        &["id"],
        vec![fk("customer_id", "public.customers")],
        50_112,
    );
    let items = table(
        "public",
        "order_items",
        vec![
            col("order_id", "integer", Integer, false),
            col("sku", "text", Text, false),
            col("qty", "integer", Integer, false),
            col("price", "numeric(12,2)", Decimal, false),
        ],
        &["order_id", "sku"],
        vec![fk("order_id", "public.orders")],
        210_400,
    );
    let stock = table(
        "public",
        "stock",
        vec![
            col("sku", "text", Text, false),
            col("warehouse", "text", Text, false),
            col("on_hand", "integer", Integer, false),
            col("updated_at", "timestamptz", TimestampTz, true),
        ],
        &["sku", "warehouse"],
        vec![],
        8_200,
    );
    let salaries = table(
        "hr",
        "salaries",
        vec![col("employee_id", "integer", Integer, false), col("amount", "numeric(12,2)", Decimal, false)],
        &["employee_id"],
        vec![],
        96,
    );
    SchemaView {
        schema: DatabaseSchema {
            connection: connection.into(),
            db_type: DbKind::Postgres,
            tables: vec![customers, orders, items, stock, salaries],
        },
        private_tables: vec!["hr.salaries".into()],
        private_columns: vec!["public.customers.tax_id".into()],
        changes: vec![
            SchemaChange::ColumnAdded { table: "public.orders".into(), column: "shipped_at".into() },
            SchemaChange::ColumnChanged {
                table: "public.customers".into(),
                column: "email".into(),
                before: "varchar(80) null".into(),
                after: "text null".into(),
            },
        ],
        approved_before: true,
    }
}

fn base_status() -> StatusSnapshot {
    StatusSnapshot {
        state: LinkState::Connected,
        indicator: Indicator::Connected,
        reason: None,
        connected: true,
        paused: false,
        connector_name: "Warehouse SAP".into(),
        cloud_url: "wss://console.acme.example/ws".into(),
        agent_version: "0.1.0".into(),
        pid: None,
        instance_id: "7f3a9c1e-preview".into(),
        connection_id: Some("c-2291".into()),
        gateway_url: Some("wss://connector.vansales.example:443".into()),
        connected_since: Some(ago_rfc3339(3 * 86_400)),
        disconnected_since: None,
        uptime_secs: 3 * 86_400 + 4 * 3600 + 120,
        reconnects: 2,
        next_retry_ms: None,
        latency_ms: Some(0.4),
        transport: Some(protocol::control::LinkTransport::Websocket),
        active_commands: 0,
        waiting_commands: 0,
        commands_completed: 1280,
        commands_failed: 4,
        commands_today: 1284,
        rows_returned: 2_104_332,
        bytes_sent: 152_400_000,
        bytes_received: 4_100_000,
        bytes_sent_today: 38_200_000,
        last_error: Some("QUERY_TIMEOUT on erp (q-7f31, 30 s)".into()),
        queue: QueueStatus { cap_bytes: 500_000_000, used_bytes: 0, ..QueueStatus::default() },
        databases: vec![
            DatabaseHealth {
                name: "erp".into(),
                kind: Some("postgres".into()),
                healthy: true,
                error: None,
                pool: Some(PoolUse { open: 3, idle: 2, max: 8 }),
                tables: Some(4),
                checked_at: None,
            },
            DatabaseHealth {
                name: "legacy-crm".into(),
                kind: Some("mysql".into()),
                healthy: false,
                error: Some("connection refused (127.0.0.1:3306)".into()),
                pool: Some(PoolUse { open: 0, idle: 0, max: 4 }),
                tables: None,
                checked_at: None,
            },
        ],
        schema_changes: vec!["erp".into()],
    }
}

fn demo_activity() -> Vec<ActivityEntry> {
    let e = |id: &str, ago: u64, wf: &str, outcome: Outcome, rows: u64, ms: u64, bytes: u64| ActivityEntry {
        command_id: id.into(),
        received_at: ago_rfc3339(ago),
        finished_at: Some(ago_rfc3339(ago.saturating_sub(1))),
        connection: Some("erp".into()),
        workflow: Some(wf.into()),
        outcome,
        rows: Some(rows),
        duration_ms: Some(ms),
        bytes: Some(bytes),
    };
    vec![
        e("q-7f3a", 36, "Invoice sync", Outcome::Inline, 42, 18, 6_100),
        e("q-7f39", 72, "Stock levels", Outcome::Chunked, 50_000, 1_200, 2_400_000),
        e("q-7f38", 300, "Invoice sync", Outcome::Inline, 40, 16, 5_900),
        e("q-7f37", 900, "Customer export", Outcome::Failed { code: "SCHEMA_ACCESS_DENIED".into() }, 0, 3, 0),
        e("q-7f36", 4000, "Stock levels", Outcome::Inline, 8_190, 240, 610_000),
        e("q-7f31", 90_000, "Nightly totals", Outcome::Failed { code: "QUERY_TIMEOUT".into() }, 0, 30_000, 0),
        e("q-7f30", 95_000, "Nightly totals", Outcome::Chunked, 210_400, 4_800, 9_800_000),
    ]
}

fn demo_databases() -> Vec<DatabaseEntry> {
    vec![
        DatabaseEntry {
            form: DatabaseForm {
                name: "erp".into(),
                kind: "postgres".into(),
                host: Some("db.acme.local".into()),
                port: Some(5432),
                database: Some("erp".into()),
                user: Some("mc_reader".into()),
                ssl_mode: Some("require".into()),
                ..Default::default()
            },
            has_password: true,
            private: vec!["hr.salaries".into(), "public.customers.tax_id".into()],
        },
        DatabaseEntry {
            form: DatabaseForm {
                name: "legacy-crm".into(),
                kind: "mysql".into(),
                host: Some("127.0.0.1".into()),
                port: Some(3306),
                database: Some("crm".into()),
                user: Some("reader".into()),
                ..Default::default()
            },
            has_password: true,
            private: vec![],
        },
    ]
}

/// Sets the status fields that follow from an indicator.
fn set_indicator(s: &mut StatusSnapshot, indicator: Indicator, reason: Option<&str>) {
    s.indicator = indicator;
    s.reason = reason.map(str::to_owned);
    s.state = match indicator {
        Indicator::Connected | Indicator::Warning => LinkState::Connected,
        Indicator::Executing => LinkState::Busy,
        Indicator::Disconnected => LinkState::Disconnected,
        Indicator::Paused => LinkState::Paused,
        Indicator::Reconnecting => LinkState::Connecting,
    };
    s.connected = matches!(s.state, LinkState::Connected | LinkState::Busy | LinkState::Paused);
    s.paused = indicator == Indicator::Paused;
    s.active_commands = u64::from(indicator == Indicator::Executing);
    s.next_retry_ms = matches!(indicator, Indicator::Disconnected | Indicator::Reconnecting).then_some(2000);
    if indicator == Indicator::Disconnected {
        s.disconnected_since = Some(now_rfc3339());
        s.connection_id = None;
    }
}

/// A status event for an indicator on the demo snapshot.
pub fn demo_status(indicator: Indicator, reason: Option<&str>) -> AgentEvent {
    let mut s = base_status();
    set_indicator(&mut s, indicator, reason);
    AgentEvent::Status(Box::new(s))
}

impl ScriptedBackend {
    /// A backend with the demo data and a script.
    pub fn new(script: Vec<ScriptStep>) -> Self {
        let mut status = base_status();
        if let Some(AgentEvent::Status(first)) = script.first().map(|s| &s.event) {
            status = (**first).clone();
        }
        let settings = SettingsView {
            config_path: "/etc/mini-connector/config.json".into(),
            connector_name: status.connector_name.clone(),
            api_key_masked: Some("vmc_acme_****_c4e2a".into()),
            cloud_url: status.cloud_url.clone(),
            proxy_url: None,
            ca_cert_path: None,
            log_level: "info".into(),
            auto_update: true,
            auto_start: true,
            pin_set: false,
        };
        let mut schemas = BTreeMap::new();
        schemas.insert("erp".to_owned(), demo_schema("erp"));
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    status,
                    settings,
                    databases: demo_databases(),
                    schemas,
                    activity: demo_activity(),
                    requests: Vec::new(),
                    next_command: 0x7f3b,
                }),
                sinks: Mutex::new(Vec::new()),
                script: Mutex::new(script),
                playing: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                started: Instant::now(),
                test_delay: Duration::from_millis(600),
                in_process: true,
            }),
        }
    }

    /// The preview's script: red for `red_for` (the console unreachable), blue for a second,
    /// then green with a schema-change banner. Pause (a real click) turns it grey.
    pub fn demo(red_for: Duration) -> Self {
        Self::new(vec![
            ScriptStep {
                after: Duration::ZERO,
                event: demo_status(Indicator::Disconnected, Some("gateway unreachable: connection refused")),
            },
            ScriptStep { after: red_for, event: demo_status(Indicator::Reconnecting, None) },
            ScriptStep { after: Duration::from_secs(1), event: demo_status(Indicator::Connected, None) },
            ScriptStep {
                after: Duration::from_millis(200),
                event: AgentEvent::Notice(Notice {
                    kind: NoticeKind::SchemaChange,
                    title: "Schema change detected on erp".into(),
                    body: "1 column added, 1 column changed: review it in the Schema Browser and approve."
                        .into(),
                    at: now_rfc3339(),
                }),
            },
        ])
    }

    /// A fresh install: no key, no databases, nothing discovered (the wizard's case).
    pub fn first_run(self) -> Self {
        {
            let mut st = self.state();
            st.settings.api_key_masked = None;
            st.settings.connector_name = String::new();
            st.databases.clear();
            st.schemas.clear();
            st.activity.clear();
            st.status.databases.clear();
            st.status.schema_changes.clear();
        }
        self
    }

    /// Requires [`FAKE_PIN`] for guarded actions.
    pub fn with_pin(self) -> Self {
        self.state().settings.pin_set = true;
        self
    }

    /// Attached to a service instead of running the agent in-process.
    pub fn attached(self) -> Self {
        let shared = Arc::into_inner(self.shared).expect("attached() before the backend is shared");
        Self { shared: Arc::new(Shared { in_process: false, ..shared }) }
    }

    /// How long a connection test takes (the spinner's time on screen).
    pub fn with_test_delay(self, delay: Duration) -> Self {
        let shared = Arc::into_inner(self.shared).expect("with_test_delay() before the backend is shared");
        Self { shared: Arc::new(Shared { test_delay: delay, ..shared }) }
    }

    /// Every request received so far, as its `cmd`/`op` name (for tests).
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// Streams an event now (tests).
    pub fn emit(&self, event: AgentEvent) {
        if let AgentEvent::Status(s) = &event {
            self.state().status = (**s).clone();
        }
        for sink in self.shared.sinks.lock().unwrap().iter() {
            sink(event.clone());
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    fn set(&self, indicator: Indicator, reason: Option<&str>) {
        let status = {
            let mut st = self.state();
            set_indicator(&mut st.status, indicator, reason);
            st.status.clone()
        };
        self.emit(AgentEvent::Status(Box::new(status)));
    }

    fn start_player(&self) {
        if self.shared.playing.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let spawned = thread::Builder::new().name("gui-fake-player".into()).spawn(move || me.play());
        if spawned.is_err() {
            self.shared.playing.store(false, Ordering::SeqCst);
        }
    }

    fn play(&self) {
        let script = std::mem::take(&mut *self.shared.script.lock().unwrap());
        for step in script {
            thread::sleep(step.after);
            if self.shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            self.emit(step.event);
        }
        let mut tick: u64 = 0;
        while !self.shared.stopped.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_secs(1));
            tick += 1;
            let (status, finished) = {
                let mut st = self.state();
                st.status.uptime_secs += 1;
                // A wavy latency so the graph has something to draw.
                let wave = ((tick as f64) / 7.0).sin() * 0.25 + ((tick * 37 % 11) as f64) / 40.0;
                if st.status.connected {
                    st.status.latency_ms = Some((0.45 + wave).max(0.1));
                }
                let mut finished = None;
                if tick.is_multiple_of(5) && st.status.indicator == Indicator::Connected {
                    st.next_command += 1;
                    let id = format!("q-{:x}", st.next_command);
                    let rows = 10 + (tick * 97) % 900;
                    let entry = ActivityEntry {
                        command_id: id,
                        received_at: now_rfc3339(),
                        finished_at: Some(now_rfc3339()),
                        connection: Some("erp".into()),
                        workflow: Some(
                            if tick.is_multiple_of(10) { "Stock levels" } else { "Invoice sync" }.into(),
                        ),
                        outcome: Outcome::Inline,
                        rows: Some(rows),
                        duration_ms: Some(12 + tick % 30),
                        bytes: Some(rows * 140),
                    };
                    st.status.commands_completed += 1;
                    st.status.commands_today += 1;
                    st.status.rows_returned += rows;
                    st.status.bytes_sent += rows * 140;
                    st.status.bytes_sent_today += rows * 140;
                    st.activity.insert(0, entry.clone());
                    finished = Some(entry);
                }
                (st.status.clone(), finished)
            };
            if let Some(e) = finished {
                self.emit(AgentEvent::Activity(e));
            }
            self.emit(AgentEvent::Status(Box::new(status)));
        }
    }

    fn setup(&self, req: SetupRequest) -> ControlReply {
        match req {
            SetupRequest::Settings => ControlReply::Settings(Box::new(self.state().settings.clone())),
            SetupRequest::CheckKey { api_key, cloud_url } => {
                thread::sleep(self.shared.test_delay);
                let format_ok = ApiKey::parse(&api_key).is_ok();
                let url = cloud_url.unwrap_or_else(|| self.state().settings.cloud_url.clone());
                let host = crate::model::status::host_of(&url).to_owned();
                let reachable = !host.contains("unreachable");
                let message = match (format_ok, reachable) {
                    (false, _) => "The key's format or checksum is not valid".to_owned(),
                    (true, true) => "The console answered in 84 ms".to_owned(),
                    (true, false) => format!("No route to {host} — is a proxy needed? Open proxy settings"),
                };
                ControlReply::Key(KeyReport {
                    format_ok,
                    reachable,
                    accepted: reachable.then_some(true),
                    latency_ms: reachable.then_some(84),
                    message,
                })
            }
            SetupRequest::Configure(c) => {
                let mut st = self.state();
                if let Some(n) = c.connector_name {
                    st.status.connector_name.clone_from(&n);
                    st.settings.connector_name = n;
                }
                if let Some(k) = c.api_key {
                    match ApiKey::parse(&k) {
                        Ok(k) => st.settings.api_key_masked = Some(k.masked()),
                        Err(e) => return ControlReply::error("INVALID_INPUT", e.to_string()),
                    }
                }
                if let Some(u) = c.cloud_url {
                    st.settings.cloud_url = u;
                }
                if let Some(p) = c.proxy_url {
                    st.settings.proxy_url = (!p.is_empty()).then_some(p);
                }
                if let Some(p) = c.ca_cert_path {
                    st.settings.ca_cert_path = (!p.is_empty()).then_some(p);
                }
                if let Some(l) = c.log_level {
                    st.settings.log_level = l;
                }
                if let Some(a) = c.auto_update {
                    st.settings.auto_update = a;
                }
                if let Some(a) = c.auto_start {
                    st.settings.auto_start = a;
                }
                ControlReply::Ok
            }
            SetupRequest::ListDatabases => ControlReply::Databases(self.state().databases.clone()),
            SetupRequest::TestDatabase(form) => {
                thread::sleep(self.shared.test_delay);
                let started = Instant::now();
                let host = form.host.clone().unwrap_or_default();
                let (ok, message, code) = if host.contains("unreachable") || host == "bad" {
                    (false, format!("could not connect to {host}: connection refused"), Some("DATABASE_UNAVAILABLE"))
                } else if form.password.as_deref() == Some("wrong") {
                    (
                        false,
                        format!("password authentication failed for user \"{}\"", form.user.as_deref().unwrap_or("")),
                        Some("DATABASE_UNAVAILABLE"),
                    )
                } else {
                    (true, "Connected: PostgreSQL 15.8, read-only session confirmed".to_owned(), None)
                };
                ControlReply::Test(TestReport {
                    ok,
                    message,
                    code: code.map(str::to_owned),
                    elapsed_ms: started.elapsed().as_millis() as u64 + self.shared.test_delay.as_millis() as u64,
                })
            }
            SetupRequest::SaveDatabase { mut form, replace } => {
                let mut st = self.state();
                let has_password = form.password.take().is_some()
                    || st.databases.iter().any(|d| Some(&d.form.name) == replace.as_ref() && d.has_password);
                let old = replace.unwrap_or_else(|| form.name.clone());
                st.databases.retain(|d| d.form.name != old);
                let name = form.name.clone();
                st.databases.push(DatabaseEntry { form, has_password, private: vec![] });
                if !st.status.databases.iter().any(|d| d.name == name) {
                    st.status.databases.push(DatabaseHealth {
                        name: name.clone(),
                        kind: Some("postgres".into()),
                        healthy: true,
                        error: None,
                        pool: Some(PoolUse { open: 1, idle: 1, max: 8 }),
                        tables: Some(5),
                        checked_at: None,
                    });
                }
                st.schemas.entry(name.clone()).or_insert_with(|| {
                    let mut v = demo_schema(&name);
                    v.changes.clear();
                    v.approved_before = false;
                    v
                });
                ControlReply::Ok
            }
            SetupRequest::RemoveDatabase { name } => {
                let mut st = self.state();
                let before = st.databases.len();
                st.databases.retain(|d| d.form.name != name);
                st.status.databases.retain(|d| d.name != name);
                st.schemas.remove(&name);
                if st.databases.len() == before {
                    return ControlReply::error("INVALID_INPUT", format!("no connection named {name}"));
                }
                ControlReply::Ok
            }
            SetupRequest::Discover { connection } => match self.state().schemas.get(&connection) {
                Some(v) => ControlReply::Schema(Box::new(v.clone())),
                None => ControlReply::error("INVALID_INPUT", format!("no connection named {connection}")),
            },
            SetupRequest::Sample { connection, table, limit } => {
                let st = self.state();
                let Some(view) = st.schemas.get(&connection) else {
                    return ControlReply::error("INVALID_INPUT", format!("no connection named {connection}"));
                };
                let Some(t) = view.schema.tables.iter().find(|t| qualified(t) == table) else {
                    return ControlReply::error("INVALID_INPUT", format!("no table {table}"));
                };
                if crate::model::schema::table_private(view, &table) {
                    return ControlReply::error("SCHEMA_ACCESS_DENIED", format!("{table} is private"));
                }
                let columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
                let rows = (0..limit.min(20).min(8))
                    .map(|r| {
                        t.columns
                            .iter()
                            .map(|c| {
                                if crate::model::schema::column_private(view, &table, &c.name) {
                                    return None;
                                }
                                Some(match c.wire_type {
                                    WireType::Integer => (1001 + r * 7).to_string(),
                                    WireType::Decimal => format!("{}.{:02}", 19 + r * 13, (r * 37) % 100),
                                    WireType::Date => format!("2026-11-{:02}", 1 + r),
                                    WireType::TimestampTz => format!("2026-11-{:02} 09:{:02}:00+00", 1 + r, r * 7),
                                    _ => format!("{}-{}", c.name, r + 1),
                                })
                            })
                            .collect()
                    })
                    .collect();
                ControlReply::Sample(SampleRows { columns, rows })
            }
            SetupRequest::SetPrivate { connection, table, column, private } => {
                let mut st = self.state();
                let Some(view) = st.schemas.get_mut(&connection) else {
                    return ControlReply::error("INVALID_INPUT", format!("no connection named {connection}"));
                };
                let (list, key) = match column {
                    Some(c) => (&mut view.private_columns, format!("{table}.{c}")),
                    None => (&mut view.private_tables, table),
                };
                list.retain(|k| k != &key);
                if private {
                    list.push(key);
                }
                ControlReply::Ok
            }
            SetupRequest::ApproveSchema { connection } => {
                let mut st = self.state();
                let Some(view) = st.schemas.get_mut(&connection) else {
                    return ControlReply::error("INVALID_INPUT", format!("no connection named {connection}"));
                };
                view.changes.clear();
                view.approved_before = true;
                st.status.schema_changes.retain(|c| c != &connection);
                ControlReply::Ok
            }
            SetupRequest::InstallService => ControlReply::Message(
                "Preview: a real agent would register a systemd unit here (sudo systemctl enable --now mini-connector)."
                    .into(),
            ),
            SetupRequest::SetPin { current, new } => {
                let mut st = self.state();
                if st.settings.pin_set && current.as_deref() != Some(FAKE_PIN) {
                    return ControlReply::error("PIN_REQUIRED", "the current PIN is not right");
                }
                st.settings.pin_set = new.is_some();
                ControlReply::Ok
            }
            SetupRequest::VerifyPin { pin } => {
                if pin == FAKE_PIN {
                    ControlReply::Ok
                } else {
                    ControlReply::error("PIN_REQUIRED", "wrong PIN")
                }
            }
        }
    }
}

/// What the fake's `doctor` finds: a healthy link, a database whose login can write.
pub fn fake_doctor_report() -> DoctorReport {
    let step = |name: &str, status: StepStatus, detail: &str, hint: Option<&str>| DoctorStep {
        name: name.to_owned(),
        status,
        detail: detail.to_owned(),
        hint: hint.map(str::to_owned),
        data: serde_json::Value::Null,
    };
    DoctorReport::new(vec![
        step("config", StepStatus::Ok, "config.json loads: connector `Warehouse SAP`", None),
        step("dns", StepStatus::Ok, "console.example.com → 203.0.113.10 (4 ms)", None),
        step("proxy", StepStatus::Ok, "none configured: the agent dials the cloud directly", None),
        step("tcp", StepStatus::Ok, "connected to 203.0.113.10:443 in 21 ms", None),
        step("tls", StepStatus::Ok, "TLS 1.3 TLS13_AES_256_GCM_SHA384, certificate verified (35 ms)", None),
        step("websocket", StepStatus::Ok, "upgrade accepted (101, 18 ms)", None),
        step("auth", StepStatus::Ok, "key vmc_acme_****_x1 accepted: tenant `acme`", None),
        step("clock", StepStatus::Ok, "within 120 ms of the gateway's clock", None),
        step(
            "database:erp",
            StepStatus::Warn,
            "postgres erp@db.local: connected in 12 ms\nuser `erp` can change data",
            Some("a SELECT-only user is safer"),
        ),
    ])
}

fn request_name(r: &ControlRequest) -> String {
    let v = serde_json::to_value(r).unwrap_or_default();
    match (v.get("cmd").and_then(|c| c.as_str()), v.get("op").and_then(|o| o.as_str())) {
        (Some(cmd), Some(op)) => format!("{cmd}:{op}"),
        (Some(cmd), None) => cmd.to_owned(),
        _ => "?".to_owned(),
    }
}

impl Backend for ScriptedBackend {
    fn request(&self, request: ControlRequest) -> ControlReply {
        self.state().requests.push(request_name(&request));
        match request {
            ControlRequest::Status => ControlReply::Status(Box::new(self.state().status.clone())),
            ControlRequest::Start => {
                self.start_player();
                ControlReply::Ok
            }
            ControlRequest::Activity { limit } => {
                let mut a = self.state().activity.clone();
                a.truncate(limit.unwrap_or(usize::MAX));
                ControlReply::Activity(a)
            }
            ControlRequest::Pause => {
                self.set(Indicator::Paused, None);
                ControlReply::Paused(true)
            }
            ControlRequest::Resume => {
                self.set(Indicator::Connected, None);
                ControlReply::Paused(false)
            }
            ControlRequest::Reconnect => {
                self.set(Indicator::Reconnecting, None);
                let me = self.clone();
                let _ = thread::Builder::new().name("gui-fake-reconnect".into()).spawn(move || {
                    thread::sleep(Duration::from_millis(800));
                    me.state().status.reconnects += 1;
                    me.set(Indicator::Connected, None);
                });
                ControlReply::Ok
            }
            ControlRequest::Reload => ControlReply::Message("reloaded (fake backend)".into()),
            ControlRequest::Stop => {
                self.shared.stopped.store(true, Ordering::SeqCst);
                self.emit(AgentEvent::Stopped { reason: "stopped by the operator".into() });
                ControlReply::Stopping
            }
            ControlRequest::Subscribe => {
                ControlReply::error("BAD_REQUEST", "subscribe is for the control socket")
            }
            ControlRequest::Setup(s) => self.setup(*s),
            ControlRequest::Doctor => {
                thread::sleep(self.shared.test_delay);
                ControlReply::Doctor(fake_doctor_report())
            }
            // Like the agent: refuses an existing file, else writes one (a placeholder: the
            // bundle's contents are the agent's, tested in the agent crate).
            ControlRequest::DiagBundle { out } => match out {
                Some(path) if std::path::Path::new(&path).exists() => {
                    ControlReply::error("FILE_EXISTS", format!("{path} exists"))
                }
                Some(path) if std::fs::write(&path, b"fake diagnostic bundle\n").is_err() => {
                    ControlReply::error("IO", format!("cannot write {path}"))
                }
                Some(path) => ControlReply::Bundle(protocol::control::BundleInfo {
                    path,
                    bytes: 4096,
                    files: ["manifest.json", "logs/agent.log", "errors.log", "commands.json", "system.json"]
                        .map(String::from)
                        .to_vec(),
                }),
                None => ControlReply::error("INVALID_INPUT", "the fake needs a path"),
            },
        }
    }

    fn subscribe(&self, sink: Box<dyn Fn(AgentEvent) + Send + 'static>) {
        sink(AgentEvent::Status(Box::new(self.state().status.clone())));
        self.shared.sinks.lock().unwrap().push(sink);
        self.start_player();
    }

    fn in_process(&self) -> bool {
        self.shared.in_process
    }
}

impl ScriptedBackend {
    /// Seconds since the backend was made (tests use it to order what they saw).
    pub fn age(&self) -> Duration {
        self.shared.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;
    use std::path::Path;

    fn setup(b: &ScriptedBackend, r: SetupRequest) -> ControlReply {
        b.request(ControlRequest::Setup(Box::new(r)))
    }

    #[test]
    fn doctor_answers_a_report_with_a_warning() {
        let b = ScriptedBackend::demo(Duration::from_millis(50)).with_test_delay(Duration::ZERO);
        let ControlReply::Doctor(report) = b.request(ControlRequest::Doctor) else { panic!() };
        assert_eq!(report.verdict, protocol::control::Verdict::Warn);
        assert_eq!(report.steps.first().map(|s| s.name.as_str()), Some("config"));
        let rows = crate::model::doctor::rows(&report, "now");
        assert_eq!(rows.len(), report.steps.len() + 1);
        assert!(b.state().requests.contains(&"doctor".to_owned()));
    }

    #[test]
    fn the_script_plays_in_order_and_pause_turns_it_grey() {
        let b = ScriptedBackend::demo(Duration::from_millis(50));
        let (tx, rx) = unbounded();
        b.subscribe(Box::new(move |e| {
            let _ = tx.send(e);
        }));
        let mut seen = Vec::new();
        while seen.last() != Some(&Indicator::Connected) {
            if let AgentEvent::Status(s) = rx.recv_timeout(Duration::from_secs(5)).unwrap()
                && seen.last() != Some(&s.indicator)
            {
                seen.push(s.indicator);
            }
        }
        assert_eq!(seen, [Indicator::Disconnected, Indicator::Reconnecting, Indicator::Connected]);
        assert_eq!(b.request(ControlRequest::Pause), ControlReply::Paused(true));
        let ControlReply::Status(s) = b.request(ControlRequest::Status) else { panic!() };
        assert_eq!((s.indicator, s.paused), (Indicator::Paused, true));
        assert_eq!(b.request(ControlRequest::Stop), ControlReply::Stopping);
    }

    #[test]
    fn export_bundle_asks_for_a_file_in_documents_and_reports_the_path_or_the_refusal() {
        use crate::model::bundle;
        let b = ScriptedBackend::new(vec![]);
        let home = std::env::temp_dir().join(format!("mc-gui-fake-bundle-{}", std::process::id()));
        std::fs::create_dir_all(home.join("Documents")).unwrap();
        let path = bundle::folder(Some(&home), Path::new("/state"))
            .join(bundle::file_name("Warehouse", SystemTime::now()));
        assert!(path.starts_with(home.join("Documents")));
        let request = ControlRequest::DiagBundle { out: Some(path.display().to_string()) };
        let (text, good) = bundle::outcome(&b.request(request.clone()));
        assert!(good && text.contains(&path.display().to_string()), "{text}");
        std::fs::write(&path, b"earlier bundle").unwrap();
        let (text, good) = bundle::outcome(&b.request(request));
        assert!(!good && text.contains("FILE_EXISTS"), "{text}");
        assert_eq!(b.requests(), ["diag_bundle", "diag_bundle"]);
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn setup_requests_change_the_fake_and_never_echo_secrets() {
        let b = ScriptedBackend::new(vec![]).first_run().with_test_delay(Duration::ZERO);
        let ControlReply::Settings(s) = setup(&b, SetupRequest::Settings) else { panic!() };
        assert_eq!(s.api_key_masked, None);
        let key = ApiKey::generate("acme").unwrap();
        let ControlReply::Key(k) =
            setup(&b, SetupRequest::CheckKey { api_key: key.expose().into(), cloud_url: None })
        else {
            panic!()
        };
        assert!(k.format_ok && k.reachable);
        let change =
            protocol::control::SettingsChange { api_key: Some(key.expose().into()), ..Default::default() };
        assert_eq!(setup(&b, SetupRequest::Configure(change)), ControlReply::Ok);
        let ControlReply::Settings(s) = setup(&b, SetupRequest::Settings) else { panic!() };
        assert_eq!(s.api_key_masked, Some(key.masked()));
        let form = DatabaseForm {
            name: "erp".into(),
            kind: "postgres".into(),
            host: Some("h".into()),
            user: Some("u".into()),
            password: Some("wrong".into()),
            ..Default::default()
        };
        let ControlReply::Test(t) = setup(&b, SetupRequest::TestDatabase(form.clone())) else { panic!() };
        assert!(!t.ok && t.message.contains("password authentication failed"));
        assert_eq!(setup(&b, SetupRequest::SaveDatabase { form, replace: None }), ControlReply::Ok);
        let ControlReply::Databases(d) = setup(&b, SetupRequest::ListDatabases) else { panic!() };
        assert_eq!((d.len(), d[0].has_password, d[0].form.password.clone()), (1, true, None));
        let ControlReply::Schema(v) = setup(&b, SetupRequest::Discover { connection: "erp".into() }) else {
            panic!()
        };
        assert!(!v.approved_before);
        let ControlReply::Sample(rows) = setup(
            &b,
            SetupRequest::Sample { connection: "erp".into(), table: "public.customers".into(), limit: 5 },
        ) else {
            panic!()
        };
        let tax = rows.columns.iter().position(|c| c == "tax_id").unwrap();
        assert!(rows.rows.iter().all(|r| r[tax].is_none()), "private columns are never read");
        assert_eq!(
            setup(&b, SetupRequest::VerifyPin { pin: "0000".into() }),
            ControlReply::error("PIN_REQUIRED", "wrong PIN")
        );
        assert!(b.requests().contains(&"setup:check_key".to_owned()));
    }
}
