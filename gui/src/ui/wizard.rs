//! The setup wizard window (spec §3.2): step dots, one page per step, Back / Next.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fltk::enums::{Align, CallbackTrigger, Font, FrameType};
use fltk::prelude::*;
use fltk::{button, draw, frame, group, input, window};

use super::Msg;
use super::dbform::DbFormWidgets;
use super::style::{self, c};
use crate::model::layout;
use crate::model::status::APP_NAME;
use crate::model::wizard::{DotState, Step, dots};

type Tx = crossbeam_channel::Sender<Msg>;

fn send(tx: &Tx, m: Msg) {
    let _ = tx.send(m);
    fltk::app::awake();
}

/// Geometry of the wizard (the screenshot harness clicks these).
pub mod geometry {
    /// Key field (step 1) and name field (step 2): x, y, w, h.
    pub const MAIN_FIELD: (i32, i32, i32, i32) = (40, 150, 560, 32);
    /// "Check connection" (step 1).
    pub const CHECK: (i32, i32, i32, i32) = (40, 270, 170, 32);
    /// Back.
    pub const BACK: (i32, i32, i32, i32) = (416, 428, 90, 34);
    /// Next / Approve.
    pub const NEXT: (i32, i32, i32, i32) = (514, 428, 100, 34);
    /// Step 3 form's top-left and width.
    pub const FORM: (i32, i32, i32) = (40, 104, 560);
    /// "Test connection" (step 3).
    pub const TEST: (i32, i32, i32, i32) = (40, 318, 150, 30);
    /// First "make private" checkbox row (step 4) and the row height.
    pub const REVIEW_TOP: i32 = 140;
    /// Height of a review row.
    pub const REVIEW_ROW: i32 = 30;
}

/// Row height of the database form (as `dbform::ROW`).
pub const FORM_ROW: i32 = super::dbform::ROW;

/// The wizard's widgets.
#[derive(Debug, Clone)]
pub struct WizardWin {
    /// The window.
    pub win: window::Window,
    /// One group per step.
    pub pages: Vec<group::Group>,
    /// The step dots' state.
    pub dots: Rc<Cell<[DotState; 4]>>,
    /// The dots widget.
    pub dots_frame: frame::Frame,
    /// Step 1: the key (never shown in full).
    pub key: input::SecretInput,
    /// Step 1: its check.
    pub key_msg: frame::Frame,
    /// Step 1: cloud URL.
    pub cloud_url: input::Input,
    /// Step 1: spinner.
    pub key_spinner: frame::Frame,
    /// Step 1: verdict.
    pub key_verdict: frame::Frame,
    /// Step 1: check button.
    pub check: button::Button,
    /// Step 2: name.
    pub name: input::Input,
    /// Step 2: its check.
    pub name_msg: frame::Frame,
    /// Step 3: the form.
    pub form: DbFormWidgets,
    /// Step 3: spinner.
    pub db_spinner: frame::Frame,
    /// Step 3: verdict.
    pub db_verdict: frame::Frame,
    /// Step 4: the list, inside a scroll (only this inner group is ever cleared: clearing the
    /// scroll itself would delete its scrollbars).
    pub review: group::Group,
    /// Step 4: checkboxes (one per table, rebuilt on each discovery).
    pub review_checks: Rc<RefCell<Vec<button::CheckButton>>>,
    /// Step 4: summary.
    pub review_summary: frame::Frame,
    /// Back.
    pub back: button::Button,
    /// Next / Approve.
    pub next: button::Button,
    /// Why Next is not possible yet.
    pub hint: frame::Frame,
}

fn b(tx: &Tx, r: (i32, i32, i32, i32), lbl: &str, primary: bool, m: Msg) -> button::Button {
    let mut bt = style::button(r.0, r.1, r.2, r.3, lbl, primary);
    let t = tx.clone();
    bt.set_callback(move |_| send(&t, m.clone()));
    bt
}

impl WizardWin {
    /// Builds the wizard window (hidden).
    pub fn new(tx: &Tx, spin_phase: Rc<Cell<f64>>) -> Self {
        let (ww, wh) = layout::WIZARD;
        let mut win = window::Window::new(120, 80, ww, wh, None);
        win.set_label(&format!("{APP_NAME} Setup — Step 1 of 4"));
        win.set_color(c(style::WHITE));
        win.set_xclass("mini-connector");
        let mut heading = style::title(40, 12, 560, 30, "Set up Mini Connector");
        heading.set_label_size(18);
        let dots_state = Rc::new(Cell::new(dots(Step::Key)));
        let ds = dots_state.clone();
        let mut dots_frame = frame::Frame::new(20, 46, 600, 50, None);
        dots_frame.draw(move |w| {
            let st = ds.get();
            let n = Step::ALL.len() as i32;
            let step_w = w.w() / n;
            for (i, s) in Step::ALL.iter().enumerate() {
                let cx = w.x() + step_w * i as i32 + step_w / 2;
                let cy = w.y() + 14;
                if i + 1 < Step::ALL.len() {
                    draw::set_draw_color(c(if st[i + 1] != DotState::Todo {
                        style::ACCENT
                    } else {
                        style::LINE
                    }));
                    draw::draw_rectf(cx + 14, cy - 1, step_w - 28, 2);
                }
                let (fill, text) = match st[i] {
                    DotState::Done => (style::ACCENT, style::WHITE),
                    DotState::Current => (style::ACCENT, style::WHITE),
                    DotState::Todo => (style::LINE, style::MUTED),
                };
                draw::set_draw_color(c(fill));
                draw::draw_pie(cx - 11, cy - 11, 22, 22, 0.0, 360.0);
                draw::set_draw_color(c(text));
                draw::set_font(Font::HelveticaBold, 12);
                let mark = if st[i] == DotState::Done { "✓".to_owned() } else { s.number().to_string() };
                draw::draw_text2(&mark, cx - 11, cy - 11, 22, 22, Align::Center);
                draw::set_draw_color(c(if st[i] == DotState::Current { style::TEXT } else { style::MUTED }));
                draw::set_font(
                    if st[i] == DotState::Current { Font::HelveticaBold } else { Font::Helvetica },
                    12,
                );
                draw::draw_text2(s.title(), cx - step_w / 2, cy + 14, step_w, 18, Align::Center);
            }
        });
        let mut pages = Vec::new();
        let (fx, fy, fw, fh) = geometry::MAIN_FIELD;

        // 1 · key.
        let p = group::Group::new(0, 100, ww, 320, None);
        let mut intro = style::label(
            fx,
            108,
            fw,
            22,
            "Paste the API key from the cloud console's \"Add Mini Connector\" page.",
        );
        intro.set_label_color(c(style::MUTED));
        let mut key = style::secret_field(fx, fy, fw, fh, "API key");
        key.set_trigger(CallbackTrigger::Changed);
        let t = tx.clone();
        key.set_callback(move |_| send(&t, Msg::WizKeyChanged));
        let key_msg = style::caption(fx, fy + fh + 2, fw, 20, "");
        let cloud_url = style::field(fx, 226, fw, 28, "Cloud URL");
        let check = b(tx, geometry::CHECK, "Check connection", false, Msg::WizCheckKey);
        let key_spinner = style::spinner(
            geometry::CHECK.0 + geometry::CHECK.2 + 10,
            geometry::CHECK.1 + 4,
            24,
            spin_phase.clone(),
        );
        let mut key_verdict = style::label(250, geometry::CHECK.1, 350, 60, "");
        key_verdict.set_align(Align::Left | Align::Inside | Align::Wrap | Align::Top);
        p.end();
        pages.push(p);

        // 2 · name.
        let mut p = group::Group::new(0, 100, ww, 320, None);
        let mut intro = style::label(fx, 108, fw, 22, "Give this connector a name your team will recognise.");
        intro.set_label_color(c(style::MUTED));
        let mut name = style::field(fx, fy, fw, fh, "Connector name");
        name.set_trigger(CallbackTrigger::Changed);
        let t = tx.clone();
        name.set_callback(move |_| send(&t, Msg::WizNameChanged));
        let name_msg = style::caption(fx, fy + fh + 2, fw, 20, "");
        p.end();
        p.hide();
        pages.push(p);

        // 3 · database.
        let mut p = group::Group::new(0, 100, ww, 320, None);
        let (dx, dy, dw) = geometry::FORM;
        let mut form = DbFormWidgets::new(dx, dy, dw, 0);
        let t = tx.clone();
        form.on_change(move || send(&t, Msg::WizFormChanged));
        let tb = geometry::TEST;
        b(tx, tb, "Test connection", false, Msg::WizTest);
        let db_spinner = style::spinner(tb.0 + tb.2 + 10, tb.1 + 3, 24, spin_phase);
        let mut db_verdict = style::label(tb.0 + tb.2 + 44, tb.1 - 4, dw - tb.2 - 44, 40, "");
        db_verdict.set_align(Align::Left | Align::Inside | Align::Wrap);
        let mut notice = style::tinted_box(dx, 356, dw, 62, "", style::NOTICE_TINT);
        notice.set_label("Credentials are encrypted and stored only on this device; they never go to the cloud, which receives only table and column names. Only WSS connections to the console are made.");
        notice.set_label_color(c(0x1E5A36));
        p.end();
        p.hide();
        pages.push(p);

        // 4 · review.
        let mut p = group::Group::new(0, 100, ww, 320, None);
        let mut intro = style::label(
            fx,
            104,
            fw,
            22,
            "These tables will be shared with the cloud (names and column types only).",
        );
        intro.set_label_color(c(style::MUTED));
        let mut caption =
            style::caption(fx, 122, fw, 18, "Tick a table to keep it private: the cloud will not see it.");
        caption.set_label_size(12);
        let mut review = group::Scroll::new(fx, geometry::REVIEW_TOP, fw, 240, None);
        review.set_frame(FrameType::BorderBox);
        review.set_color(c(style::WHITE));
        review.set_type(group::ScrollType::Vertical);
        let review_inner = group::Group::new(fx, geometry::REVIEW_TOP, fw - 16, 236, None);
        review_inner.end();
        review.end();
        let review_summary = style::caption(fx, 384, fw, 22, "");
        p.end();
        p.hide();
        pages.push(p);

        let back = b(tx, geometry::BACK, "Back", false, Msg::WizBack);
        let next = b(tx, geometry::NEXT, "Next", true, Msg::WizNext);
        let mut hint = style::caption(40, 428, 366, 34, "");
        hint.set_align(Align::Left | Align::Inside | Align::Wrap);
        win.end();
        let t = tx.clone();
        win.set_callback(move |_| {
            if fltk::app::event() == fltk::enums::Event::Close {
                send(&t, Msg::WizClose);
            }
        });
        Self {
            win,
            pages,
            dots: dots_state,
            dots_frame,
            key,
            key_msg,
            cloud_url,
            key_spinner,
            key_verdict,
            check,
            name,
            name_msg,
            form,
            db_spinner,
            db_verdict,
            review: review_inner,
            review_checks: Rc::new(RefCell::new(Vec::new())),
            review_summary,
            back,
            next,
            hint,
        }
    }

    /// Rebuilds the review list: one "keep private" checkbox per table.
    pub fn set_review(&mut self, tx: &Tx, items: &[crate::model::schema::ReviewItem], ticked: &[String]) {
        self.review.clear();
        self.review.begin();
        let (x, w) = (self.review.x(), self.review.w());
        let mut checks = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let y = geometry::REVIEW_TOP + 4 + i as i32 * geometry::REVIEW_ROW;
            let mut cb = style::check(x + 8, y, w - 180, geometry::REVIEW_ROW - 4, &it.table);
            cb.set_checked(it.private || ticked.contains(&it.table));
            if it.private {
                cb.deactivate();
                cb.set_label(&format!("{}  (private already)", it.table));
            }
            let t = tx.clone();
            let table = it.table.clone();
            cb.set_callback(move |b| send(&t, Msg::WizPrivate(table.clone(), b.is_checked())));
            let mut s = style::caption(x + w - 170, y, 150, geometry::REVIEW_ROW - 4, &it.summary);
            s.set_align(Align::Right | Align::Inside);
            checks.push(cb);
        }
        self.review.end();
        let h = (items.len() as i32 * geometry::REVIEW_ROW + 8).max(236);
        let (rx, ry, rw) = (self.review.x(), self.review.y(), self.review.w());
        self.review.resize(rx, ry, rw, h);
        *self.review_checks.borrow_mut() = checks;
        self.review.redraw();
    }

    /// Shows one step's page.
    pub fn show_step(&mut self, step: Step) {
        for (i, p) in self.pages.iter_mut().enumerate() {
            if i + 1 == step.number() {
                p.show();
            } else {
                p.hide();
            }
        }
        self.dots.set(dots(step));
        self.dots_frame.redraw();
        self.win.set_label(&format!("{APP_NAME} Setup — Step {} of 4 · {}", step.number(), step.title()));
        self.win.redraw();
    }
}
