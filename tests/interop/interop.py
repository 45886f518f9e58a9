#!/usr/bin/env python3
"""Lakehouse interop: the tables `walhouse demo` writes, read by pyarrow,
DuckDB, Polars, DataFusion and Spark (local mode).

Runs `walhouse demo --records N --cores 2` with the default local store,
and, with --s3-url, again with `--store s3://...` (endpoint and credentials
from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
Every reader must find:
  - the changelog's rows: per epoch as many as the manifest's files hold,
    in total the manifest's entry count; puts and deletes exactly as many as
    the demo wrote; the epoch=<E> partitions discovered as a column;
  - the state snapshot: exactly the demo's model of live keys and values
    (every key and value compared), with checkpoint=<N> discovered.
The SQL in examples/ (DuckDB, DataFusion, Spark SQL) runs too and must give
the same figures. pyarrow, Polars and DataFusion also read from S3; DuckDB
(its httpfs extension is downloaded at run time) and Spark (needs
hadoop-aws) read a local copy of the S3 table.

Prints what each reader proved and closes with "interop: N passed, N failed".
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from urllib.parse import urlparse

import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
CORES = 2


# --------------------------------------------------------------------------
# What the demo wrote (mirrors `record` in src/demo.rs).

def record(core, i):
    """Key and value (None: a delete) of record i of core `core`."""
    key_id = i // 2 if i % 10 == 9 else i
    key = f"c{core:02}-k{key_id:012}".encode()
    if i % 17 == 16:
        return key, None
    return key, bytes(((i * 31 + j) & 0xFF) for j in range(100))


def model(records, cores):
    """(live state {key: value}, puts, deletes) of a demo run."""
    per_core, extra = divmod(records, cores)
    state, puts, deletes = {}, 0, 0
    for core in range(cores):
        for i in range(per_core + (1 if core < extra else 0)):
            key, value = record(core, i)
            if value is None:
                deletes += 1
                state.pop(key, None)
            else:
                puts += 1
                state[key] = value
    return state, puts, deletes


class Expected:
    """The figures every reader must reproduce, from the model and the manifest."""

    def __init__(self, manifest, records):
        self.manifest = manifest
        self.state, self.puts, self.deletes = model(records, CORES)
        self.entries = manifest["stats"]["entries"]
        self.epoch_rows = Counter()
        for f in manifest["changelog"]:
            epoch = int(re.search(r"epoch=(\d+)/", f["path"]).group(1))
            self.epoch_rows[epoch] += f["rows"]
        self.snapshot_checkpoint = manifest["state"]["snapshot_checkpoint"]
        assert not manifest["state"]["deltas"], "the demo's checkpoint holds a full snapshot"
        assert manifest["stats"]["puts"] == self.puts, (manifest["stats"], self.puts)
        assert manifest["stats"]["deletes"] == self.deletes
        assert manifest["stats"]["snapshot_keys"] == len(self.state)
        assert sum(self.epoch_rows.values()) == self.entries
        self.value_bytes = sum(len(v) for v in self.state.values())
        # A sample key of core 1 written twice (records 4 and 9: every tenth
        # record overwrites key i/2): its changelog rows in sequence order.
        self.sample_key = record(1, 4)[0]
        self.sample_rows = [("put", record(1, 4)[1]), ("put", record(1, 9)[1])]

    def check_sample(self, rows):
        """rows: [(sequence, op, value)] of the changelog for sample_key."""
        got = [(str(o), to_bytes(v)) for _, o, v in sorted(rows, key=lambda r: r[0])]
        assert got == self.sample_rows, (self.sample_key, got)
        return f"both writes of {self.sample_key.decode()} in order"

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
                f"(= manifest), {self.puts} puts + {self.deletes} deletes (= demo)")

    def check_state(self, state):
        """state: {key bytes: value bytes}. Returns a summary."""
        assert len(state) == len(self.state), (len(state), len(self.state))
        wrong = [k for k, v in self.state.items() if state.get(k) != v]
        assert not wrong, f"{len(wrong)} keys differ, e.g. {wrong[:3]}"
        return f"state {len(state)} keys, every value = demo model"

    def check_sql(self, changelog_rows, state_row):
        """Results of an examples/*.sql file: [(epoch, op, n)], (keys, value_bytes)."""
        summary = self.check_changelog({(e, o): n for e, o, n in changelog_rows})
        keys, value_bytes = (int(x) for x in state_row)
        assert keys == len(self.state), (keys, len(self.state))
        assert value_bytes == self.value_bytes, (value_bytes, self.value_bytes)
        return f"{summary}; state {keys} keys, {value_bytes} value bytes"


def example_sql(name, table_dir):
    """The statements of examples/<name>.sql with TABLE_DIR filled in."""
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
        text = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("--"))
    text = text.replace("TABLE_DIR", table_dir)
    return [s.strip() for s in text.split(";") if s.strip()]


def to_bytes(v):
    return bytes(v) if v is not None else None


# --------------------------------------------------------------------------
# Readers. Each takes a Source and returns a one-line summary of what it proved.

class Source:
    """A table written by the demo: local directory or S3 prefix."""

    def __init__(self, label, expected, local_dir=None, s3=None):
        self.label = label
        self.expected = expected
        self.local_dir = local_dir  # always set: for S3, a local copy
        self.s3 = s3  # dict(bucket, prefix, endpoint, key, secret, region) or None


def pyarrow_reader(src, use_s3):
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if use_s3:
        s3 = src.s3
        ep = urlparse(s3["endpoint"])
        fs = pafs.S3FileSystem(access_key=s3["key"], secret_key=s3["secret"], region=s3["region"],
                               endpoint_override=ep.netloc, scheme=ep.scheme)
        base = f"{s3['bucket']}/{s3['prefix']}"
    else:
        fs, base = None, src.local_dir
    changelog = ds.dataset(f"{base}/changelog", format="parquet", partitioning="hive",
                           filesystem=fs)
    assert "epoch" in changelog.schema.names, changelog.schema
    t = changelog.to_table(columns=["epoch", "op"])
    counts = Counter(zip(t.column("epoch").to_pylist(), t.column("op").to_pylist()))
    s1 = src.expected.check_changelog(counts)
    t = changelog.to_table(columns=["sequence", "op", "value"],
                           filter=ds.field("key") == src.expected.sample_key)
    s1 += "; " + src.expected.check_sample(list(zip(*(t.column(c).to_pylist() for c in
                                                       ("sequence", "op", "value")))))
    state = ds.dataset(f"{base}/state", format="parquet", partitioning="hive", filesystem=fs)
    assert "checkpoint" in state.schema.names, state.schema
    t = state.to_table(filter=ds.field("checkpoint") == src.expected.snapshot_checkpoint)
    s2 = src.expected.check_state(dict(zip(t.column("key").to_pylist(),
                                           t.column("value").to_pylist())))
    return f"{s1}; {s2}"


def duckdb_reader(src, use_s3):
    import duckdb

    assert not use_s3
    con = duckdb.connect()
    d = src.local_dir
    rows = con.execute(
        f"SELECT epoch, op, count(*) FROM read_parquet('{d}/changelog/*/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL").fetchall()
    s1 = src.expected.check_changelog({(e, o): n for e, o, n in rows})
    rows = con.execute(
        f"SELECT sequence, op, value FROM read_parquet('{d}/changelog/*/*.parquet', "
        "hive_partitioning = true) WHERE key = ?", [src.expected.sample_key]).fetchall()
    s1 += "; " + src.expected.check_sample(rows)
    rows = con.execute(
        f"SELECT key, value FROM read_parquet('{d}/state/*/*.parquet', hive_partitioning = true) "
        f"WHERE checkpoint = {src.expected.snapshot_checkpoint}").fetchall()
    s2 = src.expected.check_state({to_bytes(k): to_bytes(v) for k, v in rows})
    # examples/duckdb.sql as README shows it.
    stmts = example_sql("duckdb.sql", d)
    assert len(stmts) == 2, stmts
    s3 = src.expected.check_sql(con.execute(stmts[0]).fetchall(), con.execute(stmts[1]).fetchone())
    return f"{s1}; {s2}; examples/duckdb.sql: {s3}"


def polars_reader(src, use_s3):
    import polars as pl

    if use_s3:
        s3 = src.s3
        base = f"s3://{s3['bucket']}/{s3['prefix']}"
        opts = {"aws_endpoint_url": s3["endpoint"], "aws_access_key_id": s3["key"],
                "aws_secret_access_key": s3["secret"], "aws_region": s3["region"],
                "aws_allow_http": "true"}
    else:
        base, opts = src.local_dir, None
    changelog = pl.scan_parquet(f"{base}/changelog/**/*.parquet", hive_partitioning=True,
                                storage_options=opts)
    assert "epoch" in changelog.collect_schema().names()
    df = changelog.group_by("epoch", "op").len().collect()
    s1 = src.expected.check_changelog({(e, o): n for e, o, n in df.iter_rows()})
    df = (changelog.filter(pl.col("key") == src.expected.sample_key)
          .select("sequence", "op", "value").collect())
    s1 += "; " + src.expected.check_sample(list(df.iter_rows()))
    state = pl.scan_parquet(f"{base}/state/**/*.parquet", hive_partitioning=True,
                            storage_options=opts)
    df = (state.filter(pl.col("checkpoint") == src.expected.snapshot_checkpoint)
          .select("key", "value").collect())
    s2 = src.expected.check_state(dict(df.iter_rows()))
    return f"{s1}; {s2}"


def datafusion_reader(src, use_s3):
    from datafusion import SessionContext

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
    s1 = src.expected.check_changelog(
        dict(zip(zip(t.column("epoch").to_pylist(), t.column("op").to_pylist()),
                 t.column("n").to_pylist())))
    t = ctx.sql("SELECT sequence, op, value FROM changelog "
                f"WHERE key = X'{src.expected.sample_key.hex()}'").to_arrow_table()
    s1 += "; " + src.expected.check_sample(list(zip(*(t.column(c).to_pylist() for c in
                                                       ("sequence", "op", "value")))))
    ctx.register_parquet("snapshot", f"{base}/state/checkpoint={src.expected.snapshot_checkpoint}/")
    t = ctx.sql("SELECT key, value FROM snapshot").to_arrow_table()
    s2 = src.expected.check_state(dict(zip(t.column("key").to_pylist(),
                                           t.column("value").to_pylist())))
    if use_s3:
        return f"{s1}; {s2}"
    # examples/datafusion.sql as README shows it (partitions inferred).
    ctx = SessionContext()
    stmts = example_sql("datafusion.sql", base)
    assert len(stmts) == 4, stmts
    for s in stmts[:2]:
        ctx.sql(s).collect()
    t = ctx.sql(stmts[2]).to_arrow_table()
    changelog_rows = list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(),
                              t.column(2).to_pylist()))
    t = ctx.sql(stmts[3]).to_arrow_table()
    s3 = src.expected.check_sql(changelog_rows, (t.column(0)[0].as_py(), t.column(1)[0].as_py()))
    return f"{s1}; {s2}; examples/datafusion.sql: {s3}"


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
    spark = spark_session()
    d = src.local_dir
    changelog = spark.read.parquet(f"{d}/changelog")
    assert "epoch" in changelog.columns, changelog.columns
    rows = changelog.groupBy("epoch", "op").count().collect()
    s1 = src.expected.check_changelog({(r["epoch"], r["op"]): r["count"] for r in rows})
    changelog.createOrReplaceTempView("changelog")
    rows = spark.sql("SELECT sequence, op, value FROM changelog "
                     f"WHERE key = X'{src.expected.sample_key.hex()}'").collect()
    s1 += "; " + src.expected.check_sample([tuple(r) for r in rows])
    state = spark.read.parquet(f"{d}/state")
    assert "checkpoint" in state.columns, state.columns
    rows = (state.where(state["checkpoint"] == src.expected.snapshot_checkpoint)
            .select("key", "value").collect())
    s2 = src.expected.check_state({bytes(r["key"]): bytes(r["value"]) for r in rows})
    # examples/spark.sql as README shows it.
    stmts = example_sql("spark.sql", d)
    assert len(stmts) == 2, stmts
    changelog_rows = [tuple(r) for r in spark.sql(stmts[0]).collect()]
    s3 = src.expected.check_sql(changelog_rows, tuple(spark.sql(stmts[1]).collect()[0]))
    return f"{s1}; {s2}; examples/spark.sql: {s3}"


# --------------------------------------------------------------------------

def run_demo(walhouse, data_dir, records, store=None):
    cmd = [walhouse, "demo", "--data-dir", data_dir, "--records", str(records),
           "--cores", str(CORES)]
    if store:
        cmd += ["--store", store]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    assert "state verified" in out.stdout, out.stdout
    return out.stdout


def newest_manifest_local(table):
    paths = sorted(glob.glob(os.path.join(table, "manifests", "*.json")))
    assert paths, f"no manifest under {table}"
    with open(paths[-1], encoding="utf-8") as f:
        return json.load(f)


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
    args = ap.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="walhouse-interop-")
    os.makedirs(work, exist_ok=True)
    sources = []
    started = time.monotonic()
    local = os.path.join(work, "local")
    shutil.rmtree(local, ignore_errors=True)
    run_demo(args.walhouse, local, args.records)
    table = os.path.join(local, "table")
    sources.append(Source("local", Expected(newest_manifest_local(table), args.records),
                          local_dir=table))
    print(f"demo --records {args.records}: local table {table} "
          f"({time.monotonic() - started:.1f} s)")
    if args.s3_url:
        url = args.s3_url.rstrip("/") + f"/interop-{int(time.time())}-{os.getpid()}"
        s3 = s3_settings(url)
        data = os.path.join(work, "s3-wal")
        shutil.rmtree(data, ignore_errors=True)
        run_demo(args.walhouse, data, args.records, store=url)
        copy = os.path.join(work, "s3-copy")
        shutil.rmtree(copy, ignore_errors=True)
        n = download(s3, copy)
        sources.append(Source(url, Expected(newest_manifest_local(copy), args.records),
                              local_dir=copy, s3=s3))
        print(f"demo --store {url}: {n} objects (local copy for DuckDB and Spark: {copy})")

    readers = [("pyarrow", pyarrow_reader, True), ("duckdb", duckdb_reader, False),
               ("polars", polars_reader, True), ("datafusion", datafusion_reader, True),
               ("spark", spark_reader, False)]
    passed = failed = 0
    for src in sources:
        for name, reader, reads_s3 in readers:
            use_s3 = src.s3 is not None and reads_s3
            where = "from S3" if use_s3 else ("local copy of S3" if src.s3 else "local")
            t0 = time.monotonic()
            try:
                summary = reader(src, use_s3)
                passed += 1
                print(f"ok   {name:<10} {where:<16} {summary} ({time.monotonic() - t0:.1f} s)")
            except Exception:  # noqa: BLE001 - report every reader, then fail
                failed += 1
                print(f"FAIL {name:<10} {where:<16}")
                traceback.print_exc()
    if _spark is not None:
        _spark.stop()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
