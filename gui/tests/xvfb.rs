//! The app under Xvfb, driven with real input events: the preview (scripted backend) walks
//! the wizard and every section, a screenshot of each lands in `target/screenshots/`, and the
//! window's title and status-dot pixels prove the state changes (red → green → grey → green).
//! Skips, saying why, when Xvfb/xdotool/ImageMagick are missing, unless `MC_REQUIRE_GUI` is set.

use std::path::PathBuf;
use std::time::Duration;

use gui::harness::{self, WizardInputs, XServer};

fn preview() -> PathBuf {
    if let Some(p) = std::env::var_os("MC_GUI_PREVIEW") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/tests-… → target/<profile>/examples/preview (cargo test builds it).
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    dir.join("examples").join(if cfg!(windows) { "preview.exe" } else { "preview" })
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

#[test]
fn dashboard_goes_red_green_grey_and_every_section_is_photographed() {
    if harness::skip_or_fail().is_err() {
        return;
    }
    let xs = XServer::start().expect("Xvfb");
    let dir = scratch("dashboard");
    let state = dir.join("state");
    let _app = xs
        .launch(
            preview(),
            &["--red-secs", "3", "--state-dir", state.to_str().unwrap()],
            &[],
            &dir.join("app.log"),
        )
        .expect("launch the preview");
    let report = harness::walk_dashboard(&xs, &shots_dir(), true, &mut || {}).unwrap_or_else(|e| {
        panic!("{e}\napp log:\n{}", std::fs::read_to_string(dir.join("app.log")).unwrap_or_default())
    });
    let labels: Vec<&str> = report.states.iter().map(|(t, _)| t.split(" · ").next().unwrap_or("")).collect();
    assert_eq!(
        labels,
        [
            "Mini Connector — Disconnected",
            "Mini Connector — Connected",
            "Mini Connector — Paused",
            "Mini Connector — Connected"
        ]
    );
    let colours: Vec<u32> = report.states.iter().map(|(_, c)| *c).collect();
    assert!(harness::close_to(colours[0], 0xD64545, 10), "{colours:06X?}");
    assert!(harness::close_to(colours[2], 0x8A8F98, 10), "{colours:06X?}");
    assert!(report.shots.len() >= 10, "a shot per state and per section: {:?}", report.shots);
    for s in &report.shots {
        assert!(std::fs::metadata(s).map(|m| m.len() > 10_000).unwrap_or(false), "{} is empty", s.display());
    }
}

fn inputs() -> WizardInputs {
    WizardInputs {
        api_key: protocol::ApiKey::generate("acme").unwrap().expose().to_owned(),
        connector_name: "Warehouse SAP".into(),
        connection: "erp".into(),
        host: "db.acme.local".into(),
        port: String::new(),
        database: "erp".into(),
        user: "mc_reader".into(),
        password: "correct-horse".into(),
    }
}

#[test]
fn wizard_walks_four_steps_resumes_after_a_restart_and_opens_the_dashboard() {
    if harness::skip_or_fail().is_err() {
        return;
    }
    let xs = XServer::start().expect("Xvfb");
    let dir = scratch("wizard");
    let state = dir.join("state");
    let args = ["--wizard", "--red-secs", "1", "--state-dir", state.to_str().unwrap()];
    let shots = shots_dir();
    let input = inputs();
    {
        let mut app = xs.launch(preview(), &args, &[], &dir.join("app1.log")).expect("launch the preview");
        // Steps 1 and 2, then the user types into step 3 and closes the app half-way.
        harness::walk_wizard(&xs, &shots, &input, Some(3)).unwrap_or_else(|e| {
            panic!("{e}\napp log:\n{}", std::fs::read_to_string(dir.join("app1.log")).unwrap_or_default())
        });
        app.kill();
    }
    let progress = std::fs::read_to_string(state.join("wizard-progress.json")).expect("progress saved");
    assert!(progress.contains("\"step\": \"database\""), "{progress}");
    assert!(
        !progress.contains(&input.api_key) && !progress.contains(&input.password),
        "no secrets: {progress}"
    );

    let mut app = xs.launch(preview(), &args, &[], &dir.join("app2.log")).expect("relaunch");
    let id = xs.wait_window(harness::WIZARD_TITLE, Duration::from_secs(30)).expect("wizard again");
    let title = xs.wait_title(&id, "Step 3 of 4", Duration::from_secs(10)).expect("reopened at step 3");
    assert!(title.contains("Add database"), "{title}");
    harness::walk_wizard(&xs, &shots, &input, None).unwrap_or_else(|e| {
        panic!("{e}\napp log:\n{}", std::fs::read_to_string(dir.join("app2.log")).unwrap_or_default())
    });
    assert!(!xs.has_window(harness::WIZARD_TITLE), "the wizard closed");
    let progress = std::fs::read_to_string(state.join("wizard-progress.json")).unwrap();
    assert!(progress.contains("\"finished\": true"), "{progress}");
    assert!(app.running());
}

#[test]
fn the_pin_gate_guards_adding_a_connection() {
    if harness::skip_or_fail().is_err() {
        return;
    }
    let xs = XServer::start().expect("Xvfb");
    let dir = scratch("pin");
    let state = dir.join("state");
    let _app = xs
        .launch(
            preview(),
            &["--pin", "--red-secs", "0", "--state-dir", state.to_str().unwrap()],
            &[],
            &dir.join("app.log"),
        )
        .expect("launch the preview");
    let id = xs.wait_window(harness::DASHBOARD_TITLE, Duration::from_secs(30)).expect("dashboard");
    let (x, y) = gui::model::layout::nav_center(gui::model::Section::Connections.index());
    xs.click_until(&id, (x, y), "· Connections", Duration::from_secs(10)).expect("Connections");
    let (ox, oy) = xs.origin(&id).unwrap();
    // A point inside the add form's tinted security notice, right of its text.
    let notice = (ox + 204 + 600, oy + 96 + 228 + 4 * 50 + 8 + 6);
    let notice_shown = |name: &str| {
        std::thread::sleep(Duration::from_millis(400));
        let shot = xs.screenshot(&dir.join(name)).unwrap();
        harness::close_to(harness::pixel(&shot, notice.0, notice.1).unwrap(), 0xEAF3EC, 4)
    };
    let add = (204 + 64, 96 + 175);

    let answer = |pin: &str| {
        let dialog = xs.wait_window(harness::DIALOG_TITLE, Duration::from_secs(10)).expect("PIN prompt");
        xs.click(&dialog, 200, 48).unwrap();
        xs.type_text(pin).unwrap();
        xs.key("Return").unwrap();
    };
    xs.click(&id, add.0, add.1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!notice_shown("pin-1-asked.png"), "nothing opens before the PIN");
    answer("0000");
    // The same dialog window comes back as the "not right" alert: close it with Return.
    std::thread::sleep(Duration::from_millis(1000));
    let alert = xs.wait_window(harness::DIALOG_TITLE, Duration::from_secs(10)).expect("wrong-PIN alert");
    xs.click(&alert, 200, 30).unwrap();
    xs.key("Return").unwrap();
    xs.wait_no_window(harness::DIALOG_TITLE, Duration::from_secs(10)).expect("alert closed");
    assert!(!notice_shown("pin-2-wrong.png"), "a wrong PIN opens nothing");

    xs.click(&id, add.0, add.1).unwrap();
    answer("2468");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !notice_shown("pin-3-right.png") {
        assert!(
            std::time::Instant::now() < deadline,
            "the right PIN opens the add form (see pin-3-right.png)"
        );
    }
}

#[test]
fn export_diagnostic_bundle_saves_into_documents() {
    if harness::skip_or_fail().is_err() {
        return;
    }
    let xs = XServer::start().expect("Xvfb");
    let dir = scratch("bundle");
    let home = dir.join("home");
    std::fs::create_dir_all(home.join("Documents")).unwrap();
    let state = dir.join("state");
    let _app = xs
        .launch(
            preview(),
            &["--red-secs", "0.2", "--state-dir", state.to_str().unwrap()],
            &[("HOME", home.to_str().unwrap())],
            &dir.join("app.log"),
        )
        .expect("launch the preview");
    let log = || std::fs::read_to_string(dir.join("app.log")).unwrap_or_default();
    let id = xs
        .wait_window(harness::DASHBOARD_TITLE, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let diagnostics = gui::model::layout::nav_center(5);
    xs.click_until(&id, diagnostics, "· Diagnostics", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    // "Export diagnostic bundle…": the top right of the section.
    let (ww, _) = gui::model::layout::WINDOW;
    let button = (ww - 24 - 115, 96 + 14);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let saved = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(home.join("Documents"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("mini-connector-diag-"))
            .collect();
        if let Some(first) = found.first() {
            break first.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no bundle in Documents after clicking\n{}", log());
        xs.click(&id, button.0, button.1).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    };
    assert!(saved.to_string_lossy().ends_with("Z.zip"), "{}", saved.display());
    std::thread::sleep(Duration::from_millis(300));
    let shot = xs.screenshot(&shots_dir().join("16-diagnostics-bundle.png")).unwrap();
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);
}
