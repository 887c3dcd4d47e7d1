#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the tests and exports
# TENANCY_TEST_POSTGRES_URL (the PostgreSQL tests each make a fresh schema in
# it) and PGPASSWORD (TCP connections need it). Source it:
# `source scripts/postgres-server.sh`. The cluster is stopped
# and removed when the sourcing shell exits.
#
# Needs PostgreSQL's server binaries (initdb, pg_ctl): Debian's `postgresql`
# package (.ci/run installs it). As root the cluster runs as the `postgres`
# user (the server refuses root). Variables: PG_PORT (default: a free port).
# With CI=true (or TENANCY_REQUIRE_POSTGRES=1) a server that cannot start is an
# error; otherwise the PostgreSQL tests are skipped loudly.

_tenancy_pg_fail() {
  if [ "${CI:-}" = "true" ] || [ "${TENANCY_REQUIRE_POSTGRES:-}" = "1" ]; then
    echo "postgres-server: $1 (required in CI)" >&2
    exit 1
  fi
  echo "postgres-server: $1; PostgreSQL tests will be SKIPPED" >&2
  return 1
}

_tenancy_pg_start() {
  local bin=""
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    local initdb
    initdb="$(command -v initdb || true)"
    [ -n "$initdb" ] && bin="$(dirname "$initdb")"
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    _tenancy_pg_fail "no initdb (install Debian's postgresql package)"; return 1
  fi
  PG_DIR="$(mktemp -d)"
  local as=()
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || { _tenancy_pg_fail "running as root but there is no postgres user"; return 1; }
    chown postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  PG_PORT="${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
  # Connections over TCP need the password (scram-sha-256), as a real
  # server's would: the tests pass it in PGPASSWORD, never in the URL, and
  # check that a user without it cannot reach the store.
  local password
  password="pg-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$password" >"$PG_DIR/pwfile"
  [ "${#as[@]}" -gt 0 ] && chown postgres "$PG_DIR/pwfile"
  if ! "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$PG_DIR/pwfile" -U tenancy >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log" >&2; _tenancy_pg_fail "initdb failed"; return 1
  fi
  if ! "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
      -o "-k $PG_DIR -p $PG_PORT -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null; then
    cat "$PG_DIR/log" >&2; _tenancy_pg_fail "pg_ctl start failed"; return 1
  fi
  PG_BIN="$bin"
  PG_AS="${as[*]}"
  # Stop it with the shell (and the S3 server, whose trap this keeps).
  local previous
  previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
  trap "${previous:+$previous; }$PG_AS '$PG_BIN/pg_ctl' -D '$PG_DIR/data' stop -m fast >/dev/null 2>&1 || true; rm -rf '$PG_DIR'" EXIT
  export TENANCY_TEST_POSTGRES_URL="postgres://tenancy@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
  export PGPASSWORD="$password"
  export TENANCY_TEST_POSTGRES_DATA="$PG_DIR/data" TENANCY_TEST_POSTGRES_BIN="$bin"
  echo "postgres-server: PostgreSQL on 127.0.0.1:$PG_PORT ($("$bin/postgres" --version 2>/dev/null))" >&2
}

_tenancy_pg_start || true
