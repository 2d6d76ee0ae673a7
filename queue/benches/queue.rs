//! Commands per second through the store (receive + start + finish + acknowledge, each its own
//! transaction) with `synchronous = NORMAL` (the default) and `FULL`, side by side in one run.
//!
//! `cargo bench -p queue --bench queue` (QUEUE_BENCH_N commands per run, default 2000;
//! QUEUE_BENCH_DIR for the database directory, default the system temp dir).

use std::path::PathBuf;
use std::time::Instant;

use queue::{Finish, NewCommand, State, Store, StoreConfig, Synchronous};

fn run(dir: &std::path::Path, sync: Synchronous, n: usize, answer_bytes: usize) -> f64 {
    let path = dir.join(format!("bench-{sync:?}-{answer_bytes}-{}.db", uuid::Uuid::new_v4()));
    let mut store =
        Store::open(&path, StoreConfig { synchronous: sync, ..StoreConfig::default() }).expect("open");
    let answer = format!(r#"{{"type":"result","rows":"{}"}}"#, "r".repeat(answer_bytes));
    let frame = format!(
        r#"{{"type":"query","sql":"SELECT * FROM orders WHERE id = $1","pad":"{}"}}"#,
        "x".repeat(300)
    );
    let started = Instant::now();
    for i in 0..n {
        let id = format!("cmd-{i}");
        let cmd = NewCommand {
            command_id: &id,
            execution_id: Some("exec"),
            activity_id: Some("act"),
            idempotency_key: Some(&id),
            connection: Some("erp"),
            query: "SELECT * FROM orders WHERE id = $1",
            frame_json: &frame,
            expires_at_ms: None,
            received_at_ms: queue::now_ms(),
        };
        store.receive(&cmd).expect("receive");
        store.start(&id).expect("start");
        let finish = Finish {
            state: State::Answered,
            answer_json: &answer,
            code: Some("ok"),
            retryable: false,
            row_count: Some(10),
            result_bytes: Some(answer.len() as u64),
            buffer_key: None,
            sha256: None,
            duration_ms: 1,
        };
        store.finish(&id, &finish).expect("finish");
        store.acknowledge(&id).expect("acknowledge");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    rate
}

fn main() {
    let n: usize = std::env::var("QUEUE_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = std::env::var_os("QUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    println!(
        "queue bench: {n} commands per run (receive + start + finish + acknowledge), in {}",
        dir.display()
    );
    for answer_bytes in [1024, 256 * 1024] {
        for round in 1..=2 {
            let normal = run(&dir, Synchronous::Normal, n, answer_bytes);
            let full = run(&dir, Synchronous::Full, n, answer_bytes);
            println!(
                "answer {:>4} KiB, round {round}: NORMAL {normal:>8.0} commands/s   FULL {full:>8.0} commands/s   ({:.1}x)",
                answer_bytes / 1024,
                normal / full
            );
        }
    }
}
