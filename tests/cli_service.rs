//! `service install|status|uninstall` into a temporary unit directory (no systemctl calls):
//! the unit runs this binary with this configuration, passes `systemd-analyze verify` where
//! that tool exists, and `status` notices a registration for another binary.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

use crate::cli_configure::Sandbox;

#[test]
fn service_install_status_and_uninstall_in_a_unit_dir() {
    let sandbox = Sandbox::new("service");
    sandbox.configure("wss://console.example.com/ws");
    let units = sandbox.path("units");
    let units_arg = units.to_str().unwrap();

    let out = sandbox.run(&["service", "status", "--unit-dir", units_arg, "--json"], None);
    assert_eq!(out.code, Some(3), "not registered yet: {out:?}");
    assert_eq!(out.json()["registered"], false);

    sandbox.run(&["service", "install", "--unit-dir", units_arg, "--no-start"], None).ok();
    let unit_path = units.join("mini-connector.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_mini-connector")).canonicalize().unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" start --config \"{}\"",
            exe.display(),
            sandbox.config.display()
        )),
        "{unit}"
    );
    assert!(!unit.contains("{{"), "every placeholder filled");
    assert!(unit.contains("User=mini-connector") && unit.contains("Restart=on-failure"));
    assert!(!unit.lines().any(|l| l.starts_with("ExecStop")), "systemd signals the agent itself");
    verify_unit(&unit_path);

    let status = sandbox.run(&["service", "status", "--unit-dir", units_arg, "--json"], None).ok().json();
    assert_eq!(status["manager"], "systemd");
    assert_eq!(status["registered"], true);
    assert_eq!(status["pathMatches"], true);
    assert_eq!(status["exe"], exe.to_str().unwrap());
    assert_eq!(status["config"], sandbox.config.to_str().unwrap());
    assert_eq!(status["agentRunning"], false);

    // A unit that runs another binary is reported (exit 1).
    std::fs::write(&unit_path, unit.replace(exe.to_str().unwrap(), "/usr/bin/true")).unwrap();
    let out = sandbox.run(&["service", "status", "--unit-dir", units_arg, "--json"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["pathMatches"], false);

    sandbox.run(&["service", "uninstall", "--unit-dir", units_arg], None).ok();
    assert!(!unit_path.exists());
    let out = sandbox.run(&["service", "status", "--unit-dir", units_arg], None);
    assert_eq!(out.code, Some(3), "{out:?}");
    // Uninstalling twice is fine.
    sandbox.run(&["service", "uninstall", "--unit-dir", units_arg], None).ok();
}

#[test]
fn service_install_needs_a_valid_configuration_and_user() {
    let sandbox = Sandbox::new("service-bad");
    let units = sandbox.path("units");
    let out = sandbox.run(&["service", "install", "--unit-dir", units.to_str().unwrap()], None);
    assert_eq!(out.code, Some(2), "no configuration: {out:?}");
    sandbox.configure("wss://console.example.com/ws");
    let out = sandbox
        .run(&["service", "install", "--unit-dir", units.to_str().unwrap(), "--user", "Bad User"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(!units.join("mini-connector.service").exists());
}

/// `systemd-analyze verify` on the generated unit, where the tool exists.
fn verify_unit(unit: &Path) {
    let out = match Command::new("systemd-analyze").arg("verify").arg(unit).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipping `systemd-analyze verify`: {e}");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    // verify exits 0 for some complaints; none may be about our unit.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("mini-connector.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify complained: {ours:?}");
}
