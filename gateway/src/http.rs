//! Just enough HTTP/1.1 for the upload endpoint, the WebSocket upgrade and the admin API:
//! `httparse` request heads (capped), `Content-Length` bodies, JSON responses, and a tiny
//! client the CLI uses to call the admin API of a running gateway.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use crate::GatewayError;

/// Largest request head accepted; larger gets `431`.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A parsed request line and headers.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string after `?` (empty when there is none).
    pub query: String,
    /// `(lower-case name, value)`.
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0 (no keep-alive by default).
    pub http10: bool,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether a header holds `token` in its comma-separated list (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// The value of `name` in the query string (`a=1&b=2`; no percent-decoding).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    }

    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        !self.http10 || self.header_has_token("connection", "keep-alive")
    }

    /// `Content-Length`: `Ok(None)` when absent, `Err` when unparsable.
    pub fn content_length(&self) -> Result<Option<u64>, ()> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ()),
        }
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed (or went idle) before sending a byte of a new request.
    Closed,
    /// The socket failed mid-request.
    Io(io::Error),
    /// The head is larger than [`MAX_HEAD_BYTES`] or has too many headers: `431`.
    TooLarge,
    /// Not HTTP: `400`.
    Malformed(String),
}

/// Reads one request head. `buf` holds bytes already read after the previous request; on
/// success it holds the bytes read past this head (the start of the body, or frames).
pub(crate) fn read_head<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Result<RequestHead, HeadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let path = req.path.unwrap_or("/");
                    let head = RequestHead {
                        method: req.method.unwrap_or("").to_owned(),
                        path: path.split('?').next().unwrap_or("/").to_owned(),
                        query: path.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| {
                                (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())
                            })
                            .collect(),
                        http10: req.version == Some(0),
                    };
                    buf.drain(..n);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                    return Err(HeadError::TooLarge);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(e) => return Err(HeadError::Malformed(format!("bad request head: {e}"))),
            }
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if buf.is_empty() && is_idle_end(&e) => return Err(HeadError::Closed),
            Err(e) => return Err(HeadError::Io(e)),
        };
        if n == 0 {
            return if buf.is_empty() {
                Err(HeadError::Closed)
            } else {
                Err(HeadError::Malformed("connection closed mid-head".into()))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn is_idle_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// Reads a body of `len` bytes, taking what `buf` already holds first.
pub(crate) fn read_body<S: Read>(stream: &mut S, buf: &mut Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    let take = buf.len().min(len);
    let mut body: Vec<u8> = buf.drain(..take).collect();
    if body.len() < len {
        let start = body.len();
        body.resize(len, 0);
        stream.read_exact(&mut body[start..])?;
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a complete response with a `Content-Length` body.
pub(crate) fn write_response<S: Write>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\nCache-Control: no-store\r\n\r\n",
        reason(status),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Writes a JSON response.
pub(crate) fn write_json<S: Write, T: Serialize>(
    stream: &mut S,
    status: u16,
    value: &T,
    keep_alive: bool,
) -> io::Result<()> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    write_response(stream, status, "application/json", &body, keep_alive)
}

/// `{"code": ..., "message": ..., "retryable": false}`: every error the HTTPS port answers is
/// final for the request as sent (the spec's error body; over-cap chunks included).
pub(crate) fn error_body(code: &str, message: impl Into<String>) -> serde_json::Value {
    serde_json::json!({ "code": code, "message": message.into(), "retryable": false })
}

/// Calls the admin API of a running gateway: one request, `Connection: close`. Returns the
/// status and the JSON body (`null` when empty).
pub(crate) fn admin_call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), GatewayError> {
    let (status, mut reader) = admin_open(addr, token, method, path, body, timeout)?;
    let mut body = Vec::new();
    reader.read_to_end(&mut body).map_err(|e| admin_error(addr, "no answer from", &e))?;
    let value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| admin_error(addr, "non-JSON response from", &e))?
    };
    Ok((status, value))
}

fn admin_error(addr: SocketAddr, what: &str, e: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::Admin(format!("{what} {addr}: {e}"))
}

/// The body of an admin API response, read from the socket as it arrives (to its end: the
/// gateway closes each connection after its response).
pub type AdminBody = io::BufReader<TcpStream>;

/// Sends one admin request and reads the response head: the status, and the body to read.
pub(crate) fn admin_open(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(u16, AdminBody), GatewayError> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| admin_error(addr, "cannot connect to", &e))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, stream);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = io::BufRead::read_until(&mut reader, b'\n', &mut head)
            .map_err(|e| admin_error(addr, "no answer from", &e))?;
        if n == 0 {
            return Err(admin_error(addr, "malformed response from", &"incomplete head"));
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            break;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(admin_error(addr, "malformed response from", &"head too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(&head) else {
        return Err(admin_error(addr, "malformed response from", &"incomplete head"));
    };
    Ok((parsed.code.unwrap_or(0), reader))
}
