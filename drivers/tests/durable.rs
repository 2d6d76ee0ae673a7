//! Against the real servers: a database that is down does not stop `open` and comes back
//! without reopening; a statement whose client died is stopped on the server through the
//! session id `RowSink::started` gave; the pool grows from 2 to 10 under load and shrinks back.

use std::collections::BTreeSet;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use drivers::{Cell, ColumnMeta, ConnectionSpec, Database, DriverError, PoolSettings, RowSink, SinkError};

use crate::common::{Owned, QueryText, run, scalar};
use crate::servers::{Backend, Engine};

/// A TCP relay on a fixed local port to a real server: stands for a server that is down
/// (not started yet) and for a client whose process died (`cut`: every socket closed at once).
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// A local port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Relay {
    fn start(port: u16, upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (flag, list) = (stop.clone(), sockets.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                };
                {
                    let mut list = list.lock().unwrap();
                    list.push(client.try_clone().unwrap());
                    list.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { port, stop, sockets, accept: Some(accept) }
    }

    /// Closes every relayed connection both ways, as the death of the client process does.
    fn cut(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.cut();
    }
}

fn upstream(spec: &ConnectionSpec) -> SocketAddr {
    format!("{}:{}", spec.host.as_deref().unwrap(), spec.port.unwrap()).parse().unwrap()
}

/// Records the session id `started` gives, and optionally sends it away at once.
#[derive(Default)]
struct SessionSink {
    started: Vec<Option<String>>,
    columns_seen: bool,
    send: Option<mpsc::Sender<Option<String>>>,
    /// Waits here (holding the connection) until every query of a group has started.
    gather: Option<Arc<Gather>>,
}

impl RowSink for SessionSink {
    fn started(&mut self, server_session: Option<&str>) -> Result<(), SinkError> {
        assert!(!self.columns_seen, "started after columns");
        self.started.push(server_session.map(str::to_owned));
        if let Some(send) = &self.send {
            let _ = send.send(server_session.map(str::to_owned));
        }
        match &self.gather {
            Some(gather) => gather.arrive(),
            None => Ok(()),
        }
    }

    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        self.columns_seen = true;
        Ok(())
    }

    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A barrier with a deadline: a pool that cannot hold all of a group at once fails the
/// group instead of hanging it.
struct Gather {
    expected: usize,
    arrived: Mutex<usize>,
    all: Condvar,
}

impl Gather {
    fn arrive(&self) -> Result<(), SinkError> {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all.notify_all();
        let (arrived, timeout) =
            self.all.wait_timeout_while(arrived, Duration::from_secs(20), |n| *n < self.expected).unwrap();
        if timeout.timed_out() {
            return Err(SinkError(format!("only {} of {} queries ran at once", *arrived, self.expected)));
        }
        Ok(())
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn backends() -> Vec<Backend> {
    [Engine::Postgres, Engine::Mysql].into_iter().filter_map(Backend::get).collect()
}

#[test]
fn a_database_that_is_down_opens_and_answers_unavailable_until_it_is_back() {
    for b in backends() {
        let port = closed_port();
        let spec = ConnectionSpec { port: Some(port), ..b.spec() };
        let db =
            Database::open(&spec).unwrap_or_else(|e| panic!("{:?}: open of a down database: {e}", b.engine));
        assert_eq!(db.gate_target(), b.db().gate_target(), "the gate target needs no connection");
        let started = Instant::now();
        let err = run(&db, "SELECT 1", &[]).unwrap_err();
        match &err {
            DriverError::Unavailable(m) => {
                assert!(m.contains("cannot reach the server"), "{:?}: {m}", b.engine)
            }
            other => panic!("{:?}: expected Unavailable, got {other:?}", b.engine),
        }
        assert!(err.is_retryable());
        assert!(!err.to_string().contains("ro-test-pw"), "{err}");
        eprintln!("measured: {:?} refused connection → Unavailable in {:?}", b.engine, started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}: a refused connection answers at once, not after the acquire timeout ({:?})",
            b.engine,
            started.elapsed()
        );
        assert!(matches!(db.check_health(), Err(DriverError::Unavailable(_))), "{:?}", b.engine);

        // The server comes up on that port: the same handle works, no reopening.
        let _relay = Relay::start(port, upstream(&b.spec()));
        db.check_health().unwrap_or_else(|e| panic!("{:?}: health once up: {e}", b.engine));
        assert_eq!(scalar(&db, "SELECT 1 + 1"), Owned::Int(2), "{:?}", b.engine);
    }
}

#[test]
fn an_unknown_host_opens_and_answers_unavailable() {
    let Some(b) = Backend::get(Engine::Postgres) else { return };
    let db =
        Database::open(&ConnectionSpec { host: Some("no-such-host.invalid".into()), ..b.spec() }).unwrap();
    assert!(matches!(run(&db, "SELECT 1", &[]), Err(DriverError::Unavailable(_))));
}

/// Whether the server still executes a statement in `session`, asked with the engine's own
/// client (the gate keeps session lists away from queries, rightly).
fn running_on_server(engine: Engine, session: &str) -> bool {
    match engine {
        Engine::Postgres => {
            let url = std::env::var("MC_TEST_PG_URL").unwrap();
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let pid: i32 = session.split(':').nth(1).unwrap().parse().unwrap();
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[&pid],
                )
                .unwrap();
            row.get::<_, i64>(0) > 0
        }
        _ => {
            use mysql::prelude::Queryable;
            let url = std::env::var("MC_TEST_MYSQL_URL").unwrap();
            let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
            let id: u64 = session.split(':').nth(1).unwrap().parse().unwrap();
            let n: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND COMMAND = 'Execute'",
                    (id,),
                )
                .unwrap();
            n.unwrap_or(0) > 0
        }
    }
}

#[test]
fn a_statement_whose_client_died_is_stopped_on_the_server_by_its_session_id() {
    for b in backends() {
        let relay = Relay::start(closed_port(), upstream(&b.spec()));
        let single = PoolSettings { min_connections: 1, max_connections: 1, ..PoolSettings::default() };
        let crashing =
            Database::open(&ConnectionSpec { port: Some(relay.port), pool: single, ..b.spec() }).unwrap();
        let (send, sessions) = mpsc::channel();
        let slow = b.slow_sql();
        let worker = std::thread::spawn(move || {
            let mut sink = SessionSink { send: Some(send), ..SessionSink::default() };
            crashing.query_text(slow, &[], &drivers::QueryOptions::default(), &mut sink)
        });
        let session = sessions.recv_timeout(Duration::from_secs(20)).unwrap().expect("a server session id");
        let prefix = if b.engine == Engine::Postgres { "pg:" } else { "mysql:" };
        assert!(session.starts_with(prefix), "{session}");
        // The number and the start of the session (backend start, server start).
        assert_eq!(session.split(':').count(), 3, "{session}");

        let other = b.db();
        wait_until("the slow query runs on the server", Duration::from_secs(10), || {
            running_on_server(b.engine, &session)
        });
        // The agent dies: its sockets close without a cancel. The server goes on running the
        // statement (it does not read the socket while it computes).
        relay.cut();
        assert!(worker.join().unwrap().is_err());
        assert!(running_on_server(b.engine, &session), "{:?}: still running after the client died", b.engine);

        // A new process, another pool: stop it by the recorded id.
        let started = Instant::now();
        assert!(other.cancel_server_session(&session).unwrap(), "{:?}", b.engine);
        eprintln!("measured: {:?} cancel_server_session proven in {:?}", b.engine, started.elapsed());
        assert!(!running_on_server(b.engine, &session), "{:?}: gone once cancel says so", b.engine);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}: {:?}", b.engine, started.elapsed());
        // Again: the session is not there any more, which is proof enough.
        assert!(other.cancel_server_session(&session).unwrap());
        assert!(matches!(other.cancel_server_session("odbc:1"), Err(DriverError::Bind(_))));
        // The canceller's own pool is unharmed.
        assert_eq!(scalar(&other, "SELECT 1 + 1"), Owned::Int(2));
    }
}

/// Whether the server lists `session` at all (idle or not).
fn listed_on_server(engine: Engine, session: &str) -> bool {
    let id: i64 = session.split(':').nth(1).unwrap().parse().unwrap();
    match engine {
        Engine::Postgres => {
            let url = std::env::var("MC_TEST_PG_URL").unwrap();
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let pid = i32::try_from(id).unwrap();
            let row =
                client.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).unwrap();
            row.get::<_, i64>(0) > 0
        }
        _ => {
            use mysql::prelude::Queryable;
            let url = std::env::var("MC_TEST_MYSQL_URL").unwrap();
            let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
            let n: Option<u64> = conn
                .exec_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
                .unwrap();
            n.unwrap_or(0) > 0
        }
    }
}

/// An id whose pid / connection id now belongs to another session (a recycled PostgreSQL pid,
/// a MariaDB connection id counted again after a server restart) is not that session: it is
/// reported gone and the live session is left alone.
#[test]
fn an_id_of_an_earlier_session_spares_the_session_that_now_has_its_number() {
    for b in backends() {
        let db = b.db();
        let mut sink = SessionSink::default();
        db.query_text("SELECT 1", &[], &drivers::QueryOptions::default(), &mut sink).unwrap();
        let session = sink.started[0].clone().unwrap();
        let (number_part, start) = session.rsplit_once(':').unwrap();
        let earlier = format!("{number_part}:{}", start.parse::<i64>().unwrap() - 1000);
        assert!(db.cancel_server_session(&earlier).unwrap(), "{:?}", b.engine);
        assert!(listed_on_server(b.engine, &session), "{:?}: the live session is untouched", b.engine);
        for _ in 0..3 {
            assert_eq!(scalar(&db, "SELECT 1 + 1"), Owned::Int(2));
        }
    }
}

#[test]
fn the_pool_starts_at_two_grows_to_ten_under_load_and_shrinks_when_idle() {
    let Some(b) = Backend::get(Engine::Postgres) else { return };
    let pool = PoolSettings { idle_timeout: Duration::from_secs(1), ..PoolSettings::default() };
    assert_eq!((pool.min_connections, pool.max_connections), (2, 10));
    let db = b.open(pool);
    wait_until("the pool opens its two idle connections", Duration::from_secs(10), || {
        db.pool_status().connections == 2
    });
    let gather = Arc::new(Gather { expected: 10, arrived: Mutex::new(0), all: Condvar::new() });
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let (db, gather) = (db.clone(), gather.clone());
            std::thread::spawn(move || {
                let mut sink = SessionSink { gather: Some(gather), ..SessionSink::default() };
                db.query_text("SELECT 1", &[], &drivers::QueryOptions::default(), &mut sink)
                    .map(|_| sink.started)
            })
        })
        .collect();
    let sessions: BTreeSet<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap().unwrap())
        .map(|s| s.expect("a postgres session id"))
        .collect();
    assert_eq!(sessions.len(), 10, "ten queries at once on ten server sessions: {sessions:?}");
    let grown = db.pool_status();
    eprintln!("measured: pool after 10 concurrent queries: {grown:?}");
    let shrinking = Instant::now();
    assert!(grown.connections <= 10 && grown.connections >= 2, "{grown:?}");
    // r2d2's reaper looks every 30 s; idle connections past the idle timeout are closed down
    // to the minimum.
    wait_until("the pool shrinks back to two", Duration::from_secs(45), || db.pool_status().connections == 2);
    eprintln!("measured: pool back to {:?} after {:?}", db.pool_status(), shrinking.elapsed());
}

#[test]
fn engines_without_server_sessions_cannot_tell() {
    let db = crate::common::sample_db();
    let mut sink = SessionSink::default();
    db.query_text("SELECT 1", &[], &drivers::QueryOptions::default(), &mut sink).unwrap();
    assert_eq!(sink.started, [None]);
    assert!(!db.cancel_server_session("pg:1:2").unwrap());
}

/// ODBC: the dialect and the gate target come from the configuration, so an ODBC database
/// that cannot be reached opens, is gated as usual, and answers `Unavailable`.
#[test]
fn an_odbc_source_that_cannot_be_reached_opens_and_answers_unavailable() {
    let Some(backend) = Backend::get(Engine::OdbcPostgres) else { return };
    let spec = crate::servers::odbc_spec("DSN=mc_no_such_dsn".into(), drivers::OdbcDialect::Postgres);
    let db = Database::open(&spec).unwrap();
    assert_eq!(db.dialect(), drivers::OdbcDialect::Postgres);
    assert_eq!(db.gate_target(), backend.db().gate_target());
    match run(&db, "SELECT 1", &[]) {
        Err(DriverError::Unavailable(m)) => assert!(m.contains("data source name"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A sink that refuses in `started` stops the query before the statement is sent.
struct RefuseStart;

impl RowSink for RefuseStart {
    fn started(&mut self, _: Option<&str>) -> Result<(), SinkError> {
        Err(SinkError("cannot record the session".into()))
    }

    fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
        panic!("columns after a refused start")
    }

    fn row(&mut self, _: &[Cell<'_>]) -> Result<(), SinkError> {
        panic!("row after a refused start")
    }
}

#[test]
fn a_sink_that_refuses_the_start_stops_the_query_before_it_is_sent() {
    let mut dbs = vec![crate::common::sample_db()];
    dbs.extend(backends().iter().map(Backend::db));
    for db in dbs {
        let err =
            db.query_text("SELECT 1", &[], &drivers::QueryOptions::default(), &mut RefuseStart).unwrap_err();
        assert!(matches!(&err, DriverError::Sink(e) if e.0.contains("record")), "{:?}: {err:?}", db.kind());
        // The connection is fine for the next query.
        assert_eq!(scalar(&db, "SELECT 1 + 1"), Owned::Int(2), "{:?}", db.kind());
    }
}
