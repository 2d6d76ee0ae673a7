//! The status indicator, the window title, the Overview cards and the Diagnostics figures for a
//! [`StatusSnapshot`], and the Exit-confirmation rule.

use protocol::control::{Indicator, LinkState, StatusSnapshot};

use super::format;

/// How the status dot moves (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Animation {
    /// Solid.
    None,
    /// Pulsing (green while executing).
    Pulse,
    /// Spinning (blue while reconnecting).
    Spin,
}

/// What the status dot, its label, the window title and the tray show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// The state.
    pub indicator: Indicator,
    /// `0xRRGGBB`.
    pub rgb: u32,
    /// "Connected", "Disconnected", ...
    pub label: String,
    /// The reason in words next to the dot (always set when red).
    pub detail: String,
    /// How the dot moves.
    pub animation: Animation,
    /// The window title (carries the label: tests read it).
    pub title: String,
    /// The tray tooltip.
    pub tooltip: String,
    /// Paused by the operator (the sidebar button says Resume).
    pub paused: bool,
}

/// The product name in titles.
pub const APP_NAME: &str = "Mini Connector";

/// The host part of a URL (`wss://console.acme.example:443/ws` → `console.acme.example`).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    host.split(':').next().unwrap_or(host)
}

impl StatusView {
    /// Before the first snapshot arrives.
    pub fn starting() -> Self {
        let indicator = Indicator::Reconnecting;
        Self {
            indicator,
            rgb: indicator.rgb(),
            label: "Starting".to_owned(),
            detail: "Waiting for the agent…".to_owned(),
            animation: Animation::Spin,
            title: format!("{APP_NAME} — Starting"),
            tooltip: format!("{APP_NAME}: starting"),
            paused: false,
        }
    }

    /// After the agent stopped.
    pub fn stopped(reason: &str) -> Self {
        let indicator = Indicator::Disconnected;
        Self {
            indicator,
            rgb: indicator.rgb(),
            label: "Stopped".to_owned(),
            detail: format!("The agent stopped: {reason}"),
            animation: Animation::None,
            title: format!("{APP_NAME} — Stopped"),
            tooltip: format!("{APP_NAME}: stopped ({reason})"),
            paused: false,
        }
    }

    /// The view of a snapshot.
    pub fn of(s: &StatusSnapshot) -> Self {
        let indicator = s.indicator;
        let host = host_of(&s.cloud_url);
        let reason = s.reason.as_deref().filter(|r| !r.trim().is_empty());
        let detail = match indicator {
            Indicator::Connected => format!("Connected to {host}{}", fallback_note(s)),
            Indicator::Executing => {
                format!("Executing {} on {host}", format::count(s.active_commands, "command", "commands"))
            }
            Indicator::Warning => reason.map_or_else(|| "Something needs a look".to_owned(), str::to_owned),
            Indicator::Disconnected => {
                let why = reason.unwrap_or(match s.state {
                    LinkState::KeyRejected => "the console refused the API key",
                    _ => "the console cannot be reached",
                });
                match s.next_retry_ms {
                    Some(ms) if s.state != LinkState::KeyRejected => {
                        format!("{why} — retrying in {}", format::duration_ms(ms))
                    }
                    _ => why.to_owned(),
                }
            }
            Indicator::Paused => "Paused — new commands are refused until you resume".to_owned(),
            Indicator::Reconnecting => match s.next_retry_ms {
                Some(ms) if ms > 0 => format!("Reconnecting to {host} in {}", format::duration_ms(ms)),
                _ => format!("Reconnecting to {host}…"),
            },
        };
        let animation = match indicator {
            Indicator::Executing => Animation::Pulse,
            Indicator::Reconnecting => Animation::Spin,
            _ => Animation::None,
        };
        let label = indicator.label().to_owned();
        Self {
            indicator,
            rgb: indicator.rgb(),
            title: format!("{APP_NAME} — {label}"),
            tooltip: format!("{APP_NAME} ({}): {detail}", s.connector_name),
            label,
            detail,
            animation,
            paused: s.paused,
        }
    }
}

/// One Overview card: a title and up to two lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Small caption.
    pub title: &'static str,
    /// The main figure.
    pub main: String,
    /// A second line.
    pub sub: String,
}

/// The four Overview cards (status, uptime, today, pending).
pub fn overview_cards(s: &StatusSnapshot) -> [Card; 4] {
    let view = StatusView::of(s);
    [
        Card { title: "Status", main: view.label, sub: format::ellipsize(&view.detail, 40) },
        Card {
            title: "Uptime",
            main: format::uptime(s.uptime_secs),
            sub: format::count(s.reconnects, "reconnect", "reconnects"),
        },
        Card {
            title: "Today",
            main: format::count(s.commands_today, "cmd", "cmds"),
            sub: format!("{} sent", format::bytes(s.bytes_sent_today)),
        },
        Card {
            title: "Pending",
            main: format::count(s.active_commands + s.waiting_commands, "command", "commands"),
            sub: format!("queue {}", format::bytes(s.queue.used_bytes)),
        },
    ]
}

/// A verdict next to a diagnostics line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Worth a look.
    Warn,
    /// Broken.
    Bad,
    /// Just a figure.
    Info,
}

/// One Diagnostics line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagRow {
    /// What is measured.
    pub label: String,
    /// The figure, in words.
    pub value: String,
    /// How it looks.
    pub verdict: Verdict,
}

fn row(label: impl Into<String>, value: impl Into<String>, verdict: Verdict) -> DiagRow {
    DiagRow { label: label.into(), value: value.into(), verdict }
}

/// The Diagnostics figures of spec §8.1: link health, latency, reconnects, pool use per
/// connection, queue depth, bytes, the last error.
pub fn diagnostics(s: &StatusSnapshot) -> Vec<DiagRow> {
    let link_verdict = match s.indicator {
        Indicator::Connected | Indicator::Executing => Verdict::Ok,
        Indicator::Warning | Indicator::Paused | Indicator::Reconnecting => Verdict::Warn,
        Indicator::Disconnected => Verdict::Bad,
    };
    let mut rows = vec![
        row("WebSocket link", StatusView::of(s).detail, link_verdict),
        row(
            "Latency (last heartbeat)",
            s.latency_ms.map_or_else(|| "–".to_owned(), format::latency_ms),
            match s.latency_ms {
                Some(ms) if ms > 1000.0 => Verdict::Warn,
                Some(_) => Verdict::Ok,
                None => Verdict::Info,
            },
        ),
        row("Reconnects", format::thousands(s.reconnects), Verdict::Info),
    ];
    for db in &s.databases {
        let pool = db.pool.map_or_else(
            || "no pool".to_owned(),
            |p| format!("pool {} of {} in use ({} idle)", p.open.saturating_sub(p.idle), p.max, p.idle),
        );
        let health = if db.healthy {
            "reachable".to_owned()
        } else {
            format!("unreachable: {}", db.error.as_deref().unwrap_or("no answer"))
        };
        rows.push(row(
            format!("Database {}", db.name),
            format!("{health} · {pool}"),
            if db.healthy { Verdict::Ok } else { Verdict::Bad },
        ));
    }
    let q = &s.queue;
    rows.push(row(
        "Command queue",
        format!(
            "{} running · {} waiting · {} unacknowledged · {} of {}",
            q.running,
            q.waiting,
            q.unacknowledged,
            format::bytes(q.used_bytes),
            format::bytes(q.cap_bytes)
        ),
        if q.error.is_some() {
            Verdict::Bad
        } else if q.warning {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
    ));
    rows.push(row(
        "Bytes",
        format!("{} sent · {} received", format::bytes(s.bytes_sent), format::bytes(s.bytes_received)),
        Verdict::Info,
    ));
    rows.push(row(
        "Commands",
        format!(
            "{} completed · {} failed · {} rows",
            format::thousands(s.commands_completed),
            format::thousands(s.commands_failed),
            format::thousands(s.rows_returned)
        ),
        if s.commands_failed > 0 { Verdict::Warn } else { Verdict::Ok },
    ));
    rows.push(row(
        "Last error",
        s.last_error.clone().unwrap_or_else(|| "none".to_owned()),
        if s.last_error.is_some() { Verdict::Warn } else { Verdict::Ok },
    ));
    rows
}

/// What Exit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitDecision {
    /// Close the window; the agent (a service) keeps running.
    CloseOnly,
    /// Stop the in-process agent and quit, without asking.
    StopNow,
    /// Ask first: commands are running and would be cut off. The question to ask.
    Confirm(String),
}

/// The Exit rule (spec §3.3): an attached GUI just closes; an in-process agent asks while
/// commands run.
pub fn exit_decision(in_process: bool, status: Option<&StatusSnapshot>) -> ExitDecision {
    if !in_process {
        return ExitDecision::CloseOnly;
    }
    let running = status.map_or(0, |s| s.active_commands + s.waiting_commands);
    if running == 0 {
        ExitDecision::StopNow
    } else {
        ExitDecision::Confirm(format!(
            "{} still running. Exiting stops the agent and cuts {} off. Exit anyway?",
            format::count(running, "command is", "commands are"),
            if running == 1 { "it" } else { "them" }
        ))
    }
}

/// ` (HTTPS fallback)` while the session runs over the long-poll transport (a proxy refuses
/// the WebSocket upgrade), else nothing.
fn fallback_note(s: &StatusSnapshot) -> &'static str {
    match s.transport {
        Some(protocol::control::LinkTransport::HttpsLongPoll) => " (HTTPS fallback)",
        _ => "",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::control::{DatabaseHealth, PoolUse, QueueStatus};

    pub(crate) fn snapshot(indicator: Indicator) -> StatusSnapshot {
        let state = match indicator {
            Indicator::Connected | Indicator::Warning => LinkState::Connected,
            Indicator::Executing => LinkState::Busy,
            Indicator::Disconnected => LinkState::Disconnected,
            Indicator::Paused => LinkState::Paused,
            Indicator::Reconnecting => LinkState::Connecting,
        };
        StatusSnapshot {
            state,
            indicator,
            reason: None,
            connected: matches!(state, LinkState::Connected | LinkState::Busy),
            paused: indicator == Indicator::Paused,
            connector_name: "Warehouse SAP".into(),
            cloud_url: "wss://console.acme.example/ws".into(),
            agent_version: "0.1.0".into(),
            pid: None,
            instance_id: "i-1".into(),
            connection_id: None,
            gateway_url: None,
            connected_since: None,
            disconnected_since: None,
            uptime_secs: 3 * 86_400 + 4 * 3600,
            reconnects: 2,
            next_retry_ms: None,
            latency_ms: Some(0.42),
            transport: None,
            active_commands: u64::from(indicator == Indicator::Executing),
            waiting_commands: 0,
            commands_completed: 1280,
            commands_failed: 4,
            commands_today: 1284,
            rows_returned: 50_042,
            bytes_sent: 38_200_000,
            bytes_received: 1_200,
            bytes_sent_today: 38_200_000,
            last_error: None,
            queue: QueueStatus { cap_bytes: 500_000_000, ..QueueStatus::default() },
            databases: vec![DatabaseHealth {
                name: "erp".into(),
                kind: Some("postgres".into()),
                healthy: true,
                error: None,
                pool: Some(PoolUse { open: 3, idle: 1, max: 8 }),
                tables: Some(42),
                checked_at: None,
            }],
            schema_changes: vec![],
        }
    }

    #[test]
    fn each_of_the_six_states_has_its_colour_label_and_motion() {
        let expect = [
            (Indicator::Connected, 0x2E9E5B, "Connected", Animation::None),
            (Indicator::Executing, 0x2E9E5B, "Executing", Animation::Pulse),
            (Indicator::Warning, 0xD9A400, "Warning", Animation::None),
            (Indicator::Disconnected, 0xD64545, "Disconnected", Animation::None),
            (Indicator::Paused, 0x8A8F98, "Paused", Animation::None),
            (Indicator::Reconnecting, 0x2F6FDB, "Reconnecting", Animation::Spin),
        ];
        for (indicator, rgb, label, animation) in expect {
            let v = StatusView::of(&snapshot(indicator));
            assert_eq!((v.rgb, v.label.as_str(), v.animation), (rgb, label, animation), "{indicator:?}");
            assert_eq!(v.title, format!("Mini Connector — {label}"));
            assert!(v.tooltip.contains("Warehouse SAP"), "{}", v.tooltip);
        }
    }

    #[test]
    fn the_https_fallback_is_named_while_connected_over_it() {
        let mut s = snapshot(Indicator::Connected);
        s.transport = Some(protocol::control::LinkTransport::HttpsLongPoll);
        assert_eq!(StatusView::of(&s).detail, "Connected to console.acme.example (HTTPS fallback)");
        s.transport = Some(protocol::control::LinkTransport::Websocket);
        assert_eq!(StatusView::of(&s).detail, "Connected to console.acme.example");
    }

    #[test]
    fn red_always_says_why_in_words() {
        let mut s = snapshot(Indicator::Disconnected);
        assert_eq!(StatusView::of(&s).detail, "the console cannot be reached");
        s.reason = Some("gateway unreachable: connection refused".into());
        s.next_retry_ms = Some(3200);
        assert_eq!(StatusView::of(&s).detail, "gateway unreachable: connection refused — retrying in 3.2 s");
        s.state = LinkState::KeyRejected;
        s.reason = None;
        assert_eq!(StatusView::of(&s).detail, "the console refused the API key");
    }

    #[test]
    fn green_names_the_console_host_and_paused_says_what_it_means() {
        assert_eq!(
            StatusView::of(&snapshot(Indicator::Connected)).detail,
            "Connected to console.acme.example"
        );
        assert_eq!(
            StatusView::of(&snapshot(Indicator::Executing)).detail,
            "Executing 1 command on console.acme.example"
        );
        let paused = StatusView::of(&snapshot(Indicator::Paused));
        assert!(paused.paused && paused.detail.starts_with("Paused"));
        assert_eq!(host_of("https://user:pw@[::1]:8443/x"), "::1");
        assert_eq!(host_of("console.acme:443"), "console.acme");
    }

    #[test]
    fn overview_cards_format_the_figures() {
        let cards = overview_cards(&snapshot(Indicator::Connected));
        assert_eq!(cards[0].main, "Connected");
        assert_eq!((cards[1].main.as_str(), cards[1].sub.as_str()), ("3 d 4 h", "2 reconnects"));
        assert_eq!((cards[2].main.as_str(), cards[2].sub.as_str()), ("1,284 cmds", "38.2 MB sent"));
        assert_eq!((cards[3].main.as_str(), cards[3].sub.as_str()), ("0 commands", "queue 0 B"));
    }

    #[test]
    fn diagnostics_list_pool_use_queue_depth_bytes_and_errors() {
        let mut s = snapshot(Indicator::Connected);
        s.databases.push(DatabaseHealth {
            name: "crm".into(),
            kind: Some("mysql".into()),
            healthy: false,
            error: Some("connection refused".into()),
            pool: None,
            tables: None,
            checked_at: None,
        });
        s.queue.waiting = 3;
        s.queue.warning = true;
        s.last_error = Some("DATABASE_UNAVAILABLE on crm".into());
        let rows = diagnostics(&s);
        let find = |l: &str| rows.iter().find(|r| r.label == l).unwrap_or_else(|| panic!("{l}: {rows:?}"));
        assert_eq!(find("Latency (last heartbeat)").value, "0.4 ms");
        assert_eq!(find("Database erp").value, "reachable · pool 2 of 8 in use (1 idle)");
        assert_eq!(find("Database crm").verdict, Verdict::Bad);
        let q = find("Command queue");
        assert_eq!(
            (q.verdict, q.value.as_str()),
            (Verdict::Warn, "0 running · 3 waiting · 0 unacknowledged · 0 B of 500.0 MB")
        );
        assert_eq!(find("Bytes").value, "38.2 MB sent · 1.2 kB received");
        assert_eq!(find("Last error").value, "DATABASE_UNAVAILABLE on crm");
    }

    #[test]
    fn exit_asks_only_an_in_process_agent_with_running_commands() {
        let idle = snapshot(Indicator::Connected);
        let mut busy = snapshot(Indicator::Executing);
        busy.waiting_commands = 2;
        assert_eq!(exit_decision(false, Some(&busy)), ExitDecision::CloseOnly);
        assert_eq!(exit_decision(true, Some(&idle)), ExitDecision::StopNow);
        assert_eq!(exit_decision(true, None), ExitDecision::StopNow);
        let ExitDecision::Confirm(q) = exit_decision(true, Some(&busy)) else { panic!("must ask") };
        assert!(q.starts_with("3 commands are still running"), "{q}");
    }
}
