#!/usr/bin/env bash
# The issue-12 benchmark harness in one command (drivers/benches/harness.rs): builds the real
# `connector-gateway` and `mini-connector` binaries, starts real PostgreSQL (scripts/db-servers.sh)
# unless MC_TEST_PG_URL is already set, and prints one table; JSON in target/bench/harness.json.
#
#   scripts/bench.sh                 full run (bench profile = release + symbols): 10,000 round
#                                    trips, 1M rows, 10/100 MB peak RSS, 60 s idle, binary sizes
#   scripts/bench.sh --quick         smoke: small counts, 10 s idle, no size builds (< 1 min once built)
#   scripts/bench.sh --1gb           also a 1 GB result for peak RSS
#   scripts/bench.sh --profile dev   unoptimised binaries (what scripts/test.sh smokes)
#   scripts/bench.sh --no-gui        skip the desktop (GUI) build, whose only use is its size
#   scripts/bench.sh --no-sizes      no stripped sizes at all
# Other arguments go to the harness (--rows N, --roundtrips N, --idle-secs N; see its `//!`).
# MC_BENCH_JOBS (default 2) is cargo's -j.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=bench
quick=0
sizes=1
gui=1
harness_args=()
while (($#)); do
    case "$1" in
        --quick) quick=1; sizes=0; harness_args+=(--quick) ;;
        --profile) profile=$2; shift ;;
        --no-sizes) sizes=0 ;;
        --no-gui) gui=0 ;;
        *) harness_args+=("$1") ;;
    esac
    shift
done
case "$profile" in
    dev) out=debug ;;
    bench | release) out=release ;;
    *) out=$profile ;;
esac
jobs=${MC_BENCH_JOBS:-2}
# Absolute: `cargo bench` runs the harness in drivers/, where a relative target/ would not resolve.
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
mkdir -p "$target/bench"

pids_file="$target/bench/harness.pids"
stop_servers=0
cleanup() {
    # The harness lists the gateway and agent it started; a failed run (the bench profile aborts
    # on panic) leaves them running otherwise.
    if [ -f "$pids_file" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$pids_file"
        rm -f "$pids_file"
    fi
    # The harness drops its view at its end; a run that ended early leaves it in the fixture
    # database, which the test suite's discovery tests compare against a golden file.
    if [ -n "${MC_TEST_PG_OWNER_URL:-}" ]; then
        psql -X -q "$MC_TEST_PG_OWNER_URL" -c "DROP VIEW IF EXISTS mc_bench_sleep20" >/dev/null 2>&1 || true
    fi
    if ((stop_servers)); then scripts/db-servers.sh stop || true; fi
}
trap cleanup EXIT
if [ -z "${MC_TEST_PG_URL:-}" ]; then
    scripts/db-servers.sh start
    stop_servers=1
    eval "$(scripts/db-servers.sh env)"
fi

echo "==> building connector-gateway and mini-connector (profile $profile)" >&2
cargo build --profile "$profile" -j"$jobs" -p gateway --bin connector-gateway
if ((sizes && gui)); then
    # The desktop build first: the headless one below is what the harness runs.
    cargo build --profile "$profile" -j"$jobs" --bin mini-connector
    cp "$target/$out/mini-connector" "$target/bench/mini-connector-gui"
    harness_args+=(--size-gui "$target/bench/mini-connector-gui")
fi
cargo build --profile "$profile" -j"$jobs" --no-default-features --bin mini-connector
cp "$target/$out/mini-connector" "$target/bench/mini-connector-headless"
cp "$target/$out/connector-gateway" "$target/bench/connector-gateway"
if ((sizes)); then
    harness_args+=(--size-headless "$target/bench/mini-connector-headless")
fi

echo "==> harness" >&2
cargo bench --profile "$profile" -j"$jobs" -p drivers --bench harness -- \
    --agent "$target/bench/mini-connector-headless" --gateway "$target/bench/connector-gateway" \
    --json "$target/bench/harness.json" "${harness_args[@]}"
if ((quick)); then
    # The smoke checks that every part ran and produced numbers, not what they are.
    python3 - "$target/bench/harness.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
need = ["start", "idle", "roundtrip sqlite", "roundtrip postgres", "concurrency"]
missing = [s for s in need if s not in doc]
assert not missing, f"harness JSON lacks {missing}"
assert any(k.endswith(" rows") for k in doc), "no bulk-rows section"
assert sum(k.startswith("peak RSS") for k in doc) >= 2, "no peak-RSS sections"
for n in (50, 200):
    assert doc["concurrency"][f"{n} in flight errors"] == 0, doc["concurrency"]
print("harness smoke: ok")
EOF
fi
