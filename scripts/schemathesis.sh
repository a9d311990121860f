#!/usr/bin/env bash
# Property-based tests of the REST API against its own OpenAPI document: builds `herald`,
# starts `herald serve` on a free port with a temporary data directory, mints a token, runs
# schemathesis (every check, see scripts/schemathesis.toml; a bounded number of examples per operation) against
# /v1/openapi.json, and stops the server. Exit status: schemathesis's (0 = no failure).
#
# Environment (all optional):
#   ST_EXAMPLES   examples per operation and phase (default 40; the run stays under ~2 minutes)
#   ST_SEED       schemathesis seed (default fixed, so CI runs are reproducible; "random" for none)
#   HERALD_VENV   the Python venv holding schemathesis (default /var/tmp/herald-venv; created
#                 and filled with pip on first use)
#   CARGO_TARGET_DIR  as for cargo
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

examples=${ST_EXAMPLES:-40}
seed=${ST_SEED:-20261201}
venv=${HERALD_VENV:-/var/tmp/herald-venv}
st_version=4.32.5

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
    echo "schemathesis.sh: installing schemathesis $st_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi

cargo build --quiet --locked -p herald-cli
bin="${CARGO_TARGET_DIR:-$root/target}/debug/herald"

data=$(mktemp -d)
report=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
"$bin" serve --data "$data" --listen "127.0.0.1:$port" --durability relaxed >"$report/server.log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

token=$("$bin" token --data "$data" --sub schemathesis --name "Schemathesis")

seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()

# /v1/ws is excluded: a schema-valid request to it is a WebSocket upgrade, which schemathesis
# cannot speak; the socket has its own tests (crates/server/tests). The rest get every check.
# Run from the report directory: schemathesis keeps a cache (.schemathesis/) in its working
# directory, which must not land in the work tree.
status=0
cd "$report"
"$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" \
    run "http://127.0.0.1:$port/v1/openapi.json" \
    --wait-for-schema 30 \
    --header "Authorization: Bearer $token" \
    --max-examples "$examples" \
    "${seed_args[@]}" \
    --exclude-path /v1/ws \
    --request-timeout 10 \
    --report junit --report-dir "$report" \
    --no-color || status=$?

if [ "$status" -ne 0 ]; then
    echo "schemathesis.sh: failures; server log and JUnit report in $report" >&2
    if grep -q "panicked" "$report/server.log"; then
        grep -m5 -A3 "panicked" "$report/server.log" >&2
    fi
else
    rm -rf "$report"
fi
exit "$status"
