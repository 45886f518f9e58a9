#!/usr/bin/env bash
# Repros against LazyFS alone (no walhouse): see ../README.md, "Findings".
# Usage: LAZYFS=/path/to/lazyfs/build/lazyfs tests/powerloss/repro/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAZYFS=${LAZYFS:?set LAZYFS to the lazyfs binary (../build-lazyfs.sh builds it)}
WORK=${WORK:-/tmp/walhouse-powerloss-repro}
mnt=$WORK/mnt root=$WORK/root fifo=$WORK/faults.fifo done_fifo=$WORK/done.fifo
pid=

mount_with() { # cache size
    rm -rf "$root" && mkdir -p "$root" "$mnt"
    cat >"$WORK/cfg.toml" <<EOF
[faults]
fifo_path="$fifo"
fifo_path_completed="$done_fifo"
[cache]
apply_eviction=false
[cache.simple]
custom_size="$1"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
EOF
    ("$LAZYFS" "$mnt" --config-path "$WORK/cfg.toml" -o modules=subdir -o subdir="$root" -f || true) \
        >>"$WORK/lazyfs.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        mountpoint -q "$mnt" && [[ -p $done_fifo ]] && break
        sleep 0.1
    done
    exec {keep}<>"$done_fifo" # LazyFS opens it for writing at start; keep a reader
}
umount_it() {
    fusermount3 -u "$mnt" || true
    wait "$pid" 2>/dev/null || true
    exec {keep}>&-
}
trap umount_it EXIT
mkdir -p "$WORK"

mount_with 1gb
echo "== a writer that outlives clear-cache (the harness order clear, then kill):"
python3 "$here/clear_then_write.py" "$mnt" "$fifo" "$done_fifo"
echo "== the upload's steps with clear-cache after step K, the program going on:"
for k in 0 1 2 3 4; do
    python3 "$here/clear_mid_upload.py" "$mnt" "$fifo" "$done_fifo" "$k"
done
echo "== object_store's create-only PUT (link, no fsync), then power loss:"
python3 "$here/put_create_then_crash.py" "$mnt" "$fifo" "$done_fifo"
echo "== O_DIRECT blocks + buffered tail + fsync of a fresh fd, then power loss:"
for t in 98760 3000000; do
    TOTAL=$t python3 "$here/odirect.py" "$mnt" --clear "$fifo" || true
done
umount_it
trap - EXIT

mount_with 1mb
trap umount_it EXIT
echo "== the same O_DIRECT writes once LazyFS's 1 MiB cache is full (no eviction):"
for t in 98760 3000000; do
    TOTAL=$t python3 "$here/odirect.py" "$mnt" || true
done
