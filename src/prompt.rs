//! Secrets typed on the terminal: a no-echo prompt that Ctrl-C leaves cleanly.
//!
//! Ctrl-C at a prompt restores the terminal's echo and exits with 130 (README, "Exit codes"),
//! whether the signal reaches the handler thread first or the terminal read first (it then
//! fails with `Interrupted`).

use std::io;

use zeroize::Zeroizing;

/// The exit code of a command ended by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: i32 = 130;

/// Turns the terminal's echo back on, prints the line feed the user did not get, and exits 130.
fn interrupted() -> ! {
    #[cfg(unix)]
    if let Ok(tty) = std::fs::File::open("/dev/tty") {
        let _ = std::process::Command::new("stty").arg("echo").stdin(tty).status();
    }
    eprintln!();
    std::process::exit(INTERRUPTED_EXIT);
}

/// Asks for a secret on the terminal without echo (`rpassword`). Ctrl-C ends the process with
/// exit code 130 and the echo restored; other read errors are returned.
pub fn password(prompt: &str) -> io::Result<Zeroizing<String>> {
    // Installed once per process; a second call (another prompt) keeps the first handler.
    let _ = ctrlc::set_handler(|| interrupted());
    match rpassword::prompt_password(prompt) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => interrupted(),
        Err(e) => Err(e),
    }
}
