//! An inline result's cost on the agent (docs/BENCHMARKS.md, "Inline results encoded once"):
//! from rows already encoded in the result stream (one JSON array per line, as the worker writes
//! them for every result) to the frame text stored in the offline queue and the frame text sent.
//!
//! ```text
//! cargo bench -p protocol --bench inline_rows            # both paths side by side, best of 25
//! ```
//!
//! `values` is the path before: a `serde_json::Value` per cell built next to the stream, then
//! the frame encoded twice (store, link). `encoded` is the path now: the stream's row lines
//! copied into one array ([`protocol::InlineRows::from_lines`]), then the same two encodes,
//! which copy that text. The rows are shaped like the harness query (int, text, hex, timestamp,
//! numeric) and fill the default inline limit (256 KiB).

use std::hint::black_box;
use std::time::{Duration, Instant};

use protocol::{ExecutionResult, Frame as _, InlineRows, Outbound, ResultPayload};
use serde_json::{Value, json};

const INLINE_LIMIT: usize = 256 * 1024;

fn lines() -> (String, usize) {
    let mut out = String::new();
    let mut n = 0u64;
    while out.len() < INLINE_LIMIT - 200 {
        n += 1;
        let row = json!([
            n,
            format!("customer {n}"),
            format!("{:016x}{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n.wrapping_mul(0xC2B2)),
            "2024-03-01T12:34:56.789Z",
            format!("{}.{:02}", n * 37 % 100_000, n % 100),
        ]);
        out.push_str(&row.to_string());
        out.push('\n');
    }
    (out, n as usize)
}

fn frame(rows: InlineRows, row_count: u64) -> Outbound {
    Outbound::ExecutionResult(ExecutionResult {
        command_id: "c".into(),
        execution_id: "e".into(),
        activity_id: "a".into(),
        result: ResultPayload::Inline { columns: Vec::new(), rows },
        row_count,
        duration_ms: 1,
    })
}

fn best(mut run: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut len = 0;
    for _ in 0..25 {
        let start = Instant::now();
        len = black_box(run());
        best = best.min(start.elapsed());
    }
    (best, len)
}

fn main() {
    let (text, count) = lines();
    // The cells as the old path saw them: values built from the same `Serialize` as the line.
    let parsed: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let values = || {
        let rows: Vec<Vec<Value>> = parsed
            .iter()
            .map(|row| match serde_json::to_value(row).unwrap() {
                Value::Array(cells) => cells,
                other => vec![other],
            })
            .collect();
        let f = frame(rows.into(), count as u64);
        f.encode().len() + f.encode().len()
    };
    let encoded = || {
        let f = frame(InlineRows::from_lines(text.as_bytes()).unwrap(), count as u64);
        f.encode().len() + f.encode().len()
    };
    let (old, old_len) = best(values);
    let (new, new_len) = best(encoded);
    assert_eq!(old_len, new_len, "both paths give the same frames");
    println!("inline result: {count} rows, {} bytes of rows", text.len());
    println!("values  (Value per cell, 2 encodes): {:>8.3} ms", old.as_secs_f64() * 1e3);
    println!("encoded (lines copied, 2 copies):    {:>8.3} ms", new.as_secs_f64() * 1e3);
    println!("ratio encoded/values: {:.2}", new.as_secs_f64() / old.as_secs_f64());
}
