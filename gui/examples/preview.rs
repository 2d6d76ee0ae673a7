//! Runs the desktop app on the scripted backend: no agent, no network, no database.
//!
//! ```text
//! cargo run -p gui --example preview                 # dashboard: red 4 s, then green
//! cargo run -p gui --example preview -- --wizard     # the first-run wizard
//! cargo run -p gui --example preview -- --red-secs 2 --state-dir /tmp/mc-preview
//! ```
//! Options: `--wizard` (a fresh install: no key, no databases), `--attached` (as if attached
//! to a service: Exit just closes), `--pin` (PIN 2468 guards key and connection edits),
//! `--red-secs N` (how long the script stays disconnected), `--state-dir DIR` (wizard progress).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gui::fake::ScriptedBackend;
use gui::{GuiOptions, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut wizard, mut attached, mut pin, mut red) = (false, false, false, 4.0_f64);
    let mut state_dir = std::env::temp_dir().join(format!("mc-gui-preview-{}", std::process::id()));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--wizard" => wizard = true,
            "--attached" => attached = true,
            "--pin" => pin = true,
            "--red-secs" => red = args.next().and_then(|v| v.parse().ok()).unwrap_or(red),
            "--state-dir" => state_dir = args.next().map(PathBuf::from).unwrap_or(state_dir),
            other => {
                eprintln!("unknown option {other}; see the file's header");
                std::process::exit(2);
            }
        }
    }
    let mut backend = ScriptedBackend::demo(Duration::from_secs_f64(red));
    if wizard {
        backend = backend.first_run();
    }
    if pin {
        backend = backend.with_pin();
    }
    if attached {
        backend = backend.attached();
    }
    let mut options = GuiOptions::new(state_dir);
    options.start_in_wizard = Some(wizard);
    if let Err(e) = run(Arc::new(backend), options) {
        eprintln!("preview: {e}");
        std::process::exit(1);
    }
}
