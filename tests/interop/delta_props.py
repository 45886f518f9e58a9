#!/usr/bin/env python3
"""Seeded property test of walhouse's Delta tables: every version of the
state table, read by deltalake, Polars and DuckDB, is exactly the model of
what was ingested up to that checkpoint, including versions that are not
full snapshots (a small file of changes plus deletion vectors over older
files).

    python delta_props.py --walhouse BIN [--seed N] [--rounds 6] [--keep DIR]

interop.py calls run() at the end of its checks (local store only); this
file also runs on its own. Each round feeds random puts and deletes over a
small key space (values: random strings, since NDJSON values are JSON
strings: ASCII, multi-byte UTF-8, control characters such as NUL, and empty
strings; a null value deletes) plus one `{"commit": {"kafka-0": offset},
"watermark": W}` line to `walhouse ingest --cores 2 --no-pin
--checkpoint-interval-ms 0`, then runs `walhouse checkpoint`, so round r is
checkpoint r = Delta version r. The settings file makes a full snapshot every
4th checkpoint only (snapshot_every = 4; no compaction by deleted rows), so 6
rounds give snapshots at versions 1 and 5 and deletion-vector checkpoints at
2, 3, 4 and 6. Then, for every version v:
  - deltalake, Polars and DuckDB read state at v == model(v), every row;
  - the manifest of v (commitInfo.walhouse of changelog/_delta_log/<v>.json):
    puts/deletes = round v's, state files' rows minus DV cardinalities =
    model(v)'s keys, source_offsets = {"kafka-0": offset(v)};
  - the changelog table at v minus at v-1 holds round v's puts, deletes and
    commit;
  - txn_versions of changelog and state at v == {"kafka-0": offset(v)};
and `walhouse recover --dump` == model(latest), `walhouse verify` passes.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import delta_readers as dr  # noqa: E402

DEFAULT_SEED = 20240607
DEFAULT_ROUNDS = 6
KEYS = 300
SOURCE = "kafka-0"

SETTINGS = """\
# delta_props.py: snapshots only every 4th checkpoint, never compacted by
# deleted rows or file count, every version kept readable.
[ingest]
cores = 2
pin_threads = false
checkpoint_interval_ms = 0
checkpoint_wal_bytes = 0
[ingest.checkpoint]
snapshot_every = 4
state_max_deleted_percent = 100
state_max_files = 1000
log_checkpoint_interval = 3
retain_checkpoints = {retain}
"""

_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/\"\\"
             "\u00e9\u00df\u20ac\u2603\U0001F600\u0000\u0001\n\t")


def random_value(rng):
    n = rng.choice([0, 1, 2, 5, 10, 20, 40, 100])
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def make_round(rng, r, offset):
    """The NDJSON lines of round r and what they do: (lines, ops, offset)
    with ops [(key, value str or None)]."""
    n = 600 if r == 1 else rng.randint(20, 120)
    ops = []
    for _ in range(n):
        key = f"k{rng.randrange(KEYS):03}" + ("\u00e9" if rng.random() < 0.1 else "")
        ops.append((key, None if rng.random() < 0.3 else random_value(rng)))
    lines = [json.dumps({"key": k, "value": v}) for k, v in ops]
    offset += len(lines) + rng.randint(0, 5)
    lines.append(json.dumps({"commit": {SOURCE: offset}, "watermark": r * 1000}))
    return lines, ops, offset


def sh(cmd, stdin=None):
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False,
                         timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n"
                             f"{out.stderr}")
    return out


def dump_state(walhouse, data_dir, config):
    out = sh([walhouse, "--config", config, "recover", "--data-dir", data_dir, "--dump"])
    state = {}
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        o = json.loads(line)
        k = bytes.fromhex(o["key_hex"]) if "key_hex" in o else o["key"].encode()
        v = bytes.fromhex(o["value_hex"]) if "value_hex" in o else o["value"].encode()
        assert k not in state, k
        state[k] = v
    return state


def manifests_by_version(table, name="changelog"):
    """commitInfo.walhouse of each log entry of the table `name` (the
    changelog: manifests; the state: state versions), by version."""
    out = {}
    log = os.path.join(table, name, "_delta_log")
    for name in sorted(os.listdir(log)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(log, name), encoding="utf-8") as f:
            for line in f:
                info = json.loads(line).get("commitInfo") if line.strip() else None
                if info and "walhouse" in info:
                    out[int(name.split(".")[0])] = info["walhouse"]
    return out


def run(walhouse, work, seed=DEFAULT_SEED, rounds=DEFAULT_ROUNDS):
    """Runs the property test in `work` (emptied first); returns a summary
    of what it proved, raises AssertionError on any difference."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    shutil.rmtree(work, ignore_errors=True)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir)
    config = os.path.join(work, "walhouse.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(SETTINGS.format(retain=rounds + 1))
    table = os.path.join(data_dir, "table")
    models, offsets, counts = {0: {}}, {}, {}
    state, offset = {}, 0
    for r in range(1, rounds + 1):
        lines, ops, offset = make_round(rng, r, offset)
        sh([walhouse, "--config", config, "ingest", "--data-dir", data_dir, "--cores", "2",
            "--no-pin", "--checkpoint-interval-ms", "0"], stdin="\n".join(lines) + "\n")
        out = sh([walhouse, "--config", config, "checkpoint", "--data-dir", data_dir])
        for k, v in ops:
            if v is None:
                state.pop(k.encode(), None)
            else:
                state[k.encode()] = v.encode()
        models[r] = dict(state)
        offsets[r] = offset
        c = Counter("put" if v is not None else "delete" for _, v in ops)
        counts[r] = {"put": c["put"], "delete": c["delete"], "commit": 1}
    ingest_s = time.monotonic() - t0

    manifests = manifests_by_version(table)
    state_versions = manifests_by_version(table, "state")
    assert sorted(manifests) == list(range(1, rounds + 1)), sorted(manifests)
    state_path, changelog_path = os.path.join(table, "state"), os.path.join(table, "changelog")
    con = dr.duckdb_delta_connect()
    readers = {"deltalake": dr.read_deltalake, "polars": dr.read_polars,
               "duckdb": lambda p, v, c: dr.read_duckdb(p, v, c, con=con)}
    rows_compared = 0
    snapshots, dv_versions, newly_deleted, prev_deleted = [], [], 0, 0
    prev_ops = Counter()
    for v in range(1, rounds + 1):
        want = sorted(models[v].items())
        for name, read in readers.items():
            got = read(state_path, v, ["key", "value"])
            if got != want:
                g, w = dict(got), dict(want)
                diff = sorted(set(g.items()) ^ set(w.items()))[:5]
                raise AssertionError(f"{name} state v{v}: {len(got)} rows, model {len(want)}; "
                                     f"e.g. {diff} (seed {seed})")
            rows_compared += len(got)
        m = manifests[v]
        assert (m["stats"]["puts"], m["stats"]["deletes"]) == (counts[v]["put"],
                                                               counts[v]["delete"]), (v, m["stats"])
        assert m["source_offsets"] == {SOURCE: offsets[v]}, (v, m["source_offsets"])
        assert m["watermark"] == v * 1000, (v, m["watermark"])
        sv = state_versions[v]
        table_files = sv["table"]
        rows = sum(f["file"]["rows"] for f in table_files)
        deleted = sum(f["deletion_vector"]["descriptor"]["cardinality"]
                      for f in table_files if f.get("deletion_vector"))
        assert rows - deleted == len(models[v]), (v, rows, deleted, len(models[v]))
        assert sv["keys"] == len(models[v]), (v, sv["keys"], len(models[v]))
        if sv["snapshot_checkpoint"] == v:
            snapshots.append(v)
            assert deleted == 0, (v, deleted)
        else:
            assert any(f.get("deletion_vector") for f in table_files) or deleted == 0, v
            if deleted:
                dv_versions.append(v)
            newly_deleted += deleted - prev_deleted
        prev_deleted = deleted
        # The changelog at v minus at v-1: round v's operations.
        ops = Counter(dict(dr.deltalake_sql(changelog_path,
                                            "SELECT op, count(*) FROM t GROUP BY op", v)))
        new = ops - prev_ops
        prev_ops = ops
        for op in ("put", "delete", "commit"):
            assert new[op] == counts[v][op], (v, op, new[op], counts[v][op])
        assert set(new) <= {"put", "delete", "commit", "epoch_barrier", "checkpoint"}, new
        for path in (changelog_path, state_path):
            txn = dr.txn_versions(path, v)
            assert txn == {SOURCE: offsets[v]}, (path, v, txn, offsets[v])
    assert dr.txn_versions(changelog_path) == {SOURCE: offsets[rounds]}
    assert dr.txn_versions(state_path) == {SOURCE: offsets[rounds]}
    recovered = dump_state(walhouse, data_dir, config)
    assert recovered == models[rounds], (
        f"recover --dump: {len(recovered)} keys, model {len(models[rounds])}; e.g. "
        f"{sorted(set(recovered.items()) ^ set(models[rounds].items()))[:5]}")
    sh([walhouse, "--config", config, "verify", "--data-dir", data_dir])
    assert len(dv_versions) >= 2, f"only {dv_versions} versions had deletion vectors"
    return (f"seed {seed}: {rounds} checkpoints over {KEYS} keys ({ingest_s:.1f} s to write); "
            f"state v1..v{rounds} by {'/'.join(readers)} = model, {rows_compared} rows "
            f"compared; snapshots at v{snapshots}, deletion vectors at v{dv_versions} "
            f"({newly_deleted} rows marked deleted in total); changelog ops per version, "
            f"manifests, txn {SOURCE} on changelog and state per version, recover --dump "
            f"({len(recovered)} keys) and verify all agree")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--walhouse", required=True)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    ap.add_argument("--keep", help="directory to write into (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="walhouse-props-")
    try:
        print("ok   delta-props " + run(args.walhouse, work, args.seed, args.rounds))
    except AssertionError as e:
        print(f"FAIL delta-props: {e}")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
