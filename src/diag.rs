//! The diagnostic bundle (spec §8.2): one ZIP a user sends to support.
//!
//! [`bundle`] (the CLI `diag bundle` when no agent runs) and [`bundle_with`] (the running agent,
//! asked over the control socket or in process, adds its live status) write
//! `mini-connector-diag-<connector>-<UTC time>.zip`, owner-only (0600), through a temporary
//! file in the same directory that is linked into place only if nothing is there: an existing
//! file is never overwritten. Its files:
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | every file with its size and purpose, the creation time, what is never included |
//! | `logs/<file>` | the agent's log lines of the last 24 hours (files in `logDir`) |
//! | `errors.log` | the WARN and ERROR lines among them |
//! | `commands.json` | the last 50 command records of the queue: ids, state, times, attempts, duration, rows, bytes, codes; the query only as its length and a SHA-256 prefix |
//! | `system.json` | OS, kernel, architecture, memory, CPUs, host name, interfaces and addresses, DNS resolvers, proxy variables (credentials removed), agent version |
//! | `config.json` | the configuration without secret references, credentials, the PIN hash or private names |
//! | `schema/<connection>.json` | each connection's schema as the cloud may see it (`policy::visible_schema` under the effective policy) |
//! | `doctor.json` | the `doctor` report |
//! | `status.json` | the running agent's status (only when the agent builds the bundle) |
//!
//! **What never goes in.** Credentials, passwords, API keys (the bundle reads no secret file
//! and no vault file; the vault is opened only to learn the stored secrets' values so that any
//! copy of one in a log line is cut out), row data (no answer frame, no query text, no sample),
//! the machine key and install secret, and the names of private tables, columns and the views
//! over them. Defence in depth: every text file, and every string value of the JSON files (keys
//! are the bundle's own), goes through [`crate::logging::redact`], the removal of the known
//! secret values, and the removal of every private name (as a whole identifier,
//! case-insensitive, replaced by `<private>`) — so a public column that happens to share a
//! private column's name is masked too.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::config::AgentConfig;
use crate::protocol::control::{BundleInfo, StatusSnapshot};

/// How far back logs go.
const LOG_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Command records included.
const COMMANDS: usize = 50;
/// Most bytes of log lines taken (the newest are kept).
const MAX_LOG_BYTES: usize = 32 << 20;
/// What replaces a private name.
const PRIVATE: &str = "<private>";
/// What replaces a known secret value.
const REMOVED: &str = "[secret removed]";

/// What the bundle deliberately leaves out (spec §8.2 "NEVER contains"), in the manifest.
const EXCLUDED: &[&str] = &[
    "database credentials, passwords and API keys (secret references and the PIN hash are removed from config.json; known secret values are cut out of every file)",
    "row data of any query (no answer, no query text: only its length and a SHA-256 prefix; no samples)",
    "the machine-specific encryption key, the vault and its install secret (never read into the bundle)",
    "private tables and columns and the views over them: not in schema/, their names replaced by <private> everywhere",
    "proxy credentials (user:password@ removed from every URL)",
];

/// Why no bundle was written.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The output file exists: a bundle never overwrites.
    #[error("{0} exists; choose another file with --out (a bundle never overwrites)")]
    Exists(PathBuf),
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Writing the file failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl DiagError {
    /// The control API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Exists(_) => "FILE_EXISTS",
            Self::Config(_) => "INVALID_INPUT",
            Self::Write { .. } => "IO",
        }
    }
}

/// The `doctor` report for `doctor.json`. The `doctor` checks are connected here.
pub fn doctor_report(config_path: &Path) -> Value {
    serde_json::to_value(crate::doctor::run(config_path))
        .unwrap_or_else(|e| json!({"status": format!("doctor report not serialisable: {e}")}))
}

/// The default bundle file name: `mini-connector-diag-<connector>-<UTC yyyymmddThhmmssZ>.zip`,
/// the connector name reduced to letters, digits, `-` and `_`.
pub fn default_file_name(connector: &str) -> String {
    let name: String = connector
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let name = if name.trim_matches('-').is_empty() { "connector".to_owned() } else { name };
    format!("mini-connector-diag-{name}-{}.zip", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))
}

/// Builds a bundle for the configuration at `config_path` into `out` (default: the default
/// file name in the current directory), without a running agent's status.
pub fn bundle(config_path: &Path, out: Option<&Path>) -> Result<BundleInfo, DiagError> {
    bundle_with(config_path, out, None)
}

/// Builds a bundle; `live` is the running agent's status, written as `status.json`.
pub fn bundle_with(
    config_path: &Path,
    out: Option<&Path>,
    live: Option<&StatusSnapshot>,
) -> Result<BundleInfo, DiagError> {
    let config = AgentConfig::load(config_path)?;
    let out = match out {
        Some(path) => std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        None => std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("."))
            .join(default_file_name(&config.connector_name)),
    };
    if out.exists() {
        return Err(DiagError::Exists(out));
    }
    let created = chrono::Utc::now();
    let mut parts: Vec<Part> = Vec::new();

    let (schemas, private) = schema_parts(config_path, &config);
    let scrub = Scrubber::new(private, known_secrets(&config));

    let logs = log_parts(&config, SystemTime::now());
    let mut errors = String::new();
    for (name, text) in &logs {
        for line in text.lines().filter(|l| is_warn_or_error(l)) {
            errors.push_str(name);
            errors.push_str(": ");
            errors.push_str(line);
            errors.push('\n');
        }
    }
    for (name, text) in logs {
        parts.push(Part::text(format!("logs/{name}"), "agent log lines of the last 24 hours", text));
    }
    if parts.is_empty() {
        parts.push(Part::text(
            "logs/README.txt".into(),
            "why there are no log files",
            format!("no agent log file changed in the last 24 hours in {}\n", log_dir(&config).display()),
        ));
    }
    parts.push(Part::text(
        "errors.log".into(),
        "WARN and ERROR lines of the last 24 hours (the error log)",
        errors,
    ));
    parts.push(Part::json(
        "commands.json",
        "the last 50 command records; query text redacted",
        commands(&config),
    ));
    parts.push(Part::json(
        "system.json",
        "operating system, hardware, network configuration, agent version",
        system(live),
    ));
    parts.push(Part::json(
        "config.json",
        "the configuration without credentials, secret references or private names",
        redacted_config(config_path),
    ));
    parts.extend(schemas);
    parts.push(Part::json("doctor.json", "the doctor report", doctor_report(config_path)));
    if let Some(status) = live {
        parts.push(Part::json(
            "status.json",
            "the running agent's status when the bundle was made",
            serde_json::to_value(status).unwrap_or(Value::Null),
        ));
    }

    // Every file through the scrubber (JSON: its string values, so a private name equal to a
    // key does not break the structure); then the manifest describes what is written.
    for part in &mut parts {
        match part.json.take() {
            Some(mut value) => {
                scrub.value(&mut value);
                part.data = serde_json::to_string_pretty(&value).unwrap_or_default();
                part.data.push('\n');
            }
            None => part.data = scrub.text(&part.data),
        }
    }
    let manifest = json!({
        "bundle": "mini-connector diagnostic bundle (spec §8.2)",
        "createdAt": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "connector": scrub.text(&config.connector_name),
        "builtBy": if live.is_some() { "the running agent" } else { "the command line (no agent running)" },
        "logWindowHours": 24,
        "files": parts.iter().map(|p| json!({"name": p.name, "bytes": p.data.len(), "what": p.what})).collect::<Vec<_>>(),
        "neverIncluded": EXCLUDED,
    });
    parts.insert(0, Part::json("manifest.json", "this list", manifest));
    write_zip(&out, &parts, created)
}

/// One file of the bundle.
struct Part {
    name: String,
    what: &'static str,
    /// The file's text.
    data: String,
    /// A JSON file before scrubbing (serialized into `data` afterwards).
    json: Option<Value>,
}

impl Part {
    fn text(name: String, what: &'static str, data: String) -> Self {
        Self { name, what, data, json: None }
    }

    fn json(name: &str, what: &'static str, value: Value) -> Self {
        let mut data = serde_json::to_string_pretty(&value).unwrap_or_default();
        data.push('\n');
        Self { name: name.to_owned(), what, data, json: Some(value) }
    }
}

/// Writes the ZIP next to `out` under a temporary name (0600), then links it into place only if
/// `out` still does not exist.
fn write_zip(
    out: &Path,
    parts: &[Part],
    created: chrono::DateTime<chrono::Utc>,
) -> Result<BundleInfo, DiagError> {
    let fail = |reason: String| DiagError::Write { path: out.to_owned(), reason };
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.{}.tmp", std::process::id(), rand::random::<u32>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&tmp).map_err(|e| fail(e.to_string()))?;
    let result = (|| {
        use chrono::{Datelike as _, Timelike as _};
        let when = zip::DateTime::from_date_and_time(
            u16::try_from(created.year()).unwrap_or(1980),
            created.month() as u8,
            created.day() as u8,
            created.hour() as u8,
            created.minute() as u8,
            created.second() as u8,
        )
        .unwrap_or_default();
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(when)
            .unix_permissions(0o600);
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        for part in parts {
            zip.start_file(part.name.as_str(), options).map_err(|e| e.to_string())?;
            zip.write_all(part.data.as_bytes()).map_err(|e| e.to_string())?;
        }
        let mut writer = zip.finish().map_err(|e| e.to_string())?;
        writer.flush().map_err(|e| e.to_string())?;
        writer.get_ref().sync_all().map_err(|e| e.to_string())?;
        // Linking fails if the name exists: a file that appeared meanwhile is not replaced.
        match std::fs::hard_link(&tmp, out) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err("exists".to_owned()),
            Err(_) if !out.exists() => std::fs::rename(&tmp, out).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {}
        Err(reason) if reason == "exists" => return Err(DiagError::Exists(out.to_owned())),
        Err(reason) => return Err(fail(reason)),
    }
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BundleInfo {
        path: out.display().to_string(),
        bytes,
        files: parts.iter().map(|p| p.name.clone()).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Scrubbing

/// Removes private names and known secret values from text, after [`crate::logging::redact`].
struct Scrubber {
    /// Lowercase private identifiers (tables, columns, views; bare names).
    private: BTreeSet<String>,
    /// Secret values (API key, vault entries), longest first.
    secrets: Vec<zeroize::Zeroizing<String>>,
}

impl Scrubber {
    fn new(private: BTreeSet<String>, mut secrets: Vec<zeroize::Zeroizing<String>>) -> Self {
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { private, secrets }
    }

    /// Scrubs every string value (and leaves keys, numbers and structure alone).
    fn value(&self, value: &mut Value) {
        match value {
            Value::String(text) => *text = self.text(text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    fn text(&self, text: &str) -> String {
        let mut out = crate::logging::redact(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REMOVED);
            }
        }
        if self.private.is_empty() {
            return out;
        }
        mask_identifiers(&out, &self.private)
    }
}

/// Replaces every identifier (a run of letters, digits, `_`, `$`) whose lowercase form is in
/// `names` with [`PRIVATE`]. Words are slices of `text`; only those as long as a name are
/// compared (logs are tens of MB).
fn mask_identifiers(text: &str, names: &BTreeSet<String>) -> String {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let lengths: BTreeSet<usize> = names.iter().map(String::len).collect();
    let mut out = String::with_capacity(text.len());
    let mut word_start: Option<usize> = None;
    let flush = |from: usize, to: usize, out: &mut String| {
        let word = &text[from..to];
        let private = lengths.contains(&word.len())
            && names.iter().any(|n| n.len() == word.len() && n.eq_ignore_ascii_case(word))
            || (!word.is_ascii() && names.contains(&word.to_lowercase()));
        out.push_str(if private { PRIVATE } else { word });
    };
    let mut copied = 0;
    for (i, c) in text.char_indices() {
        match (is_ident(c), word_start) {
            (true, None) => {
                out.push_str(&text[copied..i]);
                word_start = Some(i);
            }
            (false, Some(from)) => {
                flush(from, i, &mut out);
                word_start = None;
                copied = i;
            }
            _ => {}
        }
    }
    match word_start {
        Some(from) => flush(from, text.len(), &mut out),
        None => out.push_str(&text[copied..]),
    }
    out
}

/// The values of the secrets this configuration uses, to cut out of the bundle wherever one
/// shows up: the API key and every vault entry. What cannot be read (another user's vault) is
/// skipped; `redact` still masks key-shaped text.
fn known_secrets(config: &AgentConfig) -> Vec<zeroize::Zeroizing<String>> {
    let mut out = Vec::new();
    if let Ok(key) = config.load_api_key() {
        out.push(zeroize::Zeroizing::new(key.expose().to_owned()));
    }
    if let Ok(Some(vault)) = config.open_existing_vault()
        && let Ok(ids) = vault.ids()
    {
        for id in ids {
            if let Ok(secret) = vault.get(&id)
                && let Some(text) = secret.expose_str()
            {
                out.push(zeroize::Zeroizing::new(text.to_owned()));
            }
        }
    }
    for connection in &config.connections {
        if let Some(reference) = &connection.password_ref {
            let value = if let Some(var) = reference.strip_prefix("env:") {
                std::env::var(var).ok()
            } else if let Some(path) = reference.strip_prefix("file:") {
                std::fs::read_to_string(path).ok().map(|t| t.lines().next().unwrap_or_default().to_owned())
            } else {
                None
            };
            if let Some(value) = value {
                out.push(zeroize::Zeroizing::new(value));
            }
        }
    }
    out
}

/// Strips `user:password@` from a URL.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[credentials removed]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

fn log_dir(config: &AgentConfig) -> PathBuf {
    match &config.log_dir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => config.config_dir().join(dir),
        None => config.log_dir(),
    }
}

/// The agent's log files changed in the last 24 hours, each cut to its lines of that window
/// (a line without a timestamp belongs to the one before it), oldest file first; at most
/// [`MAX_LOG_BYTES`] in all, the newest kept.
fn log_parts(config: &AgentConfig, now: SystemTime) -> Vec<(String, String)> {
    let cutoff_time = now - LOG_WINDOW;
    let cutoff = chrono::DateTime::<chrono::Utc>::from(cutoff_time);
    let Ok(entries) = std::fs::read_dir(log_dir(config)) else { return Vec::new() };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let modified = meta.modified().ok()?;
            (meta.is_file() && modified >= cutoff_time).then(|| (modified, e.path()))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut budget = MAX_LOG_BYTES;
    for (_, path) in files.into_iter().rev() {
        let Ok(file) = std::fs::File::open(&path) else { continue };
        let mut text = String::new();
        let mut keep = true;
        for line in std::io::BufReader::new(file).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            if let Some(at) = line_time(&line) {
                keep = at >= cutoff;
            }
            if keep {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if text.len() > budget {
            let mut start = text.len() - budget;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text = text[start..].to_owned();
        }
        budget -= text.len();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push((name, text));
        if budget == 0 {
            break;
        }
    }
    out.reverse();
    out
}

/// The time at the start of a log line (`2026-12-02T06:49:56.123456Z  INFO ...`).
fn line_time(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let first = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first).ok().map(|t| t.with_timezone(&chrono::Utc))
}

fn is_warn_or_error(line: &str) -> bool {
    line_time(line).is_some() && matches!(line.split_whitespace().nth(1), Some("WARN" | "ERROR"))
}

// ---------------------------------------------------------------------------------------------
// Commands

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(queue::rfc3339_ms(ms)))
}

/// The last [`COMMANDS`] records of the durable queue, without the query text, parameters or
/// answers.
fn commands(config: &AgentConfig) -> Value {
    let path = config.queue_path();
    if !path.exists() {
        return json!({"commands": [], "note": "no command queue yet (the agent has not run with this configuration)"});
    }
    let store = match queue::Store::open_read_only(&path) {
        Ok(store) => store,
        Err(e) => return json!({"commands": [], "error": format!("cannot open the command queue: {e}")}),
    };
    let records = match store.recent(COMMANDS) {
        Ok(records) => records,
        Err(e) => return json!({"commands": [], "error": format!("cannot read the command queue: {e}")}),
    };
    let list: Vec<Value> = records
        .iter()
        .map(|c| {
            let frame: Option<Value> = c.frame_json.as_deref().and_then(|f| serde_json::from_str(f).ok());
            let query = frame.as_ref().and_then(|f| f.pointer("/payload/query")).and_then(Value::as_str);
            let params = frame.as_ref().and_then(|f| f.pointer("/payload/params")).and_then(Value::as_array);
            json!({
                "commandId": c.command_id,
                "executionId": c.execution_id,
                "activityId": c.activity_id,
                "connection": c.connection,
                "state": c.state.as_str(),
                "attempts": c.attempts,
                "receivedAt": time(Some(c.received_at_ms)),
                "startedAt": time(c.started_at_ms),
                "finishedAt": time(c.finished_at_ms),
                "expiresAt": time(c.expires_at_ms),
                "durationMs": c.duration_ms,
                "rowCount": c.row_count,
                "resultBytes": c.result_bytes,
                "code": c.code,
                "retryable": c.retryable,
                "acknowledged": c.acknowledged,
                "purged": c.purged,
                "query": {
                    "redacted": true,
                    "length": query.map(str::len),
                    "sha256Prefix": c.query_hash.get(..16),
                    "params": params.map(Vec::len),
                },
            })
        })
        .collect();
    json!({"count": list.len(), "commands": list})
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Whether a configuration key names a secret or a reference to one.
fn secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "apikey", "api_key", "credential", "pinhash", "privatekey"]
        .iter()
        .any(|s| lower.contains(s))
        || lower.ends_with("ref")
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if secret_key(key) {
                    if !item.is_null() {
                        *item = Value::String("[removed]".into());
                    }
                } else {
                    redact_value(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(text) => *text = crate::logging::redact(&strip_userinfo(text)),
        _ => {}
    }
}

/// The configuration file as written (so fields this module does not know are covered too),
/// secrets and private names removed: `schemaPolicy` becomes counts.
fn redacted_config(config_path: &Path) -> Value {
    let text = match std::fs::read_to_string(config_path) {
        Ok(text) => text,
        Err(e) => return json!({"error": format!("cannot read the configuration: {e}")}),
    };
    let mut value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => return json!({"error": format!("the configuration is not JSON: {e}")}),
    };
    if let Some(policies) = value.get_mut("schemaPolicy").and_then(Value::as_object_mut) {
        for policy in policies.values_mut() {
            let count = |v: &Value, key: &str| match v.get(key) {
                Some(Value::Array(a)) => a.len(),
                Some(Value::Object(o)) => o.values().map(|c| c.as_array().map_or(0, Vec::len)).sum(),
                _ => 0,
            };
            *policy = json!({
                "privateTables": count(policy, "privateTables"),
                "privateColumns": count(policy, "privateColumns"),
                "approvedTables": policy.get("approvedTables").and_then(Value::as_array).map(Vec::len),
                "approvedFunctions": count(policy, "approvedFunctions"),
                "note": "names left out of the diagnostic bundle",
            });
        }
    }
    redact_value(&mut value);
    value
}

// ---------------------------------------------------------------------------------------------
// Schema

/// Each connection's schema as the cloud may see it, and every private name (bare, lowercase):
/// private tables and columns of the policy and the views that read them.
fn schema_parts(config_path: &Path, config: &AgentConfig) -> (Vec<Part>, BTreeSet<String>) {
    let mut private = BTreeSet::new();
    let bare = |name: &str| name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_lowercase();
    for policy in config.schema_policy.values() {
        private.extend(policy.private_tables.iter().map(|t| bare(t)));
        for columns in policy.private_columns.values() {
            private.extend(columns.iter().map(|c| bare(c)));
        }
    }
    let mut parts = Vec::new();
    for connection in &config.connections {
        let configured = config.schema_policy.get(&connection.name).map(|p| p.to_gate()).unwrap_or_default();
        let (schema, source) = match crate::setup::schema::discover_schema(config, connection, &mut |_| {}) {
            Ok(schema) => (Ok(schema), "discovered when the bundle was made"),
            Err(live) => {
                let file = crate::setup::schema::schema_file(config_path, &connection.name);
                match crate::setup::schema::load_saved(&file) {
                    Ok(Some(schema)) => {
                        (Ok(schema), "the last saved discovery (the database did not answer)")
                    }
                    _ => (Err(live.to_string()), "unavailable"),
                }
            }
        };
        let value = match schema {
            Ok(schema) => {
                private
                    .extend(crate::policy::private_views(&configured, &schema).iter().map(|v| bare(&v.name)));
                let effective = crate::policy::effective_policy(&configured, &schema);
                let visible = crate::policy::visible_schema(&schema, &effective);
                json!({"source": source, "schema": visible})
            }
            Err(error) => json!({"source": source, "error": error}),
        };
        let file: String = connection
            .name
            .chars()
            .map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        parts.push(Part::json(
            &format!("schema/{file}.json"),
            "schema metadata as the cloud sees it (private objects left out)",
            value,
        ));
    }
    (parts, private)
}

// ---------------------------------------------------------------------------------------------
// System

#[cfg(target_os = "linux")]
fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|t| t.trim().to_owned())
}

/// OS, hardware and network facts, from `/proc`, `/sys` and `/etc` on Linux and what the
/// standard library knows elsewhere.
fn system(live: Option<&StatusSnapshot>) -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).ok();
    let proxy: serde_json::Map<String, Value> = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .iter()
    .filter_map(|var| std::env::var(var).ok().map(|v| ((*var).to_owned(), Value::String(strip_userinfo(&v)))))
    .collect();
    let mut out = json!({
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "agentUptimeSecs": live.map(|s| s.uptime_secs),
        "os": std::env::consts::OS,
        "family": std::env::consts::FAMILY,
        "arch": std::env::consts::ARCH,
        "cpuCount": cpus,
        "proxyEnvironment": proxy,
    });
    platform(&mut out);
    out
}

#[cfg(target_os = "linux")]
fn platform(out: &mut Value) {
    let os_release = read("/etc/os-release").and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
    });
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let mem = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    let cpu_model = read("/proc/cpuinfo").and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    });
    let uptime = read("/proc/uptime")
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
        .map(|s| s as u64);
    let resolv = read("/etc/resolv.conf").unwrap_or_default();
    let dns: Vec<&str> =
        resolv.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).map(str::trim).collect();
    let search: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search").or_else(|| l.trim().strip_prefix("domain")))
        .flat_map(str::split_whitespace)
        .collect();
    let extra = json!({
        "osName": os_release,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "kernelVersion": read("/proc/version"),
        "hostname": read("/proc/sys/kernel/hostname"),
        "memoryTotalBytes": mem("MemTotal"),
        "memoryAvailableBytes": mem("MemAvailable"),
        "cpuModel": cpu_model,
        "systemUptimeSecs": uptime,
        "network": {
            "interfaces": interfaces(),
            "dnsResolvers": dns,
            "dnsSearch": search,
        },
    });
    merge(out, extra);
}

#[cfg(not(target_os = "linux"))]
fn platform(out: &mut Value) {
    let host = std::env::var("COMPUTERNAME").or_else(|_| std::env::var("HOSTNAME")).ok();
    merge(
        out,
        json!({
            "hostname": host,
            "network": {"note": "interfaces and resolvers are collected on Linux only in this build"},
        }),
    );
}

fn merge(out: &mut Value, extra: Value) {
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
}

/// Interfaces (`/sys/class/net`) with state, MTU and addresses: IPv6 from `/proc/net/if_inet6`,
/// IPv4 from the local entries of `/proc/net/fib_trie` placed on an interface by
/// `/proc/net/route`.
#[cfg(target_os = "linux")]
fn interfaces() -> Vec<Value> {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    let mut addresses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("/proc/net/if_inet6").unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 6 && fields[0].len() == 32 {
            let groups: Vec<&str> = (0..8).map(|i| &fields[0][i * 4..i * 4 + 4]).collect();
            if let Ok(addr) = groups.join(":").parse::<std::net::Ipv6Addr>() {
                let prefix = u32::from_str_radix(fields[2], 16).unwrap_or(0);
                addresses.entry(fields[5].to_owned()).or_default().push(format!("{addr}/{prefix}"));
            }
        }
    }
    // Routes: (interface, destination, mask), hex in host (little-endian) order.
    let routes: Vec<(String, u32, u32)> = read("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_le);
            Some((f.first()?.to_string(), hex(f.get(1)?)?, hex(f.get(7)?)?))
        })
        .collect();
    let trie = read("/proc/net/fib_trie").unwrap_or_default();
    let lines: Vec<&str> = trie.lines().collect();
    let mut seen = BTreeSet::new();
    for pair in lines.windows(2) {
        let (Some(addr), true) = (pair[0].trim().strip_prefix("|-- "), pair[1].contains("/32 host LOCAL"))
        else {
            continue;
        };
        let Ok(ip) = addr.trim().parse::<Ipv4Addr>() else { continue };
        if !seen.insert(ip) {
            continue;
        }
        let bits = u32::from(ip).to_le();
        let iface = if ip.is_loopback() {
            Some(("lo".to_owned(), 8))
        } else {
            routes
                .iter()
                .filter(|(_, dest, mask)| *mask != 0 && bits & mask == *dest)
                .max_by_key(|(_, _, mask)| mask.count_ones())
                .map(|(name, _, mask)| (name.clone(), mask.count_ones()))
        };
        let (name, prefix) = iface.unwrap_or_else(|| ("(no matching route)".into(), 32));
        addresses.entry(name).or_default().push(format!("{ip}/{prefix}"));
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names {
            let base = format!("/sys/class/net/{name}");
            out.push(json!({
                "name": name,
                "state": read(&format!("{base}/operstate")),
                "mtu": read(&format!("{base}/mtu")).and_then(|m| m.parse::<u32>().ok()),
                "addresses": addresses.remove(&name).unwrap_or_default(),
            }));
        }
    }
    for (name, addrs) in addresses {
        out.push(json!({"name": name, "addresses": addrs}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names_are_masked_as_whole_identifiers_only() {
        let names: BTreeSet<String> = ["payroll".to_owned(), "ssn".to_owned()].into();
        assert_eq!(
            mask_identifiers("SELECT ssn FROM public.PAYROLL, payroll_archive; v=\"Payroll\"", &names),
            "SELECT <private> FROM public.<private>, payroll_archive; v=\"<private>\""
        );
    }

    #[test]
    fn json_files_keep_their_keys_when_a_private_name_equals_one() {
        let scrub =
            Scrubber::new(["name".to_owned()].into(), vec![zeroize::Zeroizing::new("s3cr3t-pw".into())]);
        let mut value = json!({"name": "customers", "columns": [{"name": "name"}, {"name": "id"}],
            "error": "bad password s3cr3t-pw for name"});
        scrub.value(&mut value);
        assert_eq!(
            value,
            json!({"name": "customers", "columns": [{"name": "<private>"}, {"name": "id"}],
                "error": "bad password [secret removed] for <private>"})
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            strip_userinfo("http://bob:hunter2@proxy:3128"),
            "http://[credentials removed]@proxy:3128"
        );
        assert_eq!(strip_userinfo("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
        assert_eq!(strip_userinfo("no url"), "no url");
    }

    #[test]
    fn secret_keys_and_references_are_removed_from_the_configuration() {
        let mut value = json!({
            "apiKeyRef": "vault://apikey", "localPinHash": "pbkdf2", "proxyUrl": "http://u:p@proxy:1",
            "proxyPasswordRef": "vault://proxy", "pinnedSpki": ["abc"], "pingIntervalMs": 20000,
            "connections": [{"name": "erp", "passwordRef": "env:X", "connectionString": "host=a password=x"}],
            "notifications": {"email": {"username": "ops", "smtpPassword": "x"}},
        });
        redact_value(&mut value);
        let text = value.to_string();
        for gone in ["vault://", "pbkdf2", "u:p@", "env:X", "password=x", "\"x\""] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert_eq!(value["pingIntervalMs"], 20000);
        assert_eq!(value["notifications"]["email"]["username"], "ops");
    }

    #[test]
    fn log_lines_outside_the_window_are_left_out_with_their_continuations() {
        let dir = std::env::temp_dir().join(format!("mc-diag-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = chrono::Utc::now();
        let old = (now - chrono::Duration::hours(30)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let new = (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        std::fs::write(
            dir.join("agent.2026-01-01.log"),
            format!(
                "{old}  INFO main: old line\nold continuation\n{new}  WARN main: new line\nnew continuation\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("other.log"), "not ours\n").unwrap();
        let mut config: AgentConfig = serde_json::from_value(json!({
            "connectorName": "x", "apiKeyRef": "env:NONE", "cloudUrl": "wss://localhost/ws",
        }))
        .unwrap();
        config.log_dir = Some(dir.clone());
        let parts = log_parts(&config, SystemTime::now());
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1, format!("{new}  WARN main: new line\nnew continuation\n"));
        assert!(is_warn_or_error(parts[0].1.lines().next().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
