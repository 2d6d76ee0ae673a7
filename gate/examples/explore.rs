use std::io::BufRead;
fn main() {
    // lines: dialect \t sql (JSONL corpus lines also accepted)
    let policy: gate::Policy =
        std::env::var("POLICY").ok().map(|p| serde_json::from_str(&p).unwrap()).unwrap_or_default();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        if line.starts_with("//") || line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ds = v["d"].as_str().unwrap();
        let sql = v["sql"].as_str().unwrap();
        let dialects: Vec<gate::Dialect> = if ds == "*" {
            gate::Dialect::ALL.to_vec()
        } else {
            ds.split(',').map(|d| d.parse().unwrap()).collect()
        };
        for d in dialects {
            let r = gate::check(sql, d, &policy);
            println!(
                "{d:8} {:?} => {}",
                sql,
                match r {
                    Ok(c) => format!("allow {:?}", c.tables),
                    Err(e) => e.to_string(),
                }
            );
        }
    }
}
