#!/bin/bash
# Without depot: does ext4 keep what fdatasync acknowledged when it aborts (mount -o remount,abort)?
# Two writers loop pwrite(4 KiB tagged "REC <file> <i>") + fdatasync: one appends to a file, one
# overwrites a preallocated file. The file system is aborted under them; the image is then read
# back after journal replay by a mount alone, and after e2fsck -fy.
# Usage (root): ci/ext4-abort/trials.sh [TRIALS]   — prints per trial and a total.
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'umount "$work/mnt" "$work/m2" 2>/dev/null; rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/race" "$here/race.c"
mkdir "$work/mnt" "$work/m2"
check() { # dir over_acked append_acked
    python3 - "$@" <<'PY'
import os, re, sys
d, acked = sys.argv[1], {"over": int(sys.argv[2]), "append": int(sys.argv[3])}
for name, last in acked.items():
    data = open(os.path.join(d, name), "rb").read()
    found = {int(m.group(1)) for m in re.finditer(rb"REC " + name.encode() + rb" (\d{8})\n", data)}
    missing = [i for i in range(last + 1) if i not in found]
    print(f"{name}:{len(missing)}", end=" ")
PY
}
lost_append=0; lost_over=0; trials=${1:-20}
for t in $(seq 1 "$trials"); do
    img=$work/img; rm -f "$img"; truncate -s 64M "$img"; mkfs.ext4 -q -F "$img"
    mount -o loop "$img" "$work/mnt"
    out=$("$work/race" "$work/mnt" $((150 + RANDOM % 300)))
    umount "$work/mnt"
    oa=$(echo "$out" | sed -n 's/^over *acked_last=\(-\?[0-9]*\).*/\1/p')
    aa=$(echo "$out" | sed -n 's/^append acked_last=\(-\?[0-9]*\).*/\1/p')
    cp "$img" "$img.replay"; cp "$img" "$img.fsck"
    mount -o loop "$img.replay" "$work/m2"; r=$(check "$work/m2" "$oa" "$aa"); umount "$work/m2"
    e2fsck -fy "$img.fsck" >/dev/null 2>&1
    mount -o loop "$img.fsck" "$work/m2"; f=$(check "$work/m2" "$oa" "$aa"); umount "$work/m2"
    echo "trial $t: acked over=$oa append=$aa; missing after replay: $r; after e2fsck: $f"
    [[ $r == *"append:0"* ]] || lost_append=$((lost_append + 1))
    [[ $r == "over:0"* ]] || lost_over=$((lost_over + 1))
done
echo "$(uname -r): of $trials trials, an acknowledged append was missing in $lost_append, an acknowledged overwrite in $lost_over"
