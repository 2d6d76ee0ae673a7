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
echo "==> starting real PostgreSQL and MariaDB servers on loopback (+ ODBC drivers)"
scripts/db-servers.sh start
trap 'scripts/db-servers.sh stop || true' EXIT
eval "$(scripts/db-servers.sh env)"
export MC_REQUIRE_DB_SERVERS=1
echo "==> cargo test"
cargo test --workspace
echo "==> all tests passed"
