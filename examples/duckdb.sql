-- walhouse tables in DuckDB, through its delta extension (the state table
-- has deletion vectors: a plain read_parquet of state/ returns replaced and
-- deleted rows too). TABLE_DIR is the table directory that `walhouse demo`
-- prints under "tables:" (without file://), e.g.
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/duckdb.sql | duckdb
-- tests/interop runs this file against the demo's tables, with the LOAD
-- below pointed at the extension file of the duckdb-ext-delta wheel.
INSTALL delta;
LOAD delta;

-- The changelog (Delta table, append-only, partitioned by epoch): every WAL
-- operation of every checkpoint, by epoch.
SELECT epoch, op, count(*) AS n
FROM delta_scan('TABLE_DIR/changelog')
GROUP BY ALL ORDER BY ALL;

-- The state (Delta table, one live row per key): the latest value of every
-- key as of the newest checkpoint (the latest Delta version).
SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes
FROM delta_scan('TABLE_DIR/state');

-- The state as of checkpoint 1 (Delta version N = checkpoint N).
ATTACH 'TABLE_DIR/state' AS s1 (TYPE delta, VERSION 1);
SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes FROM s1;
