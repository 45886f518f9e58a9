#!/usr/bin/env python3
"""Lakehouse interop: the Delta Lake tables `walhouse demo` writes, read by
deltalake, Polars and DuckDB (Delta readers), and by pyarrow, DataFusion and
Spark (local mode) as plain Parquet where that is still correct.

Runs `walhouse demo --records N --cores 2` with the default local store,
and, with --s3-url, again with `--store s3://...` (endpoint and credentials
from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
The demo makes two checkpoints: 1 = the N records, 2 = a tail of
max(N/100, 1) overwrites and deletes (`write_tail(round=0)` in src/demo.rs);
a second tail (round 1) stays in the local WAL only. Expected figures come
from a model of the demo (record() and tail_ops() mirror src/demo.rs) and
from the manifests, read from the commitInfo.walhouse field of every
changelog/_delta_log/<N>.json. Every reader must find:
  - Delta readers (deltalake QueryBuilder, polars.read_delta, DuckDB's delta
    extension): the state table at the latest version = the model after
    tail round 0, at version 1 = the model after the records (every key and
    value compared); the changelog table's rows per (epoch, op) = the
    manifests' files summed over all versions, puts and deletes = the
    demo's (records + tail round 0), and every write of a sample key in
    sequence order;
  - plain-Parquet readers (pyarrow dataset, DataFusion, Spark) read
    changelog/epoch=<E>/*.parquet with hive partitioning and must find the
    same changelog figures. They do not read state/: it has deletion vectors
    (a later checkpoint adds a file with its changes and marks the replaced
    and deleted rows of older files in a DV), which plain Parquet readers
    do not apply, so they would return stale and deleted rows.
The SQL in examples/ (DuckDB with the delta extension, DataFusion and Spark
SQL on the changelog) runs too and must give the same figures, and so do
the query lines the demo prints after "query them:" (DuckDB through the
python duckdb module with the wheel's extension file instead of INSTALL
delta, the python3 -c lines with this Python; spark-sql is skipped: it
needs delta-spark from Maven). deltalake, Polars, pyarrow and DataFusion
also read from S3; DuckDB (its httpfs extension is downloaded at run time)
and Spark (needs hadoop-aws) read a local copy of the S3 table.
Then: a table root in the old layout (manifests/) must be refused, and
delta_props.py's seeded property test runs on a local store.

Prints what each check proved and closes with "interop: N passed, N failed".
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from urllib.parse import urlparse

import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import delta_props  # noqa: E402
import delta_readers as dr  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "examples")
CORES = 2


# --------------------------------------------------------------------------
# What the demo wrote (mirrors `record` and `write_tail` in src/demo.rs).

def record(core, i):
    """Key and value (None: a delete) of record i of core `core`."""
    key_id = i // 2 if i % 10 == 9 else i
    key = f"c{core:02}-k{key_id:012}".encode()
    if i % 17 == 16:
        return key, None
    return key, bytes(((i * 31 + j) & 0xFF) for j in range(100))


def record_ops(records, cores):
    """Every record the demo's ingest writes, per core in order: [(core, key, value)]."""
    per_core, extra = divmod(records, cores)
    return [(core, *record(core, i)) for core in range(cores)
            for i in range(per_core + (1 if core < extra else 0))]


def tail_ops(records, cores, round_):
    """The writes of `write_tail(.., round)`: [(core, key, value or None)]."""
    ops = []
    for i in range(max(records // 100, 1)):
        core = i % cores
        key = record(core, i * 3 + round_)[0]
        ops.append((core, key, None if i % 5 == 4 else f"tail{round_}-{i}".encode()))
    return ops


def apply(state, ops):
    """Applies [(core, key, value)] to state; returns (puts, deletes)."""
    puts = deletes = 0
    for _, key, value in ops:
        if value is None:
            deletes += 1
            state.pop(key, None)
        else:
            puts += 1
            state[key] = value
    return puts, deletes


def read_walhouse_infos(table, name, what):
    """The commitInfo.walhouse field of each log entry of the table `name`
    under a local table root, oldest first (version 0 creates the table and
    has none); `what` names them in errors."""
    out = []
    for path in sorted(glob.glob(os.path.join(table, name, "_delta_log", "*.json"))):
        version = int(os.path.basename(path).split(".")[0])
        with open(path, encoding="utf-8") as f:
            for line in f:
                info = json.loads(line).get("commitInfo") if line.strip() else None
                if info and "walhouse" in info:
                    v = info["walhouse"]
                    assert v["checkpoint"] == version, (path, v["checkpoint"])
                    out.append(v)
    assert out, f"no {what} in {table}/{name}/_delta_log"
    return out


def read_manifests(table):
    """The walhouse manifests of a local table (changelog/_delta_log)."""
    return read_walhouse_infos(table, "changelog", "manifest")


def read_state_versions(table):
    """The state table's versions (state/_delta_log; built after checkpoint
    N's commit)."""
    return read_walhouse_infos(table, "state", "state version")


def live_rows(version):
    """(rows, rows marked deleted) of the files of a state table version."""
    rows = deleted = 0
    for f in version["table"]:
        rows += f["file"]["rows"]
        if f.get("deletion_vector"):
            deleted += f["deletion_vector"]["descriptor"]["cardinality"]
    return rows, deleted


class Expected:
    """The figures every reader must reproduce, from the model and the manifests."""

    def __init__(self, manifests, state_versions, records):
        self.manifests = manifests
        ops = record_ops(records, CORES)
        tail = tail_ops(records, CORES, 0)
        self.state1 = {}
        p1, d1 = apply(self.state1, ops)
        self.state2 = dict(self.state1)
        p2, d2 = apply(self.state2, tail)
        self.states = {1: self.state1, 2: self.state2}
        self.puts, self.deletes = p1 + p2, d1 + d2
        # The manifests: checkpoint 1 (the records, a full snapshot) and
        # checkpoint 2 (tail round 0, deletion vectors over checkpoint 1's
        # snapshot); their stats are per checkpoint.
        newest = manifests[-1]
        assert [m["checkpoint"] for m in manifests] == [1, 2], [m["checkpoint"] for m in manifests]
        first = manifests[0]
        assert (first["stats"]["puts"], first["stats"]["deletes"]) == (p1, d1), first["stats"]
        assert (newest["stats"]["puts"], newest["stats"]["deletes"]) == (p2, d2), newest["stats"]
        # The state table's versions, built after each commit: 1 a full
        # snapshot, 2 changes + deletion vectors over it.
        assert [v["checkpoint"] for v in state_versions] == [1, 2], state_versions
        assert state_versions[0]["keys"] == len(self.state1), state_versions[0]["keys"]
        assert state_versions[0]["snapshot_checkpoint"] == 1, state_versions[0]
        assert state_versions[1]["snapshot_checkpoint"] == 1, state_versions[1]
        # Checkpoint 1's manifest has no snapshot to start from: its state
        # for lookups is its own changelog.
        assert first["state"]["snapshot_checkpoint"] == 0, first["state"]
        assert first["state"]["deltas"] == first["changelog"], first["state"]
        rows, deleted = live_rows(state_versions[1])
        assert rows - deleted == len(self.state2), (rows, deleted, len(self.state2))
        assert deleted > 0, "checkpoint 2 marked no row deleted"
        self.dv_deleted = deleted
        self.epoch_rows = Counter()
        for m in manifests:
            for f in m["changelog"]:
                epoch = int(re.search(r"epoch=(\d+)/", f["path"]).group(1))
                self.epoch_rows[epoch] += f["rows"]
        self.entries = sum(m["stats"]["entries"] for m in manifests)
        assert sum(self.epoch_rows.values()) == self.entries, (self.epoch_rows, self.entries)
        self.value_bytes = {v: sum(len(x) for x in s.values()) for v, s in self.states.items()}
        # A sample key of core 1 written three times: records 4 and 9 (every
        # tenth record overwrites key i/2) and tail round 0's write 3 (record
        # 9 of core 1 again). Its changelog rows in sequence order.
        self.sample_key = record(1, 4)[0]
        self.sample_rows = [("delete" if v is None else "put", v)
                            for c, k, v in ops + tail if c == 1 and k == self.sample_key]
        assert len(self.sample_rows) == 3, self.sample_rows

    def check_sample(self, rows):
        """rows: [(sequence, op, value)] of the changelog for sample_key."""
        got = [(str(o), to_bytes(v)) for _, o, v in sorted(rows, key=lambda r: r[0])]
        assert got == self.sample_rows, (self.sample_key, got)
        return f"all {len(got)} writes of {self.sample_key.decode()} in order"

    def check_changelog(self, counts):
        """counts: {(epoch, op): rows}. Returns a summary."""
        counts = {(int(e), str(o)): int(n) for (e, o), n in counts.items()}
        by_epoch, by_op = Counter(), Counter()
        for (e, o), n in counts.items():
            by_epoch[e] += n
            by_op[o] += n
        assert dict(by_epoch) == dict(self.epoch_rows), (dict(by_epoch), dict(self.epoch_rows))
        assert sum(by_epoch.values()) == self.entries
        assert by_op["put"] == self.puts, (by_op, self.puts)
        assert by_op["delete"] == self.deletes, (by_op, self.deletes)
        assert set(by_op) <= {"put", "delete", "epoch_barrier", "commit", "checkpoint"}, by_op
        return (f"changelog {self.entries} rows in epoch partitions {sorted(by_epoch)} "
                f"(= manifests), {self.puts} puts + {self.deletes} deletes (= demo)")

    def check_state(self, rows, version):
        """rows: [(key, value)] of the state table at `version` (1 or 2)."""
        want = self.states[version]
        state = {to_bytes(k): to_bytes(v) for k, v in rows}
        assert len(state) == len(rows), f"v{version}: {len(rows) - len(state)} duplicate keys"
        missing = [k for k in want if k not in state]
        extra = [k for k in state if k not in want]
        wrong = [k for k, v in want.items() if k in state and state[k] != v]
        assert not (missing or extra or wrong), (
            f"v{version}: {len(missing)} keys missing (e.g. {missing[:3]}), {len(extra)} extra "
            f"(e.g. {extra[:3]}), {len(wrong)} values differ (e.g. {wrong[:3]})")
        return len(state)

    def check_states(self, read):
        """read(version or None) -> [(key, value)]: latest = v2, and v1."""
        n2 = self.check_state(read(None), 2)
        n1 = self.check_state(read(1), 1)
        return (f"state latest {n2} keys = model after tail 0, v1 {n1} keys = model after "
                f"the records (every value)")

    def check_count(self, row, version):
        """row: (keys, value_bytes) of the state at version 1 or 2."""
        keys, value_bytes = (int(x) for x in row)
        assert keys == len(self.states[version]), (version, keys, len(self.states[version]))
        assert value_bytes == self.value_bytes[version], (version, value_bytes)
        return f"v{version} {keys} keys, {value_bytes} value bytes"


def example_sql(name, table_dir):
    """The statements of examples/<name>.sql with TABLE_DIR filled in."""
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
        text = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("--"))
    text = text.replace("TABLE_DIR", table_dir)
    return [s.strip() for s in text.split(";") if s.strip()]


def to_bytes(v):
    return bytes(v) if v is not None else None


def sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


# --------------------------------------------------------------------------
# Readers. Each takes a Source and returns a one-line summary of what it proved.

class Source:
    """A table written by the demo: local directory or S3 prefix."""

    def __init__(self, label, expected, local_dir=None, s3=None, demo_stdout=None):
        self.label = label
        self.expected = expected
        self.local_dir = local_dir  # always set: for S3, a local copy
        self.s3 = s3  # dict(bucket, prefix, endpoint, key, secret, region) or None
        self.demo_stdout = demo_stdout

    def delta(self, table, use_s3):
        """(path or URL, storage_options) of the Delta table `table`."""
        if not use_s3:
            return os.path.join(self.local_dir, table), None
        s3 = self.s3
        return (f"s3://{s3['bucket']}/{s3['prefix']}/{table}",
                dr.s3_storage_options(s3["endpoint"], s3["key"], s3["secret"], s3["region"]))


def deltalake_reader(src, use_s3):
    ex = src.expected
    state, opts = src.delta("state", use_s3)
    s = ex.check_states(lambda v: dr.read_deltalake(state, v, ["key", "value"], opts))
    changelog, _ = src.delta("changelog", use_s3)
    rows = dr.deltalake_sql(changelog, "SELECT epoch, op, count(*) FROM t GROUP BY epoch, op",
                            storage_options=opts)
    s += "; " + ex.check_changelog({(e, o): n for e, o, n in rows})
    rows = dr.deltalake_sql(changelog, "SELECT sequence, op, value FROM t "
                            f"WHERE key = X'{ex.sample_key.hex()}'", storage_options=opts)
    return s + "; " + ex.check_sample(rows)


def polars_reader(src, use_s3):
    import polars as pl

    ex = src.expected
    state, opts = src.delta("state", use_s3)
    s = ex.check_states(lambda v: dr.read_polars(state, v, ["key", "value"], opts))
    changelog, _ = src.delta("changelog", use_s3)
    lf = pl.scan_delta(changelog, storage_options=opts)
    assert "epoch" in lf.collect_schema().names()
    df = lf.group_by("epoch", "op").len().collect()
    s += "; " + ex.check_changelog({(e, o): n for e, o, n in df.iter_rows()})
    df = (lf.filter(pl.col("key") == ex.sample_key).select("sequence", "op", "value").collect())
    return s + "; " + ex.check_sample(list(df.iter_rows()))


def duckdb_reader(src, use_s3):
    assert not use_s3
    ex = src.expected
    con = dr.duckdb_delta_connect()
    d = src.local_dir
    state = os.path.join(d, "state")
    s = ex.check_states(lambda v: dr.read_duckdb(state, v, ["key", "value"], con=con))
    changelog = sql_str(os.path.join(d, "changelog"))
    rows = con.execute(f"SELECT epoch, op, count(*) FROM delta_scan({changelog}) "
                       "GROUP BY ALL").fetchall()
    s += "; " + ex.check_changelog({(e, o): n for e, o, n in rows})
    rows = con.execute(f"SELECT sequence, op, value FROM delta_scan({changelog}) WHERE key = ?",
                       [ex.sample_key]).fetchall()
    s += "; " + ex.check_sample(rows)
    # examples/duckdb.sql as README shows it, with the extension loaded from
    # the wheel's file instead of INSTALL delta (nothing is downloaded).
    con = dr.duckdb_delta_connect()
    stmts = example_sql("duckdb.sql", d)
    assert [x.lower() for x in stmts[:2]] == ["install delta", "load delta"], stmts[:2]
    stmts = stmts[2:]
    assert len(stmts) == 4 and stmts[2].upper().startswith("ATTACH"), stmts
    changelog_rows = con.execute(stmts[0]).fetchall()
    s3 = ex.check_changelog({(e, o): n for e, o, n in changelog_rows})
    s3 += "; state " + ex.check_count(con.execute(stmts[1]).fetchone(), 2)
    con.execute(stmts[2])
    s3 += ", " + ex.check_count(con.execute(stmts[3]).fetchone(), 1)
    return f"{s}; examples/duckdb.sql: {s3}"


# Plain-Parquet readers: the changelog only. The state table has deletion
# vectors, which plain Parquet readers do not apply (they would return the
# rows that later checkpoints replaced or deleted).

def pyarrow_reader(src, use_s3):
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    ex = src.expected
    if use_s3:
        s3 = src.s3
        ep = urlparse(s3["endpoint"])
        fs = pafs.S3FileSystem(access_key=s3["key"], secret_key=s3["secret"], region=s3["region"],
                               endpoint_override=ep.netloc, scheme=ep.scheme)
        base = f"{s3['bucket']}/{s3['prefix']}/changelog"
    else:
        fs, base = pafs.LocalFileSystem(), os.path.join(src.local_dir, "changelog")
    # changelog/epoch=<E>/*.parquet (not _delta_log/, which may hold Delta
    # checkpoint parquet files).
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if re.fullmatch(r"epoch=\d+/[^/]+\.parquet", f.path[len(base) + 1:])]
    changelog = ds.dataset(files, format="parquet", partitioning="hive", filesystem=fs,
                           partition_base_dir=base)
    assert "epoch" in changelog.schema.names, changelog.schema
    t = changelog.to_table(columns=["epoch", "op"])
    counts = Counter(zip(t.column("epoch").to_pylist(), t.column("op").to_pylist()))
    s = ex.check_changelog(counts)
    t = changelog.to_table(columns=["sequence", "op", "value"],
                           filter=ds.field("key") == ex.sample_key)
    s += "; " + ex.check_sample(list(zip(*(t.column(c).to_pylist()
                                          for c in ("sequence", "op", "value")))))
    return s + f" ({len(files)} files)"


def datafusion_reader(src, use_s3):
    from datafusion import SessionContext

    ex = src.expected
    ctx = SessionContext()
    if use_s3:
        from datafusion.object_store import AmazonS3

        s3 = src.s3
        store = AmazonS3(bucket_name=s3["bucket"], region=s3["region"], access_key_id=s3["key"],
                         secret_access_key=s3["secret"], endpoint=s3["endpoint"], allow_http=True)
        ctx.register_object_store("s3://", store, s3["bucket"])
        base = f"s3://{s3['bucket']}/{s3['prefix']}"
    else:
        base = src.local_dir
    ctx.register_parquet("changelog", f"{base}/changelog/",
                         table_partition_cols=[("epoch", pa.int64())])
    t = ctx.sql("SELECT epoch, op, count(*) AS n FROM changelog GROUP BY epoch, op").to_arrow_table()
    s = ex.check_changelog(
        dict(zip(zip(t.column("epoch").to_pylist(), t.column("op").to_pylist()),
                 t.column("n").to_pylist())))
    t = ctx.sql("SELECT sequence, op, value FROM changelog "
                f"WHERE key = X'{ex.sample_key.hex()}'").to_arrow_table()
    s += "; " + ex.check_sample(list(zip(*(t.column(c).to_pylist()
                                          for c in ("sequence", "op", "value")))))
    if use_s3:
        return s
    # examples/datafusion.sql as README shows it (partitions inferred).
    ctx = SessionContext()
    stmts = example_sql("datafusion.sql", base)
    assert len(stmts) == 2, stmts
    ctx.sql(stmts[0]).collect()
    t = ctx.sql(stmts[1]).to_arrow_table()
    s3 = ex.check_changelog({(e, o): n for e, o, n in zip(*(t.column(i).to_pylist()
                                                            for i in range(3)))})
    return f"{s}; examples/datafusion.sql: {s3}"


_spark = None


def spark_session():
    global _spark
    if _spark is None:
        from pyspark.sql import SparkSession

        _spark = (SparkSession.builder.master("local[2]").appName("walhouse-interop")
                  .config("spark.ui.enabled", "false")
                  .config("spark.ui.showConsoleProgress", "false")
                  .config("spark.sql.shuffle.partitions", "2")
                  .config("spark.driver.bindAddress", "127.0.0.1")
                  .config("spark.driver.host", "127.0.0.1")
                  .getOrCreate())
        _spark.sparkContext.setLogLevel("ERROR")
    return _spark


def spark_reader(src, use_s3):
    assert not use_s3
    ex = src.expected
    spark = spark_session()
    d = src.local_dir
    changelog = spark.read.parquet(f"{d}/changelog")  # skips _delta_log/
    assert "epoch" in changelog.columns, changelog.columns
    rows = changelog.groupBy("epoch", "op").count().collect()
    s = ex.check_changelog({(r["epoch"], r["op"]): r["count"] for r in rows})
    changelog.createOrReplaceTempView("changelog")
    rows = spark.sql("SELECT sequence, op, value FROM changelog "
                     f"WHERE key = X'{ex.sample_key.hex()}'").collect()
    s += "; " + ex.check_sample([tuple(r) for r in rows])
    # examples/spark.sql as README shows it.
    stmts = example_sql("spark.sql", d)
    assert len(stmts) == 1, stmts
    s3 = ex.check_changelog({(e, o): n for e, o, n in spark.sql(stmts[0]).collect()})
    return f"{s}; examples/spark.sql: {s3}"


def demo_queries_reader(src, use_s3):
    """The query lines `walhouse demo` prints after "query them:"."""
    assert not use_s3
    ex = src.expected
    lines = src.demo_stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("query them"))
    queries = [l.strip() for l in lines[start + 1:] if l.startswith("  ")]
    queries = [q for q in queries if not q.startswith("#")]
    done, skipped = [], []
    for q in queries:
        argv = shlex.split(q)
        if argv[0] == "duckdb" and argv[1] == "-c":
            # INSTALL/LOAD delta: the extension is loaded from the wheel's file.
            stmts = [x.strip() for x in argv[2].split(";") if x.strip()]
            assert stmts[:2] == ["INSTALL delta", "LOAD delta"], stmts
            con = dr.duckdb_delta_connect()
            for x in stmts[2:-1]:
                con.execute(x)
            rows = con.execute(stmts[-1]).fetchall()
            if "/changelog')" in stmts[-1]:
                ex.check_changelog({(e, o): n for e, o, n in rows})
                done.append("duckdb changelog")
            elif any("VERSION 1" in x for x in stmts):
                done.append("duckdb " + ex.check_count(rows[0], 1))
            else:
                done.append("duckdb " + ex.check_count(rows[0], 2))
        elif argv[0] == "python3" and argv[1] == "-c":
            out = subprocess.run([sys.executable, "-c", argv[2]], capture_output=True,
                                 text=True, check=False, timeout=120)
            assert out.returncode == 0, (q, out.stderr)
            if "polars" in argv[2]:
                assert out.stdout.split() == [str(len(ex.state2)), str(len(ex.state1))], out.stdout
                done.append(f"polars heights {len(ex.state2)} {len(ex.state1)}")
            elif "deltalake" in argv[2]:
                # version=1; the output is arro3's table repr with the count.
                assert "version=1" in argv[2], argv[2]
                numbers = [int(n) for n in re.findall(r"\b\d+\b", out.stdout)]
                assert numbers == [len(ex.state1)], out.stdout
                done.append(f"deltalake v1 count {len(ex.state1)}")
            else:
                raise AssertionError(f"unknown python3 query line: {q}")
        elif argv[0] == "spark-sql":
            skipped.append("spark-sql (needs io.delta:delta-spark from Maven)")
        else:
            raise AssertionError(f"unknown query line: {q}")
    assert len(done) == 5 and len(skipped) == 1, (done, skipped)
    return f"{len(done)} lines run: {', '.join(done)}; skipped {', '.join(skipped) or 'none'}"


# --------------------------------------------------------------------------

def run_demo(walhouse, data_dir, records, store=None):
    cmd = [walhouse, "demo", "--data-dir", data_dir, "--records", str(records),
           "--cores", str(CORES)]
    if store:
        cmd += ["--store", store]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    assert "read back: verified" in out.stdout and "MISMATCH" not in out.stdout, out.stdout
    return out.stdout


def old_layout_check(walhouse, work):
    """A table root in the old layout (manifests/<N>.json) is refused."""
    d = os.path.join(work, "old-layout")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "manifests"))
    with open(os.path.join(d, "manifests", "00000000000000000001.json"), "w") as f:
        f.write('{"checkpoint": 1}\n')
    said = []
    for cmd in ("verify", "checkpoints"):
        out = subprocess.run([walhouse, cmd, "--store", d], capture_output=True, text=True,
                             check=False)
        assert out.returncode != 0, (cmd, out.returncode, out.stdout)
        assert "old layout" in out.stderr, (cmd, out.stderr)
        said.append(f"{cmd} exit {out.returncode}")
    return f"{', '.join(said)}: {out.stderr.strip().splitlines()[0]}"


def log_cleanup_check(walhouse, work):
    """After gc cleans the Delta logs up behind a log checkpoint (versions
    before 10 gone), deltalake, Polars and DuckDB read both tables from it:
    the state, at the latest and a retained version, equals `recover
    --dump`, and the changelog holds every record."""
    d = os.path.join(work, "log-cleanup")
    shutil.rmtree(d, ignore_errors=True)
    run = lambda *args, **kw: subprocess.run([walhouse, *args, "--data-dir", d],  # noqa: E731
                                             capture_output=True, text=True, check=True, **kw)
    records = 0
    model, models = {}, {}
    for r in range(1, 13):
        lines = [json.dumps({"key": f"k{(i * 7 + r) % 60:03}", "value": f"r{r}-{i}"})
                 for i in range(40)]
        lines.append(json.dumps({"key": f"k{r * 3 % 60:03}", "value": None}))
        for line in lines:
            op = json.loads(line)
            if op["value"] is None:
                model.pop(op["key"], None)
            else:
                model[op["key"]] = op["value"]
        models[r] = sorted((k.encode(), v.encode()) for k, v in model.items())
        records += len(lines)
        run("ingest", "--cores", "2", "--no-pin", input="\n".join(lines) + "\n")
        run("checkpoint")
    gc = run("gc", "--retain", "2", "--grace-secs", "0", "--force").stdout
    table = os.path.join(d, "table")
    for name in ("changelog", "state"):
        log = os.path.join(table, name, "_delta_log")
        assert not os.path.exists(os.path.join(log, f"{0:020}.json")), (name, gc)
        assert os.path.exists(os.path.join(log, f"{10:020}.checkpoint.parquet")), name
    assert "20 log objects" in gc, gc
    want = sorted((row["key"].encode(), row["value"].encode())
                  for row in map(json.loads, run("recover", "--dump").stdout.splitlines()))
    assert want == models[12], "recover --dump differs from the model"
    checked = []
    for version in (None, 11):
        for reader, rows in dr.read_all(os.path.join(table, "state"), version,
                                        ["key", "value"]).items():
            if isinstance(rows, Exception):
                raise AssertionError(f"{reader} at version {version}") from rows
            assert rows == models[version or 12], (reader, version, len(rows))
            checked.append(f"{reader}@{version or 'latest'}")
    for reader, rows in dr.read_all(os.path.join(table, "changelog"), None, ["op"]).items():
        if isinstance(rows, Exception):
            raise AssertionError(f"{reader} changelog") from rows
        n = sum(1 for (op,) in rows if op in ("put", "delete"))
        assert n == records, (reader, n, records)
        checked.append(f"{reader} changelog")
    return (f"12 checkpoints, gc --retain 2: {gc.split('removed ')[1].split(' and ')[0]}; "
            f"{len(want)} keys and {records} records read from log checkpoint 10 by "
            f"{', '.join(checked)}")


def s3_settings(url):
    u = urlparse(url)
    return {"bucket": u.netloc, "prefix": u.path.strip("/"),
            "endpoint": os.environ["AWS_ENDPOINT"], "key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
            "region": os.environ.get("AWS_REGION", "us-east-1")}


def download(s3, dest):
    """A local copy of the S3 table, for the readers that cannot reach S3 here."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["key"],
                          aws_secret_access_key=s3["secret"], region_name=s3["region"])
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"],
                                                                  Prefix=s3["prefix"] + "/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(s3["prefix"]) + 1:]
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            client.download_file(s3["bucket"], obj["Key"], path)
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--walhouse", required=True, help="the walhouse binary")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--s3-url", help="s3://bucket/prefix for the S3 run (optional)")
    ap.add_argument("--keep", help="directory to write into and keep (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=delta_props.DEFAULT_SEED,
                    help="seed of delta_props.py's property test")
    ap.add_argument("--props-rounds", type=int, default=delta_props.DEFAULT_ROUNDS,
                    help="checkpoints of the property test (0: skip it)")
    args = ap.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="walhouse-interop-")
    os.makedirs(work, exist_ok=True)
    sources = []
    started = time.monotonic()
    local = os.path.join(work, "local")
    shutil.rmtree(local, ignore_errors=True)
    stdout = run_demo(args.walhouse, local, args.records)
    table = os.path.join(local, "table")
    ex = Expected(read_manifests(table), read_state_versions(table), args.records)
    sources.append(Source("local", ex, local_dir=table, demo_stdout=stdout))
    print(f"demo --records {args.records}: local table {table}, checkpoints 1 and 2 "
          f"({ex.dv_deleted} rows marked deleted by v2's deletion vectors) "
          f"({time.monotonic() - started:.1f} s)")
    if args.s3_url:
        url = args.s3_url.rstrip("/") + f"/interop-{int(time.time())}-{os.getpid()}"
        s3 = s3_settings(url)
        data = os.path.join(work, "s3-wal")
        shutil.rmtree(data, ignore_errors=True)
        stdout = run_demo(args.walhouse, data, args.records, store=url)
        copy = os.path.join(work, "s3-copy")
        shutil.rmtree(copy, ignore_errors=True)
        n = download(s3, copy)
        sources.append(Source(url, Expected(read_manifests(copy), read_state_versions(copy),
                                            args.records),
                              local_dir=copy, s3=s3, demo_stdout=stdout))
        print(f"demo --store {url}: {n} objects (local copy for DuckDB and Spark: {copy})")

    # (name, reader, reads S3, local source only)
    readers = [("deltalake", deltalake_reader, True, False),
               ("polars", polars_reader, True, False),
               ("duckdb", duckdb_reader, False, False),
               ("pyarrow", pyarrow_reader, True, False),
               ("datafusion", datafusion_reader, True, False),
               ("spark", spark_reader, False, False),
               ("demo-lines", demo_queries_reader, False, True)]
    passed = failed = 0

    def report(name, where, fn):
        nonlocal passed, failed
        t0 = time.monotonic()
        try:
            summary = fn()
            passed += 1
            print(f"ok   {name:<10} {where:<16} {summary} ({time.monotonic() - t0:.1f} s)",
                  flush=True)
        except Exception:  # noqa: BLE001 - report every check, then fail
            failed += 1
            print(f"FAIL {name:<10} {where:<16}", flush=True)
            traceback.print_exc()
            sys.stderr.flush()

    for src in sources:
        for name, reader, reads_s3, local_only in readers:
            if local_only and src.s3 is not None:
                continue
            use_s3 = src.s3 is not None and reads_s3
            where = "from S3" if use_s3 else ("local copy of S3" if src.s3 else "local")
            report(name, where, lambda: reader(src, use_s3))  # noqa: B023
    if _spark is not None:
        _spark.stop()
    report("old-layout", "local", lambda: old_layout_check(args.walhouse, work))
    report("log-cleanup", "local", lambda: log_cleanup_check(args.walhouse, work))
    if args.props_rounds:
        report("delta-props", "local",
               lambda: delta_props.run(args.walhouse, os.path.join(work, "props"),
                                       seed=args.seed, rounds=args.props_rounds))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"run time {time.monotonic() - started:.0f} s")
    print(f"interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
