#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of every crate.
# Usage: ./scripts/test.sh        (from a clean clone, on a fresh Debian/Ubuntu machine)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
echo "==> all tests passed"
