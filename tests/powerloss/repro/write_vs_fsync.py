#!/usr/bin/env python3
"""One thread appends 4 KiB-unaligned chunks to a file while another
fdatasyncs it in a loop (what a staging file's early sync does while parts
land); then a final fsync, clear-cache, and compare."""
import os, sys, threading
d, fifo, done = sys.argv[1], sys.argv[2], sys.argv[3]
p = os.path.join(d, 'race.bin')
if os.path.exists(p): os.unlink(p)
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
chunk = 5000
data = bytes((i * 13 + 5) % 251 for i in range(chunk * 2000))
stop = False
syncs = 0
def syncer():
    global syncs
    while not stop:
        os.fdatasync(fd); syncs += 1
t = threading.Thread(target=syncer); t.start()
for off in range(0, len(data), chunk):
    os.pwrite(fd, data[off:off + chunk], off)
stop = True; t.join()
os.fsync(fd)
dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
open(done).readline()
got = open(p, 'rb').read()
bad = next((i for i in range(min(len(got), len(data))) if got[i] != data[i]), None)
print(f'{syncs} concurrent fdatasyncs; after fsync + clear-cache: {len(got)} bytes of {len(data)}, first differing byte {bad}')
