-- walhouse tables in DuckDB. TABLE_DIR is the table directory that
-- `walhouse demo` prints under "tables:" (without file://), e.g.
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/duckdb.sql | duckdb
-- tests/interop runs this file against the demo's tables.

-- The changelog: every WAL operation, partitioned by epoch=<E>.
SELECT epoch, op, count(*) AS n
FROM read_parquet('TABLE_DIR/changelog/*/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL;

-- The state: the latest value of every live key, in the newest snapshot
-- (state/checkpoint=<N>). A manifest whose snapshot is older adds the
-- changelog epochs after it (see README, "Lakehouse checkpoints").
SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes
FROM read_parquet('TABLE_DIR/state/*/*.parquet', hive_partitioning = true)
WHERE checkpoint = (SELECT max(checkpoint)
                    FROM read_parquet('TABLE_DIR/state/*/*.parquet', hive_partitioning = true));
