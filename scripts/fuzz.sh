#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (a bench, not a test: it finds what
# it finds in the time given). A crash stops the run with a non-zero status; libFuzzer's input
# is then under fuzz/artifacts/<target>/ (git-ignored): reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -s none fuzz/artifacts/<target>/<file>
# and turn it into a regression test in crates/proto named after what broke.
#
# Environment (all optional):
#   FUZZ_SECS        seconds per target (default 60)
#   FUZZ_TARGETS     space-separated targets (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER   cargo-fuzz sanitizer (default none: herald-proto forbids unsafe code, so
#                    what fuzzing finds here is panics, overflows and broken invariants, which
#                    need no sanitizer; `address` works too, builds slower)
#   FUZZ_TARGET_DIR  cargo target directory (default /var/tmp/herald-fuzz-target)
#
# Only a stable toolchain is installed: cargo-fuzz passes nightly-only flags (-Z...), and
# RUSTC_BOOTSTRAP=1 makes the stable compiler accept them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

secs=${FUZZ_SECS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/herald-fuzz-target}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
corpus_root=$(mktemp -d)
trap 'rm -rf "$corpus_root"' EXIT

for target in $targets; do
    # New inputs go to a scratch corpus, seeded from the checked-in seeds, so a run leaves the
    # work tree clean.
    corpus="$corpus_root/$target"
    mkdir -p "$corpus" "$root/fuzz/artifacts/$target"
    echo "fuzz.sh: $target for ${secs}s" >&2
    cargo fuzz run "$target" --sanitizer "$sanitizer" "$corpus" "$root/fuzz/seeds/$target" -- \
        -max_total_time="$secs" -print_final_stats=1
done
echo "fuzz.sh: no crash in $targets" >&2
