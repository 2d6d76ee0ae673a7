fn main() {
    let sql = format!("SELECT 1{}", " UNION SELECT 1".repeat(40000));
    let t = std::time::Instant::now();
    let _ = gate::check(&sql, gate::Dialect::Postgres, &gate::Policy::default());
    eprintln!("{:?}", t.elapsed());
}
