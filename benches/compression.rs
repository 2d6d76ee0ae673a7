//! Bytes saved by the link's message compression on a schema broadcast of a large ERP.
//!
//! Builds an SQLite database of `--tables` tables (default 20,000) × 15 columns, discovers it
//! with the real driver, encodes the `schema_discovery` frame the agent broadcasts, and
//! compresses it as the link does (`wsio::deflate`, raw deflate level 6, 8 KiB threshold).
//! Prints the JSON bytes, the bytes on the wire, the ratio, and the CPU time to deflate and to
//! inflate (best of 5), plus the same for flate2's fastest level for comparison.
//!
//! Run: `cargo bench --bench compression` (optional: `-- --tables 2000`).

use std::io::Write as _;
use std::time::{Duration, Instant};

use drivers::{ConnectionSpec, Database};
use mini_connector::protocol::{Frame as _, MAX_FRAME_BYTES, Outbound, SchemaDiscovery, now_rfc3339};
use mini_connector::wsio::{deflate, inflate};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn main() {
    let mut tables = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tables" {
            tables = args.next().and_then(|v| v.parse().ok()).expect("--tables N");
        }
    }
    let dir = std::env::temp_dir().join(format!("mc-bench-compression-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("erp.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    let columns: Vec<String> = (1..15).map(|c| format!("attribute_{c:02} VARCHAR(80)")).collect();
    let mut sql = String::from("BEGIN;");
    for t in 0..tables {
        sql.push_str(&format!("CREATE TABLE erp_table_{t:05} (id INTEGER PRIMARY KEY, {});", columns.join(", ")));
    }
    sql.push_str("COMMIT;");
    db.execute_batch(&sql).unwrap();
    drop(db);

    let spec = ConnectionSpec { name: "erp".into(), path: path.clone(), ..ConnectionSpec::default() };
    let database = Database::open(&spec).unwrap();
    let t = Instant::now();
    let schema = database.discover().unwrap();
    let discovery = t.elapsed();
    let text = Outbound::SchemaDiscovery(SchemaDiscovery { timestamp: now_rfc3339(), schema: vec![schema] }).encode();

    let (deflate_time, packed) = best_of(5, || deflate(text.as_bytes()));
    let (inflate_time, back) = best_of(5, || inflate(&packed, usize::MAX).unwrap());
    assert_eq!(back, text);
    let (fast_time, fast) = best_of(5, || {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    });
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    println!("schema broadcast: {tables} tables x 15 columns (discovery {:.2?})", discovery);
    println!("  JSON text frame:        {:>10} bytes ({:.2} MiB)", text.len(), mib(text.len()));
    println!(
        "  deflate (level 6):      {:>10} bytes ({:.1}x smaller, {:.1} % saved), deflate {:.1?}, inflate {:.1?}",
        packed.len(),
        text.len() as f64 / packed.len() as f64,
        100.0 * (1.0 - packed.len() as f64 / text.len() as f64),
        deflate_time,
        inflate_time
    );
    println!(
        "  deflate (level 1):      {:>10} bytes ({:.1}x smaller), deflate {:.1?}",
        fast.len(),
        text.len() as f64 / fast.len() as f64,
        fast_time
    );
    println!(
        "  frame limit {} bytes: the JSON is {} it",
        MAX_FRAME_BYTES,
        if text.len() > MAX_FRAME_BYTES { "OVER" } else { "under" }
    );
    let _ = std::fs::remove_dir_all(&dir);
}
