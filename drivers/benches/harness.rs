//! The issue-12 benchmark harness: the real `connector-gateway` binary, the real `mini-connector`
//! agent binary and the real PostgreSQL of `scripts/db-servers.sh`, measured side by side in one
//! run. Prints a table and writes a JSON file (`target/bench/harness.json` by default).
//!
//! Run it through `scripts/bench.sh` (builds the binaries, starts the servers):
//!
//! ```text
//! scripts/bench.sh            # full: 10,000 round trips, 1M rows, 60 s idle, binary sizes
//! scripts/bench.sh --quick    # smoke: small counts, 10 s idle (checks the harness, not timings)
//! scripts/bench.sh --1gb      # also the 1 GB result for peak RSS
//! ```
//!
//! What it measures, in this order (the agent's figures are of a fresh process):
//! 1. start to connected: agent spawn → the gateway logs `agent connected`, for the agent of
//!    the run (API key and PostgreSQL password from `file:` references) and for a second agent
//!    whose API key and PostgreSQL password are in the vault (`vault://apikey`, `db:pg`; the
//!    start derives the vault key, PBKDF2 600,000 rounds), started, measured and stopped;
//! 2. idle: RSS, CPU and wake-ups (context switches of all threads) of agent and gateway over
//!    `--idle-secs` connected and idle;
//! 3. round trip `SELECT 1` on SQLite and PostgreSQL through the admin API (HTTP to the
//!    gateway, WSS to the agent, back): p50 / p99 / max;
//! 4. 50 and 200 concurrent 20 ms PostgreSQL queries against a pool of 10 (a view over
//!    `pg_sleep(0.02)`, created by the fixture owner: the read-only gate refuses `pg_sleep`
//!    itself), errors and throughput against the same query run sequentially;
//! 5. peak RSS (`VmHWM`, reset through `/proc/<pid>/clear_refs` before each) of agent and
//!    gateway for ~10 MB, ~100 MB (and ~1 GB with `--1gb`) results, smallest first;
//! 6. N rows from PostgreSQL: `psql -c "COPY (…) TO STDOUT"`, the raw `postgres` crate fetch and
//!    the agent → gateway buffer (the gateway's `buffer taken by its result` debug line) → caller
//!    (the admin API's body read to its end), same query, same run; then the buffer time again
//!    over a connection with `sslMode: disable` (the raw fetch has no TLS either);
//! 7. stripped binary sizes (`--size-headless`, `--size-gui`) and the crate count (`cargo tree`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::mpsc::{Receiver, Sender};

use serde_json::{Value, json};

/// Any single wait (start, connect) longer than this fails the run.
const WATCHDOG: Duration = Duration::from_secs(60);
/// NDJSON bytes per row of [`rows_sql`] (measured: ~118 MB per million rows).
const ROW_BYTES: u64 = 118;

struct Opts {
    quick: bool,
    gb: bool,
    agent: PathBuf,
    gateway: PathBuf,
    json: PathBuf,
    idle_secs: u64,
    roundtrips: usize,
    rows: u64,
    size_headless: Option<PathBuf>,
    size_gui: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Self {
        // Default: the binaries of the same profile, next to target/<profile>/deps/harness-….
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new(".")).to_owned();
        let mut o = Opts {
            quick: false,
            gb: false,
            gateway: profile_dir.join("connector-gateway"),
            agent: profile_dir.join("mini-connector"),
            json: profile_dir.parent().unwrap_or(Path::new(".")).join("bench/harness.json"),
            idle_secs: 0,
            roundtrips: 0,
            rows: 0,
            size_headless: None,
            size_gui: None,
        };
        let (mut idle, mut roundtrips, mut rows) = (None, None, None);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
            match arg.as_str() {
                "--quick" => o.quick = true,
                "--1gb" => o.gb = true,
                "--agent" => o.agent = value().into(),
                "--gateway" => o.gateway = value().into(),
                "--json" => o.json = value().into(),
                "--idle-secs" => idle = Some(value().parse().unwrap_or_else(|_| usage("--idle-secs N"))),
                "--roundtrips" => {
                    roundtrips = Some(value().parse().unwrap_or_else(|_| usage("--roundtrips N")))
                }
                "--rows" => rows = Some(value().parse().unwrap_or_else(|_| usage("--rows N"))),
                "--size-headless" => o.size_headless = Some(value().into()),
                "--size-gui" => o.size_gui = Some(value().into()),
                // `cargo bench` passes `--bench`.
                "--bench" => {}
                other => usage(&format!("unknown argument {other}")),
            }
        }
        o.idle_secs = idle.unwrap_or(if o.quick { 10 } else { 60 });
        o.roundtrips = roundtrips.unwrap_or(if o.quick { 300 } else { 10_000 });
        o.rows = rows.unwrap_or(if o.quick { 50_000 } else { 1_000_000 });
        o
    }
}

fn usage(message: &str) -> ! {
    eprintln!("harness: {message}");
    eprintln!(
        "usage: harness [--quick] [--1gb] [--agent BIN] [--gateway BIN] [--json FILE] [--idle-secs N] \
         [--roundtrips N] [--rows N] [--size-headless BIN] [--size-gui BIN]"
    );
    std::process::exit(2);
}

fn main() {
    let opts = Opts::parse();
    let Ok(pg_url) = std::env::var("MC_TEST_PG_URL") else {
        usage("needs the PostgreSQL of scripts/db-servers.sh: eval \"$(scripts/db-servers.sh env)\"");
    };
    let owner_url =
        std::env::var("MC_TEST_PG_OWNER_URL").unwrap_or_else(|_| usage("MC_TEST_PG_OWNER_URL not set"));
    for bin in [&opts.agent, &opts.gateway] {
        if !bin.is_file() {
            usage(&format!("{} not found (scripts/bench.sh builds it)", bin.display()));
        }
    }
    let mut report = Report::default();
    report.put("meta", "command", json!(std::env::args().collect::<Vec<_>>().join(" ")));
    report.put("meta", "quick", json!(opts.quick));
    report.put("meta", "agent", json!(opts.agent.display().to_string()));
    report.put("meta", "gateway", json!(opts.gateway.display().to_string()));
    report.put("meta", "machine", json!(machine()));

    let dir = std::env::temp_dir().join(format!("mc-harness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    prepare_pg(&owner_url);

    let gateway = GatewayProc::start(&opts.gateway, &dir.join("gateway"));
    // The bench profile aborts on panic (no `Drop`): scripts/bench.sh ends what is listed here.
    let pid_file = opts.json.with_file_name("harness.pids");
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, format!("{}\n", gateway.pid())).unwrap();
    // Both keys before the first agent connects (a key created later was refused until the
    // gateway restarted; fixed in the gateway, `gateway/tests/cli_keys.rs`).
    let vault_key = create_key(&gateway, "BenchVault");
    let mut agent = AgentProc::start(&opts.agent, &gateway, &dir, &pg_url);
    std::fs::write(&pid_file, format!("{}\n{}\n", gateway.pid(), agent.pid())).unwrap();

    // 1 + 2: start to connected (`file:` secrets, then vault secrets), idle.
    report.put("start", "agent start to connected ms", json!(ms(agent.connected_after)));
    // Listed before it connects: a failed wait (abort, no `Drop`) must not leave it running.
    let pids = format!("{}\n{}\n", gateway.pid(), agent.pid());
    let list = |pid: u32| std::fs::write(&pid_file, format!("{pids}{pid}\n")).unwrap();
    let mut vaulted = AgentProc::start_vaulted(&opts.agent, &gateway, &dir, &pg_url, &vault_key, list);
    report.put("start", "agent start to connected, vault secrets ms", json!(ms(vaulted.connected_after)));
    vaulted.stop();
    std::fs::write(&pid_file, pids).unwrap();
    let idle = idle(&[agent.pid(), gateway.pid()], Duration::from_secs(opts.idle_secs));
    for (who, sample) in ["agent", "gateway"].iter().zip(idle) {
        report.put("idle", &format!("{who} RSS MiB"), json!(mib(sample.rss_kib)));
        report.put("idle", &format!("{who} CPU ms"), json!(sample.cpu_ms));
        report.put(
            "idle",
            &format!("{who} wake-ups/s"),
            json!(round2(sample.switches as f64 / opts.idle_secs as f64)),
        );
    }
    report.put("idle", "seconds", json!(opts.idle_secs));

    // 3: round trips.
    for (label, connection) in [("sqlite", "erp"), ("postgres", "pg")] {
        let stats = roundtrips(&gateway.admin, connection, opts.roundtrips);
        for (k, v) in stats {
            report.put(&format!("roundtrip {label}"), &k, v);
        }
    }

    // 4: concurrency.
    let sequential_n = if opts.quick { 10 } else { 40 };
    let started = Instant::now();
    let mut seq_errors = 0;
    for _ in 0..sequential_n {
        if run_query(&gateway.admin, "pg", SLEEP_SQL).is_err() {
            seq_errors += 1;
        }
    }
    let seq_rate = sequential_n as f64 / started.elapsed().as_secs_f64();
    report.put("concurrency", "sequential queries/s", json!(round2(seq_rate)));
    report.put("concurrency", "sequential errors", json!(seq_errors));
    for n in [50usize, 200] {
        // The agent's peak while n commands are in flight (spec: ≤ 64 MB under any load).
        reset_hwm(&[agent.pid()]);
        let (errors, rate, first_error) = submitted(&gateway.admin, n);
        report.put(
            "concurrency",
            &format!("{n} in flight agent peak RSS MiB"),
            json!(mib(hwm_kib(agent.pid()))),
        );
        report.put("concurrency", &format!("{n} in flight errors"), json!(errors));
        report.put("concurrency", &format!("{n} in flight queries/s"), json!(round2(rate)));
        report.put("concurrency", &format!("{n} in flight × sequential"), json!(round2(rate / seq_rate)));
        if let Some(e) = first_error {
            report.put("concurrency", &format!("{n} in flight first error"), json!(e));
        }
    }
    for n in [50usize, 200] {
        let (errors, rate, first_error) = concurrent(&gateway.admin, n);
        report.put("concurrency", &format!("{n} blocking admin callers errors"), json!(errors));
        report.put("concurrency", &format!("{n} blocking admin callers queries/s"), json!(round2(rate)));
        if let Some(e) = first_error {
            report.put("concurrency", &format!("{n} blocking admin callers first error"), json!(e));
        }
    }

    // 5: peak RSS by result size, on a gateway that has not buffered a large result yet.
    let pids = [agent.pid(), gateway.pid()];
    let mut sizes: Vec<(&str, u64)> = if opts.quick {
        vec![("1 MB", 1 << 20), ("5 MB", 5 << 20)]
    } else {
        vec![("10 MB", 10_000_000), ("100 MB", 100_000_000)]
    };
    if opts.gb {
        sizes.push(("1 GB", 1_000_000_000));
    }
    for (name, bytes) in sizes {
        let rows = bytes / ROW_BYTES;
        reset_hwm(&pids);
        let through = bulk(&gateway, &rows_sql(rows), rows);
        let label = format!("peak RSS {name} result");
        report.put(&label, "rows", json!(rows));
        report.put(&label, "caller bytes MB", json!(round2(through.bytes as f64 / 1e6)));
        report.put(&label, "agent peak RSS MiB", json!(mib(hwm_kib(pids[0]))));
        report.put(&label, "gateway peak RSS MiB", json!(mib(hwm_kib(pids[1]))));
        report.put(&label, "gateway RSS after MiB", json!(mib(rss_kib(pids[1]))));
        report.put(&label, "to caller s", json!(round3(through.caller.as_secs_f64())));
    }

    // 6: bulk rows, side by side.
    let sql = rows_sql(opts.rows);
    let psql = psql_copy(&pg_url, &sql);
    let raw = raw_fetch(&pg_url, &sql);
    reset_hwm(&pids);
    let through = bulk(&gateway, &sql, opts.rows);
    let hwm = [hwm_kib(pids[0]), hwm_kib(pids[1])];
    let label = format!("{} rows", opts.rows);
    report.put(&label, "psql COPY TO STDOUT s", json!(round3(psql.as_secs_f64())));
    report.put(&label, "raw postgres crate fetch s", json!(round3(raw.as_secs_f64())));
    report.put(&label, "agent → gateway buffer s", json!(round3(through.buffered.as_secs_f64())));
    report.put(&label, "agent → gateway → caller s", json!(round3(through.caller.as_secs_f64())));
    report.put(&label, "caller bytes MB", json!(round2(through.bytes as f64 / 1e6)));
    report.put(
        &label,
        "buffer ÷ raw fetch (speed ratio)",
        json!(round2(raw.as_secs_f64() / through.buffered.as_secs_f64())),
    );
    report.put(
        &label,
        "buffer ÷ psql COPY (speed ratio)",
        json!(round2(psql.as_secs_f64() / through.buffered.as_secs_f64())),
    );
    report.put(&label, "agent peak RSS MiB", json!(mib(hwm[0])));
    report.put(&label, "gateway peak RSS MiB", json!(mib(hwm[1])));
    // The raw fetch connects without TLS; the agent's `pg` prefers TLS. The same rows over a
    // connection with `sslMode: disable`, so the ratio compares like with like.
    let plain = bulk_on(&gateway, "pg_plain", &sql, opts.rows);
    report.put(
        &label,
        "agent → gateway buffer, PostgreSQL without TLS s",
        json!(round3(plain.buffered.as_secs_f64())),
    );
    report.put(
        &label,
        "buffer without TLS ÷ raw fetch (speed ratio)",
        json!(round2(raw.as_secs_f64() / plain.buffered.as_secs_f64())),
    );

    // 7: sizes and crates.
    for (name, bin) in [("headless", &opts.size_headless), ("gui", &opts.size_gui)] {
        if let Some(bin) = bin {
            report.put("binary", &format!("{name} stripped MB"), json!(stripped_mb(bin, &dir)));
        }
    }
    for (name, features) in [("headless", &["--no-default-features"][..]), ("gui", &[][..])] {
        if let Some(n) = crate_count(features) {
            report.put("binary", &format!("{name} crates (cargo tree -e normal)"), json!(n));
        }
    }

    agent.stop();
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    unprepare_pg(&owner_url);
    report.print();
    if let Some(parent) = opts.json.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&opts.json, serde_json::to_vec_pretty(&report.json()).unwrap()).unwrap();
    println!("JSON: {}", opts.json.display());
}

// ---------------------------------------------------------------------------------------------
// The report: ordered sections of (metric, value).

#[derive(Default)]
struct Report {
    sections: Vec<(String, Vec<(String, Value)>)>,
}

impl Report {
    fn put(&mut self, section: &str, key: &str, value: Value) {
        eprintln!("harness: {section}: {key} = {value}");
        match self.sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, entries)) => entries.push((key.into(), value)),
            None => self.sections.push((section.into(), vec![(key.into(), value)])),
        }
    }

    fn print(&self) {
        println!("| section | metric | value |");
        println!("|---|---|---:|");
        for (section, entries) in &self.sections {
            for (key, value) in entries {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("| {section} | {key} | {shown} |");
            }
        }
    }

    fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (section, entries) in &self.sections {
            let map: serde_json::Map<String, Value> = entries.iter().cloned().collect();
            out.insert(section.clone(), Value::Object(map));
        }
        Value::Object(out)
    }
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn mib(kib: u64) -> f64 {
    round2(kib as f64 / 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem}, load {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

// ---------------------------------------------------------------------------------------------
// The gateway binary (its stderr read line by line: `agent connected`, `buffer taken …`).

struct GatewayProc {
    child: Child,
    admin: Arc<AdminClient>,
    lines: Receiver<(Instant, String)>,
    ws_url: String,
    ca_cert: String,
    data_dir: PathBuf,
    bin: PathBuf,
}

impl GatewayProc {
    fn start(bin: &Path, data_dir: &Path) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            // Room for the 1 GB result (the buffer limits are the gateway's, not measured here).
            .args(["--max-buffer-bytes", "4GiB", "--max-connection-buffer-bytes", "8GiB"])
            .args(["--max-total-buffer-bytes", "8GiB"])
            .env("RUST_LOG", "info,gateway::hub=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || forward_lines(stderr, &tx));
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let text = std::fs::read_to_string(data_dir.join("admin.json")).unwrap_or_default();
            if let Ok(doc) = serde_json::from_str::<Value>(&text)
                && doc["pid"].as_u64() == Some(u64::from(child.id()))
            {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let admin = Arc::new(AdminClient::from_data_dir(data_dir));
        let (status, health) = admin.call("GET", "/admin/health", None, WATCHDOG).unwrap();
        assert_eq!(status, 200, "{health}");
        Self {
            child,
            admin,
            lines,
            ws_url: health["wsUrl"].as_str().unwrap().to_owned(),
            ca_cert: health["caCertPath"].as_str().unwrap().to_owned(),
            data_dir: data_dir.to_owned(),
            bin: bin.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn admin_addr(&self) -> (SocketAddr, String) {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(self.data_dir.join("admin.json")).unwrap())
                .unwrap();
        (doc["addr"].as_str().unwrap().parse().unwrap(), doc["token"].as_str().unwrap().to_owned())
    }

    /// Waits for a log line containing `needle`; when it was read.
    fn wait_line(&self, needle: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((at, line)) if line.contains(needle) => return at,
                Ok(_) => {}
                Err(_) => panic!("gateway never logged {needle:?}"),
            }
        }
    }

    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(from: impl Read, to: &Sender<(Instant, String)>) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { return };
        if to.send((Instant::now(), line)).is_err() {
            return;
        }
    }
}

/// The admin API over plain HTTP/1.1 (`Connection: close`), as `gateway::AdminClient` does it;
/// the harness lives in the drivers crate so that its bench build does not pull in the desktop
/// app (a dev-dependency of the root package).
struct AdminClient {
    addr: SocketAddr,
    token: String,
}

impl AdminClient {
    fn from_data_dir(data_dir: &Path) -> Self {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(data_dir.join("admin.json")).unwrap()).unwrap();
        Self {
            addr: doc["addr"].as_str().unwrap().parse().unwrap(),
            token: doc["token"].as_str().unwrap().to_owned(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        let addr = self.addr;
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("admin api: {what} {addr}: {e}");
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| fail("cannot connect to", &e))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| fail("socket", &e))?;
        let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.token,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body))
            .map_err(|e| fail("cannot send to", &e))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| fail("no answer from", &e))?;
        let split =
            response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| fail("no head from", &"?"))?;
        let head = String::from_utf8_lossy(&response[..split]);
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = &response[split + 4..];
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| fail("non-JSON answer from", &e))?
        };
        Ok((status, value))
    }
}

// ---------------------------------------------------------------------------------------------
// The agent binary: SQLite `erp` (the sample ERP) and PostgreSQL `pg`, a pool of 10.

struct AgentProc {
    child: Child,
    connected_after: Duration,
}

/// A new API key for connector `name` from the gateway's CLI.
fn create_key(gateway: &GatewayProc, name: &str) -> String {
    let output = Command::new(&gateway.bin)
        .arg("--data-dir")
        .arg(&gateway.data_dir)
        .args(["keys", "create", "--tenant", "bench", "--name", name, "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "keys create: {}", String::from_utf8_lossy(&output.stderr));
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    key["data"]["apiKey"].as_str().unwrap().to_owned()
}

/// Runs `agent <args>` with `stdin` as its input; panics unless it succeeds.
fn agent_cli(bin: &Path, args: &[&str], stdin: &str) {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{stdin}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "mini-connector {}: {}{}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Spawns `mini-connector start` and waits for the gateway's `agent connected` line.
fn spawn_agent(
    bin: &Path,
    gateway: &GatewayProc,
    config_path: &Path,
    stderr: &Path,
    spawned: impl FnOnce(u32),
) -> AgentProc {
    gateway.drain();
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["start", "--config"])
        .arg(config_path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    spawned(child.id());
    let connected = gateway.wait_line("agent connected", WATCHDOG);
    AgentProc { child, connected_after: connected - started }
}

impl AgentProc {
    /// The second agent (`BenchVault`, SQLite `erp` and PostgreSQL `pg`): its API key and the
    /// PostgreSQL password are stored in its vault with the agent's own CLI first (`key rotate
    /// --api-key-stdin`, `db edit pg --password-stdin`), so its start reads both from the vault.
    fn start_vaulted(
        bin: &Path,
        gateway: &GatewayProc,
        dir: &Path,
        pg_url: &str,
        key: &str,
        spawned: impl FnOnce(u32),
    ) -> Self {
        let agent_dir = dir.join("agent-vault");
        std::fs::create_dir_all(&agent_dir).unwrap();
        let db = agent_dir.join("erp.db");
        drivers::fixture::create_sample_erp(&db, 1).unwrap();
        let pg = parse_url(pg_url);
        let config = json!({
            "connectorName": "BenchVault",
            "apiKeyRef": "vault://apikey",
            "vaultDir": agent_dir.join("vault"),
            "vaultKeyDir": agent_dir.join("vault-keys"),
            "cloudUrl": gateway.ws_url,
            "caCertPath": gateway.ca_cert,
            "logLevel": "warn",
            "logDir": agent_dir.join("logs"),
            "workers": 10,
            "connections": [
                { "name": "erp", "type": "sqlite", "path": db },
                {
                    "name": "pg", "type": "postgres", "host": pg.host, "port": pg.port,
                    "database": pg.database, "user": pg.user, "poolMax": 10,
                }
            ]
        });
        let config_path = agent_dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let config_arg = config_path.to_str().unwrap();
        agent_cli(bin, &["key", "rotate", "--config", config_arg, "--api-key-stdin"], key);
        agent_cli(
            bin,
            &["db", "edit", "pg", "--config", config_arg, "--password-stdin", "--no-test"],
            &pg.password,
        );
        let written: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        assert_eq!(written["apiKeyRef"], "vault://apikey", "the key is not in the vault: {written}");
        spawn_agent(bin, gateway, &config_path, &agent_dir.join("agent.stderr"), spawned)
    }

    fn start(bin: &Path, gateway: &GatewayProc, dir: &Path, pg_url: &str) -> Self {
        let key = create_key(gateway, "Bench");
        let agent_dir = dir.join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(agent_dir.join("api-key"), &key).unwrap();
        let db = agent_dir.join("erp.db");
        drivers::fixture::create_sample_erp(&db, 1).unwrap();
        let pg = parse_url(pg_url);
        std::fs::write(agent_dir.join("pg-password"), &pg.password).unwrap();
        let config = json!({
            "connectorName": "Bench",
            "apiKeyRef": format!("file:{}", agent_dir.join("api-key").display()),
            "cloudUrl": gateway.ws_url,
            "caCertPath": gateway.ca_cert,
            "logLevel": "warn",
            "logDir": agent_dir.join("logs"),
            "workers": 10,
            "maxResultMB": 4096,
            "connections": [
                { "name": "erp", "type": "sqlite", "path": db },
                {
                    "name": "pg", "type": "postgres", "host": pg.host, "port": pg.port,
                    "database": pg.database, "user": pg.user, "poolMax": 10,
                    "passwordRef": format!("file:{}", agent_dir.join("pg-password").display()),
                },
                {
                    // The same server without TLS, as the raw fetch connects: the side-by-side
                    // ratio without the cost of TLS (section 6).
                    "name": "pg_plain", "type": "postgres", "host": pg.host, "port": pg.port,
                    "database": pg.database, "user": pg.user, "poolMax": 2, "sslMode": "disable",
                    "passwordRef": format!("file:{}", agent_dir.join("pg-password").display()),
                }
            ]
        });
        let config_path = agent_dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        spawn_agent(bin, gateway, &config_path, &agent_dir.join("agent.stderr"), |_| {})
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct PgUrl {
    user: String,
    password: String,
    host: String,
    port: u16,
    database: String,
}

fn parse_url(url: &str) -> PgUrl {
    let rest = url.split_once("://").unwrap().1;
    let (credentials, rest) = rest.rsplit_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (host_port, database) = rest.split_once('/').unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap();
    PgUrl {
        user: user.into(),
        password: password.into(),
        host: host.into(),
        port: port.parse().unwrap(),
        database: database.into(),
    }
}

fn pg_connect(url: &str) -> postgres::Client {
    let u = parse_url(url);
    let mut config = postgres::Config::new();
    config.host(&u.host).port(u.port).dbname(&u.database).user(&u.user).password(&u.password);
    config.connect(postgres::NoTls).unwrap()
}

// ---------------------------------------------------------------------------------------------
// /proc: RSS, peak RSS, CPU, context switches.

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0).
fn reset_hwm(pids: &[u32]) {
    for pid in pids {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
    }
}

/// utime + stime in ms, and voluntary + involuntary context switches summed over all threads.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); after the comm, index 11 and 12. 100 ticks/s.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (ticks * 10, switches)
}

struct IdleSample {
    rss_kib: u64,
    cpu_ms: u64,
    switches: u64,
}

fn idle(pids: &[u32], window: Duration) -> Vec<IdleSample> {
    let before: Vec<_> = pids.iter().map(|p| cpu_and_switches(*p)).collect();
    std::thread::sleep(window);
    pids.iter()
        .zip(before)
        .map(|(pid, (cpu0, sw0))| {
            let (cpu1, sw1) = cpu_and_switches(*pid);
            IdleSample {
                rss_kib: rss_kib(*pid),
                cpu_ms: cpu1.saturating_sub(cpu0),
                switches: sw1.saturating_sub(sw0),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// A 20 ms I/O-bound query: the view `mc_bench_sleep20` (see [`prepare_pg`]).
const SLEEP_SQL: &str = "SELECT ok FROM mc_bench_sleep20";

/// As the fixture owner: a view that waits 20 ms in the server, readable by the read-only user.
/// The gate refuses `pg_sleep` in a query's text, not behind a view.
fn prepare_pg(owner_url: &str) {
    let mut client = pg_connect(owner_url);
    client
        .batch_execute(
            "CREATE OR REPLACE VIEW mc_bench_sleep20 AS SELECT 1 AS ok FROM (SELECT pg_sleep(0.02)) AS s; \
             GRANT SELECT ON mc_bench_sleep20 TO PUBLIC;",
        )
        .unwrap();
}

/// Drops the view again: the fixture database is shared with the test suite, whose discovery
/// tests compare every table and view against a golden file. (scripts/bench.sh drops it too
/// when a run ends early.)
fn unprepare_pg(owner_url: &str) {
    pg_connect(owner_url).batch_execute(DROP_SLEEP_VIEW).unwrap();
}

/// Kept in step with the `psql` line of scripts/bench.sh's cleanup.
const DROP_SLEEP_VIEW: &str = "DROP VIEW IF EXISTS mc_bench_sleep20";

/// The rows of `drivers/benches/stream.rs` (~118 bytes of NDJSON each).
fn rows_sql(n: u64) -> String {
    format!(
        "SELECT g AS id, 'customer-' || lpad(g::text, 8, '0') AS code, md5(g::text) AS hash, \
         g * 0.25::float8 AS amount, g % 2 = 0 AS even, \
         timestamp '2024-01-02 03:04:05' + g * interval '1 second' AS at \
         FROM generate_series(1, {n}) AS g"
    )
}

fn run_query(admin: &AdminClient, connection: &str, sql: &str) -> Result<Value, String> {
    let body = json!({ "connector": "Bench", "sql": sql, "connection": connection, "waitMs": 60_000 });
    match admin.call("POST", "/admin/query", Some(&body), Duration::from_secs(70)) {
        Ok((200, outcome)) => Ok(outcome),
        Ok((status, body)) => Err(format!("HTTP {status}: {}", body["error"])),
        Err(e) => Err(e),
    }
}

fn roundtrips(admin: &AdminClient, connection: &str, count: usize) -> Vec<(String, Value)> {
    for _ in 0..(count / 20).max(20) {
        run_query(admin, connection, "SELECT 1").unwrap();
    }
    let mut samples = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let outcome = run_query(admin, connection, "SELECT 1").unwrap();
        samples.push(t.elapsed());
        assert_eq!(outcome["rowCount"], 1, "{outcome}");
    }
    let total = started.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    vec![
        ("commands".into(), json!(count)),
        ("p50 ms".into(), json!(ms(pct(0.50)))),
        ("p99 ms".into(), json!(ms(pct(0.99)))),
        ("max ms".into(), json!(ms(samples[samples.len() - 1]))),
        ("sequential commands/s".into(), json!(round2(count as f64 / total.as_secs_f64()))),
    ]
}

/// `n` callers at once, each one blocking `/admin/query` of a 20 ms query; (errors, queries/s,
/// first error). The admin API serves 256 requests at once (more wait up to 2 s, then `503`).
fn concurrent(admin: &Arc<AdminClient>, n: usize) -> (usize, f64, Option<String>) {
    let barrier = Arc::new(std::sync::Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (admin, barrier) = (admin.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                run_query(&admin, "pg", SLEEP_SQL).and_then(|outcome| check_one_row(&outcome))
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let errors = results.iter().filter(|r| r.is_err()).count();
    let first = results.iter().find_map(|r| r.as_ref().err().cloned());
    (errors, n as f64 / elapsed.as_secs_f64(), first)
}

fn check_one_row(outcome: &Value) -> Result<(), String> {
    if outcome["rowCount"] == 1 { Ok(()) } else { Err(format!("unexpected outcome {outcome}")) }
}

/// `n` commands of a 20 ms query in flight at once: submitted through `/admin/submit` (answered
/// at once with the command id) by 8 threads, then waited for through
/// `/admin/commands/<id>?waitMs=` (the gateway answers when the command is answered: no polling
/// loop on the same cores). (errors, queries/s from the first submit to the last answer seen,
/// first error).
fn submitted(admin: &Arc<AdminClient>, n: usize) -> (usize, f64, Option<String>) {
    const THREADS: usize = 8;
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let mine = (t..n).step_by(THREADS).count();
                let body = json!({ "connector": "Bench", "sql": SLEEP_SQL, "connection": "pg" });
                let mut ids: Vec<String> = Vec::new();
                let mut results = Vec::new();
                for _ in 0..mine {
                    match admin.call("POST", "/admin/submit", Some(&body), Duration::from_secs(30)) {
                        Ok((202, answer)) => {
                            ids.push(answer["commandId"].as_str().unwrap_or_default().to_owned())
                        }
                        Ok((status, answer)) => results.push(Err(format!("submit: HTTP {status}: {answer}"))),
                        Err(e) => results.push(Err(format!("submit: {e}"))),
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(120);
                // Commands finish about in the order they were queued: wait for the oldest one
                // of this thread's, then the next (about one request per command).
                ids.reverse();
                while let Some(id) = ids.last()
                    && Instant::now() < deadline
                {
                    let path = format!("/admin/commands/{id}?waitMs=30000");
                    let done = match admin.call("GET", &path, None, Duration::from_secs(40)) {
                        Ok((200, body)) if body["state"] == "answered" => Some(match body.get("outcome") {
                            Some(outcome) => check_one_row(outcome),
                            None => Err(format!("answered with {}", body["error"])),
                        }),
                        Ok((200, _)) => None,
                        Ok((status, body)) => Some(Err(format!("status: HTTP {status}: {body}"))),
                        Err(e) => Some(Err(format!("status: {e}"))),
                    };
                    if let Some(result) = done {
                        results.push(result);
                        ids.pop();
                    }
                }
                results.extend(ids.iter().map(|id| Err(format!("{id} not answered in 120 s"))));
                (results, Instant::now())
            })
        })
        .collect();
    let mut results = Vec::new();
    let mut last = started;
    for handle in handles {
        let (mine, done) = handle.join().unwrap();
        results.extend(mine);
        last = last.max(done);
    }
    let errors = results.iter().filter(|r| r.is_err()).count();
    let first = results.iter().find_map(|r| r.as_ref().err().cloned());
    (errors, n as f64 / (last - started).as_secs_f64(), first)
}

fn psql_copy(url: &str, sql: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-c", &format!("COPY ({sql}) TO STDOUT")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql (postgresql-client) on PATH");
    let mut stdout = child.stdout.take().unwrap();
    let mut sink = vec![0u8; 1 << 16];
    while stdout.read(&mut sink).unwrap() > 0 {}
    let status = child.wait().unwrap();
    assert!(status.success(), "psql COPY failed");
    started.elapsed()
}

/// The raw `postgres` crate fetch (every value's bytes touched, nothing converted), as in
/// `drivers/benches/stream.rs`.
fn raw_fetch(url: &str, sql: &str) -> Duration {
    use postgres::fallible_iterator::FallibleIterator;
    use postgres::types::{FromSql, Type};
    struct Bytes<'a>(Option<&'a [u8]>);
    impl<'a> FromSql<'a> for Bytes<'a> {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Bytes(Some(raw)))
        }
        fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Bytes(None))
        }
        fn accepts(_: &Type) -> bool {
            true
        }
    }
    let started = Instant::now();
    let mut client = pg_connect(url);
    let mut rows = client.query_raw(sql, std::iter::empty::<i32>()).unwrap();
    let mut touched = 0usize;
    while let Some(row) = rows.next().unwrap() {
        for i in 0..row.len() {
            touched += row.get::<_, Bytes<'_>>(i).0.map_or(0, <[u8]>::len);
        }
    }
    std::hint::black_box(touched);
    started.elapsed()
}

struct Through {
    buffered: Duration,
    caller: Duration,
    bytes: u64,
}

/// One query through the admin API, its body read to the end without parsing (a plain HTTP/1.1
/// request; the admin API answers `Connection: close`).
fn bulk(gateway: &GatewayProc, sql: &str, rows: u64) -> Through {
    bulk_on(gateway, "pg", sql, rows)
}

/// [`bulk`] on a named connection of the agent.
fn bulk_on(gateway: &GatewayProc, connection: &str, sql: &str, rows: u64) -> Through {
    let (addr, token) = gateway.admin_addr();
    let body = serde_json::to_vec(&json!({
        "connector": "Bench", "sql": sql, "connection": connection, "waitMs": 600_000,
    }))
    .unwrap();
    gateway.drain();
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /admin/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n.min(4096)]);
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 1 << 20 {
            tail.drain(..tail.len() - 4096);
        }
        bytes += n as u64;
    }
    let caller = started.elapsed();
    let head_text = String::from_utf8_lossy(&head);
    let shown = &head_text[..head_text.floor_char_boundary(600)];
    assert!(head_text.starts_with("HTTP/1.1 200"), "bulk query failed: {shown}");
    let needle = format!("\"rowCount\":{rows}");
    let found = head_text.contains(&needle) || String::from_utf8_lossy(&tail).contains(&needle);
    assert!(found, "rowCount {rows} not in the answer: {shown}");
    // Inline results (small) have no buffer: the answer is then the first moment.
    let buffered = match gateway.lines.try_iter().find(|(_, l)| l.contains("buffer taken by its result")) {
        Some((at, _)) => at - started,
        None => caller,
    };
    Through { buffered, caller, bytes }
}

// ---------------------------------------------------------------------------------------------
// Sizes and crates.

fn stripped_mb(bin: &Path, dir: &Path) -> Value {
    let copy = dir.join("stripped");
    std::fs::copy(bin, &copy).unwrap();
    match Command::new("strip").arg(&copy).status() {
        Ok(s) if s.success() => json!(round2(std::fs::metadata(&copy).unwrap().len() as f64 / 1e6)),
        _ => json!(format!("strip failed for {}", bin.display())),
    }
}

fn crate_count(features: &[&str]) -> Option<usize> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-e", "normal", "--prefix", "none", "-p", "mini-connector"])
        .args(features)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines.dedup();
    Some(lines.len())
}
