#!/usr/bin/env bash
# Power-loss suite: `walhouse ingest` on LazyFS, killed and its unsynced data
# dropped at a random moment, then `walhouse recover --dump` must hold every
# acknowledged line. See README.md in this folder.
#
# Environment (all optional):
#   ROUNDS=30            rounds
#   WORK=/tmp/walhouse-powerloss   scratch space (LazyFS root, mount, logs)
#   LAZYFS_SRC=$WORK/lazyfs-src    LazyFS work tree (cloned if absent)
#   LAZYFS_REPO=https://github.com/dsrhaslab/lazyfs
#   WALHOUSE=<repo>/target/release/walhouse (built if absent)
#   FS=lazyfs            or `plain`: a plain directory, kill -9 only (control)
#   ORDER=kill-first     or `clear-first`: drop the cache, let the process run
#                        CLEAR_GAP_MS more, then kill it (NOT a power loss: it
#                        shows what a harness with that order reports)
#   CLEAR_GAP_MS=500
#   CORES=2 CHECKPOINT_MS=200 VALUE_BYTES=100
#   UPLOAD_PART_BYTES=5242880  (the smallest allowed: state snapshots past it
#                        are multipart uploads, with O_DIRECT writes)
#   RATE=20000           lines per second fed to ingest (0: unlimited; then
#                        on this 2-core machine no checkpoint finishes
#                        before the crash)
#   CRASH_MIN_MS=300 CRASH_MAX_MS=4000   the crash moment, uniform, per round
#   SEED=<random>        seeds the crash moments (printed)
#   REMOUNT=1            unmount and remount LazyFS after each crash
#   MANIFEST_TEST=0      1: first run `cargo test --test manifest_durable` on
#                        the mount (a manifest PUT, then a power loss)
#   KEEP_GOING=0         1: after a failed recovery, keep its data dir and
#                        start the next round on a fresh one
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-30}
WORK=${WORK:-/tmp/walhouse-powerloss}
LAZYFS_SRC=${LAZYFS_SRC:-$WORK/lazyfs-src}
LAZYFS_REPO=${LAZYFS_REPO:-https://github.com/dsrhaslab/lazyfs}
WALHOUSE=${WALHOUSE:-$repo/target/release/walhouse}
FS=${FS:-lazyfs}
ORDER=${ORDER:-kill-first}
CLEAR_GAP_MS=${CLEAR_GAP_MS:-500}
CORES=${CORES:-2}
CHECKPOINT_MS=${CHECKPOINT_MS:-200}
VALUE_BYTES=${VALUE_BYTES:-100}
UPLOAD_PART_BYTES=${UPLOAD_PART_BYTES:-5242880}
RATE=${RATE:-20000}
CRASH_MIN_MS=${CRASH_MIN_MS:-300}
CRASH_MAX_MS=${CRASH_MAX_MS:-4000}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
REMOUNT=${REMOUNT:-1}
KEEP_GOING=${KEEP_GOING:-0}
MANIFEST_TEST=${MANIFEST_TEST:-0}

log() { printf '%s\n' "$*" >&2; }
die() { log "powerloss: $*"; exit 2; }
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

mkdir -p "$WORK"
mnt=$WORK/mnt
root=$WORK/root
fifo=$WORK/faults.fifo
done_fifo=$WORK/faults_done.fifo
lazyfs_pid=

# ---- binaries -------------------------------------------------------------

if [[ ! -x $WALHOUSE ]]; then
    log "powerloss: building walhouse (release) into $repo/target"
    (cd "$repo" && cargo build --release --bin walhouse >&2)
fi

if [[ $FS == lazyfs ]]; then
    if [[ ! -d $LAZYFS_SRC/lazyfs ]]; then
        log "powerloss: cloning $LAZYFS_REPO into $LAZYFS_SRC"
        git clone --depth 1 "$LAZYFS_REPO" "$LAZYFS_SRC" >&2
    fi
    LAZYFS=$LAZYFS_SRC/lazyfs/build/lazyfs
    if [[ ! -x $LAZYFS ]]; then
        "$here/build-lazyfs.sh" "$LAZYFS_SRC" >/dev/null
    fi
    command -v fusermount3 >/dev/null || die "fusermount3 missing (apt-get install fuse3)"
fi

# ---- LazyFS ---------------------------------------------------------------

mount_lazyfs() {
    mkdir -p "$root" "$mnt"
    cat >"$WORK/lazyfs.toml" <<EOF
[faults]
fifo_path="$fifo"
fifo_path_completed="$done_fifo"
[cache]
apply_eviction=false
[cache.simple]
custom_size="1gb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
EOF
    local other=()
    [[ $(id -u) == 0 ]] && other=(-o allow_other)
    # In a subshell whose stderr is the log: LazyFS aborts as it exits
    # ("terminate called without an active exception", a thread it never
    # joins), and the shell's report of that goes there too.
    ("$LAZYFS" "$mnt" --config-path "$WORK/lazyfs.toml" "${other[@]}" \
        -o modules=subdir -o subdir="$root" -f || true) >>"$WORK/lazyfs.log" 2>&1 &
    lazyfs_pid=$!
    for _ in $(seq 600); do
        mountpoint -q "$mnt" && [[ -p $done_fifo ]] && break
        kill -0 "$lazyfs_pid" 2>/dev/null || die "LazyFS exited: see $WORK/lazyfs.log"
        sleep 0.1
    done
    mountpoint -q "$mnt" || die "LazyFS did not mount on $mnt: see $WORK/lazyfs.log"
    # Held open for reading (and writing, so the open does not block): LazyFS
    # writes `finished::clear-cache` there, and fails to if no reader has it open.
    exec {done_fd}<>"$done_fifo"
}

umount_lazyfs() {
    [[ -n $lazyfs_pid ]] || return 0
    if mountpoint -q "$mnt"; then
        fusermount3 -u "$mnt" || fusermount3 -uz "$mnt" || true
    fi
    for _ in $(seq 100); do
        kill -0 "$lazyfs_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$lazyfs_pid" 2>/dev/null || true
    wait "$lazyfs_pid" 2>/dev/null || true
    lazyfs_pid=
    exec {done_fd}>&- || true
}

# Drops every byte LazyFS holds that no fsync made durable, and waits until
# it is done.
clear_cache() {
    echo "lazyfs::clear-cache" >"$fifo"
    local line=
    read -r -t 60 -u "$done_fd" line || die "LazyFS did not confirm clear-cache"
    [[ $line == finished::clear-cache* ]] || die "LazyFS answered '$line'"
}

wpid=
cleanup() {
    [[ -n $wpid ]] && kill -9 "$wpid" 2>/dev/null || true
    if [[ $FS == lazyfs ]]; then umount_lazyfs; fi
}
trap cleanup EXIT

# ---- rounds ---------------------------------------------------------------

if [[ $FS == lazyfs ]]; then
    # A previous run's mount (e.g. after ^C) is taken down first.
    mountpoint -q "$mnt" && fusermount3 -u "$mnt"
    rm -rf "$root" "$WORK/rounds"
    mount_lazyfs
    base=$mnt
else
    rm -rf "$WORK/plain" "$WORK/rounds"
    mkdir -p "$WORK/plain"
    base=$WORK/plain
fi
data=$base/d
if [[ $FS == lazyfs && $MANIFEST_TEST == 1 ]]; then
    log "powerloss: cargo test --test manifest_durable on $mnt"
    (cd "$repo" && WALHOUSE_LAZYFS_DIR=$mnt WALHOUSE_LAZYFS_FIFO=$fifo \
        WALHOUSE_LAZYFS_DONE_FIFO=$done_fifo \
        cargo test --test manifest_durable -- --nocapture) >"$WORK/manifest_test.log" 2>&1 \
        && echo "manifest_durable on LazyFS: ok" \
        || { echo "manifest_durable on LazyFS: FAILED (see $WORK/manifest_test.log)"; exit 1; }
    grep -E 'after the power loss' "$WORK/manifest_test.log" | cut -c1-160 >&2 || true
fi
cat >"$WORK/walhouse.toml" <<EOF
[ingest.checkpoint]
upload_part_bytes = $UPLOAD_PART_BYTES
EOF
acked_file=$WORK/acked
: >"$acked_file"
RANDOM=$((SEED % 32768))

log "powerloss: $ROUNDS rounds, FS=$FS ORDER=$ORDER SEED=$SEED, walhouse ingest --cores $CORES --no-pin --checkpoint-interval-ms $CHECKPOINT_MS, $RATE lines/s, crash after ${CRASH_MIN_MS}..${CRASH_MAX_MS} ms"
total_acked=0 total_ckpts=0 total_lost=0 failed=0 verify_failed=0 ckpt_err_rounds=0 early_exit=0
started=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
    rdir=$WORK/rounds/$r
    mkdir -p "$rdir"
    ms=$((CRASH_MIN_MS + RANDOM % (CRASH_MAX_MS - CRASH_MIN_MS + 1)))
    WALHOUSE_LOG=${WALHOUSE_LOG:-warn,walhouse=info} NO_COLOR=1 "$WALHOUSE" ingest --config "$WORK/walhouse.toml" --data-dir "$data" --cores "$CORES" --no-pin \
        --checkpoint-interval-ms "$CHECKPOINT_MS" \
        < <(exec python3 "$here/gen.py" "$r" "$VALUE_BYTES" "$RATE") \
        >"$rdir/acks" 2>"$rdir/ingest.err" &
    wpid=$!
    ms_sleep "$ms"
    alive=1
    kill -0 "$wpid" 2>/dev/null || alive=0
    if [[ $FS == lazyfs && $ORDER == clear-first ]]; then
        clear_cache
        ms_sleep "$CLEAR_GAP_MS"
        kill -9 "$wpid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
    else
        # Power loss: the process stops first (nothing it would do next
        # happens), then every byte not fsynced is gone.
        kill -9 "$wpid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
        [[ $FS == lazyfs ]] && clear_cache
    fi
    wpid=
    if ((!alive)); then
        early_exit=$((early_exit + 1))
        log "round $r: ingest exited before the crash: $(tail -n 3 "$rdir/ingest.err")"
    fi
    if [[ $FS == lazyfs && $REMOUNT == 1 ]]; then
        umount_lazyfs
        mount_lazyfs
    fi
    n=$(awk '$1 == "ack" { n = $2 } END { print n + 0 }' "$rdir/acks")
    echo "$r $n" >>"$acked_file"
    total_acked=$((total_acked + n))
    # Checkpoints the ingest committed, and the ones that failed (e.g. on a
    # corrupt sealed segment: "zero-length record at offset ...").
    ckpts=$(grep -c 'checkpoint committed' "$rdir/ingest.err" || true)
    ckpt_errs=$(grep -ciE 'checkpoint failed|zero-length|corrupt' "$rdir/ingest.err" || true)
    total_ckpts=$((total_ckpts + ckpts))
    ((ckpt_errs > 0)) && ckpt_err_rounds=$((ckpt_err_rounds + 1))
    t0=$(date +%s.%N)
    status=ok lost=0 keys=0
    if timeout 600 "$WALHOUSE" recover --data-dir "$data" --dump \
        >"$rdir/dump" 2>"$rdir/recover.err"; then
        read -r _ lost _ keys < <(python3 "$here/check.py" "$rdir/dump" "$acked_file" 2>"$rdir/lost")
        if ! timeout 600 "$WALHOUSE" verify --data-dir "$data" >"$rdir/verify" 2>&1; then
            verify_failed=$((verify_failed + 1))
            status="ok, verify FAILED: $(head -n 2 "$rdir/verify" | tr '\n' ' ')"
        fi
    else
        failed=$((failed + 1))
        status="FAILED: $(tail -n 2 "$rdir/recover.err" | tr '\n' ' ')"
    fi
    rm -f "$rdir/dump"
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    total_lost=$((total_lost + lost))
    printf 'round %d/%d: crash at %d ms, acked %d, lost %d, recovery %s (%d keys, %s s), checkpoints committed %d, checkpoint errors logged %d\n' \
        "$r" "$ROUNDS" "$ms" "$n" "$lost" "$status" "$keys" "$secs" "$ckpts" "$ckpt_errs"
    [[ -s $rdir/lost ]] && sed 's/^/    /' "$rdir/lost" >&2
    if [[ $status == FAILED* ]]; then
        [[ $KEEP_GOING == 1 ]] || break
        # Keep the evidence; go on from an empty data directory.
        mv "$data" "$base/failed-round-$r"
        : >"$acked_file"
    fi
done
rounds_run=$((r > ROUNDS ? ROUNDS : r))
printf 'powerloss: FS=%s ORDER=%s SEED=%s: rounds %d, acked lines %d, lines lost %d, recoveries failed %d, verify failed %d, checkpoints committed %d, rounds with checkpoint errors logged %d, ingest exits before crash %d (%d s)\n' \
    "$FS" "$ORDER" "$SEED" "$rounds_run" "$total_acked" "$total_lost" "$failed" "$verify_failed" \
    "$total_ckpts" "$ckpt_err_rounds" "$early_exit" "$(($(date +%s) - started))"
if ((total_lost > 0 || failed > 0 || verify_failed > 0)); then
    exit 1
fi
