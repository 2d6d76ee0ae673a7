//! The look: a small palette, flat boxes, one font family, and the few custom widgets (status
//! dot, spinner, card, data table) every section uses. Widgets draw what they are given.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fltk::enums::{Align, Color, Font, FrameType};
use fltk::prelude::*;
use fltk::{button, draw, frame, input, menu, table};

use crate::model::status::Animation;

/// Neutral palette.
pub const WHITE: u32 = 0xFFFFFF;
/// Sidebar and table header background.
pub const PANEL: u32 = 0xF4F5F7;
/// Selected sidebar entry.
pub const SELECTED: u32 = 0xE6EEF9;
/// Accent (selection bar, primary buttons).
pub const ACCENT: u32 = 0x2F6FDB;
/// Body text.
pub const TEXT: u32 = 0x1F2328;
/// Secondary text.
pub const MUTED: u32 = 0x6B7280;
/// Lines.
pub const LINE: u32 = 0xDADDE2;
/// Zebra rows.
pub const ZEBRA: u32 = 0xF8F9FB;
/// Good / bad / warn text.
pub const GOOD: u32 = 0x2E9E5B;
/// Bad.
pub const BAD: u32 = 0xD64545;
/// Warn.
pub const WARN: u32 = 0xB38600;
/// The §3.5 security notice's tint.
pub const NOTICE_TINT: u32 = 0xEAF3EC;

/// The title of PIN prompts and confirmations (`prompt.rs`): tests find it, and no window
/// pattern of the dashboard or the wizard matches it.
pub const DIALOG_TITLE: &str = "Confirm — Mini Connector";

/// Body size.
pub const BODY: i32 = 13;
/// Section title size.
pub const TITLE: i32 = 18;

/// A colour from `0xRRGGBB`.
pub fn c(rgb: u32) -> Color {
    Color::from_hex(rgb)
}

/// Global defaults: flat, light, one font.
pub fn init() {
    fltk::app::set_scheme(fltk::app::Scheme::Gtk);
    fltk::app::background(0xFF, 0xFF, 0xFF);
    fltk::app::background2(0xFF, 0xFF, 0xFF);
    fltk::app::foreground(0x1F, 0x23, 0x28);
    fltk::app::set_selection_color(0xE6, 0xEE, 0xF9);
    fltk::app::set_font_size(BODY);
    fltk::app::set_visible_focus(false);
    fltk::misc::Tooltip::set_font_size(12);
    // Flat boxes with a light grey line instead of FLTK's black border.
    fltk::app::set_frame_type_cb(FrameType::BorderBox, light_border_box, 1, 1, 2, 2);
}

fn light_border_box(x: i32, y: i32, w: i32, h: i32, fill: Color) {
    draw::draw_rect_fill(x, y, w, h, fill);
    draw::set_draw_color(c(LINE));
    draw::draw_rect(x, y, w, h);
}

/// A plain label.
pub fn label(x: i32, y: i32, w: i32, h: i32, text: &str) -> frame::Frame {
    let mut f = frame::Frame::new(x, y, w, h, None);
    f.set_label(text);
    f.set_align(Align::Left | Align::Inside | Align::Clip);
    f.set_label_size(BODY);
    f.set_label_color(c(TEXT));
    f
}

/// A small grey caption.
pub fn caption(x: i32, y: i32, w: i32, h: i32, text: &str) -> frame::Frame {
    let mut f = label(x, y, w, h, text);
    f.set_label_size(12);
    f.set_label_color(c(MUTED));
    f
}

/// A section title (18 px, bold).
pub fn title(x: i32, y: i32, w: i32, h: i32, text: &str) -> frame::Frame {
    let mut f = label(x, y, w, h, text);
    f.set_label_size(TITLE);
    f.set_label_font(Font::HelveticaBold);
    f
}

/// A flat button; `primary` is filled with the accent colour.
pub fn button(x: i32, y: i32, w: i32, h: i32, text: &str, primary: bool) -> button::Button {
    let mut b = button::Button::new(x, y, w, h, None);
    b.set_label(text);
    b.set_frame(FrameType::RFlatBox);
    b.set_down_frame(FrameType::RFlatBox);
    b.set_label_size(BODY);
    if primary {
        b.set_color(c(ACCENT));
        b.set_selection_color(c(0x2457B0));
        b.set_label_color(c(WHITE));
    } else {
        b.set_color(c(0xE9EBEF));
        b.set_selection_color(c(0xD5D9E0));
        b.set_label_color(c(TEXT));
    }
    b.clear_visible_focus();
    b
}

/// A text field with its label above.
pub fn field(x: i32, y: i32, w: i32, h: i32, label_text: &str) -> input::Input {
    let mut i = input::Input::new(x, y, w, h, None);
    style_input(&mut i, label_text);
    i
}

/// A password/key field (never shows what was typed) with its label above.
pub fn secret_field(x: i32, y: i32, w: i32, h: i32, label_text: &str) -> input::SecretInput {
    let mut i = input::SecretInput::new(x, y, w, h, None);
    style_input(&mut i, label_text);
    i
}

fn style_input<I: InputExt>(i: &mut I, label_text: &str) {
    i.set_label(label_text);
    i.set_align(Align::TopLeft);
    i.set_label_size(12);
    i.set_label_color(c(MUTED));
    i.set_frame(FrameType::BorderBox);
    i.set_color(c(WHITE));
    i.set_selection_color(c(0xBFD4F6));
    i.set_text_size(BODY);
    i.set_visible_focus();
}

/// Colours a field's border: neutral, good or bad.
pub fn mark_field<W: WidgetExt>(w: &mut W, state: Option<bool>) {
    w.set_color(c(match state {
        None => WHITE,
        Some(true) => 0xEAF6EE,
        Some(false) => 0xFBEAEA,
    }));
    w.redraw();
}

/// A dropdown with its label above.
pub fn choice(x: i32, y: i32, w: i32, h: i32, label_text: &str, items: &[&str]) -> menu::Choice {
    let mut ch = menu::Choice::new(x, y, w, h, None);
    ch.set_label(label_text);
    ch.set_align(Align::TopLeft);
    ch.set_label_size(12);
    ch.set_label_color(c(MUTED));
    ch.set_frame(FrameType::BorderBox);
    ch.set_down_frame(FrameType::BorderBox);
    ch.set_color(c(WHITE));
    ch.set_text_size(BODY);
    for it in items {
        // A '/' would open a submenu, '&' mark a shortcut.
        ch.add_choice(&it.replace('/', "\\/").replace('&', "&&"));
    }
    if !items.is_empty() {
        ch.set_value(0);
    }
    ch
}

/// A checkbox.
pub fn check(x: i32, y: i32, w: i32, h: i32, text: &str) -> button::CheckButton {
    let mut b = button::CheckButton::new(x, y, w, h, None);
    b.set_label(text);
    b.set_label_size(BODY);
    b.set_frame(FrameType::FlatBox);
    b.set_color(c(WHITE));
    b.clear_visible_focus();
    b
}

/// A box with a tinted background and wrapped text (the security notice, verdicts).
pub fn tinted_box(x: i32, y: i32, w: i32, h: i32, text: &str, tint: u32) -> frame::Frame {
    let mut f = frame::Frame::new(x, y, w, h, None);
    f.set_frame(FrameType::RFlatBox);
    f.set_color(c(tint));
    f.set_label(text);
    f.set_label_size(12);
    f.set_label_color(c(TEXT));
    f.set_align(Align::Left | Align::Inside | Align::Wrap | Align::Top);
    f
}

/// Shared state of a status dot.
#[derive(Debug, Clone, Copy)]
pub struct DotLook {
    /// `0xRRGGBB`.
    pub rgb: u32,
    /// Motion.
    pub animation: Animation,
    /// Animation phase, 0..1.
    pub phase: f64,
}

/// A status dot: a filled circle in the state colour (its centre is always exactly that colour,
/// which the screenshot test samples), with a pulsing halo or a spinning arc around it.
pub fn status_dot(cx: i32, cy: i32, r: i32, look: Rc<Cell<DotLook>>) -> frame::Frame {
    let pad = r + 6;
    let mut f = frame::Frame::new(cx - pad, cy - pad, 2 * pad, 2 * pad, None);
    f.draw(move |w| {
        let l = look.get();
        let (cx, cy) = (w.x() + w.w() / 2, w.y() + w.h() / 2);
        draw::draw_rect_fill(w.x(), w.y(), w.w(), w.h(), w.parent().map_or(c(WHITE), |p| p.color()));
        match l.animation {
            Animation::Pulse => {
                let grow = (l.phase * std::f64::consts::TAU).sin().abs();
                let halo = blend(l.rgb, WHITE, 0.55 + 0.35 * (1.0 - grow));
                draw::set_draw_color(c(halo));
                let hr = r + 1 + (4.0 * grow) as i32;
                draw::draw_pie(cx - hr, cy - hr, 2 * hr, 2 * hr, 0.0, 360.0);
            }
            Animation::Spin => {
                draw::set_draw_color(c(blend(l.rgb, WHITE, 0.7)));
                draw::set_line_style(draw::LineStyle::Solid, 2);
                draw::draw_arc(cx - r - 4, cy - r - 4, 2 * r + 8, 2 * r + 8, 0.0, 360.0);
                draw::set_draw_color(c(l.rgb));
                let a = -l.phase * 360.0;
                draw::draw_arc(cx - r - 4, cy - r - 4, 2 * r + 8, 2 * r + 8, a, a + 100.0);
                draw::set_line_style(draw::LineStyle::Solid, 0);
            }
            Animation::None => {}
        }
        draw::set_draw_color(c(l.rgb));
        draw::draw_pie(cx - r, cy - r, 2 * r, 2 * r, 0.0, 360.0);
    });
    f
}

/// Mixes `a` toward `b` by `t` (0 = a, 1 = b).
pub fn blend(a: u32, b: u32, t: f64) -> u32 {
    let ch = |v: u32, s: u32| ((v >> s) & 0xFF) as f64;
    let mix = |s: u32| ((ch(a, s) * (1.0 - t) + ch(b, s) * t).round() as u32) << s;
    mix(16) | mix(8) | mix(0)
}

/// A spinner for network checks; visible while `busy` holds.
pub fn spinner(x: i32, y: i32, size: i32, phase: Rc<Cell<f64>>) -> frame::Frame {
    let mut f = frame::Frame::new(x, y, size, size, None);
    f.draw(move |w| {
        let a = -phase.get() * 360.0;
        draw::set_line_style(draw::LineStyle::Solid, 3);
        draw::set_draw_color(c(LINE));
        draw::draw_arc(w.x() + 2, w.y() + 2, w.w() - 4, w.h() - 4, 0.0, 360.0);
        draw::set_draw_color(c(ACCENT));
        draw::draw_arc(w.x() + 2, w.y() + 2, w.w() - 4, w.h() - 4, a, a + 90.0);
        draw::set_line_style(draw::LineStyle::Solid, 0);
    });
    f.hide();
    f
}

/// An Overview card: caption, main figure, second line.
pub fn card(x: i32, y: i32, w: i32, h: i32, content: Rc<RefCell<(String, String, String)>>) -> frame::Frame {
    let mut f = frame::Frame::new(x, y, w, h, None);
    f.draw(move |w| {
        let (t, main, sub) = content.borrow().clone();
        draw::set_draw_color(c(LINE));
        draw::draw_rounded_rect(w.x(), w.y(), w.w(), w.h(), 6);
        draw::set_draw_color(c(MUTED));
        draw::set_font(Font::Helvetica, 12);
        draw::draw_text2(&t, w.x() + 16, w.y() + 12, w.w() - 32, 16, Align::Left);
        draw::set_draw_color(c(TEXT));
        draw::set_font(Font::HelveticaBold, 20);
        draw::draw_text2(&fit(&main, w.w() - 32), w.x() + 16, w.y() + 34, w.w() - 32, 26, Align::Left);
        draw::set_draw_color(c(MUTED));
        draw::set_font(Font::Helvetica, 12);
        draw::draw_text2(&fit(&sub, w.w() - 32), w.x() + 16, w.y() + 66, w.w() - 32, 18, Align::Left);
    });
    f
}

/// Cuts text to a pixel width with the current font, ending in `…`.
pub fn fit(text: &str, width: i32) -> String {
    if draw::width(text) as i32 <= width {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let s: String = chars[..mid].iter().collect::<String>() + "…";
        if draw::width(&s) as i32 <= width { lo = mid } else { hi = mid - 1 }
    }
    chars[..lo].iter().collect::<String>() + "…"
}

/// What a [`DataTable`] shows.
#[derive(Debug, Default, Clone)]
pub struct TableData {
    /// Column titles.
    pub headers: Vec<String>,
    /// Relative column widths (any unit); equal when empty.
    pub widths: Vec<f64>,
    /// Right-aligned, monospace columns.
    pub numeric: Vec<bool>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
    /// Per-row text colour (`0xRRGGBB`), when not the default.
    pub row_colors: Vec<Option<u32>>,
    /// Selected row.
    pub selected: Option<usize>,
}

/// A zebra table with a header, right-aligned numbers and width-aware truncation.
#[derive(Debug, Clone)]
pub struct DataTable {
    /// The widget.
    pub table: table::Table,
    /// What it shows.
    pub data: Rc<RefCell<TableData>>,
}

impl DataTable {
    /// A table at a rectangle.
    pub fn new(x: i32, y: i32, w: i32, h: i32) -> Self {
        let data = Rc::new(RefCell::new(TableData::default()));
        let mut t = table::Table::new(x, y, w, h, None);
        t.set_frame(FrameType::BorderBox);
        t.set_color(c(WHITE));
        t.set_col_header(true);
        t.set_col_header_height(28);
        t.set_row_height_all(26);
        t.set_col_resize(true);
        t.set_scrollbar_size(12);
        t.end();
        let d = data.clone();
        t.draw_cell(move |t, ctx, row, col, x, y, w, h| {
            let d = d.borrow();
            match ctx {
                table::TableContext::ColHeader => {
                    draw::push_clip(x, y, w, h);
                    draw::draw_rect_fill(x, y, w, h, c(PANEL));
                    draw::set_draw_color(c(LINE));
                    draw::draw_line(x, y + h - 1, x + w, y + h - 1);
                    draw::set_draw_color(c(MUTED));
                    draw::set_font(Font::HelveticaBold, 12);
                    let numeric = d.numeric.get(col as usize).copied().unwrap_or(false);
                    let text = d.headers.get(col as usize).cloned().unwrap_or_default();
                    let align = if numeric { Align::Right } else { Align::Left };
                    draw::draw_text2(&text, x + 8, y, w - 16, h, align);
                    draw::pop_clip();
                }
                table::TableContext::Cell => {
                    draw::push_clip(x, y, w, h);
                    let bg = if d.selected == Some(row as usize) {
                        SELECTED
                    } else if row % 2 == 1 {
                        ZEBRA
                    } else {
                        WHITE
                    };
                    draw::draw_rect_fill(x, y, w, h, c(bg));
                    let numeric = d.numeric.get(col as usize).copied().unwrap_or(false);
                    let text = d
                        .rows
                        .get(row as usize)
                        .and_then(|r| r.get(col as usize))
                        .cloned()
                        .unwrap_or_default();
                    let color = d.row_colors.get(row as usize).copied().flatten().unwrap_or(TEXT);
                    draw::set_draw_color(c(color));
                    if numeric {
                        draw::set_font(Font::Courier, 12);
                    } else {
                        draw::set_font(Font::Helvetica, BODY);
                    }
                    let text = fit(&text, w - 16);
                    draw::draw_text2(
                        &text,
                        x + 8,
                        y,
                        w - 16,
                        h,
                        if numeric { Align::Right } else { Align::Left },
                    );
                    draw::pop_clip();
                }
                _ => {}
            }
            let _ = t;
        });
        let d = data.clone();
        t.set_callback(move |t| {
            if t.callback_context() == table::TableContext::Cell {
                d.borrow_mut().selected = Some(t.callback_row() as usize);
                t.redraw();
            }
        });
        Self { table: t, data }
    }

    /// Replaces the content and lays out the columns to the table's width.
    pub fn set(&mut self, data: TableData) {
        let n = data.headers.len().max(1);
        let rows = data.rows.len();
        {
            let mut d = self.data.borrow_mut();
            let selected = d.selected.filter(|s| *s < rows);
            *d = data;
            d.selected = selected;
        }
        self.table.set_cols(n as i32);
        self.table.set_rows(rows as i32);
        self.layout();
        self.table.redraw();
    }

    /// Fits the columns to the width (after a resize).
    pub fn layout(&mut self) {
        let d = self.data.borrow();
        let n = d.headers.len().max(1);
        let widths: Vec<f64> = if d.widths.len() == n { d.widths.clone() } else { vec![1.0; n] };
        let total: f64 = widths.iter().sum();
        let avail = (self.table.w() - 16).max(n as i32 * 40);
        let mut used = 0;
        for (i, wgt) in widths.iter().enumerate() {
            let w = if i + 1 == n { avail - used } else { (f64::from(avail) * wgt / total) as i32 };
            used += w;
            self.table.set_col_width(i as i32, w.max(30));
        }
    }

    /// The selected row.
    pub fn selected(&self) -> Option<usize> {
        self.data.borrow().selected
    }
}
