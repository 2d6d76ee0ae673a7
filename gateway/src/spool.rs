//! A verified buffered result, spooled to disk: [`verify`] streams the stored chunks of a
//! result out of `gw_chunks` one at a time, decompresses each by its own encoding (checking
//! its recorded plain length), checks the byte count, the SHA-256
//! and the NDJSON shape (a `{"columns":[...]}` header, then one JSON array per row, validated
//! without building a value per row) and writes the plain stream to an unnamed file in the
//! data directory. The gateway's memory for a result is a chunk and a line at a time, whatever
//! its size; the rows go to the caller from the file ([`Spool::write_rows_json`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use protocol::ColumnMeta;
use sha2::{Digest, Sha256};

use crate::query::QueryError;
use crate::store::CommandStore;

/// Read/write step over the spool file.
const STEP: usize = 64 * 1024;

/// The plain NDJSON stream of a verified result, on disk (deleted with the last handle).
#[derive(Debug, Clone)]
pub struct Spool(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes in the file (the reassembled stream).
    len: u64,
    /// Offset of the first byte after the header line.
    rows_at: u64,
    /// Row lines.
    rows: u64,
}

impl PartialEq for Spool {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Reads a spool file from an offset (the file is shared, so no seek).
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = read_at(self.file, &mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A positioned read. (On Windows `seek_read` also moves the file's cursor; every read here
/// names its offset, so that cursor is never relied on.)
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

impl Spool {
    /// Length of the reassembled stream.
    pub fn len(&self) -> u64 {
        self.0.len
    }

    /// Whether the stream is empty (never, for a verified result).
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Number of row lines.
    pub fn row_count(&self) -> u64 {
        self.0.rows
    }

    /// The whole stream, byte for byte.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.0.len).unwrap_or(0));
        At { file: &self.0.file, pos: 0, end: self.0.len }.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Calls `f` with the stream in blocks of at most `block` bytes, in order.
    pub(crate) fn for_each_block(
        &self,
        block: usize,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut reader = At { file: &self.0.file, pos: 0, end: self.0.len };
        let mut buf = vec![0u8; block.max(1)];
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                return Ok(());
            }
            f(&buf[..filled])?;
        }
    }

    /// Calls `f` with each row line (trimmed), in order.
    fn for_each_row(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut reader = At { file: &self.0.file, pos: self.0.rows_at, end: self.0.len };
        let mut lines = Lines::default();
        let mut step = vec![0u8; STEP];
        loop {
            let n = reader.read(&mut step)?;
            if n == 0 {
                break;
            }
            lines.feed(&step[..n], &mut f)?;
        }
        lines.finish(&mut f)
    }

    /// The rows as values (for a caller of the Rust API, who asked for them).
    pub fn rows(&self) -> io::Result<Vec<Vec<serde_json::Value>>> {
        let mut rows = Vec::with_capacity(usize::try_from(self.0.rows).unwrap_or(0));
        self.for_each_row(|line| {
            rows.push(serde_json::from_slice(line).map_err(io::Error::other)?);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Length of [`Spool::write_rows_json`]'s output.
    pub fn rows_json_len(&self, row_bytes: u64) -> u64 {
        row_bytes + self.0.rows.saturating_sub(1) + 2
    }

    /// Writes the rows as one JSON array (`[row,row,...]`), copying each row's text as it is
    /// on disk; returns the bytes written.
    pub fn write_rows_json(&self, out: &mut impl Write) -> io::Result<u64> {
        let mut written = 1u64;
        out.write_all(b"[")?;
        let mut first = true;
        self.for_each_row(|line| {
            if !first {
                out.write_all(b",")?;
                written += 1;
            }
            first = false;
            out.write_all(line)?;
            written += line.len() as u64;
            Ok(())
        })?;
        out.write_all(b"]")?;
        Ok(written + 1)
    }

    /// Bytes of the row lines (trimmed), for the JSON length.
    pub fn row_bytes(&self) -> io::Result<u64> {
        let mut n = 0u64;
        self.for_each_row(|line| {
            n += line.len() as u64;
            Ok(())
        })?;
        Ok(n)
    }
}

/// Splits a byte stream into non-blank lines, trimmed, across reads.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

fn trim(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

impl Lines {
    fn feed(&mut self, mut data: &[u8], f: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                let line = trim(&data[..i]);
                if !line.is_empty() {
                    f(line)?;
                }
            } else {
                self.partial.extend_from_slice(&data[..i]);
                let line = trim(&self.partial);
                if !line.is_empty() {
                    f(line)?;
                }
                self.partial.clear();
            }
            data = &data[i + 1..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    fn finish(&mut self, f: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let line = trim(&self.partial);
        if !line.is_empty() {
            f(line)?;
        }
        self.partial.clear();
        Ok(())
    }
}

/// What the header and rows of a stream look like so far.
struct Shape {
    columns: Option<Vec<ColumnMeta>>,
    rows: u64,
    /// Stream offset just after the header line.
    rows_at: u64,
    /// Stream bytes fed so far.
    seen: u64,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct HeaderLine {
    columns: Vec<ColumnMeta>,
}

impl Shape {
    fn line(&mut self, line: &[u8], line_end: u64) {
        if self.error.is_some() {
            return;
        }
        if self.columns.is_none() {
            match serde_json::from_slice::<HeaderLine>(line) {
                Ok(h) => {
                    self.columns = Some(h.columns);
                    self.rows_at = line_end;
                }
                Err(e) => self.error = Some(format!("first line is not a columns header: {e}")),
            }
            return;
        }
        // A JSON array, checked without keeping a value (IgnoredAny is zero-sized).
        match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(line) {
            Ok(_) => self.rows += 1,
            Err(e) => self.error = Some(format!("row {} is not a JSON array: {e}", self.rows + 1)),
        }
    }
}

/// Feeds plain bytes to the shape check line by line (tracking offsets for the header).
struct ShapeLines {
    partial: Vec<u8>,
    shape: Shape,
}

impl ShapeLines {
    fn feed(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            let end = self.shape.seen + i as u64 + 1;
            if self.partial.is_empty() {
                let line = trim(&data[..i]);
                if !line.is_empty() {
                    self.shape.line(line, end);
                }
            } else {
                self.partial.extend_from_slice(&data[..i]);
                let line = trim(&self.partial).to_vec();
                if !line.is_empty() {
                    self.shape.line(&line, end);
                }
                self.partial.clear();
            }
            self.shape.seen = end;
            data = &data[i + 1..];
        }
        self.partial.extend_from_slice(data);
        self.shape.seen += data.len() as u64;
    }

    fn finish(&mut self) {
        let line = trim(&self.partial).to_vec();
        if !line.is_empty() {
            let end = self.shape.seen;
            self.shape.line(&line, end);
        }
        self.partial.clear();
    }
}

/// Writes a plain NDJSON stream to an unnamed file in a directory, counting, hashing and
/// checking its shape on the way; [`SpoolWriter::finish`] checks the announced length and
/// SHA-256 and gives the [`Spool`].
pub(crate) struct SpoolWriter {
    buffer_key: String,
    out: io::BufWriter<File>,
    hasher: Sha256,
    len: u64,
    limit: u64,
    lines: ShapeLines,
}

impl SpoolWriter {
    /// A writer for the stream of `buffer_key` that refuses more than `limit` bytes.
    pub(crate) fn new(dir: &Path, buffer_key: &str, limit: u64) -> Result<Self, QueryError> {
        let file = tempfile::tempfile_in(dir)
            .map_err(|e| QueryError::Integrity(format!("{buffer_key}: cannot spool the result: {e}")))?;
        Ok(Self {
            buffer_key: buffer_key.to_owned(),
            out: io::BufWriter::with_capacity(STEP, file),
            hasher: Sha256::new(),
            len: 0,
            limit,
            lines: ShapeLines {
                partial: Vec::new(),
                shape: Shape { columns: None, rows: 0, rows_at: 0, seen: 0, error: None },
            },
        })
    }

    fn io_err(&self, e: io::Error) -> QueryError {
        QueryError::Integrity(format!("{}: cannot spool the result: {e}", self.buffer_key))
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends the next bytes of the stream.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), QueryError> {
        self.len += data.len() as u64;
        if self.len > self.limit {
            return Err(QueryError::Integrity(format!(
                "{}: more than the announced {} bytes reassembled",
                self.buffer_key, self.limit
            )));
        }
        self.hasher.update(data);
        self.lines.feed(data);
        self.out.write_all(data).map_err(|e| self.io_err(e))
    }

    /// Checks the whole stream against its announced length and SHA-256 and its NDJSON shape.
    pub(crate) fn finish(
        mut self,
        byte_count: u64,
        sha256: &str,
    ) -> Result<(Vec<ColumnMeta>, Spool), QueryError> {
        let buffer_key = std::mem::take(&mut self.buffer_key);
        self.out
            .flush()
            .map_err(|e| QueryError::Integrity(format!("{buffer_key}: cannot spool the result: {e}")))?;
        self.lines.finish();
        let len = self.len;
        if len != byte_count {
            return Err(QueryError::Integrity(format!(
                "{buffer_key}: {len} bytes reassembled, {byte_count} announced"
            )));
        }
        let digest = hex::encode(self.hasher.finalize());
        if !digest.eq_ignore_ascii_case(sha256) {
            return Err(QueryError::Integrity(format!(
                "{buffer_key}: sha256 {digest} does not match the announced {sha256}"
            )));
        }
        let shape = self.lines.shape;
        if let Some(e) = shape.error {
            return Err(QueryError::Integrity(e));
        }
        let columns = shape.columns.ok_or_else(|| QueryError::Integrity("empty result stream".into()))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| QueryError::Integrity(format!("{buffer_key}: cannot spool the result: {e}")))?;
        Ok((columns, Spool(Arc::new(Inner { file, len, rows_at: shape.rows_at, rows: shape.rows }))))
    }
}

/// Streams the `chunk_count` stored chunks of `buffer_key` into a spool file in `dir`,
/// checking the byte count, the SHA-256 and the NDJSON shape on the way.
pub(crate) fn verify(
    store: &CommandStore,
    dir: &Path,
    buffer_key: &str,
    chunk_count: u32,
    byte_count: u64,
    sha256: &str,
) -> Result<(Vec<ColumnMeta>, Spool), QueryError> {
    let mut writer = SpoolWriter::new(dir, buffer_key, byte_count)?;
    let mut step = vec![0u8; STEP];
    for seq in 0..chunk_count {
        let stored = store
            .chunk_body(buffer_key, seq)
            .map_err(|e| QueryError::Integrity(format!("{buffer_key}: chunk {seq}: {e}")))?
            .ok_or_else(|| QueryError::Integrity(format!("{buffer_key}: chunk {seq} is not stored")))?;
        let broken = |e: io::Error| {
            QueryError::Integrity(format!("{buffer_key}: chunk {seq} does not decompress: {e}"))
        };
        let mut decoder = stored.encoding.decoder(&stored.body).map_err(broken)?;
        let started = writer.len();
        loop {
            let n = match decoder.read(&mut step) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(broken(e)),
            };
            writer.write(&step[..n])?;
        }
        // Counted when it arrived; another length now means the stored bytes changed.
        if let Some(recorded) = stored.plain_len
            && recorded != writer.len() - started
        {
            return Err(QueryError::Integrity(format!(
                "{buffer_key}: chunk {seq} decompresses to {} bytes, {recorded} when it arrived",
                writer.len() - started
            )));
        }
    }
    writer.finish(byte_count, sha256)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::ContentEncoding;

    use super::*;
    use crate::query::{BufferedInfo, QueryOutcome};
    use crate::store::ChunkRow;

    /// Stores `stream` cut into `cut`-byte chunks under `key`, LZ4 and zlib in turn (a result
    /// whose upload moved to a session that negotiated otherwise); returns (chunks, sha256).
    fn store_stream(store: &CommandStore, key: &str, stream: &[u8], cut: usize) -> (u32, String) {
        let parts: Vec<&[u8]> = stream.chunks(cut).collect();
        for (i, part) in parts.iter().enumerate() {
            let encoding = ContentEncoding::SUPPORTED[i % 2];
            let body = encoding.encode(part).unwrap();
            let row = ChunkRow {
                seq: i as u32,
                last: i + 1 == parts.len(),
                encoding,
                plain_len: part.len() as u64,
                body: &body,
            };
            store.save_chunk(key, "A", "c", row).unwrap();
        }
        (parts.len() as u32, hex::encode(Sha256::digest(stream)))
    }

    fn dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gw-spool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stream_is_verified_and_spooled_chunk_by_chunk_across_line_breaks() {
        let dir = dir();
        let store = CommandStore::open(&dir).unwrap();
        let stream = b"{\"columns\":[{\"name\":\"a\",\"type\":\"integer\",\"dbType\":\"INT\"}]}\n[1, \"x\\ny\"]\r\n\n[2,null]\n[3,[4]]";
        // 7-byte chunks: every line is cut somewhere.
        let (n, sha) = store_stream(&store, "A:c", stream, 7);
        let (columns, spool) = verify(&store, &dir, "A:c", n, stream.len() as u64, &sha).unwrap();
        assert_eq!(columns.len(), 1);
        assert_eq!(spool.row_count(), 3);
        assert_eq!(spool.read_all().unwrap(), stream);
        let rows = spool.rows().unwrap();
        assert_eq!(rows[0], vec![serde_json::json!(1), serde_json::json!("x\ny")]);
        assert_eq!(rows[2], vec![serde_json::json!(3), serde_json::json!([4])]);

        // The streamed admin body is the same JSON as the one built from values, with the
        // Content-Length it announces.
        let outcome = QueryOutcome {
            command_id: "c".into(),
            columns,
            rows: Vec::new(),
            row_count: 3,
            duration_ms: 1,
            round_trip: Duration::from_millis(2),
            buffered: Some(BufferedInfo {
                buffer_key: "A:c".into(),
                chunk_count: n,
                byte_count: stream.len() as u64,
                sha256: sha,
                raw: Vec::new(),
                spool,
            }),
        };
        let mut body = Vec::new();
        let mut announced = 0;
        outcome
            .write_json(&mut body, |_, len| {
                announced = len;
                Ok(())
            })
            .unwrap();
        assert_eq!(announced, body.len() as u64);
        let streamed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(streamed, outcome.to_json());
        assert_eq!(streamed["rows"][1], serde_json::json!([2, null]));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_wrong_size_digest_or_shape_is_an_integrity_error() {
        let dir = dir();
        let store = CommandStore::open(&dir).unwrap();
        let check = |key: &str, stream: &[u8], len_delta: i64, bad_sha: bool| {
            let (n, sha) = store_stream(&store, key, stream, 5);
            let sha = if bad_sha { "00".repeat(32) } else { sha };
            let len = (stream.len() as i64 + len_delta) as u64;
            match verify(&store, &dir, key, n, len, &sha) {
                Err(QueryError::Integrity(m)) => m,
                other => panic!("{key}: expected an integrity error, got {other:?}"),
            }
        };
        let good = b"{\"columns\":[]}\n[1]\n";
        assert!(check("A:short", good, 1, false).contains("bytes reassembled"));
        assert!(check("A:long", good, -1, false).contains("more than the announced"));
        assert!(check("A:sha", good, 0, true).contains("sha256"));
        assert!(check("A:nohead", b"[1]\n", 0, false).contains("columns header"));
        assert!(check("A:object", b"{\"columns\":[]}\n{}\n", 0, false).contains("row 1 is not a JSON array"));
        assert!(check("A:broken", b"{\"columns\":[]}\n[1,\n", 0, false).contains("row 1"));
        assert!(check("A:empty", b"  \n", 0, false).contains("empty result stream"));
        // A chunk missing from the store.
        let m = match verify(&store, &dir, "A:none", 1, 0, "") {
            Err(QueryError::Integrity(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(m.contains("chunk 0 is not stored"), "{m}");
        // A stored chunk whose bytes no longer decompress, or to another length than counted.
        let (n, sha) = store_stream(&store, "A:bits", good, 64);
        let lz4 = ContentEncoding::Lz4.encode(good).unwrap();
        let mut rotten = lz4.clone();
        rotten.truncate(rotten.len() - 3);
        let row = ChunkRow {
            seq: 0,
            last: true,
            encoding: ContentEncoding::Lz4,
            plain_len: good.len() as u64,
            body: &rotten,
        };
        store.save_chunk("A:bits", "A", "c", row).unwrap();
        match verify(&store, &dir, "A:bits", n, good.len() as u64, &sha) {
            Err(QueryError::Integrity(m)) => assert!(m.contains("chunk 0 does not decompress"), "{m}"),
            other => panic!("{other:?}"),
        }
        let row = ChunkRow { plain_len: good.len() as u64 - 1, body: &lz4, ..row };
        store.save_chunk("A:bits", "A", "c", row).unwrap();
        match verify(&store, &dir, "A:bits", n, good.len() as u64, &sha) {
            Err(QueryError::Integrity(m)) => assert!(m.contains("18 when it arrived"), "{m}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
