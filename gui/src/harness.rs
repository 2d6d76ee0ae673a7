//! Drives a build of the desktop app under Xvfb with real input events (xdotool), takes
//! screenshots (ImageMagick `import -window root`) and reads pixels back (`convert`).
//!
//! Reusable for any binary that opens this crate's window: [`XServer::launch`] takes the
//! command and its environment, and [`walk_dashboard`] / [`walk_wizard`] run the standard
//! walk against it (the lead points them at `mini-connector` with a live agent and gateway).
//! Needs `Xvfb`, `xdotool` and ImageMagick; [`missing_tools`] says which are absent, and
//! [`skip_or_fail`] skips (printing why) unless `MC_REQUIRE_GUI` is set.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::GuiError;
use crate::model::Section;
use crate::model::layout;
use crate::ui::wizard::geometry as wiz;

fn err(msg: impl Into<String>) -> GuiError {
    GuiError::Harness(msg.into())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The tools the harness needs that are not on `PATH`.
pub fn missing_tools() -> Vec<&'static str> {
    ["Xvfb", "xdotool", "import", "convert"].into_iter().filter(|t| !on_path(t)).collect()
}

/// `Ok(())` when the GUI tests can run. When tools are missing: with `MC_REQUIRE_GUI` set,
/// an error naming them; otherwise prints the reason and returns `Err` for the caller to skip.
pub fn skip_or_fail() -> Result<(), String> {
    let missing = missing_tools();
    if missing.is_empty() {
        return Ok(());
    }
    let why = format!(
        "GUI test skipped: {} not installed (apt-get install xvfb xdotool imagemagick)",
        missing.join(", ")
    );
    if std::env::var_os("MC_REQUIRE_GUI").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("MC_REQUIRE_GUI is set but {why}");
    }
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{why}\n").as_bytes());
    Err(why)
}

/// A private X server (Xvfb) on a free display number; stopped on drop.
#[derive(Debug)]
pub struct XServer {
    display: String,
    child: Child,
}

impl XServer {
    /// Starts Xvfb (1280×800×24) on a free display number. Numbers are tried from a
    /// per-process offset upward; a server counts as ours only when the display's lock file
    /// names our child (other Xvfbs on this machine may listen on abstract sockets only).
    pub fn start() -> Result<Self, GuiError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = 100 + (std::process::id() % 400) * 2;
        for _ in 0..40 {
            let n = base + NEXT.fetch_add(1, Ordering::SeqCst) % 800;
            if Path::new(&format!("/tmp/.X{n}-lock")).exists()
                || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            {
                continue;
            }
            let display = format!(":{n}");
            let child = Command::new("Xvfb")
                // -noreset: without it the server resets when its last client (a probe) disconnects,
                // and a client connecting during the reset gets "Can't open display".
                .args([display.as_str(), "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut xs = Self { display, child };
            let pid = xs.child.id().to_string();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = xs.child.try_wait() {
                    break; // the number was taken after all: try the next
                }
                let ours = std::fs::read_to_string(format!("/tmp/.X{n}-lock")).is_ok_and(|l| l.trim() == pid);
                if ours && xs.xdotool(&["getmouselocation"]).is_ok() {
                    // Still ours a moment later (a server that lost a race exits at once).
                    thread::sleep(Duration::from_millis(200));
                    if matches!(xs.child.try_wait(), Ok(None)) && xs.xdotool(&["getmouselocation"]).is_ok() {
                        return Ok(xs);
                    }
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Err(err("Xvfb does not start on any free display"))
    }

    /// `:N`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Starts a program on this display with extra environment; killed when dropped.
    pub fn launch<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: &[S],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<AppProcess, GuiError> {
        let out = std::fs::File::create(log)?;
        let mut cmd = Command::new(program);
        cmd.args(args).env("DISPLAY", &self.display).stdout(out.try_clone()?).stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(AppProcess { child: cmd.spawn()? })
    }

    fn xdotool(&self, args: &[&str]) -> Result<String, GuiError> {
        let out = Command::new("xdotool").args(args).env("DISPLAY", &self.display).output()?;
        if !out.status.success() {
            return Err(err(format!(
                "xdotool {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Waits for a visible window whose title matches a regex; its id.
    pub fn wait_window(&self, title_regex: &str, timeout: Duration) -> Result<String, GuiError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(ids) = self.xdotool(&["search", "--onlyvisible", "--name", title_regex])
                && let Some(id) = ids.lines().next()
            {
                return Ok(id.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(err(format!("no window titled /{title_regex}/ within {timeout:?}")));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a visible window matches now.
    pub fn has_window(&self, title_regex: &str) -> bool {
        self.xdotool(&["search", "--onlyvisible", "--name", title_regex]).is_ok_and(|s| !s.is_empty())
    }

    /// Waits until no visible window matches a title regex.
    pub fn wait_no_window(&self, title_regex: &str, timeout: Duration) -> Result<(), GuiError> {
        let deadline = Instant::now() + timeout;
        while self.has_window(title_regex) {
            if Instant::now() >= deadline {
                return Err(err(format!("a window titled /{title_regex}/ is still open after {timeout:?}")));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A window's title.
    pub fn title(&self, id: &str) -> Result<String, GuiError> {
        self.xdotool(&["getwindowname", id])
    }

    /// Waits until a window's title contains `text`; the title.
    pub fn wait_title(&self, id: &str, text: &str, timeout: Duration) -> Result<String, GuiError> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.title(id).unwrap_or_default();
            if t.contains(text) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(err(format!("title never contained {text:?} within {timeout:?}; last: {t:?}")));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A window's position on the screen.
    pub fn origin(&self, id: &str) -> Result<(i32, i32), GuiError> {
        let out = self.xdotool(&["getwindowgeometry", "--shell", id])?;
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(format!("no {k} in {out}")))
        };
        Ok((get("X=")?, get("Y=")?))
    }

    /// A left click at window coordinates (a real pointer event).
    pub fn click(&self, id: &str, x: i32, y: i32) -> Result<(), GuiError> {
        self.xdotool(&["mousemove", "--window", id, &x.to_string(), &y.to_string()])?;
        thread::sleep(Duration::from_millis(40));
        self.xdotool(&["click", "1"])?;
        thread::sleep(Duration::from_millis(60));
        Ok(())
    }

    /// Types text into whatever has the keyboard focus (real key events).
    pub fn type_text(&self, text: &str) -> Result<(), GuiError> {
        self.xdotool(&["type", "--delay", "8", text]).map(drop)
    }

    /// Presses a key by its X keysym name (`Return`, `Tab`, `ctrl+a`).
    pub fn key(&self, keysym: &str) -> Result<(), GuiError> {
        self.xdotool(&["key", keysym]).map(drop)
    }

    /// Clicks a field and types into it.
    pub fn fill(&self, id: &str, at: (i32, i32), text: &str) -> Result<(), GuiError> {
        self.click(id, at.0, at.1)?;
        // Select what the field holds (a prefilled default port, say) and delete it.
        self.xdotool(&["key", "End", "shift+Home", "BackSpace"])?;
        self.type_text(text)
    }

    /// Saves the whole screen as PNG.
    pub fn screenshot(&self, path: &Path) -> Result<PathBuf, GuiError> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let st = Command::new("import")
            .args(["-window", "root"])
            .arg(path)
            .env("DISPLAY", &self.display)
            .status()?;
        if !st.success() {
            return Err(err(format!("import failed for {}", path.display())));
        }
        Ok(path.to_owned())
    }

    /// Clicks `at` until the window's title contains `text` (a button may still be disabled
    /// while a check runs).
    pub fn click_until(
        &self,
        id: &str,
        at: (i32, i32),
        text: &str,
        timeout: Duration,
    ) -> Result<String, GuiError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.click(id, at.0, at.1)?;
            if let Ok(t) = self.wait_title(id, text, Duration::from_millis(700)) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(err(format!("clicking {at:?} never led to a title with {text:?}")));
            }
        }
    }
}

impl Drop for XServer {
    fn drop(&mut self) {
        // SIGTERM first: Xvfb then removes its lock file and socket (SIGKILL leaves them).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A launched app; killed when dropped.
#[derive(Debug)]
pub struct AppProcess {
    child: Child,
}

impl AppProcess {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, GuiError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(err("the app did not exit"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pixel of a PNG as `0xRRGGBB` (ImageMagick `convert`).
pub fn pixel(png: &Path, x: i32, y: i32) -> Result<u32, GuiError> {
    let out = Command::new("convert")
        .arg(png)
        .args(["-format", &format!("%[hex:p{{{x},{y}}}]"), "info:"])
        .output()?;
    let hex = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    u32::from_str_radix(hex.get(..6).unwrap_or(&hex), 16)
        .map_err(|_| err(format!("no pixel at {x},{y} in {}: {hex:?}", png.display())))
}

/// Whether two colours are within `tol` per channel.
pub fn close_to(a: u32, b: u32, tol: u32) -> bool {
    [16, 8, 0].iter().all(|s| ((a >> s) & 0xFF).abs_diff((b >> s) & 0xFF) <= tol)
}

/// The dashboard window's title pattern (`Mini Connector — <state> · <section>`; xdotool's
/// regex does not match the em dash, hence "not the wizard").
pub const DASHBOARD_TITLE: &str = "^Mini Connector [^S]";
/// PIN prompts and confirmation dialogs.
pub const DIALOG_TITLE: &str = "^Confirm";
/// The wizard window's title pattern.
pub const WIZARD_TITLE: &str = "^Mini Connector Setup";

/// Samples the status dot of the dashboard in a screenshot.
pub fn status_dot_colour(xs: &XServer, id: &str, png: &Path) -> Result<u32, GuiError> {
    let (ox, oy) = xs.origin(id)?;
    let (dx, dy, _) = layout::STATUS_DOT;
    pixel(png, ox + dx, oy + dy)
}

/// What [`walk_dashboard`] saw.
#[derive(Debug, Default)]
pub struct WalkReport {
    /// Screenshots taken, in order.
    pub shots: Vec<PathBuf>,
    /// `(title, status-dot colour)` at each state checkpoint.
    pub states: Vec<(String, u32)>,
}

fn expect_state(
    xs: &XServer,
    id: &str,
    label: &str,
    rgb: u32,
    shot: PathBuf,
    report: &mut WalkReport,
    timeout: Duration,
) -> Result<(), GuiError> {
    let title = xs.wait_title(id, &format!("— {label}"), timeout)?;
    // The dot is redrawn in the same loop turn as the title; give the server a moment.
    thread::sleep(Duration::from_millis(250));
    xs.screenshot(&shot)?;
    let got = status_dot_colour(xs, id, &shot)?;
    if !close_to(got, rgb, 10) {
        return Err(err(format!(
            "{label}: status dot is #{got:06X}, expected #{rgb:06X} ({})",
            shot.display()
        )));
    }
    report.states.push((title, got));
    report.shots.push(shot);
    Ok(())
}

/// The dashboard walk: red (disconnected) → `make_green` (e.g. start the gateway) → green;
/// every section clicked in the sidebar and photographed (Connections with the add form and
/// its security notice open, Schema with a table selected); Pause → grey; Resume → green.
pub fn walk_dashboard(
    xs: &XServer,
    shots: &Path,
    expect_red_first: bool,
    make_green: &mut dyn FnMut(),
) -> Result<WalkReport, GuiError> {
    use protocol::control::Indicator;
    let long = Duration::from_secs(30);
    let id = xs.wait_window(DASHBOARD_TITLE, long)?;
    let mut report = WalkReport::default();
    if expect_red_first {
        expect_state(
            xs,
            &id,
            "Disconnected",
            Indicator::Disconnected.rgb(),
            shots.join("01-disconnected.png"),
            &mut report,
            long,
        )?;
    }
    make_green();
    expect_state(
        xs,
        &id,
        "Connected",
        Indicator::Connected.rgb(),
        shots.join("02-connected.png"),
        &mut report,
        long,
    )?;
    for (i, s) in Section::ALL.iter().enumerate() {
        let (x, y) = layout::nav_center(i);
        xs.click_until(&id, (x, y), &format!("· {}", s.title()), Duration::from_secs(10))?;
        thread::sleep(Duration::from_millis(400));
        let slug = s.title().to_lowercase().replace(' ', "-");
        match s {
            Section::Connections => {
                report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}.png")))?);
                // "Add connection": the form with the §3.5 notice.
                xs.click(&id, layout::SIDEBAR_W + 24 + 64, 96 + 175)?;
                thread::sleep(Duration::from_millis(300));
                report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}-add.png")))?);
                xs.click(&id, layout::SIDEBAR_W + 24 + 620 + 16 + 60, 96 + 339)?; // Cancel
            }
            Section::Schema => {
                thread::sleep(Duration::from_millis(300));
                xs.click(&id, layout::SIDEBAR_W + 24 + 80, 96 + 56 + 12)?; // first table
                thread::sleep(Duration::from_millis(500));
                report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}.png")))?);
            }
            Section::Diagnostics => {
                report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}.png")))?);
                // "Run checks": the doctor steps above the live figures.
                xs.click(&id, layout::SIDEBAR_W + 24 + 180, 96 + 14)?;
                thread::sleep(Duration::from_millis(1500));
                report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}-checks.png")))?);
            }
            _ => report.shots.push(xs.screenshot(&shots.join(format!("1{i}-{slug}.png")))?),
        }
    }
    let (_, wh) = layout::WINDOW;
    let pause = (layout::SIDEBAR_W / 2, wh - layout::PAUSE_FROM_BOTTOM + 18);
    xs.click(&id, pause.0, pause.1)?;
    expect_state(xs, &id, "Paused", Indicator::Paused.rgb(), shots.join("30-paused.png"), &mut report, long)?;
    xs.click(&id, pause.0, pause.1)?;
    expect_state(
        xs,
        &id,
        "Connected",
        Indicator::Connected.rgb(),
        shots.join("31-resumed.png"),
        &mut report,
        long,
    )?;
    Ok(report)
}

/// What the wizard walk types.
#[derive(Debug, Clone)]
pub struct WizardInputs {
    /// A valid API key for the console under test.
    pub api_key: String,
    /// The connector's name.
    pub connector_name: String,
    /// The connection's name.
    pub connection: String,
    /// Database host.
    pub host: String,
    /// Port (empty keeps the type's default).
    pub port: String,
    /// Database name.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Where the wizard's step-3 fields are (window coordinates, centres).
fn form_field(which: &str) -> (i32, i32) {
    let (x, y, w) = wiz::FORM;
    let half = (w - 16) / 2;
    let row = crate::ui::wizard::FORM_ROW;
    match which {
        "name" => (x + half + 16 + 40, y + 16 + 14),
        "host" => (x + 60, y + row + 16 + 14),
        "port" => (x + half + half / 2 + 16 + 30, y + row + 16 + 14),
        "database" => (x + 60, y + 2 * row + 16 + 14),
        "user" => (x + half + 16 + 40, y + 2 * row + 16 + 14),
        _ => (x + 60, y + 3 * row + 16 + 14),
    }
}

fn centre(r: (i32, i32, i32, i32)) -> (i32, i32) {
    (r.0 + r.2 / 2, r.1 + r.3 / 2)
}

/// Walks the wizard's steps `from`..=4 (1-based; a resumed wizard starts later), one screenshot
/// per step, and ends when the dashboard opens. Stops early (with the wizard open) after
/// `stop_after` when given, to test resuming.
pub fn walk_wizard(
    xs: &XServer,
    shots: &Path,
    input: &WizardInputs,
    stop_after: Option<usize>,
) -> Result<Vec<PathBuf>, GuiError> {
    let long = Duration::from_secs(30);
    let id = xs.wait_window(WIZARD_TITLE, long)?;
    let title = xs.title(&id)?;
    let from: usize = title
        .split("Step ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| err(format!("no step in the wizard's title {title:?}")))?;
    let mut out = Vec::new();
    let next = centre(wiz::NEXT);
    for step in from..=4 {
        xs.wait_title(&id, &format!("Step {step} of 4"), long)?;
        thread::sleep(Duration::from_millis(200));
        match step {
            1 => {
                let (x, y, w, h) = wiz::MAIN_FIELD;
                xs.fill(&id, (x + w / 2, y + h / 2), &input.api_key)?;
                xs.click(&id, centre(wiz::CHECK).0, centre(wiz::CHECK).1)?;
                thread::sleep(Duration::from_millis(1500));
                out.push(xs.screenshot(&shots.join("20-wizard-1-key.png"))?);
            }
            2 => {
                let (x, y, w, h) = wiz::MAIN_FIELD;
                xs.fill(&id, (x + w / 2, y + h / 2), &input.connector_name)?;
                out.push(xs.screenshot(&shots.join("21-wizard-2-name.png"))?);
            }
            3 => {
                xs.fill(&id, form_field("name"), &input.connection)?;
                xs.fill(&id, form_field("host"), &input.host)?;
                if !input.port.is_empty() {
                    xs.fill(&id, form_field("port"), &input.port)?;
                }
                xs.fill(&id, form_field("database"), &input.database)?;
                xs.fill(&id, form_field("user"), &input.user)?;
                xs.fill(&id, form_field("password"), &input.password)?;
                xs.click(&id, centre(wiz::TEST).0, centre(wiz::TEST).1)?;
                thread::sleep(Duration::from_millis(1500));
                out.push(xs.screenshot(&shots.join("22-wizard-3-database.png"))?);
            }
            _ => {
                thread::sleep(Duration::from_millis(800));
                // Keep the first table private.
                xs.click(&id, wiz::MAIN_FIELD.0 + 20, wiz::REVIEW_TOP + 4 + wiz::REVIEW_ROW / 2)?;
                thread::sleep(Duration::from_millis(200));
                out.push(xs.screenshot(&shots.join("23-wizard-4-review.png"))?);
            }
        }
        if stop_after == Some(step) {
            return Ok(out);
        }
        if step < 4 {
            xs.click_until(&id, next, &format!("Step {} of 4", step + 1), long)?;
        } else {
            xs.click(&id, next.0, next.1)?;
            xs.wait_window(DASHBOARD_TITLE, long)?;
        }
    }
    Ok(out)
}
