use odbc_api::{ConnectionOptions, Cursor, Environment};
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with("VmRSS")).unwrap().to_owned()
}
fn main() {
    let cs = std::env::args().nth(1).unwrap();
    let env = Environment::new().unwrap();
    let conn = env.connect_with_connection_string(&cs, ConnectionOptions::default()).unwrap();
    let sql = "SELECT seq, MD5(seq) FROM seq_1_to_2000000";
    if std::env::args().nth(2).is_some() {
        let mut cursor = conn.execute(sql, (), None).unwrap().unwrap();
        println!("direct: after execute {}", rss());
        let _ = cursor.next_row().unwrap();
    } else {
        let mut p = conn.prepare(sql).unwrap();
        let mut cursor = p.execute(()).unwrap().unwrap();
        println!("prepared: after execute {}", rss());
        let _ = cursor.next_row().unwrap();
    }
}
