//! The admin API: plain HTTP on loopback, `Authorization: Bearer <token>`, one thread per
//! connection, one request per connection; the request head and body have the same deadlines
//! as on the HTTPS port (`header_timeout`, `body_timeout`).
//!
//! **Budget.** At most 256 requests are served at once (`ADMIN_MAX_SERVING`; a request takes
//! its place once it is read and its token checked, and a blocking `/admin/query` holds it until
//! its answer). At most 64 more connections (`ADMIN_MAX_WAITING`) are read or wait for a place,
//! at most [`ADMIN_QUEUE_WAIT`]; a request that gets none is answered
//! `503 {"error":{"code":"ADMIN_BUSY","retryable":true}}` with `Retry-After: 1`. Beyond those
//! a new connection is closed unanswered (a warning is logged): threads and buffers stay bounded.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /admin/health` | | `{"ok":true,"wsUrl","caCertPath"}` |
//! | `POST /admin/query` | `{"connector","sql","params"?,"timeoutMs"?,"connection"?,"ttlMs"?,"waitMs"?,"idempotencyKey"?}` | outcome, or `{"error":{code,message,retryable}}` |
//! | `GET /admin/connectors` | | `[ConnectorInfo]` |
//! | `POST /admin/keys/revoke` | `{"key": id-or-name}` | `{"revoked":[ids]}` |
//! | `POST /admin/schema-request` | `{"connector"}` | `202 {"requested":true}` |
//! | `POST /admin/cancel` | `{"executionId","reason"?}` | `202 {"requested":true}` |
//! | `POST /admin/submit` | like `/admin/query`, without `waitMs` | `202 {"commandId","executionId"}`: queued (persisted), not waited for |
//! | `GET /admin/commands/<id>[?waitMs=N]` | | `{"commandId","state":"queued"\|"sent"\|"answered"\|"unknown","outcome"?,"error"?}`; with `waitMs` (≤ 60,000) it answers as soon as the command is answered, or after N ms with its state then; a buffered outcome's rows are streamed from its spool |
//! | `POST /admin/decommission` | `{"connector"}` | `202 {"requested":true}`; `409 CONNECTOR_OFFLINE` without a session |
//!
//! In cluster mode every route works on any node: `connectors` lists the connectors held by
//! other nodes from the registry (with `node`, the node holding each), frames, cancels and
//! decommissions go to the holder, and a command's state and outcome come from Redis (`queued`
//! stands for "not answered yet" there, wherever it is; an outcome handed to the caller that
//! waited for it is released, as on one node).

use std::io::{self, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use protocol::{ErrorCode, Inbound, SchemaRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{HeadError, read_body, read_head, write_json};
use crate::hub::{ADMIN_MAX_SERVING, CommandStatus, Hub};
use crate::keys::constant_time_eq;
use crate::query::{QueryError, QueryRequest};
use crate::server::TimedTcp;
use crate::{GatewayError, spawn_named};

const MAX_BODY: u64 = 1024 * 1024;

/// Default `waitMs` of `POST /admin/query`.
pub(crate) const DEFAULT_WAIT_MS: u64 = 30_000;

/// Largest `waitMs` of `GET /admin/commands/<id>`.
const MAX_STATUS_WAIT_MS: u64 = 60_000;

/// How long a connection accepted beyond `ADMIN_MAX_SERVING` waits for a place before it is
/// answered `503 ADMIN_BUSY`.
pub(crate) const ADMIN_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Places to serve an admin request: a counting semaphore (std has none).
struct Places {
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A place taken from [`Places`]; dropping it frees it and wakes one waiting connection.
struct Place<'a>(&'a Places);

impl Places {
    fn new() -> Self {
        Self { busy: Mutex::new(0), freed: Condvar::new() }
    }

    /// Takes a place, waiting at most `wait` for one.
    fn take(&self, wait: Duration) -> Option<Place<'_>> {
        let busy = self.busy.lock().unwrap();
        let (mut busy, _) =
            self.freed.wait_timeout_while(busy, wait, |busy| *busy >= ADMIN_MAX_SERVING).unwrap();
        if *busy >= ADMIN_MAX_SERVING {
            return None;
        }
        *busy += 1;
        Some(Place(self))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

pub(crate) struct AdminInfo {
    pub token: String,
    pub ws_url: String,
    pub ca_cert_path: String,
}

pub(crate) fn accept_loop(hub: Arc<Hub>, listener: TcpListener, info: Arc<AdminInfo>) {
    let places = Arc::new(Places::new());
    for stream in listener.incoming() {
        if hub.is_stopping() {
            break;
        }
        let Ok(tcp) = stream else { continue };
        let Some(slot) = hub.admit_connection(true) else {
            tracing::warn!("too many admin connections (serving and waiting); closing a new one");
            continue;
        };
        let (hub2, info2, places2) = (hub.clone(), info.clone(), places.clone());
        let spawned = spawn_named("gw-admin-conn".into(), move || {
            let _slot = slot;
            let id = hub2.track_socket(&tcp);
            if let Err(e) = handle(&hub2, &info2, tcp, &places2) {
                tracing::debug!("admin connection ended: {e}");
            }
            hub2.untrack_socket(id);
        });
        let mut threads = hub.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        if let Ok(handle) = spawned {
            threads.push(handle);
        }
    }
}

fn error(code: &str, message: impl Into<String>, retryable: bool) -> Value {
    json!({ "error": { "code": code, "message": message.into(), "retryable": retryable } })
}

/// Serves one request. The request is read (and its token checked) first; then it takes a
/// place, waiting at most [`ADMIN_QUEUE_WAIT`] for one, or is answered `503 ADMIN_BUSY` (after
/// reading it: closing with unread bytes would reset the connection, and the caller could not
/// tell a busy gateway from a broken one). A connection that sends nothing holds no place.
fn handle(hub: &Arc<Hub>, info: &AdminInfo, tcp: TcpStream, places: &Places) -> io::Result<()> {
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tcp = TimedTcp::new(tcp, Some(Instant::now() + hub.config.header_timeout));
    let mut buf = Vec::new();
    let head = match read_head(&mut tcp, &mut buf) {
        Ok(head) => head,
        Err(HeadError::Closed) => return Ok(()),
        Err(HeadError::Io(e)) => return Err(e),
        Err(HeadError::TooLarge) => {
            return write_json(&mut tcp, 431, &error("PAYLOAD_TOO_LARGE", "head too large", false), false);
        }
        Err(HeadError::Malformed(m)) => {
            return write_json(&mut tcp, 400, &error("MALFORMED_MESSAGE", m, false), false);
        }
    };
    let authorized = head
        .header("authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), info.token.as_bytes()));
    if !authorized {
        return write_json(
            &mut tcp,
            401,
            &error("AUTH_FAILED", "missing or wrong bearer token", false),
            false,
        );
    }
    let len = match head.content_length() {
        Ok(len) => len.unwrap_or(0),
        Err(()) => {
            return write_json(
                &mut tcp,
                400,
                &error("MALFORMED_MESSAGE", "invalid Content-Length", false),
                false,
            );
        }
    };
    if len > MAX_BODY {
        return write_json(&mut tcp, 413, &error("PAYLOAD_TOO_LARGE", "body too large", false), false);
    }
    tcp.set_deadline(Some(Instant::now() + hub.config.body_timeout));
    let body = read_body(&mut tcp, &mut buf, len as usize)?;
    // Held until the answer is written.
    let place = places.take(ADMIN_QUEUE_WAIT);
    if place.is_none() {
        tracing::warn!("admin API busy: {ADMIN_MAX_SERVING} requests in progress; answered 503");
        let answer = error(
            "ADMIN_BUSY",
            format!("the admin API serves {ADMIN_MAX_SERVING} requests at once; retry shortly"),
            true,
        );
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        return write!(
            tcp,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        )
        .and_then(|()| tcp.write_all(&body))
        .and_then(|()| tcp.flush());
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/admin/query") => {
            return match parse::<AdminQuery>(&body) {
                Ok(q) => stream_query(hub, q, &mut tcp),
                Err((status, answer)) => write_json(&mut tcp, status, &answer, false),
            };
        }
        ("GET", p) if p.starts_with("/admin/commands/") => {
            let wait = match head.query_param("waitMs").map(str::parse::<u64>) {
                None => Duration::ZERO,
                Some(Ok(ms)) => Duration::from_millis(ms.min(MAX_STATUS_WAIT_MS)),
                Some(Err(_)) => {
                    let answer =
                        error("MALFORMED_MESSAGE", "waitMs must be a whole number of milliseconds", false);
                    return write_json(&mut tcp, 400, &answer, false);
                }
            };
            return stream_command_status(hub, &p["/admin/commands/".len()..], wait, &mut tcp);
        }
        _ => {}
    }
    let (status, answer) = route(hub, info, &head.method, &head.path, &body);
    write_json(&mut tcp, status, &answer, false)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, (u16, Value)> {
    serde_json::from_slice(body)
        .map_err(|e| (400, error("MALFORMED_MESSAGE", format!("invalid request body: {e}"), false)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminQuery {
    connector: String,
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
    timeout_ms: Option<u64>,
    connection: Option<String>,
    ttl_ms: Option<u64>,
    wait_ms: Option<u64>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct Revoke {
    key: String,
}

#[derive(Deserialize)]
struct ConnectorRef {
    connector: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelReq {
    execution_id: String,
    reason: Option<String>,
}

fn gateway_error(e: &GatewayError) -> (u16, Value) {
    match e {
        GatewayError::KeyNotFound(_) => (404, error("KEY_NOT_FOUND", e.to_string(), false)),
        GatewayError::UnknownConnector(_) => (404, error("UNKNOWN_CONNECTOR", e.to_string(), false)),
        GatewayError::KeyConflict(_) => (409, error("KEY_CONFLICT", e.to_string(), false)),
        GatewayError::ConnectorOffline(_) => {
            (409, error(ErrorCode::ConnectorOffline.as_str(), e.to_string(), true))
        }
        _ => (500, error(ErrorCode::InternalError.as_str(), e.to_string(), true)),
    }
}

fn route(hub: &Arc<Hub>, info: &AdminInfo, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let result = match (method, path) {
        ("GET", "/admin/health") => {
            Ok((200, json!({ "ok": true, "wsUrl": info.ws_url, "caCertPath": info.ca_cert_path })))
        }
        ("GET", "/admin/connectors") => Ok((200, serde_json::to_value(hub.connectors()).unwrap_or_default())),
        ("POST", "/admin/submit") => parse::<AdminQuery>(body).map(|q| submit(hub, q)),
        ("POST", "/admin/decommission") => parse::<ConnectorRef>(body).map(|c| {
            if !hub.is_known(&c.connector) {
                return gateway_error(&GatewayError::UnknownConnector(c.connector));
            }
            match hub.decommission(&c.connector, hub.config.shutdown_grace.as_millis() as u64) {
                Ok(()) => (202, json!({ "requested": true })),
                Err(e) => gateway_error(&e),
            }
        }),
        ("POST", "/admin/keys/revoke") => parse::<Revoke>(body).map(|r| match hub.keys.revoke(&r.key) {
            Ok(ids) => (200, json!({ "revoked": ids })),
            Err(e) => gateway_error(&e),
        }),
        ("POST", "/admin/schema-request") => parse::<ConnectorRef>(body).map(|c| {
            if !hub.is_known(&c.connector) {
                return gateway_error(&GatewayError::UnknownConnector(c.connector));
            }
            match hub.send_frame(&c.connector, &Inbound::SchemaRequest(SchemaRequest {})) {
                Ok(()) => (202, json!({ "requested": true })),
                Err(e) => gateway_error(&e),
            }
        }),
        ("POST", "/admin/cancel") => {
            parse::<CancelReq>(body).map(|c| match hub.cancel(&c.execution_id, c.reason) {
                Ok(()) => (202, json!({ "requested": true })),
                Err(e) => gateway_error(&e),
            })
        }
        (_, p) if p.starts_with("/admin/") => {
            Err((405, error("METHOD_NOT_ALLOWED", format!("{method} {path}"), false)))
        }
        _ => Err((404, error("NOT_FOUND", format!("no route for {method} {path}"), false))),
    };
    result.unwrap_or_else(|e| e)
}

fn submit(hub: &Arc<Hub>, q: AdminQuery) -> (u16, Value) {
    let connector = q.connector.clone();
    match hub.submit(&connector, request(q)) {
        // Dropping the pending query leaves the command queued; its outcome is kept.
        Ok(pending) => {
            (202, json!({ "commandId": pending.command_id(), "executionId": pending.execution_id() }))
        }
        Err(e) => query_error(&e),
    }
}

/// `GET /admin/commands/<id>`: the state, and the outcome when the gateway holds it (waiting
/// up to `wait` for the answer). A buffered outcome's rows go from its spool file to the
/// socket, as in `POST /admin/query`.
fn stream_command_status(hub: &Hub, id: &str, wait: Duration, tcp: &mut impl io::Write) -> io::Result<()> {
    let (state, answer) = match hub.wait_command(id, wait) {
        CommandStatus::Queued => ("queued", None),
        CommandStatus::Sent => ("sent", None),
        CommandStatus::Answered(answer) => ("answered", answer),
        CommandStatus::Unknown => {
            let answer = error("UNKNOWN_COMMAND", format!("no command `{id}` is known"), false);
            return write_json(tcp, 404, &answer, false);
        }
    };
    let mut body = json!({ "commandId": id, "state": state });
    match answer {
        Some(Ok(outcome)) => {
            // `{"commandId":…,"state":"answered","outcome":` + the outcome + `}`.
            let mut prefix = serde_json::to_vec(&body).map_err(io::Error::other)?;
            prefix.pop();
            prefix.extend_from_slice(b",\"outcome\":");
            let mut out = io::BufWriter::with_capacity(64 * 1024, tcp);
            return outcome.write_json_within(&mut out, &prefix, b"}", |out, len| {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
                )
            });
        }
        Some(Err(e)) => body["error"] = e.to_json(),
        None if state == "answered" => {
            body["error"] = json!({
                "code": ErrorCode::ResultUnavailable.as_str(),
                "message": "answered, but the outcome is no longer held (gateway restart, or taken by the waiting caller)",
                "retryable": false,
            });
        }
        None => {}
    }
    write_json(tcp, 200, &body, false)
}

fn query_error(e: &QueryError) -> (u16, Value) {
    let status = match e {
        QueryError::Timeout => 504,
        QueryError::UnknownConnector(_) => 404,
        _ => 502,
    };
    (status, json!({ "error": e.to_json() }))
}

fn request(q: AdminQuery) -> QueryRequest {
    QueryRequest {
        sql: q.sql,
        params: q.params,
        timeout_ms: q.timeout_ms,
        connection: q.connection,
        ttl: q.ttl_ms.map(Duration::from_millis),
        wait: Duration::from_millis(q.wait_ms.unwrap_or(DEFAULT_WAIT_MS)),
        idempotency_key: q.idempotency_key,
    }
}

/// `POST /admin/query`: the rows of a buffered result go from its spool file to the socket
/// (never held as values or as one body).
fn stream_query(hub: &Arc<Hub>, q: AdminQuery, tcp: &mut impl io::Write) -> io::Result<()> {
    let connector = q.connector.clone();
    match hub.submit(&connector, request(q)).and_then(|pending| pending.wait_spooled()) {
        Ok(outcome) => {
            let mut out = io::BufWriter::with_capacity(64 * 1024, tcp);
            outcome.write_json(&mut out, |out, len| {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
                )
            })
        }
        Err(e) => {
            let (status, answer) = query_error(&e);
            write_json(tcp, status, &answer, false)
        }
    }
}
