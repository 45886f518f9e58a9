//! Table ownership: a table has one writer, the data directory whose
//! identity `_walhouse/owner.json` names.
//!
//! The owner object is created with a create-only PUT by the first data
//! directory that opens the table, and replaced only by an explicit take-over
//! ([`TableOwner::take_over`]). Every checkpoint reads it again just before
//! its commit, so a writer whose table was taken over stops before it
//! commits anything (its WAL stays on its disk).
//!
//! The identity is a UUID generated when the data directory is created; it
//! becomes the Delta Lake table property `walhouse.ownerId` once the tables
//! are Delta tables, with the same meaning.

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::error::CheckpointError;
use crate::store::Store;

/// Where the owner object lives under the table root.
pub const OWNER_PATH: &str = "_walhouse/owner.json";

/// Format version of the owner object.
pub const OWNER_FORMAT_VERSION: u32 = 1;

/// The content of `_walhouse/owner.json`: who writes this table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOwner {
    /// Format of this object (1).
    pub format_version: u32,
    /// The identity of the owning data directory (a UUID).
    pub owner_id: String,
    /// The owning data directory's path, for messages.
    pub data_dir: String,
    /// The host it was on when it claimed the table, for messages.
    pub host: String,
    /// When it claimed the table (RFC 3339).
    pub claimed_at: String,
}

impl TableOwner {
    /// An owner record for the data directory `data_dir` with identity `id`.
    #[must_use]
    pub fn new(owner_id: &str, data_dir: &std::path::Path) -> Self {
        Self {
            format_version: OWNER_FORMAT_VERSION,
            owner_id: owner_id.to_owned(),
            data_dir: data_dir.display().to_string(),
            host: host_name(),
            claimed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Reads the owner of the table at `store` (`None`: nobody claimed it).
    pub async fn read(store: &Store) -> Result<Option<Self>, CheckpointError> {
        let path = store.path(OWNER_PATH);
        let bytes = match store.get_all(&path).await {
            Ok(bytes) => bytes,
            Err(failed) if matches!(failed.source, object_store::Error::NotFound { .. }) => {
                return Ok(None)
            }
            Err(failed) => return Err(CheckpointError::store(store, "get", OWNER_PATH, failed)),
        };
        let owner: Self =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::CorruptObject {
                store: store.name().to_owned(),
                path: OWNER_PATH.to_owned(),
                reason: format!("invalid owner JSON: {e}"),
            })?;
        Ok(Some(owner))
    }

    /// Claims an unowned table with a create-only PUT and returns the
    /// owner afterwards: `self` if the claim won, or whoever claimed the
    /// table first.
    pub async fn claim(&self, store: &Store) -> Result<Self, CheckpointError> {
        // Durable before its name appears (on a local store): an empty
        // owner object after a power loss would lock every writer out.
        match store.put_create_durable(OWNER_PATH, self.payload()?).await {
            Ok(()) => Ok(self.clone()),
            Err(e) => {
                // Taken first, or an ambiguous outcome of our own PUT: the
                // object says which.
                match Self::read(store).await? {
                    Some(owner) => Ok(owner),
                    None => Err(store_err(store, "create-only put", e)),
                }
            }
        }
    }

    /// Makes `self` the owner, replacing whoever owned the table. Only for a
    /// data directory that replaces a lost one: the old owner, if it still
    /// runs, fails its next checkpoint (nothing of it is committed after
    /// this, and its WAL stays on its disk).
    pub async fn take_over(&self, store: &Store) -> Result<(), CheckpointError> {
        store
            .object_store()
            .put(&store.path(OWNER_PATH), self.payload()?)
            .await
            .map_err(|e| store_err(store, "put", e))?;
        store
            .make_durable(&[OWNER_PATH.to_owned()])
            .await
            .map_err(|source| CheckpointError::Io {
                op: "fsync the owner object",
                path: store
                    .local_dir()
                    .map(|d| d.join(OWNER_PATH))
                    .unwrap_or_default(),
                source,
            })
    }

    fn payload(&self) -> Result<PutPayload, CheckpointError> {
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| CheckpointError::Task(format!("cannot encode the owner object: {e}")))?;
        Ok(PutPayload::from(body))
    }
}

impl std::fmt::Display for TableOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data directory {} on host {} (id {}, since {})",
            self.data_dir, self.host, self.owner_id, self.claimed_at
        )
    }
}

/// Checks, just before a commit, that the data directory `owner_id` still
/// owns the table.
pub(crate) async fn check_owner(store: &Store, owner_id: &str) -> Result<(), CheckpointError> {
    match TableOwner::read(store).await? {
        Some(owner) if owner.owner_id == owner_id => Ok(()),
        found => Err(CheckpointError::NotOwner {
            store: store.name().to_owned(),
            owner: found.map_or_else(
                || "nobody (the owner object is gone)".to_owned(),
                |o| o.to_string(),
            ),
            ours: owner_id.to_owned(),
        }),
    }
}

fn store_err(store: &Store, op: &'static str, source: object_store::Error) -> CheckpointError {
    CheckpointError::Store {
        store: store.name().to_owned(),
        op,
        path: OWNER_PATH.to_owned(),
        source,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
