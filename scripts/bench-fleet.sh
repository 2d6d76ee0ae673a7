#!/usr/bin/env bash
# Many agents on one gateway node (issue 14 part 2): memory per idle session, CPU at rest with
# heartbeats, and the command round trip at that load, measured with `connector-fleet` (a
# simulated fleet: real TLS 1.3 WebSocket sessions that authenticate, heartbeat and answer).
#
#   scripts/bench-fleet.sh [N ...]       default: 1000 2500 5000 agents, 30 s heartbeats
#   (MC_BENCH_NO_BUILD=1: use the release binaries already in target/release)
#
# For each N: a fresh release gateway, the fleet connected, 20 s at rest, then 200 queries one
# after another to random agents through the admin API (p50/p99). Prints one table row per N.
# Not part of CI (minutes long); numbers go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 2500 5000)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "${MC_BENCH_NO_BUILD:-}" = 1 ] || cargo build --release -p gateway --bins >&2
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

printf '| agents | gateway RSS idle | RSS with fleet | per session | threads | CPU at rest | round trip p50 / p99 |\n'
printf '|---|---|---|---|---|---|---|\n'
for n in "${counts[@]}"; do
    dir="$work/gw-$n"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin/connector-gateway" --data-dir "$dir" serve --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 \
        --max-connections $((n + 100)) >"$work/gw-$n.log" 2>&1 &
    gw=$!
    for _ in $(seq 100); do [ -f "$dir/admin.json" ] && break; sleep 0.1; done
    base=$(rss_kb "$gw")
    "$bin/connector-fleet" --url "wss://127.0.0.1:$port/ws" --ca-cert "$dir/tls/cert.pem" --data-dir "$dir" \
        --agents "$n" --heartbeat-secs 30 --probe-queries 200 --ramp-per-sec 250 >"$work/fleet-$n.out" 2>&1 &
    fleet=$!
    # The probe line comes once the whole fleet is connected and the queries ran.
    for _ in $(seq 1200); do grep -q '"probes"' "$work/fleet-$n.out" && break; sleep 0.5; done
    probe=$(grep '"probes"' "$work/fleet-$n.out" || echo '{}')
    t0=$(cpu_ticks "$gw"); sleep 20; t1=$(cpu_ticks "$gw")
    rss=$(rss_kb "$gw")
    threads=$(ls "/proc/$gw/task" | wc -l)
    python3 - "$n" "$base" "$rss" "$threads" "$t0" "$t1" "$hz" "$probe" <<'PY'
import json, sys
n, base, rss, threads, t0, t1, hz = (int(x) for x in sys.argv[1:8])
probe = json.loads(sys.argv[8] or "{}")
per = (rss - base) / n
cpu = (t1 - t0) / hz / 20 * 100
rt = f'{probe.get("p50Ms", float("nan")):.1f} / {probe.get("p99Ms", float("nan")):.1f} ms'
print(f"| {n} | {base/1024:.1f} MiB | {rss/1024:.1f} MiB | {per:.0f} KiB | {threads} | {cpu:.1f} % of a core | {rt} |")
PY
    cp "$work/gw-$n.log" "$work/fleet-$n.out" "${TMPDIR:-/tmp}/" 2>/dev/null || true  # kept for a look
    kill "$fleet" 2>/dev/null || true; wait "$fleet" 2>/dev/null || true
    kill -INT "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true
done
