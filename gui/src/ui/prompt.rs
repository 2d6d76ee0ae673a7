//! A small modal prompt (PIN, new key, confirmations) that does not block the loop: FLTK's
//! `dialog::*` functions run a nested event loop, during which the window would stop showing
//! new status. This one only sends [`Msg::PromptAnswer`]; the loop keeps draining messages.

use fltk::enums::{Align, FrameType};
use fltk::prelude::*;
use fltk::{button, frame, input, window};

use super::Msg;
use super::style::{self, DIALOG_TITLE, c};

type Tx = crossbeam_channel::Sender<Msg>;

/// What a prompt is for.
#[derive(Debug, Clone)]
pub(crate) enum PromptKind {
    /// The local PIN, then this message.
    Pin(Box<Msg>),
    /// A replacement API key.
    NewKey,
    /// The current PIN before changing it.
    CurrentPin,
    /// The new PIN (after the current one, if any).
    NewPin(Option<String>),
    /// Exit while commands run.
    ConfirmExit,
    /// Remove a connection.
    ConfirmRemove(String),
    /// Just a message.
    Alert,
}

/// The prompt window.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    win: window::Window,
    message: frame::Frame,
    input: input::SecretInput,
    ok: button::ReturnButton,
    cancel: button::Button,
}

fn send(tx: &Tx, m: Msg) {
    let _ = tx.send(m);
    fltk::app::awake();
}

impl Prompt {
    /// Builds it (hidden). The input sits at (16, 40)–(404, 68): tests click at (200, 48).
    pub(crate) fn new(tx: &Tx) -> Self {
        let mut win = window::Window::new(300, 260, 420, 130, None);
        win.set_label(DIALOG_TITLE);
        win.set_color(c(style::WHITE));
        win.make_modal(true);
        let mut message = style::label(16, 8, 388, 30, "");
        message.set_align(Align::Left | Align::Inside | Align::Wrap);
        let mut input = input::SecretInput::new(16, 40, 388, 28, None);
        input.set_frame(FrameType::BorderBox);
        input.set_text_size(style::BODY);
        let mut ok = button::ReturnButton::new(214, 88, 92, 30, "OK");
        ok.set_frame(FrameType::RFlatBox);
        ok.set_color(c(style::ACCENT));
        ok.set_label_color(c(style::WHITE));
        ok.set_label_size(style::BODY);
        let cancel = style::button(312, 88, 92, 30, "Cancel", false);
        win.end();
        let mut me = Self { win, message, input, ok, cancel };
        let (t, i) = (tx.clone(), me.input.clone());
        me.ok.set_callback(move |_| send(&t, Msg::PromptAnswer(Some(i.value()))));
        let t = tx.clone();
        me.cancel.set_callback(move |_| send(&t, Msg::PromptAnswer(None)));
        let t = tx.clone();
        me.win.set_callback(move |_| send(&t, Msg::PromptAnswer(None)));
        me
    }

    /// Shows a question; `secret` adds the hidden input; `ok` and `cancel` label the buttons
    /// (no cancel button when `None`).
    pub(crate) fn ask(&mut self, text: &str, secret: bool, ok: &str, cancel: Option<&str>, near: (i32, i32)) {
        self.message.set_label(text);
        self.input.set_value("");
        if secret {
            self.input.show();
        } else {
            self.input.hide();
        }
        self.ok.set_label(ok);
        match cancel {
            Some(l) => {
                self.cancel.set_label(l);
                self.cancel.show();
                self.ok.resize(214, 88, 92, 30);
            }
            None => {
                self.cancel.hide();
                self.ok.resize(312, 88, 92, 30);
            }
        }
        self.win.set_pos(near.0, near.1);
        self.win.show();
        if secret {
            let _ = self.input.take_focus();
        }
        self.win.redraw();
    }

    /// Hides it and wipes what was typed.
    pub(crate) fn close(&mut self) {
        self.input.set_value("");
        self.win.hide();
    }
}
