#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are here for depot's
# forwarding tests (crates/depot/tests/forward.rs), which start private clusters of their own on
# 127.0.0.1 and free ports; nothing here starts a server. Installs Debian's `postgresql` package
# when no server binaries are found. CI runs this before the tests and then exports
# REQUIRE_POSTGRES_TESTS=1, so that a missing PostgreSQL fails those tests instead of skipping them.
set -euo pipefail

# The first directory holding both initdb and pg_ctl: `pg_config --bindir`, PATH, then the newest
# /usr/lib/postgresql/*/bin (Debian keeps the server binaries off PATH) — the order the tests use.
find_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

if ! bindir=$(find_bindir); then
  echo "no PostgreSQL server binaries found; installing Debian's postgresql package"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bindir=$(find_bindir) || {
    echo "ci/postgres.sh: the postgresql package is installed but no initdb/pg_ctl was found" >&2
    exit 1
  }
fi
echo "PostgreSQL server binaries in $bindir: $("$bindir/postgres" --version)"

# The tests run as root, and PostgreSQL refuses to: they run the server as the `postgres` user
# (which the package creates; `nobody` otherwise) through runuser.
if [ "$(id -u)" = 0 ]; then
  command -v runuser >/dev/null || { echo "ci/postgres.sh: runuser (util-linux) is missing" >&2; exit 1; }
  id -u postgres >/dev/null 2>&1 || echo "note: no postgres user; the tests will run the server as nobody"
fi
