#!/usr/bin/env bash
# Every suite, as the README's test command: the Rust workspace (unit, store on disk, server
# over sockets, CLI as a process, SDK against the real server, the benches' smoke tests against
# Herald and its peers), then schemathesis against the server's own OpenAPI document.
#
# Needs: the Rust toolchain; Python 3 with venv (schemathesis is installed into
# /var/tmp/herald-venv on first use); for the peer smoke tests, NATS (4222), Redis (6379) and
# Mosquitto (1883) on loopback and `npm ci --prefix bench/peers/socketio` (peers that are
# absent are skipped, unless HERALD_BENCH_REQUIRE_PEERS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
bash scripts/schemathesis.sh
