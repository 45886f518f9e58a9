//! Delta log checkpoints: the classic single-file (V1) checkpoint of
//! PROTOCOL.md "Checkpoints", `<version:020>.checkpoint.parquet`, and the
//! `_last_checkpoint` hint.
//!
//! A checkpoint holds the reconciled state of a table at a version: one row
//! per action (`protocol`, `metaData`, the latest `txn` of each appId, and
//! one `add` per live file with its deletion vector). Removes (tombstones)
//! are not written; the `remove` column is present and all null.
//!
//! Field names, types and nullability follow delta-kernel-rs
//! (`kernel/src/actions/mod.rs`: `Add`, `Remove`, `Metadata`, `Protocol`,
//! `SetTransaction`, `DeletionVectorDescriptor`). Each action column is a
//! nullable struct; fields that the kernel declares not null are written as
//! Parquet `required` inside the `optional` group. Parquet encodings are the
//! standard three-level ones (as Spark writes them): a list is
//! `<name> (LIST) { repeated group list { element } }` and a map is
//! `<name> (MAP) { repeated group key_value { required key; value } }`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::log::{Action, Add, Metadata, Protocol, Remove, Txn};

/// The reconciled state of a table at a version.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSnapshot {
    /// The last `protocol` action.
    pub protocol: Protocol,
    /// The last `metaData` action.
    pub metadata: Metadata,
    /// The latest `txn` of each appId, by appId.
    pub txns: Vec<Txn>,
    /// The live files (with their deletion vectors), by path.
    pub adds: Vec<Add>,
}

impl TableSnapshot {
    /// Rows (actions) a checkpoint of this snapshot holds.
    #[must_use]
    pub fn num_actions(&self) -> usize {
        2 + self.txns.len() + self.adds.len()
    }
}

/// Replays log entries `0..=v` (`entries[i]` is version `i`) into the state
/// at the last one.
///
/// The last `protocol` and `metaData` win; the last `txn` of an appId wins;
/// an `add` replaces any live file of the same path; a `remove` deletes its
/// path. The actions of one commit are a set in Delta (a commit may remove
/// `(path, no DV)` and add `(path, DV)`), so each entry's removes are applied
/// before its adds, whatever their line order.
///
/// # Errors
///
/// No entries, or no `protocol` / `metaData` by the last entry.
pub fn reconcile(entries: &[Vec<Action>]) -> Result<TableSnapshot, String> {
    if entries.is_empty() {
        return Err("no log entries".into());
    }
    let mut protocol = None;
    let mut metadata = None;
    let mut txns: BTreeMap<String, Txn> = BTreeMap::new();
    let mut adds: BTreeMap<String, Add> = BTreeMap::new();
    for entry in entries {
        for action in entry {
            match action {
                Action::Protocol(p) => protocol = Some(p.clone()),
                Action::Metadata(m) => metadata = Some(m.clone()),
                Action::Txn(t) => {
                    txns.insert(t.app_id.clone(), t.clone());
                }
                Action::Remove(r) => {
                    adds.remove(&r.path);
                }
                Action::Add(_) | Action::CommitInfo(_) => {}
            }
        }
        for action in entry {
            if let Action::Add(a) = action {
                adds.insert(a.path.clone(), a.clone());
            }
        }
    }
    let version = entries.len() - 1;
    Ok(TableSnapshot {
        protocol: protocol
            .ok_or_else(|| format!("no protocol action in versions 0..={version}"))?,
        metadata: metadata
            .ok_or_else(|| format!("no metaData action in versions 0..={version}"))?,
        txns: txns.into_values().collect(),
        adds: adds.into_values().collect(),
    })
}

/// One checkpoint row: exactly one of its action columns is set.
enum Row<'a> {
    Protocol(&'a Protocol),
    Metadata(&'a Metadata),
    Txn(&'a Txn),
    Add(&'a Add),
    #[allow(dead_code)] // tombstones are not written; the column is kept
    Remove(&'a Remove),
}

fn rows(snapshot: &TableSnapshot) -> Vec<Row<'_>> {
    let mut rows = Vec::with_capacity(snapshot.num_actions());
    rows.push(Row::Protocol(&snapshot.protocol));
    rows.push(Row::Metadata(&snapshot.metadata));
    rows.extend(snapshot.txns.iter().map(Row::Txn));
    rows.extend(snapshot.adds.iter().map(Row::Add));
    rows
}

/// The Arrow schema of a checkpoint (the Parquet file's schema; the Parquet
/// list/map group names are `list`/`element` and `key_value`/`key`/`value`).
#[cfg(test)]
fn checkpoint_schema() -> arrow_schema::SchemaRef {
    // The schema is whatever the batch builder produces; build it empty.
    match build_batch(&[]) {
        Ok(batch) => batch.schema(),
        Err(e) => unreachable!("empty checkpoint batch: {e}"),
    }
}

/// The bytes of `<version:020>.checkpoint.parquet` of `snapshot`: rows
/// `protocol`, `metaData`, each `txn`, each `add`; zstd-compressed.
///
/// # Errors
///
/// An Arrow or Parquet error (not expected for valid actions).
pub fn checkpoint_parquet(snapshot: &TableSnapshot) -> Result<Vec<u8>, String> {
    let batch = build_batch(&rows(snapshot))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| e.to_string())?,
        ))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
        .map_err(|e| format!("checkpoint writer: {e}"))?;
    writer
        .write(&batch)
        .map_err(|e| format!("checkpoint write: {e}"))?;
    writer
        .close()
        .map_err(|e| format!("checkpoint close: {e}"))?;
    Ok(out)
}

/// The contents of `_delta_log/_last_checkpoint` for a classic checkpoint
/// of `snapshot` at `version` whose file is `parquet_bytes` long.
///
/// The kernel needs `version` and `size` (actions in the checkpoint);
/// `parts` is omitted (single file); `sizeInBytes` and `numOfAddFiles` are
/// optional hints.
#[must_use]
pub fn last_checkpoint_json(
    version: u64,
    snapshot: &TableSnapshot,
    parquet_bytes: usize,
) -> String {
    serde_json::json!({
        "version": version,
        "size": snapshot.num_actions(),
        "sizeInBytes": parquet_bytes,
        "numOfAddFiles": snapshot.adds.len(),
    })
    .to_string()
}

// --------------------------------------------------------------------------
// Column builders. Every child is built for all rows; where its parent is
// null it is null too (allowed for not-null fields: Arrow checks only that
// a not-null child's nulls lie under the parent's, and Parquet writes
// nothing for them).

type Child = (&'static str, bool, ArrayRef);

fn strings<S: AsRef<str>>(values: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn longs(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn ints(values: impl IntoIterator<Item = Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(values))
}

fn bools(values: impl IntoIterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(values))
}

fn structure(children: Vec<Child>, valid: Vec<bool>) -> Result<ArrayRef, String> {
    let fields: Fields = children
        .iter()
        .map(|(name, nullable, array)| Field::new(*name, array.data_type().clone(), *nullable))
        .collect();
    let arrays = children.into_iter().map(|(_, _, a)| a).collect();
    StructArray::try_new(fields, arrays, Some(valid.into()))
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| format!("struct column: {e}"))
}

/// A `map<string,string>` column (`key_value` / `key` / `value`); `None`
/// rows are null maps.
fn string_map<'a>(
    values: impl IntoIterator<Item = Option<Vec<(&'a str, Option<&'a str>)>>>,
    values_nullable: bool,
) -> Result<ArrayRef, String> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
        .with_values_field(Field::new("value", DataType::Utf8, values_nullable));
    for row in values {
        match row {
            Some(entries) => {
                for (k, v) in entries {
                    b.keys().append_value(k);
                    b.values().append_option(v);
                }
                b.append(true).map_err(|e| format!("map column: {e}"))?;
            }
            None => b.append(false).map_err(|e| format!("map column: {e}"))?,
        }
    }
    Ok(Arc::new(b.finish()))
}

/// An `array<string>` column (`list` / `element`, elements not null).
fn string_list<'a>(values: impl IntoIterator<Item = Option<&'a [String]>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new()).with_field(Field::new(
        "element",
        DataType::Utf8,
        false,
    ));
    for row in values {
        match row {
            Some(items) => {
                for item in items {
                    b.values().append_value(item);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn pairs(m: &BTreeMap<String, Option<String>>) -> Vec<(&str, Option<&str>)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect()
}

fn pairs_required(m: &BTreeMap<String, String>) -> Vec<(&str, Option<&str>)> {
    m.iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect()
}

fn txn_column(rows: &[Row<'_>]) -> Result<ArrayRef, String> {
    let t: Vec<Option<&Txn>> = rows
        .iter()
        .map(|r| if let Row::Txn(t) = r { Some(*t) } else { None })
        .collect();
    structure(
        vec![
            (
                "appId",
                false,
                strings(t.iter().map(|t| t.map(|t| &t.app_id))),
            ),
            (
                "version",
                false,
                longs(t.iter().map(|t| t.map(|t| t.version))),
            ),
            (
                "lastUpdated",
                true,
                longs(t.iter().map(|t| t.map(|t| t.last_updated))),
            ),
        ],
        t.iter().map(Option::is_some).collect(),
    )
}

fn deletion_vector_column(
    dvs: &[Option<&super::dv::DeletionVectorDescriptor>],
) -> Result<ArrayRef, String> {
    structure(
        vec![
            (
                "storageType",
                false,
                strings(dvs.iter().map(|d| d.map(|d| &d.storage_type))),
            ),
            (
                "pathOrInlineDv",
                false,
                strings(dvs.iter().map(|d| d.map(|d| &d.path_or_inline_dv))),
            ),
            (
                "offset",
                true,
                ints(dvs.iter().map(|d| d.and_then(|d| d.offset))),
            ),
            (
                "sizeInBytes",
                false,
                ints(dvs.iter().map(|d| d.map(|d| d.size_in_bytes))),
            ),
            (
                "cardinality",
                false,
                longs(dvs.iter().map(|d| d.map(|d| d.cardinality))),
            ),
        ],
        dvs.iter().map(Option::is_some).collect(),
    )
}

fn add_column(rows: &[Row<'_>]) -> Result<ArrayRef, String> {
    let a: Vec<Option<&Add>> = rows
        .iter()
        .map(|r| if let Row::Add(a) = r { Some(*a) } else { None })
        .collect();
    let dvs: Vec<_> = a
        .iter()
        .map(|a| a.and_then(|a| a.deletion_vector.as_ref()))
        .collect();
    structure(
        vec![
            ("path", false, strings(a.iter().map(|a| a.map(|a| &a.path)))),
            (
                "partitionValues",
                false,
                string_map(
                    a.iter().map(|a| a.map(|a| pairs(&a.partition_values))),
                    true,
                )?,
            ),
            ("size", false, longs(a.iter().map(|a| a.map(|a| a.size)))),
            (
                "modificationTime",
                false,
                longs(a.iter().map(|a| a.map(|a| a.modification_time))),
            ),
            (
                "dataChange",
                false,
                bools(a.iter().map(|a| a.map(|a| a.data_change))),
            ),
            (
                "stats",
                true,
                strings(a.iter().map(|a| a.and_then(|a| a.stats.as_ref()))),
            ),
            ("tags", true, string_map(a.iter().map(|_| None), true)?),
            ("deletionVector", true, deletion_vector_column(&dvs)?),
        ],
        a.iter().map(Option::is_some).collect(),
    )
}

fn remove_column(rows: &[Row<'_>]) -> Result<ArrayRef, String> {
    let r: Vec<Option<&Remove>> = rows
        .iter()
        .map(|x| {
            if let Row::Remove(r) = x {
                Some(*r)
            } else {
                None
            }
        })
        .collect();
    let dvs: Vec<_> = r
        .iter()
        .map(|r| r.and_then(|r| r.deletion_vector.as_ref()))
        .collect();
    structure(
        vec![
            ("path", false, strings(r.iter().map(|r| r.map(|r| &r.path)))),
            (
                "deletionTimestamp",
                true,
                longs(r.iter().map(|r| r.map(|r| r.deletion_timestamp))),
            ),
            (
                "dataChange",
                false,
                bools(r.iter().map(|r| r.map(|r| r.data_change))),
            ),
            (
                "extendedFileMetadata",
                true,
                bools(r.iter().map(|r| r.map(|r| r.extended_file_metadata))),
            ),
            (
                "partitionValues",
                true,
                string_map(
                    r.iter().map(|r| r.map(|r| pairs(&r.partition_values))),
                    true,
                )?,
            ),
            ("size", true, longs(r.iter().map(|r| r.map(|r| r.size)))),
            ("deletionVector", true, deletion_vector_column(&dvs)?),
        ],
        r.iter().map(Option::is_some).collect(),
    )
}

fn metadata_column(rows: &[Row<'_>]) -> Result<ArrayRef, String> {
    let m: Vec<Option<&Metadata>> = rows
        .iter()
        .map(|r| {
            if let Row::Metadata(m) = r {
                Some(*m)
            } else {
                None
            }
        })
        .collect();
    let format = structure(
        vec![
            (
                "provider",
                false,
                strings(m.iter().map(|m| m.map(|m| &m.format.provider))),
            ),
            (
                "options",
                false,
                string_map(
                    m.iter()
                        .map(|m| m.map(|m| pairs_required(&m.format.options))),
                    false,
                )?,
            ),
        ],
        m.iter().map(Option::is_some).collect(),
    )?;
    structure(
        vec![
            ("id", false, strings(m.iter().map(|m| m.map(|m| &m.id)))),
            ("name", true, strings(m.iter().map(|m| m.map(|m| &m.name)))),
            (
                "description",
                true,
                strings(m.iter().map(|m| m.map(|m| &m.description))),
            ),
            ("format", false, format),
            (
                "schemaString",
                false,
                strings(m.iter().map(|m| m.map(|m| &m.schema_string))),
            ),
            (
                "partitionColumns",
                false,
                string_list(m.iter().map(|m| m.map(|m| m.partition_columns.as_slice()))),
            ),
            (
                "configuration",
                false,
                string_map(
                    m.iter()
                        .map(|m| m.map(|m| pairs_required(&m.configuration))),
                    false,
                )?,
            ),
            (
                "createdTime",
                true,
                longs(m.iter().map(|m| m.map(|m| m.created_time))),
            ),
        ],
        m.iter().map(Option::is_some).collect(),
    )
}

fn protocol_column(rows: &[Row<'_>]) -> Result<ArrayRef, String> {
    let p: Vec<Option<&Protocol>> = rows
        .iter()
        .map(|r| {
            if let Row::Protocol(p) = r {
                Some(*p)
            } else {
                None
            }
        })
        .collect();
    structure(
        vec![
            (
                "minReaderVersion",
                false,
                ints(p.iter().map(|p| p.map(|p| p.min_reader_version))),
            ),
            (
                "minWriterVersion",
                false,
                ints(p.iter().map(|p| p.map(|p| p.min_writer_version))),
            ),
            (
                "readerFeatures",
                true,
                string_list(
                    p.iter()
                        .map(|p| p.and_then(|p| p.reader_features.as_deref())),
                ),
            ),
            (
                "writerFeatures",
                true,
                string_list(
                    p.iter()
                        .map(|p| p.and_then(|p| p.writer_features.as_deref())),
                ),
            ),
        ],
        p.iter().map(Option::is_some).collect(),
    )
}

fn build_batch(rows: &[Row<'_>]) -> Result<RecordBatch, String> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("txn", txn_column(rows)?),
        ("add", add_column(rows)?),
        ("remove", remove_column(rows)?),
        ("metaData", metadata_column(rows)?),
        ("protocol", protocol_column(rows)?),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| format!("checkpoint batch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::dv::DeletionVectorDescriptor;
    use super::super::log::Format;
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_array::MapArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn protocol(r: i32) -> Protocol {
        Protocol {
            min_reader_version: r,
            min_writer_version: 7,
            reader_features: Some(vec!["deletionVectors".into()]),
            writer_features: Some(vec!["deletionVectors".into()]),
        }
    }

    fn metadata(name: &str) -> Metadata {
        Metadata {
            id: "id-1".into(),
            name: name.into(),
            description: "d".into(),
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: "{\"type\":\"struct\",\"fields\":[]}".into(),
            partition_columns: vec!["epoch".into()],
            configuration: BTreeMap::from([("delta.enableDeletionVectors".into(), "true".into())]),
            created_time: 5,
        }
    }

    fn add(path: &str, size: i64, dv: Option<i64>) -> Add {
        Add {
            path: path.into(),
            partition_values: BTreeMap::from([("epoch".into(), Some("3".into()))]),
            size,
            modification_time: 9,
            data_change: true,
            stats: Some("{\"numRecords\":10}".into()),
            deletion_vector: dv.map(|c| DeletionVectorDescriptor {
                storage_type: "u".into(),
                path_or_inline_dv: "ab^-aqEH.-t@S}K{vb[*k^".into(),
                offset: Some(1),
                size_in_bytes: 36,
                cardinality: c,
            }),
        }
    }

    fn remove(path: &str) -> Remove {
        Remove {
            path: path.into(),
            deletion_timestamp: 1,
            data_change: true,
            extended_file_metadata: true,
            partition_values: BTreeMap::new(),
            size: 1,
            deletion_vector: None,
        }
    }

    fn txn(app: &str, v: i64) -> Txn {
        Txn {
            app_id: app.into(),
            version: v,
            last_updated: v * 10,
        }
    }

    fn log() -> Vec<Vec<Action>> {
        vec![
            vec![
                Action::CommitInfo(serde_json::json!({"operation": "CREATE TABLE"})),
                Action::Protocol(protocol(1)),
                Action::Metadata(metadata("old")),
            ],
            vec![
                Action::Txn(txn("a", 1)),
                Action::Add(add("f1", 100, None)),
                Action::Add(add("f2", 200, None)),
                Action::Add(add("f3", 300, None)),
            ],
            vec![
                Action::Protocol(protocol(3)),
                Action::Metadata(metadata("new")),
                Action::Txn(txn("a", 2)),
                Action::Txn(txn("b", 7)),
                // A DV on f1: the add may come before its remove in a commit.
                Action::Add(add("f1", 100, Some(4))),
                Action::Remove(remove("f1")),
                Action::Remove(remove("f2")),
                Action::Add(add("f4", 400, None)),
            ],
        ]
    }

    #[test]
    fn reconcile_replays_the_log() {
        let s = reconcile(&log()).unwrap();
        assert_eq!(s.protocol, protocol(3));
        assert_eq!(s.metadata.name, "new");
        assert_eq!(s.txns, vec![txn("a", 2), txn("b", 7)]);
        let paths: Vec<_> = s.adds.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["f1", "f3", "f4"]);
        assert_eq!(s.adds[0].deletion_vector.as_ref().unwrap().cardinality, 4);
        assert_eq!(s.num_actions(), 7);

        // At version 1: the first protocol, no DV, three files.
        let s1 = reconcile(&log()[..2]).unwrap();
        assert_eq!(s1.protocol, protocol(1));
        assert_eq!(s1.adds.len(), 3);
        assert!(s1.adds.iter().all(|a| a.deletion_vector.is_none()));
        assert_eq!(s1.txns, vec![txn("a", 1)]);

        // Re-adding a path replaces it; a later remove deletes it.
        let mut l = log();
        l.push(vec![Action::Add(add("f3", 333, None))]);
        l.push(vec![Action::Remove(remove("f4"))]);
        let s = reconcile(&l).unwrap();
        let got: Vec<_> = s.adds.iter().map(|a| (a.path.as_str(), a.size)).collect();
        assert_eq!(got, [("f1", 100), ("f3", 333)]);

        assert!(reconcile(&[]).is_err());
        assert!(reconcile(&log()[1..2]).unwrap_err().contains("protocol"));
        assert!(reconcile(&[vec![Action::Protocol(protocol(1))]])
            .unwrap_err()
            .contains("metaData"));
    }

    #[expect(
        clippy::many_single_char_names,
        clippy::too_many_lines,
        reason = "one read-back of every action column, in one place"
    )]
    #[test]
    fn checkpoint_reads_back_with_the_protocol_schema() {
        let snapshot = reconcile(&log()).unwrap();
        let bytes = checkpoint_parquet(&snapshot).unwrap();
        let path = std::env::temp_dir().join(format!("ckpt-test-{}.parquet", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();

        // Parquet leaf paths: standard list and map group names.
        let leaves: Vec<String> = builder
            .parquet_schema()
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        for want in [
            "txn.appId",
            "txn.version",
            "txn.lastUpdated",
            "add.path",
            "add.partitionValues.key_value.key",
            "add.partitionValues.key_value.value",
            "add.size",
            "add.modificationTime",
            "add.dataChange",
            "add.stats",
            "add.tags.key_value.key",
            "add.deletionVector.storageType",
            "add.deletionVector.pathOrInlineDv",
            "add.deletionVector.offset",
            "add.deletionVector.sizeInBytes",
            "add.deletionVector.cardinality",
            "remove.path",
            "remove.deletionTimestamp",
            "remove.extendedFileMetadata",
            "remove.deletionVector.cardinality",
            "metaData.id",
            "metaData.format.provider",
            "metaData.format.options.key_value.key",
            "metaData.schemaString",
            "metaData.partitionColumns.list.element",
            "metaData.configuration.key_value.value",
            "metaData.createdTime",
            "protocol.minReaderVersion",
            "protocol.minWriterVersion",
            "protocol.readerFeatures.list.element",
            "protocol.writerFeatures.list.element",
        ] {
            assert!(leaves.iter().any(|l| l == want), "{want} not in {leaves:?}");
        }
        assert_eq!(builder.schema().as_ref(), checkpoint_schema().as_ref());
        let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 7);
        for (col, valid) in [
            ("protocol", 1),
            ("metaData", 1),
            ("txn", 2),
            ("add", 3),
            ("remove", 0),
        ] {
            let a = b.column_by_name(col).unwrap();
            assert_eq!(a.len() - a.null_count(), valid, "{col}");
        }

        // Values.
        let p = b.column_by_name("protocol").unwrap().as_struct();
        assert_eq!(p.column(0).as_primitive::<Int32Type>().value(0), 3);
        let feats = p.column_by_name("readerFeatures").unwrap().as_list::<i32>();
        assert_eq!(
            feats.value(0).as_string::<i32>().value(0),
            "deletionVectors"
        );
        let m = b.column_by_name("metaData").unwrap().as_struct();
        assert_eq!(
            m.column_by_name("name")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "new"
        );
        let cols = m
            .column_by_name("partitionColumns")
            .unwrap()
            .as_list::<i32>();
        assert_eq!(cols.value(1).as_string::<i32>().value(0), "epoch");
        let t = b.column_by_name("txn").unwrap().as_struct();
        assert_eq!(t.column(0).as_string::<i32>().value(3), "b");
        assert_eq!(t.column(1).as_primitive::<Int64Type>().value(3), 7);
        let a = b.column_by_name("add").unwrap().as_struct();
        assert_eq!(a.column(0).as_string::<i32>().value(4), "f1");
        assert_eq!(
            a.column_by_name("stats")
                .unwrap()
                .as_string::<i32>()
                .value(4),
            "{\"numRecords\":10}"
        );
        let pv: &MapArray = a.column_by_name("partitionValues").unwrap().as_map();
        let entry = pv.value(4);
        assert_eq!(entry.column(0).as_string::<i32>().value(0), "epoch");
        assert_eq!(entry.column(1).as_string::<i32>().value(0), "3");
        let dv = a.column_by_name("deletionVector").unwrap().as_struct();
        assert!(dv.is_valid(4) && dv.is_null(5) && dv.is_null(6));
        assert_eq!(
            dv.column_by_name("cardinality")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(4),
            4
        );
        assert_eq!(
            dv.column_by_name("offset")
                .unwrap()
                .as_primitive::<Int32Type>()
                .value(4),
            1
        );

        let hint: serde_json::Value =
            serde_json::from_str(&last_checkpoint_json(2, &snapshot, bytes.len())).unwrap();
        assert_eq!(
            hint,
            serde_json::json!({"version": 2, "size": 7, "sizeInBytes": bytes.len(), "numOfAddFiles": 3})
        );
        let _ = std::fs::remove_file(path);
    }
}
