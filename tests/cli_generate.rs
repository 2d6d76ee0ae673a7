//! `generate completions|man|systemd-unit` (issue 13): what the packages install is generated
//! from the command-line definition, so it lists every command there is.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::cli_configure::Sandbox;

/// The visible subcommands, from `mini-connector --help`.
fn subcommands(sandbox: &Sandbox) -> Vec<String> {
    let help = sandbox.run(&["--help"], None).ok().stdout;
    let section = help.split("Commands:").nth(1).expect("a Commands: section");
    let names: Vec<String> = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(names.len() > 10, "{help}");
    names
}

#[test]
fn the_bash_completion_names_every_subcommand() {
    let sandbox = Sandbox::new("generate-bash");
    let script = sandbox.run(&["generate", "completions", "bash"], None).ok().stdout;
    assert!(script.contains("complete -F _mini__connector"), "a bash completion script");
    // The words offered after `mini-connector `.
    let top = script
        .lines()
        .find(|l| l.trim_start().starts_with("opts=\"-h -V --help --version"))
        .expect("the top-level word list");
    let offered: Vec<&str> =
        top.trim().trim_start_matches("opts=\"").trim_end_matches('"').split(' ').collect();
    for name in subcommands(&sandbox) {
        assert!(offered.contains(&name.as_str()), "{name} is missing: {top}");
    }
    // Subcommands of subcommands, and flags, too.
    assert!(script.contains("--unit-dir") && script.contains("mini__connector__subcmd__db__subcmd__add"));
    for shell in ["zsh", "fish", "powershell"] {
        let out = sandbox.run(&["generate", "completions", shell], None).ok();
        assert!(out.stdout.contains("service") && out.stdout.contains("configure"), "{shell}: {out:?}");
    }
    let out = sandbox.run(&["generate", "completions", "tcsh"], None);
    assert_eq!(out.code, Some(2), "an unknown shell is a usage error: {out:?}");
}

#[test]
fn the_man_pages_render() {
    let sandbox = Sandbox::new("generate-man");
    let page = sandbox.run(&["generate", "man"], None).ok().stdout;
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "roff: {}", &page[..page.len().min(200)]);
    assert!(page.contains(".TH mini-connector 1"), "{page}");
    let dir = sandbox.path("man");
    sandbox.run(&["generate", "man", "--out", dir.to_str().unwrap()], None).ok();
    for name in subcommands(&sandbox) {
        assert!(dir.join(format!("mini-connector-{name}.1")).is_file(), "no page for {name}");
    }
    // groff (what `man` runs) renders it without warnings, where it is installed.
    match Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(dir.join("mini-connector.1"))
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{out:?}");
            assert!(out.stderr.is_empty(), "groff warned: {}", String::from_utf8_lossy(&out.stderr));
            let text = Command::new("groff")
                .args(["-man", "-Tutf8"])
                .arg(dir.join("mini-connector-service.1"))
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("install") && text.contains("uninstall"), "{text}");
        }
        Err(e) => eprintln!("groff not installed ({e}): the roff text is checked only"),
    }
}

#[test]
fn the_packaged_systemd_unit_is_the_service_install_unit() {
    let sandbox = Sandbox::new("generate-unit");
    let exe = Path::new(env!("CARGO_BIN_EXE_mini-connector")).canonicalize().unwrap();
    let unit = sandbox.run(&["generate", "systemd-unit"], None).ok().stdout;
    assert!(unit.contains(
        "ExecStart=\"/usr/bin/mini-connector\" start --config \"/etc/mini-connector/config.json\""
    ));
    assert!(unit.contains("User=mini-connector") && !unit.contains("TEMPLATE") && !unit.contains("{{"));
    // Filled with a program that exists here, it passes `systemd-analyze verify`.
    let unit = sandbox
        .run(&["generate", "systemd-unit", "--exe", exe.to_str().unwrap(), "--user", "root"], None)
        .ok()
        .stdout;
    let path = sandbox.path("mini-connector.service");
    std::fs::write(&path, unit).unwrap();
    if let Ok(out) = Command::new("systemd-analyze").arg("verify").arg(&path).output() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("mini-connector.service"), "{stderr}");
    }
    let out = sandbox.run(&["generate", "systemd-unit", "--user", "Bad User"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
}
