#!/usr/bin/env bash
# Fuzzes depot's request handling (crates/depot/fuzz, target `request_body`: body splitting and
# validation, stream names, idempotency keys, each checked against serde_json) with libFuzzer for
# a bounded time, on the STABLE toolchain and without cargo-fuzz.
#
#   FUZZ_SECONDS   how long to fuzz (default 60)
#
# How: a plain `cargo build --profile fuzz --target <host>` of the fuzz crate with the coverage
# instrumentation cargo-fuzz itself passes (cargo-fuzz 0.13 src/project.rs): SanitizerCoverage
# through the stable codegen options `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`
# (inline 8-bit counters, PC table, compare tracing, stack depth), `--cfg fuzzing`, plus
# debug assertions and overflow checks. None of it needs nightly or RUSTC_BOOTSTRAP; libfuzzer-sys
# compiles libFuzzer's C++ with the system g++. `--target` keeps the flags off build scripts and
# proc macros (as cargo-fuzz does), which could not link the coverage callbacks. No
# AddressSanitizer (that would need nightly or -Zbuild-std): depot and the fuzz target are safe
# Rust, so the bugs to find are panics, overflows, failed assertions, hangs and wrong answers, which
# this build catches. The build goes to target/fuzz (its own target dir). It is small: the target
# compiles depot's pure src/http/input.rs in directly instead of depending on depot, so the
# instrumented build is libFuzzer, serde_json and http — about a minute cold.
#
# The run: libFuzzer over a temporary copy of the committed corpus (crates/depot/fuzz/corpus/
# request_body, which is only read; new inputs are discarded). The script checks that libFuzzer
# loaded the inline 8-bit counters (that is, coverage guidance works) and prints coverage at the
# start and the end. A crash, panic or timeout fails the script and leaves the input in
# crates/depot/fuzz/artifacts/request_body/. Reproduce with the same binary:
#
#   target/fuzz/<host>/fuzz/request_body crates/depot/fuzz/artifacts/request_body/crash-...
#
# or, with a nightly toolchain and cargo-fuzz, `cargo +nightly fuzz run request_body <file>` in
# crates/depot/fuzz (cargo fuzz also works for longer local fuzzing, e.g. with -s address).
#
# The same properties run on every `cargo test`, bounded and without coverage guidance:
# crates/depot/tests/input_properties.rs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/crates/depot/fuzz"
seconds="${FUZZ_SECONDS:-60}"
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$root/target/fuzz"

flags=(
    --cfg fuzzing
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    -Cdebug-assertions
    -Coverflow-checks
)
case "$host" in *-linux-*) flags+=(-Cllvm-args=-sanitizer-coverage-stack-depth) ;; esac

t0=$SECONDS
echo "ci/fuzz.sh: building request_body ($(rustc -V), target dir $CARGO_TARGET_DIR)"
RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" \
    cargo build --locked --profile fuzz --target "$host" --bin request_body
bin="$CARGO_TARGET_DIR/$host/fuzz/request_body"
echo "ci/fuzz.sh: build took $((SECONDS - t0)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp corpus/request_body/* "$work/corpus/"
artifacts="$PWD/artifacts/request_body"
mkdir -p "$artifacts"

echo "ci/fuzz.sh: fuzzing request_body for ${seconds} s over a copy of corpus/request_body" \
     "($(ls "$work/corpus" | wc -l) inputs)"
set +e
"$bin" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work/corpus" 2>&1 | tee "$work/log"
status=${PIPESTATUS[0]}
set -e

counters=$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$work/log" | head -1)
cov_start=$(sed -n 's/.*[[:space:]]INITED cov: \([0-9]*\) .*/\1/p' "$work/log" | head -1)
cov_end=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$work/log" | tail -1)
if [ $status -ne 0 ]; then
    echo "ci/fuzz.sh: FAILED (libFuzzer exit $status); the input is in $artifacts/:" >&2
    ls -l "$artifacts" >&2
    echo "reproduce: $bin <that file>" >&2
    exit 1
fi
if [ -z "$counters" ] || [ "$counters" -eq 0 ]; then
    echo "ci/fuzz.sh: FAILED: libFuzzer loaded no inline 8-bit counters: the build is not" \
         "instrumented, so the fuzzing was blind" >&2
    exit 1
fi
echo "ci/fuzz.sh: no crash in ${seconds} s; ${counters} inline 8-bit counters;" \
     "cov ${cov_start:-?} after the corpus -> ${cov_end:-?} at the end;" \
     "$(($(ls "$work/corpus" | wc -l) - $(ls corpus/request_body | wc -l))) new corpus entries (not kept)"
