#!/usr/bin/env bash
# The test command: starts a real S3-compatible server (moto) on loopback,
# then runs every test of the workspace against memory, local files and S3.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" = "true" ]; then export TENANCY_REQUIRE_S3=1; fi
# shellcheck source=scripts/s3-server.sh
source scripts/s3-server.sh
cargo test --workspace --all-features "$@"
# The 30-line embedding example must keep working as README shows it.
cargo run -q -p tenancy-examples --example embed
