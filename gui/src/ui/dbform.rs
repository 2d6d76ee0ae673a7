//! The add/edit connection form (spec §3.5.1), shared by the wizard's step 3 and the
//! Connections section: type dropdown, the fields that type needs, "Use Connection String",
//! and the §3.5 security notice in a tinted box.

use fltk::prelude::*;
use fltk::{button, input, menu};

use protocol::control::DatabaseForm;

use super::style::{self, c};
use crate::model::forms::{self, DB_TYPES};

/// The form's widgets.
#[derive(Debug, Clone)]
pub struct DbFormWidgets {
    /// Database type.
    pub kind: menu::Choice,
    /// Connection name.
    pub name: input::Input,
    /// Host.
    pub host: input::Input,
    /// Port.
    pub port: input::Input,
    /// The type the port field was last defaulted for: the default port is filled in when the
    /// type changes, not whenever the field is empty (the user may be retyping it).
    port_kind: i32,
    /// Database name.
    pub database: input::Input,
    /// User.
    pub user: input::Input,
    /// Password (never shown; empty on an edit keeps the stored one).
    pub password: input::SecretInput,
    /// SQLite file.
    pub path: input::Input,
    /// ODBC DSN.
    pub dsn: input::Input,
    /// "Use Connection String".
    pub use_cs: button::CheckButton,
    /// The connection string (without the password).
    pub cs: input::Input,
}

/// Row height of the form's fields.
pub const ROW: i32 = 50;

impl DbFormWidgets {
    /// Builds the form in a `w`-wide column at `(x, y)`: four rows of fields, then the notice
    /// (`notice_h` high; 0 leaves it out).
    pub fn new(x: i32, y: i32, w: i32, notice_h: i32) -> Self {
        let labels: Vec<&str> = DB_TYPES.iter().map(|t| t.label).collect();
        let half = (w - 16) / 2;
        let kind = style::choice(x, y + 16, half, 28, "Database type", &labels);
        let name = style::field(x + half + 16, y + 16, half, 28, "Connection name");
        let r2 = y + ROW + 16;
        let host = style::field(x, r2, half + half / 2, 28, "Host");
        let port = style::field(x + half + half / 2 + 16, r2, half - half / 2, 28, "Port");
        let path = style::field(x, r2, w, 28, "SQLite database file");
        let dsn = style::field(x, r2, half, 28, "ODBC data source (DSN)");
        let cs = style::field(x, r2, w, 28, "Connection string (without the password)");
        let r3 = y + 2 * ROW + 16;
        let database = style::field(x, r3, half, 28, "Database name");
        let user = style::field(x + half + 16, r3, half, 28, "User (read-only is best)");
        let r4 = y + 3 * ROW + 16;
        let password = style::secret_field(x, r4, half, 28, "Password (stays on this computer)");
        let use_cs = style::check(x + half + 16, r4, half, 28, "Use connection string");
        let mut notice = style::tinted_box(
            x,
            y + 4 * ROW + 8,
            w,
            notice_h.max(1),
            forms::SECURITY_NOTICE,
            style::NOTICE_TINT,
        );
        notice.set_label_color(c(0x1E5A36));
        if notice_h == 0 {
            notice.hide();
        }
        let mut me =
            Self { kind, name, host, port, port_kind: -1, database, user, password, path, dsn, use_cs, cs };
        me.apply_type();
        me
    }

    /// The dropdown's type.
    pub fn kind_str(&self) -> &'static str {
        DB_TYPES.get(self.kind.value().max(0) as usize).map_or("postgres", |t| t.kind)
    }

    /// Shows the fields the chosen type needs.
    pub fn apply_type(&mut self) {
        let fs = forms::fields_for(self.kind_str(), self.use_cs.is_checked());
        let show = |w: &mut dyn WidgetExt, on: bool| if on { w.show() } else { w.hide() };
        show(&mut self.host, fs.server && !fs.dsn);
        show(&mut self.port, fs.server && !fs.dsn);
        show(&mut self.database, fs.server && !fs.dsn);
        self.database.set_label(forms::database_label(self.kind_str()));
        show(&mut self.dsn, fs.dsn);
        show(&mut self.user, fs.login);
        show(&mut self.password, fs.login);
        show(&mut self.path, fs.path);
        show(&mut self.use_cs, fs.login);
        show(&mut self.cs, fs.login && self.use_cs.is_checked());
        let kind = self.kind.value();
        if kind != self.port_kind {
            let previous = DB_TYPES.get(self.port_kind.max(0) as usize).and_then(|t| t.port);
            let typed = self.port.value();
            // Replace an empty port or the previous type's default, never one the user typed.
            if typed.is_empty() || previous.is_some_and(|p| p.to_string() == typed) {
                let default = DB_TYPES.get(kind.max(0) as usize).and_then(|t| t.port);
                self.port.set_value(&default.map(|p| p.to_string()).unwrap_or_default());
            }
            self.port_kind = kind;
        }
    }

    /// Reads the form. `Err` when the port is not a number.
    pub fn read(&self) -> Result<DatabaseForm, String> {
        let opt = |s: String| {
            let t = s.trim().to_owned();
            (!t.is_empty()).then_some(t)
        };
        let kind = self.kind_str();
        let fs = forms::fields_for(kind, self.use_cs.is_checked());
        let server = fs.server && !fs.dsn;
        let tally = kind == "tally";
        let mut options = std::collections::BTreeMap::new();
        // Tally's "database" field is the company (config `company`).
        if let Some(company) = opt(self.database.value()).filter(|_| tally) {
            options.insert("company".to_owned(), company.into());
        }
        Ok(DatabaseForm {
            name: self.name.value().trim().to_owned(),
            kind: kind.to_owned(),
            host: if server { opt(self.host.value()) } else { None },
            port: if server { forms::parse_port(&self.port.value())? } else { None },
            database: if server && !tally { opt(self.database.value()) } else { None },
            user: if fs.login { opt(self.user.value()) } else { None },
            password: if fs.login { opt(self.password.value()) } else { None },
            path: if fs.path { opt(self.path.value()) } else { None },
            dsn: if fs.dsn { opt(self.dsn.value()) } else { None },
            connection_string: if fs.login && self.use_cs.is_checked() { opt(self.cs.value()) } else { None },
            ssl_mode: None,
            options,
        })
    }

    /// Fills the form (the password field stays empty: an edit keeps the stored one).
    pub fn fill(&mut self, f: &DatabaseForm) {
        let idx =
            forms::db_type(&f.kind).and_then(|t| DB_TYPES.iter().position(|d| d.kind == t.kind)).unwrap_or(0);
        self.kind.set_value(idx as i32);
        self.name.set_value(&f.name);
        self.host.set_value(f.host.as_deref().unwrap_or(""));
        self.port.set_value(&f.port.map(|p| p.to_string()).unwrap_or_default());
        let company = f.options.get("company").and_then(|c| c.as_str());
        self.database.set_value(f.database.as_deref().or(company).unwrap_or(""));
        self.user.set_value(f.user.as_deref().unwrap_or(""));
        self.password.set_value("");
        self.path.set_value(f.path.as_deref().unwrap_or(""));
        self.dsn.set_value(f.dsn.as_deref().unwrap_or(""));
        self.use_cs.set_checked(f.connection_string.is_some());
        self.cs.set_value(f.connection_string.as_deref().unwrap_or(""));
        self.port_kind = idx as i32;
        self.apply_type();
    }

    /// Calls `cb` whenever anything in the form changes.
    pub fn on_change<F: Fn() + Clone + 'static>(&mut self, cb: F) {
        use fltk::enums::CallbackTrigger;
        for i in [
            &mut self.name,
            &mut self.host,
            &mut self.port,
            &mut self.database,
            &mut self.user,
            &mut self.path,
            &mut self.dsn,
            &mut self.cs,
        ] {
            i.set_trigger(CallbackTrigger::Changed);
            let cb = cb.clone();
            i.set_callback(move |_| cb());
        }
        self.password.set_trigger(CallbackTrigger::Changed);
        let cb2 = cb.clone();
        self.password.set_callback(move |_| cb2());
        let cb3 = cb.clone();
        self.kind.set_callback(move |_| cb3());
        self.use_cs.set_callback(move |_| cb());
    }
}
