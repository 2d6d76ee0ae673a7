//! Round-trip latency of `SELECT 1`: gateway → agent → gateway over TLS 1.3 on loopback.
//!
//! Starts the reference gateway in this process, the real agent binary as a child process
//! (built with the bench profile), and sends `SELECT 1` commands one after another, timing each
//! from the gateway's `query` call until its result is back. Prints percentiles.
//!
//! Run: `cargo bench --bench roundtrip` (optional: `-- --count 20000`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewayConfig, GatewayEvent, QueryRequest};

fn main() {
    let mut count = 5_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--count" {
            count = args.next().and_then(|v| v.parse().ok()).expect("--count N");
        }
    }
    let dir = std::env::temp_dir().join(format!("mc-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("erp.db");
    drivers::fixture::create_sample_erp(&db, 1).unwrap();

    let gateway = Gateway::start(GatewayConfig::new(dir.join("gateway"))).unwrap();
    let events = gateway.subscribe();
    let key = gateway.keys().create("bench", "Bench").unwrap().1;
    std::fs::write(dir.join("api-key"), key.expose()).unwrap();
    let config = serde_json::json!({
        "connectorName": "Bench",
        "apiKeyRef": format!("file:{}", dir.join("api-key").display()),
        "cloudUrl": gateway.ws_url(),
        "caCertPath": gateway.ca_cert_path(),
        "logLevel": "warn",
        "connections": [{ "name": "erp", "type": "sqlite", "path": db }]
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(["start", "--config"])
        .arg(dir.join("config.json"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match events.recv_deadline(deadline) {
            Ok(GatewayEvent::AgentConnected { .. }) => break,
            Ok(_) => {}
            Err(_) => panic!("agent did not connect"),
        }
    }
    drop(events);

    let request = || QueryRequest {
        sql: "SELECT 1".into(),
        params: Vec::new(),
        timeout_ms: None,
        connection: None,
        ttl: None,
        wait: Duration::from_secs(10),
        idempotency_key: None,
    };
    for _ in 0..500 {
        gateway.query("Bench", request()).unwrap();
    }
    let mut samples = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let outcome = gateway.query("Bench", request()).unwrap();
        samples.push(t.elapsed());
        assert_eq!(outcome.row_count, 1);
    }
    let total = started.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("roundtrip SELECT 1 over TLS 1.3 loopback, {count} commands after 500 warm-up");
    println!(
        "p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  max {:.0} µs  mean {:.0} µs  ({:.0} commands/s sequential)",
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        us(samples[samples.len() - 1]),
        us(total) / count as f64,
        count as f64 / total.as_secs_f64()
    );
    gateway.shutdown();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
