#!/usr/bin/env bash
# A scripted tour of the `tenancy` CLI: the admin workflow and the tenant
# workflow, on the local default backend (file://$TENANCY_HOME/data) in a fresh
# temporary TENANCY_HOME. Prints every command before running it and exits
# non-zero on anything unexpected.
#
#   bash scripts/tour.sh               # debug build (fast to compile)
#   TOUR_PROFILE=release bash scripts/tour.sh
#   TOUR_KEEP=1 bash scripts/tour.sh   # keep the temporary TENANCY_HOME to look around
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${TOUR_PROFILE:-debug}"
echo "== building the tenancy binary ($profile)"
if [ "$profile" = "release" ]; then
  cargo build -q -p tenancy-cli --release
else
  cargo build -q -p tenancy-cli
fi
BIN="${CARGO_TARGET_DIR:-$PWD/target}/$profile/tenancy"

TENANCY_HOME="$(mktemp -d "${TMPDIR:-/tmp}/tenancy-tour.XXXXXX")"
export TENANCY_HOME
unset TENANCY_BACKEND TENANCY_ADMIN_PASSWORD TENANCY_TENANT TENANCY_SECRET
if [ -z "${TOUR_KEEP:-}" ]; then
  trap 'rm -rf "$TENANCY_HOME"' EXIT
fi
ADMIN_PASSWORD="tour-admin-password"

tenancy() { "$BIN" "$@"; }

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '\n== %s\n' "$*"; }
fi
# Shows a command, runs it; stops the tour if it fails.
run() {
  printf '$ tenancy'; printf ' %q' "$@"; printf '\n'
  tenancy "$@"
}
# Shows a command that must fail with exit code $1, runs it, and checks the code.
refused() {
  local want="$1"; shift
  printf '$ tenancy'; printf ' %q' "$@"; printf '   # expect exit %s\n' "$want"
  local code=0
  tenancy "$@" || code=$?
  if [ "$code" != "$want" ]; then
    echo "tour: expected exit $want, got $code" >&2
    exit 1
  fi
}
# The value of a "field" in pretty JSON on stdin.
field() { sed -n "s/^ *\"$1\": \"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

say "TENANCY_HOME=$TENANCY_HOME (sessions and the default local store live here)"
run version

say "Admin: bootstrap the registry (password from stdin) and log in"
printf '$ printf ... | tenancy init --admin-password-stdin\n'
printf '%s\n' "$ADMIN_PASSWORD" | tenancy init --admin-password-stdin
printf '$ printf ... | tenancy admin login --password-stdin\n'
printf '%s\n' "$ADMIN_PASSWORD" | tenancy admin login --password-stdin
run admin session

say "Admin: create two tenants (each secret is shown once)"
printf '$ tenancy --output json tenant init --name acme --display-name "Acme Corp" --plan pro\n'
ACME_SECRET="$(tenancy --output json tenant init --name acme --display-name "Acme Corp" --plan pro | field secret)"
printf '$ tenancy --output json tenant init --name globex --email ops@globex.example\n'
GLOBEX_SECRET="$(tenancy --output json tenant init --name globex --email ops@globex.example | field secret)"
[ -n "$ACME_SECRET" ] && [ -n "$GLOBEX_SECRET" ] || { echo "tour: no secret printed" >&2; exit 1; }
echo "(the secrets went into shell variables; the tour passes them on stdin, never in argv)"
run tenant list
run tenant show acme

say "Tenant acme: log in and keep state with history"
printf '$ printf ... | tenancy login --tenant acme --secret-stdin\n'
printf '%s\n' "$ACME_SECRET" | tenancy login --tenant acme --secret-stdin
run session
printf '$ echo %s | tenancy state put --stack web --env prod\n' "'{\"replicas\": 2, \"image\": \"web:1\"}'"
echo '{"replicas": 2, "image": "web:1"}' | tenancy state put --stack web --env prod
printf '$ echo %s | tenancy state put --stack web --env prod\n' "'{\"replicas\": 3, \"image\": \"web:2\"}'"
echo '{"replicas": 3, "image": "web:2"}' | tenancy state put --stack web --env prod
run state get --stack web --env prod
run state history --stack web --env prod
run state rollback --stack web --env prod --to 1
run state get --stack web --env prod
printf '$ echo "not json" | tenancy state put --stack web --env prod   # expect exit 2\n'
code=0; echo "not json" | tenancy state put --stack web --env prod || code=$?
[ "$code" = 2 ] || { echo "tour: expected exit 2, got $code" >&2; exit 1; }
refused 2 state get --stack ../globex --env prod
run tenant stacks

say "Tenant acme: take a lock, list it, release it"
printf '$ tenancy --output json lock acquire --stack web --env prod --ttl 5m --operation deploy\n'
LOCK_JSON="$(tenancy --output json lock acquire --stack web --env prod --ttl 5m --operation deploy)"
echo "$LOCK_JSON"
LOCK_ID="$(echo "$LOCK_JSON" | field lock_id)"
run lock list
refused 6 lock acquire --stack web --env prod

say "Tenant globex sees none of acme's state or locks"
printf '$ printf ... | tenancy login --tenant globex --secret-stdin\n'
printf '%s\n' "$GLOBEX_SECRET" | tenancy login --tenant globex --secret-stdin
refused 5 state get --stack web --env prod
run state list
run lock list
refused 5 lock release --stack web --env prod --id "$LOCK_ID"   # not held in globex's namespace

say "Back as acme: release the lock"
printf '%s\n' "$ACME_SECRET" | tenancy login --tenant acme --secret-stdin
run lock release --stack web --env prod --id "$LOCK_ID"
run lock list

say "Admin: rotate acme's secret; the old session and secret stop working"
printf '$ tenancy --output json tenant rotate acme --yes\n'
NEW_SECRET="$(tenancy --output json tenant rotate acme --yes | field secret)"
refused 3 state list
printf '$ printf <old secret> | tenancy login --tenant acme --secret-stdin   # expect exit 3\n'
code=0; printf '%s\n' "$ACME_SECRET" | tenancy login --tenant acme --secret-stdin || code=$?
[ "$code" = 3 ] || { echo "tour: expected exit 3, got $code" >&2; exit 1; }
printf '$ printf <new secret> | tenancy login --tenant acme --secret-stdin\n'
printf '%s\n' "$NEW_SECRET" | tenancy login --tenant acme --secret-stdin
run state get --stack web --env prod

say "Admin: suspend acme (its session is refused), then activate it"
run tenant suspend acme --reason "billing review"
refused 4 state list
run tenant activate acme
run state list

say "Admin: delete acme (its state is archived; logins are refused)"
run tenant delete acme --confirm
refused 4 state list
run tenant list
run tenant stats

say "Done: both workflows ran on file://$TENANCY_HOME/data"
if [ -n "${TOUR_KEEP:-}" ]; then
  echo "Kept TENANCY_HOME=$TENANCY_HOME; try: TENANCY_HOME=$TENANCY_HOME $BIN tenant list"
fi
