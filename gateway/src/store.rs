//! The gateway's durable command queue, in `<data-dir>/gateway.db` next to the API keys.
//!
//! Two tables: `gw_commands` holds every command accepted and not answered yet (the whole
//! `command` frame, its connector, its order and its TTL); `gw_answered` holds the *fact* that a
//! command was answered (how, and when), so an answer that arrives again after a restart is
//! dropped (and acknowledged) instead of completing anything twice. Results themselves are not
//! stored: they stay in memory for the caller ([`crate::Gateway::command_status`]).
//!
//! WAL with `synchronous = NORMAL`: a command is in the WAL (the OS's page cache) before
//! [`crate::Gateway::submit`] returns, so a crash or `kill -9` of the gateway loses nothing; a
//! power loss or kernel crash may lose the last commits before a checkpoint. `FULL` (an fsync per
//! accepted and per answered command) cost ~10 ms per command on the test machine: 1,000 queued
//! commands took 9.7 s to accept instead of 1.1 s, too slow for the backlog the gateway paces;
//! a reference gateway that is restarted and redeployed (not power-cut) is what the tests cover.
//! `gw_answered` rows older than [`ANSWERED_RETENTION`] are purged at start.
//!
//! `gw_chunks` holds the chunks of results being uploaded (as uploaded, compressed, with their
//! content encoding and uncompressed length) until the buffer is dropped, so a gateway restart in the middle of an upload (or between the last chunk
//! and the `execution_result`) loses no chunk: the buffer is rebuilt at start and the agent goes
//! on where it was. Once the command is answered its chunks stay for
//! [`ANSWERED_CHUNKS_RETENTION`] (at most [`ANSWERED_CHUNKS_MAX_BYTES`]): a caller whose answer
//! was lost (the gateway was killed while it was on its way) asks again with the same
//! idempotency key, the agent answers with its stored result naming this buffer, and the rows
//! are read back from here. Same durability as the commands.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{Command, ContentEncoding};
use rusqlite::{Connection, OptionalExtension, params};

use crate::GatewayError;

/// How long the fact that a command was answered is kept (a duplicate answer later than this is
/// acknowledged as an unknown command).
pub(crate) const ANSWERED_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gw_commands (
    command_id TEXT PRIMARY KEY,
    connector  TEXT NOT NULL,
    seq        INTEGER NOT NULL,  -- delivery order
    command    TEXT NOT NULL,     -- the `command` frame, JSON
    expires_at INTEGER NOT NULL,  -- unix milliseconds (the TTL)
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_commands_connector ON gw_commands (connector, seq);
CREATE TABLE IF NOT EXISTS gw_answered (
    command_id  TEXT PRIMARY KEY,
    connector   TEXT NOT NULL,
    outcome     TEXT NOT NULL,    -- result | error | expired | timeout | failed
    answered_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gw_answered_at ON gw_answered (answered_at);
CREATE TABLE IF NOT EXISTS gw_chunks (
    buffer_key TEXT NOT NULL,     -- <connector>:<commandId>
    connector  TEXT NOT NULL,
    command_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    final      INTEGER NOT NULL,  -- 1 on the result's last chunk
    body       BLOB NOT NULL,     -- the chunk as uploaded (compressed)
    answered_at INTEGER,          -- unix ms once its command is answered (kept a while), else NULL
    encoding   TEXT,              -- its content encoding (`lz4`, `deflate`); NULL: deflate
    plain_len  INTEGER,           -- its uncompressed length; NULL (older gateways): not counted
    PRIMARY KEY (buffer_key, seq)
);
CREATE INDEX IF NOT EXISTS gw_chunks_command ON gw_chunks (command_id);
CREATE INDEX IF NOT EXISTS gw_chunks_answered ON gw_chunks (answered_at);
";

/// How long the chunks of an answered result are kept: a repeat of its idempotency key (a
/// caller whose answer was lost, e.g. with a gateway that was killed) is answered by the agent
/// with the same buffered result, naming this buffer, and gets these rows again.
pub(crate) const ANSWERED_CHUNKS_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Most bytes (compressed, as uploaded) of answered results kept; the oldest go first.
pub(crate) const ANSWERED_CHUNKS_MAX_BYTES: i64 = 256 << 20;

/// A stored chunk of a result, without its body (read one at a time with
/// [`CommandStore::chunk_body`]).
#[derive(Debug)]
pub(crate) struct StoredChunk {
    pub buffer_key: String,
    pub connector: String,
    pub command_id: String,
    pub seq: u32,
    pub last: bool,
    /// Uncompressed length, when the gateway that stored it recorded one.
    pub plain_len: Option<u64>,
}

/// A stored chunk's body as uploaded, and how to read it.
#[derive(Debug)]
pub(crate) struct ChunkBody {
    pub encoding: ContentEncoding,
    /// Uncompressed length, when recorded.
    pub plain_len: Option<u64>,
    pub body: Vec<u8>,
}

/// What [`CommandStore::save_chunk`] stores besides the buffer's names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkRow<'a> {
    pub seq: u32,
    pub last: bool,
    pub encoding: ContentEncoding,
    pub plain_len: u64,
    pub body: &'a [u8],
}

/// A command read back at start.
#[derive(Debug)]
pub(crate) struct StoredCommand {
    pub connector: String,
    pub seq: u64,
    pub command: Command,
    pub expires: SystemTime,
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The command tables of `gateway.db` (its own connection; the key store has another).
#[derive(Debug)]
pub(crate) struct CommandStore {
    db: Mutex<Connection>,
}

impl CommandStore {
    /// Opens (creating) the tables; the file and its WAL stay owner-only.
    pub fn open(data_dir: &Path) -> Result<Self, GatewayError> {
        let path = data_dir.join("gateway.db");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        add_missing_chunk_columns(&conn)?;
        // By path, never through a descriptor: see `keys::private_db_files` (a descriptor
        // closed here dropped the key connection's WAL locks).
        crate::keys::private_db_files(&path)?;
        let cutoff = unix_ms(SystemTime::now() - ANSWERED_RETENTION);
        conn.execute("DELETE FROM gw_answered WHERE answered_at < ?1", params![cutoff])?;
        purge_answered_chunks(&conn, unix_ms(SystemTime::now()))?;
        Ok(Self { db: Mutex::new(conn) })
    }

    /// Every command not answered yet, in delivery order. A row that no longer decodes is
    /// dropped with an error log (it cannot be delivered).
    pub fn load(&self) -> Result<Vec<StoredCommand>, GatewayError> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT command_id, connector, seq, command, expires_at FROM gw_commands ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for row in rows {
            let (id, connector, seq, text, expires) = row?;
            match serde_json::from_str::<Command>(&text) {
                Ok(command) => out.push(StoredCommand {
                    connector,
                    seq: seq.max(0) as u64,
                    command,
                    expires: from_unix_ms(expires),
                }),
                Err(e) => {
                    tracing::error!(command = %id, "stored command does not decode ({e}); dropping it");
                    bad.push(id);
                }
            }
        }
        drop(stmt);
        for id in bad {
            db.execute("DELETE FROM gw_commands WHERE command_id = ?1", params![id])?;
        }
        Ok(out)
    }

    /// Persists an accepted command.
    pub fn insert(
        &self,
        connector: &str,
        seq: u64,
        command: &Command,
        expires: SystemTime,
    ) -> Result<(), GatewayError> {
        let text =
            serde_json::to_string(command).map_err(|e| GatewayError::Invalid(format!("command: {e}")))?;
        self.db.lock().unwrap().execute(
            "INSERT OR REPLACE INTO gw_commands (command_id, connector, seq, command, expires_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                command.command_id,
                connector,
                seq as i64,
                text,
                unix_ms(expires),
                unix_ms(SystemTime::now())
            ],
        )?;
        Ok(())
    }

    /// Records that a command is answered (`outcome`) and forgets its queue row, atomically.
    pub fn answer(&self, command_id: &str, connector: &str, outcome: &str) -> Result<(), GatewayError> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM gw_commands WHERE command_id = ?1", params![command_id])?;
        let now = unix_ms(SystemTime::now());
        tx.execute(
            "UPDATE gw_chunks SET answered_at = ?2 WHERE command_id = ?1 AND answered_at IS NULL",
            params![command_id, now],
        )?;
        purge_answered_chunks(&tx, now)?;
        tx.execute(
            "INSERT OR IGNORE INTO gw_answered (command_id, connector, outcome, answered_at) VALUES (?1, ?2, ?3, ?4)",
            params![command_id, connector, outcome, unix_ms(SystemTime::now())],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Persists a chunk that is about to be stored in a buffer (a chunk of that `seq` stored
    /// before is replaced: the buffer was started over).
    pub fn save_chunk(
        &self,
        buffer_key: &str,
        connector: &str,
        command_id: &str,
        chunk: ChunkRow<'_>,
    ) -> Result<(), GatewayError> {
        self.db.lock().unwrap().execute(
            "INSERT OR REPLACE INTO gw_chunks \
             (buffer_key, connector, command_id, seq, final, body, encoding, plain_len) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                buffer_key,
                connector,
                command_id,
                chunk.seq,
                chunk.last,
                chunk.body,
                chunk.encoding.as_str(),
                chunk.plain_len as i64
            ],
        )?;
        Ok(())
    }

    /// Forgets the chunks of a buffer that cannot complete (refused, expired or started over);
    /// the chunks of an answered result stay a while (see [`CommandStore::answered_chunks`]).
    pub fn drop_chunks(&self, buffer_key: &str) -> Result<(), GatewayError> {
        self.db.lock().unwrap().execute(
            "DELETE FROM gw_chunks WHERE buffer_key = ?1 AND answered_at IS NULL",
            params![buffer_key],
        )?;
        Ok(())
    }

    /// The chunks of a result that answered a command of `connector` not long ago
    /// ([`ANSWERED_CHUNKS_RETENTION`]), in order, without their bodies (read one at a time
    /// with [`CommandStore::chunk_body`]); empty when none are kept.
    pub fn answered_chunks(
        &self,
        buffer_key: &str,
        connector: &str,
    ) -> Result<Vec<StoredChunk>, GatewayError> {
        let db = self.db.lock().unwrap();
        let cutoff = unix_ms(SystemTime::now()) - ANSWERED_CHUNKS_RETENTION.as_millis() as i64;
        let mut stmt = db.prepare(
            "SELECT buffer_key, connector, command_id, seq, final, plain_len FROM gw_chunks \
             WHERE buffer_key = ?1 AND connector = ?2 AND answered_at >= ?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![buffer_key, connector, cutoff], StoredChunk::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The body (as uploaded) of chunk `seq` of a buffer, with its encoding, if it is stored.
    pub fn chunk_body(&self, buffer_key: &str, seq: u32) -> Result<Option<ChunkBody>, GatewayError> {
        let db = self.db.lock().unwrap();
        Ok(db
            .query_row(
                "SELECT encoding, plain_len, body FROM gw_chunks WHERE buffer_key = ?1 AND seq = ?2",
                params![buffer_key, seq],
                |r| {
                    Ok(ChunkBody {
                        encoding: encoding_column(r, 0)?,
                        plain_len: plain_len(r, 1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// The buffers with unanswered chunks (results whose upload may go on), by key.
    pub fn unanswered_buffers(&self) -> Result<Vec<String>, GatewayError> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT DISTINCT buffer_key FROM gw_chunks WHERE answered_at IS NULL ORDER BY buffer_key",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The unanswered chunks of one buffer, by sequence number, without their bodies.
    pub fn unanswered_chunks(&self, buffer_key: &str) -> Result<Vec<StoredChunk>, GatewayError> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT buffer_key, connector, command_id, seq, final, plain_len FROM gw_chunks \
             WHERE buffer_key = ?1 AND answered_at IS NULL ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![buffer_key], StoredChunk::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How a command was answered, if it was (within [`ANSWERED_RETENTION`]).
    pub fn answered(&self, command_id: &str) -> Result<Option<String>, GatewayError> {
        let db = self.db.lock().unwrap();
        Ok(db
            .query_row("SELECT outcome FROM gw_answered WHERE command_id = ?1", params![command_id], |r| {
                r.get(0)
            })
            .optional()?)
    }
}

/// Drops the chunks of answered results past their retention, then the oldest while they hold
/// more than [`ANSWERED_CHUNKS_MAX_BYTES`].
fn purge_answered_chunks(db: &Connection, now: i64) -> Result<(), GatewayError> {
    let cutoff = now - ANSWERED_CHUNKS_RETENTION.as_millis() as i64;
    db.execute("DELETE FROM gw_chunks WHERE answered_at IS NOT NULL AND answered_at < ?1", params![cutoff])?;
    let held: i64 = db.query_row(
        "SELECT coalesce(sum(length(body)), 0) FROM gw_chunks WHERE answered_at IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    if held > ANSWERED_CHUNKS_MAX_BYTES {
        // Oldest answered buffers first, whole buffers at a time.
        let mut stmt = db.prepare(
            "SELECT buffer_key, sum(length(body)) FROM gw_chunks WHERE answered_at IS NOT NULL \
             GROUP BY buffer_key ORDER BY min(answered_at)",
        )?;
        let buffers: Vec<(String, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut over = held - ANSWERED_CHUNKS_MAX_BYTES;
        for (key, bytes) in buffers {
            if over <= 0 {
                break;
            }
            db.execute(
                "DELETE FROM gw_chunks WHERE buffer_key = ?1 AND answered_at IS NOT NULL",
                params![key],
            )?;
            over -= bytes;
        }
    }
    Ok(())
}

/// `gw_chunks` of a `gateway.db` made before chunks had an encoding and a plain length gets
/// both columns (NULL in its rows: `deflate`, length not recorded).
fn add_missing_chunk_columns(db: &Connection) -> Result<(), GatewayError> {
    let mut stmt = db.prepare("SELECT name FROM pragma_table_info('gw_chunks')")?;
    let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (name, kind) in [("encoding", "TEXT"), ("plain_len", "INTEGER")] {
        if !columns.iter().any(|c| c == name) {
            db.execute_batch(&format!("ALTER TABLE gw_chunks ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

/// An `encoding` column: NULL (a chunk stored before encodings were recorded) is `deflate`.
fn encoding_column(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ContentEncoding> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(ContentEncoding::Deflate),
        Some(name) => ContentEncoding::from_name(&name).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                format!("unknown chunk encoding `{name}`").into(),
            )
        }),
    }
}

fn plain_len(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?.and_then(|n| u64::try_from(n).ok()))
}

impl StoredChunk {
    /// A `gw_chunks` row selected as `buffer_key, connector, command_id, seq, final, plain_len`.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            buffer_key: r.get(0)?,
            connector: r.get(1)?,
            command_id: r.get(2)?,
            seq: r.get(3)?,
            last: r.get(4)?,
            plain_len: plain_len(r, 5)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_answers_are_remembered() {
        let dir = std::env::temp_dir().join(format!("gw-store-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = CommandStore::open(&dir).unwrap();
        let command: Command = serde_json::from_value(serde_json::json!({
            "commandId": "c0", "executionId": "e", "activityId": "a", "operation": "query",
            "payload": {"query": "SELECT 1", "idempotencyKey": "k"}
        }))
        .unwrap();
        let expires = SystemTime::now() + Duration::from_secs(60);
        let started = std::time::Instant::now();
        for i in 0..200u64 {
            let mut c = command.clone();
            c.command_id = format!("c{i}");
            store.insert("A", i, &c, expires).unwrap();
        }
        eprintln!("200 inserts: {:?}", started.elapsed());
        store.answer("c0", "A", "result").unwrap();
        drop(store);
        let store = CommandStore::open(&dir).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 199);
        assert_eq!(loaded[0].command.command_id, "c1");
        assert_eq!(store.answered("c0").unwrap().as_deref(), Some("result"));
        assert_eq!(store.answered("c1").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn chunks_stay_until_answered_then_a_while_then_go() {
        let dir = std::env::temp_dir().join(format!("gw-chunks-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = CommandStore::open(&dir).unwrap();
        let row = |seq, last, body: &'static [u8]| ChunkRow {
            seq,
            last,
            encoding: if seq == 0 { ContentEncoding::Deflate } else { ContentEncoding::Lz4 },
            plain_len: 10 + u64::from(seq),
            body,
        };
        store.save_chunk("A:c1", "A", "c1", row(0, false, b"zero")).unwrap();
        store.save_chunk("A:c1", "A", "c1", row(1, true, b"one")).unwrap();
        store.save_chunk("A:c2", "A", "c2", row(0, false, b"other")).unwrap();
        drop(store);
        // Across a restart: every unanswered chunk, buffer by buffer, by seq, without bodies.
        let store = CommandStore::open(&dir).unwrap();
        let unanswered = |store: &CommandStore| -> Vec<(String, u32, Option<u64>)> {
            let mut out = Vec::new();
            for key in store.unanswered_buffers().unwrap() {
                for c in store.unanswered_chunks(&key).unwrap() {
                    out.push((c.buffer_key, c.seq, c.plain_len));
                }
            }
            out
        };
        assert_eq!(
            unanswered(&store),
            [("A:c1".into(), 0, Some(10)), ("A:c1".into(), 1, Some(11)), ("A:c2".into(), 0, Some(10))]
        );
        let one = store.chunk_body("A:c1", 1).unwrap().unwrap();
        assert_eq!(
            (one.encoding, one.plain_len, one.body.as_slice()),
            (ContentEncoding::Lz4, Some(11), &b"one"[..])
        );
        // Answered: no longer a buffer to resume, kept for a repeat of the key (this connector's).
        store.answer("c1", "A", "result").unwrap();
        assert_eq!(unanswered(&store).len(), 1);
        store.drop_chunks("A:c1").unwrap();
        let kept = store.answered_chunks("A:c1", "A").unwrap();
        assert_eq!(kept.iter().map(|c| (c.seq, c.last)).collect::<Vec<_>>(), [(0, false), (1, true)]);
        assert_eq!(store.chunk_body("A:c1", 1).unwrap().unwrap().body, b"one");
        assert!(store.answered_chunks("A:c1", "B").unwrap().is_empty(), "another connector's");
        // A dropped buffer goes at once; an answered one after its retention.
        store.drop_chunks("A:c2").unwrap();
        assert!(unanswered(&store).is_empty());
        let old = unix_ms(SystemTime::now() - ANSWERED_CHUNKS_RETENTION - Duration::from_secs(1));
        store.db.lock().unwrap().execute("UPDATE gw_chunks SET answered_at = ?1", params![old]).unwrap();
        assert!(store.answered_chunks("A:c1", "A").unwrap().is_empty(), "past its retention");
        drop(store);
        let store = CommandStore::open(&dir).unwrap();
        let left: i64 =
            store.db.lock().unwrap().query_row("SELECT count(*) FROM gw_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "purged at start");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_gateway_db_from_before_chunk_encodings_gets_the_columns_and_reads_as_deflate() {
        let dir = std::env::temp_dir().join(format!("gw-chunks-old-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let old = Connection::open(dir.join("gateway.db")).unwrap();
            old.execute_batch(
                "CREATE TABLE gw_chunks (buffer_key TEXT NOT NULL, connector TEXT NOT NULL, \
                 command_id TEXT NOT NULL, seq INTEGER NOT NULL, final INTEGER NOT NULL, \
                 body BLOB NOT NULL, answered_at INTEGER, PRIMARY KEY (buffer_key, seq)); \
                 INSERT INTO gw_chunks VALUES ('A:c', 'A', 'c', 0, 1, x'789c', NULL);",
            )
            .unwrap();
        }
        let store = CommandStore::open(&dir).unwrap();
        let chunks = store.unanswered_chunks("A:c").unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].plain_len, None, "not recorded by the old gateway");
        let body = store.chunk_body("A:c", 0).unwrap().unwrap();
        assert_eq!((body.encoding, body.plain_len), (ContentEncoding::Deflate, None));
        drop(store);
        CommandStore::open(&dir).unwrap(); // the columns are there now: opening again is fine
        let _ = std::fs::remove_dir_all(dir);
    }
}
