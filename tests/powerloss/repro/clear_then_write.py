#!/usr/bin/env python3
"""What a writer that outlives lazyfs::clear-cache leaves in a WAL-like file.
Append A (fdatasync), append B (no sync), clear-cache, append C (the process
still runs: the power was 'lost' but the program goes on), then read the file."""
import os, sys, time
d, fifo, done = sys.argv[1], sys.argv[2], sys.argv[3]
p = os.path.join(d, 'seg.log')
if os.path.exists(p): os.unlink(p)
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
A, B, C = b'A' * 13930, b'B' * (16461 - 13930), b'C' * 3000
os.write(fd, A); os.fdatasync(fd)
os.write(fd, B)
with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
open(done).readline()  # waits for finished::clear-cache
os.write(fd, C)   # the writer's next append (its offset: 16461)
got = open(p, 'rb').read()
runs, i = [], 0
while i < len(got):
    j = i
    while j < len(got) and got[j] == got[i]: j += 1
    runs.append((i, j, chr(got[i]) if got[i] else '\\0')); i = j
print(f'size {len(got)}; runs (from, to, byte): {runs}')
