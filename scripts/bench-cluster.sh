#!/usr/bin/env bash
# The gateway as a cluster under a simulated fleet (issue 14): a real redis-server, three
# release `connector-gateway serve --redis` nodes behind haproxy (TCP, round robin), and
# `connector-fleet` opening N agent sessions through the balancer with 30 s heartbeats.
#
#   scripts/bench-cluster.sh [N]     default 5000 agents
#   (MC_BENCH_NO_BUILD=1: use the release binaries already in target/release)
#
# Prints per node: sessions held, RSS, threads, CPU at rest (20 s); then the command round
# trip p50/p99 of 200 queries submitted on node a to random agents (most of them held by
# another node: routed through Redis). Not part of CI (minutes long); numbers go to
# docs/BENCHMARKS.md. Needs redis-server and haproxy (scripts/net-tools.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "${MC_BENCH_NO_BUILD:-}" = 1 ] || cargo build --release -p gateway --bins >&2
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export PATH="$PATH:/usr/sbin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
redis="redis://127.0.0.1:$redis_port"
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

declare -A pid port
per_node=$((n / 3 + 200))
tls=""
for node in a b c; do
    port[$node]=$(free_port)
    args=(--redis "$redis" --data-dir "$work/$node" serve --node-id "$node" --listen "127.0.0.1:${port[$node]}"
          --admin-listen 127.0.0.1:0 --max-connections "$per_node" --upload-url "https://127.0.0.1:${port[$node]}/upload")
    [ -n "$tls" ] && args+=(--cert "$tls/cert.pem" --key "$tls/key.pem")
    "$bin/connector-gateway" "${args[@]}" >"$work/$node.log" 2>&1 &
    pid[$node]=$!
    for _ in $(seq 100); do [ -f "$work/$node/admin.json" ] && break; sleep 0.1; done
    [ -n "$tls" ] || tls="$work/a/tls"
done
base_a=$(rss_kb "${pid[a]}"); base_b=$(rss_kb "${pid[b]}"); base_c=$(rss_kb "${pid[c]}")

lb=$(free_port)
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn $((n + 1000))
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
frontend agents
  bind 127.0.0.1:$lb
  default_backend nodes
backend nodes
  balance roundrobin
  server a 127.0.0.1:${port[a]} check
  server b 127.0.0.1:${port[b]} check
  server c 127.0.0.1:${port[c]} check
EOF
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &

started=$(date +%s.%N)
"$bin/connector-fleet" --url "wss://127.0.0.1:$lb/ws" --ca-cert "$tls/cert.pem" --redis "$redis" \
    --data-dir "$work/a" --agents "$n" --heartbeat-secs 30 --probe-queries 200 --ramp-per-sec 250 \
    >"$work/fleet.out" 2>&1 &
fleet=$!
for _ in $(seq 2400); do grep -q '"probes"' "$work/fleet.out" && break; sleep 0.5; done
probe=$(grep '"probes"' "$work/fleet.out" || echo '{}')
up=$(python3 -c "import time; print(f'{time.time() - $started:.0f}')")

declare -A t0
for node in a b c; do t0[$node]=$(cpu_ticks "${pid[$node]}"); done
sleep 20
printf '| node | sessions | RSS idle → with fleet | per session | threads | CPU at rest |\n|---|---|---|---|---|---|\n'
for node in a b c; do
    p=${pid[$node]}
    base_var="base_$node"
    # Sessions it holds now: connects minus disconnects in its log.
    sessions=$(( $(grep -c 'agent connected' "$work/$node.log" || true) - $(grep -c 'agent disconnected' "$work/$node.log" || true) ))
    python3 - "$node" "${!base_var}" "$(rss_kb "$p")" "$(ls "/proc/$p/task" | wc -l)" "${t0[$node]}" "$(cpu_ticks "$p")" "$hz" "$sessions" <<'PY'
import sys
node = sys.argv[1]
base, rss, threads, t0, t1, hz, sessions = (int(x) for x in sys.argv[2:9])
cpu = (t1 - t0) / hz / 20 * 100
per = (rss - base) / max(sessions, 1)
print(f"| {node} | {sessions} | {base/1024:.1f} → {rss/1024:.1f} MiB | {per:.0f} KiB | {threads} | {cpu:.1f} % of a core |")
PY
done
printf '\nredis-server RSS %.1f MiB; fleet up in %s s; probes (submitted on node a): %s\n' \
    "$(echo "$(rss_kb "$redis_pid") / 1024" | bc -l)" "$up" "$probe"
tail -1 "$work/fleet.out"
cp "$work"/*.log "$work/fleet.out" "${TMPDIR:-/tmp}/" 2>/dev/null || true  # kept for a look
