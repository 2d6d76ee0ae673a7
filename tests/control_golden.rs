//! Golden tests of the local control API (`protocol::control`): every file in
//! `tests/fixtures/control/` parses into its type and re-serializes to the same JSON value, so
//! a change to the wire shape the CLI, the desktop app and the control socket share shows up as
//! a diff here. Names: `request_<cmd>[_<op>].json` ([`ControlRequest`]),
//! `reply_<kind>[_<variant>].json` ([`ControlReply`]), `event_<kind>.json` ([`AgentEvent`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mini_connector::protocol::control::{AgentEvent, ControlReply, ControlRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/control");

fn fixtures() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("cannot list {FIXTURES}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    found.sort();
    found
}

fn name(path: &Path) -> String {
    path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned()
}

/// Parses `text` as `T` and serializes it back.
fn round_trip<T: Serialize + DeserializeOwned>(path: &Path, text: &str) -> Value {
    let typed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(&typed).unwrap()
}

#[test]
fn every_control_fixture_parses_and_re_serializes_to_the_same_json() {
    let mut tags = BTreeSet::new();
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        let name = name(&path);
        let (again, tag) = if name.starts_with("request_") {
            (
                round_trip::<ControlRequest>(&path, &text),
                ("request", original["cmd"].clone(), original["op"].clone()),
            )
        } else if name.starts_with("reply_") {
            (round_trip::<ControlReply>(&path, &text), ("reply", original["reply"].clone(), Value::Null))
        } else if name.starts_with("event_") {
            (round_trip::<AgentEvent>(&path, &text), ("event", original["event"].clone(), Value::Null))
        } else {
            panic!("{}: unknown fixture kind (request_, reply_ or event_)", path.display());
        };
        assert_eq!(again, original, "{} does not survive a round trip", path.display());
        let tag = match tag.2.as_str() {
            Some(op) => format!("{} {} {op}", tag.0, tag.1.as_str().unwrap()),
            None => format!("{} {}", tag.0, tag.1.as_str().unwrap()),
        };
        tags.insert(tag);
    }
    // One fixture per kind: a new variant needs a fixture (and a line here).
    let expected: BTreeSet<String> = [
        "request status",
        "request start",
        "request activity",
        "request pause",
        "request resume",
        "request reconnect",
        "request stop",
        "request subscribe",
        "request setup settings",
        "request setup check_key",
        "request setup configure",
        "request setup list_databases",
        "request setup test_database",
        "request setup save_database",
        "request setup remove_database",
        "request setup discover",
        "request setup sample",
        "request setup set_private",
        "request setup approve_schema",
        "request setup install_service",
        "request setup set_pin",
        "request setup verify_pin",
        "request doctor",
        "request diag_bundle",
        "request reload",
        "reply ok",
        "reply status",
        "reply activity",
        "reply paused",
        "reply stopping",
        "reply settings",
        "reply key",
        "reply databases",
        "reply test",
        "reply schema",
        "reply sample",
        "reply message",
        "reply bundle",
        "reply error",
        "reply doctor",
        "event status",
        "event activity",
        "event log",
        "event notice",
        "event stopped",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(tags, expected);
}

#[test]
fn a_database_password_travels_in_requests_for_the_remote_backend() {
    // The GUI attached to a service sends the password over the socket: it must serialize.
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("request_setup_save_database.json")).unwrap();
    let request: ControlRequest = serde_json::from_str(&text).unwrap();
    assert!(serde_json::to_string(&request).unwrap().contains("s3cret"));
    // ...and the reply listing databases carries none.
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("reply_databases.json")).unwrap();
    assert!(!text.contains("password\""));
}
