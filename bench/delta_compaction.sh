#!/usr/bin/env bash
# Compaction (a full rewrite of the state table, after the commit) of a
# 10 M-key state: 10 M distinct puts, first checkpoint; 1 M mixed, a
# checkpoint without a snapshot; 1 M mixed, a checkpoint with snapshot_every
# = 1. Prints each round's figures of the last one. Run from the repository
# root after `cargo bench --bench checkpoint_report --no-run`; BIN= overrides
# the binary. Figures: BENCHMARKS.md, "State-table compaction".
set -euo pipefail
bin=${BIN:-$(ls -t target/release/deps/checkpoint_report-* | grep -v "\.d$" | head -1)}
base=target/bench-tmp/compact
for r in 1 2 3; do
  rm -rf $base; mkdir -p $base/tmp; export TMPDIR=$base/tmp
  $bin prepare-wal $base/wal 10000000 distinct >/dev/null
  $bin checkpoint-child $base/wal $base/table first >/dev/null
  $bin prepare-wal $base/wal 1000000 mixed >/dev/null
  $bin checkpoint-child $base/wal $base/table changelog >/dev/null
  $bin prepare-wal $base/wal 1000000 mixed >/dev/null
  out=$($bin checkpoint-child $base/wal $base/table snapshot)
  echo "round $r: $(grep -o 'seconds=[0-9.]*\|state_seconds=[0-9.]*\|snapshot=[01]\|snapshot_keys=[0-9]*\|snapshot_bytes=[0-9]*\|hwm_kib=[0-9]*\|wal_bytes=[0-9]*' <<<"$out" | tr '\n' ' ')"
done
rm -rf $base
