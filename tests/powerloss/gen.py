#!/usr/bin/env python3
"""Writes NDJSON put lines for round R on stdout, forever (until the pipe
closes): line n (1-based) is {"key": "r<R>-<n>", "value": "<R>:<n>:<pad>"},
so the key and the value both encode the round and the line number and every
line is unique. Usage: gen.py ROUND [VALUE_BYTES]."""
import sys

def main() -> None:
    rnd = int(sys.argv[1])
    value_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    out = sys.stdout
    n = 0
    try:
        while True:
            lines = []
            for _ in range(256):
                n += 1
                head = f"{rnd}:{n}:"
                pad = "x" * max(0, value_bytes - len(head))
                lines.append(f'{{"key":"r{rnd}-{n:09d}","value":"{head}{pad}"}}\n')
            out.write("".join(lines))
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass

if __name__ == "__main__":
    main()
