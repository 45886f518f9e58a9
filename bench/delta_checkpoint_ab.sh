#!/usr/bin/env bash
# Same-run comparison of builds of benches/checkpoint_report.rs (the binaries
# of `cargo bench --bench checkpoint_report --no-run` at several commits),
# in rotating order: 10 M distinct puts -> first checkpoint; then 1 M mixed
# entries -> a checkpoint with no snapshot due. Prints, for the second
# checkpoint, seconds to the commit, then seconds of the state table's build
# after it (builds that print state_seconds), MB/s of WAL per core for both,
# and peak RSS. BASE_KEYS=N changes the 10 M, ROUNDS=N the 3 rounds.
# Figures: BENCHMARKS.md, "Checkpoints".
#   bench/delta_checkpoint_ab.sh LABEL=BIN [LABEL=BIN ...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 LABEL=CHECKPOINT_REPORT_BIN ..." >&2; exit 2; }
base=${AB_DIR:-target/bench-tmp/ab}
builds=("$@")
n=${#builds[@]}
for round in $(seq 1 "${ROUNDS:-3}"); do
  for i in $(seq 0 $((n - 1))); do
    spec=${builds[$(((i + round - 1) % n))]}
    label=${spec%%=*}; bin=${spec#*=}
    rm -rf "$base"; mkdir -p "$base/tmp"
    export TMPDIR=$base/tmp
    "$bin" prepare-wal "$base/wal" "${BASE_KEYS:-10000000}" distinct >/dev/null
    first=$("$bin" checkpoint-child "$base/wal" "$base/table" first)
    "$bin" prepare-wal "$base/wal" 1000000 mixed >/dev/null
    second=$("$bin" checkpoint-child "$base/wal" "$base/table" changelog)
    field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
    s1=$(field seconds "$first"); st1=$(field state_seconds "$first")
    s2=$(field seconds "$second"); st2=$(field state_seconds "$second")
    w2=$(field wal_bytes "$second"); h2=$(field hwm_kib "$second")
    python3 - "$round" "$label" "$s1" "${st1:-0}" "$s2" "${st2:-0}" "$w2" "$h2" <<'EOF'
import sys
r, label, s1, st1, s2, st2, w, h = sys.argv[1:]
s1, st1, s2, st2, w, h = float(s1), float(st1), float(s2), float(st2), int(w), int(h)
print(f"round {r} {label}: first {s1:.2f}s + state {st1:.2f}s; second {s2:.3f}s to the commit "
      f"({w / 1e6 / s2 / 2:.1f} MB/s of WAL per core) + state {st2:.3f}s "
      f"({w / 1e6 / (s2 + st2) / 2:.1f} MB/s per core with it), peak {h // 1024} MiB")
EOF
  done
done
rm -rf "$base"
