//! Golden tests of the wire format: every example frame in `docs/PROTOCOL.md` is a fixture in
//! `tests/fixtures/protocol/`, and each fixture must decode and re-encode to the same JSON value.
//! A change to a field name, an enum spelling, an optional field's presence or a default shows up
//! here instead of silently changing the wire contract.
//!
//! Fixture names: `outbound_<type>[_<variant>].json` (agent -> cloud, decoded as [`Outbound`]),
//! `inbound_<type>[_<variant>].json` (cloud -> agent, decoded as [`Inbound`]); other files
//! (test vectors) have their own tests.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use mini_connector::protocol::{
    ApiKey, DecodeError, ErrorCode, Frame, Inbound, MAX_FRAME_BYTES, Outbound, chunk_signature,
    verify_chunk_signature,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");

/// Which decoder a fixture belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
}

fn frame_fixtures() -> Vec<(PathBuf, Direction)> {
    let mut found: Vec<(PathBuf, Direction)> = fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("cannot list {FIXTURES}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .filter_map(|path| {
            let name = file_name(&path);
            let direction = if name.starts_with("outbound_") {
                Direction::Outbound
            } else if name.starts_with("inbound_") {
                Direction::Inbound
            } else {
                return None;
            };
            Some((path, direction))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no frame fixtures in {FIXTURES}");
    found
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned()
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn fixture(name: &str) -> Value {
    read_json(&Path::new(FIXTURES).join(name))
}

/// Decodes `text` with the decoder of `direction` and re-encodes it.
fn round_trip(direction: Direction, text: &str) -> Result<Value, DecodeError> {
    let encoded = match direction {
        Direction::Outbound => Outbound::decode(text)?.encode(),
        Direction::Inbound => Inbound::decode(text)?.encode(),
    };
    Ok(serde_json::from_str(&encoded).expect("Frame::encode produces JSON"))
}

fn decode_inbound_err(value: &Value) -> DecodeError {
    match Inbound::decode(&value.to_string()) {
        Ok(frame) => panic!("expected a decode error for {value}, got {frame:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_fixture_round_trips_unchanged() {
    for (path, direction) in frame_fixtures() {
        let text = fs::read_to_string(&path).expect("readable fixture");
        let expected = read_json(&path);
        let actual = round_trip(direction, &text)
            .unwrap_or_else(|e| panic!("{}: does not decode as {direction:?}: {e}", path.display()));
        assert_eq!(
            actual,
            expected,
            "{}: re-encoded frame differs from the fixture:\n{}",
            path.display(),
            serde_json::to_string_pretty(&actual).unwrap_or_default()
        );
        // The fixture's `type` names the file: `outbound_execution_result_inline` holds an
        // `execution_result`.
        let kind = expected["type"].as_str().expect("fixture has a string `type`");
        let prefix = match direction {
            Direction::Outbound => "outbound_",
            Direction::Inbound => "inbound_",
        };
        assert!(
            file_name(&path).starts_with(&format!("{prefix}{kind}")),
            "{}: type `{kind}`",
            path.display()
        );
    }
}

#[test]
fn every_frame_type_has_a_fixture() {
    let fixtures = frame_fixtures();
    let kinds = |wanted: Direction| -> BTreeSet<String> {
        fixtures
            .iter()
            .filter(|(_, direction)| *direction == wanted)
            .map(|(path, _)| read_json(path)["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let expected = |types: &[&str]| types.iter().map(|t| (*t).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(kinds(Direction::Outbound), expected(Outbound::TYPES));
    assert_eq!(kinds(Direction::Inbound), expected(Inbound::TYPES));
}

#[test]
fn both_result_payload_kinds_have_a_fixture() {
    assert_eq!(fixture("outbound_execution_result_inline.json")["result"]["kind"], "inline");
    assert_eq!(fixture("outbound_execution_result_buffered.json")["result"]["kind"], "buffered");
}

/// Adds an unknown field to every JSON object in `value`, at every depth.
fn add_unknown_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                add_unknown_fields(child);
            }
            map.insert("futureField".into(), serde_json::json!({ "added": "in protocol v2" }));
        }
        Value::Array(items) => items.iter_mut().for_each(add_unknown_fields),
        _ => {}
    }
}

#[test]
fn unknown_fields_are_ignored_at_every_depth() {
    for (path, direction) in frame_fixtures() {
        let expected = read_json(&path);
        let mut extended = expected.clone();
        add_unknown_fields(&mut extended);
        let actual = round_trip(direction, &extended.to_string())
            .unwrap_or_else(|e| panic!("{}: an unknown field broke decoding: {e}", path.display()));
        assert_eq!(actual, expected, "{}: unknown fields must be dropped, nothing else", path.display());
    }
}

#[test]
fn fixtures_are_the_examples_of_the_protocol_doc() {
    let doc = fs::read_to_string(DOC).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    // Each example is announced by `<!-- fixture: NAME -->` and is the next ```json block.
    let mut in_doc = BTreeSet::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("<!-- fixture:") else { continue };
        let name = rest.trim_end_matches("-->").trim().to_owned();
        let opening = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert_eq!(opening.trim(), "```json", "{name}: the marker must be followed by a ```json block");
        let block: String =
            lines.by_ref().take_while(|l| l.trim() != "```").map(|l| format!("{l}\n")).collect();
        let example: Value =
            serde_json::from_str(&block).unwrap_or_else(|e| panic!("doc example {name} is not JSON: {e}"));
        assert_eq!(example, fixture(&name), "doc example {name} differs from its fixture");
        assert!(in_doc.insert(name.clone()), "{name} appears twice in the doc");
    }
    let on_disk: BTreeSet<String> = frame_fixtures().iter().map(|(path, _)| file_name(path)).collect();
    assert_eq!(in_doc, on_disk, "every frame fixture is a doc example and vice versa");
}

// ---------------------------------------------------------------------------------------------
// Decode errors

#[test]
fn each_missing_required_command_field_is_malformed_and_named() {
    let command = fixture("inbound_command.json");
    for field in ["commandId", "executionId", "activityId", "operation", "payload"] {
        let mut frame = command.clone();
        frame.as_object_mut().expect("object").remove(field);
        let err = decode_inbound_err(&frame);
        assert_eq!(err.code, ErrorCode::MalformedMessage, "without {field}: {err}");
        assert!(err.message.contains(&format!("`{field}`")), "without {field}: {}", err.message);
    }
    for field in ["query", "idempotencyKey"] {
        let mut frame = command.clone();
        frame["payload"].as_object_mut().expect("object").remove(field);
        let err = decode_inbound_err(&frame);
        assert_eq!(err.code, ErrorCode::MalformedMessage, "without payload.{field}: {err}");
        assert!(err.message.contains(&format!("`{field}`")), "without payload.{field}: {}", err.message);
        // The command id was readable, so the error can be addressed to the command.
        assert_eq!(err.command_id.as_deref(), Some("cmd-5b0f3c9e"));
    }
}

#[test]
fn optional_command_fields_may_be_missing() {
    let mut frame = fixture("inbound_command.json");
    let payload = frame["payload"].as_object_mut().expect("object");
    for field in ["params", "timeout", "connection", "expiresAt"] {
        payload.remove(field);
    }
    let Ok(Inbound::Command(command)) = Inbound::decode(&frame.to_string()) else {
        panic!("a command without optional fields must decode");
    };
    assert!(command.payload.params.is_empty());
    assert_eq!(
        (command.payload.timeout, command.payload.connection, command.payload.expires_at),
        (None, None, None)
    );
}

#[test]
fn execution_error_command_id_is_always_written_and_may_be_missing() {
    let mut frame = fixture("outbound_execution_error_bad_frame.json");
    frame["commandId"] = Value::Null;
    assert_eq!(round_trip(Direction::Outbound, &frame.to_string()).expect("decodes"), frame);
    let mut without = frame.clone();
    without.as_object_mut().expect("object").remove("commandId");
    // Decoders accept it missing; encoders always write it (as `null`).
    assert_eq!(round_trip(Direction::Outbound, &without.to_string()).expect("decodes"), frame);
}

#[test]
fn mistyped_fields_are_malformed() {
    let command = fixture("inbound_command.json");
    for (pointer, bad) in [
        ("/commandId", serde_json::json!(42)),
        ("/operation", serde_json::json!("export")),
        ("/payload/timeout", serde_json::json!("30s")),
        ("/payload/params", serde_json::json!("DE")),
        ("/type", serde_json::json!(["command"])),
    ] {
        let mut frame = command.clone();
        *frame.pointer_mut(pointer).expect("field exists") = bad;
        assert_eq!(decode_inbound_err(&frame).code, ErrorCode::MalformedMessage, "{pointer}");
    }
    for text in ["", "{", "[]", "\"command\"", "{}"] {
        assert_eq!(Inbound::decode(text).unwrap_err().code, ErrorCode::MalformedMessage, "{text:?}");
    }
}

#[test]
fn unknown_enum_values_are_malformed_not_ignored() {
    // Forward compatibility covers fields, not values: a new error code or status needs a new
    // protocol version (see "Versioning" in the doc).
    let mut error = fixture("inbound_error.json");
    error["code"] = serde_json::json!("SOMETHING_NEW");
    assert_eq!(decode_inbound_err(&error).code, ErrorCode::MalformedMessage);
    let mut status = fixture("outbound_status.json");
    status["status"] = serde_json::json!("sleeping");
    assert_eq!(Outbound::decode(&status.to_string()).unwrap_err().code, ErrorCode::MalformedMessage);
}

#[test]
fn unknown_type_is_unknown_message_type() {
    let err = Inbound::decode(r#"{"type":"bogus"}"#).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownMessageType);
    assert!(err.message.contains("bogus"), "{}", err.message);
    assert_eq!(Outbound::decode(r#"{"type":"bogus"}"#).unwrap_err().code, ErrorCode::UnknownMessageType);
    // Types are per direction: an outbound type sent to the agent is unknown there.
    assert_eq!(
        Inbound::decode(&fixture("outbound_status.json").to_string()).unwrap_err().code,
        ErrorCode::UnknownMessageType
    );
    assert_eq!(
        Outbound::decode(&fixture("inbound_ack.json").to_string()).unwrap_err().code,
        ErrorCode::UnknownMessageType
    );
    let err = Inbound::decode(r#"{"type":"bogus","commandId":"cmd-1"}"#).unwrap_err();
    assert_eq!(err.command_id.as_deref(), Some("cmd-1"));
}

#[test]
fn frame_over_the_limit_is_payload_too_large() {
    let padding = "a".repeat(MAX_FRAME_BYTES);
    let text = format!(r#"{{"type":"ack","commandId":"{padding}"}}"#);
    assert!(text.len() > MAX_FRAME_BYTES);
    let err = Inbound::decode(&text).unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    assert_eq!(Outbound::decode(&text).unwrap_err().code, ErrorCode::PayloadTooLarge);
    // Exactly at the limit is still decoded (as JSON), so the limit is inclusive.
    let at_limit = format!(r#"{{"type":"ack","commandId":"{}"}}"#, &padding[..MAX_FRAME_BYTES - 29]);
    assert_eq!(at_limit.len(), MAX_FRAME_BYTES);
    assert!(Inbound::decode(&at_limit).is_ok());
}

// ---------------------------------------------------------------------------------------------
// API key

#[test]
fn auth_fixture_key_is_valid_and_masked_in_debug() {
    let auth = fixture("outbound_auth.json");
    let key_text = auth["apiKey"].as_str().expect("apiKey string");
    let key = ApiKey::parse(key_text).expect("the fixture key passes ApiKey::parse");
    assert_eq!(key.tenant_id(), "abc123");
    assert_eq!(key.masked(), "vmc_abc123_****_cee34");
    let random = key_text.split('_').nth(2).expect("random part");
    assert_eq!(random, "x7f9k2p5w8q1");

    let frame = Outbound::decode(&auth.to_string()).expect("auth decodes");
    let debug = format!("{frame:?}");
    assert!(!debug.contains(random), "Debug of an auth frame leaks the key: {debug}");
    assert!(debug.contains("vmc_abc123_****_cee34"), "{debug}");
    // ... while the wire form carries the full key.
    assert!(frame.encode().contains(key_text));
}

#[test]
fn api_key_checksum_rule_matches_the_doc() {
    // The worked example of the doc: the first five hex digits of SHA-256("vmc_abc123_x7f9k2p5w8q1").
    let digest = hex::encode(Sha256::digest(b"vmc_abc123_x7f9k2p5w8q1"));
    assert_eq!(digest, "cee34bd477f4edf15773f8c5142f43107dcc7d960947e989b34e2ff32fe12466");
    assert!(ApiKey::parse("vmc_abc123_x7f9k2p5w8q1_cee34").is_ok());
    // The spec's example key (§2.3) does not carry a checksum under this rule.
    assert!(ApiKey::parse("vmc_abc123_x7f9k2p5w8q1_c4e2a").is_err());
    // An auth frame with a bad key is malformed (the key is checked while decoding).
    let mut auth = fixture("outbound_auth.json");
    auth["apiKey"] = serde_json::json!("vmc_abc123_x7f9k2p5w8q1_c4e2a");
    let err = Outbound::decode(&auth.to_string()).unwrap_err();
    assert_eq!(err.code, ErrorCode::MalformedMessage);
    assert!(!err.message.contains("x7f9k2p5w8q1"), "decode error leaks the key: {}", err.message);
}

#[test]
fn connected_hmac_key_is_hidden_in_debug() {
    let connected = fixture("inbound_connected.json");
    let key = connected["upload"]["hmacKey"].as_str().expect("hmacKey");
    assert_eq!(key.len(), 64);
    let frame = Inbound::decode(&connected.to_string()).expect("connected decodes");
    assert!(!format!("{frame:?}").contains(key));
}

// ---------------------------------------------------------------------------------------------
// Chunks

#[test]
fn chunk_signature_matches_the_test_vector() {
    let v = fixture("chunk_signature_vector.json");
    let s = |name: &str| v[name].as_str().unwrap_or_else(|| panic!("{name}")).to_owned();
    let key = hex::decode(s("hmacKey")).expect("hex key");
    let body = hex::decode(s("bodyHex")).expect("hex body");
    let (connection, command) = (s("connectionId"), s("commandId"));
    let seq = u32::try_from(v["seq"].as_u64().expect("seq")).expect("u32 seq");
    let last = v["final"].as_bool().expect("final");
    let flag = u8::from(last);
    assert_eq!(s("signedPrefix"), format!("mc-chunk-v1\n{connection}\n{command}\n{seq}\n{flag}\n"));

    // The body is the zlib-compressed result stream; byteCount and sha256 cover the stream.
    let mut stream = Vec::new();
    flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut stream).expect("zlib body");
    assert_eq!(String::from_utf8(stream.clone()).expect("utf-8"), s("stream"));
    assert_eq!(stream.len() as u64, v["streamByteCount"].as_u64().expect("byte count"));
    assert_eq!(hex::encode(Sha256::digest(&stream)), s("streamSha256"));
    let first_line: Value = serde_json::from_slice(stream.split(|b| *b == b'\n').next().expect("line"))
        .expect("first line is JSON");
    assert!(first_line["columns"].is_array());

    let signature = s("signature");
    assert_eq!(hex::encode(chunk_signature(&key, &connection, &command, seq, last, &body)), signature);
    assert!(verify_chunk_signature(&key, &connection, &command, seq, last, &body, &signature));
    assert!(verify_chunk_signature(&key, &connection, &command, seq, last, &body, &signature.to_uppercase()));
    assert!(!verify_chunk_signature(&key, &connection, &command, seq + 1, last, &body, &signature));
    assert!(!verify_chunk_signature(&key, &connection, &command, seq, !last, &body, &signature));
    assert!(!verify_chunk_signature(&key, "other-connection", &command, seq, last, &body, &signature));
    assert!(!verify_chunk_signature(&key, &connection, &command, seq, last, &stream, &signature));
}

// ---------------------------------------------------------------------------------------------
// Error codes and wire types in the doc

/// Every error code, in declaration order.
const ALL_CODES: [ErrorCode; 25] = [
    ErrorCode::AuthFailed,
    ErrorCode::DuplicateConnection,
    ErrorCode::WriteOperationRejected,
    ErrorCode::SqlSyntaxError,
    ErrorCode::WriteKeywordDetected,
    ErrorCode::SchemaAccessDenied,
    ErrorCode::QueryTimeout,
    ErrorCode::ConnectionPoolExhausted,
    ErrorCode::CommandExpired,
    ErrorCode::VaultDecryptError,
    ErrorCode::MalformedMessage,
    ErrorCode::UnknownMessageType,
    ErrorCode::PayloadTooLarge,
    ErrorCode::QueryFailed,
    ErrorCode::UnknownConnection,
    ErrorCode::CommandCancelled,
    ErrorCode::AgentBusy,
    ErrorCode::UploadFailed,
    ErrorCode::ChunkSignatureInvalid,
    ErrorCode::ConnectorOffline,
    ErrorCode::AgentPaused,
    ErrorCode::InternalError,
    ErrorCode::DatabaseUnavailable,
    ErrorCode::CommandInterrupted,
    ErrorCode::ResultUnavailable,
];

/// Position of a code in [`ALL_CODES`]. Exhaustive on purpose: a new variant does not compile
/// until it is listed here, in `ALL_CODES` and in the doc's table.
fn code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::AuthFailed => 0,
        ErrorCode::DuplicateConnection => 1,
        ErrorCode::WriteOperationRejected => 2,
        ErrorCode::SqlSyntaxError => 3,
        ErrorCode::WriteKeywordDetected => 4,
        ErrorCode::SchemaAccessDenied => 5,
        ErrorCode::QueryTimeout => 6,
        ErrorCode::ConnectionPoolExhausted => 7,
        ErrorCode::CommandExpired => 8,
        ErrorCode::VaultDecryptError => 9,
        ErrorCode::MalformedMessage => 10,
        ErrorCode::UnknownMessageType => 11,
        ErrorCode::PayloadTooLarge => 12,
        ErrorCode::QueryFailed => 13,
        ErrorCode::UnknownConnection => 14,
        ErrorCode::CommandCancelled => 15,
        ErrorCode::AgentBusy => 16,
        ErrorCode::UploadFailed => 17,
        ErrorCode::ChunkSignatureInvalid => 18,
        ErrorCode::ConnectorOffline => 19,
        ErrorCode::AgentPaused => 20,
        ErrorCode::InternalError => 21,
        ErrorCode::DatabaseUnavailable => 22,
        ErrorCode::CommandInterrupted => 23,
        ErrorCode::ResultUnavailable => 24,
    }
}

/// The cells of the one doc table row with `width` cells that starts with `` | `name` | ``.
/// (Field tables have 4 columns, the wire type table 3, the error code table 5.)
fn doc_row(doc: &str, name: &str, width: usize) -> Vec<String> {
    let start = format!("| `{name}` |");
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with(&start))
        .map(|l| l.trim().trim_matches('|').split('|').map(|cell| cell.trim().to_owned()).collect::<Vec<_>>())
        .filter(|cells| cells.len() == width)
        .collect();
    assert_eq!(rows.len(), 1, "expected exactly one {width}-column table row for `{name}` in the doc");
    rows.into_iter().next().unwrap_or_default()
}

#[test]
fn error_code_table_matches_the_code() {
    let doc = fs::read_to_string(DOC).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    for (i, code) in ALL_CODES.into_iter().enumerate() {
        assert_eq!(code_index(code), i);
        let wire = serde_json::to_value(code).expect("serializable");
        assert_eq!(wire, code.as_str(), "serde spelling and as_str agree");
        assert_eq!(serde_json::from_value::<ErrorCode>(wire).expect("deserializable"), code);
        // Row: | `CODE` | meaning | retryable | sent by | origin |
        let row = doc_row(&doc, code.as_str(), 5);
        let retryable = if code.retryable() { "yes" } else { "no" };
        assert_eq!(row[2], retryable, "{code}: retryable column");
    }
}

#[test]
fn wire_type_table_lists_every_wire_type() {
    use drivers::WireType;
    let all = [
        WireType::Integer,
        WireType::Decimal,
        WireType::Float,
        WireType::Boolean,
        WireType::Text,
        WireType::Bytes,
        WireType::Date,
        WireType::Time,
        WireType::Timestamp,
        WireType::TimestampTz,
        WireType::Uuid,
        WireType::Json,
        WireType::Unknown,
    ];
    // Exhaustive on purpose, like `code_index`.
    let _ = |t: WireType| match t {
        WireType::Integer
        | WireType::Decimal
        | WireType::Float
        | WireType::Boolean
        | WireType::Text
        | WireType::Bytes
        | WireType::Date
        | WireType::Time
        | WireType::Timestamp
        | WireType::TimestampTz
        | WireType::Uuid
        | WireType::Json
        | WireType::Unknown => (),
    };
    let doc = fs::read_to_string(DOC).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    for wire_type in all {
        let name = serde_json::to_value(wire_type).expect("serializable");
        doc_row(&doc, name.as_str().expect("string"), 3);
    }
}
