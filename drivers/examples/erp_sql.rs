//! Writes the sample ERP database for the real-server tests (`scripts/db-servers.sh`).
//!
//! ```text
//! cargo run -p drivers --example erp_sql -- postgres [scale] > erp_pg.sql
//! cargo run -p drivers --example erp_sql -- mysql [scale]    > erp_mysql.sql
//! cargo run -p drivers --example erp_sql -- sqlite PATH [scale]
//! ```

use std::io::Write;
use std::process::ExitCode;

use drivers::fixture::{SqlTarget, create_sample_erp, sample_erp_sql};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = |i: usize| args.get(i).map_or(Ok(1), |s| s.parse::<u32>());
    let result = match args.first().map(String::as_str) {
        Some("postgres") => scale(1).map_err(|e| e.to_string()).and_then(|s| print(SqlTarget::Postgres, s)),
        Some("mysql") => scale(1).map_err(|e| e.to_string()).and_then(|s| print(SqlTarget::Mysql, s)),
        Some("sqlite") => match (args.get(1), scale(2)) {
            (Some(path), Ok(s)) => create_sample_erp(path.as_ref(), s).map(drop).map_err(|e| e.to_string()),
            _ => Err("usage: erp_sql sqlite PATH [scale]".into()),
        },
        _ => Err("usage: erp_sql postgres|mysql [scale] | sqlite PATH [scale]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erp_sql: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(target: SqlTarget, scale: u32) -> Result<(), String> {
    let sql = sample_erp_sql(target, scale).map_err(|e| e.to_string())?;
    std::io::stdout().lock().write_all(sql.as_bytes()).map_err(|e| e.to_string())
}
