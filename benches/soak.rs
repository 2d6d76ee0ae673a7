//! Soak: 10,000 commands (21.6 % chunked, ~1.3 MB each) through the admin API while the relay
//! cuts the link at random and drops it silently now and then; counts lost, doubled and
//! double-executed commands (PostgreSQL statement log, see `tests/e2e_faults.rs`) and the
//! agent's RSS at start and end. Not part of `cargo test`.
//!
//! ```text
//! scripts/db-servers.sh start && eval "$(scripts/db-servers.sh env)"
//! cargo bench --bench soak                       # bench profile (optimised agent)
//! MC_SOAK_COMMANDS=2000 MC_FAULT_SEED=7 cargo bench --profile dev --bench soak
//! ```
//!
//! Knobs: `MC_SOAK_COMMANDS` (10000), `MC_FAULT_SEED` (clock), `MC_SOAK_CALLERS` (16),
//! `MC_SOAK_MINUTES` (deadline, 60). Exit code 1 when anything was lost, doubled or run twice.

#[allow(unused_imports)]
#[path = "../tests/e2e_faults.rs"]
mod e2e_faults;
#[path = "../tests/relay.rs"]
mod relay;
#[allow(dead_code)]
#[path = "../tests/support.rs"]
mod support;

use std::time::Duration;

use e2e_faults::{Load, PgLog, Rig, agent_alive, finish_report, pg_urls, rss_kib, run_id, run_load};
use relay::{Chaos, seed_from_env};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let Some((logged, owner)) = pg_urls() else {
        eprintln!("soak: needs the PostgreSQL server of scripts/db-servers.sh (MC_TEST_PG_LOGGED_URL)");
        std::process::exit(2);
    };
    let commands = env_num("MC_SOAK_COMMANDS", 10_000) as usize;
    let callers = env_num("MC_SOAK_CALLERS", 16) as usize;
    let minutes = env_num("MC_SOAK_MINUTES", 60);
    let seed = seed_from_env();

    let rig = Rig::new("soak", "Soak");
    let mut log = PgLog::open(&owner);
    let config = rig.agent_config(&logged, serde_json::json!({}));
    let agent = rig.start_agent(&config);
    let pid = agent.child.id();
    let rss_start = rss_kib(pid);
    let events = rig.gateway.subscribe();
    rig.relay.chaos(Chaos::Random {
        seed,
        min: Duration::from_millis(200),
        max: Duration::from_millis(3000),
        silent_percent: 20,
    });
    let load = Load {
        run: run_id("mcsoak"),
        commands,
        chunked_per_mille: 216,
        callers,
        deadline: Duration::from_secs(minutes * 60),
    };
    let mut report = run_load(&rig.admin, "Soak", &load, Some(&events));
    rig.relay.calm();
    finish_report(&mut report, &load, &mut log);
    let rss_end = rss_kib(pid);
    let stats = rig.relay.stats();
    let alive = agent_alive(&agent);

    println!("soak: {}", report.summary());
    println!("soak: relay {stats:?}, seed {seed}");
    println!("soak: agent RSS {rss_start} KiB at start, {rss_end} KiB at end; agent running at end: {alive}");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s | {} / {} | {} MiB → {} MiB |",
        report.commands,
        report.chunked,
        report.answered,
        report.lost.len() - report.unsent(),
        report.unsent(),
        report.doubled.len(),
        report.double_executed.len(),
        stats.cuts + stats.silent_drops,
        report.elapsed.as_secs_f64(),
        report.resubmits,
        report.repeated_result_frames,
        rss_start / 1024,
        rss_end / 1024,
    );
    for (tag, error) in
        report.lost.iter().filter(|(_, e)| !e.starts_with("not sent")).chain(report.failed.iter()).take(10)
    {
        println!("soak: {tag}: {error}");
    }
    println!("soak: refused (non-retryable errors): {}", report.failed.len());
    let bad = !report.lost.is_empty()
        || !report.doubled.is_empty()
        || !report.double_executed.is_empty()
        || !report.failed.is_empty()
        || !alive;
    drop(agent);
    // `exit` runs no destructors: stop the gateway and remove the scratch dir first.
    drop(rig);
    std::process::exit(i32::from(bad));
}
