//! The backends of the behaviour suite: SQLite always; PostgreSQL, MariaDB and the ODBC
//! drivers when `scripts/db-servers.sh` runs (`eval "$(scripts/db-servers.sh env)"`).
//!
//! Without the env vars those tests skip with a message, for developer convenience; with
//! `MC_REQUIRE_DB_SERVERS=1` (CI) a missing server fails the test instead.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use drivers::{ConnectionSpec, Database, DbKind, OdbcDialect, Password, PoolSettings, Secret};

/// Server tests take it shared; the restart test takes it exclusively, so no other test sees
/// a server go away under it.
static SERVERS: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    SERVERS.read().unwrap_or_else(|p| p.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVERS.write().unwrap_or_else(|p| p.into_inner())
}

/// The value of `var`, or `None` (skip) — unless servers are required, then a panic.
pub fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("MC_REQUIRE_DB_SERVERS").as_deref() == Ok("1") => panic!(
            "{var} is not set but MC_REQUIRE_DB_SERVERS=1: run scripts/db-servers.sh start and \
             eval \"$(scripts/db-servers.sh env)\""
        ),
        _ => {
            eprintln!(
                "skipped: {var} is not set (run scripts/db-servers.sh start; eval \"$(scripts/db-servers.sh env)\")"
            );
            None
        }
    }
}

/// Parts of `scheme://user:password@host:port/database`.
#[derive(Debug, Clone)]
pub struct Url {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

pub fn parse_url(url: &str) -> Url {
    let rest = url.split_once("://").expect("scheme://").1;
    let (auth, rest) = rest.rsplit_once('@').expect("user:password@");
    let (user, password) = auth.split_once(':').expect("user:password");
    let (hostport, database) = rest.split_once('/').expect("/database");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    Url {
        user: user.into(),
        password: password.into(),
        host: host.into(),
        port: port.parse().expect("port"),
        database: database.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    Mysql,
    OdbcPostgres,
    OdbcMysql,
    OdbcSqlite,
}

pub struct Backend {
    pub engine: Engine,
    spec: ConnectionSpec,
    _servers: Option<RwLockReadGuard<'static, ()>>,
}

pub fn url_spec(kind: DbKind, url: &Url) -> ConnectionSpec {
    ConnectionSpec {
        name: "erp".into(),
        kind,
        host: Some(url.host.clone()),
        port: Some(url.port),
        database: Some(url.database.clone()),
        user: Some(url.user.clone()),
        password: Password::Value(Secret::new(url.password.clone())),
        ..ConnectionSpec::default()
    }
}

pub fn odbc_spec(connection_string: String, dialect: OdbcDialect) -> ConnectionSpec {
    ConnectionSpec {
        name: "erp".into(),
        kind: DbKind::Odbc,
        connection_string: Some(Secret::new(connection_string)),
        dialect: Some(dialect),
        ..ConnectionSpec::default()
    }
}

impl Backend {
    pub fn get(engine: Engine) -> Option<Backend> {
        let spec = match engine {
            Engine::Sqlite => {
                return Some(Backend {
                    engine,
                    spec: crate::common::spec(crate::common::sample_path(), PoolSettings::default()),
                    _servers: None,
                });
            }
            Engine::Postgres => url_spec(DbKind::Postgres, &parse_url(&env_or_skip("MC_TEST_PG_URL")?)),
            Engine::Mysql => url_spec(DbKind::Mysql, &parse_url(&env_or_skip("MC_TEST_MYSQL_URL")?)),
            Engine::OdbcPostgres => odbc_spec(env_or_skip("MC_TEST_ODBC_PG")?, OdbcDialect::Postgres),
            Engine::OdbcMysql => odbc_spec(env_or_skip("MC_TEST_ODBC_MYSQL")?, OdbcDialect::Mysql),
            Engine::OdbcSqlite => odbc_spec(env_or_skip("MC_TEST_ODBC_SQLITE")?, OdbcDialect::Sqlite),
        };
        Some(Backend { engine, spec, _servers: Some(shared()) })
    }

    /// Drops the shared server guard (for the test that restarts a server).
    pub fn without_guard(mut self) -> Backend {
        self._servers = None;
        self
    }

    pub fn spec(&self) -> ConnectionSpec {
        self.spec.clone()
    }

    pub fn open(&self, pool: PoolSettings) -> Database {
        Database::open(&ConnectionSpec { pool, ..self.spec.clone() })
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.engine))
    }

    pub fn db(&self) -> Database {
        self.open(PoolSettings::default())
    }

    /// A pool of exactly one connection.
    pub fn single(&self, acquire_timeout: std::time::Duration) -> Database {
        self.open(PoolSettings {
            min_connections: 1,
            max_connections: 1,
            acquire_timeout,
            ..PoolSettings::default()
        })
    }

    /// Name of the golden schema file.
    pub fn golden(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "sqlite_schema.json",
            Engine::Postgres => "postgres_schema.json",
            Engine::Mysql => "mysql_schema.json",
            Engine::OdbcPostgres => "odbc_postgres_schema.json",
            Engine::OdbcMysql => "odbc_mysql_schema.json",
            Engine::OdbcSqlite => "odbc_sqlite_schema.json",
        }
    }

    /// The native drivers map every type exactly (booleans, decimals, ISO timestamps).
    pub fn strict_types(&self) -> bool {
        matches!(self.engine, Engine::Postgres | Engine::Mysql)
    }

    pub fn is_mysql(&self) -> bool {
        matches!(self.engine, Engine::Mysql | Engine::OdbcMysql)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres | Engine::OdbcPostgres)
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.engine, Engine::Sqlite | Engine::OdbcSqlite)
    }

    /// A query that runs for ~30 s on the server without producing a row.
    pub fn slow_sql(&self) -> &'static str {
        // Not `pg_sleep`/`SLEEP`: the gate refuses those, and every query reaches a driver
        // through the gate. A count over a huge series keeps the engine busy for minutes
        // (MariaDB stops a recursive CTE after `max_recursive_iterations`: a cross join there).
        match self.engine {
            Engine::Mysql | Engine::OdbcMysql => {
                "SELECT count(*) FROM seq_1_to_1000000 AS a CROSS JOIN seq_1_to_1000000 AS b"
            }
            _ => {
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10000000000) \
                 SELECT count(*) FROM c"
            }
        }
    }

    /// `n` rows of (n, 'row n'), numbered from 1.
    pub fn series_sql(&self, n: u64) -> String {
        match self.engine {
            Engine::Sqlite | Engine::OdbcSqlite => format!(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) \
                 SELECT n, 'row ' || n AS label FROM c"
            ),
            Engine::Postgres | Engine::OdbcPostgres => {
                format!("SELECT g AS n, 'row ' || g AS label FROM generate_series(1, {n}) AS g")
            }
            Engine::Mysql | Engine::OdbcMysql => {
                format!("SELECT CAST(seq AS SIGNED) AS n, CONCAT('row ', seq) AS label FROM seq_1_to_{n}")
            }
        }
    }

    /// A write reachable from a SELECT, which only the read-only session stops.
    pub fn forced_write(&self) -> Option<&'static str> {
        match self.engine {
            Engine::Postgres | Engine::OdbcPostgres => Some("SELECT nextval('invoice_no_seq')"),
            Engine::Mysql | Engine::OdbcMysql => Some("SELECT NEXTVAL(invoice_no_seq)"),
            // SQLite has no write reachable from a SELECT; its read-only layers have unit tests.
            Engine::Sqlite | Engine::OdbcSqlite => None,
        }
    }

    /// `scripts/db-servers.sh restart <what>` target for the pool-recovery test.
    pub fn restart_target(&self) -> Option<&'static str> {
        match self.engine {
            Engine::Postgres => Some("pg"),
            Engine::Mysql => Some("mysql"),
            _ => None,
        }
    }
}
