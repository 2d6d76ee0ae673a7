//! "Export diagnostic bundle…" (spec §8.2) in Diagnostics: where the ZIP goes and what the
//! section says afterwards. The agent builds the bundle (`ControlRequest::DiagBundle`); the GUI
//! only picks a path the user can find and reports it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use protocol::control::ControlReply;

use super::format;

/// `mini-connector-diag-<connector>-<UTC yyyymmddThhmmssZ>.zip`, the name the CLI uses too;
/// the connector name reduced to letters, digits, `-` and `_`.
pub fn file_name(connector: &str, now: SystemTime) -> String {
    let name: String = connector
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let name = if name.trim_matches('-').is_empty() { "connector".to_owned() } else { name };
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("mini-connector-diag-{name}-{stamp}.zip")
}

/// The folder the bundle goes to: `Documents` in the home directory when it exists, else the
/// home directory, else `fallback` (the GUI's state directory).
pub fn folder(home: Option<&Path>, fallback: &Path) -> PathBuf {
    match home {
        Some(home) if home.join("Documents").is_dir() => home.join("Documents"),
        Some(home) if home.is_dir() => home.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// The user's home directory (`HOME`, `USERPROFILE` on Windows).
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).map(PathBuf::from)
}

/// What the Diagnostics section says about a bundle request's reply, and whether it worked.
pub fn outcome(reply: &ControlReply) -> (String, bool) {
    match reply {
        ControlReply::Bundle(info) => (
            format!(
                "Diagnostic bundle saved ({}, {}): {}",
                format::bytes(info.bytes),
                format::count(info.files.len() as u64, "file", "files"),
                info.path,
            ),
            true,
        ),
        ControlReply::Error { code, message } => (format!("No bundle: {message} ({code})"), false),
        other => (format!("No bundle: unexpected answer {other:?}"), false),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use protocol::control::BundleInfo;

    use super::*;

    #[test]
    fn the_file_name_carries_the_connector_and_the_utc_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_194_800); // 2026-12-02T07:00:00Z
        assert_eq!(file_name("Prod SAP/EU", t), "mini-connector-diag-Prod-SAP-EU-20261202T070000Z.zip");
        assert_eq!(file_name("***", t), "mini-connector-diag-connector-20261202T070000Z.zip");
    }

    #[test]
    fn documents_then_home_then_the_state_directory() {
        let dir = std::env::temp_dir().join(format!("mc-gui-bundle-{}", std::process::id()));
        let state = Path::new("/nonexistent/state");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(folder(Some(&dir), state), dir);
        std::fs::create_dir_all(dir.join("Documents")).unwrap();
        assert_eq!(folder(Some(&dir), state), dir.join("Documents"));
        assert_eq!(folder(None, state), state);
        assert_eq!(folder(Some(Path::new("/nonexistent/home")), state), state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_message_names_the_path_or_the_error() {
        let ok = ControlReply::Bundle(BundleInfo {
            path: "/home/u/Documents/b.zip".into(),
            bytes: 2048,
            files: vec!["manifest.json".into(), "config.json".into()],
        });
        let (text, good) = outcome(&ok);
        assert!(good && text.contains("/home/u/Documents/b.zip") && text.contains("2 files"), "{text}");
        let (text, good) = outcome(&ControlReply::error("FILE_EXISTS", "/x.zip exists"));
        assert!(!good && text.contains("FILE_EXISTS"), "{text}");
    }
}
