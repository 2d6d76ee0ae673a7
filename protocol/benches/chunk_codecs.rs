//! Chunk codecs on real result data (docs/BENCHMARKS.md, "Chunk compression (issue 12)"): the
//! product's own [`protocol::ContentEncoding`] encoders and decoders, on ~1 MiB chunks cut at row
//! boundaries like the agent's, decoded in 64 KiB steps like the gateway's.
//!
//! ```text
//! cargo bench -p protocol --bench chunk_codecs -- FILE.ndjson            # MB/s, ratio (best of 5)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   target/release/deps/chunk_codecs-* FILE.ndjson CODEC N [d]          # instructions: N chunks
//! ```
//!
//! CODEC is `none` (the baseline: reading and cutting the file), `deflate` or `lz4`; `d` also
//! decompresses. Without FILE, 1M synthetic rows shaped like the harness query are used.

use std::io::Read as _;
use std::time::Instant;

use protocol::ContentEncoding;

fn cut(data: &[u8], size: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let mut end = (start + size).min(data.len());
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out
}

fn synthetic() -> Vec<u8> {
    let mut out = String::from("{\"columns\":[]}\n");
    for g in 1..=1_000_000u64 {
        // md5 is not at hand: a hex hash of the same length and entropy.
        let hash = format!(
            "{:016x}{:016x}",
            g.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            g.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        );
        out.push_str(&format!(
            "[{g},\"customer-{g:08}\",\"{hash}\",{:?},{},\"2024-01-02T03:{:02}:{:02}\"]\n",
            g as f64 * 0.25,
            g % 2 == 0,
            (g / 60) % 60,
            g % 60
        ));
    }
    out.into_bytes()
}

fn decode(encoding: ContentEncoding, body: &[u8]) -> usize {
    let mut decoder = encoding.decoder(body).unwrap();
    let mut step = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match decoder.read(&mut step).unwrap() {
            0 => return n,
            k => n += k,
        }
    }
}

fn once(parts: &[&[u8]], codec: &str, decompress: bool) {
    let encoding = match codec {
        "none" => None,
        name => Some(ContentEncoding::from_name(name).expect("none, deflate or lz4")),
    };
    let mut total = 0;
    for part in parts {
        let Some(encoding) = encoding else {
            total += part.len();
            continue;
        };
        let body = encoding.encode(part).unwrap();
        total += body.len();
        if decompress {
            assert_eq!(decode(encoding, &body), part.len());
        }
    }
    let plain: usize = parts.iter().map(|p| p.len()).sum();
    println!("{codec}: {} chunks, {plain} plain bytes, {total} compressed", parts.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let data = match args.first() {
        Some(path) => std::fs::read(path).expect("an NDJSON file"),
        None => synthetic(),
    };
    let parts = cut(&data, 1 << 20);
    if let (Some(codec), Some(n)) = (args.get(1), args.get(2)) {
        let n: usize = n.parse().expect("a chunk count");
        return once(&parts[..n.min(parts.len())], codec, args.get(3).is_some());
    }
    println!("{} bytes, {} chunks; best of 5", data.len(), parts.len());
    println!("| codec | compress MB/s | decompress MB/s | ratio | compressed MB |");
    println!("|---|---:|---:|---:|---:|");
    let plain: usize = parts.iter().map(|p| p.len()).sum();
    let mb = plain as f64 / 1e6;
    for encoding in [ContentEncoding::Deflate, ContentEncoding::Lz4] {
        let (mut best_c, mut best_d, mut compressed) = (f64::MAX, f64::MAX, 0);
        for _ in 0..5 {
            let t = Instant::now();
            let bodies: Vec<Vec<u8>> = parts.iter().map(|p| encoding.encode(p).unwrap()).collect();
            best_c = best_c.min(t.elapsed().as_secs_f64());
            compressed = bodies.iter().map(Vec::len).sum();
            let t = Instant::now();
            for (body, part) in bodies.iter().zip(&parts) {
                assert_eq!(decode(encoding, body), part.len());
            }
            best_d = best_d.min(t.elapsed().as_secs_f64());
        }
        println!(
            "| {encoding} | {:.0} | {:.0} | {:.2} | {:.1} |",
            mb / best_c,
            mb / best_d,
            plain as f64 / compressed as f64,
            compressed as f64 / 1e6
        );
    }
}
