#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate, against real
# PostgreSQL and MariaDB servers and real ODBC drivers started on loopback (needs root or sudo
# for the apt installs and to run the servers as their own system users).
# Usage: ./scripts/test.sh        (from a clean clone, on a fresh Debian/Ubuntu machine)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
source scripts/gui-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cross-check for Windows (x86_64-pc-windows-gnu)"
if rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1; then
    # g++ too: the desktop app's FLTK is C++ (built by its build script even for `check`).
    if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || ! command -v x86_64-w64-mingw32-g++ >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 >/dev/null
    fi
    cargo check --workspace --all-targets --target x86_64-pc-windows-gnu
else
    echo "WARNING: the Windows target could not be installed (no access to the Rust dist server); cross-check skipped"
fi
echo "==> headless build (--no-default-features): no FLTK, X11, fontconfig or pango linked"
cargo build --no-default-features --bin mini-connector
headless="${CARGO_TARGET_DIR:-target}/debug/mini-connector"
if ldd "$headless" | grep -Ei 'libX|fontconfig|fltk|pango|cairo|freetype|libGL'; then
    echo "FAIL: the headless binary links GUI libraries (above)" >&2
    exit 1
fi
echo "==> packages: the .deb built from the headless debug binary, unpacked, checked, signed (scripts/test-package.sh)"
scripts/test-package.sh
echo "==> starting real PostgreSQL and MariaDB servers on loopback (+ ODBC drivers)"
scripts/db-servers.sh start
trap 'scripts/db-servers.sh stop || true' EXIT
eval "$(scripts/db-servers.sh env)"
export MC_REQUIRE_DB_SERVERS=1
echo "==> cargo test (the gui crate's tests drive the app under Xvfb; screenshots in target/screenshots/)"
cargo test --workspace
echo "==> benchmark harness smoke (scripts/bench.sh --quick: every part runs; timings not checked)"
scripts/bench.sh --quick --profile dev
echo "==> fuzz targets (cargo-fuzz, nightly): build, then run each for ${MC_FUZZ_SECONDS:=20} s"
if cargo +nightly --version >/dev/null 2>&1; then
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    (
        cd fuzz
        cargo +nightly fuzz build
        for target in $(cargo +nightly fuzz list); do
            echo "--> fuzz $target (${MC_FUZZ_SECONDS} s)"
            cargo +nightly fuzz run "$target" -- -max_total_time="$MC_FUZZ_SECONDS" -rss_limit_mb=2048
        done
    )
else
    echo "WARNING: no nightly toolchain (rustup toolchain install nightly); fuzz targets not built"
fi
echo "==> all tests passed"
