#!/usr/bin/env bash
# The demo: reference gateway + agent + sample SQLite ERP, queries end to end over TLS 1.3.
# Usage: ./scripts/demo.sh        (from a clean clone, on a fresh Debian/Ubuntu machine)
# Everything it writes lives in ./demo-data (recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

echo "==> building"
# The demo is headless (gateway + agent + a query): no FLTK to build. `mini-connector gui` needs
# the default features (see README "Desktop app").
cargo build -p mini-connector -p gateway --bins --no-default-features
bin=./target/debug
data=./demo-data
rm -rf "$data" && mkdir -p "$data"
export CONNECTOR_GATEWAY_DIR="$data/gateway"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "==> creating the sample ERP (SQLite): $data/erp.db"
$bin/mini-connector sample-erp "$data/erp.db"
chmod a-w "$data/erp.db"   # a second layer: the agent's OS user cannot write the file

# Free loopback ports for the gateway's TLS endpoint and its admin API.
read -r port admin_port < <(python3 -c '
import socket
s1, s2 = socket.socket(), socket.socket()
s1.bind(("127.0.0.1", 0)); s2.bind(("127.0.0.1", 0))
print(s1.getsockname()[1], s2.getsockname()[1])')

echo "==> creating an API key for connector \"Warehouse\" (shown once, stored only hashed)"
key=$($bin/connector-gateway keys create --tenant demo --name Warehouse --json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["apiKey"])')
echo "    key: $(printf '%s' "$key" | sed -E 's/^(vmc_[a-z0-9]+_)[a-z0-9]+(_[0-9a-f]+)$/\1****\2/') (masked)"

echo "==> starting the gateway on wss://127.0.0.1:$port/ws"
$bin/connector-gateway serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
    --max-chunk-bytes 262144 > "$data/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
for _ in $(seq 100); do [ -f "$CONNECTOR_GATEWAY_DIR/admin.json" ] && break; sleep 0.1; done

echo "==> configuring the agent: the key goes into the machine-bound vault, never into the config"
printf '%s\n' "$key" | $bin/mini-connector configure --config "$data/config.json" --name Warehouse \
    --cloud-url "wss://127.0.0.1:$port/ws" --ca-cert "$CONNECTOR_GATEWAY_DIR/tls/cert.pem" \
    --heartbeat-ms 5000 --api-key-stdin
$bin/mini-connector db add --config "$data/config.json" --name erp --type sqlite --path "$data/erp.db"
# Optional: a MongoDB connection when a server is there (MC_DEMO_MONGO_URL, or the test server of
# `scripts/db-servers.sh start`: `eval "$(scripts/db-servers.sh env)"` sets MC_TEST_MONGO_URL).
mongo_url=${MC_DEMO_MONGO_URL:-${MC_TEST_MONGO_URL:-}}
if [ -n "$mongo_url" ]; then
    read -r m_user m_pw m_host m_port m_db < <(python3 -c '
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.unquote(p.username or ""), u.unquote(p.password or ""), p.hostname, p.port or 27017, p.path.strip("/") or "test")' "$mongo_url")
    echo "==> adding MongoDB $m_host:$m_port/$m_db as \"docs\" (password into the vault)"
    printf '%s\n' "$m_pw" | $bin/mini-connector db add --config "$data/config.json" --name docs --type mongodb \
        --host "$m_host" --port "$m_port" --database "$m_db" --user "$m_user" --password-stdin
fi
rm -f "$data/api-key"
python3 - "$data/config.json" "$data/logs" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["logDir"] = sys.argv[2]
json.dump(config, open(sys.argv[1], "w"), indent=2)
PY
echo "    config ($data/config.json):"
sed 's/^/      /' "$data/config.json"; echo
echo "==> starting the agent (config: $data/config.json, log: $data/agent.log)"
$bin/mini-connector start --config "$data/config.json" 2> "$data/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
for _ in $(seq 100); do
    $bin/connector-gateway connectors --json 2>/dev/null | grep -q '"connected":true' && break
    sleep 0.1
done
$bin/connector-gateway connectors

echo "==> schema the agent broadcast (metadata only, no rows):"
for _ in $(seq 50); do
    $bin/connector-gateway schema --connector Warehouse --json > "$data/schema.json" 2>/dev/null && break
    sleep 0.1
done
python3 - "$data/schema.json" <<'PY'
import json, sys
schema = json.load(open(sys.argv[1]))["data"]
dbs = schema["schemas"]
for db in dbs:
    for t in db["tables"]:
        fks = ", ".join(f'{",".join(fk["columns"])}->{fk["refTable"]}' for fk in t.get("foreignKeys", []))
        print(f'    {t["kind"]:5} {t["name"]:12} {len(t["columns"]):2} columns  ~{t.get("rowCountEstimate", "?")} rows  {fks}')
PY

q() { echo; echo "\$ connector-gateway query --connector Warehouse $*"; $bin/connector-gateway query --connector Warehouse "$@"; }
q "SELECT id, code, name, country, credit_limit FROM customers ORDER BY id LIMIT 5"
q --param '"open"' "SELECT c.country, count(*) AS orders, round(sum(l.quantity * l.unit_price), 2) AS revenue
   FROM orders o JOIN customers c ON c.id = o.customer_id JOIN order_lines l ON l.order_id = o.id
   WHERE o.status = ? GROUP BY c.country ORDER BY revenue DESC LIMIT 5"
q "SELECT i.invoice_no, c.name, i.total, i.paid FROM invoices i JOIN orders o ON o.id = i.order_id
   JOIN customers c ON c.id = o.customer_id ORDER BY i.total DESC LIMIT 5"
echo; echo "\$ connector-gateway query --connector Warehouse --json \"<50,000 generated rows>\"  (travels as signed chunks)"
$bin/connector-gateway query --connector Warehouse --json --wait-ms 60000 \
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 50000) SELECT x, 'line ' || x AS label FROM n" \
    > "$data/big.json"
python3 - "$data/big.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))["data"]
b = o["buffered"]
print("    %d rows in %d chunks, %d bytes, sha256 %s... verified by the gateway"
      % (o["rowCount"], b["chunkCount"], b["byteCount"], b["sha256"][:16]))
PY
if [ -n "$mongo_url" ]; then
    echo; echo "==> MongoDB: a query document on connection \"docs\""
    q --connection docs '{"collection": "customers", "filter": {"country": "DE"}, "projection": {"_id": 0, "code": 1, "name": 1, "address.city": 1}, "sort": {"code": 1}, "limit": 3}'
    q --connection docs '{"collection": "orders", "pipeline": [{"$out": "stolen"}]}' || echo "    (exit status $?, as expected: \$out writes)"
fi
echo; echo "\$ connector-gateway query --connector Warehouse \"DELETE FROM customers\"   (refused: read-only)"
$bin/connector-gateway query --connector Warehouse "DELETE FROM customers" || echo "    (exit status $?, as expected)"

# A gateway stop is a restart for its agents (they reconnect when it is back), so the agent is
# stopped first, as an operator would (Ctrl-C), then the gateway.
echo; echo "==> stopping: the agent finishes and exits (Ctrl-C), then the gateway"
kill -INT "$agent_pid"
agent_status=0
wait "$agent_pid" || agent_status=$?
kill -INT "$gateway_pid"
wait "$gateway_pid" || true
pids=()
echo "    agent exited with status $agent_status"
if grep -rqF "$key" "$data"; then echo "ERROR: the API key leaked into a file"; exit 1; fi
echo "    the plaintext API key is in no file under $data (config, vault, logs, gateway data)"
echo "==> demo complete (logs in $data/)"
