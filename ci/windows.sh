#!/bin/bash
# The Windows CI of this workspace, run on Linux (Debian 12): builds every crate and target for
# x86_64-pc-windows-gnu with Debian's rustc-web 1.96 and mingw, lints it with clippy for that
# target, runs `cargo test` under Wine, and drives real services through Wine's Service Control
# Manager (the tests in ci/windows-e2e/*.sh, helpers in ci/scm.sh).
#
#   bash ci/windows.sh                  # all stages: build clippy test e2e
#   bash ci/windows.sh build e2e        # some stages, in that order
#
# Ends with `windows: N passed, M failed` (tests and end-to-end checks) and exits non-zero on any
# failure, build and clippy included. Everything it makes stays under target/wine: the build, the
# Wine prefix (target/wine/prefix) and the logs (target/wine/logs).
#
# Why this way (see also ci/windows-wine.toml): rustup's toolchains have no Windows std here;
# Debian's rustc-web with rust-web-src builds it with -Zbuild-std (RUSTC_BOOTSTRAP=1). Wine 8 lacks
# bcryptprimitives.dll, which Rust's std imports: ci/bcryptprimitives.c is a 12 KB stand-in.
# `wineserver -p` keeps Wine alive between commands, or services die ~2 s after the last ordinary
# Wine process. `--config` goes after the cargo subcommand, and /usr/bin first in PATH: otherwise
# `cargo clippy` silently lints the Linux target with rustup's clippy.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

STAGES=("$@")
[[ ${#STAGES[@]} == 0 ]] && STAGES=(build clippy test e2e)
PASSED=0
FAILED=0
LOGS=$ROOT/target/wine/logs
WIN_TARGET=$ROOT/target/wine/x86_64-pc-windows-gnu
EVENTS=$LOGS/services.log # stderr of Wine's services.exe and the services: the Event Log trace
E2E_TESTS=()
mkdir -p "$LOGS"
: >"$LOGS/checks.log"

STEP_START=$SECONDS
step() {
  echo "== $* (at $SECONDS s)"
  STEP_START=$SECONDS
}
done_in() { echo "   $1 in $((SECONDS - STEP_START)) s"; }
finish() {
  echo "windows: $PASSED passed, $FAILED failed ($SECONDS s)"
  exit $((FAILED > 0))
}
wants() { [[ " ${STAGES[*]} " == *" $1 "* ]]; }

# --- tools ------------------------------------------------------------------------------------
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null ||
  [[ ! -x /usr/bin/rustc || ! -x /usr/bin/clippy-driver || ! -d /usr/lib/rustlib/src/rust/library ]]; then
  step "installing rustc-web, rust-web-src, rust-web-clippy, mingw, wine"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    rustc-web cargo-web rust-web-src rust-web-clippy gcc-mingw-w64-x86-64 wine wine64 >/dev/null ||
    { echo "cannot install the packages (run as root)"; FAILED=$((FAILED + 1)); finish; }
  done_in installed
fi
# The Linux toolchain (rustup's), for the Linux programs the end-to-end tests drive depot with.
HOST_PATH=$PATH
host_cargo() { env -u RUSTC_BOOTSTRAP PATH="$HOST_PATH" cargo "$@"; }
export RUSTC_BOOTSTRAP=1 PATH=/usr/bin:$PATH
cargo_win() {
  local sub=$1
  shift
  /usr/bin/cargo "$sub" --config ci/windows-wine.toml "$@"
}

# --- build, lint, test ------------------------------------------------------------------------
if wants build; then
  step "build: workspace, all targets, x86_64-pc-windows-gnu"
  if cargo_win build --workspace --all-targets >"$LOGS/build.log" 2>&1; then
    done_in built
  else
    grep -E '^(error|warning)' -A12 "$LOGS/build.log" | head -80
    echo "   build failed: $LOGS/build.log"
    FAILED=$((FAILED + 1))
    finish
  fi
fi

if wants clippy; then
  step "clippy: Windows target, -D warnings"
  if cargo_win clippy --workspace --all-targets -- -D warnings >"$LOGS/clippy.log" 2>&1; then
    done_in clean
  else
    grep -E '^(error|warning)' -A12 "$LOGS/clippy.log" | head -80
    echo "   clippy failed: $LOGS/clippy.log"
    FAILED=$((FAILED + 1))
  fi
fi

# --- Wine -------------------------------------------------------------------------------------
export WINEPREFIX=$ROOT/target/wine/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY
if wants test || wants e2e; then
  # A fresh Wine session for this prefix (only this project's prefix is touched).
  wineserver -k 2>/dev/null
  if [[ ! -f $WINEPREFIX/system.reg ]]; then
    step "new Wine prefix"
    mkdir -p "$WINEPREFIX"
    wine wineboot --init >"$LOGS/wineboot.log" 2>&1
    wineserver -w
    # Wine 8.0 lacks bcryptprimitives.dll (ProcessPrng), which Rust >= 1.78 std imports
    x86_64-w64-mingw32-gcc -shared -O2 -s \
      -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
      ci/bcryptprimitives.c ci/bcryptprimitives.def -ladvapi32
    done_in ready
  fi
  # Persistent: else a service is killed ~2 s after the last ordinary Wine process exits.
  wineserver -p >/dev/null 2>&1
  trap 'wineserver -k 2>/dev/null' EXIT
  # The first Wine process starts services.exe, which (with the services it starts) inherits
  # this stderr and these debug channels: Wine traces every ReportEventW there, which is how the
  # end-to-end tests see what reached the Event Log.
  WINEDEBUG=-all,trace+eventlog,warn+eventlog,err+eventlog \
    wine sc query eventlog >/dev/null 2>"$EVENTS"
fi

# Adds a cargo test log's results to the totals; a failing run in which no test failed (a build
# error, a binary that did not start) counts as one failure and shows its errors.
TEST_PASSED=0
TEST_FAILED=0
count_results() {
  local log=$1 rc=$2 passed failed
  read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
  TEST_PASSED=$((TEST_PASSED + passed))
  TEST_FAILED=$((TEST_FAILED + failed))
  PASSED=$((PASSED + passed))
  FAILED=$((FAILED + failed))
  grep -E '^test .* FAILED$|^---- ' "$log" | head -40
  if [[ $rc != 0 && $failed == 0 ]]; then
    grep -E '^(error|warning)' -A12 "$log" | head -60
    echo "   cargo test failed before its tests ran: $log"
    FAILED=$((FAILED + 1))
    TEST_FAILED=$((TEST_FAILED + 1))
  fi
}

if wants test; then
  step "cargo test under Wine"
  # --no-fail-fast: one failing test binary does not hide the results of the others.
  cargo_win test --workspace --no-fail-fast --lib --bins --tests >"$LOGS/test.log" 2>&1
  rc=$?
  count_results "$LOGS/test.log" "$rc"
  # The doc examples, compiled for Windows and run under Wine, apart: once (1 run in ~10) the
  # merged doctest binary of a crate exited at once under Wine without printing anything.
  # Wine's error channel is on here so that such a start failure says why; a failing run in
  # which no test failed (a binary that did not start) is retried once, and the retry is said.
  WINEDEBUG=err+all cargo_win test --workspace --no-fail-fast --doc >"$LOGS/doctest.log" 2>&1
  rc=$?
  if [[ $rc != 0 ]] && ! grep -qE '^test .* FAILED$' "$LOGS/doctest.log"; then
    echo "   the doc tests did not start under Wine; retrying once ($LOGS/doctest.log):"
    grep -v '^ *\(Compiling\|Finished\|Running\)' "$LOGS/doctest.log" | head -20 | sed 's/^/     /'
    mv "$LOGS/doctest.log" "$LOGS/doctest-first.log"
    WINEDEBUG=err+all cargo_win test --workspace --no-fail-fast --doc >"$LOGS/doctest.log" 2>&1
    rc=$?
  fi
  count_results "$LOGS/doctest.log" "$rc"
  done_in "$TEST_PASSED passed, $TEST_FAILED failed"
fi

# --- end to end through Wine's SCM ------------------------------------------------------------
if wants e2e; then
  # shellcheck source=ci/scm.sh
  source ci/scm.sh
  for test_file in ci/windows-e2e/*.sh; do
    # shellcheck disable=SC1090
    source "$test_file"
  done
  for t in "${E2E_TESTS[@]}"; do
    # E2E_ONLY=e2e_name runs one test (while working on it).
    [[ -n ${E2E_ONLY:-} && $t != "$E2E_ONLY" ]] && continue
    step "e2e: $t"
    "$t"
    done_in finished
  done
fi

finish
