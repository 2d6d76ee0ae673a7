//! The setup wizard (spec §3.2) as a state machine: four steps, what each needs before Next,
//! what Next asks the agent to do, field validation as the user types, network checks as
//! idle/running/passed/failed, and the progress file that makes it resumable (no secrets).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use protocol::ApiKey;
use protocol::control::DatabaseForm;
use serde::{Deserialize, Serialize};

use super::forms::{validate_connector_name, validate_db_form};

/// A wizard step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// 1 · Paste the API key.
    Key,
    /// 2 · Name the connector.
    Name,
    /// 3 · Add a database.
    Database,
    /// 4 · Review the discovered tables and approve.
    Review,
}

impl Step {
    /// All four, in order.
    pub const ALL: [Self; 4] = [Self::Key, Self::Name, Self::Database, Self::Review];

    /// 1-based number.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    /// The step dots' labels.
    pub fn title(self) -> &'static str {
        match self {
            Self::Key => "Paste key",
            Self::Name => "Name",
            Self::Database => "Add database",
            Self::Review => "Review schema",
        }
    }

    fn next(self) -> Option<Self> {
        Self::ALL.get(self.number()).copied()
    }

    fn prev(self) -> Option<Self> {
        self.number().checked_sub(2).map(|i| Self::ALL[i])
    }
}

/// A field's check as the user types: neutral (empty), good, or bad with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldCheck {
    /// Nothing typed yet.
    Empty,
    /// Fine; a short confirmation.
    Good(String),
    /// Not acceptable, and why.
    Bad(String),
}

impl FieldCheck {
    /// Good.
    pub fn is_good(&self) -> bool {
        matches!(self, Self::Good(_))
    }

    /// What to print under the field.
    pub fn message(&self) -> &str {
        match self {
            Self::Empty => "",
            Self::Good(m) | Self::Bad(m) => m,
        }
    }
}

/// Key format and checksum, checked locally as the user types (nothing leaves the machine).
pub fn check_key_format(text: &str) -> FieldCheck {
    if text.trim().is_empty() {
        return FieldCheck::Empty;
    }
    match ApiKey::parse(text) {
        Ok(k) => FieldCheck::Good(format!("Key format and checksum are valid ({})", k.masked())),
        Err(e) => FieldCheck::Bad(e.to_string().replace("invalid API key format: ", "Not a valid key: ")),
    }
}

/// The connector name, checked as the user types.
pub fn check_name(text: &str) -> FieldCheck {
    if text.is_empty() {
        return FieldCheck::Empty;
    }
    match validate_connector_name(text) {
        Ok(()) => FieldCheck::Good("Looks good".into()),
        Err(e) => FieldCheck::Bad(e.into()),
    }
}

/// A network check (key reachability, connection test).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Check {
    /// Not run for the current input.
    #[default]
    Idle,
    /// Running: show the spinner.
    Running,
    /// Passed, with the verdict in words.
    Passed(String),
    /// Failed, with the verdict in words.
    Failed(String),
}

impl Check {
    /// Passed.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed(_))
    }
}

/// What pressing Next asks the agent to do (the UI sends it on a worker; on success it calls
/// [`Wizard::advance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// Store the key (`SetupRequest::Configure { api_key }`).
    SaveKey,
    /// Nothing to store: the key was saved before (resumed wizard, field left empty).
    KeepKey,
    /// Store the name (`Configure { connector_name }`).
    SaveName,
    /// Save the tested database (`SaveDatabase`), then discover its schema.
    SaveDatabase,
    /// Nothing to save: the database was saved before and the form is unchanged.
    KeepDatabase,
    /// Mark the chosen tables private, approve the schema, start the agent.
    Approve,
}

/// What survives closing the wizard half-way. No secrets: no key, no password.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The step to reopen at.
    pub step: Option<Step>,
    /// The key was stored (in the vault / keychain, by the agent).
    pub key_saved: bool,
    /// The name typed or saved.
    #[serde(default)]
    pub connector_name: String,
    /// The database form, without its password (`DatabaseForm` never serializes one).
    #[serde(default)]
    pub database: Option<DatabaseForm>,
    /// The database was saved.
    pub database_saved: bool,
    /// The wizard finished: do not open it again.
    pub finished: bool,
}

/// The progress file's name inside the state directory.
pub const PROGRESS_FILE: &str = "wizard-progress.json";

impl Progress {
    /// The file in a state directory.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(PROGRESS_FILE)
    }

    /// Reads it; a missing file is a fresh start, an unreadable one too (it holds nothing
    /// that cannot be typed again).
    pub fn load(state_dir: &Path) -> Self {
        fs::read(Self::path(state_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes it atomically (temporary file, then rename).
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        fs::create_dir_all(state_dir)?;
        let path = Self::path(state_dir);
        let tmp = path.with_extension("json.tmp");
        let mut clean = self.clone();
        if let Some(db) = &mut clean.database {
            db.password = None;
        }
        fs::write(&tmp, serde_json::to_vec_pretty(&clean).map_err(io::Error::other)?)?;
        fs::rename(tmp, path)
    }
}

/// The wizard's state.
#[derive(Debug, Clone)]
pub struct Wizard {
    /// The step shown.
    pub step: Step,
    /// The key field's text (never saved to the progress file).
    pub key_text: String,
    /// Reachability check for the key in the field.
    pub key_check: Check,
    /// The key was stored by the agent.
    pub key_saved: bool,
    /// The name field.
    pub name: String,
    /// The database form as typed.
    pub form: DatabaseForm,
    /// The connection test of [`Self::tested`].
    pub db_check: Check,
    /// The form the last passing or running test ran with.
    tested: Option<DatabaseForm>,
    /// The form that was saved.
    saved: Option<DatabaseForm>,
    /// Tables ticked "make private" on step 4 (by qualified name).
    pub make_private: Vec<String>,
    /// Finished.
    pub finished: bool,
}

impl Wizard {
    /// A fresh wizard.
    pub fn new() -> Self {
        Self::resume(&Progress::default())
    }

    /// A wizard reopened from saved progress.
    pub fn resume(p: &Progress) -> Self {
        let form = p.database.clone().unwrap_or_else(|| DatabaseForm {
            kind: "postgres".into(),
            port: Some(5432),
            ..Default::default()
        });
        let mut w = Self {
            step: p.step.unwrap_or(Step::Key),
            key_text: String::new(),
            key_check: Check::Idle,
            key_saved: p.key_saved,
            name: p.connector_name.clone(),
            saved: p.database_saved.then(|| form.clone()),
            form,
            db_check: Check::Idle,
            tested: None,
            make_private: Vec::new(),
            finished: p.finished,
        };
        // Never reopen past what was actually done.
        let reachable = if !w.key_saved {
            Step::Key
        } else if w.name.trim().is_empty() && w.step > Step::Name {
            Step::Name
        } else if w.saved.is_none() && w.step > Step::Database {
            Step::Database
        } else {
            w.step
        };
        w.step = w.step.min(reachable);
        w
    }

    /// What to save now.
    pub fn progress(&self) -> Progress {
        let mut database = self.form.clone();
        database.password = None;
        Progress {
            step: Some(self.step),
            key_saved: self.key_saved,
            connector_name: self.name.clone(),
            database: Some(database),
            database_saved: self.saved.is_some(),
            finished: self.finished,
        }
    }

    /// The key field changed: its old check no longer applies.
    pub fn set_key_text(&mut self, text: &str) {
        if text != self.key_text {
            self.key_text = text.to_owned();
            self.key_check = Check::Idle;
        }
    }

    /// The database form changed: its old test no longer applies.
    pub fn set_form(&mut self, form: DatabaseForm) {
        if form != self.form {
            self.form = form;
            if self.tested.as_ref() != Some(&self.form) {
                self.db_check = Check::Idle;
            }
        }
    }

    /// Whether the reachability check can start (the format is valid and none runs).
    pub fn can_check_key(&self) -> bool {
        check_key_format(&self.key_text).is_good() && self.key_check != Check::Running
    }

    /// A key check started for the current text.
    pub fn key_check_started(&mut self) {
        self.key_check = Check::Running;
    }

    /// The answer of a key check for `text` (ignored when the field changed meanwhile).
    pub fn key_check_done(&mut self, text: &str, reachable: bool, message: &str) {
        if text == self.key_text {
            self.key_check =
                if reachable { Check::Passed(message.into()) } else { Check::Failed(message.into()) };
        }
    }

    /// Whether the connection test can start.
    pub fn can_test_db(&self) -> Result<(), String> {
        if self.db_check == Check::Running {
            return Err("A test is running".into());
        }
        validate_db_form(&self.form)
    }

    /// A connection test started with the current form.
    pub fn db_test_started(&mut self) {
        self.tested = Some(self.form.clone());
        self.db_check = Check::Running;
    }

    /// The answer of a connection test (ignored when the form changed meanwhile).
    pub fn db_test_done(&mut self, form: &DatabaseForm, ok: bool, message: &str) {
        if form == &self.form {
            self.db_check = if ok { Check::Passed(message.into()) } else { Check::Failed(message.into()) };
        }
    }

    /// What Next does now, or why it is disabled.
    pub fn next_action(&self) -> Result<NextAction, String> {
        match self.step {
            Step::Key => {
                if self.key_saved && self.key_text.trim().is_empty() {
                    return Ok(NextAction::KeepKey);
                }
                match check_key_format(&self.key_text) {
                    FieldCheck::Empty => Err("Paste the API key from the cloud console".into()),
                    FieldCheck::Bad(m) => Err(m),
                    FieldCheck::Good(_) => match &self.key_check {
                        Check::Passed(_) => Ok(NextAction::SaveKey),
                        Check::Running => Err("Checking the console…".into()),
                        Check::Failed(m) => Err(m.clone()),
                        Check::Idle => Err("Check the connection to the console first".into()),
                    },
                }
            }
            Step::Name => match check_name(&self.name) {
                FieldCheck::Good(_) => Ok(NextAction::SaveName),
                FieldCheck::Empty => Err("Give this connector a name".into()),
                FieldCheck::Bad(m) => Err(m),
            },
            Step::Database => {
                let mut unchanged = self.form.clone();
                unchanged.password = None;
                if self.saved.as_ref().is_some_and(|s| {
                    let mut s = s.clone();
                    s.password = None;
                    s == unchanged
                }) && self.db_check != Check::Running
                {
                    return Ok(NextAction::KeepDatabase);
                }
                validate_db_form(&self.form)?;
                match &self.db_check {
                    Check::Passed(_) if self.tested.as_ref() == Some(&self.form) => {
                        Ok(NextAction::SaveDatabase)
                    }
                    Check::Running => Err("Testing the connection…".into()),
                    Check::Failed(m) => Err(format!("The test failed: {m}")),
                    _ => Err("Test the connection first".into()),
                }
            }
            Step::Review => Ok(NextAction::Approve),
        }
    }

    /// The Next button's label.
    pub fn next_label(&self) -> &'static str {
        if self.step == Step::Review { "Approve" } else { "Next" }
    }

    /// The Next action succeeded: record it and move on (or finish).
    pub fn advance(&mut self, done: &NextAction) {
        match done {
            NextAction::SaveKey => {
                self.key_saved = true;
                self.key_text.clear();
            }
            NextAction::SaveDatabase => self.saved = Some(self.form.clone()),
            NextAction::Approve => self.finished = true,
            NextAction::KeepKey | NextAction::SaveName | NextAction::KeepDatabase => {}
        }
        if let Some(next) = self.step.next() {
            self.step = next;
        }
    }

    /// Back (not from the first step).
    pub fn back(&mut self) {
        if let Some(prev) = self.step.prev() {
            self.step = prev;
        }
    }

    /// Whether Back is possible.
    pub fn can_back(&self) -> bool {
        self.step.prev().is_some()
    }

    /// Ticks or unticks "make private" for a table on step 4.
    pub fn set_make_private(&mut self, table: &str, private: bool) {
        self.make_private.retain(|t| t != table);
        if private {
            self.make_private.push(table.to_owned());
        }
    }
}

impl Default for Wizard {
    fn default() -> Self {
        Self::new()
    }
}

/// How each step dot is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotState {
    /// Finished.
    Done,
    /// The current step.
    Current,
    /// Still to come.
    Todo,
}

/// The four step dots.
pub fn dots(step: Step) -> [DotState; 4] {
    Step::ALL.map(|s| match s.cmp(&step) {
        std::cmp::Ordering::Less => DotState::Done,
        std::cmp::Ordering::Equal => DotState::Current,
        std::cmp::Ordering::Greater => DotState::Todo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        ApiKey::generate("acme").unwrap().expose().to_owned()
    }

    fn form() -> DatabaseForm {
        DatabaseForm {
            name: "erp".into(),
            kind: "postgres".into(),
            host: Some("127.0.0.1".into()),
            port: Some(5432),
            user: Some("reader".into()),
            password: Some("hunter2-password".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_key_field_turns_green_or_red_with_a_reason_as_the_user_types() {
        assert_eq!(check_key_format(""), FieldCheck::Empty);
        let FieldCheck::Bad(m) = check_key_format("vmc_acme") else { panic!() };
        assert!(m.starts_with("Not a valid key"), "{m}");
        let k = key();
        let mut wrong = k.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(check_key_format(&wrong).message().contains("checksum"));
        let good = check_key_format(&k);
        assert!(good.is_good());
        assert!(good.message().contains("vmc_acme_****_"), "shows the masked key only: {}", good.message());
        assert!(!good.message().contains(&k));
    }

    #[test]
    fn step_one_needs_a_valid_key_and_a_reachable_console() {
        let mut w = Wizard::new();
        assert_eq!(w.step, Step::Key);
        assert!(!w.can_back());
        assert!(w.next_action().is_err());
        let k = key();
        w.set_key_text(&k);
        assert_eq!(w.next_action().unwrap_err(), "Check the connection to the console first");
        assert!(w.can_check_key());
        w.key_check_started();
        assert!(!w.can_check_key());
        w.key_check_done(&k, false, "No route to console.acme — is a proxy needed?");
        assert!(w.next_action().unwrap_err().contains("proxy"));
        w.key_check_started();
        w.key_check_done(&k, true, "The console answered in 84 ms");
        assert_eq!(w.next_action(), Ok(NextAction::SaveKey));
        w.set_key_text(&format!("{k} "));
        assert_eq!(w.key_check, Check::Idle, "editing the key invalidates its check");
        w.key_check_done(&k, true, "late answer for the old text");
        assert_eq!(w.key_check, Check::Idle);
    }

    #[test]
    fn walking_all_four_steps_and_back() {
        let mut w = Wizard::new();
        let k = key();
        w.set_key_text(&k);
        w.key_check_started();
        w.key_check_done(&k, true, "ok");
        let a = w.next_action().unwrap();
        w.advance(&a);
        assert_eq!((w.step, w.key_saved, w.key_text.as_str()), (Step::Name, true, ""));
        assert_eq!(w.next_action().unwrap_err(), "Give this connector a name");
        w.name = "Warehouse SAP".into();
        w.advance(&w.next_action().unwrap());
        assert_eq!(w.step, Step::Database);
        w.set_form(form());
        assert_eq!(w.next_action().unwrap_err(), "Test the connection first");
        w.db_test_started();
        assert!(w.can_test_db().is_err());
        w.db_test_done(&form(), false, "password authentication failed for user \"reader\"");
        assert!(w.next_action().unwrap_err().starts_with("The test failed: password"));
        w.db_test_started();
        w.db_test_done(&form(), true, "PostgreSQL 15.8, read-only session");
        assert_eq!(w.next_action(), Ok(NextAction::SaveDatabase));
        let mut edited = form();
        edited.port = Some(5433);
        w.set_form(edited);
        assert_eq!(w.next_action().unwrap_err(), "Test the connection first", "an edit needs a new test");
        w.set_form(form());
        w.db_test_started();
        w.db_test_done(&form(), true, "ok");
        w.advance(&w.next_action().unwrap());
        assert_eq!((w.step, w.next_label()), (Step::Review, "Approve"));
        w.set_make_private("hr.salaries", true);
        w.set_make_private("public.x", true);
        w.set_make_private("public.x", false);
        assert_eq!(w.make_private, ["hr.salaries"]);
        w.back();
        assert_eq!(w.step, Step::Database);
        assert_eq!(w.next_action(), Ok(NextAction::KeepDatabase), "saved and unchanged: no new test needed");
        w.advance(&NextAction::KeepDatabase);
        w.advance(&NextAction::Approve);
        assert!(w.finished);
        assert_eq!(dots(Step::Database), [DotState::Done, DotState::Done, DotState::Current, DotState::Todo]);
    }

    #[test]
    fn progress_resumes_at_the_same_step_and_holds_no_secrets() {
        let dir = std::env::temp_dir().join(format!("mc-gui-wizard-{}", std::process::id()));
        let k = key();
        let mut w = Wizard::new();
        w.set_key_text(&k);
        w.key_check_started();
        w.key_check_done(&k, true, "ok");
        w.advance(&NextAction::SaveKey);
        w.name = "Warehouse SAP".into();
        w.advance(&NextAction::SaveName);
        w.set_form(form());
        w.progress().save(&dir).unwrap();
        let text = fs::read_to_string(Progress::path(&dir)).unwrap();
        assert!(!text.contains("hunter2-password"), "no password in the progress file: {text}");
        assert!(!text.contains(&k[9..]), "no key in the progress file");
        let back = Wizard::resume(&Progress::load(&dir));
        assert_eq!((back.step, back.key_saved, back.name.as_str()), (Step::Database, true, "Warehouse SAP"));
        assert_eq!(back.form.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(back.form.password, None);
        assert_eq!(back.next_action().unwrap_err(), "Test the connection first");
        let mut first = Wizard::resume(&back.progress());
        first.back();
        first.back();
        assert_eq!(first.next_action(), Ok(NextAction::KeepKey), "a stored key needs no new paste");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resume_never_skips_a_step_that_was_not_done() {
        let p = Progress { step: Some(Step::Review), key_saved: false, ..Default::default() };
        assert_eq!(Wizard::resume(&p).step, Step::Key);
        let p = Progress {
            step: Some(Step::Review),
            key_saved: true,
            connector_name: "x".into(),
            ..Default::default()
        };
        assert_eq!(Wizard::resume(&p).step, Step::Database);
        let missing = Progress::load(Path::new("/nonexistent/mc-gui"));
        assert_eq!(missing, Progress::default());
    }
}
