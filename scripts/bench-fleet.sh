#!/usr/bin/env bash
# Many agents on one gateway node (issue 14 part 2): memory per idle session, CPU at rest with
# heartbeats, and the command round trip at that load, measured with `connector-fleet` (a
# simulated fleet: real TLS 1.3 WebSocket sessions that authenticate, heartbeat and answer).
#
#   scripts/bench-fleet.sh [N ...]       default: 1000 5000 10000 agents, 30 s heartbeats
#   (MC_BENCH_NO_BUILD=1: use the release binaries already in target/release, or in
#    MC_BENCH_BIN=DIR (another build of the gateway, to compare);
#    MC_FLEET_PER_TENANT=K: K agents per tenant, default 100; the gateway looks an `auth` up
#    by the key's masked form, so one tenant of 10,000 keys costs the same per auth.)
#
# For each N: a fresh release gateway, the fleet connected, then 200 queries one after another
# to random agents through the admin API (p50/p99), then 60 s at rest (CPU: two heartbeat
# periods, three of the gateway's keepalive pings per session). Prints one table
# row per N: resident memory and open descriptors of the gateway before and with the fleet,
# per session, the part of the RSS that is thread stacks (the touched pages of its 2 MiB stack
# mappings, from /proc/PID/smaps), threads, CPU, round trips, and the fleet's failed dials.
# Not part of CI (minutes long); numbers go to docs/BENCHMARKS.md. The gateway raises its own
# soft open-file limit to the hard one; the fleet (one descriptor and one thread per agent)
# gets the hard limit here.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 5000 10000)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "${MC_BENCH_NO_BUILD:-}" = 1 ] || cargo build --release -p gateway --bins >&2
bin=${MC_BENCH_BIN:-target/release}
per_tenant=${MC_FLEET_PER_TENANT:-100}
rest=60
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# Resident kB of thread stacks: the anonymous rw mappings of a default 2 MiB thread stack.
stack_kb() {
    python3 - "$1" <<'PY'
import re, sys
kb, stack = 0, False
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(\S*)$", line)
    if m:
        size = int(m[2], 16) - int(m[1], 16)
        stack = m[3] == "rw-p" and not m[4] and size in (2 << 20, (2 << 20) - 4096)
    elif stack and line.startswith("Rss:"):
        kb += int(line.split()[1])
print(kb)
PY
}
hz=$(getconf CLK_TCK)

printf '| agents | gateway RSS idle | RSS with fleet | per session | of which stacks | fds idle / with fleet | fds per session | threads | CPU at rest | round trip p50 / p99 | failed dials |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for n in "${counts[@]}"; do
    dir="$work/gw-$n"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin/connector-gateway" --data-dir "$dir" serve --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 \
        --max-connections $((n + 100)) >"$work/gw-$n.log" 2>&1 &
    gw=$!
    for _ in $(seq 100); do [ -f "$dir/admin.json" ] && break; sleep 0.1; done
    base=$(rss_kb "$gw"); base_fds=$(fds "$gw"); base_stacks=$(stack_kb "$gw")
    "$bin/connector-fleet" --url "wss://127.0.0.1:$port/ws" --ca-cert "$dir/tls/cert.pem" --data-dir "$dir" \
        --agents "$n" --tenants $(((n + per_tenant - 1) / per_tenant)) --heartbeat-secs 30 --probe-queries 200 \
        --ramp-per-sec 250 >"$work/fleet-$n.out" 2>&1 &
    fleet=$!
    # The probe line comes once the whole fleet is connected and the queries ran.
    for _ in $(seq 1800); do grep -q '"probes"\|^Error' "$work/fleet-$n.out" && break; sleep 0.5; done
    probe=$(grep '"probes"' "$work/fleet-$n.out" || echo '{}')
    t0=$(cpu_ticks "$gw"); sleep "$rest"; t1=$(cpu_ticks "$gw")
    rss=$(rss_kb "$gw"); with_fds=$(fds "$gw"); stacks=$(stack_kb "$gw")
    threads=$(ls "/proc/$gw/task" | wc -l)
    stats=$(grep '"connected"' "$work/fleet-$n.out" | tail -1 || echo '{}')
    python3 - "$n" "$base" "$rss" "$threads" "$t0" "$t1" "$hz" "$base_fds" "$with_fds" "$base_stacks" "$stacks" \
        "$rest" "$probe" "$stats" <<'PY'
import json, sys
n, base, rss, threads, t0, t1, hz, fds0, fds1, st0, st1, rest = (int(x) for x in sys.argv[1:13])
probe = json.loads(sys.argv[13] or "{}")
stats = json.loads(sys.argv[14] or "{}")
per = (rss - base) / n
cpu = (t1 - t0) / hz / rest * 100
rt = f'{probe.get("p50Ms", float("nan")):.1f} / {probe.get("p99Ms", float("nan")):.1f} ms'
errors = f' ({probe["errors"]} unanswered)' if probe.get("errors") else ''
print(f"| {n} | {base/1024:.1f} MiB | {rss/1024:.1f} MiB | {per:.1f} KiB | {(st1 - st0) / n:.1f} KiB "
      f"| {fds0} / {fds1} | {(fds1 - fds0) / n:.2f} | {threads} | {cpu:.1f} % of a core | {rt}{errors} "
      f"| {stats.get('failures', '?')} |")
PY
    cp "$work/gw-$n.log" "$work/fleet-$n.out" "${TMPDIR:-/tmp}/" 2>/dev/null || true  # kept for a look
    kill "$fleet" 2>/dev/null || true; wait "$fleet" 2>/dev/null || true
    kill -INT "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true
done
