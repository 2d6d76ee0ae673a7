//! Where the agent uploads chunks: only `https` to `cloudUrl`'s host and port, or to a host
//! listed in `uploadHosts`, whatever URL the cloud names in `connected`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gateway::{Gateway, GatewayConfig, QueryError};
use mini_connector::protocol::ErrorCode;
use serde_json::json;

use crate::e2e_query::{big_query, request};
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
    let config =
        world.agent_config("Bad", key.expose(), json!({ "uploadHosts": ["https://x.example.com/u"] }));
    let (code, _out, err) = crate::support::cli(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("uploadHosts"), "{err}");
}

#[test]
fn a_result_over_the_gateway_cap_fails_for_good() {
    let dir = TempDir::new("upload-cap");
    let mut config = GatewayConfig::new(dir.0.join("gateway"));
    config.max_buffer_bytes = 512 * 1024;
    let world = World { dir, gateway: Gateway::start(config).unwrap() };
    let _agent = connected_agent(&world, "Capped", json!({}));
    match world.gateway.query("Capped", big_query()) {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::UploadFailed, "{body:?}");
            assert!(body.message.contains("413") && body.message.contains("PAYLOAD_TOO_LARGE"), "{body:?}");
            assert!(!body.retryable, "over the cap stays over the cap: {body:?}");
        }
        other => panic!("expected UPLOAD_FAILED, got {other:?}"),
    }
    assert_eq!((world.gateway.buffered_results(), world.gateway.buffered_bytes()), (0, 0));
}

/// The encodings and plain lengths of the chunks a gateway stored (kept a while after the answer).
fn stored_chunks(gateway_dir: &std::path::Path) -> Vec<(String, u64)> {
    let db = rusqlite::Connection::open(gateway_dir.join("gateway.db")).unwrap();
    let mut stmt = db.prepare("SELECT encoding, plain_len FROM gw_chunks ORDER BY seq").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn the_agent_uploads_lz4_when_the_grant_says_so_and_zlib_to_a_gateway_that_names_none() {
    for (tag, encodings, expected) in [
        ("upload-lz4", protocol::ContentEncoding::SUPPORTED.to_vec(), "lz4"),
        ("upload-old-gateway", Vec::new(), "deflate"),
    ] {
        let dir = TempDir::new(tag);
        let gateway_dir = dir.0.join("gateway");
        let mut config = GatewayConfig::new(&gateway_dir);
        config.chunk_encodings = encodings;
        let world = World { dir, gateway: Gateway::start(config).unwrap() };
        let _agent = connected_agent(&world, "Encoded", json!({}));
        let outcome = world.gateway.query("Encoded", big_query()).unwrap();
        assert_eq!(outcome.row_count, 60_000);
        assert_eq!(outcome.rows[59_999][1], json!("row-60000"));
        let info = outcome.buffered.as_ref().expect("the result was uploaded");
        let chunks = stored_chunks(&gateway_dir);
        assert_eq!(chunks.len() as u32, info.chunk_count, "{tag}");
        assert!(chunks.iter().all(|(encoding, _)| encoding == expected), "{tag}: {chunks:?}");
        assert_eq!(chunks.iter().map(|(_, n)| n).sum::<u64>(), info.byte_count, "{tag}: plain lengths");
    }
}

/// A TLS server with the gateway's certificate that answers every request with a redirect to
/// `location`, counting the requests.
fn redirecting_server(cert_dir: &std::path::Path, location: String) -> (Counter, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read as _, Write as _};

    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert_dir.join("cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(cert_dir.join("key.pem")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (count, stop, requests) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (count2, stop2, requests2) = (count.clone(), stop.clone(), requests.clone());
    let thread = std::thread::spawn(move || {
        for tcp in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(tcp) = tcp else { continue };
            count2.fetch_add(1, Ordering::SeqCst);
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // Read the head and the body, then redirect.
            let mut buf = Vec::new();
            let mut piece = [0u8; 8192];
            let complete = loop {
                let Ok(n) = tls.read(&mut piece) else { break false };
                if n == 0 {
                    break false;
                }
                buf.extend_from_slice(&piece[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break true;
                }
            };
            if complete {
                requests2.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tls.write_all(answer.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    (Counter { addr, count, stop, thread: Some(thread) }, requests)
}

#[test]
fn redirects_from_the_upload_host_are_not_followed() {
    let target = Counter::start();
    let dir = TempDir::new("upload-redirect");
    // Generate the gateway's certificate first, so the fake upload host can present it.
    Gateway::start(GatewayConfig::new(dir.0.join("gateway"))).unwrap().shutdown();
    let (fake, requests) =
        redirecting_server(&dir.0.join("gateway").join("tls"), format!("http://{}/upload", target.addr));
    let mut config = GatewayConfig::new(dir.0.join("gateway"));
    config.upload_url = Some(format!("https://127.0.0.1:{}/upload", fake.addr.port()));
    let world = World { dir, gateway: Gateway::start(config).unwrap() };
    let allowed = format!("127.0.0.1:{}", fake.addr.port());
    let _agent = connected_agent(&world, "Redirected", json!({ "uploadHosts": [allowed] }));
    match world.gateway.query("Redirected", big_query()) {
        Err(QueryError::Remote(body)) => {
            assert_eq!(body.code, ErrorCode::UploadFailed, "{body:?}");
            assert!(
                body.message.contains("307") && body.message.contains("redirects are not followed"),
                "{body:?}"
            );
            assert!(!body.retryable, "{body:?}");
        }
        other => panic!("expected UPLOAD_FAILED, got {other:?}"),
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "one POST to the allowed host, no retry");
    assert_eq!(target.connections(), 0, "the redirect target was never dialled");
    assert!(fake.connections() >= 1);
}
