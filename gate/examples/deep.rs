fn main() {
    for n in [5_000usize, 10_000, 20_000, 40_000] {
        let texts = [
            format!("SELECT 1{}", " + 1".repeat(n * 2)),
            format!("SELECT 1{}", " UNION SELECT 1".repeat(n)),
            format!("SELECT 1 FROM t WHERE a IN ({})", vec!["1"; n * 4].join(", ")),
        ];
        for (i, sql) in texts.iter().enumerate() {
            let t = std::time::Instant::now();
            let r = gate::check(sql, gate::Dialect::Postgres, &gate::Policy::default());
            let e1 = t.elapsed();
            let t = std::time::Instant::now();
            let p = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql);
            let e2 = t.elapsed();
            std::mem::forget(p);
            println!("n={n} #{i} len={} gate {:?} parse-only {:?} {:?}", sql.len(), e1, e2, r.is_ok());
        }
    }
}
