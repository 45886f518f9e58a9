#!/usr/bin/env bash
# Same-run A/B of two builds of benches/checkpoint_report.rs (the binaries of
# `cargo bench --bench checkpoint_report --no-run` at two commits), alternating:
# 10 M distinct puts -> first checkpoint; then 1 M mixed entries -> a checkpoint
# with no snapshot due. Prints seconds, MB/s of WAL per core and peak RSS.
# BASE_KEYS=N changes the 10 M. Figures: BENCHMARKS.md, "Delta Lake tables".
set -euo pipefail
OLD=${1:?usage: $0 OLD_CHECKPOINT_REPORT_BIN NEW_CHECKPOINT_REPORT_BIN}
NEW=${2:?usage: $0 OLD_CHECKPOINT_REPORT_BIN NEW_CHECKPOINT_REPORT_BIN}
base=${AB_DIR:-target/bench-tmp/ab}
for round in 1 2 3; do
  for which in old new; do
    [ $round = 2 ] && which=$([ $which = old ] && echo new || echo old)
    bin=$([ $which = old ] && echo $OLD || echo $NEW)
    rm -rf $base; mkdir -p $base/tmp
    export TMPDIR=$base/tmp
    $bin prepare-wal $base/wal ${BASE_KEYS:-10000000} distinct >/dev/null
    first=$($bin checkpoint-child $base/wal $base/table first)
    $bin prepare-wal $base/wal 1000000 mixed >/dev/null
    second=$($bin checkpoint-child $base/wal $base/table changelog)
    s1=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$first")
    s2=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$second")
    w2=$(sed -n 's/.* wal_bytes=\([0-9]*\) .*/\1/p' <<<"$second")
    h2=$(sed -n 's/.* hwm_kib=\([0-9]*\) .*/\1/p' <<<"$second")
    echo "round $round $which: first ${s1}s; second ${s2}s wal_bytes $w2 => $(python3 -c "print(round($w2/1e6/$s2/2,1))") MB/s per core, peak $((h2/1024)) MiB"
  done
done
rm -rf $base
