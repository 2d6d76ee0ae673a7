//! The store's cost per command on the writer's thread (the agent's supervisor), for
//! callgrind: N commands through the store the way the supervisor runs a SQLite command that
//! goes to a worker at once, with a ~300-byte frame and a ~60-byte inline answer.
//!
//! `QUEUE_COST_MODE=folded` (default): `receive_running` + `finish` + `acknowledge_later`.
//! `QUEUE_COST_MODE=separate`: `receive` + `start` + `set_server_session("local")` + `finish` +
//! `acknowledge`, five commits: the path before issue 12.
//!
//! ```text
//! cargo bench -p queue --bench cost --no-run       # then, per N, per mode:
//! QUEUE_COST_N=1100 valgrind --tool=callgrind --separate-threads=yes target/release/deps/cost-…
//! ```
//! The per-command figure is (Ir at N=1100 − Ir at N=100) / 1000 of the main thread's file.

use std::time::Instant;

use queue::{Finish, NewCommand, State, Store, StoreConfig};

fn main() {
    let n: usize = std::env::var("QUEUE_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mode = std::env::var("QUEUE_COST_MODE").unwrap_or_else(|_| "folded".into());
    let dir = std::env::var_os("QUEUE_BENCH_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let path = dir.join(format!("cost-{}.db", uuid::Uuid::new_v4()));
    let mut store = Store::open(&path, StoreConfig::default()).expect("open");
    let frame = format!(
        r#"{{"type":"command","commandId":"c","payload":{{"query":"SELECT 1","pad":"{}"}}}}"#,
        "x".repeat(220)
    );
    let answer =
        r#"{"type":"execution_result","commandId":"c","result":{"columns":[],"rows":[[1]]},"rowCount":1}"#;
    let before = store.stats();
    let started = Instant::now();
    for i in 0..n {
        let id = format!("cmd-{i}");
        let cmd = NewCommand {
            command_id: &id,
            execution_id: Some("exec"),
            activity_id: Some("act"),
            idempotency_key: Some(&id),
            connection: Some("erp"),
            query: "SELECT 1",
            frame_json: &frame,
            expires_at_ms: None,
            received_at_ms: queue::now_ms(),
        };
        let finish = Finish {
            state: State::Answered,
            answer_json: answer,
            code: Some("ok"),
            retryable: false,
            row_count: Some(1),
            result_bytes: None,
            buffer_key: None,
            sha256: None,
            duration_ms: 1,
        };
        match mode.as_str() {
            "separate" => {
                store.receive(&cmd).expect("receive");
                store.start(&id).expect("start");
                store.set_server_session(&id, "local").expect("session");
                store.finish(&id, &finish).expect("finish");
                store.acknowledge(&id).expect("acknowledge");
            }
            "folded" => {
                store.receive_running(&cmd).expect("receive");
                store.finish(&id, &finish).expect("finish");
                store.acknowledge_later(&id).expect("acknowledge");
            }
            other => panic!("QUEUE_COST_MODE {other}?"),
        }
    }
    let elapsed = started.elapsed();
    println!("{mode}: {n} commands in {elapsed:.2?} ({:.1} µs each)", elapsed.as_secs_f64() * 1e6 / n as f64);
    let cost = store.stats() - before;
    println!(
        "per command: {:.2} commits, {:.2} prepare checks, {:.2} WAL frames; checkpoints: {} inline, {} background",
        cost.commits as f64 / n as f64,
        cost.prepare_checks as f64 / n as f64,
        cost.wal_frames as f64 / n as f64,
        cost.checkpoints_inline,
        cost.checkpoints_background
    );
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
