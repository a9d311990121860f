#!/usr/bin/env bash
# The Python SDK's checks (sdk/python): installs the package with its dev tools into a venv
# exactly as a user does (`pip install ./sdk/python`: maturin builds the herald-crypto
# bindings, crates/crypto-py, into the same package; a release build, needs the Rust
# toolchain), then ruff (lint and format), mypy --strict, and pytest against a real
# `herald serve` that the tests start on port 0 (so `herald` is built first unless
# HERALD_BIN names one).
#
# Environment (all optional):
#   HERALD_PY_VENV    the venv to use (default /var/tmp/herald-py-venv; created on first use)
#   HERALD_BIN        the herald binary the tests run (default: built with cargo, debug)
#   CARGO_TARGET_DIR  as for cargo
#   PYTEST_ARGS       extra pytest arguments (e.g. "-k resume -x")
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv=${HERALD_PY_VENV:-/var/tmp/herald-py-venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "test-python.sh: creating the venv $venv" >&2
    python3 -m venv "$venv"
fi
# The bindings were once a package of their own (herald-crypto); a venv that still has it
# would shadow or, uninstalled later, delete the copy herald-client now ships.
if "$venv/bin/python" -m pip show --quiet herald-crypto >/dev/null 2>&1; then
    "$venv/bin/python" -m pip uninstall --quiet --yes herald-crypto
fi
echo "==> pip install ./sdk/python[dev] (builds the herald_crypto extension)" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "./sdk/python[dev]"

if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --quiet --locked -p herald-cli
    export HERALD_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/herald"
fi

cd sdk/python
# The examples (examples/python) are held to the SDK's own settings.
echo "==> ruff check" >&2
"$venv/bin/ruff" check .
"$venv/bin/ruff" check --config pyproject.toml ../../examples/python
echo "==> ruff format --check" >&2
"$venv/bin/ruff" format --check .
"$venv/bin/ruff" format --check --config pyproject.toml ../../examples/python
echo "==> mypy --strict" >&2
"$venv/bin/mypy"
echo "==> pytest" >&2
# shellcheck disable=SC2086
"$venv/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}
