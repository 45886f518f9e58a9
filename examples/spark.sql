-- walhouse's changelog in Spark SQL. TABLE_DIR is the table directory that
-- `walhouse demo` prints under "tables:" (without file://):
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/spark.sql > /tmp/q.sql
--   spark-sql -f /tmp/q.sql
-- Spark discovers the epoch=<E> partitions itself and skips _delta_log/.
-- tests/interop runs this file against the demo's tables (pyspark, local mode).
--
-- changelog/ is an append-only Delta table without deletion vectors, so a
-- plain Parquet read of it is exactly its rows. state/ has deletion vectors,
-- which a plain Parquet read does not apply (it would return replaced and
-- deleted rows too): read it through Delta Lake for Spark, e.g.
--   spark-sql --packages io.delta:delta-spark_2.13:4.0.0 \
--     --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
--     --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
-- and then
--   SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes
--   FROM delta.`TABLE_DIR/state`;                    -- the newest checkpoint
--   SELECT count(*) AS keys FROM delta.`TABLE_DIR/state` VERSION AS OF 1;
--                                                    -- checkpoint 1
-- (tests/interop does not run those: it needs the delta-spark package from
-- Maven.)

-- The changelog: every WAL operation, by epoch.
SELECT epoch, op, count(*) AS n
FROM parquet.`TABLE_DIR/changelog`
GROUP BY epoch, op ORDER BY epoch, op;
