#!/usr/bin/env python3
"""Where the time of concurrent commands goes (issue 12, docs/BENCHMARKS.md "Concurrency").

Starts the given `connector-gateway` and `mini-connector` binaries like the harness does (pool of
10, the 20 ms view `mc_bench_sleep20` the harness creates), runs N concurrent queries ROUNDS
times and prints, per round, queries/s and the CPU milliseconds per command of the gateway, the
agent (and per agent thread) and the PostgreSQL backends (from /proc, so it means something on a
loaded machine where wall clock does not).

  eval "$(scripts/db-servers.sh env)"
  scripts/bench-concurrency.py GATEWAY_BIN AGENT_BIN [N=200] [wait|poll|block] [ROUNDS=3]

wait: 8 threads submit, then `GET /admin/commands/<id>?waitMs=30000`; poll: the same with a
1 ms poll loop (the harness before); block: N threads each `POST /admin/query`.
PERF=file also records `perf record -g` of both processes during the rounds."""
import json, os, socket, subprocess, sys, threading, time, shutil, urllib.parse

GW, AGENT = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 200
MODE = sys.argv[4] if len(sys.argv) > 4 else "wait"   # wait | block | poll
ROUNDS = int(sys.argv[5]) if len(sys.argv) > 5 else 3
PERF = os.environ.get("PERF")
import tempfile
d = os.path.join(tempfile.gettempdir(), f"mc-bench-concurrency-{os.getpid()}")
subprocess.run(["psql", os.environ["MC_TEST_PG_OWNER_URL"], "-X", "-q", "-c",
                "CREATE OR REPLACE VIEW mc_bench_sleep20 AS SELECT 1 AS ok FROM (SELECT pg_sleep(0.02)) AS s; "
                "GRANT SELECT ON mc_bench_sleep20 TO PUBLIC;"], check=True)
shutil.rmtree(d, ignore_errors=True); os.makedirs(d + "/gw"); os.makedirs(d + "/agent")
gw = subprocess.Popen([GW, "--data-dir", d + "/gw", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                      stdout=subprocess.DEVNULL, stderr=open(d + "/gw.err", "w"), env={**os.environ, "RUST_LOG": "info"})
while True:
    try:
        doc = json.load(open(d + "/gw/admin.json"))
        if doc.get("pid") == gw.pid: break
    except Exception: pass
    time.sleep(0.05)
host, port = doc["addr"].rsplit(":", 1); ADDR = (host, int(port)); TOKEN = doc["token"]

def call(method, path, body=None, timeout=70):
    s = socket.create_connection(ADDR, timeout=timeout)
    b = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(b)}\r\nConnection: close\r\n\r\n".encode() + b)
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), (json.loads(body) if body else None)

st, health = call("GET", "/admin/health")
key = json.loads(subprocess.check_output([GW, "--data-dir", d + "/gw", "keys", "create", "--tenant", "bench", "--name", "Bench", "--json"]))
open(d + "/agent/api-key", "w").write(key["data"]["apiKey"])
u = urllib.parse.urlparse(os.environ["MC_TEST_PG_URL"])
open(d + "/agent/pg-password", "w").write(urllib.parse.unquote(u.password))
cfg = {"connectorName": "Bench", "apiKeyRef": f"file:{d}/agent/api-key", "cloudUrl": health["wsUrl"], "caCertPath": health["caCertPath"],
       "logLevel": "warn", "logDir": d + "/agent/logs", "workers": 10, "maxResultMB": 64,
       "connections": [{"name": "pg", "type": "postgres", "host": u.hostname, "port": u.port, "database": u.path[1:], "user": u.username,
                        "poolMax": 10, "passwordRef": f"file:{d}/agent/pg-password"}]}
json.dump(cfg, open(d + "/agent/config.json", "w"))
ag = subprocess.Popen([AGENT, "start", "--config", d + "/agent/config.json"], stdout=subprocess.DEVNULL, stderr=open(d + "/agent.err", "w"))
while True:
    st, cs = call("GET", "/admin/connectors")
    if any(c.get("connected") for c in cs): break
    time.sleep(0.05)
SQL = "SELECT ok FROM mc_bench_sleep20"
Q = {"connector": "Bench", "sql": SQL, "connection": "pg", "waitMs": 60000}
for _ in range(12): assert call("POST", "/admin/query", Q)[0] == 200

def cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except Exception: return 0.0
def threads(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = open(f"/proc/{pid}/task/{t}/stat").read()
            name = raw.split("(", 1)[1].rsplit(")", 1)[0]
            f = raw.rsplit(")", 1)[1].split()
            key = name.rstrip("0123456789-")
            out[key] = out.get(key, 0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except Exception: pass
    return out
def pg_pids():
    out = subprocess.run(["pgrep", "-f", "postgres: mc_ro"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]

def one_round():
    errors = []
    def blocking(i):
        try:
            st, b = call("POST", "/admin/query", Q)
        except Exception as e:
            errors.append(repr(e)); return
        if st != 200 or b.get("rowCount") != 1: errors.append((st, b))
    ids = []
    def submit_wait(chunk):
        mine = []
        for _ in chunk:
            st, b = call("POST", "/admin/submit", {k: v for k, v in Q.items() if k != "waitMs"})
            if st != 202: errors.append((st, b)); continue
            mine.append(b["commandId"])
        for cid in mine:
            while True:
                path = f"/admin/commands/{cid}" + ("?waitMs=30000" if MODE == "wait" else "")
                st, b = call("GET", path)
                if st == 200 and b["state"] == "answered":
                    if b.get("outcome", {}).get("rowCount") != 1: errors.append((st, b))
                    break
                if st != 200: errors.append((st, b)); break
                if MODE == "poll": time.sleep(0.001)
    pgs = pg_pids()
    t0a = threads(ag.pid)
    c0 = (cpu(gw.pid), cpu(ag.pid), sum(cpu(p) for p in pgs))
    t0 = time.time()
    if MODE == "block":
        ts = [threading.Thread(target=blocking, args=(i,)) for i in range(N)]
    else:
        ts = [threading.Thread(target=submit_wait, args=(range(t, N, 8),)) for t in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.time() - t0
    c1 = (cpu(gw.pid), cpu(ag.pid), sum(cpu(p) for p in pgs))
    t1a = threads(ag.pid)
    print("   agent threads ms/cmd:", {k: round((v - t0a.get(k, 0)) / N * 1000, 2) for k, v in t1a.items() if v - t0a.get(k, 0) > 0})
    return wall, [b - a for a, b in zip(c0, c1)], errors

# sequential
t0 = time.time(); c0 = (cpu(gw.pid), cpu(ag.pid))
for _ in range(20): call("POST", "/admin/query", Q)
seq = 20 / (time.time() - t0); c1 = (cpu(gw.pid), cpu(ag.pid))
print(f"sequential {seq:.1f}/s  cpu ms/cmd gw {(c1[0]-c0[0])/20*1000:.2f} agent {(c1[1]-c0[1])/20*1000:.2f}")
if PERF:
    perf = subprocess.Popen(["perf", "record", "-g", "-o", PERF, "-p", f"{gw.pid},{ag.pid}"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
for r in range(ROUNDS):
    wall, c, errors = one_round()
    print(f"{MODE} n={N}: {N/wall:.1f}/s ({N/wall/seq:.2f}x)  errors {len(errors)} {errors[:1]}  cpu ms/cmd gw {c[0]/N*1000:.2f} agent {c[1]/N*1000:.2f} pg {c[2]/N*1000:.2f}  load {os.getloadavg()[0]:.1f}")
if PERF:
    perf.send_signal(2); perf.wait()
ag.terminate(); ag.wait(); gw.terminate(); gw.wait()
shutil.rmtree(d, ignore_errors=True)
