//! Differential test of the gate's lexer against the real engines.
//!
//! Generated texts mix the things lexers disagree about — comments of every kind, quotes,
//! dollar quotes, escapes, Unicode spaces and line separators, control characters, placeholders
//! — around a *hidden payload*: a call with an observable side effect (PostgreSQL
//! `pg_advisory_xact_lock`, MariaDB `GET_LOCK`). The gate refuses the payload wherever it reads
//! it as code. For every text the gate **allows**, the real server (as the read-only user) then
//! runs it as one prepared statement, and the test checks on the same session that the payload
//! did not run: if it did, the gate took code for a string or comment. The prepared-statement
//! protocol also proves the server saw exactly one statement.
//!
//! Needs `scripts/db-servers.sh start`; with `MC_REQUIRE_DB_SERVERS=1` (CI) a missing server
//! fails the test instead of skipping it.

use gate::{Limits, Placeholders, Policy, Target};

use crate::support::server_url;

/// Texts generated per engine.
const TEXTS: usize = 4000;

/// A small deterministic generator (xorshift64*), so a failure names a reproducible text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments every engine's text is built from; `@` stands for the hidden payload.
const COMMON: &[&str] = &[
    " ",
    " ",
    "\n",
    "\t",
    "\r",
    "\r\n",
    "\u{0b}",
    "\u{0c}",
    "\u{a0}",
    "\u{85}",
    "\u{3000}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "\u{200b}",
    "'x'",
    "'it''s'",
    "'",
    "''",
    "\"",
    "\"id\"",
    "\"a\"\"b\"",
    "--",
    "-- ",
    "--\n",
    "-- c\n",
    "--\u{a0}",
    "--\t",
    "---",
    "/*",
    "*/",
    "/* c */",
    "/* /* n */ */",
    "/*+ h */",
    "/*!",
    "\\",
    "\\'",
    "?",
    "$1",
    ",",
    "(",
    ")",
    "||",
    "::text",
    " AS b",
    " @",
    ", @",
    "'@'",
    "/* @ */",
    "-- @\n",
    "E",
    "e'",
    "N'",
    "X'",
    "0x",
    "1",
    "$",
    ";",
    "`",
    "#",
    "[",
    "]",
];

const POSTGRES: &[&str] = &[
    "$$",
    "$$ d $$",
    "$t$",
    "$t$ t $t$",
    "E'a\\'b'",
    "E'\\\\'",
    "E'\\'",
    "U&'d\\0061t'",
    "U&\"x\"",
    "$1::text",
    "$$@$$",
    "$a$@$a$",
    "E'@\\''",
    "/* /* @ */",
];

const MYSQL: &[&str] = &[
    "#",
    "# @\n",
    "\"s\"",
    "\"@\"",
    "'a\\'",
    "'\\\\'",
    "`b`",
    "`@`",
    "/*!@*/",
    "/*M!@*/",
    "--\u{85}",
    "--\u{3000}",
    "-- @",
    "--\u{0b}@",
    "_utf8mb4'x'",
    "b'1'",
    "x'41'",
    "N'\\''",
    "'@\\'",
];

/// Non-ASCII spaces are identifier characters to MariaDB: a derived table gives them values.
const MYSQL_SUFFIX: &str =
    " FROM (SELECT 1 AS `\u{a0}`, 2 AS `\u{85}`, 3 AS `\u{3000}`, 4 AS `\u{2028}`) AS t";

/// `SELECT 1 [AS a]`, up to eight fragments (a quarter of them the bare payload `, @`), then
/// sometimes a `FROM` that gives the engine's odd identifiers a value (`suffix`).
fn generate(rng: &mut Rng, extra: &[&str], payload: &str, suffix: &str) -> String {
    let mut text = String::from(if rng.below(2) == 0 { "SELECT 1" } else { "SELECT 1 AS a" });
    for _ in 0..1 + rng.below(8) {
        let fragment = if rng.below(4) == 0 {
            ", @"
        } else {
            let pick = rng.below(COMMON.len() + extra.len());
            if pick < COMMON.len() { COMMON[pick] } else { extra[pick - COMMON.len()] }
        };
        text.push_str(&fragment.replace('@', payload));
    }
    if rng.below(2) == 0 {
        text.push_str(suffix);
    }
    text
}

/// The generated texts the gate allows, each with its parameter count.
fn allowed_texts(
    seed: u64,
    extra: &[&str],
    payload: &str,
    suffix: &str,
    target: Target,
) -> Vec<(String, usize)> {
    let mut rng = Rng(seed);
    let mut allowed = Vec::new();
    for _ in 0..TEXTS {
        let text = generate(&mut rng, extra, payload, suffix);
        let params = usize::from(text.contains('?') || text.contains("$1"));
        if gate::check_with(&text, params, target, &Policy::default(), &Limits::default()).is_ok() {
            allowed.push((text, params));
        }
    }
    allowed
}

#[test]
fn postgres_runs_no_code_the_gate_took_for_text() {
    let Some(url) = server_url("MC_TEST_PG_URL") else { return };
    let target = Target {
        dialect: gate::Dialect::Postgres,
        placeholders: Placeholders::Dollar,
        language: gate::Language::Sql,
    };
    let allowed = allowed_texts(
        0x5eed_0001,
        POSTGRES,
        "pg_advisory_xact_lock(7770001)",
        " FROM (SELECT 1) AS t",
        target,
    );
    assert!(allowed.len() >= 200, "only {} texts allowed: the test would prove little", allowed.len());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut ran = 0;
    for (text, params) in &allowed {
        let checked =
            gate::check_with(text, *params, target, &Policy::default(), &Limits::default()).unwrap();
        let mut tx = client.build_transaction().read_only(true).start().unwrap();
        let value = "x";
        let args: Vec<&(dyn postgres::types::ToSql + Sync)> =
            if *params == 1 { vec![&value] } else { Vec::new() };
        // The extended protocol refuses more than one statement in a text.
        if tx.query(checked.sql(), &args).is_ok() {
            ran += 1;
        }
        let held: i64 = match tx.query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        ) {
            Ok(row) => row.get(0),
            // The text failed and aborted the transaction: check on a fresh one (the payload's
            // transaction-scoped lock would have been released with the failed one, so a
            // failed text proves nothing either way; it ran no code the gate did not see).
            Err(_) => 0,
        };
        let _ = tx.rollback();
        assert_eq!(held, 0, "the gate allowed {text:?} but PostgreSQL ran the hidden payload");
    }
    eprintln!("postgres: {} of {TEXTS} texts allowed, {ran} ran", allowed.len());
    assert!(ran >= 100, "only {ran} allowed texts ran on the server");
}

#[test]
fn mariadb_runs_no_code_the_gate_took_for_text() {
    use mysql::prelude::Queryable as _;
    let Some(url) = server_url("MC_TEST_MYSQL_URL") else { return };
    // 0x6d635f64696666 is 'mc_diff': no quote of its own to disturb the texts.
    let target = Target::from(gate::Dialect::Mysql);
    let allowed = allowed_texts(0x5eed_0002, MYSQL, "GET_LOCK(0x6d635f64696666, 0)", MYSQL_SUFFIX, target);
    assert!(allowed.len() >= 200, "only {} texts allowed: the test would prove little", allowed.len());
    let mut conn = mysql::Pool::new(url.as_str()).unwrap().get_conn().unwrap();
    let mut ran = 0;
    for (text, params) in &allowed {
        let checked =
            gate::check_with(text, *params, target, &Policy::default(), &Limits::default()).unwrap();
        let args =
            if *params == 1 { mysql::Params::Positional(vec!["x".into()]) } else { mysql::Params::Empty };
        // A prepared statement is exactly one statement.
        if conn.exec_drop(checked.sql(), args).is_ok() {
            ran += 1;
        }
        let held: Option<Option<u64>> =
            conn.query_first("SELECT IS_USED_LOCK('mc_diff') = CONNECTION_ID()").unwrap();
        conn.query_drop("SELECT RELEASE_ALL_LOCKS()").unwrap();
        assert_ne!(held.flatten(), Some(1), "the gate allowed {text:?} but MariaDB ran the hidden payload");
    }
    eprintln!("mariadb: {} of {TEXTS} texts allowed, {ran} ran", allowed.len());
    assert!(ran >= 100, "only {ran} allowed texts ran on the server");
}
