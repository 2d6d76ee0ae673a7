//! Where the agent uploads chunks: only `https` to `cloudUrl`'s host and port, or to a host
//! listed in `uploadHosts`, whatever URL the cloud names in `connected`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gateway::{Gateway, GatewayConfig, QueryError};
use mini_connector::protocol::ErrorCode;
use serde_json::json;

use crate::e2e_query::request;
use crate::support::{TempDir, World, connected_agent};

/// A TCP listener that counts the connections made to it.
struct Counter {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counter {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (count, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (count2, stop2) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if stream.is_ok() {
                    count2.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { addr, count, stop, thread: Some(thread) }
    }

    fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A gateway whose `connected` names `upload_url`; `listen` fixes its port when given.
fn world(tag: &str, upload_url: String, listen: Option<SocketAddr>) -> World {
    let dir = TempDir::new(tag);
    let mut config = GatewayConfig::new(dir.0.join("gateway"));
    if let Some(addr) = listen {
        config.listen = addr;
    }
    config.upload_url = Some(upload_url);
    let gateway = Gateway::start(config).unwrap();
    World { dir, gateway }
}

/// A result far above `maxInlineBytes`: it must travel in chunks.
fn big_query() -> gateway::QueryRequest {
    let mut req = request(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60000) \
         SELECT x, 'row-' || x AS label FROM c",
    );
    req.wait = Duration::from_secs(60);
    req
}

#[test]
fn upload_urls_that_are_not_https_to_the_cloud_host_get_no_request() {
    let counter = Counter::start();
    let port = counter.addr.port();
    for (n, (url, why)) in [
        (format!("http://127.0.0.1:{port}/upload"), "is not https"),
        (format!("https://localhost:{port}/upload"), "neither the host and port of cloudUrl"),
        (format!("https://127.0.0.1:{port}/upload"), "neither the host and port of cloudUrl"),
    ]
    .into_iter()
    .enumerate()
    {
        let world = world(&format!("upload-refused-{n}"), url.clone(), None);
        let name = format!("Refused{n}");
        let agent = connected_agent(&world, &name, json!({}));
        agent.wait_log("refusing the upload URL the cloud named");

        // Small results still travel inline.
        let outcome = world.gateway.query(&name, request("SELECT 1 AS one")).unwrap();
        assert_eq!(outcome.rows, vec![vec![json!(1)]]);

        match world.gateway.query(&name, big_query()) {
            Err(QueryError::Remote(body)) => {
                assert_eq!(body.code, ErrorCode::UploadFailed, "{url}: {body:?}");
                assert!(!body.retryable, "{url}: a refused URL does not get better with retries: {body:?}");
                assert!(body.message.contains(why), "{url}: {}", body.message);
                assert!(!body.message.contains("/upload"), "only the origin is named: {}", body.message);
            }
            other => panic!("{url}: expected UPLOAD_FAILED, got {other:?}"),
        }
        assert_eq!(counter.connections(), 0, "{url}: a connection was made to the refused upload host");
        let log = agent.log_text();
        assert!(log.contains("uploadHosts"), "the warning says how to allow a host:\n{log}");
    }
}

/// A free loopback port (bound, then released for the gateway to take).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn a_host_listed_in_upload_hosts_is_used() {
    let addr = free_port();
    let world = world("upload-allowed", format!("https://localhost:{}/upload", addr.port()), Some(addr));
    // The agent dials 127.0.0.1; the upload URL names localhost, which uploadHosts allows.
    let allowed = format!("localhost:{}", addr.port());
    let _agent = connected_agent(&world, "Allowed", json!({ "uploadHosts": [allowed] }));
    let outcome = world.gateway.query("Allowed", big_query()).unwrap();
    assert_eq!(outcome.row_count, 60_000);
    assert!(outcome.buffered.as_ref().is_some_and(|b| b.chunk_count >= 1), "the result was uploaded");
}

#[test]
fn upload_hosts_entries_are_checked_when_the_config_loads() {
    let world = World::new("upload-hosts-config");
    let key = world.key("Bad");
    let config = world.agent_config("Bad", key.expose(), json!({ "uploadHosts": ["https://x.example.com/u"] }));
    let (code, _out, err) = crate::support::cli(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("uploadHosts"), "{err}");
}
