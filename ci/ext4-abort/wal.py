#!/usr/bin/env python3
"""Walk a SQLite WAL: header, frames, salts, cumulative checksums, commits; and which frames hold
given byte strings. usage: wal.py WAL [needles.txt]  (needles: one byte string per line)"""
import struct, sys
data = open(sys.argv[1], 'rb').read()
needles = [l.rstrip('\n').encode() for l in open(sys.argv[2])] if len(sys.argv) > 2 else []
magic, ver, psz, ckpt, salt1, salt2, c1, c2 = struct.unpack('>8I', data[:32])
big = magic == 0x377f0683
fmt = '>' if big else '<'
def cks(buf, s0, s1):
    n = len(buf) // 4
    w = struct.unpack(fmt + '%dI' % n, buf)
    for i in range(0, n, 2):
        s0 = (s0 + w[i] + s1) & 0xffffffff
        s1 = (s1 + w[i + 1] + s0) & 0xffffffff
    return s0, s1
print(f"size={len(data)} magic={magic:#x} page={psz} ckpt_seq={ckpt} salt=({salt1:#x},{salt2:#x})")
if magic not in (0x377f0682, 0x377f0683):
    print("no WAL header"); sys.exit()
s = cks(data[:24], 0, 0)
print("header checksum", "ok" if s == (c1, c2) else f"BAD {s} != {(c1, c2)}")
fsz = 24 + psz
valid_end = 0; commits = []; last_commit_frame = 0; where = {}
nframes = (len(data) - 32) // fsz
chain_ok = True; first_bad = None
for i in range(nframes):
    off = 32 + i * fsz
    pg, dbsz, fs1, fs2, fc1, fc2 = struct.unpack('>6I', data[off:off + 24])
    page = data[off + 24: off + fsz]
    for k, nd in enumerate(needles):
        if nd in page:
            where.setdefault(k, []).append(i + 1)
    if not chain_ok:
        continue
    if (fs1, fs2) != (salt1, salt2):
        chain_ok = False; first_bad = (i + 1, 'salt', pg, dbsz, fs1, fs2); continue
    s2 = cks(data[off:off + 8], *s); s2 = cks(page, *s2)
    if s2 != (fc1, fc2):
        chain_ok = False; first_bad = (i + 1, 'checksum', pg, dbsz, fs1, fs2); continue
    s = s2
    if dbsz:
        commits.append((i + 1, dbsz)); last_commit_frame = i + 1
print(f"frames in file={nframes}; valid chain: {len(commits)} commits, last commit frame={last_commit_frame}")
print("last commits (frame, db pages):", commits[-5:])
print("chain ends at:", first_bad)
for k, nd in enumerate(needles):
    print(f"needle {k}: frames {where.get(k, [])} {'(beyond last valid commit)' if where.get(k) and min(where[k]) > last_commit_frame else ''}")
