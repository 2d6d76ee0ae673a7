//! `mini-connector sql check`, run as a real process: text, JSON and batch output shapes and
//! exit codes.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one run of the binary may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `mini-connector sql check <args>` with `stdin` (closed when `None`), killing it and
/// failing the test if it outlives the deadline.
fn sql_check(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .arg("sql")
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mini-connector");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.unwrap_or_default().to_owned();
    let writer = std::thread::spawn(move || {
        // The child may exit without reading everything (a usage error): ignore broken pipes.
        let _ = input.write_all(text.as_bytes());
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("mini-connector sql check {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    writer.join().unwrap();
    Run { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

#[test]
fn allowed_query_prints_allow_and_exits_0() {
    let run = sql_check(&["--dialect", "postgres", "SELECT id, total FROM orders WHERE total > $1"], None);
    assert_eq!(run.stdout, "allow\n", "stderr: {}", run.stderr);
    assert_eq!(run.status.code(), Some(0));
}

#[test]
fn rejected_query_prints_code_and_reason_and_exits_1() {
    let run = sql_check(&["--dialect", "mysql", "DELETE FROM orders"], None);
    assert!(run.stdout.starts_with("reject WRITE_KEYWORD_DETECTED: "), "{}", run.stdout);
    assert!(run.stdout.contains("DELETE"), "the reason names what was found: {}", run.stdout);
    assert_eq!(run.status.code(), Some(1));

    let run = sql_check(&["--dialect", "postgres", "SELECT pg_sleep(60)"], None);
    assert!(run.stdout.starts_with("reject WRITE_OPERATION_REJECTED: "), "{}", run.stdout);
    assert!(run.stdout.contains("pg_sleep"), "{}", run.stdout);
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn query_is_read_from_stdin_without_an_argument() {
    let run = sql_check(&["--dialect", "mariadb"], Some("SELECT SLEEP(5)\n"));
    assert!(run.stdout.starts_with("reject WRITE_OPERATION_REJECTED: function SLEEP"), "{}", run.stdout);
    assert_eq!(run.status.code(), Some(1));

    let run = sql_check(&[], Some("-- the default dialect is generic\nSELECT 1;\n"));
    assert_eq!(run.stdout, "allow\n", "stderr: {}", run.stderr);
    assert_eq!(run.status.code(), Some(0));
}

#[test]
fn json_prints_one_object() {
    let run = sql_check(&["--json", "--dialect", "sqlite", "SELECT name FROM customers"], None);
    assert_eq!(run.status.code(), Some(0));
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "data": {"verdict": "allow", "code": null, "reason": null}})
    );
    assert_eq!(run.stdout.lines().count(), 1);

    let run = sql_check(&["--json", "--dialect", "mssql", "SELECT * FROM t WITH (UPDLOCK)"], None);
    assert_eq!(run.status.code(), Some(1));
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["ok"], true);
    let v = &v["data"];
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["code"], "WRITE_OPERATION_REJECTED");
    assert!(v["reason"].as_str().unwrap().contains("UPDLOCK"), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
}

#[test]
fn usage_errors_exit_2() {
    let run = sql_check(&["--dialect", "db2", "SELECT 1"], None);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("db2"), "{}", run.stderr);

    let run = sql_check(&["--batch", "SELECT 1"], None);
    assert_eq!(run.status.code(), Some(2), "--batch takes no query argument: {}", run.stderr);
}

#[test]
fn batch_of_1000_lines_answers_each_in_order() {
    let kinds = [
        (r#""dialect":"postgres","sql":"SELECT id FROM orders WHERE id = 1""#, "allow", None),
        (
            r#""dialect":"mysql","sql":"UPDATE orders SET total = 0""#,
            "reject",
            Some("WRITE_KEYWORD_DETECTED"),
        ),
        (
            r#""dialect":"postgres","sql":"SELECT pg_advisory_lock(1)""#,
            "reject",
            Some("WRITE_OPERATION_REJECTED"),
        ),
        (r#""sql":"WITH x AS (SELECT 1 AS a) SELECT a FROM x""#, "allow", None),
        (
            r#""dialect":"oracle","sql":"SELECT s.NEXTVAL FROM dual""#,
            "reject",
            Some("WRITE_OPERATION_REJECTED"),
        ),
        (r#""dialect":"nosuchdb","sql":"SELECT 1""#, "error", None),
        (r#""dialect":"mssql""#, "error", None),
        (r#""dialect":"hana","sql":"SELECT \"delete\" FROM \"T\" /* DROP */""#, "allow", None),
    ];
    let mut input = String::new();
    for i in 0..1000 {
        let (body, _, _) = kinds[i % kinds.len()];
        if i == 500 {
            input.push_str("this line is not JSON\n");
            continue;
        }
        input.push_str(&format!("{{\"id\":{i},{body}}}\n"));
    }
    let start = Instant::now();
    let run = sql_check(&["--batch"], Some(&input));
    let elapsed = start.elapsed();
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1000);
    for (i, v) in lines.iter().enumerate() {
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 4, "line {i}: {v}");
        if i == 500 {
            assert_eq!(v["verdict"], "error", "{v}");
            assert_eq!(v["id"], Value::Null);
            continue;
        }
        let (_, verdict, code) = kinds[i % kinds.len()];
        assert_eq!(v["id"], i, "answers keep the input order");
        assert_eq!(v["verdict"], verdict, "line {i}: {v}");
        match code {
            Some(code) => assert_eq!(v["code"], code, "line {i}: {v}"),
            None => assert_eq!(v["code"], Value::Null, "line {i}: {v}"),
        }
        assert_eq!(v["reason"].is_null(), verdict == "allow", "line {i}: {v}");
    }
    // One process for the whole batch: far below a process start per line.
    assert!(elapsed < Duration::from_secs(20), "batch took {elapsed:?}");
}

#[test]
fn mongodb_documents_and_tally_sql_are_checked_in_their_own_language() {
    let read = r#"{"collection": "orders", "filter": {"status": "open"}, "limit": 5}"#;
    let run = sql_check(&["--dialect", "mongodb", read], None);
    assert_eq!((run.status.code(), run.stdout.trim()), (Some(0), "allow"), "{}", run.stderr);
    let write = r#"{"collection": "orders", "pipeline": [{"$merge": {"into": "orders"}}]}"#;
    let run = sql_check(&["--dialect", "mongo", write], None);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.starts_with("reject WRITE_OPERATION_REJECTED: "), "{}", run.stdout);
    // The same text as SQL is not SQL at all.
    let run = sql_check(&["--dialect", "postgres", read], None);
    assert!(run.stdout.starts_with("reject SQL_SYNTAX_ERROR"), "{}", run.stdout);
    let run =
        sql_check(&["--dialect", "tally", "SELECT Name FROM Ledger WHERE Parent = 'Sundry Debtors'"], None);
    assert_eq!((run.status.code(), run.stdout.trim()), (Some(0), "allow"), "{}", run.stderr);
    let run = sql_check(&["--dialect", "tally", "SELECT Name FROM Ledger WHERE Name LIKE 'A%'"], None);
    assert!(run.stdout.starts_with("reject SQL_SYNTAX_ERROR: "), "{}", run.stdout);
    let batch = concat!(
        r#"{"id": 1, "dialect": "mongodb", "sql": "{\"collection\": \"c\", \"filter\": {\"$where\": \"1\"}}"}"#,
        "\n",
        r#"{"id": 2, "dialect": "tally", "sql": "DELETE FROM Ledger"}"#,
        "\n"
    );
    let run = sql_check(&["--batch"], Some(batch));
    let verdicts: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts[0]["code"], "WRITE_OPERATION_REJECTED", "{verdicts:?}");
    assert_eq!(verdicts[1]["verdict"], "reject", "{verdicts:?}");
}
