//! Bytes saved by the link's message compression on a schema broadcast of a large ERP.
//!
//! Builds a schema of `--tables` tables (default 20,000) × 15 columns with ERP-like names and
//! types (module prefixes, a vocabulary of ~80 words, varied types and lengths: far less
//! repetitive than `t1.c1`), encodes the `schema_discovery` frame the agent broadcasts, and
//! compresses it as the link does (`wsio::deflate`, raw deflate level 1, 8 KiB threshold).
//! Prints the JSON bytes, the bytes on the wire, the ratio, and the CPU time to deflate and to
//! inflate (best of 5), plus the same for level 6 (flate2's default) for comparison.
//!
//! By default the schema is built with the `protocol::schema` types in memory, in the shape the
//! SQLite driver discovers; `--sqlite` creates the tables in an SQLite file and discovers them
//! with the real driver instead (slow for 20,000 tables: SQLite's DDL and the per-table
//! discovery grow faster than linearly; 2,000 take ~12 s in the dev profile).
//!
//! Run: `cargo bench --bench compression` (optional: `-- --tables 2000 --sqlite`).

use std::io::Write as _;
use std::time::{Duration, Instant};

use drivers::{ConnectionSpec, Database};
use mini_connector::protocol::schema::DatabaseSchema;
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

const MODULES: [&str; 12] = ["fi", "co", "mm", "sd", "pp", "qm", "pm", "hr", "wm", "ps", "crm", "srm"];
const WORDS: [&str; 80] = [
    "account",
    "address",
    "amount",
    "approval",
    "asset",
    "balance",
    "batch",
    "bill",
    "branch",
    "budget",
    "calendar",
    "carrier",
    "category",
    "change",
    "channel",
    "city",
    "code",
    "comment",
    "company",
    "condition",
    "contact",
    "contract",
    "cost",
    "country",
    "created",
    "currency",
    "customer",
    "date",
    "delivery",
    "department",
    "description",
    "discount",
    "document",
    "due",
    "employee",
    "entry",
    "exchange",
    "external",
    "fiscal",
    "flag",
    "freight",
    "group",
    "header",
    "invoice",
    "item",
    "journal",
    "language",
    "ledger",
    "line",
    "location",
    "material",
    "method",
    "modified",
    "name",
    "net",
    "number",
    "order",
    "owner",
    "payment",
    "period",
    "plant",
    "position",
    "posting",
    "price",
    "priority",
    "product",
    "quantity",
    "rate",
    "reason",
    "reference",
    "region",
    "sales",
    "serial",
    "status",
    "storage",
    "supplier",
    "tax",
    "terms",
    "unit",
    "vendor",
];
const TYPES: [&str; 10] = [
    "INTEGER",
    "BIGINT",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "DECIMAL",
    "DATE",
    "TIMESTAMP",
    "CHAR",
    "SMALLINT",
];

/// A deterministic pseudo-random number (SplitMix64 of `seed`).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Table `t`'s name and its 14 non-key columns as (name, SQL type).
fn table_def(t: usize) -> (String, Vec<(String, String)>) {
    let r = mix(t as u64);
    let name = format!(
        "{}_{}_{}_{t}",
        MODULES[(r % 12) as usize],
        WORDS[((r >> 8) % 80) as usize],
        WORDS[((r >> 16) % 80) as usize]
    );
    let columns = (1..15u64)
        .map(|c| {
            let r = mix((t as u64) << 8 | c);
            let column = format!("{}_{}", WORDS[(r % 80) as usize], WORDS[((r >> 8) % 80) as usize]);
            let ty = match TYPES[((r >> 16) % 10) as usize] {
                "VARCHAR" => format!("VARCHAR({})", 10 + (r >> 24) % 245),
                "CHAR" => format!("CHAR({})", 1 + (r >> 24) % 12),
                "DECIMAL" => format!("DECIMAL({},{})", 9 + (r >> 24) % 10, (r >> 32) % 5),
                other => other.to_owned(),
            };
            (format!("{column}_{c}"), ty)
        })
        .collect();
    (name, columns)
}

fn wire_type(sql_type: &str) -> &'static str {
    match sql_type {
        t if t.contains("INT") => "integer",
        t if t.starts_with("DECIMAL") => "decimal",
        "DATE" => "date",
        "TIMESTAMP" => "timestamp",
        _ => "text",
    }
}

/// The schema built in memory, in the shape the SQLite driver discovers.
fn synthetic(tables: usize) -> DatabaseSchema {
    let tables: Vec<_> = (0..tables)
        .map(|t| {
            let (name, columns) = table_def(t);
            let mut cols = vec![serde_json::json!({
                "name": "id", "dataType": "INTEGER", "wireType": "integer", "nullable": true
            })];
            cols.extend(columns.iter().map(|(n, ty)| {
                serde_json::json!({"name": n, "dataType": ty, "wireType": wire_type(ty), "nullable": true})
            }));
            serde_json::json!({"name": name, "kind": "table", "columns": cols, "primaryKey": ["id"], "foreignKeys": []})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"connection": "erp", "dbType": "sqlite", "tables": tables}))
        .unwrap()
}

/// The schema created in an SQLite file and discovered by the real driver.
fn discovered(dir: &std::path::Path, tables: usize) -> DatabaseSchema {
    let path = dir.join("erp.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    let mut sql = String::from("BEGIN;");
    for t in 0..tables {
        let (name, columns) = table_def(t);
        let columns: Vec<String> = columns.iter().map(|(n, ty)| format!("{n} {ty}")).collect();
        sql.push_str(&format!("CREATE TABLE {name} (id INTEGER PRIMARY KEY, {});", columns.join(", ")));
    }
    sql.push_str("COMMIT;");
    let t = Instant::now();
    db.execute_batch(&sql).unwrap();
    drop(db);
    eprintln!("created {tables} tables in {:.2?}", t.elapsed());
    let spec = ConnectionSpec { name: "erp".into(), path, ..ConnectionSpec::default() };
    let t = Instant::now();
    let schema = Database::open(&spec).unwrap().discover().unwrap();
    eprintln!("discovered them in {:.2?}", t.elapsed());
    schema
}

fn main() {
    let mut tables = 20_000usize;
    let mut sqlite = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tables" => tables = args.next().and_then(|v| v.parse().ok()).expect("--tables N"),
            "--sqlite" => sqlite = true,
            _ => {}
        }
    }
    let dir = std::env::temp_dir().join(format!("mc-bench-compression-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let schema = if sqlite { discovered(&dir, tables) } else { synthetic(tables) };
    let text = Outbound::SchemaDiscovery(SchemaDiscovery { timestamp: now_rfc3339(), schema: vec![schema] })
        .encode();

    let (deflate_time, packed) = best_of(5, || deflate(text.as_bytes()));
    let (inflate_time, back) = best_of(5, || inflate(&packed, 1 << 30).unwrap());
    assert_eq!(back, text);
    let (fast_time, fast) = best_of(5, || {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    });
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    let source = if sqlite { "SQLite, discovered" } else { "built in memory" };
    println!("schema broadcast: {tables} tables x 15 columns ({source})");
    println!("  JSON text frame:        {:>10} bytes ({:.2} MiB)", text.len(), mib(text.len()));
    println!(
        "  link (deflate level 1): {:>10} bytes ({:.1}x smaller, {:.1} % saved), deflate {:.1?}, inflate {:.1?}",
        packed.len(),
        text.len() as f64 / packed.len() as f64,
        100.0 * (1.0 - packed.len() as f64 / text.len() as f64),
        deflate_time,
        inflate_time
    );
    println!(
        "  deflate level 6:        {:>10} bytes ({:.1}x smaller), deflate {:.1?}",
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
