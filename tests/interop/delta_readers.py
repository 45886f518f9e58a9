#!/usr/bin/env python3
"""Read a Delta table (walhouse's changelog/ or state/) with several readers,
each returning the same plain Python rows so the results compare equal.

    python delta_readers.py TABLE_PATH [--version N]

Every reader function takes (table_path, version=None, columns=None) and
returns a sorted list of tuples, one per row, in the table's column order
(or `columns`' order), with plain values: bytes for binary, int for integers,
str for strings, int microseconds since the epoch (UTC) for timestamps,
tuples for lists and structs (a struct as its field values in order), None
for null. version=None reads the latest version.

Needs the venv of tests/interop/requirements.txt (deltalake, polars,
duckdb 1.4.4 with the duckdb-ext-delta wheel). read_deltalake and read_polars
also take storage_options (an s3:// path: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP; see s3_storage_options).
Readers and their limits:
  - deltalake: DeltaTable(path, version=N) + QueryBuilder SQL (DataFusion
    inside delta-rs); DeletionVectors supported, to_pyarrow_table() is not
    (it refuses tables with the deletionVectors reader feature).
  - polars: read_delta(path, version=N); deletion vectors through deltalake
    (>= 1.4.2) and polars' native parquet scan.
  - duckdb: the delta extension (delta-kernel-rs) from the duckdb-ext-delta
    wheel (duckdb 1.4.4) or duckdb-extension-delta (1.5.5); latest via
    delta_scan(path), version N via ATTACH path (TYPE delta, VERSION N).
  - datafusion (optional, not in READERS): the datafusion package reading
    through deltalake's table provider (FFI); DataFusion itself has no Delta
    reader, and the FFI scan fails on files with deletion vectors.
  - txn_versions(path): latest txn version per appId via deltalake's
    DeltaTable.transaction_version(app_id); deltalake has no call listing the
    app ids, so they are collected from the _delta_log (JSON commits and any
    parquet checkpoint).
"""

import argparse
import datetime as _dt
import decimal
import glob
import json
import os
import sys

# --------------------------------------------------------------------------
# Normalization.

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _plain(v):
    if v is None or isinstance(v, (bool, int, str, bytes)):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        d = v - _EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    if isinstance(v, dict):
        return tuple(_plain(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if hasattr(v, "tolist"):  # numpy arrays and scalars
        return _plain(v.tolist())
    if isinstance(v, (float, decimal.Decimal, _dt.date)):
        return v
    raise TypeError(f"no plain form for {type(v).__name__}: {v!r}")


def _key(v):
    """Sort key that orders None, mixed types and nested tuples."""
    if v is None:
        return (0,)
    if isinstance(v, tuple):
        return (2, tuple(_key(x) for x in v))
    return (1, type(v).__name__, v)


def _rows(raw_rows):
    rows = [tuple(_plain(v) for v in r) for r in raw_rows]
    rows.sort(key=_key)
    return rows


def _select_list(columns):
    if not columns:
        return "*"
    return ", ".join('"' + c.replace('"', '""') + '"' for c in columns)


def _sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


def _local_path(path):
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


# --------------------------------------------------------------------------
# Readers.

def s3_storage_options(endpoint, key, secret, region="us-east-1"):
    """storage_options of deltalake and polars for an S3-compatible server
    over plain HTTP (MinIO, moto, LocalStack)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": region,
            "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}


def deltalake_sql(path, sql, version=None, storage_options=None, name="t"):
    """SQL over the table registered as `name` (deltalake's QueryBuilder),
    as plain sorted rows."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    dt = DeltaTable(os.fspath(path), version=version, storage_options=storage_options)
    reader = QueryBuilder().register(name, dt).execute(sql)
    table = pa.table(reader)  # arro3 RecordBatchReader -> pyarrow via the Arrow C stream
    names = table.column_names
    return _rows(tuple(r[n] for n in names) for r in table.to_pylist())


def read_deltalake(path, version=None, columns=None, storage_options=None):
    """deltalake (delta-rs): DeltaTable + QueryBuilder (DataFusion SQL)."""
    return deltalake_sql(path, f"SELECT {_select_list(columns)} FROM t", version,
                         storage_options)


def read_polars(path, version=None, columns=None, storage_options=None):
    """polars.read_delta(path, version=N)."""
    import polars as pl

    df = pl.read_delta(os.fspath(path), version=version, columns=columns,
                       storage_options=storage_options)
    return _rows(df.rows())


def duckdb_delta_extension_path():
    """The delta.duckdb_extension file a pip wheel installed for this duckdb:
    duckdb-ext-delta (duckdb_ext/extensions/v<duckdb>/<platform>/, duckdb 1.4.x)
    or duckdb-extension-delta (duckdb_extension_delta/extensions/v<duckdb>/,
    duckdb 1.5.x)."""
    import importlib.util

    import duckdb

    ver = f"v{duckdb.__version__}"
    found = []
    for pkg, pattern in (("duckdb_ext", ("extensions", ver, "*", "delta.duckdb_extension")),
                         ("duckdb_extension_delta", ("extensions", ver, "delta.duckdb_extension"))):
        spec = importlib.util.find_spec(pkg)
        for d in (spec.submodule_search_locations or []) if spec else []:
            found += glob.glob(os.path.join(d, *pattern))
    if not found:
        raise RuntimeError(f"no delta.duckdb_extension for duckdb {duckdb.__version__}: "
                           "pip install duckdb-ext-delta (duckdb 1.4.x) or "
                           "duckdb-extension-delta (duckdb 1.5.x)")
    return found[0]


def duckdb_delta_connect():
    """A DuckDB connection with the delta extension of the pip wheel loaded
    from its file (nothing downloaded: autoinstall off). Both wheels' files
    are signed, so allow_unsigned_extensions is not needed."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"LOAD {_sql_str(duckdb_delta_extension_path())}")
    return con


def _duckdb_rows(con, sql):
    # Through Arrow: fetchall() of a TIMESTAMPTZ needs pytz.
    res = con.execute(sql)
    table = res.fetch_arrow_table() if hasattr(res, "fetch_arrow_table") else res.arrow().read_all()
    names = table.column_names
    return _rows(tuple(r[n] for n in names) for r in table.to_pylist())


def read_duckdb(path, version=None, columns=None, con=None):
    """DuckDB delta extension: delta_scan(path), or for a version
    ATTACH path AS x (TYPE delta, VERSION N), which both duckdb 1.4.4 and
    1.5.5 take (delta_scan(path, version=N) exists only from 1.5)."""
    con = con or duckdb_delta_connect()
    path = os.path.abspath(_local_path(path))
    sel = _select_list(columns)
    if version is None:
        return _duckdb_rows(con, f"SELECT {sel} FROM delta_scan({_sql_str(path)})")
    if not isinstance(version, int) or version < 0:
        raise NotImplementedError(f"duckdb reads only integer Delta versions, not {version!r}")
    alias = f"delta_v{version}_{abs(hash(path)) % 10**8}"
    con.execute(f"ATTACH {_sql_str(path)} AS {alias} (TYPE delta, VERSION {version})")
    try:
        return _duckdb_rows(con, f"SELECT {sel} FROM {alias}")
    finally:
        con.execute(f"DETACH {alias}")


def read_datafusion(path, version=None, columns=None):
    """The datafusion package (no Delta reader of its own: a plain parquet
    scan of the directory would return deleted rows) with deltalake's table
    provider over FFI: SessionContext.register_table(name, DeltaTable). The
    scan is delta-rs's, so this checks the FFI path, not a second Delta
    implementation. Needs a datafusion whose FFI ABI matches deltalake's
    (datafusion 55.0.0 with deltalake 1.6.6).

    Works for versions without deletion vectors; a scan of rows of a file with
    a DV fails at planning ("DeltaScanExec rejects node CooperativeExec during
    sequential deletion vector scans": delta-rs requires a single-partition,
    unrewritten scan for DV files and DataFusion's EnsureCooperative rule
    wraps it). SELECT count(*) still answers, from stats (numRecords -
    cardinality), not from the data. Hence not in READERS."""
    import pyarrow as pa
    from datafusion import SessionContext
    from deltalake import DeltaTable

    ctx = SessionContext()
    ctx.register_table("t", DeltaTable(os.fspath(path), version=version))
    table = pa.Table.from_batches(ctx.sql(f"SELECT {_select_list(columns)} FROM t").collect())
    names = table.column_names
    return _rows(tuple(r[n] for n in names) for r in table.to_pylist())


READERS = {"deltalake": read_deltalake, "polars": read_polars, "duckdb": read_duckdb}
OPTIONAL_READERS = {"datafusion": read_datafusion}


# --------------------------------------------------------------------------
# txn actions.

def log_app_ids(path):
    """Every txn appId in the table's _delta_log (JSON commits, parquet checkpoints)."""
    log = os.path.join(_local_path(path), "_delta_log")
    ids = set()
    for f in glob.glob(os.path.join(log, "*.json")):
        with open(f) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    txn = json.loads(line).get("txn")
                    if txn:
                        ids.add(txn["appId"])
    for f in glob.glob(os.path.join(log, "*.checkpoint*.parquet")):
        import pyarrow.parquet as pq

        if "txn" in pq.read_schema(f).names:
            for t in pq.read_table(f, columns=["txn"]).column("txn").to_pylist():
                if t:
                    ids.add(t["appId"])
    return sorted(ids)


def txn_versions(path, version=None, app_ids=None):
    """{appId: latest txn version} as deltalake reports it at `version`
    (DeltaTable.transaction_version(app_id)); app ids not in that snapshot
    are left out. A local table (the app ids come from its _delta_log)."""
    from deltalake import DeltaTable

    dt = DeltaTable(os.fspath(path), version=version)
    out = {}
    for app in app_ids if app_ids is not None else log_app_ids(path):
        v = dt.transaction_version(app)
        if v is not None:
            out[app] = v
    return out


# --------------------------------------------------------------------------

def read_all(path, version=None, columns=None, optional=False):
    """{reader name: rows or the exception it raised}; a reader whose
    package is not installed is left out. optional: also OPTIONAL_READERS."""
    out = {}
    readers = {**READERS, **(OPTIONAL_READERS if optional else {})}
    for name, fn in readers.items():
        try:
            __import__({"deltalake": "deltalake", "polars": "polars", "duckdb": "duckdb",
                        "datafusion": "datafusion"}[name])
        except ImportError:
            continue
        try:
            out[name] = fn(path, version, columns)
        except Exception as e:  # report, don't stop: one reader's failure is a result
            out[name] = e
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Row counts of a Delta table per reader.")
    p.add_argument("table")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--rows", action="store_true", help="print the rows too")
    p.add_argument("--datafusion", action="store_true",
                   help="also the datafusion package via deltalake's FFI provider (no DVs)")
    a = p.parse_args(argv)
    results = read_all(a.table, a.version, optional=a.datafusion)
    first = None
    for name, r in results.items():
        if isinstance(r, NotImplementedError):
            print(f"{name:10} unsupported: {r}")
        elif isinstance(r, Exception):
            print(f"{name:10} FAILED: {type(r).__name__}: {str(r).splitlines()[0] if str(r) else ''}")
        else:
            same = "" if first is None else ("  same rows" if r == first else "  ROWS DIFFER")
            first = r if first is None else first
            print(f"{name:10} {len(r)} rows{same}")
            if a.rows:
                for row in r:
                    print("    ", row)
    try:
        print(f"txn        {txn_versions(a.table, a.version)}")
    except Exception as e:
        print(f"txn        FAILED: {type(e).__name__}: {e}")
    return 0 if all(not isinstance(r, Exception) for n, r in results.items() if n in READERS) else 1


if __name__ == "__main__":
    sys.exit(main())
