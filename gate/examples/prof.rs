use sqlparser::ast::{Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use std::time::Instant;
struct Noop;
impl Visitor for Noop {
    type Break = ();
}
fn main() {
    let q = "SELECT date_trunc('month', o.created_at) AS month, p.category, COUNT(*) AS n, SUM(oi.qty * oi.price) AS revenue FROM orders o JOIN order_items oi ON oi.order_id = o.id LEFT JOIN products p ON p.id = oi.product_id WHERE o.status IN ('paid', 'shipped') AND o.created_at >= DATE '2024-01-01' GROUP BY 1, 2 HAVING SUM(oi.qty) > 10 ORDER BY month, revenue DESC";
    let n = 20000;
    let t = Instant::now();
    for _ in 0..n {
        let s = Parser::parse_sql(&PostgreSqlDialect {}, q).unwrap();
        std::hint::black_box(&s);
    }
    println!("parse+drop {:.1}", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    let s = Parser::parse_sql(&PostgreSqlDialect {}, q).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(&s).visit(&mut Noop);
    }
    println!("noop visit {:.2}", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(gate::keyword_prefilter_for(q, gate::Dialect::Postgres));
    }
    println!("prefilter {:.2}", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(gate::check(q, gate::Dialect::Postgres, &gate::Policy::default()));
    }
    println!("check {:.1}", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    let t = Instant::now();
    for _ in 0..n {
        let s = std::hint::black_box(s.clone());
        drop(s);
    }
    println!("clone+drop {:.2}", t.elapsed().as_nanos() as f64 / n as f64 / 1000.0);
    let _ = ControlFlow::<()>::Continue(());
}
