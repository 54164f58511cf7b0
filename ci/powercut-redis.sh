#!/usr/bin/env bash
# Redis on forgetfs, as a yardstick for depot's power-cut figures (BENCHMARKS.md): one client
# RPUSHes 1, 2, 3, … and notes every acknowledged number; at a random moment the power is cut
# (forgetfs SIGUSR1) and redis-server SIGKILLed; then forgetfs is mounted again, Redis started on
# the same directory, and the list read back: every acknowledged number missing is lost.
# Needs root, /dev/fuse, redis-server and redis-cli. Not part of CI.
#   CUTS=3 bash ci/powercut-redis.sh          (after cargo build -p forgetfs)
# WARM=1 first starts Redis once, stops it cleanly and fsyncs its directories, so that the cut
# hits a Redis whose files already exist durably (without it, the cut hits Redis's first run).
set -euo pipefail
cd "$(dirname "$0")/.."
forgetfs=${FORGETFS:-target/debug/forgetfs}
cuts=${CUTS:-3}
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
trap 'pkill -P $$ 2>/dev/null || true; for m in "$work"/*/mnt; do umount -l "$m" 2>/dev/null || true; done' EXIT

mount_fs() { # backing mnt -> pid in $fs
  "$forgetfs" "$1" "$2" 2>>"$work/forgetfs.log" &
  fs=$!
  for _ in $(seq 100); do mountpoint -q "$2" && return; sleep 0.05; done
  echo "forgetfs did not mount $2" >&2; exit 1
}
start_redis() { # dir mode -> pid in $rs
  redis-server --port "$port" --dir "$1" --appendonly yes --appendfsync "$2" --save '' \
    >>"$work/redis.log" 2>&1 &
  rs=$!
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start (see $work/redis.log)" >&2; tail -5 "$work/redis.log" >&2; return 1
}

for mode in always everysec; do
  total_acked=0 total_lost=0 failed_starts=0
  for cut in $(seq "$cuts"); do
    dir=$work/$mode-$cut
    mkdir -p "$dir/backing" "$dir/mnt"
    mount_fs "$dir/backing" "$dir/mnt"
    start_redis "$dir/mnt" "$mode"
    if [ "${WARM:-0}" = 1 ]; then
      redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
      wait "$rs" 2>/dev/null || true
      python3 -c 'import os, sys
for d in sys.argv[1:]:
    fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)' "$dir/mnt" "$dir/mnt/appendonlydir"
      start_redis "$dir/mnt" "$mode"
    fi
    : >"$dir/acked"
    (
      i=0
      while true; do
        i=$((i + 1))
        redis-cli -p "$port" RPUSH l "$i" >/dev/null 2>&1 || exit 0
        echo "$i" >>"$dir/acked"
      done
    ) &
    writer=$!
    sleep "1.$((RANDOM % 9))"
    kill -USR1 "$fs"; kill -9 "$rs"; wait "$rs" 2>/dev/null || true
    kill "$writer" 2>/dev/null || true; wait "$writer" 2>/dev/null || true
    sleep 0.2
    kill -TERM "$fs"; wait "$fs" 2>/dev/null || true
    mount_fs "$dir/backing" "$dir/mnt"
    acked=$(wc -l <"$dir/acked")
    if start_redis "$dir/mnt" "$mode"; then
      stored=$(redis-cli -p "$port" LLEN l)
      redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
      wait "$rs" 2>/dev/null || true
    else
      stored=0 failed_starts=$((failed_starts + 1))
      kill -9 "$rs" 2>/dev/null || true
    fi
    lost=$((acked > stored ? acked - stored : 0))
    echo "redis appendfsync=$mode cut $cut: $acked acked, $stored stored after the cut, $lost lost"
    total_acked=$((total_acked + acked)) total_lost=$((total_lost + lost))
    kill -TERM "$fs"; wait "$fs" 2>/dev/null || true
  done
  echo "redis appendfsync=$mode (warm=${WARM:-0}): $cuts cuts, $total_acked acked, $total_lost lost, $failed_starts failed starts"
done
