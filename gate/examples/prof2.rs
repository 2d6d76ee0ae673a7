fn main() {
    let qs = [
        "SELECT date_trunc('month', o.created_at) AS month, p.category, COUNT(*) AS n, SUM(oi.qty * oi.price) AS revenue FROM orders o JOIN order_items oi ON oi.order_id = o.id LEFT JOIN products p ON p.id = oi.product_id WHERE o.status IN ('paid', 'shipped') AND o.created_at >= DATE '2024-01-01' GROUP BY 1, 2 HAVING SUM(oi.qty) > 10 ORDER BY month, revenue DESC",
        "SELECT id, customer_id, total, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at DESC) AS rn, SUM(total) OVER (PARTITION BY customer_id) AS customer_total FROM orders WHERE created_at >= '2024-01-01'",
    ];
    for _ in 0..40000 {
        for q in qs {
            let _ = std::hint::black_box(gate::check(q, gate::Dialect::Postgres, &gate::Policy::default()));
        }
    }
}
