//! The Linux tray against a real D-Bus daemon (a private session bus started here).
//!
//! No desktop panel runs on this machine, so the StatusNotifierWatcher is a FAKE PEER: a minimal
//! watcher written below (it owns `org.kde.StatusNotifierWatcher` and records
//! `RegisterStatusNotifierItem` calls, which is all a panel does before it reads the item).
//! Everything else is real: libdbus, the bus daemon, and the item's properties and menu read
//! and clicked with `busctl` as a panel would.

#![cfg(all(unix, not(target_os = "macos")))]
#![allow(unsafe_code)] // `std::env::set_var` before any other thread reads the environment.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use dbus::blocking::Connection;
use dbus::channel::MatchingReceiver as _;
use dbus::message::MatchRule;
use protocol::control::Indicator;
use tray::{Tray, TrayAction};

struct Bus {
    child: Child,
    address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session bus listening on `socket` (a fixed path, so a second daemon can take over the
/// same address, as after a bus restart).
fn start_bus(socket: &std::path::Path) -> Bus {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", socket.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon (Debian package dbus) must be installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    Bus { child, address: line.trim().to_owned() }
}

/// The fake StatusNotifierWatcher: answers `RegisterStatusNotifierItem` and reports the name.
fn fake_watcher() -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let conn = Connection::new_session().unwrap();
        conn.request_name("org.kde.StatusNotifierWatcher", false, true, false).unwrap();
        conn.start_receive(
            MatchRule::new_method_call(),
            Box::new(move |msg, conn| {
                use dbus::channel::Sender as _;
                if msg.member().as_deref() == Some("RegisterStatusNotifierItem") {
                    let name: String = msg.read1().unwrap_or_default();
                    let _ = tx.send(name);
                }
                let _ = conn.send(msg.method_return());
                true
            }),
        );
        loop {
            if conn.process(Duration::from_millis(500)).is_err() {
                return;
            }
        }
    });
    rx
}

fn busctl(address: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(["--json=short", "--"])
        .args(args)
        .output()
        .expect("busctl (systemd) must be installed");
    assert!(out.status.success(), "busctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    if out.stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

fn property(address: &str, name: &str, prop: &str) -> serde_json::Value {
    busctl(address, &["get-property", name, "/StatusNotifierItem", "org.kde.StatusNotifierItem", prop])["data"].clone()
}

/// Polls until `check` holds (the item applies `set_state` on its own thread).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The menu's labels and ids, from dbusmenu `GetLayout` (children of the root).
fn menu(address: &str, name: &str) -> Vec<(String, i64)> {
    let reply = busctl(
        address,
        &["call", name, "/MenuBar", "com.canonical.dbusmenu", "GetLayout", "iias", "0", "-1", "0"],
    );
    let children = reply["data"][1][2].as_array().unwrap().clone();
    children
        .iter()
        .filter_map(|child| {
            let item = &child["data"];
            let id = item[0].as_i64()?;
            let label = item[1]["label"]["data"].as_str()?.to_owned();
            Some((label, id))
        })
        .collect()
}

fn click(address: &str, name: &str, id: i64) {
    let id = id.to_string();
    busctl(
        address,
        &["call", name, "/MenuBar", "com.canonical.dbusmenu", "Event", "isvu", &id, "clicked", "s", "", "0"],
    );
}

/// `dbus-daemon` and `busctl` present; otherwise skip (fail under `MC_REQUIRE_NOTIFY_SERVERS=1`,
/// which `.ci/run` sets after installing them).
fn tools_present() -> bool {
    let ok = ["dbus-daemon", "busctl"].iter().all(|tool| {
        Command::new(tool).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    if !ok {
        assert!(
            std::env::var("MC_REQUIRE_NOTIFY_SERVERS").map_or(true, |v| v != "1"),
            "MC_REQUIRE_NOTIFY_SERVERS=1 but dbus-daemon or busctl is missing"
        );
        eprintln!("SKIPPED: dbus-daemon (Debian dbus) or busctl (systemd) is not installed");
    }
    ok
}

#[test]
fn the_item_registers_reflects_set_state_and_maps_menu_clicks() {
    if !tools_present() {
        return;
    }
    // (Without a session bus: tests/no_bus.rs, its own process: libdbus reads the address once.)
    let dir = std::env::temp_dir().join(format!("mc-tray-sni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("bus");
    let bus = start_bus(&socket);
    // The address without the daemon's guid, so the restarted daemon below is accepted too.
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", socket.display())) };
    let registered = fake_watcher();
    // The watcher owns its name before the item starts (a running panel).
    eventually("the fake watcher", || {
        busctl(
            &bus.address,
            &[
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.kde.StatusNotifierWatcher",
            ],
        )["data"][0]
            == serde_json::Value::Bool(true)
    });

    let (actions_tx, actions) = channel();
    let actions_tx = std::sync::Mutex::new(actions_tx);
    let tray = Tray::start(Box::new(move |action| {
        let _ = actions_tx.lock().unwrap().send(action);
    }))
    .expect("a session bus exists");
    let name = registered.recv_timeout(Duration::from_secs(10)).expect("the item registers with the watcher");
    assert!(name.starts_with("org.kde.StatusNotifierItem-"), "{name}");

    assert_eq!(property(&bus.address, &name, "Id"), "mini-connector");
    assert_eq!(property(&bus.address, &name, "Category"), "ApplicationStatus");

    tray.set_state(Indicator::Disconnected, "gateway unreachable: connection refused", false);
    eventually("the red state", || {
        property(&bus.address, &name, "ToolTip")[2] == "Mini Connector — Disconnected"
    });
    let tooltip = property(&bus.address, &name, "ToolTip");
    assert_eq!(tooltip[3], "gateway unreachable: connection refused");
    assert_eq!(property(&bus.address, &name, "Status"), "NeedsAttention");
    let pixmap = property(&bus.address, &name, "IconPixmap");
    let (w, h) = (pixmap[0][0].as_i64().unwrap(), pixmap[0][1].as_i64().unwrap());
    assert_eq!((w, h), (32, 32));
    let data: Vec<u8> = pixmap[0][2].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    let centre = ((16 * 32 + 16) * 4) as usize;
    assert_eq!(&data[centre..centre + 4], &[0xFF, 0xD6, 0x45, 0x45], "ARGB of the red dot's centre");

    tray.set_state(Indicator::Connected, "Connected to console.example.com", false);
    eventually("the green state", || property(&bus.address, &name, "Status") == "Active");
    let labels: Vec<String> = menu(&bus.address, &name).into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["Open Dashboard", "Pause", "View Last Activity", "Reconnect", "Exit"]);

    tray.set_state(Indicator::Paused, "Paused by the operator", true);
    eventually("the Resume label", || menu(&bus.address, &name).iter().any(|(l, _)| l == "Resume"));
    let pixmap = property(&bus.address, &name, "IconPixmap");
    let grey: Vec<u8> = pixmap[0][2].as_array().unwrap()[centre..centre + 4]
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(grey, [0xFF, 0x8A, 0x8F, 0x98]);

    let expected = [
        ("Open Dashboard", TrayAction::OpenDashboard),
        ("Resume", TrayAction::TogglePause),
        ("View Last Activity", TrayAction::ViewLastActivity),
        ("Reconnect", TrayAction::Reconnect),
        ("Exit", TrayAction::Exit),
    ];
    let items = menu(&bus.address, &name);
    for (label, action) in expected {
        let id = items.iter().find(|(l, _)| l == label).unwrap().1;
        click(&bus.address, &name, id);
        assert_eq!(actions.recv_timeout(Duration::from_secs(5)).unwrap(), action, "{label}");
    }
    // A left click on the icon opens the dashboard.
    busctl(
        &bus.address,
        &["call", &name, "/StatusNotifierItem", "org.kde.StatusNotifierItem", "Activate", "ii", "0", "0"],
    );
    assert_eq!(actions.recv_timeout(Duration::from_secs(5)).unwrap(), TrayAction::OpenDashboard);

    // Reconnecting spins: the icon changes by itself over time.
    tray.set_state(Indicator::Reconnecting, "Reconnecting in 2 s", false);
    eventually("the blue state", || {
        property(&bus.address, &name, "ToolTip")[2] == "Mini Connector — Reconnecting"
    });
    let first = property(&bus.address, &name, "IconPixmap");
    eventually("the next frame", || property(&bus.address, &name, "IconPixmap") != first);

    // The bus daemon restarts: the item's connection fails, the tray starts a fresh service
    // (a new name), registers it with the new bus's watcher and keeps its state. (A panic inside
    // ksni — it asserts on a dbusmenu `Event` on the root item — is not caught: release builds
    // abort on a panic; see src/linux.rs.)
    drop(bus);
    let bus = start_bus(&socket);
    let registered = fake_watcher();
    let again = registered.recv_timeout(Duration::from_secs(10)).expect("the item registers again");
    assert!(again.starts_with("org.kde.StatusNotifierItem-"), "{again}");
    assert_ne!(again, name);
    eventually("the restarted item's state", || {
        property(&bus.address, &again, "ToolTip")[3] == "Reconnecting in 2 s"
    });
    // Its menu still maps clicks.
    let id = menu(&bus.address, &again).iter().find(|(l, _)| l == "Open Dashboard").unwrap().1;
    click(&bus.address, &again, id);
    assert_eq!(actions.recv_timeout(Duration::from_secs(5)).unwrap(), TrayAction::OpenDashboard);

    // Dropping the tray removes the item from the bus.
    drop(tray);
    eventually("the item to leave the bus", || {
        busctl(
            &bus.address,
            &[
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                &again,
            ],
        )["data"][0]
            == serde_json::Value::Bool(false)
    });
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}
