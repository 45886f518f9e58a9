#!/usr/bin/env python3
"""delta_read: what reading walhouse's `state` Delta table (deletion vectors)
costs against the same rows as plain Parquet, per engine.

Reproduce (the venv of tests/interop/requirements.txt: deltalake 1.6.6,
duckdb 1.4.4 + duckdb-ext-delta, pyarrow; a release walhouse binary):

    flock -x /work/quiet.lock /tmp/interop-venv/bin/python bench/delta_read.py \\
        --walhouse target/release/walhouse --make 1000000 --make-rounds 5
    flock -x /work/quiet.lock /tmp/interop-venv/bin/python bench/delta_read.py \\
        --walhouse target/release/walhouse --make 10000000 --make-rounds 5
    /tmp/interop-venv/bin/python bench/delta_read.py --table DATA_DIR/table   # an existing table

`--make N` runs `walhouse demo --records N --cores 2` (two checkpoints; the
second marks ~1 % of the first snapshot's rows deleted by a deletion vector),
then `--make-rounds K` rounds of: overwrite a random 10 % of the recovered
keys (`walhouse recover --dump`) through `walhouse ingest --no-pin
--checkpoint-interval-ms 0 --checkpoint-wal-bytes 0`, then `walhouse
checkpoint`. Each round adds a state file and a deletion vector on older ones.

What is compared (same engine, same rows; Delta+DV vs without):
  - DuckDB: delta_scan(DIR/state) vs read_parquet(plain.parquet), plus
    delta_scan of the no-DV Delta copy (for information).
  - deltalake: QueryBuilder over DIR/state vs QueryBuilder over a Delta table
    of the same rows without deletion vectors (write_deltalake); opening the
    DeltaTable (log replay) is inside the timed region.
  - pyarrow: pq.read_table(plain.parquet) (for information).
The plain copies hold the rows of the current state read through DuckDB
(checked equal in count to deltalake's), written with walhouse's data file
settings: ZSTD level 1, 64 Ki-row row groups, dictionary only for last_epoch.
Queries:
  - count+sum: DuckDB `SELECT count(*), sum(octet_length(value))`; deltalake
    `SELECT count(*) AS n, sum(octet_length(encode(value, 'hex')) / 2) AS b`
    (the DataFusion of deltalake 1.6.6 has no length function for Binary:
    octet_length/bit_length take strings only and length() validates UTF-8;
    the hex detour costs the same on both deltalake sides); pyarrow
    read_table(columns=['value']) + pc.binary_length sum.
  - full: `SELECT key, value FROM ...` fetched as one Arrow table.
One untimed warm-up of every variant, then N rounds (--rounds, default 7),
every variant once per round in a fixed order (A, B, A, B ...). Prints each
run, the medians, and per engine the ratio Delta/plain; the issue's target
is a Delta read within 1.5x of plain Parquet. Table shape (active files,
files with a deletion vector, rows they mark deleted) is replayed from
DIR/state/_delta_log (JSON commits after any parquet checkpoint).

Figures go to BENCHMARKS.md (with the machine, the commit and the command).
"""

import argparse
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from delta_readers import duckdb_delta_connect  # noqa: E402

ROW_GROUP_ROWS = 64 * 1024  # walhouse CheckpointSettings::default().row_group_rows
ZSTD_LEVEL = 1  # walhouse CheckpointSettings::default().zstd_level


def sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Making a table with the walhouse binary.

def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def overwrite_round(walhouse, data_dir, rnd, frac, rng, scratch):
    """Overwrite a random `frac` of the recovered keys, then checkpoint."""
    ndjson = os.path.join(scratch, f"round-{rnd}.ndjson")
    picked = skipped = total = 0
    with open(ndjson, "w") as out, subprocess.Popen(
            [walhouse, "recover", "--data-dir", data_dir, "--dump"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as p:
        for line in p.stdout:
            total += 1
            if rng.random() >= frac:
                continue
            rec = json.loads(line)
            if "key" not in rec:  # key_hex: ingest takes UTF-8 keys only
                skipped += 1
                continue
            old = rec.get("value")
            n = len(old) if old is not None else len(rec.get("value_hex", "")) // 2
            v = f"r{rnd}-{rng.getrandbits(64):016x}-"
            v = (v * (n // len(v) + 1))[:max(n, len(v))]
            out.write(json.dumps({"key": rec["key"], "value": v}) + "\n")
            picked += 1
        if p.wait() != 0:
            raise SystemExit(f"walhouse recover --dump failed ({p.returncode})")
    log(f"round {rnd}: overwriting {picked} of {total} keys ({skipped} non-UTF-8 keys skipped)")
    run([walhouse, "ingest", "--data-dir", data_dir, "--no-pin",
         "--checkpoint-interval-ms", "0", "--checkpoint-wal-bytes", "0",
         "--input", ndjson], stdout=subprocess.DEVNULL)
    run([walhouse, "checkpoint", "--data-dir", data_dir], stdout=subprocess.DEVNULL)
    os.remove(ndjson)


def make_table(walhouse, data_dir, records, rounds, seed, scratch):
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)
    run([walhouse, "demo", "--data-dir", data_dir, "--records", str(records), "--cores", "2"],
        stdout=subprocess.DEVNULL)
    rng = random.Random(seed)
    for r in range(1, rounds + 1):
        overwrite_round(walhouse, data_dir, r, 0.10, rng, scratch)
    return os.path.join(data_dir, "table")


# --------------------------------------------------------------------------
# Table shape from the Delta log.

def _dv_key(dv):
    return None if not dv else (dv.get("storageType"), dv.get("pathOrInlineDv"), dv.get("offset"))


def delta_shape(state):
    """{files, dv_files, deleted, records, version} of the latest snapshot."""
    logdir = os.path.join(state, "_delta_log")
    active = {}  # (path, dv key) -> add action
    start = -1
    last = os.path.join(logdir, "_last_checkpoint")
    if os.path.exists(last):
        with open(last) as f:
            start = json.load(f)["version"]
        for cp in sorted(glob.glob(os.path.join(logdir, f"{start:020d}.checkpoint*.parquet"))):
            for a in pq.read_table(cp, columns=["add"]).column("add").to_pylist():
                if a:
                    active[(a["path"], _dv_key(a.get("deletionVector")))] = a
    commits = sorted(glob.glob(os.path.join(logdir, "[0-9]" * 20 + ".json")))
    version = start
    for c in commits:
        v = int(os.path.basename(c)[:20])
        if v <= start:
            continue
        version = v
        with open(c) as f:
            for line in f:
                if not line.strip():
                    continue
                act = json.loads(line)
                if "remove" in act:
                    r = act["remove"]
                    active.pop((r["path"], _dv_key(r.get("deletionVector"))), None)
                elif "add" in act:
                    a = act["add"]
                    active[(a["path"], _dv_key(a.get("deletionVector")))] = a
    dv = [a["deletionVector"] for a in active.values() if a.get("deletionVector")]
    records = 0
    for a in active.values():
        stats = a.get("stats")
        if isinstance(stats, str) and stats:
            stats = json.loads(stats)
        records += (stats or {}).get("numRecords", 0) or 0
    return {"version": version, "files": len(active), "dv_files": len(dv),
            "deleted": sum(d.get("cardinality", 0) for d in dv), "records": records,
            "bytes": sum(a.get("size", 0) for a in active.values())}


# --------------------------------------------------------------------------
# Variants.

def make_plain(state, work, con):
    """plain.parquet and a no-DV Delta table (plain_delta/) of the current rows."""
    from deltalake import DeltaTable, QueryBuilder, WriterProperties, write_deltalake

    rows = con.execute(f"SELECT * FROM delta_scan({sql_str(state)})").fetch_arrow_table()
    n_dl = pa.table(QueryBuilder().register("s", DeltaTable(state))
                    .execute("SELECT count(*) AS n FROM s")).column("n")[0].as_py()
    if n_dl != rows.num_rows:
        raise SystemExit(f"row counts differ: duckdb {rows.num_rows}, deltalake {n_dl}")
    parquet = os.path.join(work, "plain.parquet")
    dict_cols = [c for c in rows.column_names if c == "last_epoch"]
    pq.write_table(rows, parquet, compression="zstd", compression_level=ZSTD_LEVEL,
                   row_group_size=ROW_GROUP_ROWS, use_dictionary=dict_cols or False)
    plain_delta = os.path.join(work, "plain_delta")
    write_deltalake(plain_delta, rows, mode="overwrite", writer_properties=WriterProperties(
        compression="ZSTD", compression_level=ZSTD_LEVEL, max_row_group_size=ROW_GROUP_ROWS))
    return rows.num_rows, parquet, plain_delta


def variants(state, parquet, plain_delta, con):
    from deltalake import DeltaTable, QueryBuilder

    def duck(src, sql_tail):
        def f():
            return con.execute(f"SELECT {sql_tail.format(src=src)}").fetch_arrow_table()
        return f

    def dl(path, sql):
        def f():
            return pa.table(QueryBuilder().register("s", DeltaTable(path)).execute(sql))
        return f

    def pa_count():
        v = pq.read_table(parquet, columns=["value"]).column("value")
        return (len(v), pc.sum(pc.binary_length(v)).as_py())

    def pa_full():
        return pq.read_table(parquet, columns=["key", "value"])

    d_state = f"delta_scan({sql_str(state)})"
    d_plain = f"delta_scan({sql_str(plain_delta)})"
    d_pq = f"read_parquet({sql_str(parquet)})"
    duck_cnt = "count(*), sum(octet_length(value)) FROM {src}"
    duck_full = "key, value FROM {src}"
    dl_cnt = "SELECT count(*) AS n, sum(octet_length(encode(value, 'hex')) / 2) AS b FROM s"
    dl_full = "SELECT key, value FROM s"
    # (engine, query, label, role, fn); role: delta | plain | info
    return [
        ("duckdb", "count+sum", "delta_scan(state)", "delta", duck(d_state, duck_cnt)),
        ("duckdb", "count+sum", "read_parquet(plain)", "plain", duck(d_pq, duck_cnt)),
        ("duckdb", "count+sum", "delta_scan(no-DV copy)", "info", duck(d_plain, duck_cnt)),
        ("deltalake", "count+sum", "QueryBuilder(state)", "delta", dl(state, dl_cnt)),
        ("deltalake", "count+sum", "QueryBuilder(no-DV copy)", "plain", dl(plain_delta, dl_cnt)),
        ("pyarrow", "count+sum", "pq.read_table(plain)", "info", pa_count),
        ("duckdb", "full", "delta_scan(state)", "delta", duck(d_state, duck_full)),
        ("duckdb", "full", "read_parquet(plain)", "plain", duck(d_pq, duck_full)),
        ("duckdb", "full", "delta_scan(no-DV copy)", "info", duck(d_plain, duck_full)),
        ("deltalake", "full", "QueryBuilder(state)", "delta", dl(state, dl_full)),
        ("deltalake", "full", "QueryBuilder(no-DV copy)", "plain", dl(plain_delta, dl_full)),
        ("pyarrow", "full", "pq.read_table(plain)", "info", pa_full),
    ]


def result_rows(r):
    """(rows, value bytes) of a count+sum result, (rows, None) of a full read."""
    if isinstance(r, tuple):
        return r
    if r.num_rows == 1 and r.num_columns == 2 and r.column_names[0] != "key":
        return r.column(0)[0].as_py(), r.column(1)[0].as_py()
    return r.num_rows, None


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", help="a walhouse table root (reads TABLE/state)")
    src.add_argument("--make", type=int, metavar="N", help="make one: walhouse demo --records N")
    ap.add_argument("--make-rounds", type=int, default=0, metavar="K",
                    help="after the demo, K rounds of 10 %% overwrites + checkpoint")
    ap.add_argument("--walhouse", default=os.environ.get("WALHOUSE"),
                    help="walhouse binary (default: $WALHOUSE)")
    ap.add_argument("--data-dir", help="data dir for --make (default: under --work)")
    ap.add_argument("--work", help="scratch dir for the plain copies (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import deltalake
    import duckdb

    work = args.work or tempfile.mkdtemp(prefix="delta_read-", dir=os.environ.get("TMPDIR", "/tmp"))
    os.makedirs(work, exist_ok=True)
    try:
        if args.make is not None:
            if not args.walhouse:
                raise SystemExit("--make needs --walhouse PATH or WALHOUSE=PATH")
            data_dir = os.path.abspath(args.data_dir or os.path.join(work, "data"))
            t = time.perf_counter()
            table = make_table(args.walhouse, data_dir, args.make, args.make_rounds,
                               args.seed, work)
            log(f"made {table} in {time.perf_counter() - t:.1f} s")
        else:
            table = args.table
        state = os.path.abspath(os.path.join(table, "state"))
        shape = delta_shape(state)
        con = duckdb_delta_connect()
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        rows, parquet, plain_delta = make_plain(state, work, con)
        shape["rows"] = rows
        plain_bytes = os.path.getsize(parquet)
        log(f"versions: duckdb {duckdb.__version__} (threads {threads}), deltalake "
            f"{deltalake.__version__}, pyarrow {pa.__version__}; rounds {args.rounds}")
        log(f"state: {state} (Delta version {shape['version']})")
        log(f"shape: rows {rows}, state files {shape['files']} ({shape['bytes'] / 2**20:.1f} MiB), "
            f"files with a deletion vector {shape['dv_files']}, rows marked deleted "
            f"{shape['deleted']} (numRecords {shape['records']} - deleted = "
            f"{shape['records'] - shape['deleted']}); plain.parquet {plain_bytes / 2**20:.1f} MiB")
        if shape["records"] - shape["deleted"] != rows:
            log("WARNING: numRecords - deleted differs from the rows read")

        vs = variants(state, parquet, plain_delta, con)
        times = {i: [] for i in range(len(vs))}
        value_bytes = set()
        for i, (eng, q, label, _, fn) in enumerate(vs):  # warm-up + result check
            n, b = result_rows(fn())
            if n != rows:
                raise SystemExit(f"{eng} {q} {label}: {n} rows, expected {rows}")
            if b is not None:
                value_bytes.add(int(b))
        if len(value_bytes) != 1:
            raise SystemExit(f"sum of value lengths differs between variants: {value_bytes}")
        log(f"results checked: every variant reads {rows} rows, "
            f"{value_bytes.pop()} value bytes")
        for r in range(args.rounds):
            for i, (_, _, _, _, fn) in enumerate(vs):
                t = time.perf_counter()
                fn()
                times[i].append((time.perf_counter() - t) * 1e3)
        med = {i: statistics.median(ts) for i, ts in times.items()}
        log("")
        log(f"{'engine':10} {'query':10} {'variant':26} {'median ms':>10}  runs (ms)")
        for i, (eng, q, label, _, _) in enumerate(vs):
            log(f"{eng:10} {q:10} {label:26} {med[i]:10.1f}  "
                + " ".join(f"{t:.1f}" for t in times[i]))
        log("")
        parts = []
        for eng in ("duckdb", "deltalake"):
            for q in ("count+sum", "full"):
                d = next(i for i, v in enumerate(vs) if v[:2] == (eng, q) and v[3] == "delta")
                p = next(i for i, v in enumerate(vs) if v[:2] == (eng, q) and v[3] == "plain")
                ratio = med[d] / med[p]
                verdict = "within 1.5x" if ratio <= 1.5 else "OVER 1.5x"
                plain_name = "parquet" if eng == "duckdb" else "no-DV delta"
                log(f"{eng} {q}: Delta+DV {med[d]:.1f} ms vs {vs[p][2]} {med[p]:.1f} ms "
                    f"= {ratio:.2f} x ({verdict})")
                parts.append(f"{eng} {q}: delta {med[d]:.1f} ms vs {plain_name} "
                             f"{med[p]:.1f} ms ({ratio:.2f} x)")
        for q in ("count+sum", "full"):
            i = next(i for i, v in enumerate(vs) if v[:2] == ("pyarrow", q))
            parts.append(f"pyarrow read_table {q}: {med[i]:.1f} ms")
        log("")
        log(f"delta_read: rows {rows}, files {shape['files']}, deleted {shape['deleted']}; "
            + "; ".join(parts))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
