#!/usr/bin/env python3
"""Checks a `walhouse recover --dump` against what was acknowledged.
Usage: check.py DUMP ACKED_FILE. ACKED_FILE has one line per round so far,
`<round> <N>`: lines 1..=N of that round were acknowledged (gen.py's keys
r<round>-<n> and values <round>:<n>:...). Prints `lost <count>` (an acked key
missing, or with another value) and, on stderr, the first few lost keys."""
import json
import sys

def main() -> None:
    dump_path, acked_path = sys.argv[1], sys.argv[2]
    state = {}
    with open(dump_path, encoding="utf-8") as dump:
        for line in dump:
            if line.strip():
                row = json.loads(line)
                state[row.get("key")] = row.get("value")
    lost, shown = 0, 0
    with open(acked_path, encoding="utf-8") as acked:
        for line in acked:
            rnd, n = (int(x) for x in line.split())
            for i in range(1, n + 1):
                value = state.get(f"r{rnd}-{i:09d}")
                if value is None or not value.startswith(f"{rnd}:{i}:"):
                    lost += 1
                    if shown < 5:
                        shown += 1
                        print(f"lost: round {rnd} line {i}: {value!r}", file=sys.stderr)
    print(f"lost {lost} keys {len(state)}")

if __name__ == "__main__":
    main()
