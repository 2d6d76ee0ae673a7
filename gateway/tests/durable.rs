//! Issue 9 at the gateway: the command queue survives a restart, the first answer wins (later
//! ones are dropped and acknowledged), a new session takes over a stale one, the backlog is
//! paced, and a chunked upload goes on in a new session.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gateway::{CommandStatus, GatewayEvent, QueryError, QueryRequest};
use protocol::{ErrorBody, ErrorCode, ExecutionError, Inbound, Outbound, ShutdownMode};
use serde_json::json;

use crate::chunks::{buffered, stream};
use crate::common::{Chunk, FakeAgent, TestGateway, WAIT, col, start_with, watchdog};

/// Submits a query and lets its caller go: the command stays queued, its outcome is kept.
fn submit(gw: &TestGateway, connector: &str, sql: &str) -> String {
    let pending = gw.submit(connector, QueryRequest::new(sql)).unwrap();
    pending.command_id().to_owned()
}

fn answered_events(events: &crossbeam_channel::Receiver<GatewayEvent>) -> (Vec<String>, Vec<String>) {
    let (mut answered, mut dropped) = (Vec::new(), Vec::new());
    while let Ok(event) = events.try_recv() {
        match event {
            GatewayEvent::CommandAnswered { command_id, .. } => answered.push(command_id),
            GatewayEvent::AnswerDropped { command_id, .. } => dropped.push(command_id),
            _ => {}
        }
    }
    (answered, dropped)
}

fn error_frame(cmd: &protocol::Command, code: ErrorCode) -> Outbound {
    Outbound::ExecutionError(ExecutionError {
        command_id: Some(cmd.command_id.clone()),
        execution_id: Some(cmd.execution_id.clone()),
        activity_id: Some(cmd.activity_id.clone()),
        error: ErrorBody::new(code, "late"),
    })
}

#[test]
fn the_first_answer_wins_later_ones_are_dropped_and_acknowledged() {
    let _w = watchdog("dup-answers");
    let gw = start_with(|_| {});
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let events = gw.subscribe();
    let mut req = QueryRequest::new("SELECT 1");
    req.wait = WAIT;
    let pending = gw.submit("Warehouse", req).unwrap();
    let cmd = agent.expect_command();
    // The same answer three times (re-sent after reconnects), then an error for it: each is
    // acknowledged, only the first counts.
    for _ in 0..3 {
        agent.answer_inline(&cmd, vec![col("x", "integer")], vec![vec![json!(1)]]);
        agent.expect_ack(&cmd.command_id);
    }
    agent.send(&error_frame(&cmd, ErrorCode::QueryFailed));
    agent.expect_ack(&cmd.command_id);
    let outcome = pending.wait().unwrap();
    assert_eq!(outcome.rows, vec![vec![json!(1)]]);
    // An error that comes first wins the same way.
    let pending = gw.submit("Warehouse", QueryRequest::new("SELECT 2")).unwrap();
    let cmd2 = agent.expect_command();
    agent.send(&error_frame(&cmd2, ErrorCode::QueryFailed));
    agent.expect_ack(&cmd2.command_id);
    agent.answer_inline(&cmd2, vec![col("x", "integer")], vec![vec![json!(2)]]);
    agent.expect_ack(&cmd2.command_id);
    assert!(matches!(pending.wait(), Err(QueryError::Remote(e)) if e.code == ErrorCode::QueryFailed));

    agent.heartbeat(0);
    gw.wait_event(|e| matches!(e, GatewayEvent::Frame { frame: Outbound::Heartbeat(_), .. }).then_some(()));
    let (answered, dropped) = answered_events(&events);
    let count = |list: &[String], id: &str| list.iter().filter(|c| *c == id).count();
    assert_eq!((count(&answered, &cmd.command_id), count(&dropped, &cmd.command_id)), (1, 3));
    assert_eq!((count(&answered, &cmd2.command_id), count(&dropped, &cmd2.command_id)), (1, 1));
}

#[test]
fn a_duplicate_answer_after_a_gateway_restart_is_dropped_and_acknowledged() {
    let _w = watchdog("dup-after-restart");
    let mut gw = start_with(|_| {});
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let id = submit(&gw, "Warehouse", "SELECT 1");
    let cmd = agent.expect_command();
    assert_eq!(cmd.command_id, id);
    agent.answer_inline(&cmd, vec![col("x", "integer")], vec![vec![json!(1)]]);
    agent.expect_ack(&id);
    drop(agent);
    gw.restart_with(|_| {});
    // The agent never saw the ack (say) and re-sends the answer on its new session.
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    agent.answer_inline(&cmd, vec![col("x", "integer")], vec![vec![json!(1)]]);
    agent.expect_ack(&id);
    gw.wait_event(|e| {
        matches!(e, GatewayEvent::AnswerDropped { command_id, .. } if *command_id == id).then_some(())
    });
    // Answered before the restart; the outcome itself lived in memory only.
    assert!(matches!(gw.command_status(&id), CommandStatus::Answered(None)));
    agent.expect_silence(Duration::from_millis(200));
}

#[test]
fn queued_and_sent_commands_survive_a_restart_and_expired_ones_are_answered_expired() {
    let _w = watchdog("restart-queue");
    let mut gw = start_with(|c| c.max_in_flight = 1);
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let sent = submit(&gw, "Warehouse", "SELECT 'sent'");
    let queued = submit(&gw, "Warehouse", "SELECT 'queued'");
    let mut short = QueryRequest::new("SELECT 'short ttl'");
    short.ttl = Some(Duration::from_millis(300));
    let short = gw.submit("Warehouse", short).unwrap().command_id().to_owned();
    assert_eq!(agent.expect_command().command_id, sent);
    agent.expect_silence(Duration::from_millis(100));
    assert!(matches!(gw.command_status(&sent), CommandStatus::Sent));
    assert!(matches!(gw.command_status(&queued), CommandStatus::Queued));

    drop(agent);
    gw.restart_with(|c| c.max_in_flight = 8);
    // Let the short TTL pass while the connector is offline.
    std::thread::sleep(Duration::from_millis(350));
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let first = agent.expect_command();
    let second = agent.expect_command();
    assert_eq!((first.command_id.as_str(), second.command_id.as_str()), (sent.as_str(), queued.as_str()));
    assert_eq!(first.payload.query, "SELECT 'sent'");
    agent.expect_silence(Duration::from_millis(200));
    match gw.command_status(&short) {
        CommandStatus::Answered(Some(Err(QueryError::Remote(e)))) => {
            assert_eq!(e.code, ErrorCode::CommandExpired)
        }
        other => panic!("expected COMMAND_EXPIRED, got {other:?}"),
    }
    agent.answer_inline(&first, vec![col("x", "text")], vec![vec![json!("sent")]]);
    agent.expect_ack(&sent);
    match gw.command_status(&sent) {
        CommandStatus::Answered(Some(Ok(outcome))) => assert_eq!(outcome.rows, vec![vec![json!("sent")]]),
        other => panic!("expected the kept outcome, got {other:?}"),
    }
}

#[test]
fn same_instance_takes_over_at_once_and_gets_the_unanswered_commands_again() {
    let _w = watchdog("takeover-same");
    // A long probe: the same instance must not wait for it.
    let gw = start_with(|c| c.takeover_probe = Duration::from_secs(5));
    let key = gw.key("Warehouse");
    let mut old = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let id = submit(&gw, "Warehouse", "SELECT 1");
    assert_eq!(old.expect_command().command_id, id);
    // The old link is dead but not closed; the agent (same instance) reconnects.
    let started = Instant::now();
    let mut new = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let reason = gw.wait_event(|e| match e {
        GatewayEvent::SessionReplaced { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, "replaced by a newer session of the same agent");
    let again = new.expect_command();
    assert_eq!(again.command_id, id, "re-delivered on the new session");
    old.expect_closed();
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert_eq!(info.connection_id.unwrap(), new.connection_id());
    new.answer_inline(&again, vec![col("x", "integer")], vec![vec![json!(1)]]);
    new.expect_ack(&id);
}

#[test]
fn another_instance_is_duplicate_while_the_old_session_answers_and_takes_over_when_it_is_silent() {
    let _w = watchdog("takeover-other");
    let probe = Duration::from_millis(400);
    let gw = start_with(|c| c.takeover_probe = probe);
    let key = gw.key("Warehouse");
    let mut alive = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let reader = std::thread::spawn(move || {
        alive.answer_pings_for(Duration::from_millis(1500));
        alive
    });
    let mut other = FakeAgent::open(&gw);
    match other.auth_as(&key, "Warehouse", Some("inst-2"), None) {
        Inbound::Error(e) => assert_eq!(e.code, ErrorCode::DuplicateConnection),
        other => panic!("expected DUPLICATE_CONNECTION, got {other:?}"),
    }
    let silent = reader.join().unwrap();

    // Now the old session stops answering (its agent no longer reads): after the probe the
    // new instance takes over.
    let id = submit(&gw, "Warehouse", "SELECT 1");
    let started = Instant::now();
    let mut new = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-2"), None);
    let took = started.elapsed();
    assert!(took >= probe, "took over after {took:?}, before the probe ended");
    assert!(took < probe + Duration::from_secs(2), "took {took:?}");
    let reason = gw.wait_event(|e| match e {
        GatewayEvent::SessionReplaced { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("did not answer a ping"), "{reason}");
    assert_eq!(new.expect_command().command_id, id, "the command sent to the silent session comes again");
    drop(silent);
}

#[test]
fn a_backlog_of_1000_is_paced_to_the_agents_window() {
    let _w = watchdog("pacing");
    let gw = start_with(|c| c.max_in_flight = 64);
    let key = gw.key("Warehouse");
    let started = Instant::now();
    let ids: Vec<String> = (0..1000).map(|i| submit(&gw, "Warehouse", &format!("SELECT {i}"))).collect();
    let queued_in = started.elapsed();
    // The agent accepts 16 at once: the gateway's 64 is lowered to that.
    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), Some(16));
    let mut outstanding = std::collections::VecDeque::new();
    for _ in 0..16 {
        outstanding.push_back(agent.expect_command());
    }
    agent.expect_silence(Duration::from_millis(200));
    let info = gw.connectors().into_iter().find(|c| c.name == "Warehouse").unwrap();
    assert_eq!((info.queued_commands, info.in_flight_commands), (984, 16));
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let drained = Instant::now();
    while let Some(cmd) = outstanding.pop_front() {
        assert!(seen.insert(cmd.command_id.clone()), "command {} delivered twice", cmd.command_id);
        order.push(cmd.command_id.clone());
        agent.answer_inline(&cmd, vec![col("x", "integer")], vec![vec![json!(1)]]);
        // The ack, then (while the backlog lasts) exactly one more command.
        let mut acked = false;
        while !acked || (seen.len() + outstanding.len() < 1000 && outstanding.len() < 16) {
            match agent.recv() {
                Inbound::Ack(a) => {
                    assert_eq!(a.command_id, cmd.command_id);
                    acked = true;
                }
                Inbound::Command(c) => outstanding.push_back(c),
                other => panic!("unexpected {other:?}"),
            }
            assert!(outstanding.len() <= 16, "more than the agent's window in flight");
        }
    }
    assert_eq!(order, ids, "every command once, oldest first");
    eprintln!(
        "pacing: 1000 commands persisted in {queued_in:?}, delivered and answered through a window of 16 in {:?}",
        drained.elapsed()
    );
    assert!(ids.iter().all(|id| matches!(gw.command_status(id), CommandStatus::Answered(Some(Ok(_))))));
}

#[test]
fn decommission_sends_shutdown_with_mode_decommission_and_nothing_after_it() {
    let _w = watchdog("decommission");
    let gw = start_with(|c| c.shutdown_grace = Duration::from_millis(300));
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    gw.decommission("Warehouse").unwrap();
    match agent.recv() {
        Inbound::Shutdown(s) => {
            assert_eq!(s.mode, ShutdownMode::Decommission);
            assert_eq!(s.grace_period, 300);
        }
        other => panic!("expected shutdown, got {other:?}"),
    }
    // No command goes to a decommissioned session; it stays queued.
    let id = submit(&gw, "Warehouse", "SELECT 1");
    assert!(matches!(gw.command_status(&id), CommandStatus::Queued));
    // The agent does not close by itself here: the gateway closes after the grace period.
    agent.expect_closed();
    gw.wait_disconnected("Warehouse");
    assert!(matches!(gw.decommission("Warehouse"), Err(gateway::GatewayError::ConnectorOffline(_))));
    assert!(matches!(gw.decommission("Nobody"), Err(gateway::GatewayError::UnknownConnector(_))));
}

#[test]
fn graceful_shutdown_sends_restart_and_waits_for_running_answers() {
    let _w = watchdog("shutdown-restart");
    let mut gw = start_with(|c| c.shutdown_grace = Duration::from_secs(5));
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    let id = submit(&gw, "Warehouse", "SELECT 1");
    let cmd = agent.expect_command();
    let (addr, tls) = (gw.local_addr(), gw.tls());
    let answerer = std::thread::spawn(move || {
        match agent.recv() {
            Inbound::Shutdown(s) => assert_eq!((s.mode, s.grace_period), (ShutdownMode::Restart, 5000)),
            other => panic!("expected shutdown, got {other:?}"),
        }
        // The running command finishes during the grace period: its chunked result is
        // uploaded and acknowledged.
        let raw = stream(100);
        let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
        let (status, body) = Chunk::signed(&hmac, &conn, &cmd.command_id, 0, true, &raw).post_to(addr, tls);
        assert_eq!(status, 200, "{body}");
        agent.send(&buffered(&cmd, body["bufferKey"].as_str().unwrap(), 1, &raw, 100));
        agent.expect_ack(&cmd.command_id);
        agent.close();
    });
    let started = Instant::now();
    gw.restart_with(|_| {});
    answerer.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited {:?} although the answer came",
        started.elapsed()
    );
    // The answer was recorded before the stop: not delivered again after the restart.
    assert!(matches!(gw.command_status(&id), CommandStatus::Answered(None)));
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    agent.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_chunked_upload_goes_on_in_the_next_session() {
    let _w = watchdog("upload-resume");
    let mut gw = start_with(|_| {});
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let mut req = QueryRequest::new("SELECT * FROM big");
    req.wait = WAIT;
    let pending = gw.submit("Warehouse", req).unwrap();
    let cmd = agent.expect_command();
    let raw = stream(3_000);
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 3 + 1).collect();
    let (conn1, hmac1) = (agent.connection_id(), agent.hmac_key());
    let (status, body) = Chunk::signed(&hmac1, &conn1, &cmd.command_id, 0, false, pieces[0]).post(&gw);
    assert_eq!(status, 200, "{body}");
    // The link drops; the agent comes back in a new session.
    agent.close();
    gw.wait_disconnected("Warehouse");
    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    assert_eq!(agent.expect_command().command_id, cmd.command_id, "re-delivered (the agent dedups)");
    let (conn2, hmac2) = (agent.connection_id(), agent.hmac_key());
    // Signed for the old session: refused, that session is over.
    let (status, body) = Chunk::signed(&hmac1, &conn1, &cmd.command_id, 1, false, pieces[1]).post(&gw);
    assert_eq!((status, body["code"].as_str()), (401, Some("AUTH_FAILED")), "{body}");
    // Chunk 0 again under the new session, same bytes: stored already, 200.
    let (status, body) = Chunk::signed(&hmac2, &conn2, &cmd.command_id, 0, false, pieces[0]).post(&gw);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    // Skipping ahead: 409 naming the next chunk.
    let (status, body) = Chunk::signed(&hmac2, &conn2, &cmd.command_id, 2, true, pieces[2]).post(&gw);
    assert_eq!((status, &body["nextSeq"]), (409, &json!(1)), "{body}");
    let mut buffer_key = String::new();
    for seq in 1..3u32 {
        let chunk = Chunk::signed(&hmac2, &conn2, &cmd.command_id, seq, seq == 2, pieces[seq as usize]);
        let (status, body) = chunk.post(&gw);
        assert_eq!(status, 200, "{body}");
        buffer_key = body["bufferKey"].as_str().unwrap().to_owned();
    }
    agent.send(&buffered(&cmd, &buffer_key, 3, &raw, 3_000));
    agent.expect_ack(&cmd.command_id);
    let outcome = pending.wait().unwrap();
    assert_eq!(outcome.buffered.unwrap().raw, raw, "byte-exact across two sessions");

    // A gateway restart (here a graceful one; `kill -9` in the lifecycle tests) keeps partial
    // buffers: their chunks are in gateway.db. The agent goes on with the next chunk in its new
    // session, and the result completes with the rows it was running for — no re-run.
    let id = submit(&gw, "Warehouse", "SELECT * FROM big");
    let cmd = agent.expect_command();
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    assert_eq!(Chunk::signed(&hmac, &conn, &id, 0, false, pieces[0]).post(&gw).0, 200);
    drop(agent);
    gw.restart_with(|_| {});
    assert_eq!(gw.buffered_results(), 1, "the partial buffer is back");
    let mut agent = FakeAgent::connect(&gw, &key, "Warehouse");
    assert_eq!(agent.expect_command().command_id, id);
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    // Chunk 0 again (its 200 may have been lost with the gateway): stored already.
    let (status, body) = Chunk::signed(&hmac, &conn, &id, 0, false, pieces[0]).post(&gw);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    for seq in 1..3u32 {
        let (status, body) = Chunk::signed(&hmac, &conn, &id, seq, seq == 2, pieces[seq as usize]).post(&gw);
        assert_eq!(status, 200, "{body}");
    }
    agent.send(&buffered(&cmd, &format!("Warehouse:{id}"), 3, &raw, 3_000));
    agent.expect_ack(&id);
    match gw.command_status(&id) {
        CommandStatus::Answered(Some(Ok(outcome))) => {
            assert_eq!(outcome.buffered.unwrap().raw, raw, "byte-exact across a gateway restart")
        }
        other => panic!("expected the result across the restart, got {other:?}"),
    }
    assert_eq!(gw.buffered_results(), 0);

    // A buffered answer whose chunks the gateway does not hold (never uploaded, or dropped)
    // cannot be uploaded again (the agent streamed its rows): UPLOAD_FAILED (retryable) to the
    // caller, acknowledged — reported, not stuck.
    let id = submit(&gw, "Warehouse", "SELECT * FROM big");
    let cmd = agent.expect_command();
    agent.send(&buffered(&cmd, &format!("Warehouse:{id}"), 3, &raw, 3_000));
    agent.expect_ack(&id);
    match gw.command_status(&id) {
        CommandStatus::Answered(Some(Err(QueryError::Remote(body)))) => {
            assert_eq!(body.code, ErrorCode::UploadFailed, "{body:?}");
            assert!(body.retryable, "{body:?}");
        }
        other => panic!("expected an UPLOAD_FAILED answer, got {other:?}"),
    }
}

#[test]
fn a_buffered_result_resent_on_a_new_session_while_the_first_copy_is_verified_is_a_duplicate() {
    // Issue 9, cuts every 200 ms: the agent sends a buffered result, the link is cut before
    // the `ack`, and the agent re-sends the unacknowledged answer as soon as its next session
    // is up. Each session has its own thread: the second copy was read while the first was
    // still being verified (SHA-256 and NDJSON parse of a large result take a while), found
    // the buffer already taken, and answered the command UPLOAD_FAILED — the caller's retry
    // with the same idempotency key then got RESULT_UNAVAILABLE. The second copy is a
    // duplicate: dropped, acknowledged; the first answers the command with its rows.
    let _w = watchdog("resend-while-verifying");
    let gw = start_with(|_| {});
    let key = gw.key("Warehouse");
    let mut first = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let mut req = QueryRequest::new("SELECT * FROM big");
    req.wait = WAIT;
    let pending = gw.submit("Warehouse", req).unwrap();
    let cmd = first.expect_command();
    // Large enough that verifying it takes longer than a reconnect on loopback.
    let raw = stream(150_000);
    let (conn, hmac) = (first.connection_id(), first.hmac_key());
    let pieces: Vec<&[u8]> = raw.chunks(512 << 10).collect();
    let last = pieces.len() - 1;
    for (seq, piece) in pieces.iter().enumerate() {
        let chunk = Chunk::signed(&hmac, &conn, &cmd.command_id, seq as u32, seq == last, piece);
        let (status, body) = chunk.post(&gw);
        assert_eq!(status, 200, "{body}");
    }
    let buffer_key = format!("Warehouse:{}", cmd.command_id);
    let result = buffered(&cmd, &buffer_key, pieces.len() as u32, &raw, 150_000);
    first.send(&result);
    // The `ack` is lost with the link; the agent is back at once and re-sends its answer.
    let mut second = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    assert_eq!(second.expect_command().command_id, cmd.command_id);
    second.send(&result);
    second.expect_ack(&cmd.command_id);
    let outcome = pending.wait().expect("the result's rows, not UPLOAD_FAILED");
    assert_eq!(outcome.row_count, 150_000);
    assert_eq!(outcome.buffered.unwrap().raw, raw);
    assert_eq!(gw.buffered_results(), 0);
}

#[test]
fn a_repeat_of_a_key_whose_answer_was_lost_gets_the_same_rows_after_a_gateway_restart() {
    // Issue 9, gateway killed mid-stream: the gateway answered a chunked command and was killed
    // before the caller read the answer. The caller asks again with the same idempotency key;
    // the agent has run it already and answers from its store with the same buffered result,
    // naming the first command's buffer. The gateway keeps that buffer's chunks for a while
    // after the answer (in gateway.db), so the repeat gets the rows — not RESULT_UNAVAILABLE,
    // and without running the query again.
    let _w = watchdog("repeat-kept-result");
    let mut gw = start_with(|_| {});
    let key = gw.key("Warehouse");
    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let mut req = QueryRequest::new("SELECT * FROM big");
    req.idempotency_key = Some("key-1".into());
    let first = gw.submit("Warehouse", req).unwrap();
    let cmd = agent.expect_command();
    let raw = stream(3_000);
    let pieces: Vec<&[u8]> = raw.chunks(raw.len() / 2 + 1).collect();
    let (conn, hmac) = (agent.connection_id(), agent.hmac_key());
    for seq in 0..2u32 {
        let chunk = Chunk::signed(&hmac, &conn, &cmd.command_id, seq, seq == 1, pieces[seq as usize]);
        assert_eq!(chunk.post(&gw).0, 200);
    }
    let buffer_key = format!("Warehouse:{}", cmd.command_id);
    agent.send(&buffered(&cmd, &buffer_key, 2, &raw, 3_000));
    agent.expect_ack(&cmd.command_id);
    drop(first); // the caller never reads it
    drop(agent);
    gw.restart_with(|_| {});

    let mut agent = FakeAgent::connect_as(&gw, &key, "Warehouse", Some("inst-1"), None);
    let mut req = QueryRequest::new("SELECT * FROM big");
    req.idempotency_key = Some("key-1".into());
    req.wait = WAIT;
    let again = gw.submit("Warehouse", req).unwrap();
    let repeat = agent.expect_command();
    assert_ne!(repeat.command_id, cmd.command_id, "the first command is answered: a new one carries the key");
    // The agent's store answer, re-addressed to the repeat: the same buffer key.
    agent.send(&buffered(&repeat, &buffer_key, 2, &raw, 3_000));
    agent.expect_ack(&repeat.command_id);
    let outcome = again.wait().expect("the kept rows, not RESULT_UNAVAILABLE");
    assert_eq!(outcome.buffered.unwrap().raw, raw);

    // Another connector cannot name it.
    let other_key = gw.key("Other");
    let mut other = FakeAgent::connect(&gw, &other_key, "Other");
    let id = submit(&gw, "Other", "SELECT * FROM big");
    let cmd = other.expect_command();
    other.send(&buffered(&cmd, &buffer_key, 2, &raw, 3_000));
    let _ = other.recv();
    match gw.command_status(&id) {
        CommandStatus::Answered(Some(Err(e))) => assert!(!matches!(e, QueryError::Timeout), "{e:?}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
}
