#!/usr/bin/env bash
# Holds tenancy-server's OpenAPI document to the server: runs schemathesis
# (pinned, installed into a cached venv) with every check, positive and
# negative data and the stateful phase against a live `tenancy-server` on
# local files, authenticated: the tenant routes with a tenant secret, the
# admin routes with the admin token, and last the admin credential change
# (which ends the admin token the other runs use). Any failure fails.
#
# Usage: scripts/schemathesis.sh [path to the tenancy-server binary]
# (default: $CARGO_TARGET_DIR or target, /debug/tenancy-server).
# Variables: ST_VENV (default ~/.cache/tenancy-schemathesis-venv),
# ST_MAX_EXAMPLES (default 20, per operation and phase). With CI=true a
# schemathesis that cannot be installed or run is an error; otherwise the
# run is skipped loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
ST_VERSION=4.32.5
ST_VENV="${ST_VENV:-$HOME/.cache/tenancy-schemathesis-venv}"
ST_MAX_EXAMPLES="${ST_MAX_EXAMPLES:-20}"
BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/tenancy-server}"
CONFIG="$PWD/tenancy-server/tests/schemathesis/schemathesis.toml"

unavailable() {
  if [ "${CI:-}" = "true" ]; then
    echo "schemathesis: $1 (required in CI)" >&2
    exit 1
  fi
  echo "schemathesis: $1; the OpenAPI check is SKIPPED" >&2
  exit 0
}

if ! "$ST_VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  echo "schemathesis: installing schemathesis $ST_VERSION into $ST_VENV" >&2
  python3 -m venv "$ST_VENV" || unavailable "python3 -m venv failed"
  "$ST_VENV/bin/pip" install -q "schemathesis==$ST_VERSION" || unavailable "pip install schemathesis failed"
fi
"$ST_VENV/bin/st" --version >/dev/null 2>&1 || unavailable "$ST_VENV/bin/st does not run"
[ -x "$BIN" ] || { echo "schemathesis: no server binary at $BIN (cargo build -p tenancy-server)" >&2; exit 1; }

work="$(mktemp -d)"
admin="st-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
TENANCY_ADMIN_TOKEN="$admin" TENANCY_BCRYPT_COST=4 NO_COLOR=1 RUST_LOG=warn \
  "$BIN" --listen 127.0.0.1:0 --metrics-listen off --backend "file://$work/data" \
  >"$work/server.out" 2>"$work/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^tenancy-server listening on \([^ ]*\) .*/\1/p' "$work/server.out")"
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then cat "$work/server.err" >&2; echo "schemathesis: the server did not start" >&2; exit 1; fi
base="http://$addr"
# The tenant under test: enterprise, so its request rate is not what is measured.
secret="$(curl -sf -H "Authorization: Bearer $admin" -d '{"id":"fuzz","plan":"enterprise"}' "$base/v1/tenants" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')"

run() {
  local what="$1"; shift
  echo "schemathesis: $what" >&2
  (cd "$work" && "$ST_VENV/bin/st" --config-file "$CONFIG" --no-color run "$base/openapi.json" \
     --checks all --mode all --max-examples "$ST_MAX_EXAMPLES" --generation-database none \
     --request-timeout 30 --workers 1 "$@")
}
start=$(date +%s)
failed=()
admin_paths='^/v1/(tenants|admin|audit)(/|$)'
# Tenants first (the admin runs may rotate or delete the tenant under test).
run "tenant and open routes, as tenant fuzz" -H "X-API-Key: $secret" --exclude-path-regex "$admin_paths" \
  || failed+=("tenant routes")
run "admin routes" -H "Authorization: Bearer $admin" --include-path-regex "$admin_paths" \
  --exclude-path /v1/admin/credential || failed+=("admin routes")
run "the admin credential" -H "Authorization: Bearer $admin" --include-path /v1/admin/credential \
  || failed+=("the admin credential")
took=$(( $(date +%s) - start ))
if [ ${#failed[@]} -gt 0 ]; then
  echo "schemathesis: failures in: ${failed[*]} (${took}s; the report is above)" >&2
  exit 1
fi
echo "schemathesis: 0 failures in ${took}s" >&2
