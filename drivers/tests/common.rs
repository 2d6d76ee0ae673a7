//! Shared helpers: scratch directories, the sample database, a recording sink.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use drivers::{
    Cell, ColumnMeta, ConnectionSpec, Database, DbKind, PoolSettings, QueryOptions, QueryStats, RowSink,
    SinkError,
};

/// A directory under cargo's per-target scratch space, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "drivers-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The scale-1 sample database, built once per test run and only ever read.
///
/// It lives at a fixed path so runs do not pile up files. The data is deterministic, so a
/// concurrent run that replaces the file (atomically, by rename) replaces it with the same.
pub fn sample_path() -> &'static Path {
    static SAMPLE: OnceLock<PathBuf> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drivers-sample");
        std::fs::create_dir_all(&dir).unwrap();
        let own = dir.join(format!("erp-{}.sqlite", std::process::id()));
        drivers::fixture::create_sample_erp(&own, 1).unwrap();
        let path = dir.join("erp.sqlite");
        std::fs::rename(&own, &path).unwrap();
        path
    })
}

pub fn spec(path: &Path, pool: PoolSettings) -> ConnectionSpec {
    ConnectionSpec {
        name: "erp".into(),
        kind: DbKind::Sqlite,
        path: path.to_owned(),
        pool,
        ..ConnectionSpec::default()
    }
}

/// A pool on the shared sample database.
pub fn sample_db() -> Database {
    Database::open(&spec(sample_path(), PoolSettings::default())).unwrap()
}

/// A pool of exactly one connection on the sample database.
pub fn single_connection_db(acquire_timeout: Duration) -> Database {
    let pool =
        PoolSettings { min_connections: 1, max_connections: 1, acquire_timeout, ..PoolSettings::default() };
    Database::open(&spec(sample_path(), pool)).unwrap()
}

/// An owned copy of a [`Cell`].
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Decimal(String),
}

impl From<&Cell<'_>> for Owned {
    fn from(cell: &Cell<'_>) -> Self {
        match *cell {
            Cell::Null => Owned::Null,
            Cell::Bool(b) => Owned::Bool(b),
            Cell::Int(i) => Owned::Int(i),
            Cell::Float(f) => Owned::Float(f),
            Cell::Text(s) => Owned::Text(s.to_owned()),
            Cell::Bytes(b) => Owned::Bytes(b.to_vec()),
            Cell::Decimal(s) => Owned::Decimal(s.to_owned()),
        }
    }
}

/// Records everything it receives; each row also as JSON.
#[derive(Debug, Default)]
pub struct Recorder {
    pub columns: Option<Vec<ColumnMeta>>,
    pub rows: Vec<Vec<Owned>>,
    pub json: Vec<String>,
}

impl RowSink for Recorder {
    fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError> {
        assert!(self.columns.is_none(), "columns announced twice");
        self.columns = Some(columns.to_vec());
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
        let width = self.columns.as_ref().expect("row before columns").len();
        assert_eq!(cells.len(), width);
        self.rows.push(cells.iter().map(Owned::from).collect());
        self.json.push(serde_json::to_string(cells).map_err(|e| SinkError(e.to_string()))?);
        Ok(())
    }
}

/// The read-only gate's verdict on `sql` for `db` (empty policy, default limits), as the agent
/// reaches it before every query; a rejection becomes `WriteRejected` with the gate's reason.
pub fn checked(db: &Database, sql: &str, params: usize) -> Result<gate::Checked, drivers::DriverError> {
    gate::check_with(sql, params, db.gate_target(), &gate::Policy::default(), &gate::Limits::default())
        .map_err(|r| drivers::DriverError::WriteRejected(r.to_string()))
}

/// Runs a text through the gate, then the driver, as the agent does.
pub trait QueryText {
    /// [`Database::query`] of the gate's verdict on `sql`.
    fn query_text(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        opts: &QueryOptions,
        sink: &mut dyn drivers::RowSink,
    ) -> Result<QueryStats, drivers::DriverError>;
}

impl QueryText for Database {
    fn query_text(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        opts: &QueryOptions,
        sink: &mut dyn drivers::RowSink,
    ) -> Result<QueryStats, drivers::DriverError> {
        self.query(&checked(self, sql, params.len())?, params, opts, sink)
    }
}

/// Runs `sql` without options and returns what was recorded.
pub fn run(
    db: &Database,
    sql: &str,
    params: &[serde_json::Value],
) -> Result<(Recorder, QueryStats), drivers::DriverError> {
    let mut sink = Recorder::default();
    let stats = db.query_text(sql, params, &QueryOptions::default(), &mut sink)?;
    Ok((sink, stats))
}

/// The single value of a one-row, one-column result.
pub fn scalar(db: &Database, sql: &str) -> Owned {
    let (sink, _) = run(db, sql, &[]).unwrap();
    assert_eq!(sink.rows.len(), 1, "{sql}");
    sink.rows[0][0].clone()
}
