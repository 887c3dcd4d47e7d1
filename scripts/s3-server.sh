#!/usr/bin/env bash
# Starts moto (an S3-compatible server) on loopback for the tests and exports
# the AWS_* variables the S3 tests read. Source it: `source scripts/s3-server.sh`.
# The server is stopped when the sourcing shell exits.
#
# Variables: S3_VENV (where moto is installed, default ~/.cache/tenancy-moto-venv),
# S3_PORT (default: a free port). With CI=true a server that cannot start is an error;
# otherwise the S3 tests are skipped loudly.

S3_VENV="${S3_VENV:-$HOME/.cache/tenancy-moto-venv}"
_tenancy_s3_fail() {
  if [ "${CI:-}" = "true" ] || [ "${TENANCY_REQUIRE_S3:-}" = "1" ]; then
    echo "s3-server: $1 (required in CI)" >&2
    exit 1
  fi
  echo "s3-server: $1; S3 tests will be SKIPPED" >&2
  return 1
}

_tenancy_s3_start() {
  if [ ! -x "$S3_VENV/bin/moto_server" ]; then
    echo "s3-server: installing moto into $S3_VENV" >&2
    python3 -m venv "$S3_VENV" || { _tenancy_s3_fail "python3 -m venv failed"; return 1; }
    "$S3_VENV/bin/pip" install -q 'moto[server]==5.2.5' || { _tenancy_s3_fail "pip install moto failed"; return 1; }
  fi
  S3_PORT="${S3_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
  local log="${TMPDIR:-/tmp}/tenancy-moto-$S3_PORT.log"
  # moto with atomic conditional writes (see scripts/moto-server.py)
  "$S3_VENV/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto-server.py" 127.0.0.1 "$S3_PORT" >"$log" 2>&1 &
  S3_PID=$!
  trap 'kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true' EXIT
  local up=""
  for _ in $(seq 1 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/"; then up=1; break; fi
    kill -0 "$S3_PID" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$up" ]; then cat "$log" >&2; _tenancy_s3_fail "moto did not start"; return 1; fi
  curl -sf -o /dev/null -X PUT "http://127.0.0.1:$S3_PORT/tenancy-test" || { _tenancy_s3_fail "cannot create bucket"; return 1; }
  export AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_BUCKET=tenancy-test AWS_REGION=us-east-1 \
         AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ALLOW_HTTP=true \
         AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
  echo "s3-server: moto on $AWS_ENDPOINT, bucket $AWS_BUCKET" >&2
}

_tenancy_s3_start || true
