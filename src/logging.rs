//! Logging: `tracing` to stderr and to daily-rotated files, through a redaction layer.
//!
//! Every formatted line passes through [`redact`] before it reaches any writer, so that even a
//! mistake elsewhere cannot put an API key or a connection-string password into a log file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Log files kept (one per day).
const KEEP_FILES: usize = 14;

/// The platform's log directory for the agent. Each configuration without `logDir` logs to a
/// directory of its own under it ([`crate::config::AgentConfig::log_dir`]).
pub fn default_log_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if cfg!(target_os = "macos") {
        return home.unwrap_or_default().join("Library/Logs/mini-connector");
    }
    if cfg!(windows) {
        let base = std::env::var_os("LOCALAPPDATA").map(PathBuf::from).unwrap_or_default();
        return base.join("mini-connector").join("logs");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("mini-connector")
        .join("logs")
}

/// Installs the global subscriber: `level` (or `RUST_LOG`), stderr, and files in `dir`.
pub fn init(level: &str, dir: Option<&Path>) -> io::Result<()> {
    let filter = filter(level, std::env::var("RUST_LOG").ok().as_deref());
    let stderr = Redacting(io::stderr);
    // A log line that cannot be written (a full disk under stderr or the log files) is lost,
    // never reported with `eprintln!`, which panics when stderr cannot be written — and would
    // take the logging thread (the supervisor, a worker) down with it. The level filter is the
    // `Targets` layer below; the builder's own (INFO by default) must let everything through.
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_thread_names(true)
        .log_internal_errors(false);
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let files = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("agent")
                .filename_suffix("log")
                .max_log_files(KEEP_FILES)
                .build(dir)
                .map_err(io::Error::other)?;
            builder
                .with_ansi(false)
                .with_writer(stderr.and(Redacting(std::sync::Mutex::new(files))))
                .finish()
                .with(filter)
                .try_init()
                .map_err(|e| io::Error::other(e.to_string()))
        }
        None => builder
            .with_ansi(crate::protocol::term::stderr_color())
            .with_writer(stderr)
            .finish()
            .with(filter)
            .try_init()
            .map_err(|e| io::Error::other(e.to_string())),
    }
}

/// The level filter: `RUST_LOG` when set and valid, else `level` with the chatty transport
/// crates held at `warn`. `target=level` directives, comma-separated (`Targets`, not
/// `EnvFilter`: no span or field filters, so `regex` is not linked — see issue 12).
fn filter(level: &str, rust_log: Option<&str>) -> Targets {
    if let Some(directives) = rust_log.and_then(|s| s.parse::<Targets>().ok()) {
        return directives;
    }
    format!("{level},ureq=warn,rustls=warn,tungstenite=warn").parse().unwrap_or_else(|_| {
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("ureq", LevelFilter::WARN)
            .with_target("rustls", LevelFilter::WARN)
            .with_target("tungstenite", LevelFilter::WARN)
    })
}

/// Wraps a `MakeWriter` so that every write is redacted.
#[derive(Debug)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// A writer that redacts each buffer it is given (the fmt layer writes one event per call).
/// A write that fails (a full disk) loses that line in this sink only: the error is not passed
/// on, so the other sink (stderr and files are teed) still gets it and nothing else notices.
#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let _ = self.0.write_all(redact(&text).as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Masks anything that looks like an API key (`vmc_<tenant>_<random>_<checksum>` →
/// `vmc_<tenant>_****_<checksum>`) or a password in a connection string
/// (`password=...`, `pwd=...` up to `;`, `&`, a quote or whitespace → `password=***`).
pub fn redact(text: &str) -> String {
    let masked = mask_api_keys(text);
    mask_passwords(&masked)
}

fn mask_api_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("vmc_") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let end = candidate
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(candidate.len(), |(i, _)| i);
        let token = &candidate[..end];
        let parts: Vec<&str> = token.split('_').collect();
        if parts.len() == 4 && parts[2].len() >= 8 {
            out.push_str(&format!("vmc_{}_****_{}", parts[1], parts[3]));
        } else if parts.len() >= 3 && token.len() > 16 {
            // Something key-shaped but malformed (a typo in a key is still a secret).
            out.push_str("vmc_****");
        } else {
            out.push_str(token);
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

fn mask_passwords(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = ["password=", "pwd=", "passwd="].iter().find(|needle| lower[i..].starts_with(*needle));
        match hit {
            Some(needle) => {
                out.push_str(&text[i..i + needle.len()]);
                out.push_str("***");
                i += needle.len();
                while let Some(c) = text[i..].chars().next() {
                    if c == ';' || c == '&' || c == '"' || c == '\'' || c.is_whitespace() {
                        break;
                    }
                    i += c.len_utf8();
                }
            }
            None => {
                let c = text[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_level_applies_and_transport_crates_stay_at_warn() {
        let f = filter("debug", None);
        assert!(f.would_enable("mini_connector::link", &tracing::Level::DEBUG));
        assert!(!f.would_enable("mini_connector::link", &tracing::Level::TRACE));
        assert!(!f.would_enable("ureq::unit", &tracing::Level::INFO));
        assert!(f.would_enable("rustls::conn", &tracing::Level::WARN));
        assert!(!f.would_enable("tungstenite", &tracing::Level::INFO));
    }

    #[test]
    fn rust_log_directives_replace_the_configured_level() {
        let f = filter("info", Some("warn,mini_connector::worker=trace"));
        assert!(f.would_enable("mini_connector::worker", &tracing::Level::TRACE));
        assert!(!f.would_enable("mini_connector::link", &tracing::Level::INFO));
        assert!(f.would_enable("drivers", &tracing::Level::WARN));
        // `off` silences everything (the gateway tests use it).
        assert!(!filter("info", Some("off")).would_enable("mini_connector", &tracing::Level::ERROR));
    }

    #[test]
    fn an_unparsable_rust_log_falls_back_to_the_configured_level() {
        let f = filter("warn", Some("mini_connector=loud"));
        assert!(f.would_enable("mini_connector", &tracing::Level::WARN));
        assert!(!f.would_enable("mini_connector", &tracing::Level::INFO));
    }

    #[test]
    fn a_sink_that_cannot_be_written_loses_the_line_and_nothing_else() {
        // A full disk under stderr: the write fails with ENOSPC.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(28))
            }
        }
        let mut writer = RedactingWriter(Full);
        assert_eq!(writer.write(b"a line\n").unwrap(), 7);
        writer.flush().unwrap();
    }

    #[test]
    fn api_keys_are_masked() {
        let key = crate::protocol::ApiKey::generate("acme").unwrap();
        let line = format!("oops: key={} trailing", key.expose());
        let out = redact(&line);
        assert!(!out.contains(key.expose().split('_').nth(2).unwrap()));
        assert!(out.contains(&key.masked()), "{out}");
        assert_eq!(redact("vmc_ is a prefix"), "vmc_ is a prefix");
        assert!(!redact("vmc_acme_typoedkeyvalue123").contains("typoedkeyvalue123"));
    }

    #[test]
    fn connection_string_passwords_are_masked() {
        let out = redact("Driver=x;UID=app;PWD=s3cr3t!;Server=db and password=hunter2 end, Password=Ünï");
        assert_eq!(out, "Driver=x;UID=app;PWD=***;Server=db and password=*** end, Password=***");
    }

    #[test]
    fn writer_redacts_whole_lines() {
        let mut buf = Vec::new();
        let key = crate::protocol::ApiKey::generate("acme").unwrap();
        writeln!(RedactingWriter(&mut buf), "{}", key.expose()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text, format!("{}\n", key.masked()));
    }
}
