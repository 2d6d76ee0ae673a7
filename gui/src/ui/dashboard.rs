//! The dashboard window's widgets: sidebar, header with the status, banner, and the six
//! sections. Built once; `super::App` fills them from the model.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fltk::enums::{Align, CallbackTrigger, Font, FrameType};
use fltk::prelude::*;
use fltk::{button, draw, frame, group, input, menu, misc, text, tree, window};

use super::Msg;
use super::dbform::DbFormWidgets;
use super::style::{self, DataTable, DotLook, c};
use crate::model::activity::StatusFilter;
use crate::model::forms::LOG_LEVELS;
use crate::model::layout::{self, NAV_H, NAV_TOP, SIDEBAR_W};
use crate::model::status::{APP_NAME, Animation};
use crate::model::{Section, schema};

type Tx = crossbeam_channel::Sender<Msg>;

fn send(tx: &Tx, m: Msg) {
    let _ = tx.send(m);
    fltk::app::awake();
}

/// Overview widgets.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The four cards' texts.
    pub cards: Vec<Rc<RefCell<(String, String, String)>>>,
    /// The card widgets.
    pub card_frames: Vec<frame::Frame>,
    /// Recent commands.
    pub recent: DataTable,
    /// Latency sparkline.
    pub chart: misc::Chart,
    /// Its caption.
    pub chart_caption: frame::Frame,
}

/// Activity Log widgets.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Date filter.
    pub date: input::Input,
    /// Status filter.
    pub status: menu::Choice,
    /// Workflow filter.
    pub workflow: input::Input,
    /// "N of M commands".
    pub count: frame::Frame,
    /// The feed.
    pub table: DataTable,
}

/// Connections widgets.
#[derive(Debug, Clone)]
pub struct Connections {
    /// The list.
    pub table: DataTable,
    /// The add/edit panel.
    pub panel: group::Group,
    /// Its title ("Add a connection" / "Edit erp").
    pub panel_title: frame::Frame,
    /// The form.
    pub form: DbFormWidgets,
    /// Test spinner.
    pub spinner: frame::Frame,
    /// Verdict line.
    pub verdict: frame::Frame,
}

/// Schema Browser widgets.
#[derive(Debug, Clone)]
pub struct SchemaW {
    /// Which connection.
    pub connection: menu::Choice,
    /// Tables and columns.
    pub tree: tree::Tree,
    /// Details of the selection.
    pub details: DataTable,
    /// Sample values.
    pub samples: DataTable,
    /// Diff buffer.
    pub diff_buf: text::TextBuffer,
    /// Mark private / public.
    pub private_btn: button::Button,
    /// Status line.
    pub message: frame::Frame,
}

/// Settings widgets.
#[derive(Debug, Clone)]
pub struct SettingsW {
    /// Connector name.
    pub name: input::Input,
    /// Masked key.
    pub key: frame::Frame,
    /// Cloud URL.
    pub cloud_url: input::Input,
    /// Proxy.
    pub proxy: input::Input,
    /// CA file.
    pub ca: input::Input,
    /// Log level.
    pub log_level: menu::Choice,
    /// Auto-start.
    pub auto_start: button::CheckButton,
    /// Auto-update.
    pub auto_update: button::CheckButton,
    /// PIN state.
    pub pin: frame::Frame,
    /// Status line.
    pub message: frame::Frame,
    /// Config path.
    pub config_path: frame::Frame,
}

/// Diagnostics widgets.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The checks.
    pub table: DataTable,
    /// "Run checks": the `doctor` checks.
    pub run_checks: button::Button,
    /// Latency graph.
    pub chart: misc::Chart,
    /// Its caption.
    pub chart_caption: frame::Frame,
    /// Error log.
    pub errors: DataTable,
    /// "Export diagnostic bundle…".
    pub bundle: button::Button,
    /// Where the last bundle went (or why not).
    pub bundle_message: frame::Frame,
}

/// The dashboard window.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The window.
    pub win: window::Window,
    /// Sidebar entries.
    pub nav: Vec<button::Button>,
    /// Which one is selected.
    pub selected: Rc<Cell<usize>>,
    /// Sidebar status dot.
    pub dot: frame::Frame,
    /// Header status dot.
    pub header_dot: frame::Frame,
    /// Both dots' look.
    pub dot_look: Rc<Cell<DotLook>>,
    /// Header status label.
    pub status_label: frame::Frame,
    /// Header reason line.
    pub status_detail: frame::Frame,
    /// Section title.
    pub section_title: frame::Frame,
    /// Pause/Resume.
    pub pause: button::Button,
    /// The banner.
    pub banner: group::Group,
    /// Its text.
    pub banner_text: frame::Frame,
    /// One group per section.
    pub sections: Vec<group::Group>,
    /// Overview.
    pub overview: Overview,
    /// Activity.
    pub activity: Activity,
    /// Connections.
    pub connections: Connections,
    /// Schema.
    pub schema: SchemaW,
    /// Settings.
    pub settings: SettingsW,
    /// Diagnostics.
    pub diagnostics: Diagnostics,
    /// Spinner phase shared by the spinners.
    pub spin_phase: Rc<Cell<f64>>,
}

fn chart(x: i32, y: i32, w: i32, h: i32) -> misc::Chart {
    let mut ch = misc::Chart::new(x, y, w, h, None);
    ch.set_type(misc::ChartType::Line);
    ch.set_frame(FrameType::BorderBox);
    ch.set_color(c(style::WHITE));
    ch.set_maximum_size(crate::model::latency::POINTS as i32);
    ch.set_text_size(10);
    ch
}

impl Dashboard {
    /// Builds the window (hidden).
    pub fn new(tx: &Tx) -> Self {
        let (ww, wh) = layout::WINDOW;
        let mut win = window::Window::new(80, 60, ww, wh, None);
        win.set_label(&format!("{APP_NAME} — Starting"));
        win.set_color(c(style::WHITE));
        win.size_range(layout::MIN_WINDOW.0, layout::MIN_WINDOW.1, 0, 0);
        win.set_xclass("mini-connector");

        // Sidebar.
        let mut side = group::Group::new(0, 0, SIDEBAR_W, wh, None);
        side.set_frame(FrameType::FlatBox);
        side.set_color(c(style::PANEL));
        let dot_look = Rc::new(Cell::new(DotLook { rgb: 0x2F6FDB, animation: Animation::Spin, phase: 0.0 }));
        let (dx, dy, dr) = layout::STATUS_DOT;
        let dot = style::status_dot(dx, dy, dr, dot_look.clone());
        let mut brand = style::label(dx + 16, dy - 14, SIDEBAR_W - dx - 20, 28, APP_NAME);
        brand.set_label_font(Font::HelveticaBold);
        brand.set_label_size(14);
        let selected = Rc::new(Cell::new(0usize));
        let mut nav = Vec::new();
        for (i, s) in Section::ALL.iter().enumerate() {
            let mut b = button::Button::new(0, NAV_TOP + NAV_H * i as i32, SIDEBAR_W, NAV_H, None);
            b.set_label(s.title());
            b.set_frame(FrameType::FlatBox);
            b.clear_visible_focus();
            let sel = selected.clone();
            let title = s.title();
            b.draw(move |w| {
                let on = sel.get() == i;
                draw::draw_rect_fill(
                    w.x(),
                    w.y(),
                    w.w(),
                    w.h(),
                    c(if on { style::SELECTED } else { style::PANEL }),
                );
                if on {
                    draw::draw_rect_fill(w.x(), w.y() + 6, 3, w.h() - 12, c(style::ACCENT));
                }
                draw::set_font(if on { Font::HelveticaBold } else { Font::Helvetica }, style::BODY);
                draw::set_draw_color(c(if on { style::TEXT } else { 0x3A3F47 }));
                draw::draw_text2(title, w.x() + 24, w.y(), w.w() - 28, w.h(), Align::Left);
            });
            let t = tx.clone();
            let section = *s;
            b.set_callback(move |_| send(&t, Msg::Nav(section)));
            nav.push(b);
        }
        let mut pause = style::button(16, wh - layout::PAUSE_FROM_BOTTOM, SIDEBAR_W - 32, 36, "Pause", false);
        let t = tx.clone();
        pause.set_callback(move |_| send(&t, Msg::TogglePause));
        let mut filler = frame::Frame::new(0, NAV_TOP + NAV_H * 6, SIDEBAR_W, 10, None);
        filler.set_frame(FrameType::NoBox);
        side.resizable(&filler);
        side.end();

        // Header.
        let cx = SIDEBAR_W + 24;
        let cw = ww - SIDEBAR_W - 48;
        let header = group::Group::new(SIDEBAR_W, 0, ww - SIDEBAR_W, 52, None);
        let section_title = style::title(cx, 14, 300, 28, "Overview");
        let header_dot = style::status_dot(ww - 330, 28, 6, dot_look.clone());
        let mut status_label = style::label(ww - 316, 10, 300, 20, "Starting");
        status_label.set_label_font(Font::HelveticaBold);
        let mut status_detail = style::caption(ww - 316, 28, 300, 18, "");
        status_detail.set_align(Align::Left | Align::Inside | Align::Clip);
        let mut hfill = frame::Frame::new(cx + 310, 0, 10, 52, None);
        hfill.set_frame(FrameType::NoBox);
        header.resizable(&hfill);
        header.end();

        // Banner.
        let mut banner = group::Group::new(cx, 52, cw, 34, None);
        banner.set_frame(FrameType::RFlatBox);
        banner.set_color(c(0xFFF4D6));
        let banner_text = style::label(cx + 12, 52, cw - 60, 34, "");
        let mut dismiss = style::button(cx + cw - 40, 56, 32, 26, "×", false);
        dismiss.set_frame(FrameType::FlatBox);
        dismiss.set_color(c(0xFFF4D6));
        let t = tx.clone();
        dismiss.set_callback(move |_| send(&t, Msg::DismissBanner));
        banner.resizable(&banner_text.clone());
        banner.end();
        banner.hide();

        // Sections.
        let (sy, sh) = (96, wh - 96 - 16);
        let spin_phase = Rc::new(Cell::new(0.0));
        let mut sections = Vec::new();

        // Overview.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let card_w = (cw - 3 * 16) / 4;
        let mut cards = Vec::new();
        let mut card_frames = Vec::new();
        for i in 0..4 {
            let content = Rc::new(RefCell::new((String::new(), "–".to_owned(), String::new())));
            card_frames.push(style::card(cx + i * (card_w + 16), sy, card_w, 96, content.clone()));
            cards.push(content);
        }
        let mut h = style::label(cx, sy + 112, 300, 24, "Last activity");
        h.set_label_font(Font::HelveticaBold);
        let mut recent = DataTable::new(cx, sy + 140, cw, 190);
        recent.set(style::TableData::default());
        let mut h2 = style::label(cx, sy + 346, 300, 24, "Latency (5 min)");
        h2.set_label_font(Font::HelveticaBold);
        let chart_caption = style::caption(cx + 310, sy + 346, cw - 310, 24, "");
        let ov_chart = chart(cx, sy + 374, cw, sh - 374);
        g.end();
        sections.push(g);
        let overview = Overview { cards, card_frames, recent, chart: ov_chart, chart_caption };

        // Activity.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let mut date = style::field(cx, sy + 16, 140, 28, "Date (YYYY-MM-DD)");
        date.set_trigger(CallbackTrigger::Changed);
        let t = tx.clone();
        date.set_callback(move |_| send(&t, Msg::FilterChanged));
        let mut today = style::button(cx + 148, sy + 16, 64, 28, "Today", false);
        let t = tx.clone();
        today.set_callback(move |_| send(&t, Msg::FilterToday));
        let labels: Vec<&str> = StatusFilter::ALL.iter().map(|s| s.label()).collect();
        let mut status = style::choice(cx + 228, sy + 16, 160, 28, "Status", &labels);
        let t = tx.clone();
        status.set_callback(move |_| send(&t, Msg::FilterChanged));
        let mut workflow = style::field(cx + 404, sy + 16, 220, 28, "Workflow");
        workflow.set_trigger(CallbackTrigger::Changed);
        let t = tx.clone();
        workflow.set_callback(move |_| send(&t, Msg::FilterChanged));
        let mut count = style::caption(cx + 640, sy + 16, cw - 640, 28, "");
        count.set_align(Align::Right | Align::Inside);
        let table = DataTable::new(cx, sy + 60, cw, sh - 60);
        g.end();
        sections.push(g);
        let activity = Activity { date, status, workflow, count, table };

        // Connections.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let mut conn_table = DataTable::new(cx, sy, cw, 150);
        let t = tx.clone();
        conn_table.table.set_callback({
            let d = conn_table.data.clone();
            move |tb| {
                if tb.callback_context() == fltk::table::TableContext::Cell {
                    d.borrow_mut().selected = Some(tb.callback_row() as usize);
                    tb.redraw();
                    send(&t, Msg::ConnSelected);
                }
            }
        });
        for (i, (lbl, m)) in [
            ("Add connection", Msg::ConnAdd),
            ("Edit…", Msg::ConnEdit),
            ("Test", Msg::ConnTestSelected),
            ("Remove…", Msg::ConnRemove),
        ]
        .into_iter()
        .enumerate()
        {
            let mut b = style::button(cx + i as i32 * 136, sy + 160, 128, 30, lbl, i == 0);
            let t = tx.clone();
            b.set_callback(move |_| send(&t, m.clone()));
        }
        let mut panel = group::Group::new(cx, sy + 200, cw, sh - 200, None);
        panel.set_frame(FrameType::FlatBox);
        let mut panel_title = style::label(cx, sy + 204, cw, 24, "Add a connection");
        panel_title.set_label_font(Font::HelveticaBold);
        let mut form = DbFormWidgets::new(cx, sy + 228, cw.min(620), 78);
        let t = tx.clone();
        form.on_change(move || send(&t, Msg::ConnFormChanged));
        let fx = cx + cw.min(620) + 16;
        let mut test = style::button(fx, sy + 244, 120, 30, "Test connection", false);
        let t = tx.clone();
        test.set_callback(move |_| send(&t, Msg::ConnTestForm));
        let spinner = style::spinner(fx + 128, sy + 247, 24, spin_phase.clone());
        let mut save = style::button(fx, sy + 284, 120, 30, "Save", true);
        let t = tx.clone();
        save.set_callback(move |_| send(&t, Msg::ConnSave));
        let mut cancel = style::button(fx, sy + 324, 120, 30, "Cancel", false);
        let t = tx.clone();
        cancel.set_callback(move |_| send(&t, Msg::ConnCancel));
        let mut verdict = style::label(fx, sy + 360, (cx + cw - fx).max(120), 80, "");
        verdict.set_align(Align::Left | Align::Inside | Align::Wrap | Align::Top);
        panel.end();
        panel.hide();
        g.end();
        sections.push(g);
        let connections = Connections { table: conn_table, panel, panel_title, form, spinner, verdict };

        // Schema Browser.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let mut connection = style::choice(cx, sy + 16, 200, 28, "Connection", &[]);
        let t = tx.clone();
        connection.set_callback(move |_| send(&t, Msg::SchemaConnection));
        let mut x = cx + 216;
        let mut mk = |lbl: &str, w: i32, m: Msg, primary: bool| {
            let mut b = style::button(x, sy + 16, w, 28, lbl, primary);
            x += w + 8;
            let t = tx.clone();
            b.set_callback(move |_| send(&t, m.clone()));
            b
        };
        let _rediscover = mk("Re-discover", 110, Msg::SchemaRediscover, false);
        let _compare = mk("Compare with cloud", 150, Msg::SchemaCompare, false);
        let private_btn = mk("Mark private", 120, Msg::SchemaTogglePrivate, false);
        let _approve = mk("Approve", 100, Msg::SchemaApprove, true);
        let tree_w = cw * 45 / 100;
        let mut st = tree::Tree::new(cx, sy + 56, tree_w, sh - 56, None);
        st.set_show_root(false);
        st.set_frame(FrameType::BorderBox);
        st.set_color(c(style::WHITE));
        st.set_item_label_size(style::BODY);
        st.set_connector_style(tree::TreeConnectorStyle::None);
        st.set_select_mode(tree::TreeSelect::Single);
        let t = tx.clone();
        st.set_callback(move |tr| {
            if tr.callback_reason() == tree::TreeReason::Selected
                && let Some(item) = tr.callback_item()
                && let Ok(path) = tr.item_pathname(&item)
            {
                send(&t, Msg::SchemaSelect(path));
            }
        });
        st.end();
        let dx = cx + tree_w + 16;
        let dw = cw - tree_w - 16;
        let details = DataTable::new(dx, sy + 56, dw, 170);
        let mut sample_note = style::caption(dx, sy + 230, dw, 34, schema::SAMPLE_NOTE);
        sample_note.set_align(Align::Left | Align::Inside | Align::Wrap);
        let samples = DataTable::new(dx, sy + 266, dw, 150);
        let mut message = style::caption(dx, sy + 420, dw, 20, "");
        message.set_label_color(c(style::TEXT));
        let diff_buf = text::TextBuffer::default();
        let mut diff = text::TextDisplay::new(dx, sy + 444, dw, sh - 444, None);
        diff.set_buffer(diff_buf.clone());
        diff.set_frame(FrameType::BorderBox);
        diff.set_text_size(12);
        diff.set_text_font(Font::Courier);
        g.end();
        sections.push(g);
        let schema_w = SchemaW { connection, tree: st, details, samples, diff_buf, private_btn, message };

        // Settings.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let fw = 420;
        let name = style::field(cx, sy + 16, fw, 28, "Connector name");
        let mut key_caption = style::caption(cx, sy + 56, fw, 18, "API key");
        key_caption.set_label_size(12);
        let mut key = style::label(cx, sy + 74, fw - 110, 28, "");
        key.set_label_font(Font::Courier);
        let mut replace = style::button(cx + fw - 100, sy + 74, 100, 28, "Replace…", false);
        let t = tx.clone();
        replace.set_callback(move |_| send(&t, Msg::ReplaceKey));
        let cloud_url = style::field(cx, sy + 128, fw, 28, "Cloud URL");
        let proxy = style::field(cx, sy + 184, fw, 28, "Proxy URL (empty: direct)");
        let ca = style::field(cx, sy + 240, fw, 28, "Extra CA certificate file (PEM)");
        let log_level = style::choice(cx, sy + 296, 160, 28, "Log verbosity", &LOG_LEVELS);
        let auto_start = style::check(cx, sy + 336, fw, 24, "Start automatically with this computer");
        let auto_update = style::check(cx, sy + 362, fw, 24, "Install updates automatically");
        let mut save_s = style::button(cx, sy + 400, 120, 30, "Save settings", true);
        let t = tx.clone();
        save_s.set_callback(move |_| send(&t, Msg::SettingsSave));
        let mut message_s = style::label(cx + 132, sy + 400, fw, 30, "");
        message_s.set_align(Align::Left | Align::Inside | Align::Wrap);
        let rx = cx + fw + 48;
        let rw = (cw - fw - 48).max(200);
        let mut h = style::label(rx, sy + 16, rw, 24, "Local PIN");
        h.set_label_font(Font::HelveticaBold);
        let mut pin = style::caption(rx, sy + 40, rw, 40, "");
        pin.set_align(Align::Left | Align::Inside | Align::Wrap);
        let mut pin_btn = style::button(rx, sy + 84, 140, 28, "Set PIN…", false);
        let t = tx.clone();
        pin_btn.set_callback(move |_| send(&t, Msg::SetPin));
        let mut h = style::label(rx, sy + 136, rw, 24, "Background service");
        h.set_label_font(Font::HelveticaBold);
        let mut svc_note = style::caption(
            rx,
            sy + 160,
            rw,
            40,
            "Run the agent as a service so it starts with the machine, without anyone logged in.",
        );
        svc_note.set_align(Align::Left | Align::Inside | Align::Wrap);
        let mut svc = style::button(rx, sy + 204, 160, 28, "Install as service", false);
        let t = tx.clone();
        svc.set_callback(move |_| send(&t, Msg::InstallService));
        let mut config_path = style::caption(rx, sy + 250, rw, 40, "");
        config_path.set_align(Align::Left | Align::Inside | Align::Wrap);
        g.end();
        sections.push(g);
        let settings = SettingsW {
            name,
            key,
            cloud_url,
            proxy,
            ca,
            log_level,
            auto_start,
            auto_update,
            pin,
            message: message_s,
            config_path,
        };

        // Diagnostics.
        let g = group::Group::new(cx, sy, cw, sh, None);
        let mut run = style::button(cx, sy, 110, 28, "Run again", false);
        let t = tx.clone();
        run.set_callback(move |_| send(&t, Msg::DiagRefresh));
        let mut run_checks = style::button(cx + 120, sy, 120, 28, "Run checks", false);
        let t = tx.clone();
        run_checks.set_callback(move |_| send(&t, Msg::RunChecks));
        let mut bundle = style::button(cx + cw - 230, sy, 230, 28, "Export diagnostic bundle…", false);
        let t = tx.clone();
        bundle.set_callback(move |_| send(&t, Msg::DiagBundle));
        let mut dt = DataTable::new(cx, sy + 36, cw, 264);
        dt.set(style::TableData::default());
        let mut h = style::label(cx, sy + 306, 200, 24, "Latency (5 min)");
        h.set_label_font(Font::HelveticaBold);
        let d_caption = style::caption(cx + 210, sy + 306, cw - 210, 24, "");
        let d_chart = chart(cx, sy + 332, cw, 96);
        let mut h = style::label(cx, sy + 428, 300, 24, "Last errors and warnings");
        h.set_label_font(Font::HelveticaBold);
        let errors = DataTable::new(cx, sy + 454, cw, sh - 454 - 28);
        let bundle_message = style::caption(cx, sy + sh - 26, cw, 24, "");
        g.end();
        sections.push(g);
        let diagnostics = Diagnostics {
            table: dt,
            run_checks,
            chart: d_chart,
            chart_caption: d_caption,
            errors,
            bundle,
            bundle_message,
        };

        for g in sections.iter_mut().skip(1) {
            g.hide();
        }
        let mut resizer = frame::Frame::new(cx, sy, cw, sh, None);
        resizer.set_frame(FrameType::NoBox);
        resizer.hide();
        win.resizable(&resizer);
        win.end();
        let t = tx.clone();
        win.set_callback(move |_| {
            if fltk::app::event() == fltk::enums::Event::Close {
                send(&t, Msg::CloseWindow);
            }
        });

        Self {
            win,
            nav,
            selected,
            dot,
            header_dot,
            dot_look,
            status_label,
            status_detail,
            section_title,
            pause,
            banner,
            banner_text,
            sections,
            overview,
            activity,
            connections,
            schema: schema_w,
            settings,
            diagnostics,
            spin_phase,
        }
    }

    /// Shows one section.
    pub fn show_section(&mut self, s: Section) {
        self.selected.set(s.index());
        for (i, g) in self.sections.iter_mut().enumerate() {
            if i == s.index() {
                g.show();
            } else {
                g.hide();
            }
        }
        self.section_title.set_label(s.title());
        for b in &mut self.nav {
            b.redraw();
        }
        self.win.redraw();
    }
}
