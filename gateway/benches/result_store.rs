//! Where a cluster keeps a buffered result so that any node can serve it (issue 14): Redis (what
//! `cluster.rs` does: the verified NDJSON stream in 1 MiB parts, `RPUSH`, read back part by part
//! with `LINDEX`) against a shared directory (one file written, `fsync`ed, read back), side by
//! side in one run on the same bytes. Needs `redis-server` on PATH (scripts/net-tools.sh).
//!
//! `cargo bench -p gateway --bench result_store [-- MiB]` (default 100 MiB).

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;

const PART: usize = 1 << 20;

fn main() {
    let mib: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = match Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipping: cannot start redis-server ({e}); run scripts/net-tools.sh");
            return;
        }
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match client.get_connection() {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("redis-server did not start: {e}"),
        }
    };
    // NDJSON-like rows, ~270 bytes each.
    let mut data = Vec::with_capacity(mib * PART);
    let mut n = 0u64;
    while data.len() < mib * PART {
        data.extend_from_slice(format!("[\"tag\",{n},\"{}\"]\n", "x".repeat(240)).as_bytes());
        n += 1;
    }
    let dir = std::env::temp_dir().join(format!("result-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("| store | write | read back | {mib} MiB result |");
    println!("|---|---|---|---|");
    for round in 0..3 {
        // Redis, as cluster.rs does it.
        let key = format!("bench:{round}");
        let t = Instant::now();
        for part in data.chunks(PART) {
            conn.rpush::<_, _, ()>(&key, part).unwrap();
        }
        conn.pexpire::<_, ()>(&key, 86_400_000).unwrap();
        let write = t.elapsed();
        let t = Instant::now();
        let count: usize = conn.llen(&key).unwrap();
        let mut read = 0usize;
        for i in 0..count {
            let part: Vec<u8> = conn.lindex(&key, i as isize).unwrap();
            read += part.len();
        }
        let back = t.elapsed();
        assert_eq!(read, data.len());
        conn.del::<_, ()>(&key).unwrap();
        row("Redis (1 MiB parts)", write, back, data.len());
        // A shared directory (here a local one: the best case for a network file system).
        let path = dir.join(format!("result-{round}"));
        let t = Instant::now();
        let mut file = std::fs::File::create(&path).unwrap();
        for part in data.chunks(PART) {
            file.write_all(part).unwrap();
        }
        file.sync_all().unwrap();
        let write = t.elapsed();
        let t = Instant::now();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; PART];
        let mut read = 0usize;
        loop {
            let got = file.read(&mut buf).unwrap();
            if got == 0 {
                break;
            }
            read += got;
        }
        let back = t.elapsed();
        assert_eq!(read, data.len());
        std::fs::remove_file(&path).unwrap();
        row("directory (fsync)", write, back, data.len());
    }
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let peak = info.lines().find(|l| l.starts_with("used_memory_peak_human")).unwrap_or_default();
    println!("\nredis-server {peak}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = server.kill();
    let _ = server.wait();
}

fn row(store: &str, write: Duration, read: Duration, bytes: usize) {
    let mbs = |d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "| {store} | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} MiB/s) | |",
        write.as_secs_f64() * 1000.0,
        mbs(write),
        read.as_secs_f64() * 1000.0,
        mbs(read)
    );
}
