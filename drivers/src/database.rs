//! The driver-neutral connection handle.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::sqlite::SqliteDb;
use crate::{DatabaseSchema, DbKind, DriverError, QueryOptions, QueryStats, RowSink};

/// Connection pool limits of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections kept open even when idle (clamped to `max_connections`).
    pub min_connections: u32,
    /// Upper bound on open connections; at least 1.
    pub max_connections: u32,
    /// How long a query waits for a free connection before [`DriverError::PoolExhausted`];
    /// must not be zero.
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and replaced; zero means never.
    pub max_lifetime: Duration,
    /// Idle connections above `min_connections` are closed after this; zero means never.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            min_connections: 2,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Everything needed to open one configured database.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// Name of the connection, as the cloud console addresses it.
    pub name: String,
    /// Engine.
    pub kind: DbKind,
    /// Path of the SQLite database file.
    pub path: PathBuf,
    /// Pool limits.
    pub pool: PoolSettings,
}

/// A pooled, read-only handle on one database; cheap to clone and shared across threads.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    kind: DbKind,
    backend: Backend,
}

/// One variant per engine; every public method dispatches here.
enum Backend {
    Sqlite(SqliteDb),
}

impl Database {
    /// Opens the pool and checks that the database is readable.
    ///
    /// A missing SQLite file fails with `DriverError::Open("database file not found: ...")`;
    /// files are never created.
    pub fn open(spec: &ConnectionSpec) -> Result<Database, DriverError> {
        let backend = match spec.kind {
            DbKind::Sqlite => Backend::Sqlite(SqliteDb::open(&spec.path, &spec.pool)?),
        };
        tracing::debug!(name = %spec.name, kind = %spec.kind, "database opened");
        Ok(Database { inner: Arc::new(Inner { name: spec.name.clone(), kind: spec.kind, backend }) })
    }

    /// Name of the connection.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Engine of the connection.
    pub fn kind(&self) -> DbKind {
        self.inner.kind
    }

    /// Checks that a pooled connection answers `SELECT 1`.
    pub fn ping(&self) -> Result<(), DriverError> {
        match &self.inner.backend {
            Backend::Sqlite(db) => db.ping(),
        }
    }

    /// Reads tables, views, columns, keys and row count estimates; never reads row data.
    pub fn discover(&self) -> Result<DatabaseSchema, DriverError> {
        match &self.inner.backend {
            Backend::Sqlite(db) => db.discover(&self.inner.name),
        }
    }

    /// Runs one read-only query with positional `params` and pushes its rows into `sink`.
    ///
    /// The statement must pass [`check_read_only_statement`](crate::check_read_only_statement).
    /// Rows are streamed, never buffered; the call returns when the result is exhausted or
    /// fails with [`DriverError::Timeout`], [`DriverError::Cancelled`], [`DriverError::Sink`]...
    pub fn query(
        &self,
        sql: &str,
        params: &[serde_json::Value],
        opts: &QueryOptions,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, DriverError> {
        match &self.inner.backend {
            Backend::Sqlite(db) => db.query(sql, params, opts, sink),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Database {
    /// The SQLite backend, for white-box tests.
    pub(crate) fn sqlite(&self) -> &SqliteDb {
        match &self.inner.backend {
            Backend::Sqlite(db) => db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _assert_send_sync() {
        fn is<T: Send + Sync + Clone + 'static>() {}
        is::<Database>();
    }

    #[test]
    fn pool_defaults_match_spec() {
        let p = PoolSettings::default();
        assert_eq!((p.min_connections, p.max_connections), (2, 10));
        assert_eq!(p.acquire_timeout, Duration::from_secs(10));
        assert_eq!(p.max_lifetime, Duration::from_secs(1800));
        assert_eq!(p.idle_timeout, Duration::from_secs(300));
    }
}
