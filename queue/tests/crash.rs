//! A child process writing a stream of receive/start/finish is killed with SIGKILL; the file
//! it leaves is whole and holds every command whose `receive` returned.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};

use queue::State;

use crate::support::{TempDir, answer, answered, cmd, frame, integrity, open};

const CHILD_ENV: &str = "QUEUE_TEST_CRASH_CHILD";

/// Not a test on its own: the body of the child process (does nothing without the variable).
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let prefix = std::env::var("QUEUE_TEST_CRASH_PREFIX").unwrap_or_default();
    let mut store = open(std::path::Path::new(&path));
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let id = format!("{prefix}c{i}");
        let f = frame(&id, 200 + (i % 7) * 500);
        store.receive(&cmd(&id, Some(&id), &f)).unwrap();
        writeln!(out, "R {id}").unwrap();
        out.flush().unwrap();
        store.start(&id).unwrap();
        store.finish(&id, &answered(&answer(&id, 1000 + (i % 5) * 4000))).unwrap();
        writeln!(out, "F {id}").unwrap();
        out.flush().unwrap();
        if i % 3 == 0 {
            store.acknowledge(&id).unwrap();
        }
    }
}

#[test]
fn sigkill_mid_stream_loses_no_committed_command() {
    let dir = TempDir::new("sigkill");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.db())
            .env("QUEUE_TEST_CRASH_PREFIX", format!("r{round}-"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut received, mut finished) = (BTreeSet::new(), BTreeSet::new());
        let mut line = String::new();
        // Round 0 starts on an empty file; the later rounds go on in the file the last one left.
        let kill_after = 150 + round * 50;
        while received.len() < kill_after {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended early");
            note(&line, &mut received, &mut finished);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What the child printed before it died was committed before it was printed.
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        for line in rest.lines() {
            note(line, &mut received, &mut finished);
        }

        // The `audit` CLI opens it read-only first, before the agent recovers the WAL.
        let reader = queue::Store::open_read_only(&dir.db()).unwrap();
        assert!(reader.verify_audit().unwrap().ok, "round {round}: read-only after a crash");
        drop(reader);
        assert_eq!(integrity(&dir.db()), "ok", "round {round}");
        let store = open(&dir.db());
        assert_eq!(store.integrity_check().unwrap(), "ok");
        for id in &received {
            let c = store.get(id).unwrap().unwrap_or_else(|| panic!("round {round}: {id} was lost"));
            if finished.contains(id) {
                assert_eq!(c.state, State::Answered, "{id}");
                assert!(c.answer_json.is_some());
            }
        }
        let report = store.verify_audit().unwrap();
        assert!(report.ok, "round {round}: {report:?}");
        // At most one command per round was cut between its steps: it is queued or interrupted.
        let open_work = store.queued(100).unwrap().len() + store.interrupted().unwrap().len();
        assert!(open_work <= round + 1, "round {round}: {open_work} unfinished");
    }
}

fn note(line: &str, received: &mut BTreeSet<String>, finished: &mut BTreeSet<String>) {
    if let Some(id) = line.trim().strip_prefix("R ") {
        received.insert(id.to_owned());
    } else if let Some(id) = line.trim().strip_prefix("F ") {
        finished.insert(id.to_owned());
    }
}
