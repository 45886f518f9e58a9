//! Delta Lake log entries (`<table>/_delta_log/<version, 20 digits>.json`):
//! the actions walhouse writes, the Delta schema of each table, and the
//! create-only PUT that commits an entry.
//!
//! An entry is newline-delimited JSON, one action per line, as the Delta
//! protocol (`PROTOCOL.md` of delta-io/delta) defines it. walhouse writes
//! `commitInfo` first, then `protocol` and `metaData` (version 0 only),
//! `txn`, `remove` and `add`.

use std::collections::BTreeMap;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use object_store::PutPayload;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::error::CheckpointError;
use super::dv::DeletionVectorDescriptor;
use crate::store::Store;

/// The changelog table's folder under the table root.
pub const CHANGELOG_TABLE: &str = "changelog";
/// The state table's folder under the table root.
pub const STATE_TABLE: &str = "state";
/// The changelog table's partition column (from the object path
/// `changelog/epoch=<E>/`, not stored in the files).
pub const EPOCH_PARTITION: &str = "epoch";

/// Path of version `version` of `table`'s log, under the table root.
#[must_use]
pub fn log_path(table: &str, version: u64) -> String {
    format!("{table}/_delta_log/{version:020}.json")
}

/// The log folder of `table`, under the table root.
#[must_use]
pub fn log_dir(table: &str) -> String {
    format!("{table}/_delta_log")
}

/// The version of a log entry's path (`<table>/_delta_log/<digits>.json`),
/// or `None` for anything else (checkpoints, `_last_checkpoint`, temporary
/// files).
#[must_use]
pub fn parse_log_path(table: &str, relative: &str) -> Option<u64> {
    let name = relative
        .strip_prefix(table)?
        .strip_prefix("/_delta_log/")?
        .strip_suffix(".json")?;
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The `protocol` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    /// Least reader version.
    pub min_reader_version: i32,
    /// Least writer version.
    pub min_writer_version: i32,
    /// Reader features (reader version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    /// Writer features (writer version 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

/// The `format` of a `metaData` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Always `parquet`.
    pub provider: String,
    /// No options.
    pub options: BTreeMap<String, String>,
}

/// The `metaData` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The table's identity (a UUID).
    pub id: String,
    /// `changelog` or `state`.
    pub name: String,
    /// What the table holds.
    pub description: String,
    /// File format.
    pub format: Format,
    /// The Delta schema (JSON in a string).
    pub schema_string: String,
    /// Partition columns.
    pub partition_columns: Vec<String>,
    /// Table properties (`delta.*`, `walhouse.*`).
    pub configuration: BTreeMap<String, String>,
    /// When the table was created (ms since the Unix epoch).
    pub created_time: i64,
}

/// The `add` action: a file (with its deletion vector) joins the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Path relative to the table's folder.
    pub path: String,
    /// Partition values, as strings.
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Bytes.
    pub size: i64,
    /// ms since the Unix epoch.
    pub modification_time: i64,
    /// Always true: walhouse adds data.
    pub data_change: bool,
    /// `{"numRecords": N}` (JSON in a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// The rows of the file that are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVectorDescriptor>,
}

/// The `remove` action: a file (with the deletion vector it was added with)
/// leaves the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    /// Path relative to the table's folder.
    pub path: String,
    /// ms since the Unix epoch.
    pub deletion_timestamp: i64,
    /// Always true.
    pub data_change: bool,
    /// True: `partitionValues` and `size` are given.
    pub extended_file_metadata: bool,
    /// Partition values, as strings.
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Bytes.
    pub size: i64,
    /// The deletion vector the file was added with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVectorDescriptor>,
}

/// The `txn` action: how far an application (a source) has written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    /// The source's name.
    pub app_id: String,
    /// Its offset.
    pub version: i64,
    /// ms since the Unix epoch.
    pub last_updated: i64,
}

/// One line of a log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Free-form commit information; walhouse's manifest is its `walhouse`
    /// field.
    #[serde(rename = "commitInfo")]
    CommitInfo(Value),
    /// Reader and writer versions.
    #[serde(rename = "protocol")]
    Protocol(Protocol),
    /// Schema and properties.
    #[serde(rename = "metaData")]
    Metadata(Metadata),
    /// Application progress.
    #[serde(rename = "txn")]
    Txn(Txn),
    /// A file leaves.
    #[serde(rename = "remove")]
    Remove(Remove),
    /// A file joins.
    #[serde(rename = "add")]
    Add(Add),
}

/// The bytes of a log entry: one JSON action per line.
#[must_use]
pub fn encode_entry(actions: &[Action]) -> Vec<u8> {
    let mut out = Vec::new();
    for action in actions {
        // Serializing these types cannot fail: string keys, no floats.
        if serde_json::to_writer(&mut out, action).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// The lines of a log entry, each a JSON object with one key (the action);
/// an unreadable line is an error naming its number.
pub fn decode_entry(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<Value>(line)
                .map_err(|e| format!("line {}: invalid JSON: {e}", n + 1))
        })
        .collect()
}

/// The `commitInfo.walhouse` field of a log entry, as a `T` (`what` names
/// it in the reason of an error).
pub fn walhouse_info<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, String> {
    let lines = decode_entry(bytes).map_err(|e| format!("invalid Delta log entry: {e}"))?;
    let info = lines
        .into_iter()
        .find_map(|mut line| line.get_mut("commitInfo").map(Value::take))
        .ok_or("no commitInfo action")?;
    let walhouse = info
        .get("walhouse")
        .cloned()
        .ok_or_else(|| format!("commitInfo has no walhouse {what}: not written by walhouse"))?;
    serde_json::from_value(walhouse)
        .map_err(|e| format!("invalid {what} in commitInfo.walhouse: {e}"))
}

/// The Delta schema of `schema` (plus `extra` partition columns, `long`
/// and not nullable), as `metaData.schemaString` holds it.
#[must_use]
pub fn schema_string(schema: &Schema, extra: &[&str]) -> String {
    let mut fields: Vec<Value> = schema.fields().iter().map(|f| field(f)).collect();
    for name in extra {
        fields.push(serde_json::json!({
            "name": name, "type": "long", "nullable": false, "metadata": {}
        }));
    }
    serde_json::json!({"type": "struct", "fields": fields}).to_string()
}

fn field(f: &Field) -> Value {
    serde_json::json!({
        "name": f.name(),
        "type": delta_type(f.data_type()),
        "nullable": f.is_nullable(),
        "metadata": {},
    })
}

/// The Delta type of an Arrow type the walhouse schemas use.
fn delta_type(t: &DataType) -> Value {
    match t {
        DataType::Int64 => "long".into(),
        DataType::Int32 => "integer".into(),
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::List(element) => serde_json::json!({
            "type": "array",
            "elementType": delta_type(element.data_type()),
            "containsNull": element.is_nullable(),
        }),
        DataType::Struct(fields) => serde_json::json!({
            "type": "struct",
            "fields": fields.iter().map(|f| field(f)).collect::<Vec<_>>(),
        }),
        other => unreachable_type(other),
    }
}

/// The schemas in `schemas/` use only the types above; a unit test proves
/// it, so this is never reached by a build that passed its tests.
fn unreachable_type(t: &DataType) -> Value {
    Value::String(format!("unsupported:{t}"))
}

/// What a create-only PUT of a log entry found.
#[derive(Debug)]
pub enum Created {
    /// The entry is ours: written now, or found with the same bytes (a
    /// retried or ambiguous PUT of ours).
    Ours,
    /// Another entry of this version exists: its bytes.
    Theirs(Bytes),
}

/// Writes log entry `relative` with a create-only PUT
/// ([`Store::put_create_durable`]: durable, and whole, before its name
/// appears on a local store).
///
/// An ambiguous outcome (an error after which the PUT may have happened,
/// such as a timeout) is resolved by reading the object back: ours if the
/// bytes are the same, theirs if they differ, the original error if it is
/// absent.
pub async fn create_entry(
    store: &Store,
    relative: &str,
    body: Vec<u8>,
) -> Result<Created, CheckpointError> {
    let path = store.path(relative);
    let read_back = || async {
        match store.get_all(&path).await {
            Ok(got) => Ok(Some(got)),
            Err(e) if matches!(e.source, object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.source),
        }
    };
    let compare = |existing: Bytes| {
        if existing.as_ref() == body.as_slice() {
            Created::Ours
        } else {
            Created::Theirs(existing)
        }
    };
    match store
        .put_create_durable(relative, PutPayload::from(body.clone()))
        .await
    {
        Ok(()) => Ok(Created::Ours),
        Err(e) => {
            let already = matches!(e, object_store::Error::AlreadyExists { .. });
            match read_back().await {
                Ok(Some(existing)) => Ok(compare(existing)),
                Ok(None) if already => Err(CheckpointError::Store {
                    store: store.name().to_owned(),
                    op: "create-only put",
                    path: relative.to_owned(),
                    source: object_store::Error::Generic {
                        store: "walhouse",
                        source: format!("{relative} was reported as existing, then was not found")
                            .into(),
                    },
                }),
                Ok(None) | Err(_) => Err(CheckpointError::Store {
                    store: store.name().to_owned(),
                    op: "create-only put",
                    path: relative.to_owned(),
                    source: e,
                }),
            }
        }
    }
}

/// Versions of `table`'s log entries, ascending.
pub async fn list_versions(store: &Store, table: &str) -> Result<Vec<u64>, CheckpointError> {
    let dir = log_dir(table);
    let metas = store
        .list_all(&store.path(&dir))
        .await
        .map_err(|e| CheckpointError::store(store, "list", format!("{dir}/"), e))?;
    let mut versions: Vec<u64> = metas
        .iter()
        .filter_map(|m| store.relative(&m.location))
        .filter_map(|rel| parse_log_path(table, rel))
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (0 if it does not
/// parse; walhouse writes only times it formatted itself).
#[must_use]
pub fn millis_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{changelog_schema, state_schema};

    #[test]
    fn log_paths_sort_and_parse() {
        assert_eq!(
            log_path("state", 7),
            "state/_delta_log/00000000000000000007.json"
        );
        assert_eq!(parse_log_path("state", &log_path("state", 7)), Some(7));
        assert_eq!(parse_log_path("changelog", &log_path("state", 7)), None);
        assert_eq!(
            parse_log_path("state", "state/_delta_log/_last_checkpoint"),
            None
        );
        assert_eq!(
            parse_log_path(
                "state",
                "state/_delta_log/00000000000000000010.checkpoint.parquet"
            ),
            None
        );
    }

    #[test]
    fn every_column_of_both_schemas_has_a_delta_type() {
        for (schema, extra) in [
            (changelog_schema(), vec!["epoch"]),
            (state_schema(), vec![]),
        ] {
            let parsed: Value = serde_json::from_str(&schema_string(&schema, &extra)).unwrap();
            let fields = parsed["fields"].as_array().unwrap();
            assert_eq!(fields.len(), schema.fields().len() + extra.len());
            let text = parsed.to_string();
            assert!(!text.contains("unsupported:"), "{text}");
        }
        let changelog: Value =
            serde_json::from_str(&schema_string(&changelog_schema(), &["epoch"])).unwrap();
        assert_eq!(changelog["fields"][3]["name"], "ts");
        assert_eq!(changelog["fields"][3]["type"], "timestamp");
        assert_eq!(
            changelog["fields"][8]["type"]["elementType"]["fields"][1]["type"],
            "long"
        );
    }

    #[test]
    fn an_entry_is_one_action_per_line() {
        let actions = vec![
            Action::CommitInfo(serde_json::json!({"timestamp": 1})),
            Action::Txn(Txn {
                app_id: "kafka-0".into(),
                version: 42,
                last_updated: 1,
            }),
        ];
        let bytes = encode_entry(&actions);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "{\"commitInfo\":{\"timestamp\":1}}\n{\"txn\":{\"appId\":\"kafka-0\",\"version\":42,\"lastUpdated\":1}}\n"
        );
        let lines = decode_entry(&bytes).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(decode_entry(b"{\n").unwrap_err().contains("line 1"));
    }
}
