#!/usr/bin/env bash
# Same-run A/B of recovery from the store alone (no local WAL) of a 10 M-key
# state with one later checkpoint of 1 M mixed entries on it, for two builds:
# the binaries of `cargo bench --bench checkpoint_report --bench recovery_report
# --no-run` at each commit. Builds each build's table once (10 M distinct puts,
# first checkpoint; 1 M mixed entries, a checkpoint with no snapshot due), then
# alternates the recoveries. Figures: BENCHMARKS.md, "Recovery from the store alone".
#   bench/delta_recovery_ab.sh OLD_CKPT OLD_REC NEW_CKPT NEW_REC
set -euo pipefail
old_ckpt=${1:?usage}; old_rec=${2:?usage}; new_ckpt=${3:?usage}; new_rec=${4:?usage}
base=${AB_DIR:-target/bench-tmp/rec-ab}
rm -rf "$base"; mkdir -p "$base/tmp" "$base/empty"
export TMPDIR=$base/tmp
for which in old new; do
    ckpt=$([ $which = old ] && echo "$old_ckpt" || echo "$new_ckpt")
    "$ckpt" prepare-wal "$base/wal-$which" "${BASE_KEYS:-10000000}" distinct >/dev/null
    "$ckpt" checkpoint-child "$base/wal-$which" "$base/table-$which" first >/dev/null
    "$ckpt" prepare-wal "$base/wal-$which" 1000000 mixed >/dev/null
    "$ckpt" checkpoint-child "$base/wal-$which" "$base/table-$which" changelog >/dev/null
    rm -rf "$base/wal-$which"
    echo "$which table: $(du -sh "$base/table-$which" | cut -f1)"
done
for round in 1 2 3; do
    for which in old new; do
        [ "$round" = 2 ] && which=$([ $which = old ] && echo new || echo old)
        rec=$([ $which = old ] && echo "$old_rec" || echo "$new_rec")
        out=$("$rec" recover-child "$base/empty" "$base/table-$which")
        s=$(sed -n 's/.*seconds=\([0-9.]*\) .*/\1/p' <<<"$out")
        k=$(sed -n 's/.* keys=\([0-9]*\) .*/\1/p' <<<"$out")
        h=$(sed -n 's/.* hwm_kib=\([0-9]*\) .*/\1/p' <<<"$out")
        echo "round $round $which: ${s}s, $k keys, peak $((h / 1024)) MiB"
    done
done
rm -rf "$base"
