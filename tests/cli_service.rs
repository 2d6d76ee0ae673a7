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

/// Issue 13: `service install --unit-dir` wrote the template's "TEMPLATE" comment and a unit
/// that could not start as written (no user, the vault and control socket where the service
/// cannot reach them, the configuration under /tmp). The written unit is a finished unit, and
/// the command lists exactly what else must be done before it can start.
#[test]
fn service_install_unit_dir_writes_a_finished_unit_and_lists_what_is_missing() {
    let sandbox = Sandbox::new("service-unit-dir");
    sandbox.configure("wss://console.example.com/ws");
    let units = sandbox.path("units");
    let user = "mc-no-such-user";
    let out = sandbox
        .run(&["service", "install", "--unit-dir", units.to_str().unwrap(), "--user", user], None)
        .ok();
    let unit_path = units.join("mini-connector.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(!unit.contains("TEMPLATE") && !unit.contains("{{"), "a finished unit: {unit}");
    assert!(
        unit.starts_with("# Mini Connector agent, written by `mini-connector service install`"),
        "{unit}"
    );
    let values = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_owned).collect()
    };
    assert_eq!(values("User"), [user]);
    assert_eq!(values("Group"), [user]);
    assert_eq!(values("StateDirectory"), ["mini-connector"]);
    assert_eq!(values("LogsDirectory"), ["mini-connector"]);
    assert_eq!(values("RuntimeDirectory"), ["mini-connector"]);
    let exec = values("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(exec[0].ends_with(&format!("start --config \"{}\"", sandbox.config.display())), "{exec:?}");
    verify_unit(&unit_path);

    // What is still missing, as commands and values, not as a hint.
    let text = &out.stdout;
    assert!(text.contains("before this unit can start"), "{text}");
    assert!(
        text.contains(&format!(
            "sudo useradd --system --user-group --home-dir /var/lib/mini-connector --no-create-home --shell /usr/sbin/nologin {user}"
        )),
        "the account does not exist: {text}"
    );
    assert!(text.contains("PrivateTmp=yes"), "the configuration is under /tmp: {text}");
    for pin in [
        "\"vaultDir\": \"/var/lib/mini-connector/vault\"",
        "\"vaultKeyDir\": \"/var/lib/mini-connector/vault-keys\"",
        "\"controlSocket\": \"/run/mini-connector/agent.sock\"",
        "\"logDir\": \"/var/log/mini-connector\"",
    ] {
        assert!(text.contains(pin), "{pin} is not set in the configuration: {text}");
    }
    assert!(
        text.contains(&format!(
            "sudo install -m 0644 {} /etc/systemd/system/mini-connector.service",
            unit_path.display()
        )),
        "{text}"
    );
    assert!(text.contains("sudo systemctl enable --now mini-connector"), "{text}");
}
