//! PostgreSQL round trips per query (issue 12: at most two). A relay between the pool and the
//! server counts the server's `ReadyForQuery` messages: each marks the end of one exchange the
//! client waited for (a simple query, or an extended-protocol batch ending in `Sync`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use drivers::{Database, DbKind, SslMode};
use serde_json::json;

use crate::common::{Owned, run};
use crate::servers::{env_or_skip, parse_url, shared, url_spec};

/// Forwards every connection it accepts to `target`, counting `ReadyForQuery` ('Z') messages
/// from the server. Plain TCP only (the spec below disables TLS so the stream can be read).
struct Relay {
    port: u16,
    ready: Arc<AtomicU64>,
}

impl Relay {
    fn start(target: (String, u16)) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ready = Arc::new(AtomicU64::new(0));
        let count = ready.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect((target.0.as_str(), target.1)).unwrap();
                let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let count = count.clone();
                std::thread::spawn(move || count_ready(server, client, &count));
            }
        });
        Relay { port, ready }
    }

    fn ready(&self) -> u64 {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Copies server → client, parsing the message frames (type byte, big-endian length that
/// counts itself) to count `Z`s before passing them on.
fn count_ready(mut server: TcpStream, mut client: TcpStream, count: &AtomicU64) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while pending.len() >= at + 5 {
            let len = u32::from_be_bytes(pending[at + 1..at + 5].try_into().unwrap()) as usize;
            if pending.len() < at + 1 + len {
                break;
            }
            if pending[at] == b'Z' {
                count.fetch_add(1, Ordering::SeqCst);
            }
            at += 1 + len;
        }
        pending.drain(..at);
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
}

#[test]
fn postgres_queries_take_at_most_two_round_trips() {
    let Some(url) = env_or_skip("MC_TEST_PG_URL") else { return };
    let _servers = shared();
    let url = parse_url(&url);
    let relay = Relay::start((url.host.clone(), url.port));
    let spec = url_spec(DbKind::Postgres, &url);
    let db = Database::open(&drivers::ConnectionSpec {
        host: Some("127.0.0.1".into()),
        port: Some(relay.port),
        ssl_mode: SslMode::Disable,
        pool: drivers::PoolSettings {
            min_connections: 1,
            max_connections: 1,
            ..drivers::PoolSettings::default()
        },
        ..spec
    })
    .unwrap();
    // The first query also connects (startup, the session id).
    run(&db, "SELECT 1", &[]).unwrap();

    let trips = |sql: &str, params: &[serde_json::Value]| {
        let before = relay.ready();
        let (sink, _) = run(&db, sql, params).unwrap_or_else(|e| panic!("{sql}: {e}"));
        (relay.ready() - before, sink)
    };
    for _ in 0..3 {
        let (n, sink) = trips("SELECT 1 AS one", &[]);
        assert_eq!(n, 2, "SELECT 1");
        assert_eq!(sink.rows, vec![vec![Owned::Int(1)]]);
    }
    let (n, sink) = trips(
        "SELECT count(*) FROM orders WHERE customer_id = ? AND status <> ?",
        &[json!(3), json!("open")],
    );
    assert_eq!(n, 2, "with parameters");
    assert_eq!(sink.rows.len(), 1);
    let (n, sink) = trips("SELECT g, 'row ' || g FROM generate_series(1, 5000) AS g", &[]);
    assert_eq!(n, 2, "5,000 rows");
    assert_eq!(sink.rows.len(), 5000);
    // An empty result names its columns with one more exchange (see drivers/src/postgres).
    let (n, sink) = trips("SELECT id, name FROM customers WHERE false", &[]);
    assert_eq!(n, 3, "empty result");
    assert_eq!(sink.columns.as_ref().map(Vec::len), Some(2));
    assert!(sink.rows.is_empty());
}
