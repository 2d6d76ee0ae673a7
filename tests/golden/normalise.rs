//! The golden-file check of `--json` shapes, shared by the agent's tests (`tests/cli_json.rs`)
//! and the gateway's (`gateway/tests/cli_json.rs`, through `#[path]`).
//!
//! A command's one-line `--json` answer is normalised, then compared with
//! `tests/golden/<name>.json`: every value of a volatile key (times, ids, pids, sizes, latencies,
//! versions, secrets) becomes `"<key>"`, the test's own directory becomes `<DIR>`; `null`
//! stays `null` (whether a field can be empty is part of the shape). Anything else — a key added,
//! removed or renamed, a type changed, an envelope lost — fails the test with both documents.
//! `UPDATE_GOLDEN=1` rewrites the files instead (review the diff before committing it).

// Each test crate uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Keys whose values change from run to run.
const VOLATILE: &[&str] = &[
    "apiKey",
    "at",
    "builtAt",
    "bytes",
    "caCertPath",
    "commandId",
    "connectedSince",
    "connectionId",
    "createdAt",
    "detail",
    "discoveredAt",
    "durationMs",
    "expiresAt",
    "generatedAt",
    "hardwareBound",
    "hint",
    "id",
    "installSecret",
    "instanceId",
    "lastHeartbeat",
    "lastUsedAt",
    "latencyMs",
    "masked",
    "maskedKey",
    "message",
    "pid",
    "receivedAt",
    "revoked",
    "revokedAt",
    "roundTripMs",
    "rowCountEstimate",
    "serverVersion",
    "sha256",
    "size",
    "sizeBytes",
    "thisExe",
    "startedAt",
    "time",
    "timestamp",
    "uptimeSecs",
    "version",
];

/// Where the golden files are.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(if env!("CARGO_PKG_NAME") == "gateway" {
        "../tests/golden"
    } else {
        "tests/golden"
    })
}

/// `value` with volatile values replaced and `dir` written as `<DIR>`.
pub fn normalise(value: &Value, dir: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if VOLATILE.contains(&k.as_str()) && !v.is_null() {
                        Value::String(format!("<{k}>"))
                    } else {
                        normalise(v, dir)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| normalise(v, dir)).collect()),
        Value::String(s) if !dir.is_empty() && s.contains(dir) => Value::String(s.replace(dir, "<DIR>")),
        other => other.clone(),
    }
}

/// Optional fields whose presence depends on the moment (a `status` taken before or after the
/// first heartbeat's pong, a reconnect): left out of a [`shape`].
const MOMENTARY: &[&str] =
    &["reason", "disconnectedSince", "nextRetryMs", "latencyMs", "lastError", "schemaChanges", "checkedAt"];

/// `value` reduced to its shape: every scalar becomes its type (`"<string>"`, `"<number>"`,
/// `"<bool>"`; `null` stays), an array its first element. For answers whose values all vary
/// (`status`, `activity`, `doctor`): the keys and types are what is pinned.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !MOMENTARY.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => Value::String("<string>".into()),
        Value::Number(_) => Value::String("<number>".into()),
        Value::Bool(_) => Value::String("<bool>".into()),
        Value::Null => Value::Null,
    }
}

/// [`check`] of the answer's [`shape`] (the envelope's `ok` kept).
#[track_caller]
pub fn check_shape(name: &str, stdout: &str) {
    let value: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stdout}"));
    let mut reduced = shape(&value);
    reduced["ok"] = value["ok"].clone();
    check(name, &format!("{reduced}\n"), Path::new(""));
}

/// Checks one `--json` answer (the whole stdout: one line) against `tests/golden/<name>.json`.
#[track_caller]
pub fn check(name: &str, stdout: &str, dir: &Path) {
    assert_eq!(stdout.lines().count(), 1, "{name}: --json prints one line: {stdout:?}");
    let value: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stdout}"));
    assert!(value["ok"].is_boolean(), "{name}: no envelope: {stdout}");
    let got = normalise(&value, dir.to_str().unwrap_or_default());
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    let file = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &pretty).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", file.display()));
    let want: Value = serde_json::from_str(&want).unwrap();
    assert!(
        got == want,
        "{name}: the --json shape changed\n--- {}\n{}\n--- now\n{pretty}",
        file.display(),
        serde_json::to_string_pretty(&want).unwrap()
    );
}
