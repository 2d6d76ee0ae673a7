use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
fn main() {
    std::thread::Builder::new()
        .stack_size(std::env::var("STACK").map(|s| s.parse().unwrap()).unwrap_or(2 << 20))
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}
fn run() {
    let which: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let sql = match which {
        1 => format!("SELECT 1{}", " + 1".repeat(n)),
        _ => format!("SELECT 1{}", " UNION SELECT 1".repeat(n)),
    };
    let s = Parser::parse_sql(&GenericDialect {}, &sql).unwrap();
    eprintln!("parsed");
    if std::env::var("FORGET").is_ok() {
        std::mem::forget(s);
    } else {
        drop(s);
    }
    eprintln!("dropped");
}
