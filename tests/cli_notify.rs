//! Notifications (spec §8.3) against real servers: email to a real SMTP server (aiosmtpd from
//! PyPI, `scripts/smtp-test-server.py`) with STARTTLS or implicit TLS and AUTH, the password
//! taken from the vault; desktop notifications to a real notification daemon (dunst) on a
//! private session bus under Xvfb. Without those programs the tests say so and pass, unless
//! `MC_REQUIRE_NOTIFY_SERVERS=1` (scripts/test.sh sets it after installing them).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mini_connector::config::AgentConfig;
use mini_connector::protocol::control::{
    ActivityEntry, AgentEvent, Indicator, LinkState, Outcome, StatusSnapshot,
};
use serde_json::{Value, json};

use crate::cli_configure::{Run, Sandbox};

const URL: &str = "wss://console.example.com/ws";
const SMTP_USER: &str = "alerts@example.com";
const SMTP_PASSWORD: &str = "Smtp-pa55word-n0t-for-logs";

fn required() -> bool {
    std::env::var("MC_REQUIRE_NOTIFY_SERVERS").is_ok_and(|v| v == "1")
}

/// Whether `program args` runs; otherwise skip (or fail when the servers are required).
fn have(what: &str, program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!required(), "MC_REQUIRE_NOTIFY_SERVERS=1 but {what} is missing");
        eprintln!("SKIPPED: {what} is not installed (scripts/test.sh installs it)");
    }
    ok
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Smtp {
    _proc: Proc,
    port: u16,
    maildir: PathBuf,
    /// The server's self-signed certificate (PEM), for `caCertPath`.
    cert: PathBuf,
}

impl Smtp {
    fn start(dir: &Path, mode: &str) -> Smtp {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.join(format!("cert-{mode}.pem")), dir.join(format!("key-{mode}.pem")));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let maildir = dir.join(format!("mail-{mode}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp-test-server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--mode", mode, "--user", SMTP_USER, "--password", SMTP_PASSWORD])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--maildir")
            .arg(&maildir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .parse()
            .unwrap();
        Smtp { _proc: Proc(child), port, maildir, cert }
    }

    /// The messages received so far, in order.
    fn mails(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for n in 1.. {
            match std::fs::read_to_string(self.maildir.join(format!("{n}.json"))) {
                Ok(text) => out.push(serde_json::from_str(&text).unwrap()),
                Err(_) => return out,
            }
        }
        out
    }

    fn wait_mails(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return mails;
            }
            assert!(Instant::now() < deadline, "{count} mail(s) expected, got {mails:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn smtp_available() -> bool {
    have("python3 with aiosmtpd (pip install aiosmtpd)", "python3", &["-c", "import aiosmtpd"])
}

/// A configured sandbox whose `notifications.email` points at `smtp`.
fn configured(tag: &str, smtp: &Smtp, tls: &str, extra: Value) -> Sandbox {
    let sandbox = Sandbox::new(tag);
    sandbox.configure(URL);
    let mut config = sandbox.config_json();
    // Explicit vault directories, so this test process (the library) and the binary agree.
    config["vaultDir"] = json!(sandbox.path("vault"));
    config["vaultKeyDir"] = json!(sandbox.path("vault-keys"));
    let mut notifications = json!({
        "email": {
            "smtpHost": "127.0.0.1",
            "smtpPort": smtp.port,
            "tls": tls,
            "username": SMTP_USER,
            "caCertPath": smtp.cert,
            "from": "Mini Connector <alerts@example.com>",
            "to": ["ops@example.com", "oncall@example.com"]
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        notifications[k] = v.clone();
    }
    config["notifications"] = notifications;
    std::fs::write(&sandbox.config, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    sandbox
}

/// Runs the binary with no session bus (desktop notifications skipped deterministically).
fn run(sandbox: &Sandbox, args: &[&str], stdin: Option<&str>) -> Run {
    run_env(sandbox, args, stdin, &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")])
}

fn run_env(sandbox: &Sandbox, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let home = sandbox.dir.0.join("home");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini-connector"))
        .args(args)
        .env("MINI_CONNECTOR_CONFIG", &sandbox.config)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env_remove("STATE_DIRECTORY")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The password is in no file of the sandbox in clear (config, vault, logs) and not in `texts`.
fn assert_password_nowhere(sandbox: &Sandbox, texts: &[&str]) {
    for text in texts {
        assert!(!text.contains(SMTP_PASSWORD), "the SMTP password leaked: {text}");
    }
    let mut stack = vec![sandbox.dir.0.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let needle = SMTP_PASSWORD.as_bytes();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "the SMTP password is in clear in {}",
                    path.display()
                );
            }
        }
    }
}

fn header<'a>(mail: &'a Value, name: &str) -> &'a str {
    let content = mail["content"].as_str().unwrap();
    content
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in {content}"))
}

#[test]
fn notify_test_mails_over_starttls_with_the_vault_password_and_leaks_it_nowhere() {
    if !smtp_available() {
        return;
    }
    let dir = crate::support::TempDir::new("notify-smtp");
    let smtp = Smtp::start(&dir.0, "starttls");
    let sandbox = configured("notify-starttls", &smtp, "starttls", json!({}));

    // Without a stored password: a clear error naming the fix, nothing sent.
    let missing = run(&sandbox, &["notify", "test"], None);
    assert_eq!(missing.code, Some(2), "{missing:?}");
    assert!(missing.stderr.contains("notify set-password"), "{missing:?}");

    let stored =
        run(&sandbox, &["notify", "set-password", "--password-stdin"], Some(&format!("{SMTP_PASSWORD}\n")))
            .ok();
    assert!(stored.stdout.contains("smtp:password"), "{stored:?}");

    let sent = run(&sandbox, &["notify", "test", "--event", "command-failed"], None).ok();
    assert!(sent.stdout.contains("email: sent"), "{sent:?}");
    assert!(sent.stdout.contains("desktop: skipped"), "no session bus here: {sent:?}");

    let mails = smtp.wait_mails(1);
    let mail = &mails[0];
    assert_eq!(mail["tls"], true, "STARTTLS was used: {mail}");
    assert!(mail["tlsVersion"].as_str().unwrap().starts_with("TLSv1."), "{mail}");
    assert_eq!(mail["authLogin"], SMTP_USER, "AUTH succeeded with the vault's password");
    assert_eq!(mail["mailFrom"], "alerts@example.com");
    assert_eq!(mail["rcptTos"], json!(["ops@example.com", "oncall@example.com"]));
    assert_eq!(header(mail, "Subject"), "[Mini Connector: Warehouse] Test: Command failed");
    let content = mail["content"].as_str().unwrap();
    assert!(content.contains("This is a test notification from Mini Connector `Warehouse`"), "{content}");
    assert!(content.contains("Event: Command failed"), "{content}");

    // The config holds no password, only (by default) nothing: the vault is implied.
    assert!(sandbox.config_json()["notifications"]["email"].get("password").is_none());

    // A wrong password: AUTH fails, the error says so, and the wrong password is not echoed.
    let wrong = "Wr0ng-smtp-passw0rd-xyz";
    run(&sandbox, &["notify", "set-password", "--password-stdin"], Some(&format!("{wrong}\n"))).ok();
    let refused = run(&sandbox, &["notify", "test"], None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stdout.contains("email: FAILED"), "{refused:?}");
    assert!(!refused.stdout.contains(wrong) && !refused.stderr.contains(wrong), "{refused:?}");
    assert_eq!(smtp.mails().len(), 1, "nothing more was accepted");
    let failures = std::fs::read_to_string(smtp.maildir.join("auth-failures.log")).unwrap();
    assert!(failures.contains(SMTP_USER), "{failures}");

    run(&sandbox, &["notify", "set-password", "--password-stdin"], Some(&format!("{SMTP_PASSWORD}\n"))).ok();
    assert_password_nowhere(
        &sandbox,
        &[&missing.stderr, &sent.stdout, &sent.stderr, &refused.stdout, &refused.stderr],
    );
}

#[test]
fn implicit_tls_works_and_starttls_is_required_not_optional() {
    if !smtp_available() {
        return;
    }
    let dir = crate::support::TempDir::new("notify-smtps");
    let smtps = Smtp::start(&dir.0, "implicit");
    let sandbox = configured("notify-implicit", &smtps, "implicit", json!({}));
    run(&sandbox, &["notify", "set-password", "--password-stdin"], Some(&format!("{SMTP_PASSWORD}\n"))).ok();
    let sent = run(&sandbox, &["notify", "test", "--event", "queue-disk-warning"], None).ok();
    assert!(sent.stdout.contains("email: sent"), "{sent:?}");
    let mail = &smtps.wait_mails(1)[0];
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["authLogin"], SMTP_USER);
    assert_eq!(header(mail, "Subject"), "[Mini Connector: Warehouse] Test: Queue disk warning");

    // A server that offers no STARTTLS: `starttls` refuses to go on in clear (no AUTH, no mail).
    let plain = Smtp::start(&dir.0, "plain");
    let clear = configured("notify-plain", &plain, "starttls", json!({}));
    run(&clear, &["notify", "set-password", "--password-stdin"], Some(&format!("{SMTP_PASSWORD}\n"))).ok();
    let refused = run(&clear, &["notify", "test"], None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stdout.contains("email: FAILED"), "{refused:?}");
    assert!(plain.mails().is_empty());
    assert!(!plain.maildir.join("auth-failures.log").exists(), "no AUTH was attempted in clear");

    // A certificate the client does not trust: refused.
    let mut config = clear.config_json();
    config["notifications"]["email"]["smtpPort"] = json!(smtps.port);
    config["notifications"]["email"]["tls"] = json!("implicit");
    config["notifications"]["email"].as_object_mut().unwrap().remove("caCertPath");
    std::fs::write(&clear.config, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let untrusted = run(&clear, &["notify", "test"], None);
    assert_eq!(untrusted.code, Some(1), "{untrusted:?}");
    assert_eq!(smtps.mails().len(), 1);

    // `none-localhost-only` to a remote host is a configuration error naming the field.
    config["notifications"]["email"]["tls"] = json!("none-localhost-only");
    config["notifications"]["email"]["smtpHost"] = json!("smtp.example.com");
    std::fs::write(&clear.config, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let bad = run(&clear, &["notify", "test"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("`notifications`") && bad.stderr.contains("email.tls"), "{bad:?}");
}

fn snapshot(state: LinkState, disconnected_since: Option<String>) -> StatusSnapshot {
    let connected = state == LinkState::Connected;
    StatusSnapshot {
        connected,
        paused: false,
        connector_name: "Warehouse".into(),
        cloud_url: URL.into(),
        agent_version: "0.1.0".into(),
        instance_id: "i".into(),
        disconnected_since,
        ..StatusSnapshot::new(state, if connected { Indicator::Connected } else { Indicator::Disconnected })
    }
}

#[test]
fn the_agent_side_threads_mail_a_long_outage_and_one_mail_for_a_burst_of_failures() {
    if !smtp_available() {
        return;
    }
    let dir = crate::support::TempDir::new("notify-agent");
    let smtp = Smtp::start(&dir.0, "starttls");
    let sandbox = configured(
        "notify-agent",
        &smtp,
        "starttls",
        json!({"events": {"commandFailed": {"email": true, "desktop": false}, "connectionLost": {"desktop": false}}}),
    );
    let config = AgentConfig::load(&sandbox.config).unwrap();
    // No SMTP password stored yet: the agent's notification threads still start (email off,
    // with a warning), they never stop the agent.
    mini_connector::notify::spawn(&config).expect("starts without a password").shutdown();

    run(&sandbox, &["notify", "set-password", "--password-stdin"], Some(&format!("{SMTP_PASSWORD}\n"))).ok();
    let sender = mini_connector::notify::spawn(&config).unwrap();
    let six_minutes_ago =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(360));
    sender.send(AgentEvent::Status(Box::new(snapshot(
        LinkState::Disconnected,
        Some(six_minutes_ago.to_string()),
    ))));
    let lost = smtp.wait_mails(1);
    assert_eq!(header(&lost[0], "Subject"), "[Mini Connector: Warehouse] Connection lost");
    assert!(lost[0]["content"].as_str().unwrap().contains("disconnected from the cloud for 6 minutes"));
    sender.send(AgentEvent::Status(Box::new(snapshot(LinkState::Connected, None))));
    let restored = smtp.wait_mails(2);
    assert_eq!(header(&restored[1], "Subject"), "[Mini Connector: Warehouse] Connection restored");

    for i in 0..25 {
        sender.send(AgentEvent::Activity(ActivityEntry {
            command_id: format!("cmd-{i}"),
            received_at: "2027-01-15T08:00:00Z".into(),
            finished_at: None,
            connection: Some("erp".into()),
            workflow: None,
            outcome: Outcome::Failed { code: "DB_ERROR".into() },
            rows: None,
            duration_ms: None,
            bytes: None,
        }));
    }
    let mails = smtp.wait_mails(3);
    assert_eq!(header(&mails[2], "Subject"), "[Mini Connector: Warehouse] A workflow command failed");
    assert!(
        mails[2]["content"]
            .as_str()
            .unwrap()
            .contains("Command cmd-0 on connection `erp` failed with DB_ERROR.")
    );
    sender.shutdown();
    assert_eq!(
        smtp.mails().len(),
        3,
        "25 failures in a burst are one mail (the rest are counted for the summary)"
    );
}

#[test]
fn notify_test_shows_a_desktop_notification_on_a_real_notification_daemon() {
    if !have("dbus-daemon (Debian dbus)", "dbus-daemon", &["--version"])
        || !have("dunst (Debian dunst)", "dunst", &["-v"])
        || !have("Xvfb (Debian xvfb)", "sh", &["-c", "command -v Xvfb"])
    {
        return;
    }
    let sandbox = Sandbox::new("notify-desktop");
    sandbox.configure(URL);
    // A private X display and session bus; dunst owns org.freedesktop.Notifications on it.
    let display = format!(":{}", 150 + std::process::id() % 100);
    let _xvfb = Proc(
        Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "640x480x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
    let _bus = Proc(bus);
    let address = address.trim().to_owned();
    let env = [("DBUS_SESSION_BUS_ADDRESS", address.as_str()), ("DISPLAY", display.as_str())];
    let dunstrc = sandbox.path("dunstrc");
    std::fs::write(&dunstrc, "[global]\n    history_length = 20\n").unwrap();
    let _dunst = Proc(
        Command::new("dunst")
            .arg("-config")
            .arg(&dunstrc)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready when dunst owns the notifications name.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owned = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .envs(env)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&owned.stdout).contains("boolean true") {
            break;
        }
        assert!(Instant::now() < deadline, "dunst did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = run_env(&sandbox, &["notify", "test", "--event", "schema-change"], None, &env).ok();
    assert!(sent.stdout.contains("desktop: sent"), "{sent:?}");
    assert!(sent.stdout.contains("email: skipped"), "{sent:?}");
    // What the daemon shows and keeps: `dunstctl history` (JSON), after closing it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = Command::new("dunstctl").arg("close-all").envs(env).output();
        let history = Command::new("dunstctl").arg("history").envs(env).output().unwrap();
        let text = String::from_utf8_lossy(&history.stdout);
        if text.contains("Test: Schema change") {
            let json: Value = serde_json::from_str(&text).unwrap();
            let entry = &json["data"][0][0];
            assert_eq!(entry["appname"]["data"], "Mini Connector");
            assert_eq!(entry["summary"]["data"], "Test: Schema change");
            assert!(entry["body"]["data"].as_str().unwrap().contains("This is a test notification"));
            break;
        }
        assert!(Instant::now() < deadline, "the notification never reached dunst: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
