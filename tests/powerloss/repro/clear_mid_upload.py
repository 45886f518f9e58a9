#!/usr/bin/env python3
"""The local upload's steps (create staging, O_DIRECT blocks, buffered tail,
rename, fsync file + dir) with lazyfs::clear-cache injected after step K while
the program goes on, then the manifest's 'durable' view: the object's size."""
import mmap, os, sys
d, fifo, done, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
total = 98760
data = bytes((i * 7 + 1) % 251 for i in range(total))
staging, dest = os.path.join(d, 'obj#1'), os.path.join(d, 'obj.parquet')
for p in (staging, dest):
    if os.path.exists(p): os.unlink(p)
def clear(step):
    if step == k:
        with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
        open(done).readline()
fb = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
fd = os.open(staging, os.O_WRONLY | os.O_DIRECT)
clear(1)
aligned = total // 4096 * 4096
buf = mmap.mmap(-1, 1 << 20); buf.write(data[:aligned])
os.pwritev(fd, [memoryview(buf)[:aligned]], 0)
clear(2)
os.pwrite(fb, data[aligned:], aligned)
clear(3)
os.rename(staging, dest)
clear(4)
f = os.open(dest, os.O_RDONLY); os.fsync(f); os.close(f)
dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
# "manifest committed": it records `total` bytes. Now the real power loss:
with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
open(done).readline()
got = open(dest, 'rb').read() if os.path.exists(dest) else b''
zeros = sum(1 for i in range(0, len(got), 4096) if not any(got[i:i+4096]))
print(f'clear after step {k}: durable object {len(got)} bytes (manifest: {total}), '
      f'all-zero 4 KiB blocks {zeros}, equal {got == data}')
