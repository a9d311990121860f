#!/usr/bin/env bash
# Every TypeScript suite: the committed WebAssembly crypto matches crates/crypto-wasm (where the
# wasm tools are installed), the SDK (sdk/ts: type check, unit tests, integration against a real
# `herald serve`), the chat app (web/: type check, build, and a check that the committed
# web/dist — which the server embeds — is what the sources build), and the browser end to end
# (playwright-core driving Debian's chromium).
#
# Needs: Node >= 20.10 with npm; the `herald` binary (HERALD_BIN, else
# ${CARGO_TARGET_DIR:-target}/debug/herald, built here if absent); chromium (CHROMIUM, else
# /usr/bin/chromium) for the browser test, which is skipped with a printed reason when absent
# unless HERALD_REQUIRE_SERVICES=1 (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

target="${CARGO_TARGET_DIR:-target}"
export HERALD_BIN="${HERALD_BIN:-$(cd "$root" && realpath -m "$target")/debug/herald}"
if [ ! -x "$HERALD_BIN" ]; then
  echo "==> building herald (no binary at $HERALD_BIN)"
  cargo build -p herald-cli --locked
fi

echo "==> sdk/ts/src/wasm: the committed WebAssembly build of crates/crypto-wasm matches its sources"
set +e
bash scripts/build-wasm --check
rc=$?
set -e
if [ "$rc" = 3 ]; then
  echo "skipped: the wasm tools are not installed (see scripts/build-wasm); the committed build is used as is"
elif [ "$rc" != 0 ]; then
  exit "$rc"
fi

echo "==> sdk/ts: install, type check, unit and integration tests"
npm ci --prefix sdk/ts --no-audit --no-fund
(cd sdk/ts && npm run build && node --experimental-websocket --test --test-concurrency=1 dist/test/)

echo "==> web: install, type check, build; the committed web/dist must match the sources"
npm ci --prefix web --no-audit --no-fund
(cd web && npm run build)
if ! git diff --quiet -- web/dist; then
  echo "web/dist differs from what web/src builds: run (cd web && npm run build) and commit web/dist" >&2
  git --no-pager diff --stat -- web/dist >&2
  exit 1
fi

echo "==> web: browser end to end"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
  (cd web && CHROMIUM="$chromium" node --test --test-concurrency=1 e2e/)
elif [ "${HERALD_REQUIRE_SERVICES:-0}" = "1" ]; then
  echo "chromium not found at $chromium (apt-get install -y chromium)" >&2
  exit 1
else
  echo "skipped: no chromium at $chromium (apt-get install -y chromium, or set CHROMIUM)"
fi
