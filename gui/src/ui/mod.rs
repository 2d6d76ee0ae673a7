//! The FLTK side: the main-thread loop, the worker threads that talk to the [`Backend`], and
//! the glue that turns messages into model updates and model output into widget state.
//!
//! Threads: FLTK owns the calling (main) thread. Every `Backend::request` runs on one of two
//! `gui-worker-N` threads; its answer comes back as [`Msg::Reply`] through the UI's crossbeam
//! channel, followed by `app::awake()`. `Backend::subscribe` is called from its own short-lived
//! thread and forwards events the same way. Widget callbacks only send messages too, so all
//! state lives in [`App`], touched only by the loop in [`run`].

mod dashboard;
mod dbform;
mod prompt;
pub(crate) mod style;
pub(crate) mod wizard;

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};
use fltk::app;
use fltk::prelude::*;

use protocol::control::{
    AgentEvent, Backend, ControlReply, ControlRequest, DatabaseEntry, DatabaseForm, Indicator, Outcome,
    SchemaView, SettingsChange, SettingsView, SetupRequest,
};

use self::dashboard::Dashboard;
use self::prompt::{Prompt, PromptKind};
use self::style::{TableData, c};
use self::wizard::WizardWin;
use crate::model::activity::{self, ActivityFilter, StatusFilter};
use crate::model::bundle;
use crate::model::forms::{self, Guarded, PinGate, SettingsEdit};
use crate::model::schema::{self, TreeRow};
use crate::model::status::{self, ExitDecision, StatusView};
use crate::model::wizard::{
    Check, FieldCheck, NextAction, Progress, Step, Wizard, check_key_format, check_name,
};
use crate::model::{Live, Section, format};
use crate::{GuiError, GuiOptions, UiAction};

/// Everything the loop handles.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Event(AgentEvent),
    Reply(Tag, ControlReply),
    Action(UiAction),
    Tick,
    QuitNow,
    Nav(Section),
    TogglePause,
    CloseWindow,
    DismissBanner,
    FilterChanged,
    FilterToday,
    ConnSelected,
    ConnAdd,
    ConnEdit,
    ConnTestSelected,
    ConnRemove,
    ConnFormChanged,
    ConnTestForm,
    ConnSave,
    ConnCancel,
    SchemaConnection,
    SchemaSelect(String),
    SchemaRediscover,
    SchemaCompare,
    SchemaTogglePrivate,
    SchemaApprove,
    ReplaceKey,
    SetPin,
    InstallService,
    SettingsSave,
    DiagRefresh,
    RunChecks,
    DiagBundle,
    WizKeyChanged,
    WizCheckKey,
    WizNameChanged,
    WizFormChanged,
    WizTest,
    WizPrivate(String, bool),
    WizNext,
    WizBack,
    WizClose,
    PromptAnswer(Option<String>),
}

/// What a reply is for.
#[derive(Debug, Clone)]
pub(crate) enum Tag {
    Status,
    Activity,
    Settings { initial: bool },
    Databases,
    Pause,
    Reconnect,
    Stop,
    WizKeyCheck(u64),
    WizTest(u64),
    WizNext(NextAction),
    WizDiscover,
    ConnTest { generation: u64, in_panel: bool },
    ConnSave,
    ConnRemove,
    Schema(String),
    Sample(String, String),
    SchemaChanged(String, &'static str),
    Configure(&'static str),
    Pin(Box<Msg>),
    SetPin,
    Install,
    Doctor,
    Bundle,
}

/// A unit of work for a worker: one request, or several in order (stopping at the first error).
#[derive(Debug)]
struct Job {
    tag: Tag,
    requests: Vec<ControlRequest>,
}

fn spawn_workers(backend: &Arc<dyn Backend>, ui: &Sender<Msg>) -> Result<Sender<Job>, GuiError> {
    let (jobs, rx) = unbounded::<Job>();
    for i in 0..2 {
        let (rx, ui, backend) = (rx.clone(), ui.clone(), backend.clone());
        thread::Builder::new().name(format!("gui-worker-{i}")).spawn(move || {
            for job in rx {
                let mut reply = ControlReply::Ok;
                for r in job.requests {
                    reply = backend.request(r);
                    if matches!(reply, ControlReply::Error { .. }) {
                        break;
                    }
                }
                if ui.send(Msg::Reply(job.tag, reply)).is_err() {
                    return;
                }
                app::awake();
            }
        })?;
    }
    Ok(jobs)
}

fn setup(r: SetupRequest) -> ControlRequest {
    ControlRequest::Setup(Box::new(r))
}

fn reply_error(r: &ControlReply) -> Option<String> {
    match r {
        ControlReply::Error { code, message } => Some(format!("{message} ({code})")),
        _ => None,
    }
}

/// The state the loop owns.
struct App {
    backend: Arc<dyn Backend>,
    options: GuiOptions,
    tx: Sender<Msg>,
    jobs: Sender<Job>,
    dash: Dashboard,
    wiz: WizardWin,
    prompt: Prompt,
    prompt_kind: Option<PromptKind>,
    live: Live,
    t0: Instant,
    section: Section,
    view: StatusView,
    filter: ActivityFilter,
    databases: Vec<DatabaseEntry>,
    settings: Option<SettingsView>,
    gate: PinGate,
    conn_editing: Option<Option<String>>,
    conn_gen: u64,
    schema_conn: Option<String>,
    schema_view: Option<SchemaView>,
    schema_rows: Vec<(String, TreeRow)>,
    schema_sel: Option<TreeRow>,
    wizard: Wizard,
    wizard_open: bool,
    wizard_busy: bool,
    wizard_view: Option<SchemaView>,
    key_gen: u64,
    db_gen: u64,
    phase: f64,
    ticking: bool,
    exiting: bool,
    decided_start: bool,
    /// Exit was decided: the event loop ends.
    quit: bool,
    /// The rows of the last "Run checks" (`doctor`), shown above the live figures.
    doctor_rows: Vec<status::DiagRow>,
}

/// Runs the window until the user exits (see [`crate::run`]).
pub(crate) fn run(backend: Arc<dyn Backend>, mut options: GuiOptions) -> Result<(), GuiError> {
    let app = app::App::default();
    style::init();
    let (tx, rx) = unbounded::<Msg>();
    let jobs = spawn_workers(&backend, &tx)?;
    {
        let (tx, backend) = (tx.clone(), backend.clone());
        thread::Builder::new().name("gui-subscribe".into()).spawn(move || {
            backend.subscribe(Box::new(move |e| {
                if tx.send(Msg::Event(e)).is_ok() {
                    app::awake();
                }
            }));
        })?;
    }
    if let Some(crate::ActionReceiver(actions)) = options.actions.take() {
        let tx = tx.clone();
        thread::Builder::new().name("gui-actions".into()).spawn(move || {
            for a in actions {
                if tx.send(Msg::Action(a)).is_err() {
                    return;
                }
                app::awake();
            }
        })?;
    }
    let dash = Dashboard::new(&tx);
    let wiz = WizardWin::new(&tx, dash.spin_phase.clone());
    let mut me = App {
        backend,
        options,
        tx: tx.clone(),
        jobs,
        dash,
        wiz,
        prompt: Prompt::new(&tx),
        prompt_kind: None,
        live: Live::default(),
        t0: Instant::now(),
        section: Section::Overview,
        view: StatusView::starting(),
        filter: ActivityFilter::default(),
        databases: Vec::new(),
        settings: None,
        gate: PinGate::default(),
        conn_editing: None,
        conn_gen: 0,
        schema_conn: None,
        schema_view: None,
        schema_rows: Vec::new(),
        schema_sel: None,
        wizard: Wizard::new(),
        wizard_open: false,
        wizard_busy: false,
        wizard_view: None,
        key_gen: 0,
        db_gen: 0,
        phase: 0.0,
        ticking: false,
        exiting: false,
        decided_start: false,
        quit: false,
        doctor_rows: Vec::new(),
    };
    me.start();
    loop {
        let shown = app.wait();
        while let Ok(msg) = rx.try_recv() {
            me.handle(msg);
        }
        me.ensure_ticking();
        if me.quit {
            break;
        }
        if !shown {
            // No window is shown: the first settings have not answered yet (the start — wizard
            // or dashboard — is decided then), or the dashboard is hidden to the tray. FLTK
            // does not wait without a window, so poll the channel.
            if me.decided_start && !me.options.close_to_tray && app::first_window().is_none() {
                break;
            }
            app::sleep(0.05);
        }
    }
    drain(&rx);
    Ok(())
}

fn drain(rx: &Receiver<Msg>) {
    while rx.try_recv().is_ok() {}
}

impl App {
    /// Ends the event loop (and the app).
    fn quit(&mut self) {
        self.quit = true;
        app::quit();
    }

    fn job(&self, tag: Tag, requests: Vec<ControlRequest>) {
        let _ = self.jobs.send(Job { tag, requests });
    }

    fn start(&mut self) {
        self.job(Tag::Settings { initial: true }, vec![setup(SetupRequest::Settings)]);
        self.job(Tag::Status, vec![ControlRequest::Status]);
        self.job(Tag::Activity, vec![ControlRequest::Activity { limit: Some(activity::MAX_ENTRIES) }]);
        self.job(Tag::Databases, vec![setup(SetupRequest::ListDatabases)]);
        self.refresh_status();
        self.refresh_activity();
        match self.options.start_in_wizard {
            Some(true) => self.open_wizard(),
            Some(false) => self.open_dashboard(),
            None => {
                // Decided when the settings arrive; an unfinished wizard reopens at once.
                let p = Progress::load(&self.options.state_dir);
                if p.step.is_some() && !p.finished {
                    self.open_wizard();
                }
            }
        }
    }

    fn open_dashboard(&mut self) {
        self.decided_start = true;
        if self.wizard_open {
            self.wiz.win.show();
            return;
        }
        if !self.options.start_hidden || self.dash.win.shown() {
            self.dash.win.show();
        }
        self.options.start_hidden = false;
        self.dash.show_section(self.section);
        self.apply_title();
    }

    fn show_dashboard_now(&mut self) {
        self.options.start_hidden = false;
        self.open_dashboard();
        self.dash.win.show();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(e) => self.on_event(e),
            Msg::Reply(tag, reply) => self.on_reply(tag, reply),
            Msg::Action(a) => self.on_action(a),
            Msg::Tick => self.on_tick(),
            Msg::QuitNow => self.quit(),
            Msg::Nav(s) => self.nav(s),
            Msg::TogglePause => self.toggle_pause(),
            Msg::CloseWindow => {
                if self.options.close_to_tray {
                    self.dash.win.hide();
                    self.gate.lock();
                } else {
                    self.exit();
                }
            }
            Msg::DismissBanner => {
                self.live.banner = None;
                self.dash.banner.hide();
                self.dash.win.redraw();
            }
            Msg::FilterChanged => self.read_filter(),
            Msg::FilterToday => {
                let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                self.dash.activity.date.set_value(&today[..10]);
                self.read_filter();
            }
            Msg::ConnSelected => {}
            Msg::ConnAdd => self.conn_open(None),
            Msg::ConnEdit => {
                let name = self.selected_connection().map(|e| e.form.name.clone());
                match name {
                    Some(n) => self.conn_open(Some(n)),
                    None => self.conn_list_message("Select a connection first", style::MUTED),
                }
            }
            Msg::ConnTestSelected => match self.selected_connection().cloned() {
                Some(e) => {
                    self.conn_gen += 1;
                    self.conn_list_message(&format!("Testing {}…", e.form.name), style::MUTED);
                    self.job(
                        Tag::ConnTest { generation: self.conn_gen, in_panel: false },
                        vec![setup(SetupRequest::TestDatabase(e.form))],
                    );
                }
                None => self.conn_list_message("Select a connection first", style::MUTED),
            },
            Msg::ConnRemove => self.conn_remove(),
            Msg::ConnFormChanged => {
                self.dash.connections.form.apply_type();
                self.conn_gen += 1;
                self.dash.connections.verdict.set_label("");
                self.dash.connections.spinner.hide();
                self.dash.win.redraw();
            }
            Msg::ConnTestForm => self.conn_test_form(),
            Msg::ConnSave => self.conn_save(),
            Msg::ConnCancel => {
                self.conn_editing = None;
                self.dash.connections.panel.hide();
                self.dash.win.redraw();
            }
            Msg::SchemaConnection => {
                let name = self.dash.schema.connection.choice();
                if let Some(n) = name {
                    self.schema_conn = Some(n.replace("\\/", "/"));
                    self.schema_discover();
                }
            }
            Msg::SchemaSelect(path) => self.schema_select(&path),
            Msg::SchemaRediscover => self.schema_discover(),
            Msg::SchemaCompare => self.schema_compare(),
            Msg::SchemaTogglePrivate => self.schema_toggle_private(),
            Msg::SchemaApprove => {
                if let Some(conn) = self.schema_conn.clone() {
                    self.schema_message("Approving…", style::MUTED);
                    self.job(
                        Tag::SchemaChanged(conn.clone(), "Approved: this is now the schema the cloud sees."),
                        vec![setup(SetupRequest::ApproveSchema { connection: conn })],
                    );
                }
            }
            Msg::ReplaceKey => self.replace_key(),
            Msg::SetPin => self.set_pin(),
            Msg::InstallService => {
                self.settings_message("Registering the service…", style::MUTED);
                self.job(Tag::Install, vec![setup(SetupRequest::InstallService)]);
            }
            Msg::SettingsSave => self.settings_save(),
            Msg::DiagRefresh => self.job(Tag::Status, vec![ControlRequest::Status]),
            Msg::RunChecks => {
                self.dash.diagnostics.run_checks.deactivate();
                self.dash.diagnostics.run_checks.set_label("Checking…");
                self.job(Tag::Doctor, vec![ControlRequest::Doctor]);
            }
            Msg::DiagBundle => self.export_bundle(),
            Msg::WizKeyChanged => {
                self.key_gen += 1;
                self.wizard.set_key_text(&self.wiz.key.value());
                self.update_wizard();
            }
            Msg::WizCheckKey => self.wiz_check_key(),
            Msg::WizNameChanged => {
                self.wizard.name = self.wiz.name.value();
                self.update_wizard();
            }
            Msg::WizFormChanged => {
                self.wiz.form.apply_type();
                self.db_gen += 1;
                if let Ok(f) = self.wiz.form.read() {
                    self.wizard.set_form(f);
                }
                self.update_wizard();
            }
            Msg::WizTest => self.wiz_test(),
            Msg::WizPrivate(table, on) => {
                self.wizard.set_make_private(&table, on);
                self.update_review_summary();
            }
            Msg::WizNext => self.wiz_next(),
            Msg::WizBack => {
                if !self.wizard_busy {
                    self.wizard.back();
                    self.save_progress();
                    self.show_wizard_step();
                }
            }
            Msg::PromptAnswer(answer) => self.on_prompt(answer),
            Msg::WizClose => {
                self.save_progress();
                self.wiz.win.hide();
                self.wizard_open = false;
                if self.wizard.finished || self.settings.as_ref().is_some_and(|s| s.api_key_masked.is_some())
                {
                    self.show_dashboard_now();
                } else {
                    self.quit();
                }
            }
        }
    }

    // ---- agent events and replies ----------------------------------------------------------

    fn on_event(&mut self, e: AgentEvent) {
        let changed = self.live.apply(e, self.t0.elapsed().as_secs_f64());
        if changed.status {
            self.refresh_status();
        }
        if changed.activity {
            self.refresh_activity();
        }
        if changed.log {
            self.refresh_log();
        }
        if changed.notice {
            self.refresh_banner();
        }
        if changed.stopped && self.exiting {
            self.quit();
        }
    }

    fn on_reply(&mut self, tag: Tag, reply: ControlReply) {
        match tag {
            Tag::Status => {
                if let ControlReply::Status(s) = reply {
                    self.on_event(AgentEvent::Status(s));
                }
            }
            Tag::Doctor => {
                self.dash.diagnostics.run_checks.activate();
                self.dash.diagnostics.run_checks.set_label("Run checks");
                let at = format!("{} UTC", format::time_of_day(&protocol::now_rfc3339()));
                self.doctor_rows = match reply {
                    ControlReply::Doctor(report) => crate::model::doctor::rows(&report, &at),
                    other => vec![status::DiagRow {
                        label: "Checks".into(),
                        value: reply_error(&other).unwrap_or_else(|| "unexpected answer".into()),
                        verdict: status::Verdict::Bad,
                    }],
                };
                self.refresh_status();
            }
            Tag::Activity => {
                if let ControlReply::Activity(list) = reply {
                    self.live.activity.replace(list);
                    self.refresh_activity();
                }
            }
            Tag::Settings { initial } => {
                if let ControlReply::Settings(s) = reply {
                    self.gate.set_pin_configured(s.pin_set);
                    let no_key = s.api_key_masked.is_none();
                    self.settings = Some(*s);
                    self.refresh_settings();
                    if initial && !self.decided_start && !self.wizard_open {
                        let p = Progress::load(&self.options.state_dir);
                        if self.options.start_in_wizard.is_none()
                            && (no_key || (p.step.is_some() && !p.finished))
                        {
                            self.open_wizard();
                        } else {
                            self.open_dashboard();
                        }
                    }
                } else if initial && !self.decided_start && !self.wizard_open {
                    // No configuration yet: the first run.
                    let first_run =
                        matches!(&reply, ControlReply::Error { code, .. } if code == "NOT_CONFIGURED");
                    if first_run && self.options.start_in_wizard != Some(false) {
                        self.open_wizard();
                    } else {
                        self.open_dashboard();
                    }
                }
            }
            Tag::Databases => {
                if let ControlReply::Databases(list) = reply {
                    self.databases = list;
                    self.refresh_connections();
                    self.refresh_schema_choices();
                }
            }
            Tag::Pause | Tag::Reconnect => {
                if let Some(e) = reply_error(&reply) {
                    self.dash.status_detail.set_label(&e);
                }
                self.job(Tag::Status, vec![ControlRequest::Status]);
            }
            Tag::Stop => self.quit(),
            Tag::WizKeyCheck(generation) => {
                if generation == self.key_gen {
                    let text = self.wizard.key_text.clone();
                    match reply {
                        ControlReply::Key(k) => {
                            self.wizard.key_check_done(&text, k.format_ok && k.reachable, &k.message)
                        }
                        other => {
                            self.wizard.key_check_done(&text, false, &reply_error(&other).unwrap_or_default())
                        }
                    }
                }
                self.update_wizard();
            }
            Tag::WizTest(generation) => {
                if generation == self.db_gen {
                    let form = self.wizard.form.clone();
                    match reply {
                        ControlReply::Test(t) => self.wizard.db_test_done(&form, t.ok, &t.message),
                        other => {
                            self.wizard.db_test_done(&form, false, &reply_error(&other).unwrap_or_default())
                        }
                    }
                }
                self.update_wizard();
            }
            Tag::WizNext(action) => {
                self.wizard_busy = false;
                if let Some(e) = reply_error(&reply) {
                    self.wiz.hint.set_label(&e);
                    self.wiz.hint.set_label_color(c(style::BAD));
                    self.update_wizard_buttons();
                    self.wiz.win.redraw();
                    return;
                }
                self.wizard.advance(&action);
                if action == NextAction::SaveKey {
                    self.wiz.key.set_value("");
                }
                self.save_progress();
                if self.wizard.finished {
                    self.finish_wizard();
                } else {
                    self.show_wizard_step();
                }
            }
            Tag::WizDiscover => match reply {
                ControlReply::Schema(v) => {
                    let items = schema::review_items(&v);
                    self.wiz.set_review(&self.tx, &items, &self.wizard.make_private);
                    self.wizard_view = Some(*v);
                    self.update_review_summary();
                }
                other => {
                    self.wiz
                        .review_summary
                        .set_label(&format!("Discovery failed: {}", reply_error(&other).unwrap_or_default()));
                    self.wiz.review_summary.set_label_color(c(style::BAD));
                }
            },
            Tag::ConnTest { generation, in_panel } => {
                let (ok, text) = match &reply {
                    ControlReply::Test(t) => {
                        (t.ok, format!("{} ({})", t.message, format::duration_ms(t.elapsed_ms)))
                    }
                    other => (false, reply_error(other).unwrap_or_default()),
                };
                if in_panel {
                    if generation == self.conn_gen {
                        let cw = &mut self.dash.connections;
                        cw.spinner.hide();
                        cw.verdict.set_label(&format!("{} {text}", if ok { "✔" } else { "✘" }));
                        cw.verdict.set_label_color(c(if ok { style::GOOD } else { style::BAD }));
                    }
                } else {
                    self.conn_list_message(&text, if ok { style::GOOD } else { style::BAD });
                }
                self.dash.win.redraw();
            }
            Tag::ConnSave => {
                if let Some(e) = reply_error(&reply) {
                    self.dash.connections.verdict.set_label(&e);
                    self.dash.connections.verdict.set_label_color(c(style::BAD));
                    self.dash.win.redraw();
                    return;
                }
                let name = self.dash.connections.form.name.value();
                self.dash.connections.form.password.set_value("");
                self.conn_editing = None;
                self.dash.connections.panel.hide();
                self.job(Tag::Databases, vec![setup(SetupRequest::ListDatabases)]);
                // Spec §3.5.1: discovery runs at once and the tables are shown for review.
                self.schema_conn = Some(name.trim().to_owned());
                self.nav(Section::Schema);
            }
            Tag::ConnRemove => {
                match reply_error(&reply) {
                    Some(e) => self.conn_list_message(&e, style::BAD),
                    None => self.conn_list_message("Removed, with its stored password.", style::GOOD),
                }
                self.job(Tag::Databases, vec![setup(SetupRequest::ListDatabases)]);
            }
            Tag::Schema(conn) => {
                if Some(&conn) != self.schema_conn.as_ref() {
                    return;
                }
                match reply {
                    ControlReply::Schema(v) => {
                        self.schema_view = Some(*v);
                        self.refresh_schema_tree();
                        self.schema_message("", style::MUTED);
                    }
                    other => {
                        self.schema_message(
                            &format!("Discovery failed: {}", reply_error(&other).unwrap_or_default()),
                            style::BAD,
                        );
                    }
                }
            }
            Tag::Sample(conn, table) => {
                if self.schema_conn.as_ref() != Some(&conn)
                    || self.schema_sel.as_ref().map(|r| &r.table) != Some(&table)
                {
                    return;
                }
                let data = match reply {
                    ControlReply::Sample(s) => TableData {
                        numeric: vec![false; s.columns.len()],
                        headers: s.columns,
                        rows: s
                            .rows
                            .into_iter()
                            .map(|r| {
                                r.into_iter()
                                    .map(|v| v.unwrap_or_else(|| "private (not read)".to_owned()))
                                    .collect()
                            })
                            .collect(),
                        ..TableData::default()
                    },
                    other => TableData {
                        headers: vec!["Sample values".into()],
                        rows: vec![vec![reply_error(&other).unwrap_or_default()]],
                        ..TableData::default()
                    },
                };
                self.dash.schema.samples.set(data);
            }
            Tag::SchemaChanged(conn, done) => {
                match reply_error(&reply) {
                    Some(e) => self.schema_message(&e, style::BAD),
                    None => {
                        self.schema_message(done, style::GOOD);
                        if self.schema_conn.as_ref() == Some(&conn) {
                            self.job(
                                Tag::Schema(conn.clone()),
                                vec![setup(SetupRequest::Discover { connection: conn })],
                            );
                        }
                    }
                }
                self.job(Tag::Status, vec![ControlRequest::Status]);
            }
            Tag::Configure(done) => {
                match reply_error(&reply) {
                    Some(e) => self.settings_message(&e, style::BAD),
                    None => self.settings_message(done, style::GOOD),
                }
                self.job(Tag::Settings { initial: false }, vec![setup(SetupRequest::Settings)]);
            }
            Tag::Pin(then) => match reply_error(&reply) {
                None => {
                    self.gate.unlock(Instant::now());
                    self.handle(*then);
                }
                Some(_) => self.ask(PromptKind::Alert, "That PIN is not right.", false, "Close", None),
            },
            Tag::SetPin => {
                match reply_error(&reply) {
                    Some(e) => self.settings_message(&e, style::BAD),
                    None => self.settings_message("PIN updated.", style::GOOD),
                }
                self.job(Tag::Settings { initial: false }, vec![setup(SetupRequest::Settings)]);
            }
            Tag::Bundle => {
                self.dash.diagnostics.bundle.activate();
                let (text, good) = bundle::outcome(&reply);
                self.bundle_message(&text, if good { style::GOOD } else { style::BAD });
            }
            Tag::Install => match reply {
                ControlReply::Message(m) => self.settings_message(&m, style::TEXT),
                ControlReply::Ok => self.settings_message("Service registered.", style::GOOD),
                other => self.settings_message(&reply_error(&other).unwrap_or_default(), style::BAD),
            },
        }
    }

    fn on_action(&mut self, a: UiAction) {
        match a {
            UiAction::OpenDashboard => self.show_dashboard_now(),
            UiAction::TogglePause => self.toggle_pause(),
            UiAction::ViewLastActivity => {
                self.show_dashboard_now();
                self.nav(Section::Activity);
            }
            UiAction::Reconnect => self.job(Tag::Reconnect, vec![ControlRequest::Reconnect]),
            UiAction::Exit => self.exit(),
        }
    }

    fn needs_tick(&self) -> (bool, bool) {
        let spinning = self.dash.connections.spinner.visible()
            || self.wiz.key_spinner.visible()
            || self.wiz.db_spinner.visible();
        (spinning, self.view.animation != status::Animation::None)
    }

    /// Arms the animation timer (one shot, 80 ms) while something moves; idle, nothing wakes
    /// the loop.
    fn ensure_ticking(&mut self) {
        let (spinning, animated) = self.needs_tick();
        if !self.ticking && (spinning || animated) {
            self.ticking = true;
            let tx = self.tx.clone();
            app::add_timeout3(0.08, move |_| {
                let _ = tx.send(Msg::Tick);
            });
        }
    }

    fn on_tick(&mut self) {
        self.ticking = false;
        let (spinning, animated) = self.needs_tick();
        if !spinning && !animated {
            return;
        }
        self.phase = (self.phase + 0.08 / 1.2) % 1.0;
        self.dash.spin_phase.set(self.phase);
        if animated {
            let mut look = self.dash.dot_look.get();
            look.phase = self.phase;
            self.dash.dot_look.set(look);
            self.dash.dot.redraw();
            self.dash.header_dot.redraw();
        }
        for s in [&mut self.dash.connections.spinner, &mut self.wiz.key_spinner, &mut self.wiz.db_spinner] {
            if s.visible() {
                s.redraw();
            }
        }
    }

    // ---- status, overview, diagnostics -----------------------------------------------------

    fn apply_title(&mut self) {
        let title = format!("{} · {}", self.view.title, self.section.title());
        if self.dash.win.label() != title {
            self.dash.win.set_label(&title);
        }
    }

    fn refresh_status(&mut self) {
        let view = self.live.view();
        if view != self.view
            && let Some(cb) = &self.options.on_status
        {
            cb(view.indicator, &view.tooltip, view.paused);
        }
        self.view = view.clone();
        self.dash.dot_look.set(style::DotLook {
            rgb: view.rgb,
            animation: view.animation,
            phase: self.phase,
        });
        self.dash.dot.redraw();
        self.dash.header_dot.redraw();
        self.dash.status_label.set_label(&view.label);
        self.dash.status_detail.set_label(&view.detail);
        self.dash.status_detail.set_label_color(c(if view.indicator == Indicator::Disconnected {
            style::BAD
        } else {
            style::MUTED
        }));
        self.dash.pause.set_label(if view.paused { "Resume" } else { "Pause" });
        self.apply_title();
        if let Some(s) = &self.live.status {
            let cards = status::overview_cards(s);
            for (slot, card) in self.dash.overview.cards.iter().zip(cards) {
                *slot.borrow_mut() = (card.title.to_owned(), card.main, card.sub);
            }
            for f in &mut self.dash.overview.card_frames {
                f.redraw();
            }
            let mut rows = self.doctor_rows.clone();
            rows.extend(status::diagnostics(s));
            let data = TableData {
                headers: vec!["Check".into(), "Verdict".into(), "Details".into()],
                widths: vec![2.0, 1.0, 7.0],
                numeric: vec![false; 3],
                row_colors: rows
                    .iter()
                    .map(|r| match r.verdict {
                        status::Verdict::Bad => Some(style::BAD),
                        status::Verdict::Warn => Some(style::WARN),
                        _ => None,
                    })
                    .collect(),
                rows: rows
                    .into_iter()
                    .map(|r| {
                        let v = match r.verdict {
                            status::Verdict::Ok => "● ok",
                            status::Verdict::Warn => "● check",
                            status::Verdict::Bad => "● failing",
                            status::Verdict::Info => "",
                        };
                        vec![r.label, v.to_owned(), r.value]
                    })
                    .collect(),
                selected: None,
            };
            self.dash.diagnostics.table.set(data);
            self.refresh_connections();
        }
        let values = self.live.latency.values();
        let caption = self.live.latency.caption();
        let max = values.iter().copied().fold(1.0_f64, f64::max) * 1.25;
        for (chart, cap) in [
            (&mut self.dash.overview.chart, &mut self.dash.overview.chart_caption),
            (&mut self.dash.diagnostics.chart, &mut self.dash.diagnostics.chart_caption),
        ] {
            chart.clear();
            chart.set_bounds(0.0, max);
            for v in &values {
                chart.add(*v, "", c(style::ACCENT));
            }
            chart.redraw();
            cap.set_label(&caption);
        }
    }

    fn refresh_activity(&mut self) {
        let recent: Vec<Vec<String>> =
            self.live.activity.entries().iter().take(6).map(activity::row).collect();
        let colors =
            |entries: &mut dyn Iterator<Item = &protocol::control::ActivityEntry>| -> Vec<Option<u32>> {
                entries
                    .map(|e| match e.outcome {
                        Outcome::Failed { .. } => Some(style::BAD),
                        Outcome::Running => Some(style::ACCENT),
                        _ => None,
                    })
                    .collect()
            };
        let headers: Vec<String> = activity::COLUMNS.iter().map(|s| (*s).to_owned()).collect();
        let widths = vec![1.0, 1.2, 1.1, 1.6, 1.8, 1.0, 1.0, 1.0];
        self.dash.overview.recent.set(TableData {
            headers: headers.clone(),
            widths: widths.clone(),
            numeric: activity::NUMERIC.to_vec(),
            row_colors: colors(&mut self.live.activity.entries().iter().take(6)),
            rows: recent,
            selected: None,
        });
        let filtered: Vec<&protocol::control::ActivityEntry> =
            self.live.activity.filtered(&self.filter).collect();
        self.dash.activity.count.set_label(&format!(
            "{} of {}",
            format::count(filtered.len() as u64, "command", "commands"),
            format::thousands(self.live.activity.entries().len() as u64)
        ));
        let rc = colors(&mut filtered.iter().copied());
        self.dash.activity.table.set(TableData {
            headers,
            widths,
            numeric: activity::NUMERIC.to_vec(),
            rows: filtered.into_iter().map(activity::row).collect(),
            row_colors: rc,
            selected: None,
        });
    }

    fn read_filter(&mut self) {
        let a = &mut self.dash.activity;
        self.filter = ActivityFilter {
            date: a.date.value(),
            status: StatusFilter::ALL.get(a.status.value().max(0) as usize).copied().unwrap_or_default(),
            workflow: a.workflow.value(),
        };
        let valid = self.filter.date_valid();
        style::mark_field(&mut a.date, if self.filter.date.is_empty() { None } else { Some(valid) });
        self.refresh_activity();
    }

    fn refresh_log(&mut self) {
        let rows = self
            .live
            .log
            .iter()
            .map(|l| vec![format::time_of_day(&l.at), l.level.clone(), l.message.clone()])
            .collect();
        let colors = self
            .live
            .log
            .iter()
            .map(|l| Some(if l.level == "error" { style::BAD } else { style::WARN }))
            .collect();
        self.dash.diagnostics.errors.set(TableData {
            headers: vec!["Time".into(), "Level".into(), "Message".into()],
            widths: vec![1.0, 0.8, 8.0],
            numeric: vec![false; 3],
            rows,
            row_colors: colors,
            selected: None,
        });
    }

    fn refresh_banner(&mut self) {
        match self.live.banner_text() {
            Some((text, tint)) => {
                self.dash.banner.set_color(c(tint));
                self.dash.banner_text.set_label(&text);
                for i in 0..self.dash.banner.children() {
                    if let Some(mut w) = self.dash.banner.child(i) {
                        w.set_color(c(tint));
                    }
                }
                self.dash.banner.show();
            }
            None => self.dash.banner.hide(),
        }
        self.dash.win.redraw();
    }

    fn nav(&mut self, s: Section) {
        self.section = s;
        self.dash.show_section(s);
        self.apply_title();
        match s {
            Section::Connections => self.job(Tag::Databases, vec![setup(SetupRequest::ListDatabases)]),
            Section::Schema => {
                if self.schema_conn.is_none() {
                    self.schema_conn = self.databases.first().map(|d| d.form.name.clone());
                }
                self.refresh_schema_choices();
                self.schema_discover();
            }
            Section::Settings => {
                self.job(Tag::Settings { initial: false }, vec![setup(SetupRequest::Settings)])
            }
            Section::Diagnostics => self.refresh_log(),
            Section::Overview | Section::Activity => {}
        }
    }

    fn toggle_pause(&mut self) {
        let req = if self.view.paused { ControlRequest::Resume } else { ControlRequest::Pause };
        self.job(Tag::Pause, vec![req]);
    }

    fn exit(&mut self) {
        match status::exit_decision(self.backend.in_process(), self.live.status.as_ref()) {
            ExitDecision::CloseOnly => self.quit(),
            ExitDecision::StopNow => self.stop_and_quit(),
            ExitDecision::Confirm(q) => {
                self.show_dashboard_now();
                self.ask(PromptKind::ConfirmExit, &q, false, "Exit", Some("Keep running"));
            }
        }
    }

    fn stop_and_quit(&mut self) {
        self.exiting = true;
        self.dash.win.hide();
        self.wiz.win.hide();
        self.job(Tag::Stop, vec![ControlRequest::Stop]);
        // The agent answers in well under a second; never hang on exit.
        let tx = self.tx.clone();
        app::add_timeout3(5.0, move |_| {
            let _ = tx.send(Msg::QuitNow);
        });
    }

    // ---- connections -----------------------------------------------------------------------

    fn selected_connection(&self) -> Option<&DatabaseEntry> {
        self.dash.connections.table.selected().and_then(|i| self.databases.get(i))
    }

    fn conn_list_message(&mut self, text: &str, color: u32) {
        let v = &mut self.dash.connections.verdict;
        if self.conn_editing.is_some() {
            v.set_label(text);
            v.set_label_color(c(color));
        } else {
            self.dash.status_detail.set_label(text);
            self.dash.status_detail.set_label_color(c(color));
        }
        self.dash.win.redraw();
    }

    fn refresh_connections(&mut self) {
        let health = self.live.status.as_ref().map(|s| s.databases.clone()).unwrap_or_default();
        let rows: Vec<Vec<String>> = self
            .databases
            .iter()
            .map(|e| forms::connection_row(e, health.iter().find(|h| h.name == e.form.name)))
            .collect();
        let colors = self
            .databases
            .iter()
            .map(|e| health.iter().find(|h| h.name == e.form.name).filter(|h| !h.healthy).map(|_| style::BAD))
            .collect();
        self.dash.connections.table.set(TableData {
            headers: forms::CONNECTION_COLUMNS.iter().map(|s| (*s).to_owned()).collect(),
            widths: vec![1.2, 1.0, 2.4, 2.4, 0.7, 0.7],
            numeric: vec![false, false, false, false, true, true],
            rows,
            row_colors: colors,
            selected: None,
        });
    }

    fn guarded(&mut self, what: Guarded, then: Msg) -> bool {
        if !self.gate.needs_pin(what, Instant::now()) {
            return true;
        }
        self.ask(PromptKind::Pin(Box::new(then)), "This needs the local PIN.", true, "OK", Some("Cancel"));
        false
    }

    fn conn_open(&mut self, name: Option<String>) {
        let msg = if name.is_some() { Msg::ConnEdit } else { Msg::ConnAdd };
        if !self.guarded(Guarded::EditConnection, msg) {
            return;
        }
        let cw = &mut self.dash.connections;
        match &name {
            Some(n) => {
                if let Some(e) = self.databases.iter().find(|e| &e.form.name == n) {
                    cw.form.fill(&e.form);
                }
                cw.panel_title
                    .set_label(&format!("Edit {n} (leave the password empty to keep the stored one)"));
            }
            None => {
                cw.form.fill(&DatabaseForm {
                    kind: "postgres".into(),
                    port: Some(5432),
                    ..Default::default()
                });
                cw.panel_title.set_label("Add a connection");
            }
        }
        cw.verdict.set_label("");
        cw.spinner.hide();
        cw.panel.show();
        self.conn_editing = Some(name);
        self.conn_gen += 1;
        self.dash.win.redraw();
    }

    /// The connection form's contents when they are valid; else the reason is shown under it.
    fn conn_valid_form(&mut self) -> Option<DatabaseForm> {
        let cw = &mut self.dash.connections;
        match cw.form.read().and_then(|f| forms::validate_db_form(&f).map(|()| f)) {
            Ok(f) => Some(f),
            Err(e) => {
                cw.verdict.set_label(&e);
                cw.verdict.set_label_color(c(style::BAD));
                self.dash.win.redraw();
                None
            }
        }
    }

    fn conn_test_form(&mut self) {
        let Some(form) = self.conn_valid_form() else { return };
        let cw = &mut self.dash.connections;
        cw.spinner.show();
        cw.verdict.set_label("Testing the connection from this computer…");
        cw.verdict.set_label_color(c(style::MUTED));
        self.job(
            Tag::ConnTest { generation: self.conn_gen, in_panel: true },
            vec![setup(SetupRequest::TestDatabase(form))],
        );
        self.dash.win.redraw();
    }

    fn conn_save(&mut self) {
        if !self.guarded(Guarded::EditConnection, Msg::ConnSave) {
            return;
        }
        let Some(form) = self.conn_valid_form() else { return };
        let replace = self.conn_editing.clone().flatten();
        self.job(Tag::ConnSave, vec![setup(SetupRequest::SaveDatabase { form, replace })]);
    }

    fn conn_remove(&mut self) {
        let Some(name) = self.selected_connection().map(|e| e.form.name.clone()) else {
            self.conn_list_message("Select a connection first", style::MUTED);
            return;
        };
        if !self.guarded(Guarded::EditConnection, Msg::ConnRemove) {
            return;
        }
        let q = format!(
            "Remove the connection \"{name}\" and its stored password? Workflows using it will fail."
        );
        self.ask(PromptKind::ConfirmRemove(name), &q, false, "Remove", Some("Cancel"));
    }

    // ---- schema ----------------------------------------------------------------------------

    fn schema_message(&mut self, text: &str, color: u32) {
        self.dash.schema.message.set_label(text);
        self.dash.schema.message.set_label_color(c(color));
        self.dash.win.redraw();
    }

    fn refresh_schema_choices(&mut self) {
        let ch = &mut self.dash.schema.connection;
        ch.clear();
        for d in &self.databases {
            ch.add_choice(&d.form.name.replace('/', "\\/"));
        }
        if self.schema_conn.is_none() {
            self.schema_conn = self.databases.first().map(|d| d.form.name.clone());
        }
        if let Some(i) =
            self.schema_conn.as_ref().and_then(|n| self.databases.iter().position(|d| &d.form.name == n))
        {
            ch.set_value(i as i32);
        }
        ch.redraw();
    }

    fn schema_discover(&mut self) {
        if let Some(conn) = self.schema_conn.clone() {
            self.schema_message(&format!("Discovering {conn}… (locally; nothing is sent)"), style::MUTED);
            self.job(Tag::Schema(conn.clone()), vec![setup(SetupRequest::Discover { connection: conn })]);
        } else {
            self.schema_message("No connection yet: add one under Connections.", style::MUTED);
        }
    }

    fn refresh_schema_tree(&mut self) {
        let Some(view) = &self.schema_view else { return };
        let rows = schema::tree_rows(view);
        let tree = &mut self.dash.schema.tree;
        tree.clear();
        let many = view.schema.tables.len() > 20;
        // Add every path first (the tree finds parents by label), then relabel.
        let mut added = Vec::new();
        for r in rows {
            if let Some(item) = tree.add(&r.path) {
                added.push((item, r));
            }
        }
        let mut index = Vec::new();
        for (mut item, r) in added {
            item.set_label(&r.label);
            let color = match (&r.mark, r.private) {
                (schema::Mark::Removed, _) => style::BAD,
                (_, true) => 0x9AA0A8,
                (schema::Mark::Added | schema::Mark::Changed(..), _) => style::WARN,
                _ => style::TEXT,
            };
            item.set_label_fgcolor(c(color));
            if r.column.is_none() && many {
                item.close();
            }
            index.push((item, r));
        }
        let index: Vec<(String, TreeRow)> = index
            .into_iter()
            .filter_map(|(item, r)| tree.item_pathname(&item).ok().map(|p| (p, r)))
            .collect();
        tree.redraw();
        self.schema_rows = index;
        let sel = self.schema_sel.as_ref().map(|r| (r.table.clone(), r.column.clone()));
        self.schema_sel = sel.and_then(|(t, c)| {
            self.schema_rows.iter().find(|(_, r)| r.table == t && r.column == c).map(|(_, r)| r.clone())
        });
        self.schema_compare_text();
        self.refresh_schema_details();
    }

    fn schema_compare_text(&mut self) {
        if let Some(v) = &self.schema_view {
            let mut text = String::from("Changes since the last approved schema:\n");
            for l in schema::diff_lines(v) {
                text.push_str(&l);
                text.push('\n');
            }
            self.dash.schema.diff_buf.set_text(&text);
        }
    }

    fn schema_compare(&mut self) {
        self.schema_compare_text();
        if let Some(v) = &self.schema_view {
            let n = v.changes.len();
            let msg = if n == 0 {
                "Same as the last approved schema.".to_owned()
            } else {
                format!(
                    "{} since the last approval: review, then Approve.",
                    format::count(n as u64, "change", "changes")
                )
            };
            self.schema_message(&msg, if n == 0 { style::GOOD } else { style::WARN });
        }
    }

    fn schema_select(&mut self, path: &str) {
        self.schema_sel = self.schema_rows.iter().find(|(p, _)| p == path).map(|(_, r)| r.clone());
        self.refresh_schema_details();
        if let (Some(conn), Some(row)) = (self.schema_conn.clone(), self.schema_sel.clone()) {
            if row.private || row.mark == schema::Mark::Removed {
                self.dash.schema.samples.set(TableData {
                    headers: vec!["Sample values".into()],
                    rows: vec![vec![if row.private { "Private: never read." } else { "Removed." }.into()]],
                    ..TableData::default()
                });
            } else {
                self.job(
                    Tag::Sample(conn.clone(), row.table.clone()),
                    vec![setup(SetupRequest::Sample { connection: conn, table: row.table, limit: 8 })],
                );
            }
        }
    }

    fn refresh_schema_details(&mut self) {
        let (Some(view), Some(row)) = (&self.schema_view, &self.schema_sel) else {
            self.dash.schema.details.set(TableData {
                headers: vec!["Details".into()],
                rows: vec![vec!["Select a table or a column.".into()]],
                ..TableData::default()
            });
            return;
        };
        let rows = schema::details(view, row).into_iter().map(|(k, v)| vec![k, v]).collect();
        self.dash.schema.details.set(TableData {
            headers: vec!["Property".into(), "Value".into()],
            widths: vec![1.0, 2.5],
            rows,
            ..TableData::default()
        });
        self.dash.schema.private_btn.set_label(if row.private { "Make public" } else { "Mark private" });
        self.dash.win.redraw();
    }

    fn schema_toggle_private(&mut self) {
        let (Some(conn), Some(row)) = (self.schema_conn.clone(), self.schema_sel.clone()) else {
            self.schema_message("Select a table or a column first.", style::MUTED);
            return;
        };
        let done = if row.private {
            "Now shared with the cloud (after approval)."
        } else {
            "Marked private: the cloud will not see it."
        };
        self.job(
            Tag::SchemaChanged(conn.clone(), done),
            vec![setup(SetupRequest::SetPrivate {
                connection: conn,
                table: row.table,
                column: row.column,
                private: !row.private,
            })],
        );
    }

    // ---- settings --------------------------------------------------------------------------

    /// "Export diagnostic bundle…": the agent writes the ZIP to `Documents` (else the home
    /// directory) under the default name; the section shows the path.
    fn export_bundle(&mut self) {
        let connector = self.live.status.as_ref().map(|s| s.connector_name.clone()).unwrap_or_default();
        let folder = bundle::folder(bundle::home().as_deref(), &self.options.state_dir);
        let path = folder.join(bundle::file_name(&connector, std::time::SystemTime::now()));
        self.dash.diagnostics.bundle.deactivate();
        self.bundle_message("Building the diagnostic bundle…", style::MUTED);
        self.job(Tag::Bundle, vec![ControlRequest::DiagBundle { out: Some(path.display().to_string()) }]);
    }

    fn bundle_message(&mut self, text: &str, color: u32) {
        self.dash.diagnostics.bundle_message.set_label(text);
        self.dash.diagnostics.bundle_message.set_tooltip(text);
        self.dash.diagnostics.bundle_message.set_label_color(c(color));
        self.dash.win.redraw();
    }

    fn settings_message(&mut self, text: &str, color: u32) {
        self.dash.settings.message.set_label(text);
        self.dash.settings.message.set_label_color(c(color));
        self.dash.win.redraw();
    }

    fn refresh_settings(&mut self) {
        let Some(v) = self.settings.clone() else { return };
        let s = &mut self.dash.settings;
        let e = SettingsEdit::from_view(&v);
        s.name.set_value(&e.connector_name);
        s.key.set_label(&forms::masked_key(&v));
        s.cloud_url.set_value(&e.cloud_url);
        s.proxy.set_value(&e.proxy_url);
        s.ca.set_value(&e.ca_cert_path);
        s.log_level.set_value(forms::LOG_LEVELS.iter().position(|l| *l == e.log_level).unwrap_or(2) as i32);
        s.auto_start.set_checked(e.auto_start);
        s.auto_update.set_checked(e.auto_update);
        s.pin.set_label(if v.pin_set {
            "A PIN guards the key and connection edits."
        } else {
            "No PIN: anyone at this computer can change connections."
        });
        s.config_path.set_label(&format!("Configuration: {}", v.config_path));
        if self.wizard.name.is_empty() && !v.connector_name.is_empty() {
            self.wizard.name.clone_from(&v.connector_name);
            self.wiz.name.set_value(&v.connector_name);
        }
        if self.wiz.cloud_url.value().is_empty() {
            self.wiz.cloud_url.set_value(&v.cloud_url);
        }
        self.dash.win.redraw();
    }

    fn settings_save(&mut self) {
        let Some(current) = self.settings.clone() else { return };
        let s = &self.dash.settings;
        let edit = SettingsEdit {
            connector_name: s.name.value(),
            cloud_url: s.cloud_url.value(),
            proxy_url: s.proxy.value(),
            ca_cert_path: s.ca.value(),
            log_level: forms::LOG_LEVELS
                .get(s.log_level.value().max(0) as usize)
                .unwrap_or(&"info")
                .to_string(),
            auto_update: s.auto_update.is_checked(),
            auto_start: s.auto_start.is_checked(),
        };
        match edit.change(&current) {
            Err(e) => self.settings_message(&e, style::BAD),
            Ok(c) if c == SettingsChange::default() => {
                self.settings_message("Nothing changed.", style::MUTED)
            }
            Ok(c) => self.job(Tag::Configure("Saved."), vec![setup(SetupRequest::Configure(c))]),
        }
    }

    fn replace_key(&mut self) {
        if !self.guarded(Guarded::ReplaceKey, Msg::ReplaceKey) {
            return;
        }
        self.ask(
            PromptKind::NewKey,
            "Paste the new API key from the cloud console:",
            true,
            "Replace",
            Some("Cancel"),
        );
    }

    fn replace_key_with(&mut self, key: &str) {
        match check_key_format(key) {
            FieldCheck::Good(_) => {
                let change = SettingsChange { api_key: Some(key.trim().to_owned()), ..Default::default() };
                self.job(
                    Tag::Configure("Key replaced; the agent reconnects with it."),
                    vec![setup(SetupRequest::Configure(change))],
                );
            }
            other => self.settings_message(other.message(), style::BAD),
        }
    }

    fn set_pin(&mut self) {
        if self.settings.as_ref().is_some_and(|s| s.pin_set) {
            self.ask(PromptKind::CurrentPin, "Current PIN:", true, "Next", Some("Cancel"));
        } else {
            self.ask_new_pin(None);
        }
    }

    fn ask_new_pin(&mut self, current: Option<String>) {
        let text = "New PIN (4 to 12 digits; leave empty to remove the PIN):";
        self.ask(PromptKind::NewPin(current), text, true, "Set PIN", Some("Cancel"));
    }

    fn set_pin_to(&mut self, current: Option<String>, new: &str) {
        let new = new.trim().to_owned();
        if !new.is_empty() && !(4..=12).contains(&new.len()) {
            self.settings_message("A PIN has 4 to 12 digits.", style::BAD);
            return;
        }
        if !new.chars().all(|c| c.is_ascii_digit()) {
            self.settings_message("A PIN has digits only.", style::BAD);
            return;
        }
        let new = (!new.is_empty()).then_some(new);
        self.job(Tag::SetPin, vec![setup(SetupRequest::SetPin { current, new })]);
    }

    // ---- prompts ---------------------------------------------------------------------------

    fn ask(&mut self, kind: PromptKind, text: &str, secret: bool, ok: &str, cancel: Option<&str>) {
        self.prompt_kind = Some(kind);
        let near = if self.dash.win.shown() {
            (self.dash.win.x() + 340, self.dash.win.y() + 200)
        } else {
            (self.wiz.win.x() + 110, self.wiz.win.y() + 170)
        };
        self.prompt.ask(text, secret, ok, cancel, near);
    }

    fn on_prompt(&mut self, answer: Option<String>) {
        self.prompt.close();
        let Some(kind) = self.prompt_kind.take() else { return };
        let Some(answer) = answer else { return };
        match kind {
            PromptKind::Pin(then) => {
                self.job(Tag::Pin(then), vec![setup(SetupRequest::VerifyPin { pin: answer })])
            }
            PromptKind::NewKey => self.replace_key_with(&answer),
            PromptKind::CurrentPin => self.ask_new_pin(Some(answer)),
            PromptKind::NewPin(current) => self.set_pin_to(current, &answer),
            PromptKind::ConfirmExit => self.stop_and_quit(),
            PromptKind::ConfirmRemove(name) => {
                self.job(Tag::ConnRemove, vec![setup(SetupRequest::RemoveDatabase { name })]);
            }
            PromptKind::Alert => {}
        }
    }

    // ---- wizard ----------------------------------------------------------------------------

    fn open_wizard(&mut self) {
        self.decided_start = true;
        self.wizard = Wizard::resume(&Progress::load(&self.options.state_dir));
        if self.wizard.finished {
            self.wizard = Wizard::new();
            self.wizard.key_saved = self.settings.as_ref().is_some_and(|s| s.api_key_masked.is_some());
        }
        self.wizard_open = true;
        self.wiz.name.set_value(&self.wizard.name);
        let form = self.wizard.form.clone();
        self.wiz.form.fill(&form);
        if let Some(s) = &self.settings {
            self.wiz.cloud_url.set_value(&s.cloud_url);
        }
        self.dash.win.hide();
        self.show_wizard_step();
        self.wiz.win.show();
    }

    fn show_wizard_step(&mut self) {
        let step = self.wizard.step;
        self.wiz.show_step(step);
        if step == Step::Review {
            self.wiz.review_summary.set_label("Discovering the tables (locally)…");
            self.wiz.review_summary.set_label_color(c(style::MUTED));
            self.job(
                Tag::WizDiscover,
                vec![setup(SetupRequest::Discover { connection: self.wizard.form.name.clone() })],
            );
        }
        let focus: Option<&mut dyn WidgetExt> = match step {
            Step::Key => Some(&mut self.wiz.key),
            Step::Name => Some(&mut self.wiz.name),
            Step::Database => Some(&mut self.wiz.form.name),
            Step::Review => None,
        };
        if let Some(w) = focus {
            let _ = w.take_focus();
        }
        self.update_wizard();
    }

    fn save_progress(&mut self) {
        if let Err(e) = self.wizard.progress().save(&self.options.state_dir) {
            self.wiz.hint.set_label(&format!("Could not save the wizard's progress: {e}"));
        }
    }

    fn update_wizard(&mut self) {
        let w = &mut self.wiz;
        let key = check_key_format(&self.wizard.key_text);
        let key_state = match (&key, self.wizard.key_saved && self.wizard.key_text.is_empty()) {
            (FieldCheck::Empty, true) => {
                w.key_msg.set_label("A key is stored already; paste a new one only to replace it.");
                w.key_msg.set_label_color(c(style::MUTED));
                None
            }
            (k, _) => {
                w.key_msg.set_label(k.message());
                w.key_msg.set_label_color(c(if k.is_good() { style::GOOD } else { style::BAD }));
                match k {
                    FieldCheck::Empty => None,
                    k => Some(k.is_good()),
                }
            }
        };
        style::mark_field(&mut w.key, key_state);
        if self.wizard.can_check_key() {
            w.check.activate();
        } else {
            w.check.deactivate();
        }
        Self::show_check(&mut w.key_spinner, &mut w.key_verdict, &self.wizard.key_check);
        let name = check_name(&self.wizard.name);
        w.name_msg.set_label(name.message());
        w.name_msg.set_label_color(c(if name.is_good() { style::GOOD } else { style::BAD }));
        style::mark_field(
            &mut w.name,
            match name {
                FieldCheck::Empty => None,
                n => Some(n.is_good()),
            },
        );
        Self::show_check(&mut w.db_spinner, &mut w.db_verdict, &self.wizard.db_check);
        self.update_wizard_buttons();
        self.wiz.win.redraw();
    }

    fn show_check(spinner: &mut fltk::frame::Frame, verdict: &mut fltk::frame::Frame, check: &Check) {
        match check {
            Check::Idle => {
                spinner.hide();
                verdict.set_label("");
            }
            Check::Running => {
                spinner.show();
                verdict.set_label("Checking…");
                verdict.set_label_color(c(style::MUTED));
            }
            Check::Passed(m) => {
                spinner.hide();
                verdict.set_label(&format!("✔ {m}"));
                verdict.set_label_color(c(style::GOOD));
            }
            Check::Failed(m) => {
                spinner.hide();
                verdict.set_label(&format!("✘ {m}"));
                verdict.set_label_color(c(style::BAD));
            }
        }
    }

    fn update_wizard_buttons(&mut self) {
        let w = &mut self.wiz;
        w.next.set_label(self.wizard.next_label());
        if self.wizard.can_back() && !self.wizard_busy {
            w.back.activate();
        } else {
            w.back.deactivate();
        }
        match self.wizard.next_action() {
            Ok(_) if !self.wizard_busy => {
                w.next.activate();
                w.hint.set_label("");
            }
            Ok(_) => {
                w.next.deactivate();
                w.hint.set_label("Saving…");
                w.hint.set_label_color(c(style::MUTED));
            }
            Err(reason) => {
                w.next.deactivate();
                w.hint.set_label(&reason);
                w.hint.set_label_color(c(style::MUTED));
            }
        }
    }

    fn wiz_check_key(&mut self) {
        if !self.wizard.can_check_key() {
            return;
        }
        self.wizard.key_check_started();
        let url = self.wiz.cloud_url.value().trim().to_owned();
        self.job(
            Tag::WizKeyCheck(self.key_gen),
            vec![setup(SetupRequest::CheckKey {
                api_key: self.wizard.key_text.trim().to_owned(),
                cloud_url: (!url.is_empty()).then_some(url),
            })],
        );
        self.update_wizard();
    }

    fn wiz_test(&mut self) {
        match self.wiz.form.read() {
            Ok(f) => self.wizard.set_form(f),
            Err(e) => {
                self.wiz.db_verdict.set_label(&e);
                self.wiz.db_verdict.set_label_color(c(style::BAD));
                return;
            }
        }
        if let Err(e) = self.wizard.can_test_db() {
            self.wiz.db_verdict.set_label(&e);
            self.wiz.db_verdict.set_label_color(c(style::BAD));
            self.wiz.win.redraw();
            return;
        }
        self.wizard.db_test_started();
        self.job(
            Tag::WizTest(self.db_gen),
            vec![setup(SetupRequest::TestDatabase(self.wizard.form.clone()))],
        );
        self.update_wizard();
    }

    fn wiz_next(&mut self) {
        if self.wizard_busy {
            return;
        }
        let action = match self.wizard.next_action() {
            Ok(a) => a,
            Err(reason) => {
                self.wiz.hint.set_label(&reason);
                return;
            }
        };
        let requests = match &action {
            NextAction::SaveKey => {
                let url = self.wiz.cloud_url.value().trim().to_owned();
                let current = self.settings.as_ref().map(|s| s.cloud_url.clone()).unwrap_or_default();
                vec![setup(SetupRequest::Configure(SettingsChange {
                    api_key: Some(self.wizard.key_text.trim().to_owned()),
                    cloud_url: (!url.is_empty() && url != current).then_some(url),
                    ..Default::default()
                }))]
            }
            NextAction::SaveName => vec![setup(SetupRequest::Configure(SettingsChange {
                connector_name: Some(self.wizard.name.trim().to_owned()),
                ..Default::default()
            }))],
            NextAction::SaveDatabase => {
                let form = self.wizard.form.clone();
                let replace =
                    self.databases.iter().any(|d| d.form.name == form.name).then(|| form.name.clone());
                vec![setup(SetupRequest::SaveDatabase { form, replace })]
            }
            NextAction::Approve => {
                let conn = self.wizard.form.name.clone();
                let mut reqs: Vec<ControlRequest> = self
                    .wizard
                    .make_private
                    .iter()
                    .map(|t| {
                        setup(SetupRequest::SetPrivate {
                            connection: conn.clone(),
                            table: t.clone(),
                            column: None,
                            private: true,
                        })
                    })
                    .collect();
                reqs.push(setup(SetupRequest::ApproveSchema { connection: conn }));
                reqs.push(ControlRequest::Start);
                reqs
            }
            NextAction::KeepKey | NextAction::KeepDatabase => Vec::new(),
        };
        self.wizard_busy = true;
        self.update_wizard_buttons();
        if requests.is_empty() {
            self.on_reply(Tag::WizNext(action), ControlReply::Ok);
        } else {
            self.job(Tag::WizNext(action), requests);
        }
    }

    fn update_review_summary(&mut self) {
        let Some(v) = &self.wizard_view else { return };
        let items = schema::review_items(v);
        let ticks: Vec<bool> = items.iter().map(|i| self.wizard.make_private.contains(&i.table)).collect();
        let shared = schema::shared_count(&items, &ticks);
        self.wiz.review_summary.set_label(&format!(
            "{} of {} will be shared with the cloud.",
            format::count(shared as u64, "table", "tables"),
            items.len()
        ));
        self.wiz.review_summary.set_label_color(c(style::TEXT));
        self.wiz.win.redraw();
    }

    fn finish_wizard(&mut self) {
        self.wiz.win.hide();
        self.wizard_open = false;
        self.job(Tag::Settings { initial: false }, vec![setup(SetupRequest::Settings)]);
        self.job(Tag::Databases, vec![setup(SetupRequest::ListDatabases)]);
        self.job(Tag::Status, vec![ControlRequest::Status]);
        self.show_dashboard_now();
    }
}
