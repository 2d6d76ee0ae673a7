//! `mini-connector doctor [--config F] [--json]`: prints [`mini_connector::doctor::run`]'s
//! report, one line per step with its verdict, details indented, then the overall verdict.
//!
//! Symbols and colours: `✔ ! ✘ –` in colour on a UTF-8 terminal; `[ok] [warn] [FAIL] [skip]`
//! without colour when stdout is not a terminal, the locale is not UTF-8, `NO_COLOR` is set or
//! `TERM` is `dumb`. Details are escaped (`protocol::term::escape`). `--json`: the report in the
//! envelope (`{"ok": true, "data": report}`), the exit code as for text.
//! Exit code: 0 when nothing failed (warnings included), 1 when a step failed, 2 when the
//! configuration itself does not load.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use mini_connector::protocol::control::{DoctorReport, StepStatus, Verdict};

use super::output::term::{escape, pad, width};
use crate::exit;

/// `doctor`'s flags.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Print the report as JSON (`{"verdict": …, "steps": [{"name", "status", "detail", "hint",
    /// "data"}]}`), for a support ticket.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks and prints them.
pub fn doctor(args: &DoctorArgs) -> ExitCode {
    let report = mini_connector::doctor::run(&args.config.path());
    if args.json {
        // The report is the data, failed steps included (the exit code tells the verdict).
        super::output::print_ok(&report);
    } else {
        print!("{}", render(&report, Style::detect()));
    }
    ExitCode::from(exit_code(&report))
}

/// 2 when the configuration does not load, 1 when another step failed, else 0.
pub fn exit_code(report: &DoctorReport) -> u8 {
    let config_failed =
        report.steps.first().is_some_and(|s| s.name == "config" && s.status == StepStatus::Fail);
    match report.verdict {
        _ if config_failed => exit::CONFIG,
        Verdict::Fail => exit::FAILURE,
        Verdict::Ok | Verdict::Warn => exit::OK,
    }
}

/// How the report is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// `✔ ! ✘ –` rather than ASCII tags.
    pub unicode: bool,
    /// ANSI colours.
    pub color: bool,
}

impl Style {
    /// Unicode and colour on a UTF-8 terminal without `NO_COLOR`; plain ASCII otherwise.
    pub fn detect() -> Self {
        let utf8 = ["LC_ALL", "LC_CTYPE", "LANG"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
            .is_some_and(|v| {
                let v = v.to_ascii_lowercase();
                v.contains("utf-8") || v.contains("utf8")
            });
        let fancy =
            super::output::term::color_allowed(std::io::stdout().is_terminal()) && (utf8 || cfg!(windows));
        Self { unicode: fancy, color: fancy }
    }
}

/// The report as text.
pub fn render(report: &DoctorReport, style: Style) -> String {
    let mut out = String::new();
    let width = report.steps.iter().map(|s| width(&escape(&s.name))).max().unwrap_or(0);
    for step in &report.steps {
        let (symbol, colour) = match (step.status, style.unicode) {
            (StepStatus::Ok, true) => ("✔", "32"),
            (StepStatus::Warn, true) => ("!", "33"),
            (StepStatus::Fail, true) => ("✘", "31"),
            (StepStatus::Skipped, true) => ("–", "2"),
            (StepStatus::Ok, false) => ("[ok]  ", ""),
            (StepStatus::Warn, false) => ("[warn]", ""),
            (StepStatus::Fail, false) => ("[FAIL]", ""),
            (StepStatus::Skipped, false) => ("[skip]", ""),
        };
        let symbol =
            if style.color { format!("\u{1b}[{colour}m{symbol}\u{1b}[0m") } else { symbol.to_owned() };
        // Details carry texts from servers and databases: each line escaped.
        let mut lines = step.detail.lines().map(escape);
        let first = lines.next().unwrap_or_default();
        out.push_str(&format!("{symbol} {}  {first}\n", pad(&escape(&step.name), width, false)));
        for line in lines {
            out.push_str(&format!("      {line}\n"));
        }
        if let Some(hint) = &step.hint {
            let mut hint_lines = hint.lines().map(escape);
            out.push_str(&format!("      hint: {}\n", hint_lines.next().unwrap_or_default()));
            for line in hint_lines {
                out.push_str(&format!("            {line}\n"));
            }
        }
    }
    let count = |status| report.steps.iter().filter(|s| s.status == status).count();
    let (failed, warned, skipped) =
        (count(StepStatus::Fail), count(StepStatus::Warn), count(StepStatus::Skipped));
    let verdict = match report.verdict {
        Verdict::Ok => "verdict: ok, every check passed".to_owned(),
        Verdict::Warn => format!("verdict: warn, {warned} warning(s); the agent can work"),
        Verdict::Fail => {
            format!("verdict: FAIL, {failed} failed, {warned} warning(s), {skipped} skipped")
        }
    };
    out.push_str(&verdict);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use mini_connector::protocol::control::{DoctorReport, DoctorStep, StepStatus};

    use super::{Style, exit_code, render};

    fn step(name: &str, status: StepStatus, detail: &str, hint: Option<&str>) -> DoctorStep {
        DoctorStep::new(name, status, detail, hint)
    }

    fn report() -> DoctorReport {
        DoctorReport::new(vec![
            step("config", StepStatus::Ok, "loads", None),
            step(
                "tls",
                StepStatus::Fail,
                "TLS inspection suspected\ncertificate 0: subject CN=x",
                Some("set caCertPath"),
            ),
            step("websocket", StepStatus::Skipped, "skipped: the TLS handshake failed", None),
            step("database:erp", StepStatus::Warn, "user can write", Some("a SELECT-only user")),
        ])
    }

    #[test]
    fn symbols_on_a_utf8_terminal_and_ascii_tags_otherwise() {
        let fancy = render(&report(), Style { unicode: true, color: false });
        assert_eq!(
            fancy,
            "✔ config        loads\n\
             ✘ tls           TLS inspection suspected\n      certificate 0: subject CN=x\n      hint: set caCertPath\n\
             – websocket     skipped: the TLS handshake failed\n\
             ! database:erp  user can write\n      hint: a SELECT-only user\n\
             verdict: FAIL, 1 failed, 1 warning(s), 1 skipped\n"
        );
        let plain = render(&report(), Style { unicode: false, color: false });
        assert!(plain.starts_with("[ok]   config        loads\n[FAIL] tls "), "{plain}");
        assert!(!plain.contains(['✔', '✘', '–']), "{plain}");
        let coloured = render(&report(), Style { unicode: true, color: true });
        assert!(coloured.starts_with("\u{1b}[32m✔\u{1b}[0m config"), "{coloured}");
    }

    #[test]
    fn exit_codes_follow_the_verdict_and_a_broken_config_is_2() {
        assert_eq!(exit_code(&report()), 1);
        assert_eq!(exit_code(&DoctorReport::new(vec![step("auth", StepStatus::Warn, "", None)])), 0);
        assert_eq!(exit_code(&DoctorReport::new(vec![step("config", StepStatus::Fail, "", None)])), 2);
    }
}
