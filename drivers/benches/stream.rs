//! Streams 1,000,000 rows (~100 bytes of JSON each) per available driver through
//! `Database::query` into a sink that writes NDJSON like the agent's uploader
//! (`serde_json::to_writer(&[Cell])` + `\n` into a reused buffer cleared every ~1 MB), and
//! compares it with the raw driver fetch of the same query in the same run (the limit:
//! rows read from the client library and every value touched, nothing converted).
//!
//! ```text
//! scripts/db-servers.sh start && eval "$(scripts/db-servers.sh env)"
//! cargo bench -j2 -p drivers --bench stream            # MC_BENCH_ROWS=1000000 by default
//! ```
//!
//! Peak RSS (VmHWM, reset before each run through /proc/self/clear_refs) is sampled at 100k
//! rows and at the end: it must not grow with the row count. `MC_BENCH_ONLY=postgres,mariadb`
//! picks drivers (`sqlite`, `postgres`, `mariadb`, `odbc-postgres`, `odbc-mariadb`).

use std::time::{Duration, Instant};

use drivers::{
    Cell, ColumnMeta, ConnectionSpec, Database, DbKind, OdbcDialect, Password, QueryOptions, RowSink, Secret,
    SinkError,
};

const CHUNK: usize = 1 << 20;

fn rows() -> u64 {
    std::env::var("MC_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn reset_peak() {
    // "5" resets the peak RSS (VmHWM) of the process (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The agent's row pipeline: NDJSON into a reused buffer, "uploaded" (cleared) every ~1 MB.
struct Ndjson {
    buf: Vec<u8>,
    rows: u64,
    bytes: u64,
    hwm_at_100k: u64,
}

impl RowSink for Ndjson {
    fn columns(&mut self, columns: &[ColumnMeta]) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.buf, columns).map_err(|e| SinkError(e.to_string()))?;
        self.buf.push(b'\n');
        Ok(())
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.buf, cells).map_err(|e| SinkError(e.to_string()))?;
        self.buf.push(b'\n');
        self.rows += 1;
        if self.buf.len() >= CHUNK {
            self.bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        if self.rows == 100_000 {
            self.hwm_at_100k = status_kb("VmHWM:");
        }
        Ok(())
    }
}

struct Target {
    name: &'static str,
    spec: ConnectionSpec,
    sql: String,
    raw: fn(&ConnectionSpec, &str) -> u64,
}

fn url_spec(kind: DbKind, url: &str) -> ConnectionSpec {
    let rest = url.split_once("://").unwrap().1;
    let (auth, rest) = rest.rsplit_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, database) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap();
    ConnectionSpec {
        name: "bench".into(),
        kind,
        host: Some(host.into()),
        port: port.parse().ok(),
        database: Some(database.into()),
        user: Some(user.into()),
        password: Password::Value(Secret::new(password)),
        ..ConnectionSpec::default()
    }
}

fn pg_sql(n: u64) -> String {
    format!(
        "SELECT g AS id, 'customer-' || lpad(g::text, 8, '0') AS code, md5(g::text) AS hash, \
         g * 0.25::float8 AS amount, g % 2 = 0 AS even, \
         timestamp '2024-01-02 03:04:05' + g * interval '1 second' AS at \
         FROM generate_series(1, {n}) AS g"
    )
}

fn my_sql(n: u64) -> String {
    format!(
        "SELECT CAST(seq AS SIGNED) AS id, CONCAT('customer-', LPAD(seq, 8, '0')) AS code, MD5(seq) AS hash, \
         seq * 0.25e0 AS amount, seq % 2 = 0 AS even, \
         TIMESTAMP '2024-01-02 03:04:05' + INTERVAL seq SECOND AS at FROM seq_1_to_{n}"
    )
}

fn sqlite_sql(n: u64) -> String {
    format!(
        "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) \
         SELECT g AS id, 'customer-' || printf('%08d', g) AS code, \
         printf('%016x%016x', g * 2654435761, g * 40503) AS hash, g * 0.25 AS amount, g % 2 = 0 AS even, \
         datetime(1704164645 + g, 'unixepoch') AS at FROM s"
    )
}

mod raw {
    use super::*;
    use postgres::types::{FromSql, Type};

    struct Bytes<'a>(Option<&'a [u8]>);
    impl<'a> FromSql<'a> for Bytes<'a> {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Bytes(Some(raw)))
        }
        fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Bytes(None))
        }
        fn accepts(_: &Type) -> bool {
            true
        }
    }

    pub fn postgres(spec: &ConnectionSpec, sql: &str) -> u64 {
        use postgres::fallible_iterator::FallibleIterator;
        let Password::Value(password) = &spec.password else { unreachable!() };
        let mut config = postgres::Config::new();
        config
            .host(spec.host.as_deref().unwrap())
            .port(spec.port.unwrap())
            .dbname(spec.database.as_deref().unwrap())
            .user(spec.user.as_deref().unwrap())
            .password(password.expose());
        let mut client = config.connect(postgres::NoTls).unwrap();
        let mut rows = client.query_raw(sql, std::iter::empty::<i32>()).unwrap();
        let (mut n, mut touched) = (0u64, 0usize);
        while let Some(row) = rows.next().unwrap() {
            for i in 0..row.len() {
                touched += row.get::<_, Bytes<'_>>(i).0.map_or(0, <[u8]>::len);
            }
            n += 1;
        }
        std::hint::black_box(touched);
        n
    }

    pub fn mysql(spec: &ConnectionSpec, sql: &str) -> u64 {
        use mysql::prelude::Queryable;
        let Password::Value(password) = &spec.password else { unreachable!() };
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(spec.host.clone())
            .tcp_port(spec.port.unwrap())
            .db_name(spec.database.clone())
            .user(spec.user.clone())
            .pass(Some(password.expose().to_owned()))
            .prefer_socket(false);
        let mut conn = mysql::Conn::new(opts).unwrap();
        let (mut n, mut touched) = (0u64, 0usize);
        for row in conn.exec_iter(sql, ()).unwrap() {
            let row = row.unwrap();
            for i in 0..row.len() {
                touched += match row.as_ref(i) {
                    Some(mysql::Value::Bytes(b)) => b.len(),
                    Some(_) => 8,
                    None => 0,
                };
            }
            n += 1;
        }
        std::hint::black_box(touched);
        n
    }

    pub fn sqlite(spec: &ConnectionSpec, sql: &str) -> u64 {
        let conn =
            rusqlite::Connection::open_with_flags(&spec.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let (mut n, mut touched) = (0u64, 0usize);
        while let Some(row) = rows.next().unwrap() {
            for i in 0..width {
                touched += match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.len(),
                    _ => 8,
                };
            }
            n += 1;
        }
        std::hint::black_box(touched);
        n
    }

    /// ODBC: the same row-by-row `SQLGetData` fetch of text the driver does, without cells.
    pub fn odbc(spec: &ConnectionSpec, sql: &str) -> u64 {
        use odbc_api::{ConnectionOptions, Cursor, Environment, ResultSetMetadata};
        let env = Box::leak(Box::new(Environment::new().unwrap()));
        let mut cs = spec.connection_string.as_ref().unwrap().expose().to_owned();
        cs.push_str(match spec.dialect {
            Some(OdbcDialect::Postgres) => ";UseDeclareFetch=1;Fetch=1000;BoolsAsChar=0",
            Some(OdbcDialect::Mysql) => ";NO_CACHE=1",
            _ => "",
        });
        let conn = env.connect_with_connection_string(&cs, ConnectionOptions::default()).unwrap();
        let mut cursor = conn.execute(sql, (), None).unwrap().unwrap();
        let width = cursor.num_result_cols().unwrap() as u16;
        let (mut n, mut touched) = (0u64, 0usize);
        let mut buf = Vec::new();
        while let Some(mut row) = cursor.next_row().unwrap() {
            for col in 1..=width {
                if row.get_text(col, &mut buf).unwrap() {
                    touched += buf.len();
                }
            }
            n += 1;
        }
        std::hint::black_box(touched);
        n
    }
}

fn main() {
    let n = rows();
    let mut targets = Vec::new();
    let dir = std::env::temp_dir().join(format!("mc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_path = dir.join("empty.sqlite");
    drivers::fixture::create_sample_erp(&sqlite_path, 0).unwrap();
    targets.push(Target {
        name: "sqlite",
        spec: ConnectionSpec {
            name: "bench".into(),
            kind: DbKind::Sqlite,
            path: sqlite_path,
            ..ConnectionSpec::default()
        },
        sql: sqlite_sql(n),
        raw: raw::sqlite,
    });
    if let Ok(url) = std::env::var("MC_TEST_PG_URL") {
        targets.push(Target {
            name: "postgres",
            spec: url_spec(DbKind::Postgres, &url),
            sql: pg_sql(n),
            raw: raw::postgres,
        });
    }
    if let Ok(url) = std::env::var("MC_TEST_MYSQL_URL") {
        targets.push(Target {
            name: "mariadb",
            spec: url_spec(DbKind::Mysql, &url),
            sql: my_sql(n),
            raw: raw::mysql,
        });
    }
    for (name, var, dialect, sql) in [
        ("odbc-postgres", "MC_TEST_ODBC_PG", OdbcDialect::Postgres, pg_sql(n)),
        ("odbc-mariadb", "MC_TEST_ODBC_MYSQL", OdbcDialect::Mysql, my_sql(n)),
    ] {
        if let Ok(cs) = std::env::var(var) {
            let spec = ConnectionSpec {
                name: "bench".into(),
                kind: DbKind::Odbc,
                connection_string: Some(Secret::new(cs)),
                dialect: Some(dialect),
                ..ConnectionSpec::default()
            };
            targets.push(Target { name, spec, sql, raw: raw::odbc });
        }
    }
    if targets.len() == 1 {
        eprintln!(
            "only SQLite: start the servers (scripts/db-servers.sh start; eval \"$(scripts/db-servers.sh env)\")"
        );
    }

    println!("rows per run: {n}");
    println!(
        "{:<14} {:>12} {:>12} {:>7} {:>10} {:>13} {:>13}",
        "driver", "raw rows/s", "agent rows/s", "ratio", "MB NDJSON", "HWM@100k KiB", "HWM@end KiB"
    );
    let only = std::env::var("MC_BENCH_ONLY").ok();
    for t in targets.iter().filter(|t| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == t.name))) {
        // The agent pipeline runs first, so its peak RSS is not the raw run's leftovers.
        let db = Database::open(&t.spec).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        reset_peak();
        let mut sink = Ndjson { buf: Vec::with_capacity(CHUNK + 4096), rows: 0, bytes: 0, hwm_at_100k: 0 };
        let opts = QueryOptions { timeout: Some(Duration::from_secs(600)), ..QueryOptions::default() };
        let started = Instant::now();
        let checked =
            gate::check_with(&t.sql, 0, db.gate_target(), &gate::Policy::default(), &gate::Limits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let stats = db.query(&checked, &[], &opts, &mut sink).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let agent_time = started.elapsed();
        let hwm_end = status_kb("VmHWM:");
        assert_eq!(stats.rows, n);
        drop(db);

        let started = Instant::now();
        let raw_rows = (t.raw)(&t.spec, &t.sql);
        let raw_time = started.elapsed();
        assert_eq!(raw_rows, n, "{}: raw fetch", t.name);
        let bytes = sink.bytes + sink.buf.len() as u64;
        let rate = |t: Duration| n as f64 / t.as_secs_f64();
        println!(
            "{:<14} {:>12.0} {:>12.0} {:>7.2} {:>10.1} {:>13} {:>13}",
            t.name,
            rate(raw_time),
            rate(agent_time),
            raw_time.as_secs_f64() / agent_time.as_secs_f64(),
            bytes as f64 / 1e6,
            sink.hwm_at_100k,
            hwm_end
        );
        println!("{:<14} avg row {:.0} bytes of NDJSON", "", bytes as f64 / n as f64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
