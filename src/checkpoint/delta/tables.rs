//! The log entries walhouse writes: version 0 of both tables, the
//! `changelog` entry of a checkpoint (its commit point) and the `state`
//! entry built after it.

use std::collections::BTreeMap;

use serde_json::json;

use object_store::ObjectStoreExt;

use super::log::{
    create_entry, decode_entry, encode_entry, list_versions, log_path, millis_of, schema_string,
    walhouse_info, Action, Add, Created, Format, Metadata, Protocol, Remove, Txn, CHANGELOG_TABLE,
    EPOCH_PARTITION, STATE_TABLE,
};
use super::log_checkpoint::{checkpoint_parquet, last_checkpoint_json, reconcile};
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::manifest::{Manifest, StateFile, StateVersion};
use crate::checkpoint::schema::{changelog_schema, state_schema, SCHEMA_VERSION};
use crate::store::Store;

/// `engineInfo` of every commit.
const ENGINE: &str = concat!("walhouse/", env!("CARGO_PKG_VERSION"));

/// Table property naming the walhouse table (`changelog` or `state`).
const TABLE_PROPERTY: &str = "walhouse.table";

/// Table property naming the data directory that owns the table.
pub const OWNER_PROPERTY: &str = "walhouse.ownerId";

/// Version 0 of `table`: protocol, schema and properties.
fn create_actions(table: &str, now_ms: i64, owner: Option<&str>) -> Vec<Action> {
    let (protocol, schema, partitions, mut configuration, description) = match table {
        CHANGELOG_TABLE => (
            // delta.appendOnly needs writer version 2; reader version 1
            // keeps the table readable by every Delta reader.
            Protocol {
                min_reader_version: 1,
                min_writer_version: 2,
                reader_features: None,
                writer_features: None,
            },
            schema_string(&changelog_schema(), &[EPOCH_PARTITION]),
            vec![EPOCH_PARTITION.to_owned()],
            BTreeMap::from([("delta.appendOnly".to_owned(), "true".to_owned())]),
            "every put, delete and commit walhouse checkpointed, in WAL merge order",
        ),
        _ => (
            Protocol {
                min_reader_version: 3,
                min_writer_version: 7,
                reader_features: Some(vec!["deletionVectors".into()]),
                writer_features: Some(vec!["deletionVectors".into()]),
            },
            schema_string(&state_schema(), &[]),
            Vec::new(),
            BTreeMap::from([("delta.enableDeletionVectors".to_owned(), "true".to_owned())]),
            "one row per live key: the latest value as of the checkpoint (Delta version)",
        ),
    };
    configuration.insert(TABLE_PROPERTY.to_owned(), table.to_owned());
    configuration.insert(
        "walhouse.schemaVersion".to_owned(),
        SCHEMA_VERSION.to_string(),
    );
    if let Some(owner) = owner {
        configuration.insert(OWNER_PROPERTY.to_owned(), owner.to_owned());
    }
    vec![
        Action::CommitInfo(json!({
            "timestamp": now_ms,
            "operation": "CREATE TABLE",
            "operationParameters": {"mode": "ErrorIfExists", "location": table},
            "isBlindAppend": true,
            "engineInfo": ENGINE,
        })),
        Action::Protocol(protocol),
        Action::Metadata(Metadata {
            id: uuid::Uuid::new_v4().to_string(),
            name: table.to_owned(),
            description: description.to_owned(),
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: schema,
            partition_columns: partitions,
            configuration,
            created_time: now_ms,
        }),
    ]
}

/// Creates version 0 of both tables unless it exists. An existing version
/// 0 is kept if walhouse wrote it (a crash after it, before checkpoint 1
/// committed); anything else is an error naming the object.
pub(crate) async fn ensure_tables(
    store: &Store,
    owner: Option<&str>,
) -> Result<(), CheckpointError> {
    let now = chrono::Utc::now().timestamp_millis();
    for table in [CHANGELOG_TABLE, STATE_TABLE] {
        let rel = log_path(table, 0);
        let body = encode_entry(&create_actions(table, now, owner));
        if let Created::Theirs(existing) = create_entry(store, &rel, body).await? {
            if !is_walhouse_table(&existing, table) {
                return Err(CheckpointError::CorruptObject {
                    store: store.name().to_owned(),
                    path: rel,
                    reason: format!(
                        "version 0 exists but does not create walhouse's {table} table \
                         (no metaData with {TABLE_PROPERTY} = {table}): another program's \
                         table is at this root"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn is_walhouse_table(entry: &[u8], table: &str) -> bool {
    decode_entry(entry).is_ok_and(|lines| {
        lines.iter().any(|line| {
            line.pointer(&format!("/metaData/configuration/{TABLE_PROPERTY}"))
                .and_then(serde_json::Value::as_str)
                == Some(table)
        })
    })
}

/// `relative` (under the table root) as a path under `table`'s folder.
fn in_table<'a>(table: &str, relative: &'a str) -> &'a str {
    relative
        .strip_prefix(table)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(relative)
}

/// The epoch partition of a changelog file (`changelog/epoch=<E>/...`).
fn epoch_of(relative: &str) -> Option<String> {
    let rest = relative.strip_prefix("changelog/epoch=")?;
    let epoch = rest.split('/').next()?;
    epoch.parse::<u64>().ok().map(|e| e.to_string())
}

fn stats(rows: u64) -> String {
    format!("{{\"numRecords\":{rows}}}")
}

fn txns(manifest: &Manifest, now_ms: i64) -> impl Iterator<Item = Action> + '_ {
    manifest
        .source_offsets
        .iter()
        .map(move |(source, &offset)| {
            Action::Txn(Txn {
                app_id: source.clone(),
                version: i64::try_from(offset).unwrap_or(i64::MAX),
                last_updated: now_ms,
            })
        })
}

/// The `metaData` action that sets `table`'s property `walhouse.ownerId` to
/// `manifest.owner_id`, if the owner changed since `previous` (a take-over):
/// version 0's metadata with the new owner (the schema never changes).
pub(crate) async fn owner_metadata(
    store: &Store,
    table: &str,
    manifest: &Manifest,
    previous: Option<&Manifest>,
) -> Result<Option<Action>, CheckpointError> {
    let (Some(owner), Some(previous)) = (&manifest.owner_id, previous) else {
        return Ok(None);
    };
    if previous.owner_id.as_ref() == Some(owner) {
        return Ok(None);
    }
    // Version 0 holds the metadata, unless the log before the newest log
    // checkpoint was cleaned up: then that checkpoint's snapshot does.
    let mut rel = log_path(table, 0);
    let bytes = match store.get_all(&store.path(&rel)).await {
        Ok(bytes) => bytes,
        Err(e) if matches!(e.source, object_store::Error::NotFound { .. }) => {
            let Some(&(version, _)) = list_log_snapshots(store, table).await?.last() else {
                return Err(CheckpointError::store(store, "get", &rel, e));
            };
            rel = snapshot_path(table, version);
            store
                .get_all(&store.path(&rel))
                .await
                .map_err(|e| CheckpointError::store(store, "get", &rel, e))?
        }
        Err(e) => return Err(CheckpointError::store(store, "get", &rel, e)),
    };
    let metadata = decode_entry(&bytes)
        .ok()
        .and_then(|lines| {
            lines
                .into_iter()
                .find_map(|mut l| l.get_mut("metaData").map(serde_json::Value::take))
        })
        .and_then(|m| serde_json::from_value::<Metadata>(m).ok());
    let Some(mut metadata) = metadata else {
        return Err(CheckpointError::CorruptObject {
            store: store.name().to_owned(),
            path: rel,
            reason: "no readable metaData action".into(),
        });
    };
    metadata
        .configuration
        .insert(OWNER_PROPERTY.to_owned(), owner.clone());
    Ok(Some(Action::Metadata(metadata)))
}

/// The `changelog` table's log entry of checkpoint `manifest.checkpoint`:
/// `commitInfo` (with the manifest in `walhouse`), `metadata` if the owner
/// changed, a `txn` per source and an `add` per changelog file.
pub(crate) fn changelog_entry(
    manifest: &Manifest,
    metadata: Option<Action>,
) -> Result<Vec<u8>, CheckpointError> {
    let ts = millis_of(&manifest.created_at);
    let walhouse = serde_json::to_value(manifest)
        .map_err(|e| CheckpointError::Task(format!("cannot encode manifest: {e}")))?;
    let mut actions = vec![Action::CommitInfo(json!({
        "timestamp": ts,
        "operation": "WRITE",
        "operationParameters": {"mode": "Append", "partitionBy": "[\"epoch\"]"},
        "isBlindAppend": true,
        "engineInfo": ENGINE,
        "walhouse": walhouse,
    }))];
    actions.extend(metadata);
    actions.extend(txns(manifest, ts));
    for file in &manifest.changelog {
        actions.push(Action::Add(Add {
            path: in_table(CHANGELOG_TABLE, &file.path).to_owned(),
            partition_values: BTreeMap::from([(EPOCH_PARTITION.to_owned(), epoch_of(&file.path))]),
            size: i64::try_from(file.size).unwrap_or(i64::MAX),
            modification_time: ts,
            data_change: true,
            stats: Some(stats(file.rows)),
            deletion_vector: None,
        }));
    }
    Ok(encode_entry(&actions))
}

/// The `state` table's log entry of version `version.checkpoint`, after
/// the files `before` of the version before: a `remove` of every file (with
/// the deletion vector it was added with) that is gone or whose deletion
/// vector changed, an `add` of every new file or new deletion vector, the
/// sources' `txn` actions of `manifest` (the same checkpoint's), and
/// `version` itself in `commitInfo.walhouse`.
pub(crate) fn state_entry(
    version: &StateVersion,
    before: &[StateFile],
    manifest: &Manifest,
    metadata: Option<Action>,
) -> Result<Vec<u8>, CheckpointError> {
    let ts = millis_of(&manifest.created_at);
    let after = &version.table;
    let walhouse = serde_json::to_value(version)
        .map_err(|e| CheckpointError::Task(format!("cannot encode the state version: {e}")))?;
    let compacted = version.snapshot_checkpoint == version.checkpoint;
    let mut actions = vec![Action::CommitInfo(json!({
        "timestamp": ts,
        "operation": if compacted { "OPTIMIZE" } else { "MERGE" },
        "operationParameters": if compacted { json!({"predicate": "[]"}) } else { json!({"predicate": "key"}) },
        "isBlindAppend": false,
        "engineInfo": ENGINE,
        "walhouse": walhouse,
    }))];
    actions.extend(metadata);
    actions.extend(txns(manifest, ts));
    for old in before.iter().filter(|f| !after.contains(f)) {
        actions.push(Action::Remove(Remove {
            path: in_table(STATE_TABLE, &old.file.path).to_owned(),
            deletion_timestamp: ts,
            data_change: true,
            extended_file_metadata: true,
            partition_values: BTreeMap::new(),
            size: i64::try_from(old.file.size).unwrap_or(i64::MAX),
            deletion_vector: old.deletion_vector.as_ref().map(|d| d.descriptor.clone()),
        }));
    }
    for new in after.iter().filter(|f| !before.contains(f)) {
        actions.push(Action::Add(Add {
            path: in_table(STATE_TABLE, &new.file.path).to_owned(),
            partition_values: BTreeMap::new(),
            size: i64::try_from(new.file.size).unwrap_or(i64::MAX),
            modification_time: ts,
            data_change: true,
            stats: Some(stats(new.file.rows)),
            deletion_vector: new.deletion_vector.as_ref().map(|d| d.descriptor.clone()),
        }));
    }
    Ok(encode_entry(&actions))
}

/// The [`StateVersion`] in the `state` table's log entry `rel` (version
/// `version`); anything else is an error naming the object.
pub(crate) fn parse_state_version(
    store: &Store,
    rel: &str,
    version: u64,
    bytes: &[u8],
) -> Result<StateVersion, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: rel.to_owned(),
        reason,
    };
    let parsed: StateVersion = walhouse_info(bytes, "state version").map_err(corrupt)?;
    if parsed.checkpoint != version {
        return Err(corrupt(format!(
            "commitInfo.walhouse says checkpoint {}, the entry is version {version}",
            parsed.checkpoint
        )));
    }
    Ok(parsed)
}

/// Version `version` (at least 1) of the `state` table.
pub(crate) async fn load_state_version(
    store: &Store,
    version: u64,
) -> Result<StateVersion, CheckpointError> {
    let rel = log_path(STATE_TABLE, version);
    let bytes = store
        .get_all(&store.path(&rel))
        .await
        .map_err(|e| CheckpointError::store(store, "get", &rel, e))?;
    parse_state_version(store, &rel, version, &bytes)
}

/// The newest version of the `state` table after version 0 (`None`: none
/// yet), by listing its log.
pub(crate) async fn latest_state_version(
    store: &Store,
) -> Result<Option<StateVersion>, CheckpointError> {
    match list_versions(store, STATE_TABLE).await?.last() {
        Some(&v) if v > 0 => load_state_version(store, v).await.map(Some),
        _ => Ok(None),
    }
}

/// Writes log entry `rel` of checkpoint `checkpoint` with a create-only PUT
/// ([`create_entry`]); another entry of that version is
/// [`CheckpointError::ManifestConflict`]: another writer committed it.
pub(crate) async fn commit_entry(
    store: &Store,
    rel: String,
    body: Vec<u8>,
    checkpoint: u64,
) -> Result<(), CheckpointError> {
    match create_entry(store, &rel, body).await? {
        Created::Ours => Ok(()),
        Created::Theirs(_) => Err(CheckpointError::ManifestConflict {
            store: store.name().to_owned(),
            path: rel,
            checkpoint,
        }),
    }
}

/// Folder (under the table root) of the snapshots behind the Delta log
/// checkpoints: `<table>/<version>.json` holds, as Delta actions in JSON
/// lines, what `<version>.checkpoint.parquet` holds (protocol, metadata,
/// the latest `txn` per appId and every live file). The next log
/// checkpoint starts from it instead of replaying the log from version 0,
/// and garbage collection and the metadata of an owner change read it once
/// the log before it was cleaned up.
const SNAPSHOT_DIR: &str = "_walhouse/log-snapshots";

/// The snapshot of `table`'s log checkpoint at `version`.
pub(crate) fn snapshot_path(table: &str, version: u64) -> String {
    format!("{SNAPSHOT_DIR}/{table}/{version:020}.json")
}

/// The versions of `table` whose log checkpoint has a snapshot (written
/// after the checkpoint's Parquet file and `_last_checkpoint`), ascending.
pub(crate) async fn list_log_snapshots(
    store: &Store,
    table: &str,
) -> Result<Vec<(u64, object_store::ObjectMeta)>, CheckpointError> {
    let dir = format!("{SNAPSHOT_DIR}/{table}");
    let metas = store
        .list_all(&store.path(&dir))
        .await
        .map_err(|e| CheckpointError::store(store, "list", format!("{dir}/"), e))?;
    let mut found: Vec<(u64, object_store::ObjectMeta)> = metas
        .into_iter()
        .filter_map(|m| {
            let rel = store.relative(&m.location)?;
            let name = rel.strip_prefix(&dir)?.strip_prefix('/')?;
            let version = name.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((version, m))
        })
        .collect();
    found.sort_by_key(|(v, _)| *v);
    Ok(found)
}

/// The Delta actions of the JSON-lines object `rel` (a log entry or a
/// snapshot).
async fn read_actions(store: &Store, rel: &str) -> Result<Vec<Action>, CheckpointError> {
    let bytes = store
        .get_all(&store.path(rel))
        .await
        .map_err(|e| CheckpointError::store(store, "get", rel, e))?;
    let corrupt = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: rel.to_owned(),
        reason,
    };
    let lines = decode_entry(&bytes).map_err(|e| corrupt(e.clone()))?;
    lines
        .into_iter()
        .map(serde_json::from_value::<Action>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(format!("not a Delta action: {e}")))
}

/// The live files of `table` in its newest log checkpoint snapshot, by
/// path under the table root (`<table>/<path>`); none if it has none.
pub(crate) async fn snapshot_files(
    store: &Store,
    table: &str,
) -> Result<Vec<String>, CheckpointError> {
    let Some(&(version, _)) = list_log_snapshots(store, table).await?.last() else {
        return Ok(Vec::new());
    };
    let actions = read_actions(store, &snapshot_path(table, version)).await?;
    Ok(actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Add(add) => Some(format!("{table}/{}", add.path)),
            _ => None,
        })
        .collect())
}

/// Writes a Delta log checkpoint of `table` at `version`
/// (`<version>.checkpoint.parquet` and `_last_checkpoint`), so readers
/// replay at most the entries after it, then its snapshot
/// ([`snapshot_path`]). Reads the newest earlier snapshot and the log
/// entries after it (from version 0 if there is none; one GET each). Every
/// object is a plain PUT of bytes that are the same for the same version:
/// writing one again is harmless, and a reader that finds
/// `_last_checkpoint` pointing at an older checkpoint still reads the log
/// after it.
pub(crate) async fn write_log_checkpoint(
    store: &Store,
    table: &str,
    version: u64,
) -> Result<(), CheckpointError> {
    let base = list_log_snapshots(store, table)
        .await?
        .into_iter()
        .map(|(v, _)| v)
        .rfind(|&v| v < version);
    let mut entries = Vec::new();
    if let Some(base) = base {
        entries.push(read_actions(store, &snapshot_path(table, base)).await?);
    }
    for v in base.map_or(0, |b| b + 1)..=version {
        entries.push(read_actions(store, &log_path(table, v)).await?);
    }
    let dir = super::log::log_dir(table);
    let failed = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: format!("{dir}/"),
        reason: format!("cannot write the Delta log checkpoint of version {version}: {reason}"),
    };
    let snapshot = reconcile(&entries).map_err(failed)?;
    let parquet = checkpoint_parquet(&snapshot).map_err(failed)?;
    let hint = last_checkpoint_json(version, &snapshot, parquet.len());
    let mut actions = vec![
        Action::Protocol(snapshot.protocol.clone()),
        Action::Metadata(snapshot.metadata.clone()),
    ];
    actions.extend(snapshot.txns.iter().cloned().map(Action::Txn));
    actions.extend(snapshot.adds.iter().cloned().map(Action::Add));
    // The snapshot goes last: one that exists has its checkpoint beside it.
    for (rel, body) in [
        (format!("{dir}/{version:020}.checkpoint.parquet"), parquet),
        (format!("{dir}/_last_checkpoint"), hint.into_bytes()),
        (snapshot_path(table, version), encode_entry(&actions)),
    ] {
        let path = store.path(&rel);
        let body = bytes::Bytes::from(body);
        store
            .retrying("put", &rel, || {
                store.object_store().put(&path, body.clone().into())
            })
            .await
            .map_err(|e| CheckpointError::store(store, "put", rel.clone(), e))?;
        store
            .make_durable(std::slice::from_ref(&rel))
            .await
            .map_err(|source| CheckpointError::Io {
                op: "fsync a Delta log checkpoint",
                path: store
                    .local_dir()
                    .map_or_else(|| rel.clone().into(), |d| d.join(&rel)),
                source,
            })?;
    }
    Ok(())
}
