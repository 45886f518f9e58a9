#!/usr/bin/env python3
"""The local upload's write pattern against one directory:
O_DIRECT whole 4 KiB blocks + a buffered tail through a second fd, rename,
then fsync of the file (fresh fd) and of its directory, as walhouse does.
Prints the size and checks the bytes; with --clear FIFO it then writes
lazyfs::clear-cache and checks again (everything was fsynced: nothing may change)."""
import mmap, os, sys, time
d = sys.argv[1]
fifo = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == '--clear' else None
total = int(os.environ.get('TOTAL', '98760'))
data = bytes((i * 7 + i // 4096) % 251 for i in range(total))
staging, dest = os.path.join(d, 'obj#1'), os.path.join(d, 'obj.parquet')
for p in (staging, dest):
    if os.path.exists(p): os.unlink(p)
fb = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
fd = os.open(staging, os.O_WRONLY | os.O_DIRECT)
aligned = total // 4096 * 4096
chunk = 1 << 20
buf = mmap.mmap(-1, chunk)
done = 0
while done < aligned:
    want = min(aligned - done, chunk)
    buf.seek(0); buf.write(data[done:done + want])
    n = os.pwritev(fd, [memoryview(buf)[:want]], done)
    assert n == want, (n, want)
    done += want
os.pwrite(fb, data[aligned:], aligned)
os.rename(staging, dest)
f = os.open(dest, os.O_RDONLY); os.fsync(f); os.close(f)
dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
os.close(fd); os.close(fb)
def check(when):
    got = open(dest, 'rb').read()
    first_bad = next((i for i in range(min(len(got), total)) if got[i] != data[i]), None)
    print(f'{when}: size {os.stat(dest).st_size} (read {len(got)}), expected {total}; '
          f'first differing byte: {first_bad}')
    return len(got) == total and first_bad is None
ok = check('after fsync')
if fifo:
    with open(fifo, 'w') as f: f.write('lazyfs::clear-cache\n')
    time.sleep(1)
    ok = check('after clear-cache') and ok
sys.exit(0 if ok else 1)
