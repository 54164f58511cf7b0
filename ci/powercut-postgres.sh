#!/usr/bin/env bash
# PostgreSQL on forgetfs, as a yardstick for depot's power-cut figures (BENCHMARKS.md), beside
# ci/powercut-redis.sh: one psql session INSERTs 1, 2, 3, … (autocommit, one row a transaction)
# and notes every acknowledged number; at a random moment the power is cut (forgetfs SIGUSR1) and
# the postmaster and its children are SIGKILLed; then forgetfs is mounted again, PostgreSQL
# started on the same data directory (crash recovery), and the table read back: every
# acknowledged number missing is lost. Once with synchronous_commit=on, once with off (fsync=on
# both times): with off, PostgreSQL acknowledges a commit before its WAL is flushed, by design.
# Needs root, /dev/fuse, PostgreSQL's server binaries (bash ci/postgres.sh) and psql. Not in CI.
#   CUTS=3 bash ci/powercut-postgres.sh          (after cargo build -p forgetfs)
# The cluster is made once with initdb (which fsyncs it) outside the mount and copied into each
# cut's backing directory, so every cut starts from a durable cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
forgetfs=${FORGETFS:-target/debug/forgetfs}
cuts=${CUTS:-3}
case "$cuts" in '' | *[!0-9]*) echo "CUTS must be a number of cuts, not '$cuts'" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "powercut-postgres.sh: needs root (it mounts forgetfs)" >&2; exit 2; }
[ -e /dev/fuse ] || { echo "powercut-postgres.sh: no /dev/fuse" >&2; exit 2; }
[ -x "$forgetfs" ] || { echo "no forgetfs at $forgetfs: cargo build -p forgetfs, or set FORGETFS" >&2; exit 2; }
command -v psql >/dev/null || { echo "powercut-postgres.sh: no psql (apt-get install postgresql-client)" >&2; exit 2; }
bindir=""
if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then bindir=$(pg_config --bindir); fi
if [ -z "$bindir" ]; then
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then bindir=$d; break; fi
  done
fi
[ -n "$bindir" ] || { echo "no PostgreSQL server binaries (initdb); run bash ci/postgres.sh" >&2; exit 2; }
user=postgres
id -u "$user" >/dev/null 2>&1 || user=nobody

work=$(mktemp -d)
chmod 755 "$work"
port=$((20000 + RANDOM % 20000))
fs="" pm="" writer=""
cleanup() {
  [ -n "$writer" ] && kill "$writer" 2>/dev/null || true
  if [ -n "$pm" ]; then kill -9 "$pm" $(pgrep -P "$pm") 2>/dev/null || true; fi
  [ -n "$fs" ] && kill -TERM "$fs" 2>/dev/null || true
  sleep 0.3
  for m in "$work"/*/mnt; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

as_pg() { runuser -u "$user" -- "$@"; }
mount_fs() { # backing mnt -> pid in $fs
  "$forgetfs" "$1" "$2" 2>>"$work/forgetfs.log" &
  fs=$!
  for _ in $(seq 100); do mountpoint -q "$2" && return; sleep 0.05; done
  echo "forgetfs did not mount $2 (see $work/forgetfs.log)" >&2; exit 1
}
sql() { psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres postgres "$@"; }
start_pg() { # data mode -> postmaster pid in $pm
  as_pg "$bindir/postgres" -D "$1" -p "$port" -k "$work/sock" -c listen_addresses=127.0.0.1 \
    -c fsync=on -c synchronous_commit="$2" -c full_page_writes=on >>"$work/postgres.log" 2>&1 &
  for _ in $(seq 600); do
    if sql -c 'SELECT 1' >/dev/null 2>&1; then
      pm=$(head -1 "$1/postmaster.pid")
      return 0
    fi
    sleep 0.05
  done
  echo "postgres did not start on $1 (see $work/postgres.log):" >&2; tail -5 "$work/postgres.log" >&2
  return 1
}
kill_pg() { # the postmaster and every child of it, at once
  kill -9 "$pm" $(pgrep -P "$pm") 2>/dev/null || true
  while kill -0 "$pm" 2>/dev/null; do sleep 0.01; done
  pm=""
}

mkdir -p "$work/template" "$work/sock"
chown "$user" "$work/template" "$work/sock"
as_pg "$bindir/initdb" -D "$work/template/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null

for mode in on off; do
  total_acked=0 total_lost=0 failed_starts=0
  for cut in $(seq "$cuts"); do
    dir=$work/$mode-$cut
    mkdir -p "$dir/backing" "$dir/mnt"
    cp -a "$work/template/data" "$dir/backing/data"
    sync
    mount_fs "$dir/backing" "$dir/mnt"
    start_pg "$dir/mnt/data" "$mode"
    sql -c 'CREATE TABLE t (v bigint PRIMARY KEY)' -c 'CHECKPOINT'
    # One session, one INSERT per transaction; psql prints each number once it is committed.
    seq 1 100000000 | sed 's/.*/INSERT INTO t VALUES (&) RETURNING v;/' | sql >"$dir/acked" 2>/dev/null &
    writer=$!
    sleep "1.$((RANDOM % 9))"
    kill -USR1 "$fs"
    kill_pg
    wait "$writer" 2>/dev/null || true
    writer=""
    kill -TERM "$fs"; wait "$fs" 2>/dev/null || true
    mount_fs "$dir/backing" "$dir/mnt"
    acked=$(wc -l <"$dir/acked")
    if start_pg "$dir/mnt/data" "$mode"; then
      sql -c 'SELECT v FROM t' | sort >"$dir/stored"
      stored=$(wc -l <"$dir/stored")
      lost=$(sort "$dir/acked" | comm -23 - "$dir/stored" | wc -l)
      kill_pg
    else
      stored=0 lost=$acked failed_starts=$((failed_starts + 1))
      [ -n "$pm" ] && kill_pg
    fi
    echo "postgres synchronous_commit=$mode cut $cut: $acked acked, $stored stored after the cut, $lost lost"
    total_acked=$((total_acked + acked)) total_lost=$((total_lost + lost))
    kill -TERM "$fs"; wait "$fs" 2>/dev/null || true
    fs=""
    rm -rf "$dir/backing"
  done
  echo "postgres synchronous_commit=$mode: $cuts cuts, $total_acked acked, $total_lost lost, $failed_starts failed starts"
done
