//! The admin API under load: many blocking callers at once, callers beyond its budget, waiting
//! for a command's answer without polling, and large answers streamed (status and CLI).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use gateway::AdminClient;
use protocol::{Frame as _, Inbound};
use serde_json::{Value, json};
use tungstenite::Message;

use crate::chunks::{buffered, stream};
use crate::common::{Chunk, FakeAgent, TestGateway, WAIT, col, start_with, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_connector-gateway");

fn with_admin() -> Arc<TestGateway> {
    Arc::new(start_with(|c| {
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        // Idle connections below hold their places for the whole test.
        c.header_timeout = Duration::from_secs(50);
    }))
}

fn client(gw: &TestGateway) -> AdminClient {
    AdminClient::from_data_dir(&gw.dir).unwrap().expect("admin.json written")
}

/// Reads commands until none came for `quiet`; acks are skipped.
fn commands_until_quiet(agent: &mut FakeAgent, quiet: Duration) -> Vec<protocol::Command> {
    agent.ws.get_ref().sock.set_read_timeout(Some(quiet)).unwrap();
    let mut commands = Vec::new();
    loop {
        match agent.ws.read() {
            Ok(Message::Text(t)) => match Inbound::decode(t.as_str()).unwrap() {
                Inbound::Command(c) => commands.push(c),
                Inbound::Ack(_) => {}
                other => panic!("unexpected frame {other:?}"),
            },
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                break;
            }
            Err(e) => panic!("agent connection failed: {e}"),
        }
    }
    agent.ws.get_ref().sock.set_read_timeout(Some(WAIT)).unwrap();
    commands
}

/// 200 callers each block in `POST /admin/query` at the same time (the agent holds its answers
/// until no more commands come): all are answered. The admin API used to close every connection beyond
/// 64 (the callers saw connection resets).
#[test]
fn two_hundred_blocking_admin_callers_are_all_answered() {
    const CALLERS: usize = 200;
    let _w = watchdog("admin_200_blocking");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", None, Some(CALLERS as u32));
    let client = client(&gw);
    let start = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (client, start) = (client.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let body =
                    json!({"connector": "Warehouse", "sql": "SELECT ?", "params": [i], "waitMs": 30_000});
                client.call("POST", "/admin/query", Some(&body), Duration::from_secs(40))
            })
        })
        .collect();
    // The gateway writes at most `max_in_flight` (64) unanswered commands to the session: the
    // agent answers each batch once it stops growing, and the callers keep waiting meanwhile.
    let mut commands = 0;
    loop {
        let batch = commands_until_quiet(&mut agent, Duration::from_secs(1));
        if batch.is_empty() {
            break;
        }
        for cmd in &batch {
            agent.answer_inline(cmd, vec![col("v", "integer")], vec![cmd.payload.params.clone()]);
        }
        commands += batch.len();
    }
    let mut errors = Vec::new();
    for (i, caller) in callers.into_iter().enumerate() {
        match caller.join().unwrap() {
            Ok((200, outcome)) if outcome["rows"] == json!([[i]]) => {}
            other => errors.push(format!("{other:?}")),
        }
    }
    assert_eq!(commands, CALLERS, "commands that reached the agent");
    assert!(errors.is_empty(), "{} callers failed, first: {}", errors.len(), errors[0]);
}

/// A request that finds every place taken waits for one (`ADMIN_QUEUE_WAIT`, 2 s), then is
/// answered `503 ADMIN_BUSY`, retryable, with `Retry-After` — read first, never reset; a place
/// freed while it waits serves it. Connections that send nothing hold no place.
#[test]
fn admin_requests_beyond_the_budget_wait_then_get_a_retryable_503() {
    const PLACES: usize = 256;
    let _w = watchdog("admin_busy");
    let gw = with_admin();
    let _offline = gw.key("Offline");
    let addr = gw.admin_addr().unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(gw.dir.join("admin.json")).unwrap()).unwrap();
    let token = doc["token"].as_str().unwrap().to_owned();
    let request = move |path: &str| {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).expect("an answer, not a reset");
        answer
    };
    // Connections that send nothing do not count against the places.
    let _idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(request("/admin/health").starts_with("HTTP/1.1 200"));

    // Every place held by a blocked caller: one waits for a connected (fake) agent, which
    // answers when the test says so; the others for a connector that is offline.
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let client = client(&gw);
    let call = |connector: &'static str| {
        let client = client.clone();
        thread::spawn(move || {
            let body = json!({"connector": connector, "sql": "SELECT 1", "waitMs": 40_000});
            client
                .call("POST", "/admin/query", Some(&body), Duration::from_secs(50))
                .map(|(status, _)| status)
        })
    };
    let first = call("Warehouse");
    let cmd = agent.expect_command();
    let others: Vec<_> = (1..PLACES).map(|_| call("Offline")).collect();
    // Their threads take their places in the background: ask until the busy answer shows.
    let (answer, waited) = loop {
        let started = Instant::now();
        let answer = request("/admin/health");
        if answer.starts_with("HTTP/1.1 503") {
            break (answer, started.elapsed());
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    assert!(waited >= Duration::from_millis(1900), "answered after {waited:?}, before the 2 s wait");
    assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "ADMIN_BUSY");
    assert_eq!(body["error"]["retryable"], true);

    // A request waiting for a place gets the one its answer frees.
    let waiting = thread::spawn(move || request("/admin/health"));
    // Nothing to observe of a request that waits: give it time to be waiting (well under 2 s).
    thread::sleep(Duration::from_millis(300));
    agent.answer_inline(&cmd, vec![col("v", "integer")], vec![vec![json!(1)]]);
    assert_eq!(first.join().unwrap().unwrap(), 200);
    let answer = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The gateway's shutdown answers the callers still blocked.
    drop(agent);
    drop(gw);
    for other in others {
        let _ = other.join().unwrap();
    }
}

/// `GET /admin/commands/<id>?waitMs=N` answers as soon as the command is answered (no
/// polling), or after N ms with the state then; a bad `waitMs` is `400`.
#[test]
fn command_status_waits_for_the_answer() {
    let _w = watchdog("admin_wait_status");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let client = client(&gw);
    let body = json!({"connector": "Warehouse", "sql": "SELECT 7"});
    let (status, submitted) = client.call("POST", "/admin/submit", Some(&body), WAIT).unwrap();
    assert_eq!(status, 202, "{submitted}");
    let id = submitted["commandId"].as_str().unwrap().to_owned();
    let cmd = agent.expect_command();

    let started = Instant::now();
    let (status, answer) =
        client.call("GET", &format!("/admin/commands/{id}?waitMs=300"), None, WAIT).unwrap();
    assert_eq!((status, answer["state"].as_str()), (200, Some("sent")), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());

    let (status, answer) =
        client.call("GET", &format!("/admin/commands/{id}?waitMs=soon"), None, WAIT).unwrap();
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("MALFORMED_MESSAGE")), "{answer}");

    let waiter = {
        let (client, id) = (client.clone(), id.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let answer = client.call("GET", &format!("/admin/commands/{id}?waitMs=30000"), None, WAIT);
            (answer.unwrap(), started.elapsed())
        })
    };
    // The waiter is in its wait before the answer (if not, it finds the answer at once).
    thread::sleep(Duration::from_millis(200));
    agent.answer_inline(&cmd, vec![col("v", "integer")], vec![vec![json!(7)]]);
    agent.expect_ack(&cmd.command_id);
    let ((status, answer), took) = waiter.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "answered");
    assert_eq!(answer["outcome"]["rows"], json!([[7]]));
    assert!(took < Duration::from_secs(5), "woken by the answer, not the wait: {took:?}");
}

/// Posts `raw` as the buffered result of `cmd` (4 signed chunks) and sends the result frame.
fn answer_buffered(gw: &TestGateway, agent: &mut FakeAgent, cmd: &protocol::Command, raw: &[u8], rows: u64) {
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 4 + 1).collect();
    for (seq, piece) in pieces.iter().enumerate() {
        let last = seq + 1 == pieces.len();
        let (status, body) = Chunk::signed(&hmac, &conn, &cmd.command_id, seq as u32, last, piece).post(gw);
        assert_eq!(status, 200, "{body}");
    }
    let buffer_key = format!("Warehouse:{}", cmd.command_id);
    agent.send(&buffered(cmd, &buffer_key, pieces.len() as u32, raw, rows));
}

/// A buffered result kept for `GET /admin/commands/<id>` is streamed from its spool: every row,
/// `rows` after the other fields, the exact `Content-Length` (the client reads to the end and
/// parses the whole body).
#[test]
fn command_status_streams_a_buffered_outcome_from_its_spool() {
    let _w = watchdog("admin_status_spool");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let client = client(&gw);
    let body = json!({"connector": "Warehouse", "sql": "SELECT * FROM big"});
    let (_, submitted) = client.call("POST", "/admin/submit", Some(&body), WAIT).unwrap();
    let id = submitted["commandId"].as_str().unwrap().to_owned();
    let cmd = agent.expect_command();
    answer_buffered(&gw, &mut agent, &cmd, &stream(5_000), 5_000);
    agent.expect_ack(&cmd.command_id);
    let (status, answer) =
        client.call("GET", &format!("/admin/commands/{id}?waitMs=10000"), None, WAIT).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "answered");
    assert_eq!(answer["commandId"], id.as_str());
    let outcome = &answer["outcome"];
    let rows = outcome["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5_000);
    assert_eq!(rows[4_999], json!([4_999, format!("row 4999 \u{e9}t\u{e9} {}", "x".repeat(4_999 % 50))]));
    assert_eq!(outcome["columns"][0]["name"], "id");
    assert_eq!(outcome["rowCount"], 5_000);
    assert_eq!(outcome["buffered"]["chunkCount"], 4);

    // The raw body: `rows` is the last field, so a streaming reader has the columns first.
    let doc: Value = serde_json::from_slice(&std::fs::read(gw.dir.join("admin.json")).unwrap()).unwrap();
    let mut tcp = TcpStream::connect(gw.admin_addr().unwrap()).unwrap();
    write!(
        tcp,
        "GET /admin/commands/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        doc["token"].as_str().unwrap()
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let columns_at = body.find("\"columns\"").unwrap();
    let rows_at = body.find("\"rows\"").unwrap();
    assert!(columns_at < rows_at, "{}", &body[..200]);
}

/// `connector-gateway query` prints a large buffered result as it arrives: the table (sized
/// by its first 1,000 rows) and `--json` (the admin API's document, pretty-printed).
#[test]
fn cli_query_streams_a_large_result() {
    let _w = watchdog("cli_stream");
    let gw = with_admin();
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let raw = stream(3_000);
    for json_flag in [false, true] {
        let dir = gw.dir.clone();
        let cli = thread::spawn(move || {
            let mut args = vec!["query", "--connector", "Warehouse", "SELECT * FROM big"];
            if json_flag {
                args.push("--json");
            }
            Command::new(BIN).arg("--data-dir").arg(&dir).args(&args).env("RUST_LOG", "off").output().unwrap()
        });
        let cmd = agent.expect_command();
        answer_buffered(&gw, &mut agent, &cmd, &raw, 3_000);
        agent.expect_ack(&cmd.command_id);
        let out = cli.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        if json_flag {
            assert_eq!(text.lines().count(), 1, "one line");
            let doc: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc["ok"], true);
            let doc = &doc["data"];
            assert_eq!(doc["rows"].as_array().unwrap().len(), 3_000);
            assert_eq!(doc["rows"][2_999][0], 2_999);
            assert_eq!(doc["rowCount"], 3_000);
            assert!(
                text.starts_with("{\"ok\":true,\"data\":{\""),
                "compact, in the envelope: {}",
                &text[..60]
            );
            assert_eq!(doc["buffered"]["chunkCount"].as_u64().map(|n| n > 0), Some(true), "{}", &text[..200]);
        } else {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2 + 3_000 + 1, "header, rule, rows, count");
            // Widths from the first 1,000 rows: `999` sizes the id column.
            assert!(lines[0].starts_with("id   note"), "{}", lines[0]);
            assert!(lines[1].starts_with("---  ----"), "{}", lines[1]);
            assert_eq!(lines[2], "0    row 0 \u{e9}t\u{e9}");
            assert!(lines[3_001].starts_with("2999  row 2999 \u{e9}t\u{e9} xxx"), "{}", lines[3_001]);
            assert_eq!(lines[3_002], "(3000 rows)");
        }
    }
}
