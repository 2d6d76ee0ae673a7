#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate, against real
# PostgreSQL and MariaDB servers and real ODBC drivers started on loopback (needs root or sudo
# for the apt installs and to run the servers as their own system users).
# Usage: ./scripts/test.sh        (from a clean clone, on a fresh Debian/Ubuntu machine)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cross-check for Windows (x86_64-pc-windows-gnu)"
if rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1; then
    if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
    fi
    cargo check --workspace --all-targets --target x86_64-pc-windows-gnu
else
    echo "WARNING: the Windows target could not be installed (no access to the Rust dist server); cross-check skipped"
fi
echo "==> starting real PostgreSQL and MariaDB servers on loopback (+ ODBC drivers)"
scripts/db-servers.sh start
trap 'scripts/db-servers.sh stop || true' EXIT
eval "$(scripts/db-servers.sh env)"
export MC_REQUIRE_DB_SERVERS=1
echo "==> cargo test"
cargo test --workspace
echo "==> all tests passed"
