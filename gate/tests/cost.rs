//! Bounded cost (issue 8): the limits refuse with clear reasons before parsing, and within
//! them the gate is linear in the text. Times are for a debug build on a shared machine, so the
//! bounds are generous; the release numbers are in `cargo bench -p gate` and
//! docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use crate::chained_ctes::chained_ctes;
use gate::{
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKENS, Dialect, Limits, MAX_SQL_BYTES, Policy, RejectCode, Rejection,
    check_with,
};

fn erp() -> Policy {
    crate::corpus::policies().remove("erp").unwrap()
}

fn timed(sql: &str, limits: &Limits, policy: &Policy) -> (Result<(), Rejection>, Duration) {
    let t = Instant::now();
    let got = check_with(sql, 0, Dialect::Postgres, policy, limits).map(|_| ());
    (got, t.elapsed())
}

/// The 20,000-CTE text of issue 8 (about 900 KB).
fn issue_8_ctes() -> String {
    let ctes: Vec<String> =
        (0..20_000).map(|i| format!("cte{i:05} AS (SELECT x, y, z FROM cte{:05})", i.max(1) - 1)).collect();
    format!("WITH RECURSIVE {} SELECT * FROM cte19999", ctes.join(",\n"))
}

#[test]
fn limits_refuse_with_clear_reasons() {
    let p = Policy::default();
    let d = Limits::default();
    let many = format!("SELECT 1{}", ", 1".repeat(DEFAULT_MAX_TOKENS));
    let err = check_with(&many, 0, Dialect::Mysql, &p, &d).unwrap_err();
    assert_eq!(err.code, RejectCode::WriteOperationRejected);
    assert_eq!(err.reason, format!("query has more than {DEFAULT_MAX_TOKENS} tokens"));
    let deep = format!("SELECT {}1{}", "(".repeat(DEFAULT_MAX_DEPTH + 1), ")".repeat(DEFAULT_MAX_DEPTH + 1));
    let err = check_with(&deep, 0, Dialect::Postgres, &p, &d).unwrap_err();
    assert_eq!(err.reason, format!("query nests brackets deeper than {DEFAULT_MAX_DEPTH} levels"));
    let array = format!("SELECT a{}", "[1]".repeat(100)); // not nested: fine
    assert!(check_with(&array, 0, Dialect::Postgres, &p, &d).is_ok());

    let small = Limits { max_tokens: 4, max_depth: 1, ..Limits::default() };
    assert!(check_with("SELECT a, b", 0, Dialect::Sqlite, &p, &small).is_ok());
    let err = check_with("SELECT a, b, c", 0, Dialect::Sqlite, &p, &small).unwrap_err();
    assert_eq!(err.reason, "query has more than 4 tokens");
    let err = check_with("SELECT ((1))", 0, Dialect::Sqlite, &p, &small).unwrap_err();
    assert_eq!(err.reason, "query nests brackets deeper than 1 levels");
}

#[test]
fn the_issue_8_cte_text_is_refused_before_it_is_parsed() {
    let sql = issue_8_ctes();
    assert!(sql.len() > 850_000 && sql.len() < MAX_SQL_BYTES, "{}", sql.len());
    let (got, default_time) = timed(&sql, &Limits::default(), &erp());
    assert!(got.unwrap_err().reason.contains("larger than"));
    // With the size limit raised to the ceiling, the token limit refuses it.
    let raised = Limits { max_sql_bytes: MAX_SQL_BYTES, ..Limits::default() };
    let (got, raised_time) = timed(&sql, &raised, &erp());
    assert!(got.unwrap_err().reason.contains("tokens"));
    // Today's release build: about 1 ms (the lexer up to the limit); it used to take 8–12 s.
    assert!(default_time + raised_time < Duration::from_millis(500), "{default_time:?} {raised_time:?}");
}

/// Shapes that made a quadratic gate slow, at the size the default limits allow.
fn shapes() -> Vec<(&'static str, String)> {
    let ctes = chained_ctes(5_000);
    let joins: String = (0..2_500).map(|i| format!(", customers c{i}")).collect();
    let cols: String = (0..2_500).map(|i| format!("c{i}.id, ")).collect();
    let schemas: String = (0..2_500).map(|i| format!(", s{i}.customers")).collect();
    vec![
        ("5,000 chained CTEs", format!("WITH {} SELECT x FROM c4999", ctes.join(", "))),
        ("2,500 joins and 2,500 qualified columns", format!("SELECT {cols}1 FROM orders o{joins}")),
        ("2,500 q.* over 2,500 tables", format!("SELECT {}1 FROM orders o{joins}", "o.*, ".repeat(2_500))),
        ("2,500 schemas and bare columns", format!("SELECT {}1 FROM orders{schemas}", "id, ".repeat(2_500))),
        ("IN list of 20,000", format!("SELECT id FROM orders WHERE id IN ({})", vec!["1"; 20_000].join(","))),
        ("20,000 x + 1", format!("SELECT x{} FROM t", " + 1".repeat(20_000))),
        ("50,000 comments", format!("SELECT 1 {}", "/**/ ".repeat(50_000))),
    ]
}

#[test]
fn pathological_shapes_are_judged_in_time_linear_in_the_text() {
    let policy = erp();
    for (name, sql) in shapes() {
        assert!(sql.len() <= gate::DEFAULT_MAX_SQL_BYTES, "{name}: {}", sql.len());
        let (got, took) = timed(&sql, &Limits::default(), &policy);
        if let Err(e) = &got {
            assert_ne!(e.reason, "query has more than 50000 tokens", "{name}: the shape must fit the limits");
        }
        // Release: at most a few ms per 100 KB. Debug is ~10-30x slower.
        assert!(took < Duration::from_secs(5), "{name}: {took:?} ({got:?})");
    }
}
