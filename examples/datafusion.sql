-- walhouse's changelog in DataFusion (datafusion-cli). TABLE_DIR is the
-- table directory that `walhouse demo` prints under "tables:" (without
-- file://):
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/datafusion.sql > /tmp/q.sql
--   datafusion-cli -f /tmp/q.sql
-- For S3, use LOCATION 's3://bucket/prefix/changelog/' with AWS_ENDPOINT,
-- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION set.
-- tests/interop runs this file against the demo's tables.
--
-- changelog/ is a Delta table, but append-only and without deletion
-- vectors, so its Parquet files read as plain Parquet are exactly its rows.
-- state/ is not read here: it has deletion vectors (rows of older files
-- that a later checkpoint replaced or deleted), which a plain Parquet scan
-- does not apply, and DataFusion has no Delta reader of its own (use
-- DuckDB's delta extension, deltalake or polars; see examples/duckdb.sql).

-- epoch=<E> folders become a partition column (a string); _delta_log/
-- holds no .parquet file it would pick up.
CREATE EXTERNAL TABLE changelog STORED AS PARQUET LOCATION 'TABLE_DIR/changelog/';

-- The changelog: every WAL operation, by epoch.
SELECT CAST(epoch AS BIGINT) AS epoch, op, count(*) AS n
FROM changelog GROUP BY epoch, op ORDER BY 1, 2;
