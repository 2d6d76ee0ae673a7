#!/usr/bin/env bash
# Installs the real network parts the proxy / TLS-interception / fallback tests use (idempotent):
#   tinyproxy (Debian)  - a forward HTTP CONNECT proxy, with and without Basic auth;
#   mitmproxy (PyPI)    - a TLS-intercepting proxy (mitmdump), also scripted to refuse
#                         WebSocket upgrades;
#   redis-server, haproxy (Debian) - the gateway cluster's Redis and a TCP load balancer in
#                         front of its nodes (tests/e2e_cluster.rs, scripts/bench-fleet.sh).
# Tests find them on PATH; with MC_REQUIRE_NET_TOOLS=1 a missing one fails the test.
# Meant to be sourced (it may extend PATH) or run.
set -euo pipefail
if ! command -v tinyproxy >/dev/null 2>&1 && ! [ -x /usr/bin/tinyproxy ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy >/dev/null
fi
# tinyproxy's package starts a system instance on 8888; the tests start their own.
systemctl disable --now tinyproxy >/dev/null 2>&1 || service tinyproxy stop >/dev/null 2>&1 || true
if ! command -v redis-server >/dev/null 2>&1 || ! { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server haproxy >/dev/null
fi
# Both packages start system instances (6379, the default haproxy.cfg); the tests start their own.
for unit in redis-server haproxy; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || service "$unit" stop >/dev/null 2>&1 || true
done
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
if ! command -v mitmdump >/dev/null 2>&1; then
    python3 -m pip install -q mitmproxy
fi
export MC_REQUIRE_NET_TOOLS=1
