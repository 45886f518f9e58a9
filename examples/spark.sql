-- walhouse tables in Spark SQL. TABLE_DIR is the table directory that
-- `walhouse demo` prints under "tables:" (without file://):
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/spark.sql > /tmp/q.sql
--   spark-sql -f /tmp/q.sql
-- Spark discovers the epoch=<E> and checkpoint=<N> partitions itself.
-- tests/interop runs this file against the demo's tables (pyspark, local mode).

-- The changelog: every WAL operation, by epoch.
SELECT epoch, op, count(*) AS n
FROM parquet.`TABLE_DIR/changelog`
GROUP BY epoch, op ORDER BY epoch, op;

-- The state: the latest value of every live key, in the newest snapshot.
SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes
FROM parquet.`TABLE_DIR/state`
WHERE checkpoint = (SELECT max(checkpoint) FROM parquet.`TABLE_DIR/state`);
