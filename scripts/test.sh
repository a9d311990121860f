#!/usr/bin/env bash
# Every suite, as the README's test command: the Rust workspace (unit, store on disk, server
# over sockets, CLI as a process, SDK against the real server, the benches' smoke tests against
# Herald and its peers), then schemathesis against the server's own OpenAPI document, then
# the Python SDK (ruff, mypy --strict, pytest against a real `herald serve`).
#
# Needs: the Rust toolchain; Python 3.10+ with venv (schemathesis is installed into
# /var/tmp/herald-venv, the Python SDK and its dev tools into /var/tmp/herald-py-venv, on
# first use); for the PostgreSQL store, the NATS broker and the
# three-node tests, PostgreSQL (5432, user postgres, trust on loopback; initdb for the restart
# tests) and NATS (4222); for the peer smoke tests, NATS, Redis (6379) and Mosquitto (1883) on
# loopback and `npm ci --prefix bench/peers/socketio`. What is absent is skipped with a printed
# reason, unless HERALD_REQUIRE_SERVICES=1 / HERALD_BENCH_REQUIRE_PEERS=1 (CI sets both).
# Then the TypeScript suites (scripts/test-ts.sh: the SDK, the web app, the browser end to end;
# Node >= 20.10 and chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
bash scripts/schemathesis.sh
bash scripts/test-python.sh
bash scripts/test-ts.sh
