#!/usr/bin/env python3
"""Writes NDJSON put lines for round R on stdout, forever (until the pipe
closes): line n (1-based) is {"key": "r<R>-<n>", "value": "<R>:<n>:<random hex>"},
so the key and the value both encode the round and the line number and every
line is unique. Usage: gen.py ROUND [VALUE_BYTES [LINES_PER_SEC]]; 0 lines per
second: as fast as the pipe takes them."""
import os
import sys
import time

def main() -> None:
    rnd = int(sys.argv[1])
    value_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    out = sys.stdout
    n = 0
    start = time.monotonic()
    # Padding that does not compress (a slice of 4 MiB of random hex), so
    # that state snapshots grow past one upload part and take the local
    # store's multipart path (O_DIRECT blocks + a buffered tail).
    pool = os.urandom(2 << 20).hex()
    try:
        while True:
            lines = []
            for _ in range(256):
                n += 1
                head = f"{rnd}:{n}:"
                width = max(0, value_bytes - len(head))
                at = (n * 7919) % (len(pool) - width)
                pad = pool[at : at + width]
                lines.append(f'{{"key":"r{rnd}-{n:09d}","value":"{head}{pad}"}}\n')
            out.write("".join(lines))
            out.flush()
            if rate > 0:
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    except (BrokenPipeError, KeyboardInterrupt):
        pass

if __name__ == "__main__":
    main()
