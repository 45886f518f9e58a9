-- walhouse tables in DataFusion (datafusion-cli). TABLE_DIR is the table
-- directory that `walhouse demo` prints under "tables:" (without file://):
--   sed "s#TABLE_DIR#$PWD/walhouse-data/table#g" examples/datafusion.sql > /tmp/q.sql
--   datafusion-cli -f /tmp/q.sql
-- For S3, use LOCATION 's3://bucket/prefix/changelog/' with AWS_ENDPOINT,
-- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION set.
-- tests/interop runs this file against the demo's tables.

-- epoch=<E> and checkpoint=<N> folders become partition columns (strings).
CREATE EXTERNAL TABLE changelog STORED AS PARQUET LOCATION 'TABLE_DIR/changelog/';
CREATE EXTERNAL TABLE state STORED AS PARQUET LOCATION 'TABLE_DIR/state/';

-- The changelog: every WAL operation, by epoch.
SELECT CAST(epoch AS BIGINT) AS epoch, op, count(*) AS n
FROM changelog GROUP BY epoch, op ORDER BY 1, 2;

-- The state: the latest value of every live key, in the newest snapshot
-- (octet_length takes strings only here: the hex form's length / 2).
SELECT count(*) AS keys, sum(octet_length(encode(value, 'hex')) / 2) AS value_bytes
FROM state
WHERE CAST(checkpoint AS BIGINT) = (SELECT max(CAST(checkpoint AS BIGINT)) FROM state);
