#!/usr/bin/env python3
"""object_store LocalFileSystem's create-only PUT as walhouse's manifest commit
uses it: write a staging file, hard_link it to the object's name, unlink the
staging file; no fsync yet. Power loss right there (clear-cache): what is left
under the object's name?"""
import os, sys
d, fifo, done = sys.argv[1], sys.argv[2], sys.argv[3]
dest = os.path.join(d, '00000000000000000007.json')
staging = dest + '#42'
for p in (dest, staging):
    if os.path.exists(p): os.unlink(p)
body = b'{"format_version": 1, "checkpoint": 7}\n' * 50
with open(staging, 'wb') as f: f.write(body)
os.link(staging, dest); os.unlink(staging)
dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)   # any later directory sync (or, on ext4, any fsync's journal commit)
rfd = os.open(done, os.O_RDWR)
with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
os.read(rfd, 100); os.close(rfd)
got = open(dest, 'rb').read()
print(f'object {os.path.basename(dest)}: present {os.path.exists(dest)}, {len(got)} bytes of {len(body)}')
