//! Arrow schemas of the `changelog` and `state` tables, read from `schemas/`.
//!
//! The checked-in files (`schemas/changelog.schema.json`,
//! `schemas/state.schema.json`, arrow-schema's serde format) are the single
//! source: the writer uses exactly what they say, so the documented schema and
//! the written one cannot drift apart. `schemas/README.md` describes both
//! tables column by column.
//!
//! Neither table holds a column named `epoch` or `checkpoint`: those are the
//! Hive partition columns of the object paths (`changelog/epoch=<E>/`,
//! `state/checkpoint=<N>/`), and Spark and pyarrow refuse a partition column
//! the data also holds. Every integer is signed and the timestamp is
//! `TIMESTAMP(MICROS, UTC)`, so Spark reads the files without settings.

use std::sync::OnceLock;

use arrow_schema::{Schema, SchemaRef};

/// Version of the Parquet table schemas in `schemas/` (recorded in each
/// manifest and in each schema's `walhouse.schema_version` metadata).
pub const SCHEMA_VERSION: u32 = 1;

const CHANGELOG_JSON: &str = include_str!("../../schemas/changelog.schema.json");
const STATE_JSON: &str = include_str!("../../schemas/state.schema.json");

/// The schema of the `changelog` table: one row per WAL entry, in merge order.
///
/// Columns: `wal_epoch`, `core`, `sequence`, `ts`, `timestamp_ns`, `op`,
/// `key`, `value`, `commit_offsets`, `watermark`, `checkpoint_id` (see
/// `schemas/README.md`).
#[must_use]
pub fn changelog_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(CHANGELOG_JSON)).clone()
}

/// The schema of the `state` table: the latest value of each live key.
///
/// Columns: `key`, `value`, `last_epoch` (see `schemas/README.md`).
#[must_use]
pub fn state_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(STATE_JSON)).clone()
}

fn parse(json: &str) -> SchemaRef {
    let schema: Schema = serde_json::from_str(json)
        .expect("the schema files in schemas/ are compiled in and a unit test proves they parse");
    SchemaRef::new(schema)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Fields, TimeUnit};

    use super::*;

    fn metadata(table: &str) -> HashMap<String, String> {
        HashMap::from([
            ("walhouse.table".to_owned(), table.to_owned()),
            (
                "walhouse.schema_version".to_owned(),
                SCHEMA_VERSION.to_string(),
            ),
        ])
    }

    fn expected_changelog() -> Schema {
        let pair = Fields::from(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("offset", DataType::Int64, false),
        ]);
        let element = Field::new("element", DataType::Struct(pair), false);
        Schema::new(vec![
            Field::new("wal_epoch", DataType::Int64, false),
            Field::new("core", DataType::Int32, false),
            Field::new("sequence", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("timestamp_ns", DataType::Int64, false),
            Field::new("op", DataType::Utf8, false),
            Field::new("key", DataType::Binary, true),
            Field::new("value", DataType::Binary, true),
            Field::new("commit_offsets", DataType::List(Arc::new(element)), true),
            Field::new("watermark", DataType::Int64, true),
            Field::new("checkpoint_id", DataType::Int64, true),
        ])
        .with_metadata(metadata("changelog"))
    }

    fn expected_state() -> Schema {
        Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("value", DataType::Binary, false),
            Field::new("last_epoch", DataType::Int64, false),
        ])
        .with_metadata(metadata("state"))
    }

    #[test]
    fn checked_in_schemas_parse_to_the_documented_columns() {
        assert_eq!(*changelog_schema(), expected_changelog());
        assert_eq!(*state_schema(), expected_state());
    }

    #[test]
    fn no_column_collides_with_a_partition_column_and_all_integers_are_signed() {
        for schema in [changelog_schema(), state_schema()] {
            for field in schema.fields() {
                assert!(
                    !matches!(field.name().as_str(), "epoch" | "checkpoint"),
                    "{} is a partition column",
                    field.name()
                );
                assert!(
                    !matches!(
                        field.data_type(),
                        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64
                    ),
                    "{} is unsigned",
                    field.name()
                );
            }
            assert!(schema.field_with_name("key").is_ok(), "bloom filter column");
        }
    }

    #[test]
    fn checked_in_files_are_the_pretty_serde_form() {
        // The files are what `serde_json::to_string_pretty` gives (modulo the
        // order of metadata keys), so regenerating them gives no diff noise.
        for (json, expected) in [
            (CHANGELOG_JSON, expected_changelog()),
            (STATE_JSON, expected_state()),
        ] {
            let file: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(file, serde_json::to_value(&expected).unwrap());
        }
    }
}
