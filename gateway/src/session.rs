//! One agent's session, over a WebSocket or the HTTPS long-poll transport
//! ([`protocol::wsio::Transport`], `longpoll.rs`): `auth` within the auth timeout, then a loop that writes what
//! other threads queued for it (send, then wake), reads and handles agent frames, and ends on
//! close, error, idle timeout, revocation, takeover or the end of a shutdown's grace period.
//!
//! **Takeover.** `auth` for a connector that still has a registered session: the same
//! `instanceId` replaces the old session at once (the agent reconnected before the gateway saw
//! the old link die); another (or no) instance id pings the old session and waits up to
//! `takeover_probe` for anything from it: silence replaces it, life is `DUPLICATE_CONNECTION`.
//!
//! **Probe.** `auth` with `probe: true` (`mini-connector doctor`) is only checked: a good key
//! gets `connected`, then the session closes without registering or taking over anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use protocol::wsio::{Compression, Incoming, Transport, Waker};
use protocol::{
    Auth, CloudError, Connected, ErrorCode, Frame as _, Inbound, Outbound, SecretBytes, Shutdown,
    UploadGrant, now_rfc3339,
};

use crate::hub::{GatewayEvent, Hub, Registration, SessionHandle, SessionMsg};

/// `maxInFlight` assumed for an agent whose `auth` names none.
const AGENT_DEFAULT_IN_FLIGHT: u32 = 32;

/// Extra time a draining session gets beyond the announced grace period.
const DRAIN_SLACK: Duration = Duration::from_secs(2);

/// How long a closing session waits for the agent's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

struct Live {
    connector: String,
    key_id: String,
    connection_id: String,
    rx: Receiver<SessionMsg>,
    last_frame: Instant,
    /// Takeover probes: when the ping went out, and whom to tell once the agent answers.
    probes: Vec<(Instant, Sender<()>)>,
    /// Set by `shutdown`: the session closes at this time unless the agent closes first.
    drain_until: Option<Instant>,
}

enum Phase {
    Auth { deadline: Instant },
    Live(Live),
    Closing { deadline: Instant },
}

/// Runs a session until it ends, over a WebSocket or the HTTPS long-poll transport.
/// `upload_url` is the URL handed out in `connected`.
pub(crate) fn run<T: Transport>(hub: Arc<Hub>, mut ws: T, waker: Waker, upload_url: String) {
    let mut phase = Phase::Auth { deadline: Instant::now() + hub.config.auth_timeout };
    let mut incoming = Vec::new();
    let mut reason = String::from("connection closed");
    loop {
        let now = Instant::now();
        let deadline = match &phase {
            Phase::Auth { deadline } | Phase::Closing { deadline } => *deadline,
            Phase::Live(live) => {
                let idle = live.last_frame + hub.config.session_idle_timeout;
                let keepalive = now + hub.config.keepalive_interval.saturating_sub(ws.write_idle_for());
                live.drain_until.map_or(idle, |drain| drain.min(idle)).min(keepalive)
            }
        };
        if let Err(e) = ws.wait(Some(deadline.saturating_duration_since(now))) {
            reason = format!("poll failed: {e}");
            break;
        }

        // Frames queued by other threads.
        if let Phase::Live(live) = &mut phase {
            let mut next = None;
            while let Ok(msg) = live.rx.try_recv() {
                match msg {
                    SessionMsg::Frame(text) => {
                        if let Err(e) = ws.send_text(text) {
                            reason = format!("write failed: {e}");
                            next = Some(None);
                            break;
                        }
                    }
                    SessionMsg::Kick { code, message } => {
                        send_error(&mut ws, code, &message, None);
                        ws.close(&message);
                        reason = format!("kicked: {message}");
                        next = Some(Some(Phase::Closing { deadline: Instant::now() + CLOSE_GRACE }));
                        break;
                    }
                    SessionMsg::Shutdown { reason: why, grace_ms, mode } => {
                        let frame = Inbound::Shutdown(Shutdown {
                            reason: Some(why.clone()),
                            grace_period: grace_ms,
                            mode,
                        });
                        let _ = ws.send_text(frame.encode());
                        // Answers of running commands are still read until the agent closes.
                        live.drain_until =
                            Some(Instant::now() + Duration::from_millis(grace_ms) + DRAIN_SLACK);
                        let mode = match mode {
                            protocol::ShutdownMode::Restart => "restart",
                            protocol::ShutdownMode::Decommission => "decommission",
                        };
                        reason = format!("shutdown ({mode}): {why}");
                    }
                    SessionMsg::Probe(tx) => {
                        if ws.ping().is_ok() {
                            live.probes.push((Instant::now(), tx));
                        }
                    }
                    SessionMsg::Replaced { reason: why } => {
                        ws.close(&why);
                        reason = why;
                        // The registration is the new session's already: the unregister below
                        // finds another connection id and changes nothing.
                        next = Some(Some(Phase::Closing { deadline: Instant::now() + CLOSE_GRACE }));
                        break;
                    }
                    SessionMsg::Close { reason: why } => {
                        ws.close(&why);
                        reason = why;
                        next = Some(Some(Phase::Closing { deadline: Instant::now() + CLOSE_GRACE }));
                        break;
                    }
                }
            }
            match next {
                None => {}
                Some(None) => break,
                Some(Some(closing)) => {
                    hub.unregister(&live.connector, &live.connection_id, &reason);
                    phase = closing;
                }
            }
        }
        let _ = ws.flush();

        incoming.clear();
        let read = ws.read_available(&mut incoming);
        let read_at = Instant::now();
        if let Phase::Live(live) = &mut phase
            && !live.probes.is_empty()
        {
            // Anything read after the ping (its pong included) proves the agent alive.
            let idle = ws.idle_for();
            live.probes.retain(|(at, tx)| {
                let alive = idle < at.elapsed();
                if alive {
                    let _ = tx.send(());
                }
                !alive
            });
        }
        for item in incoming.drain(..) {
            phase = match phase {
                Phase::Auth { .. } => authenticate(&hub, &mut ws, &waker, &upload_url, item),
                Phase::Live(mut live) => {
                    live.last_frame = read_at;
                    match handle_frame(&hub, &mut ws, &live, item, read_at) {
                        None => Phase::Live(live),
                        Some(message) => {
                            reason = format!("kicked: {message}");
                            hub.unregister(&live.connector, &live.connection_id, &reason);
                            Phase::Closing { deadline: Instant::now() + CLOSE_GRACE }
                        }
                    }
                }
                closing @ Phase::Closing { .. } => closing,
            };
        }
        if let Err(e) = read {
            if !matches!(e, tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) {
                reason = format!("connection lost: {e}");
            }
            break;
        }

        // Keepalive: a ping when nothing went to the agent for a while (its pong is traffic too).
        if matches!(phase, Phase::Live(_)) && ws.write_idle_for() >= hub.config.keepalive_interval {
            let _ = ws.ping();
        }
        if Instant::now() >= deadline {
            match phase {
                Phase::Auth { .. } => {
                    let message = format!("no auth frame within {} ms", hub.config.auth_timeout.as_millis());
                    reject(&hub, &mut ws, ErrorCode::AuthFailed, &message);
                    phase = Phase::Closing { deadline: Instant::now() + CLOSE_GRACE };
                }
                Phase::Live(live) if live.drain_until.is_some_and(|d| d <= Instant::now()) => {
                    reason = format!("{reason}; grace period over");
                    ws.close("grace period over");
                    hub.unregister(&live.connector, &live.connection_id, &reason);
                    phase = Phase::Closing { deadline: Instant::now() + CLOSE_GRACE };
                }
                Phase::Live(live) if live.last_frame + hub.config.session_idle_timeout <= Instant::now() => {
                    reason = format!("idle for {} s", hub.config.session_idle_timeout.as_secs_f64());
                    ws.close(&reason);
                    hub.unregister(&live.connector, &live.connection_id, &reason);
                    phase = Phase::Closing { deadline: Instant::now() + CLOSE_GRACE };
                }
                Phase::Closing { .. } => break,
                other => phase = other,
            }
        }
    }
    if let Phase::Live(live) = &phase {
        hub.unregister(&live.connector, &live.connection_id, &reason);
    }
}

fn send_error<T: Transport>(ws: &mut T, code: ErrorCode, message: &str, command_id: Option<String>) {
    let frame = Inbound::Error(CloudError { code, message: message.to_owned(), command_id });
    let _ = ws.send_text(frame.encode());
}

/// Refuses a session that is not authenticated: `error`, then close.
fn reject<T: Transport>(hub: &Hub, ws: &mut T, code: ErrorCode, message: &str) {
    tracing::info!(%code, "agent rejected: {message}");
    send_error(ws, code, message, None);
    ws.close(message);
    hub.emit(GatewayEvent::AgentRejected { code });
}

fn authenticate<T: Transport>(
    hub: &Arc<Hub>,
    ws: &mut T,
    waker: &Waker,
    upload_url: &str,
    item: Incoming,
) -> Phase {
    let closing = || Phase::Closing { deadline: Instant::now() + CLOSE_GRACE };
    let auth: Auth = match item {
        Incoming::Text(text) => match Outbound::decode(&text) {
            Ok(Outbound::Auth(auth)) => auth,
            Ok(_) => {
                reject(hub, ws, ErrorCode::AuthFailed, "the first frame must be auth");
                return closing();
            }
            Err(e) => {
                reject(hub, ws, ErrorCode::AuthFailed, &format!("invalid auth frame: {}", e.message));
                return closing();
            }
        },
        Incoming::Binary(_) | Incoming::Malformed(_) => {
            reject(hub, ws, ErrorCode::AuthFailed, "the first frame must be a text auth frame");
            return closing();
        }
    };
    let record = match hub.keys.authenticate(&auth.api_key) {
        Ok(Some(record)) => record,
        Ok(None) => {
            reject(hub, ws, ErrorCode::AuthFailed, "API key invalid, unknown, revoked or expired");
            return closing();
        }
        Err(e) => {
            tracing::error!("key lookup failed: {e}");
            // The store failed, not the key: retryable (an agent told AUTH_FAILED would report
            // its key rejected and retry only slowly).
            reject(
                hub,
                ws,
                ErrorCode::InternalError,
                "the API key could not be checked now (key store unavailable); retry",
            );
            return closing();
        }
    };
    if auth.connector_name != record.connector {
        tracing::info!(
            registered = %record.connector,
            announced = %auth.connector_name,
            "agent announces another connector name than its key's; using the key's"
        );
    }
    let connection_id = uuid::Uuid::new_v4().to_string();
    let hmac_key = SecretBytes::random(32);
    if auth.probe {
        // `doctor`: the key is good; answer without registering anything (a running agent's
        // session stays as it is) and close.
        let connected = Inbound::Connected(Connected {
            tenant_id: record.tenant.clone(),
            connector_name: record.connector.clone(),
            server_time: now_rfc3339(),
            connection_id,
            upload: UploadGrant {
                url: upload_url.to_owned(),
                hmac_key,
                max_chunk_bytes: hub.config.max_chunk_bytes,
                max_inline_bytes: hub.config.max_inline_bytes,
                content_encoding: None,
            },
            compression: None,
        });
        let _ = ws.send_text(connected.encode());
        ws.close("probe answered");
        tracing::info!(connector = %record.connector, key = %auth.api_key.masked(), "key probe answered");
        return closing();
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut handle =
        SessionHandle::new(connection_id.clone(), record.id.clone(), tx, waker.clone(), hmac_key.clone());
    handle.instance_id = auth.instance_id.clone().filter(|id| !id.is_empty());
    let agent_window = auth.max_in_flight.filter(|n| *n > 0).unwrap_or(AGENT_DEFAULT_IN_FLIGHT);
    handle.max_in_flight = (agent_window as usize).min(hub.config.max_in_flight.max(1));
    if let Err((code, message)) = register_or_take_over(hub, &record, &auth, handle) {
        reject(hub, ws, code, &message);
        return closing();
    }
    // The first compression of the agent's offer this gateway has; old agents offer none.
    let compression = match hub.config.compression {
        true => auth.compression.iter().find_map(|name| Compression::from_name(name)),
        false => None,
    };
    // Only where the transport compresses frames (a WebSocket; not long-poll). A `connected`
    // frame is far below the compression threshold, so it goes out as text either way.
    let compression = compression.filter(|c| ws.set_compression(Some(*c)));
    let connected = Inbound::Connected(Connected {
        tenant_id: record.tenant.clone(),
        connector_name: record.connector.clone(),
        server_time: now_rfc3339(),
        connection_id: connection_id.clone(),
        upload: UploadGrant {
            url: upload_url.to_owned(),
            hmac_key,
            max_chunk_bytes: hub.config.max_chunk_bytes,
            max_inline_bytes: hub.config.max_inline_bytes,
            content_encoding: protocol::ContentEncoding::pick(
                &auth.chunk_encodings,
                &hub.config.chunk_encodings,
            )
            .map(|e| e.as_str().to_owned()),
        },
        compression: compression.map(|c| c.as_str().to_owned()),
    });
    if let Err(e) = ws.send_text(connected.encode()) {
        hub.unregister(&record.connector, &connection_id, &format!("write failed: {e}"));
        return closing();
    }
    tracing::info!(connector = %record.connector, key = %auth.api_key.masked(), connection = %connection_id, "agent connected");
    hub.emit(GatewayEvent::AgentConnected {
        connector: record.connector.clone(),
        connection_id: connection_id.clone(),
    });
    // The offline queue goes after `connected`: this thread drains the channel only later.
    hub.deliver_queued(&record.connector);
    Phase::Live(Live {
        connector: record.connector,
        key_id: record.id,
        connection_id,
        rx,
        last_frame: Instant::now(),
        probes: Vec::new(),
        drain_until: None,
    })
}

/// Registers the new session, taking over from a registered one that is the same agent
/// instance or no longer answers; `Err` (`DUPLICATE_CONNECTION`) when the registered one is
/// alive. In cluster mode the connector is then claimed in the registry, where the same rules
/// hold across nodes.
fn register_or_take_over(
    hub: &Arc<Hub>,
    record: &crate::keys::KeyRecord,
    auth: &Auth,
    handle: SessionHandle,
) -> Result<(), (ErrorCode, String)> {
    let (conn, instance) = (handle.connection_id.clone(), handle.instance_id.clone());
    register_here(hub, record, auth, handle).map_err(|message| (ErrorCode::DuplicateConnection, message))?;
    if let Some(cluster) = &hub.cluster
        && let Err((code, message)) =
            cluster.claim(&record.connector, &conn, instance.as_deref(), hub.config.takeover_probe)
    {
        hub.unregister(&record.connector, &conn, &message);
        return Err((code, message));
    }
    Ok(())
}

/// [`register_or_take_over`] among this node's sessions.
fn register_here(
    hub: &Arc<Hub>,
    record: &crate::keys::KeyRecord,
    auth: &Auth,
    handle: SessionHandle,
) -> Result<(), String> {
    let probe = hub.config.takeover_probe;
    // A few rounds: the old session may end (or be replaced) while we look at it.
    for _ in 0..4 {
        let old = match hub.register(record, &auth.agent_version, handle.clone()) {
            Registration::Registered => return Ok(()),
            Registration::Occupied(old) => old,
        };
        let same_instance = handle.instance_id.is_some() && old.instance_id == handle.instance_id;
        let reason = if same_instance {
            "replaced by a newer session of the same agent".to_owned()
        } else {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if !old.send(SessionMsg::Probe(tx)) {
                continue; // Its thread is gone; its unregister follows.
            }
            match rx.recv_timeout(probe) {
                Ok(()) => {
                    return Err(format!(
                        "connector `{}` is already connected (its session answered within {} ms)",
                        record.connector,
                        probe.as_millis()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    format!("replaced: the session did not answer a ping within {} ms", probe.as_millis())
                }
            }
        };
        if hub.take_over(record, &auth.agent_version, &old, handle.clone(), &reason) {
            return Ok(());
        }
    }
    Err(format!("connector `{}` is already connected", record.connector))
}

/// Answers a frame that is not JSON text with `MALFORMED_MESSAGE`; the session goes on.
fn refuse_malformed<T: Transport>(hub: &Hub, ws: &mut T, live: &Live, message: String) -> Option<String> {
    send_error(ws, ErrorCode::MalformedMessage, &message, None);
    hub.emit(GatewayEvent::DecodeFailed {
        connector: live.connector.clone(),
        code: ErrorCode::MalformedMessage,
        message,
    });
    None
}

/// Handles one frame of a live session; `Some(message)` when the session must end.
fn handle_frame<T: Transport>(
    hub: &Hub,
    ws: &mut T,
    live: &Live,
    item: Incoming,
    at: Instant,
) -> Option<String> {
    let text = match item {
        Incoming::Text(text) => text,
        Incoming::Binary(len) => {
            let message = format!("binary frame of {len} bytes: the protocol uses text frames only");
            return refuse_malformed(hub, ws, live, message);
        }
        // A compressed frame that does not inflate within the frame limit (a deflate bomb).
        Incoming::Malformed(reason) => return refuse_malformed(hub, ws, live, reason),
    };
    let frame = match Outbound::decode(&text) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::warn!(connector = %live.connector, code = %e.code, "undecodable frame: {}", e.message);
            send_error(ws, e.code, &e.message, e.command_id.clone());
            hub.emit(GatewayEvent::DecodeFailed {
                connector: live.connector.clone(),
                code: e.code,
                message: e.message,
            });
            return None;
        }
    };
    let action = hub.on_frame(&live.connector, &live.key_id, &frame);
    for reply in action.reply {
        let _ = ws.send_text(reply.encode());
    }
    hub.emit(GatewayEvent::Frame { connector: live.connector.clone(), at, frame });
    if let Some((code, message)) = action.kick {
        send_error(ws, code, &message, None);
        ws.close(&message);
        return Some(message);
    }
    None
}
