#!/usr/bin/env bash
# Runs depot's cargo-fuzz target (crates/depot/fuzz: request body splitting and validation,
# stream names, idempotency keys, each checked against serde_json) for a bounded time.
#
#   FUZZ_SECONDS   how long to fuzz (default 60)
#
# Needs a nightly toolchain (rustup's; cargo-fuzz builds with sanitizer flags) and cargo-fuzz,
# which it installs with `cargo install --locked cargo-fuzz` if missing (a few minutes, once per
# machine). The first build of the target compiles depot's dependencies with those flags: several
# minutes on two cores. New inputs go to a temporary corpus; the committed corpus
# (crates/depot/fuzz/corpus/request_body) is only read. A crash fails the script and leaves the
# input in crates/depot/fuzz/artifacts/request_body/ (reproduce with
# `cargo +nightly fuzz run request_body <file>` in crates/depot/fuzz).
#
# The same properties run on every `cargo test`, bounded and without coverage guidance:
# crates/depot/tests/input_properties.rs.
set -euo pipefail
cd "$(dirname "$0")/../crates/depot/fuzz"
seconds="${FUZZ_SECONDS:-60}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "ci/fuzz.sh: no nightly toolchain (rustup toolchain install nightly); cannot fuzz" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    cargo install --locked cargo-fuzz
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build request_body
echo "ci/fuzz.sh: fuzzing request_body for ${seconds} s"
cargo +nightly fuzz run request_body "$work" corpus/request_body -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1
echo "ci/fuzz.sh: no crash in ${seconds} s; $(ls "$work" | wc -l) new corpus entries (not kept)"
