//! [`Store`]: the commands table, its state machine, the size cap, and the audit appends.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use crate::audit::{self, Entry};
use crate::{
    AuditEvent, AuditRecord, AuditReport, Counts, Existing, Finish, NewCommand, PurgeReport, QueueError,
    Receipt, State, StoreConfig, StoreStats, StoredAnswer, StoredCommand, Synchronous, Usage,
};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for a lock held by another connection (the `audit` CLI).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL file is truncated back to this after a checkpoint (a big answer grows it).
const JOURNAL_SIZE_LIMIT: i64 = 32 << 20;

/// Room counted for a row's metadata, indexes and its audit record, beyond the bodies.
const ROW_OVERHEAD: u64 = 1024;

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE commands (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id     TEXT NOT NULL UNIQUE,
    execution_id   TEXT,
    activity_id    TEXT,
    idem_key       TEXT,
    connection     TEXT,
    query_hash     TEXT NOT NULL,
    frame_json     TEXT,
    state          TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    received_at    INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    expires_at     INTEGER,
    server_session TEXT,
    answer_json    TEXT,
    code           TEXT,
    retryable      INTEGER NOT NULL DEFAULT 0,
    row_count      INTEGER,
    result_bytes   INTEGER,
    buffer_key     TEXT,
    sha256         TEXT,
    duration_ms    INTEGER,
    acked_at       INTEGER,
    purged_at      INTEGER
);
CREATE UNIQUE INDEX commands_idem_key ON commands (idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX commands_state ON commands (state, seq);
CREATE INDEX commands_expiry ON commands (expires_at) WHERE state = 'received' AND expires_at IS NOT NULL;
CREATE INDEX commands_purgeable ON commands (seq) WHERE acked_at IS NOT NULL;
CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY,
    ts           INTEGER NOT NULL,
    event        TEXT NOT NULL,
    command_id   TEXT,
    execution_id TEXT,
    connection   TEXT,
    row_count    INTEGER,
    duration_ms  INTEGER,
    outcome      TEXT,
    query_hash   TEXT,
    query_text   TEXT,
    detail       TEXT,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);
";

const COLUMNS: &str = "command_id, execution_id, activity_id, idem_key, connection, query_hash, frame_json, state, \
    attempts, received_at, started_at, finished_at, expires_at, server_session, answer_json, code, retryable, \
    row_count, result_bytes, buffer_key, sha256, duration_ms, acked_at, purged_at";

/// Statements kept prepared per connection: every statement of the store fits, so none is
/// prepared again once used (rusqlite's default of 16 is fewer than the store has).
const STATEMENT_CACHE: usize = 64;

/// The writer checkpoints the WAL itself past this many times `checkpoint_pages`.
const INLINE_CHECKPOINT_FACTOR: u64 = 8;

/// Acknowledgements held in memory before they are written on their own.
const MAX_PENDING_ACKS: usize = 256;

const ACK_SQL: &str = "UPDATE commands SET acked_at = ?2 WHERE command_id = ?1 AND acked_at IS NULL \
    AND state NOT IN ('received', 'running')";

/// The durable command store and audit log: one SQLite connection, owned by one thread (it is
/// `Send`, not `Sync`), plus a background thread with its own connection that checkpoints the
/// WAL. See the crate overview.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    cfg: StoreConfig,
    instance_id: String,
    read_only: bool,
    /// Acknowledgements not written yet (command id, when), oldest first; see
    /// [`Store::acknowledge_later`].
    pending_acks: RefCell<Vec<(String, i64)>>,
    /// When the oldest pending acknowledgement came.
    pending_since: Cell<Option<Instant>>,
    /// WAL frames after the last commit (from the WAL hook).
    wal_frames: Cell<u64>,
    /// WAL length at which the checkpoint thread is woken next.
    next_wake: Cell<u64>,
    counters: Arc<Counters>,
    checkpointer: Option<Checkpointer>,
}

/// The figures behind [`StoreStats`], shared with the hooks and the checkpoint thread.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    prepare_checks: AtomicU64,
    wal_frames: AtomicU64,
    checkpoints_inline: AtomicU64,
    checkpoints_background: AtomicU64,
}

impl Counters {
    fn read(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            prepare_checks: self.prepare_checks.load(Ordering::Relaxed),
            wal_frames: self.wal_frames.load(Ordering::Relaxed),
            checkpoints_inline: self.checkpoints_inline.load(Ordering::Relaxed),
            checkpoints_background: self.checkpoints_background.load(Ordering::Relaxed),
        }
    }
}

/// Reads a store's [`StoreStats`] from any thread (the store itself lives on its owner's).
#[derive(Debug, Clone)]
pub struct StatsProbe(Arc<Counters>);

impl StatsProbe {
    /// The figures now.
    pub fn read(&self) -> StoreStats {
        self.0.read()
    }
}

/// A `BEGIN IMMEDIATE` transaction whose `BEGIN` and `COMMIT` come from the statement cache
/// (rusqlite's `Transaction` prepares both anew every time). Rolled back when dropped
/// uncommitted. `acks`: pending acknowledgements it carries (see [`Store::begin`]).
struct Tx<'c> {
    conn: &'c Connection,
    open: bool,
    acks: usize,
}

impl<'c> Tx<'c> {
    fn begin(conn: &'c Connection) -> Result<Self, QueueError> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Tx { conn, open: true, acks: 0 })
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open
            && !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "queue database: rollback failed");
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

thread_local! {
    /// WAL frames after this thread's last commit, set by [`on_wal_commit`] during the commit
    /// (SQLite calls the hook on the committing thread) and read right after it by the store
    /// that committed. -1: no commit since the last read.
    static WAL_FRAMES: Cell<i64> = const { Cell::new(-1) };
}

/// The WAL hook of the store's connection: it replaces SQLite's auto-checkpoint (which would
/// copy the WAL into the database file and fsync both on the writer's thread) and notes the
/// WAL's length for [`Store::after_commit`].
fn on_wal_commit(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(i64::from(frames));
    Ok(())
}

/// The background checkpoint thread: its own connection, woken (coalesced) after a commit
/// leaves the WAL at `checkpoint_pages` or more. It runs `PRAGMA wal_checkpoint(PASSIVE)`,
/// which never blocks the writer; once a pass has copied every frame, the writer's next
/// transaction starts the WAL over (SQLite does that itself). Ended and joined when the store
/// is dropped, before the store's own connection closes (the last connection to close
/// checkpoints and removes the WAL).
#[derive(Debug)]
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn spawn(path: &Path, counters: Arc<Counters>) -> Result<Checkpointer, QueueError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("queue-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    let mut last_done = -1;
                    // A few passes while the writer keeps appending: each copies what came
                    // since the last; done when one has copied every frame (or is stuck on a
                    // reader's snapshot: the next wake tries again).
                    for _ in 0..4 {
                        let pass =
                            conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)").and_then(|mut stmt| {
                                stmt.query_row([], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                            });
                        match pass {
                            Ok((log, done)) => {
                                counters.checkpoints_background.fetch_add(1, Ordering::Relaxed);
                                if done >= log || done == last_done {
                                    break;
                                }
                                last_done = done;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "queue database: background checkpoint failed");
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| QueueError::io(path, e))?;
        Ok(Checkpointer { wake: Some(wake), thread: Some(thread) })
    }

    /// Asks for a pass (a no-op when one is asked for already).
    fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SHA-256 of a query text, lowercase hex.
pub fn query_hash(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

/// A stored text that must be JSON (a frame or an answer).
fn json_text(value: Option<String>, what: &str) -> Result<Option<String>, QueueError> {
    match value {
        Some(text) => match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(Some(text)),
            Err(_) => Err(QueueError::Corrupt(format!("a stored {what} is not JSON"))),
        },
        None => Ok(None),
    }
}

fn opt_u64(value: Option<i64>, what: &str) -> Result<Option<u64>, QueueError> {
    value.map(|v| u64::try_from(v).map_err(|_| QueueError::Corrupt(format!("negative {what}")))).transpose()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn read_command(r: &Row<'_>) -> Result<StoredCommand, QueueError> {
    let state: String = r.get(7)?;
    let attempts: i64 = r.get(8)?;
    Ok(StoredCommand {
        command_id: r.get(0)?,
        execution_id: r.get(1)?,
        activity_id: r.get(2)?,
        idempotency_key: r.get(3)?,
        connection: r.get(4)?,
        query_hash: r.get(5)?,
        frame_json: json_text(r.get(6)?, "command frame")?,
        state: state.parse()?,
        attempts: u32::try_from(attempts).map_err(|_| QueueError::Corrupt("attempts out of range".into()))?,
        received_at_ms: r.get(9)?,
        started_at_ms: r.get(10)?,
        finished_at_ms: r.get(11)?,
        expires_at_ms: r.get(12)?,
        server_session: r.get(13)?,
        answer_json: json_text(r.get(14)?, "answer")?,
        code: r.get(15)?,
        retryable: r.get::<_, i64>(16)? != 0,
        row_count: opt_u64(r.get(17)?, "row count")?,
        result_bytes: opt_u64(r.get(18)?, "result size")?,
        buffer_key: r.get(19)?,
        sha256: r.get(20)?,
        duration_ms: opt_u64(r.get(21)?, "duration")?,
        acknowledged: r.get::<_, Option<i64>>(22)?.is_some(),
        purged: r.get::<_, Option<i64>>(23)?.is_some(),
    })
}

fn query_commands(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredCommand>, QueueError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM commands {filter}"))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read_command(r)?);
    }
    Ok(out)
}

fn get_command(conn: &Connection, command_id: &str) -> Result<Option<StoredCommand>, QueueError> {
    Ok(query_commands(conn, "WHERE command_id = ?1", [command_id])?.pop())
}

/// What a state change needs to know of a command (not its frame or answer, which
/// [`get_command`] reads and checks).
struct Meta {
    state: State,
    attempts: u32,
    execution_id: Option<String>,
    connection: Option<String>,
    query_hash: String,
}

fn get_meta(conn: &Connection, command_id: &str) -> Result<Option<Meta>, QueueError> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, attempts, execution_id, connection, query_hash FROM commands WHERE command_id = ?1",
    )?;
    let mut rows = stmt.query([command_id])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    let state: String = r.get(0)?;
    let attempts: i64 = r.get(1)?;
    Ok(Some(Meta {
        state: state.parse()?,
        attempts: u32::try_from(attempts).map_err(|_| QueueError::Corrupt("attempts out of range".into()))?,
        execution_id: r.get(2)?,
        connection: r.get(3)?,
        query_hash: r.get(4)?,
    }))
}

/// Bytes of pages in use: what the file needs (free pages are reused before it grows).
fn used_bytes(conn: &Connection) -> Result<u64, QueueError> {
    // `page_size` and `page_count` are prepared anew on every run whatever the cache (SQLite
    // computes them while preparing); see `used_bound` for the hot path.
    let pragma = |sql: &str| conn.prepare_cached(sql)?.query_row([], |r| r.get::<_, i64>(0));
    let size = pragma("PRAGMA page_size")?;
    let count = pragma("PRAGMA page_count")?;
    let free = pragma("PRAGMA freelist_count")?;
    Ok(u64::try_from(size.saturating_mul(count.saturating_sub(free))).unwrap_or(0))
}

/// An upper bound of [`used_bytes`] without a statement: every page in use is in the database
/// file or in the WAL. `None` when the connection has no file.
fn used_bound(conn: &Connection) -> Option<u64> {
    let path = conn.path().filter(|p| !p.is_empty())?;
    let db = std::fs::metadata(path).ok()?.len();
    let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    Some(db + wal)
}

/// Purges oldest-first until the pages in use are at most `target` bytes: first the frame and
/// answer bodies of finished, acknowledged commands (metadata kept), then, only if that is not
/// enough, the metadata rows of the oldest purged ones (about `max_rows` at most). Never an
/// unfinished or unacknowledged command, never the audit log.
fn purge_to(
    conn: &Connection,
    target: u64,
    max_rows: u64,
    report: &mut PurgeReport,
) -> Result<(), QueueError> {
    let now = now_ms();
    for _ in 0..100_000 {
        let used = used_bytes(conn)?;
        if used <= target {
            return Ok(());
        }
        let excess = used - target;
        let mut freed = 0u64;
        let mut ids = Vec::new();
        {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, coalesce(length(CAST(frame_json AS BLOB)), 0) + coalesce(length(CAST(answer_json AS BLOB)), 0) \
                 FROM commands WHERE acked_at IS NOT NULL AND purged_at IS NULL ORDER BY seq LIMIT 256",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (seq, size): (i64, i64) = (r.get(0)?, r.get(1)?);
                ids.push(seq);
                freed += u64::try_from(size).unwrap_or(0);
                if freed >= excess {
                    break;
                }
            }
        }
        if !ids.is_empty() {
            let mut stmt = conn.prepare_cached(
                "UPDATE commands SET frame_json = NULL, answer_json = NULL, purged_at = ?2 WHERE seq = ?1",
            )?;
            for seq in &ids {
                stmt.execute(params![seq, now])?;
            }
            report.bodies_purged += ids.len() as u64;
            continue;
        }
        if report.rows_deleted >= max_rows {
            return Ok(());
        }
        let deleted = conn
            .prepare_cached(
                "DELETE FROM commands WHERE seq IN (SELECT seq FROM commands \
                 WHERE acked_at IS NOT NULL AND purged_at IS NOT NULL ORDER BY seq LIMIT 256)",
            )?
            .execute([])?;
        if deleted == 0 {
            return Ok(());
        }
        report.rows_deleted += deleted as u64;
    }
    Ok(())
}

/// Metadata rows `make_room` may delete in one go (a command's purge must stay quick).
const MAX_ROWS_PER_RECEIPT: u64 = 10_000;

/// Makes room for `needed` more bytes under `cap`: purges answer bodies (kept), then old
/// metadata rows only if that gets it under the cap (else they are kept: deleting them would
/// forget old idempotency keys for nothing). Returns whether it fits and the bytes in use.
fn make_room(
    conn: &Connection,
    cap: u64,
    needed: u64,
    report: &mut PurgeReport,
) -> Result<(bool, u64), QueueError> {
    let target = cap.saturating_sub(needed);
    // Far from the cap (nearly always): two `stat`s instead of three pragma statements.
    if let Some(bound) = used_bound(conn)
        && bound <= target
    {
        return Ok((true, bound));
    }
    let used = used_bytes(conn)?;
    if used <= target {
        return Ok((true, used));
    }
    purge_to(conn, target, 0, report)?;
    let used = used_bytes(conn)?;
    if used <= target {
        return Ok((true, used));
    }
    conn.execute_batch("SAVEPOINT purge_rows")?;
    let mut rows = PurgeReport::default();
    purge_to(conn, target, MAX_ROWS_PER_RECEIPT, &mut rows)?;
    let after = used_bytes(conn)?;
    if after <= target {
        conn.execute_batch("RELEASE purge_rows")?;
        report.rows_deleted += rows.rows_deleted;
        return Ok((true, after));
    }
    conn.execute_batch("ROLLBACK TO purge_rows; RELEASE purge_rows")?;
    Ok((false, used))
}

/// Creates `path`'s directory (0700) and the file itself (0600) when missing; tightens an
/// existing file that others can read.
fn prepare_file(path: &Path) -> Result<(), QueueError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| QueueError::io(dir, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| QueueError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = file.metadata().map_err(|e| QueueError::io(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| QueueError::io(path, e))?;
        }
    }
    drop(file);
    Ok(())
}

impl Store {
    /// Opens (creating or migrating) the store at `path`: WAL, `synchronous` as configured,
    /// `busy_timeout`, file mode 0600, `quick_check`. Makes the instance id on first open.
    pub fn open(path: &Path, cfg: StoreConfig) -> Result<Store, QueueError> {
        prepare_file(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(QueueError::Corrupt(format!("quick_check: {check}")));
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version == 0 {
            // Only possible on a new file: set before the first table exists, so purged pages
            // can be handed back to the file system.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::Corrupt(format!(
                "cannot switch the queue database to WAL (it is {mode})"
            )));
        }
        conn.pragma_update(
            None,
            "synchronous",
            match cfg.synchronous {
                Synchronous::Normal => "NORMAL",
                Synchronous::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut conn = conn;
        if version == 0 {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA_V1)?;
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?1)", [&id])?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('created_at', ?1)", [now_ms().to_string()])?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            tracing::info!(path = %path.display(), "queue database created");
        }
        let instance_id = read_instance_id(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let counters = Arc::new(Counters::default());
        let commits = Arc::clone(&counters);
        conn.commit_hook(Some(move || {
            commits.commits.fetch_add(1, Ordering::Relaxed);
            false
        }))?;
        let prepares = Arc::clone(&counters);
        conn.authorizer(Some(move |_: rusqlite::hooks::AuthContext<'_>| {
            prepares.prepare_checks.fetch_add(1, Ordering::Relaxed);
            rusqlite::hooks::Authorization::Allow
        }))?;
        // Replaces SQLite's auto-checkpoint on this connection (see `on_wal_commit`).
        conn.wal_hook(Some(on_wal_commit));
        let checkpointer = match Checkpointer::spawn(path, Arc::clone(&counters)) {
            Ok(checkpointer) => Some(checkpointer),
            Err(e) => {
                tracing::warn!(error = %e, "queue database: no background checkpoint thread; checkpointing inline");
                None
            }
        };
        Ok(Store {
            conn,
            path: path.to_owned(),
            cfg,
            instance_id,
            read_only: false,
            pending_acks: RefCell::new(Vec::new()),
            pending_since: Cell::new(None),
            wal_frames: Cell::new(0),
            next_wake: Cell::new(0),
            counters,
            checkpointer,
        })
    }

    /// Opens an existing store read-only (the `audit` command while the agent runs). Every
    /// change fails with [`QueueError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<Store, QueueError> {
        std::fs::metadata(path).map_err(|e| QueueError::io(path, e))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version == 0 {
            return Err(QueueError::Corrupt("not a queue database (no schema)".into()));
        }
        let instance_id = read_instance_id(&conn)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            cfg: StoreConfig::default(),
            instance_id,
            read_only: true,
            pending_acks: RefCell::new(Vec::new()),
            pending_since: Cell::new(None),
            wal_frames: Cell::new(0),
            next_wake: Cell::new(0),
            counters: Arc::new(Counters::default()),
            checkpointer: None,
        })
    }

    /// The random id made on first open (kept across restarts; sent in `auth`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn writable(&self) -> Result<(), QueueError> {
        if self.read_only { Err(QueueError::ReadOnly) } else { Ok(()) }
    }

    fn audit_entry<'a>(
        &self,
        query_hash: Option<&'a str>,
        query: Option<&'a str>,
    ) -> (Option<&'a str>, Option<&'a str>) {
        (query_hash, if self.cfg.audit_query_text { query } else { None })
    }

    /// What the store did on its connection since it was opened.
    pub fn stats(&self) -> StoreStats {
        self.counters.read()
    }

    /// Reads [`Store::stats`] from another thread.
    pub fn stats_probe(&self) -> StatsProbe {
        StatsProbe(Arc::clone(&self.counters))
    }

    /// Opens a write transaction carrying the pending acknowledgements (they are written with
    /// it, and forgotten from memory only when it commits: see [`Store::commit`]).
    fn begin(&self) -> Result<Tx<'_>, QueueError> {
        let mut tx = Tx::begin(&self.conn)?;
        let pending = self.pending_acks.borrow();
        if !pending.is_empty() {
            let mut stmt = self.conn.prepare_cached(ACK_SQL)?;
            for (command_id, at) in pending.iter() {
                stmt.execute(params![command_id, at])?;
            }
            tx.acks = pending.len();
        }
        Ok(tx)
    }

    /// Commits `tx`; the acknowledgements it carried are on disk now.
    fn commit(&self, mut tx: Tx<'_>) -> Result<(), QueueError> {
        tx.prepare_cached("COMMIT")?.execute([])?;
        tx.open = false;
        if tx.acks > 0 {
            let mut pending = self.pending_acks.borrow_mut();
            let rest = pending.split_off(tx.acks);
            *pending = rest;
            if pending.is_empty() {
                self.pending_since.set(None);
            }
        }
        drop(tx);
        self.after_commit();
        Ok(())
    }

    /// After every commit of this connection: counts the WAL frames it wrote and has the WAL
    /// checkpointed when it is long: by the background thread, or here if that one is far
    /// behind (or could not be started).
    fn after_commit(&self) {
        let Ok(frames) = u64::try_from(WAL_FRAMES.replace(-1)) else { return };
        let last = self.wal_frames.replace(frames);
        let written = if frames >= last { frames - last } else { frames };
        self.counters.wal_frames.fetch_add(written, Ordering::Relaxed);
        let threshold = self.cfg.checkpoint_pages.max(1);
        if frames < threshold {
            // The WAL started over (or is short): the next wake is at the threshold.
            self.next_wake.set(threshold);
            return;
        }
        match &self.checkpointer {
            Some(checkpointer) if frames < threshold.saturating_mul(INLINE_CHECKPOINT_FACTOR) => {
                // One pass per `threshold` new frames, as SQLite's auto-checkpoint would: a
                // pass per commit would sync the files at every commit of a busy writer.
                if frames >= self.next_wake.get() {
                    self.next_wake.set(frames + threshold);
                    checkpointer.wake();
                }
            }
            _ => {
                let pass = self
                    .conn
                    .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
                    .and_then(|mut stmt| stmt.query_row([], |_| Ok(())));
                self.counters.checkpoints_inline.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = pass {
                    tracing::warn!(error = %e, "queue database: checkpoint failed");
                }
            }
        }
    }

    /// Writes the pending acknowledgements now (one transaction), if any.
    fn flush_acks(&self) -> Result<(), QueueError> {
        if self.pending_acks.borrow().is_empty() {
            return Ok(());
        }
        let tx = self.begin()?;
        self.commit(tx)
    }

    /// Writes the acknowledgements [`Store::acknowledge_later`] holds, if any. When that
    /// fails they are kept and [`Store::pending_acks_since`] starts over (retry later).
    pub fn flush(&mut self) -> Result<(), QueueError> {
        let result = self.flush_acks();
        if result.is_err() {
            self.pending_since.set(Some(Instant::now()));
        }
        result
    }

    /// Since when the oldest acknowledgement not written yet has waited (`None`: none waits).
    pub fn pending_acks_since(&self) -> Option<Instant> {
        self.pending_since.get()
    }

    /// Runs one statement that changes something, in its own transaction with the pending
    /// acknowledgements. Returns the rows it changed.
    fn write(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, QueueError> {
        let tx = self.begin()?;
        let changed = tx.prepare_cached(sql)?.execute(params)?;
        self.commit(tx)?;
        Ok(changed)
    }

    /// Persists a command on receipt, in one transaction with its `received` audit record.
    ///
    /// A known idempotency key or command id gives [`Receipt::Known`] (nothing inserted):
    /// still queued or running, or finished (with its answer, or `purged`). A command whose
    /// earlier run failed retryably is not known once that answer is acknowledged: it is queued
    /// again (same row, attempts kept); before that, a re-delivery gets the stored answer.
    /// Over the cap after purging finished work: [`QueueError::Full`].
    pub fn receive(&mut self, c: &NewCommand<'_>) -> Result<Receipt, QueueError> {
        Ok(self.receive_as(c, false)?.0)
    }

    /// [`Store::receive`] and [`Store::start`] in one transaction, for a command that goes to
    /// a worker at once: a new command is stored `Running` with its `received` and `started`
    /// records. Returns the receipt and, for a new one, the attempts so far, this one included
    /// (0 when known). One commit instead of two: a crash after it finds the command `Running`
    /// without a server session, which recovery treats as never sent and runs again — as it
    /// does a command found `Received`, all a crash between two separate commits could leave.
    pub fn receive_running(&mut self, c: &NewCommand<'_>) -> Result<(Receipt, u32), QueueError> {
        self.receive_as(c, true)
    }

    fn receive_as(&mut self, c: &NewCommand<'_>, start: bool) -> Result<(Receipt, u32), QueueError> {
        self.writable()?;
        let qhash = query_hash(c.query);
        let (qh, qtext) = self.audit_entry(Some(&qhash), Some(c.query));
        let cap = self.cfg.max_bytes;
        let tx = self.begin()?;
        let by_key = match c.idempotency_key {
            Some(key) => query_commands(&tx, "WHERE idem_key = ?1", [key])?.pop(),
            None => None,
        };
        let by_id = get_command(&tx, c.command_id)?;
        // The same commandId again after a retryable failure whose answer the cloud has not
        // acknowledged yet is a re-delivery racing that answer: it gets the answer, it does not
        // run again. Once acknowledged, the same commandId (or a new one with the key) runs.
        let known = by_key.or_else(|| {
            by_id.clone().filter(|cmd| !cmd.state.is_final() || !cmd.retryable || !cmd.acknowledged)
        });
        if let Some(cmd) = known {
            if tx.acks > 0 {
                self.commit(tx)?;
            }
            let existing = Existing {
                command_id: cmd.command_id,
                state: cmd.state,
                answer_json: cmd.answer_json,
                purged: cmd.purged,
                code: cmd.code,
            };
            return Ok((Receipt::Known(existing), 0));
        }
        let needed = c.frame_json.len() as u64 + ROW_OVERHEAD;
        let mut report = PurgeReport::default();
        let (fits, used) = make_room(&tx, cap, needed, &mut report)?;
        let freed = report.bodies_purged + report.rows_deleted > 0;
        if !fits {
            // Keep what was purged (it is not done again on the next try); the command is not
            // stored: the caller answers AGENT_BUSY.
            self.commit(tx)?;
            if freed {
                self.shrink();
            }
            return Err(QueueError::Full { used_bytes: used, cap_bytes: cap });
        }
        // A repeat of a known commandId (its key freed by a retryable failure) reuses its row;
        // its attempts keep counting.
        let attempts = by_id.as_ref().map_or(0, |cmd| cmd.attempts) + u32::from(start);
        let now = now_ms();
        let (state, started_at) = if start { (State::Running, Some(now)) } else { (State::Received, None) };
        let sql = if by_id.is_some() {
            "UPDATE commands SET execution_id = ?2, activity_id = ?3, idem_key = ?4, connection = ?5, \
             query_hash = ?6, frame_json = ?7, state = ?10, received_at = ?8, started_at = ?12, \
             finished_at = NULL, expires_at = ?9, server_session = NULL, answer_json = NULL, code = NULL, \
             retryable = 0, row_count = NULL, result_bytes = NULL, buffer_key = NULL, sha256 = NULL, \
             duration_ms = NULL, acked_at = NULL, purged_at = NULL, attempts = ?11 WHERE command_id = ?1"
        } else {
            "INSERT INTO commands (command_id, execution_id, activity_id, idem_key, connection, query_hash, \
             frame_json, state, received_at, expires_at, attempts, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?10, ?8, ?9, ?11, ?12)"
        };
        tx.prepare_cached(sql)?.execute(params![
            c.command_id,
            c.execution_id,
            c.activity_id,
            c.idempotency_key,
            c.connection,
            qhash,
            c.frame_json,
            c.received_at_ms,
            c.expires_at_ms,
            state.as_str(),
            attempts,
            started_at
        ])?;
        audit::append(
            &tx,
            &Entry {
                ts_ms: c.received_at_ms,
                event: "received",
                command_id: Some(c.command_id),
                execution_id: c.execution_id,
                connection: c.connection,
                query_hash: qh,
                query_text: qtext,
                detail: by_id.is_some().then_some("again after a retryable failure"),
                ..Entry::default()
            },
        )?;
        if start {
            append_started(&tx, now, c.command_id, c.execution_id, c.connection, &qhash, attempts)?;
        }
        self.commit(tx)?;
        if freed {
            self.shrink();
        }
        Ok((Receipt::New, attempts))
    }

    /// `Received` → `Running`: counts the attempt and records `started`. Returns the attempts
    /// so far, this one included.
    pub fn start(&mut self, command_id: &str) -> Result<u32, QueueError> {
        self.writable()?;
        let tx = self.begin()?;
        let cmd = get_meta(&tx, command_id)?.ok_or_else(|| QueueError::NotFound(command_id.to_owned()))?;
        if cmd.state != State::Received {
            return Err(QueueError::Transition {
                command_id: command_id.to_owned(),
                from: cmd.state,
                to: State::Running,
            });
        }
        let attempts = cmd.attempts.saturating_add(1);
        let now = now_ms();
        tx.prepare_cached(
            "UPDATE commands SET state = 'running', attempts = ?2, started_at = ?3, server_session = NULL \
             WHERE command_id = ?1",
        )?
        .execute(params![command_id, attempts, now])?;
        append_started(
            &tx,
            now,
            command_id,
            cmd.execution_id.as_deref(),
            cmd.connection.as_deref(),
            &cmd.query_hash,
            attempts,
        )?;
        self.commit(tx)?;
        Ok(attempts)
    }

    /// Records the server-side session (opaque driver text) running a `Running` command, so it
    /// can be cancelled there after a crash.
    pub fn set_server_session(&mut self, command_id: &str, session: &str) -> Result<(), QueueError> {
        self.writable()?;
        // Its own commit, always: the worker sends the statement only once this is on disk, so
        // a command found running after a crash without a session was never sent.
        let changed = self.write(
            "UPDATE commands SET server_session = ?2 WHERE command_id = ?1 AND state = 'running'",
            params![command_id, session],
        )?;
        if changed == 0 {
            return Err(match self.get(command_id)? {
                None => QueueError::NotFound(command_id.to_owned()),
                Some(cmd) => QueueError::Transition {
                    command_id: command_id.to_owned(),
                    from: cmd.state,
                    to: State::Running,
                },
            });
        }
        Ok(())
    }

    /// `Running` (after a crash) → `Received`, to run it again once its first run is known to
    /// be gone from the server. Records `interrupted`.
    pub fn requeue(&mut self, command_id: &str) -> Result<(), QueueError> {
        self.writable()?;
        let tx = self.begin()?;
        let cmd = get_meta(&tx, command_id)?.ok_or_else(|| QueueError::NotFound(command_id.to_owned()))?;
        if cmd.state != State::Running {
            return Err(QueueError::Transition {
                command_id: command_id.to_owned(),
                from: cmd.state,
                to: State::Received,
            });
        }
        tx.prepare_cached(
            "UPDATE commands SET state = 'received', server_session = NULL WHERE command_id = ?1",
        )?
        .execute([command_id])?;
        audit::append(
            &tx,
            &Entry {
                ts_ms: now_ms(),
                event: "interrupted",
                command_id: Some(command_id),
                execution_id: cmd.execution_id.as_deref(),
                connection: cmd.connection.as_deref(),
                detail: Some("queued again"),
                ..Entry::default()
            },
        )?;
        self.commit(tx)?;
        Ok(())
    }

    /// `Running`|`Received` → a final state, with the answer frame to send (kept until
    /// acknowledged) and the result's metadata; records `executed`/`failed`/`cancelled`/`expired`.
    /// A retryable failure frees the idempotency key: a repeat runs again. Purges old answers to
    /// make room, but never refuses to store an answer for the cap (the command was accepted).
    pub fn finish(&mut self, command_id: &str, f: &Finish<'_>) -> Result<(), QueueError> {
        self.writable()?;
        let cap = self.cfg.max_bytes;
        let tx = self.begin()?;
        let cmd = get_meta(&tx, command_id)?.ok_or_else(|| QueueError::NotFound(command_id.to_owned()))?;
        if cmd.state.is_final() || !f.state.is_final() {
            return Err(QueueError::Transition {
                command_id: command_id.to_owned(),
                from: cmd.state,
                to: f.state,
            });
        }
        let needed = f.answer_json.len() as u64 + ROW_OVERHEAD;
        let mut purged = PurgeReport::default();
        make_room(&tx, cap, needed, &mut purged)?;
        let now = now_ms();
        tx.prepare_cached(
            "UPDATE commands SET state = ?2, finished_at = ?3, answer_json = ?4, code = ?5, retryable = ?6, \
             row_count = ?7, result_bytes = ?8, buffer_key = ?9, sha256 = ?10, duration_ms = ?11, \
             idem_key = CASE WHEN ?6 THEN NULL ELSE idem_key END WHERE command_id = ?1",
        )?
        .execute(params![
            command_id,
            f.state.as_str(),
            now,
            f.answer_json,
            f.code,
            f.retryable,
            f.row_count.map(to_i64),
            f.result_bytes.map(to_i64),
            f.buffer_key,
            f.sha256,
            to_i64(f.duration_ms)
        ])?;
        let detail = f.retryable.then_some("retryable");
        audit::append(
            &tx,
            &Entry {
                ts_ms: now,
                event: f.state.audit_event(),
                command_id: Some(command_id),
                execution_id: cmd.execution_id.as_deref(),
                connection: cmd.connection.as_deref(),
                row_count: f.row_count.map(to_i64),
                duration_ms: Some(to_i64(f.duration_ms)),
                outcome: f.code,
                query_hash: Some(&cmd.query_hash),
                detail,
                ..Entry::default()
            },
        )?;
        self.commit(tx)?;
        if purged.bodies_purged + purged.rows_deleted > 0 {
            self.shrink();
        }
        Ok(())
    }

    /// The cloud acknowledged the answer: it is no longer sent again and may be purged.
    /// False when the command is unknown, unfinished or acknowledged already.
    pub fn acknowledge(&mut self, command_id: &str) -> Result<bool, QueueError> {
        self.writable()?;
        let changed = self.write(ACK_SQL, params![command_id, now_ms()])?;
        Ok(changed > 0)
    }

    /// Like [`Store::acknowledge`], without a commit of its own: the acknowledgement is held in
    /// memory and written in the store's next transaction (a receipt, a start, an answer...),
    /// by [`Store::flush`], before any read that shows it ([`Store::unacknowledged`],
    /// [`Store::get`], [`Store::counts`], ...), when 256 wait, or when the
    /// store is dropped. Nothing depends on it being durable at once: an acknowledgement lost
    /// in a crash only means the answer is sent again after the restart, which the cloud drops
    /// as a duplicate (it also happens when the crash comes before the `ack` arrives).
    pub fn acknowledge_later(&mut self, command_id: &str) -> Result<(), QueueError> {
        self.writable()?;
        let full = {
            let mut pending = self.pending_acks.borrow_mut();
            pending.push((command_id.to_owned(), now_ms()));
            pending.len() >= MAX_PENDING_ACKS
        };
        if self.pending_since.get().is_none() {
            self.pending_since.set(Some(Instant::now()));
        }
        if full { self.flush_acks() } else { Ok(()) }
    }

    /// A finished command whose error was retryable must not answer repeats: frees its key so a
    /// repeat runs again (the row stays for the audit and until acknowledged). True if changed.
    pub fn forget_retryable(&mut self, command_id: &str) -> Result<bool, QueueError> {
        self.writable()?;
        let changed = self.write(
            "UPDATE commands SET retryable = 1, idem_key = NULL WHERE command_id = ?1 \
             AND state NOT IN ('received', 'running')",
            [command_id],
        )?;
        Ok(changed > 0)
    }

    /// Finished commands whose answer is not acknowledged, oldest first (to send again).
    pub fn unacknowledged(&self) -> Result<Vec<StoredAnswer>, QueueError> {
        self.unacknowledged_limited(usize::MAX)
    }

    /// Like [`Store::unacknowledged`], at most `limit` (answers can be megabytes each).
    pub fn unacknowledged_limited(&self, limit: usize) -> Result<Vec<StoredAnswer>, QueueError> {
        self.flush_acks()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cmds = query_commands(
            &self.conn,
            "WHERE acked_at IS NULL AND answer_json IS NOT NULL AND state NOT IN ('received', 'running') \
             ORDER BY finished_at, seq LIMIT ?1",
            [limit],
        )?;
        cmds.into_iter()
            .map(|c| {
                Ok(StoredAnswer {
                    finished_at_ms: c.finished_at_ms.unwrap_or(c.received_at_ms),
                    state: c.state,
                    answer_json: c.answer_json.unwrap_or_default(),
                    command_id: c.command_id,
                })
            })
            .collect()
    }

    /// Commands waiting to run (`Received`), oldest first, with their frames.
    pub fn queued(&self, limit: usize) -> Result<Vec<StoredCommand>, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_commands(&self.conn, "WHERE state = 'received' ORDER BY seq LIMIT ?1", [limit])
    }

    /// Commands found `Running` (after a crash: their first run may still be on the server),
    /// with attempts and server session, oldest first.
    pub fn interrupted(&self) -> Result<Vec<StoredCommand>, QueueError> {
        query_commands(&self.conn, "WHERE state = 'running' ORDER BY seq", [])
    }

    /// The `limit` most recently received commands, newest first, metadata and frames (the
    /// diagnostic bundle's command records; it keeps none of the frame's text).
    pub fn recent(&self, limit: usize) -> Result<Vec<StoredCommand>, QueueError> {
        self.flush_acks()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_commands(&self.conn, "ORDER BY seq DESC LIMIT ?1", [limit])
    }

    /// One command.
    pub fn get(&self, command_id: &str) -> Result<Option<StoredCommand>, QueueError> {
        self.flush_acks()?;
        get_command(&self.conn, command_id)
    }

    /// `Received` commands whose `expiresAt` is at or before `now_ms` → `Expired`, without an
    /// answer body and marked acknowledged (nothing stored to send; a repeat is `Known` as
    /// `Expired`). Use [`Store::expire_due_with`] to store the `COMMAND_EXPIRED` answer frame
    /// so it is sent again until acknowledged.
    pub fn expire_due(&mut self, now_ms: i64) -> Result<Vec<String>, QueueError> {
        self.expire_due_with(now_ms, |_| None)
    }

    /// Like [`Store::expire_due`], storing the answer frame `answer` builds for each (sent
    /// until acknowledged; `None`: nothing to send, marked acknowledged), code
    /// `COMMAND_EXPIRED`; one transaction for all of them.
    pub fn expire_due_with(
        &mut self,
        now_ms: i64,
        mut answer: impl FnMut(&StoredCommand) -> Option<String>,
    ) -> Result<Vec<String>, QueueError> {
        self.writable()?;
        let tx = self.begin()?;
        let due = query_commands(
            &tx,
            "WHERE state = 'received' AND expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY seq",
            [now_ms],
        )?;
        let mut ids = Vec::with_capacity(due.len());
        for cmd in &due {
            let body = answer(cmd);
            tx.prepare_cached(
                "UPDATE commands SET state = 'expired', finished_at = ?2, answer_json = ?3, code = 'COMMAND_EXPIRED', \
                 acked_at = CASE WHEN ?3 IS NULL THEN ?2 END WHERE command_id = ?1",
            )?
            .execute(params![cmd.command_id, now_ms, body])?;
            audit::append(
                &tx,
                &Entry {
                    ts_ms: now_ms,
                    event: "expired",
                    command_id: Some(&cmd.command_id),
                    execution_id: cmd.execution_id.as_deref(),
                    connection: cmd.connection.as_deref(),
                    outcome: Some("COMMAND_EXPIRED"),
                    query_hash: Some(&cmd.query_hash),
                    ..Entry::default()
                },
            )?;
            ids.push(cmd.command_id.clone());
        }
        self.commit(tx)?;
        Ok(ids)
    }

    /// Commands per state, unacknowledged and purged answers.
    pub fn counts(&self) -> Result<Counts, QueueError> {
        self.flush_acks()?;
        let mut counts = Counts::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, count(*), count(*) FILTER (WHERE acked_at IS NULL AND state NOT IN ('received', 'running')), \
             count(purged_at) FROM commands GROUP BY state",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let state: State = r.get::<_, String>(0)?.parse()?;
            let n = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
            counts.unacknowledged += u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
            counts.purged += u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0);
            match state {
                State::Received => counts.received += n,
                State::Running => counts.running += n,
                State::Answered => counts.answered += n,
                State::Failed => counts.failed += n,
                State::Cancelled => counts.cancelled += n,
                State::Expired => counts.expired += n,
            }
        }
        Ok(counts)
    }

    /// Space used against the cap; `warn` at `warn_ratio` (spec §8.3).
    pub fn usage(&self) -> Result<Usage, QueueError> {
        let used = used_bytes(&self.conn)?;
        let file_len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let disk = file_len(&self.path) + file_len(Path::new(&wal));
        let cap = self.cfg.max_bytes;
        let ratio = if cap == 0 { 1.0 } else { used as f64 / cap as f64 };
        Ok(Usage {
            disk_bytes: disk,
            used_bytes: used,
            cap_bytes: cap,
            ratio,
            warn: ratio >= self.cfg.warn_ratio,
        })
    }

    /// Purges finished, acknowledged work oldest-first until the database is under the warning
    /// line (`warn_ratio` × cap), and hands the freed pages back to the file system. Never an
    /// unfinished or unacknowledged command, never the audit log.
    pub fn purge(&mut self) -> Result<PurgeReport, QueueError> {
        self.writable()?;
        let target = (self.cfg.max_bytes as f64 * self.cfg.warn_ratio.clamp(0.0, 1.0)) as u64;
        let tx = self.begin()?;
        let mut report = PurgeReport { used_before: used_bytes(&tx)?, ..PurgeReport::default() };
        purge_to(&tx, target, u64::MAX, &mut report)?;
        if report.bodies_purged + report.rows_deleted > 0 {
            let detail =
                format!("{} answers purged, {} old rows deleted", report.bodies_purged, report.rows_deleted);
            audit::append(
                &tx,
                &Entry { ts_ms: now_ms(), event: "purged", detail: Some(&detail), ..Entry::default() },
            )?;
        }
        self.commit(tx)?;
        if report.bodies_purged + report.rows_deleted > 0 {
            self.shrink();
        }
        report.used_after = used_bytes(&self.conn)?;
        Ok(report)
    }

    /// Returns free pages to the file system (best effort: a failure only leaves them free).
    fn shrink(&mut self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
            tracing::warn!(error = %e, "queue database: incremental vacuum failed");
        }
    }

    /// Audit records with `ts >= since_ms` (all when None), oldest first.
    pub fn audit_records(&self, since_ms: Option<i64>) -> Result<Vec<AuditRecord>, QueueError> {
        audit::records(&self.conn, since_ms)
    }

    /// Checks the whole chain and the head. A broken chain is `Ok` with `ok: false` and the
    /// first bad seq; `Err` only when the database cannot be read.
    pub fn verify_audit(&self) -> Result<AuditReport, QueueError> {
        audit::verify(&self.conn)
    }

    /// Appends an event that changes no command state (rejected by the gate, cancel asked,
    /// agent started/stopped, ...).
    pub fn audit_note(&mut self, ev: &AuditEvent<'_>) -> Result<(), QueueError> {
        self.writable()?;
        if ev.event.is_empty() {
            return Err(QueueError::Corrupt("an audit event needs a name".into()));
        }
        let qhash = ev.query.map(query_hash);
        let (qh, qtext) = self.audit_entry(qhash.as_deref(), ev.query);
        let tx = self.begin()?;
        audit::append(
            &tx,
            &Entry {
                ts_ms: now_ms(),
                event: ev.event,
                command_id: ev.command_id,
                execution_id: ev.execution_id,
                connection: ev.connection,
                outcome: ev.outcome,
                query_hash: qh,
                query_text: qtext,
                detail: ev.detail,
                ..Entry::default()
            },
        )?;
        self.commit(tx)?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (slow on a big file: for tests and diagnostics).
    pub fn integrity_check(&self) -> Result<String, QueueError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

impl Drop for Store {
    /// Writes the pending acknowledgements, then ends the checkpoint thread before the store's
    /// connection closes (the last one to close checkpoints the WAL and removes it).
    fn drop(&mut self) {
        if let Err(e) = self.flush_acks() {
            tracing::warn!(error = %e, "queue database: pending acknowledgements not written (their answers are sent again)");
        }
        self.checkpointer = None;
    }
}

fn read_instance_id(conn: &Connection) -> Result<String, QueueError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |r| r.get::<_, String>(0))
        .optional()?
        .ok_or_else(|| QueueError::Corrupt("the instance id is missing".into()))
}

/// The `started` audit record of an attempt.
fn append_started(
    tx: &rusqlite::Connection,
    now: i64,
    command_id: &str,
    execution_id: Option<&str>,
    connection: Option<&str>,
    query_hash: &str,
    attempts: u32,
) -> Result<(), QueueError> {
    let detail = format!("attempt {attempts}");
    audit::append(
        tx,
        &Entry {
            ts_ms: now,
            event: "started",
            command_id: Some(command_id),
            execution_id,
            connection,
            query_hash: Some(query_hash),
            detail: Some(&detail),
            ..Entry::default()
        },
    )
    .map(drop)
}
