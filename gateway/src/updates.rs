//! `GET /updates/<file>` (docs/UPDATES.md): the signed update files of `serve --updates-dir`
//! (the manifest, binaries and their `.minisig`), read-only, on the same TLS listener.
//!
//! Only a single file name of `[A-Za-z0-9._-]` not starting with `.` is served, and only a
//! regular file directly in the directory (no sub-directories, no symbolic links), so a request
//! cannot reach outside it. Files are streamed, never loaded whole. The gateway signs nothing:
//! the files are published as `scripts/release.sh` made and signed them.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::http::{RequestHead, error_body, write_json};

/// Longest a read of the connection may wait while a file is sent (TLS reads during writes).
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// The route prefix.
pub(crate) const PREFIX: &str = "/updates/";

/// Answers one request under [`PREFIX`]. Returns whether the connection may serve another.
pub(crate) fn handle<S: Write>(dir: Option<&Path>, stream: &mut S, head: &RequestHead) -> io::Result<bool> {
    let not_found = |stream: &mut S, message: String| {
        write_json(stream, 404, &error_body("NOT_FOUND", message), false).map(|()| false)
    };
    let Some(dir) = dir else {
        return not_found(stream, "this gateway publishes no updates (serve --updates-dir)".into());
    };
    if head.method != "GET" {
        let body = error_body("METHOD_NOT_ALLOWED", "update files are read-only: GET only");
        return write_json(stream, 405, &body, false).map(|()| false);
    }
    let name = &head.path[PREFIX.len()..];
    if !valid_name(name) {
        let body = error_body("BAD_REQUEST", "an update file is one plain file name");
        return write_json(stream, 400, &body, false).map(|()| false);
    }
    let path = dir.join(name);
    let file = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => File::open(&path),
        _ => return not_found(stream, format!("no update file {name}")),
    };
    let Ok(mut file) = file else {
        return not_found(stream, format!("no update file {name}"));
    };
    let len = file.metadata()?.len();
    let content_type = if name.ends_with(".json") { "application/json" } else { "application/octet-stream" };
    let keep = head.keep_alive();
    let connection = if keep { "keep-alive" } else { "close" };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: {connection}\r\nCache-Control: no-cache\r\n\r\n"
    )?;
    let sent = io::copy(&mut io::Read::take(&mut file, len), stream)?;
    stream.flush()?;
    // A file that shrank while being sent: the client sees a short body; close.
    Ok(keep && sent == len)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_leave_the_directory() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a%2f..", "a\\b", "x y"] {
            assert!(!super::valid_name(bad), "{bad}");
        }
        for good in ["manifest.json", "manifest.json.minisig", "mini-connector-0.2.0-linux-x86_64"] {
            assert!(super::valid_name(good), "{good}");
        }
    }
}
