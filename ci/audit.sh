#!/usr/bin/env bash
# Supply-chain checks of Cargo.lock (and of the fuzz crate's own crates/depot/fuzz/Cargo.lock) with
# cargo-deny (policy: deny.toml at the repository root).
#
#   licenses  every crate's license is on the allow list
#   bans      no wildcard versions; duplicate versions reported
#   sources   every crate comes from crates.io (no git, no other registry)
#   advisories  RustSec vulnerabilities — needs the advisory database, which cargo-deny clones
#             from GitHub. Where GitHub is unreachable (this project's machines reach crates.io,
#             PyPI, Debian and npm only) it is SKIPPED with a message, unless
#             AUDIT_REQUIRE_ADVISORIES=1, which makes that a failure.
#
# Installs cargo-deny (pinned: cargo_deny_version below) with `cargo install --locked` only if that
# version is missing. cargo-deny's own release profile (fat LTO, one codegen unit) takes ~24 minutes
# on two cores; the install overrides it (no LTO, 16 codegen units, opt-level 1) and takes about
# two minutes, once per machine. The first three checks then take a few seconds; they are not run
# with --offline because cargo-deny needs the metadata of every platform's dependencies (Windows
# crates included), which a fresh machine has not downloaded yet. Duplicate versions are listed
# without their inclusion graphs (`cargo deny check bans` shows them).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
cargo_deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
    echo "ci/audit.sh: installing cargo-deny $cargo_deny_version (cargo install --locked, fast profile)"
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
        cargo install --locked "cargo-deny@$cargo_deny_version"
    echo "ci/audit.sh: installed in $((SECONDS - start)) s"
fi
cargo deny --version

echo "ci/audit.sh: cargo deny check licenses bans sources"
cargo deny check --hide-inclusion-graph licenses bans sources
# The fuzz crate is a workspace of its own, with its own Cargo.lock: the same policy.
echo "ci/audit.sh: the same for crates/depot/fuzz"
cargo deny --manifest-path crates/depot/fuzz/Cargo.toml check \
    --hide-inclusion-graph licenses bans sources

echo "ci/audit.sh: cargo deny check advisories"
set +e
out=$(cargo deny check advisories 2>&1)
status=$?
set -e
echo "$out" | tail -20
if [ $status -ne 0 ]; then
    if echo "$out" | grep -q "failed to fetch advisory database"; then
        if [ "${AUDIT_REQUIRE_ADVISORIES:-0}" = "1" ]; then
            echo "ci/audit.sh: FAILED: the RustSec advisory database cannot be fetched"
            exit 1
        fi
        echo "ci/audit.sh: SKIPPED advisories: the RustSec advisory database cannot be fetched" \
             "from GitHub on this machine; licenses, bans and sources passed ($((SECONDS - start)) s)"
        exit 0
    fi
    echo "ci/audit.sh: FAILED: advisories"
    exit $status
fi
echo "ci/audit.sh: all checks passed ($((SECONDS - start)) s)"
