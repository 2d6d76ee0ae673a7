//! `WITH c0 AS (SELECT 1 AS x), c1 AS (SELECT x FROM c0), ...`: `n` CTEs, each reading the one
//! before — the shape that made the gate's CTE lookup quadratic. Shared by `tests/cost.rs` and
//! `benches/gate.rs`.

/// The `n` CTE definitions, without `WITH`.
pub fn chained_ctes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                "c0 AS (SELECT 1 AS x)".to_owned()
            } else {
                format!("c{i} AS (SELECT x FROM c{})", i - 1)
            }
        })
        .collect()
}
