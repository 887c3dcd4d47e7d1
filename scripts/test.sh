#!/usr/bin/env bash
# The test command: starts a real S3-compatible server (moto) and a
# throwaway PostgreSQL cluster on loopback, installs a real Terraform
# (0.11.11, cached), then runs every test of the workspace against memory,
# local files, S3 and PostgreSQL, and schemathesis against the
# server's OpenAPI document (scripts/schemathesis.sh). Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" = "true" ]; then export TENANCY_REQUIRE_S3=1 TENANCY_REQUIRE_TERRAFORM=1 TENANCY_REQUIRE_POSTGRES=1; fi
# shellcheck source=scripts/s3-server.sh
source scripts/s3-server.sh
# shellcheck source=scripts/postgres-server.sh
source scripts/postgres-server.sh
# shellcheck source=scripts/terraform.sh
source scripts/terraform.sh
cargo test --workspace --all-features "$@"
# The OpenAPI document against a live server (schemathesis, every check). The
# test build (cached: a no-op after the run above) holds the server binary.
cargo test --workspace --all-features --no-run -q
bash scripts/schemathesis.sh "${CARGO_TARGET_DIR:-target}/debug/tenancy-server"
# The 30-line embedding example must keep working as README shows it.
cargo run -q -p tenancy-examples --example embed
