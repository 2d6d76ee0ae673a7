//! Check time per query: `cargo bench -p gate` (optionally `-- <iterations>`; `-- shapes` runs
//! only the pathological shapes, e.g. under `/usr/bin/time -v` for the peak memory).
//!
//! Times `gate::check` over a set of typical reporting queries per dialect (with an empty
//! policy and with a small privacy policy), the keyword pre-filter alone and sqlparser's parse
//! alone (the floor), and prints p50, p99 and mean in microseconds per query. Then times the
//! pathological shapes of `shapes()` (the 20,000-CTE text of issue 8 and others), each under
//! the default limits and with the limits raised to the hard ceiling. No harness: plain
//! `Instant` timing.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Instant;

use gate::{Dialect, Limits, MAX_SQL_BYTES, Policy, check, check_with, keyword_prefilter_for};
use sqlparser::parser::Parser;

#[path = "../tests/chained_ctes.rs"]
mod chained_ctes;
use chained_ctes::chained_ctes;

const PORTABLE: &[&str] = &[
    "SELECT c.id, c.name, COUNT(o.id) AS orders, SUM(o.total) AS revenue FROM customers c LEFT JOIN orders o ON o.customer_id = c.id WHERE o.status IN ('paid', 'shipped') GROUP BY c.id, c.name HAVING COUNT(o.id) > 3 ORDER BY revenue DESC",
    "WITH big AS (SELECT customer_id, SUM(total) AS spent FROM orders GROUP BY customer_id) SELECT c.name, b.spent FROM big b JOIN customers c ON c.id = b.customer_id WHERE b.spent > 1000 ORDER BY b.spent DESC",
    "SELECT id, customer_id, total, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at DESC) AS rn, SUM(total) OVER (PARTITION BY customer_id) AS customer_total FROM orders WHERE created_at >= '2024-01-01'",
    "SELECT p.category, CASE WHEN SUM(i.qty) > 100 THEN 'high' WHEN SUM(i.qty) > 10 THEN 'medium' ELSE 'low' END AS volume, COALESCE(AVG(i.price), 0) AS avg_price FROM order_items i JOIN products p ON p.id = i.product_id GROUP BY p.category",
    "SELECT o.id, o.total FROM orders o WHERE EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.amount >= o.total) AND o.customer_id IN (SELECT id FROM customers WHERE country = 'DE') ORDER BY o.id",
];

fn dialect_queries(d: Dialect) -> Vec<&'static str> {
    let mut q: Vec<&'static str> = PORTABLE.to_vec();
    q.extend_from_slice(match d {
        Dialect::Postgres => &[
            "SELECT date_trunc('month', o.created_at) AS month, p.category, COUNT(*) AS n, SUM(oi.qty * oi.price) AS revenue FROM orders o JOIN order_items oi ON oi.order_id = o.id LEFT JOIN products p ON p.id = oi.product_id WHERE o.status IN ('paid', 'shipped') AND o.created_at >= DATE '2024-01-01' GROUP BY 1, 2 HAVING SUM(oi.qty) > 10 ORDER BY month, revenue DESC",
            "SELECT data->>'sku' AS sku, data->'dims'->>'w' AS width FROM products WHERE data @> '{\"active\": true}' AND created_at > now() - INTERVAL '30 days' LIMIT 100",
        ][..],
        Dialect::Mysql => &[
            "SELECT o.id, c.name, DATE_FORMAT(o.created_at, '%Y-%m') AS ym, IFNULL(o.discount, 0) AS discount FROM orders o INNER JOIN customers c ON c.id = o.customer_id WHERE o.created_at >= CURDATE() - INTERVAL 30 DAY ORDER BY o.created_at DESC LIMIT 100",
            "SELECT `category`, GROUP_CONCAT(DISTINCT `name` ORDER BY `name` SEPARATOR ', ') AS names FROM `products` GROUP BY `category`",
        ],
        Dialect::Sqlite => &[
            "SELECT strftime('%Y-%m', created_at) AS month, COUNT(*) AS n, SUM(total) AS revenue FROM orders GROUP BY month HAVING COUNT(*) > 5 ORDER BY month",
            "SELECT json_extract(data, '$.sku') AS sku, IFNULL(qty, 0) FROM stock WHERE updated_at > date('now', '-7 days')",
        ],
        Dialect::Mssql => &[
            "SELECT TOP 10 o.OrderID, c.CompanyName, ISNULL(o.Freight, 0) AS freight, CONVERT(varchar(10), o.OrderDate, 120) AS day FROM dbo.Orders o WITH (NOLOCK) INNER JOIN dbo.Customers c ON c.CustomerID = o.CustomerID ORDER BY o.OrderDate DESC",
            "SELECT c.CustomerID, x.OrderID FROM dbo.Customers c CROSS APPLY (SELECT TOP 1 OrderID FROM dbo.Orders o WHERE o.CustomerID = c.CustomerID ORDER BY OrderDate DESC) x",
        ],
        Dialect::Oracle => &[
            "SELECT * FROM (SELECT ename, sal, deptno, ROW_NUMBER() OVER (PARTITION BY deptno ORDER BY sal DESC) rn FROM emp) WHERE rn <= 3",
            "SELECT NVL(comm, 0), DECODE(deptno, 10, 'ACCOUNTING', 'OTHER'), TO_CHAR(hiredate, 'YYYY-MM-DD') FROM emp e, dept d WHERE e.deptno = d.deptno(+)",
        ],
        Dialect::Hana => &[
            "SELECT k.\"KUNNR\", SUM(v.\"NETWR\") AS total FROM \"SAPABAP1\".\"VBAK\" v JOIN \"SAPABAP1\".\"KNA1\" k ON k.\"KUNNR\" = v.\"KUNNR\" WHERE v.\"MANDT\" = '100' GROUP BY k.\"KUNNR\" HAVING SUM(v.\"NETWR\") > 1000 ORDER BY total DESC LIMIT 20",
            "SELECT ADD_DAYS(CURRENT_DATE, -7) AS since, TO_VARCHAR(CURRENT_DATE, 'YYYY-MM') AS ym FROM DUMMY",
        ],
        Dialect::Generic => &[
            "SELECT a, b, SUM(c) FROM t JOIN u ON u.id = t.u_id WHERE t.x > 1 GROUP BY a, b ORDER BY a LIMIT 50",
        ],
    });
    q
}

fn privacy_policy() -> Policy {
    Policy {
        private_tables: BTreeSet::from(["payroll".to_owned(), "hr.salaries".to_owned()]),
        private_columns: BTreeMap::from([("customers".to_owned(), BTreeSet::from(["ssn".to_owned()]))]),
        ..Policy::default()
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    /// Mean CPU time of this thread per query (µs), from `/proc/thread-self/schedstat`: close to
    /// the uncontended cost even when the machine is oversubscribed (wall-clock times are not).
    cpu: f64,
}

/// Nanoseconds this thread has run on a CPU (Linux), if known.
fn thread_cpu_ns() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Per-query times (µs) of `f` over `queries`, `iterations` rounds after a warm-up.
fn measure(queries: &[&str], iterations: usize, mut f: impl FnMut(&str)) -> Stats {
    for q in queries {
        f(q);
    }
    let mut samples = Vec::with_capacity(queries.len() * iterations);
    let cpu_start = thread_cpu_ns();
    for _ in 0..iterations {
        for q in queries {
            let t = Instant::now();
            f(q);
            samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => (b - a) / 1000.0 / samples.len() as f64,
        _ => f64::NAN,
    };
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    Stats { p50: samples[samples.len() / 2], p99: samples[samples.len() * 99 / 100], mean, cpu }
}

/// Texts built to make a gate do work out of proportion to their size: name, text.
fn shapes() -> Vec<(&'static str, String)> {
    let ctes = chained_ctes(20_000);
    let joins: String = (0..4_000).map(|i| format!(", customers c{i}")).collect();
    let cols: String = (0..4_000).map(|i| format!("c{i}.id, ")).collect();
    vec![
        ("20,000 CTEs", format!("WITH {} SELECT x FROM c19999", ctes.join(", "))),
        ("4,000 CTEs", format!("WITH {} SELECT x FROM c3999", ctes[..4_000].join(", "))),
        (
            "IN list of 100,000",
            format!("SELECT id FROM orders WHERE id IN ({})", vec!["1"; 100_000].join(",")),
        ),
        ("4,000 joins x 4,000 columns", format!("SELECT {cols}1 FROM orders o{joins}")),
        ("4,000 q.* x 4,000 tables", format!("SELECT {}1 FROM orders o{joins}", "o.*, ".repeat(4_000))),
        ("50,000 x + 1", format!("SELECT x{} FROM t", " + 1".repeat(50_000))),
        ("100,000 comments", format!("SELECT 1 {}", "/**/ ".repeat(100_000))),
    ]
}

fn run_shapes(policy: &Policy, default_only: bool) {
    println!("pathological shapes, ms per check (release build; default limits, then raised to the ceiling)");
    let raised = Limits { max_sql_bytes: MAX_SQL_BYTES, max_tokens: usize::MAX, max_depth: 1_000 };
    let limits: &[(&str, Limits)] = if default_only {
        &[("default", Limits::default())]
    } else {
        &[("default", Limits::default()), ("raised", raised)]
    };
    for (name, sql) in shapes() {
        for &(label, limits) in limits {
            let t = Instant::now();
            let got = check_with(black_box(&sql), 0, Dialect::Postgres, policy, &limits);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let verdict = match &got {
                Ok(_) => "allowed".to_owned(),
                Err(e) => e.to_string(),
            };
            println!("  {name:<28} {:>8} KB  {label:<7} {ms:>9.2} ms  {verdict}", sql.len() / 1000);
        }
        if default_only {
            continue;
        }
        let t = Instant::now();
        let parsed = stacker::grow(64 << 20, || {
            Dialect::Postgres.with_sqlparser_dialect(|d| Parser::parse_sql(d, black_box(&sql))).is_ok()
        });
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("  {name:<28} {:>8} KB  {:<7} {ms:>9.2} ms  parsed: {parsed}", sql.len() / 1000, "parse");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a number sets the iterations.
    let iterations = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(2_000);
    // `shapes`: only the pathological shapes; `shapes-default`: only under the default limits
    // (for the peak memory of what an agent with the default configuration may do).
    if let Some(mode) = std::env::args().find(|a| a.starts_with("shapes")) {
        run_shapes(&privacy_policy(), mode == "shapes-default");
        return;
    }
    let empty = Policy::default();
    let private = privacy_policy();
    println!("gate::check, µs per query ({iterations} rounds over each dialect's queries)");
    println!(
        "{:<9} {:>3}  {:>7} {:>7} {:>7} {:>8}   {:>11} {:>11}   {:>9}   {:>10} {:>9}",
        "dialect",
        "n",
        "p50",
        "p99",
        "mean",
        "cpu mean",
        "policy p50",
        "policy mean",
        "prefilter",
        "parse only",
        "parse cpu"
    );
    let mut all = Vec::new();
    for d in Dialect::ALL {
        let queries = dialect_queries(d);
        for q in &queries {
            if let Err(e) = check(q, d, &empty) {
                panic!("benchmark query rejected in {d}: {e}\n{q}");
            }
        }
        let s = measure(&queries, iterations, |q| {
            let _ = black_box(check(black_box(q), d, &empty));
        });
        let p = measure(&queries, iterations / 4 + 1, |q| {
            let _ = black_box(check(black_box(q), d, &private));
        });
        let k = measure(&queries, iterations / 4 + 1, |q| {
            let _ = black_box(keyword_prefilter_for(black_box(q), d));
        });
        let parse = measure(&queries, iterations / 4 + 1, |q| {
            let _ = black_box(d.with_sqlparser_dialect(|pd| Parser::parse_sql(pd, black_box(q))));
        });
        println!(
            "{:<9} {:>3}  {:>7.1} {:>7.1} {:>7.1} {:>8.1}   {:>11.1} {:>11.1}   {:>9.2}   {:>10.1} {:>9.1}",
            d.as_str(),
            queries.len(),
            s.p50,
            s.p99,
            s.mean,
            s.cpu,
            p.p50,
            p.mean,
            k.mean,
            parse.mean,
            parse.cpu
        );
        all.push(s);
    }
    let worst_p50 = all.iter().map(|s| s.p50).fold(0.0, f64::max);
    let worst_mean = all.iter().map(|s| s.mean).fold(0.0, f64::max);
    let worst_cpu = all.iter().map(|s| s.cpu).fold(0.0, f64::max);
    println!(
        "worst dialect: p50 {worst_p50:.1} µs, mean {worst_mean:.1} µs, CPU mean {worst_cpu:.1} µs (target ≤ 50 µs)"
    );
    println!();
    run_shapes(&private, false);
}
