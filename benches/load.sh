#!/usr/bin/env bash
# The HTTP load benchmark, one command: `bash benches/load.sh`.
#
# Builds tenancy-server and a bare axum server (release), starts both on
# loopback, creates an enterprise tenant through the admin API, then runs wrk
# interleaved: bare handler vs authenticated `GET /v1/tenant` through the full
# tenant middleware, ROUNDS times each. Prints throughput and p99 per run and
# the ratios. Then measures the server's RSS holding 10k tenants.
#
# Needs wrk (apt-get install wrk). Knobs: DURATION (default 10s), CONNS (64),
# THREADS (2), ROUNDS (3), TENANTS (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"; TENANTS="${TENANTS:-10000}"
command -v wrk >/dev/null || { echo "load.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }

cargo build --release -q -p tenancy-server --bin tenancy-server
cargo build --release -q -p tenancy-benches --bin bare-axum
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

token="load-bench-admin-token-0123456789"
sport=$(free_port); bport=$(free_port)
TENANCY_HOME="$work/home" TENANCY_ADMIN_TOKEN="$token" TENANCY_BCRYPT_COST=4 RUST_LOG=warn \
  target/release/tenancy-server --listen "127.0.0.1:$sport" --metrics-listen off --backend "file://$work/data" \
  >"$work/server.log" 2>&1 &
spid=$!; pids+=("$spid")
target/release/bare-axum "127.0.0.1:$bport" >"$work/bare.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$sport/healthz" && curl -sf -o /dev/null "http://127.0.0.1:$bport/v1/tenant" && break
  sleep 0.1
done

admin() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
secret=$(admin -X POST "http://127.0.0.1:$sport/v1/tenants" \
  -d '{"id":"loadbench","plan":"enterprise","limits":{"requests_per_second":100000000,"burst":200000000}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
curl -sf -o /dev/null -H "X-API-Key: $secret" "http://127.0.0.1:$sport/v1/tenant"

run() { # name url [header]
  local out
  if [ $# -ge 3 ]; then
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$3" "$2")
  else
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$2")
  fi
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$1 rps=$rps p99=$p99 non2xx=${non2xx:-0}"
}

echo "== load: wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS interleaved rounds"
results=()
for r in $(seq 1 "$ROUNDS"); do
  results+=("$(run "bare#$r" "http://127.0.0.1:$bport/v1/tenant")")
  echo "${results[-1]}"
  results+=("$(run "full#$r" "http://127.0.0.1:$sport/v1/tenant" "X-API-Key: $secret")")
  echo "${results[-1]}"
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys, re
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v); return float(m.group(1)) * {"us":0.001,"ms":1,"s":1000}[m.group(2)]
rows = [dict(kv.split("=") for kv in l.split()[1:]) | {"name": l.split()[0]} for l in sys.stdin if l.strip()]
bare = [r for r in rows if r["name"].startswith("bare")]; full = [r for r in rows if r["name"].startswith("full")]
avg = lambda xs: sum(xs) / len(xs)
brps, frps = avg([float(r["rps"]) for r in bare]), avg([float(r["rps"]) for r in full])
bp99, fp99 = avg([ms(r["p99"]) for r in bare]), avg([ms(r["p99"]) for r in full])
print(f"bare: {brps:,.0f} req/s, p99 {bp99:.2f} ms")
print(f"full: {frps:,.0f} req/s, p99 {fp99:.2f} ms")
print(f"throughput ratio full/bare = {frps/brps:.3f} (target >= 0.85); p99 ratio = {fp99/bp99:.2f} (target <= 2)")
bad = sum(int(r["non2xx"]) for r in full)
print(f"non-2xx answers on the full path: {bad}")
'

echo "== rss: creating $TENANTS tenants through the admin API"
python3 - "$sport" "$token" "$TENANTS" <<'PY'
import json, sys, urllib.request, concurrent.futures
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def create(i):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tenants", method="POST",
        data=json.dumps({"id": f"rss-{i:06d}"}).encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["secret"]
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    secrets = list(ex.map(create, range(n)))
def touch(s):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tenant", headers={"X-API-Key": s})
    with urllib.request.urlopen(req) as r:
        r.read()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(touch, secrets))
print(f"created {n} tenants and authenticated each once")
PY
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$spid/status")
echo "server RSS with $TENANTS tenants (each authenticated once): $((rss_kb / 1024)) MB (peak $((hwm_kb / 1024)) MB; target <= 64 MB)"
