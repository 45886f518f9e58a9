//! The data directory's layout, and the record of what it was created with.
//!
//! ```text
//! <data-dir>/LOCK            held by the one process that uses the directory
//! <data-dir>/walhouse.json   the record: identity, store URL, cores
//! <data-dir>/wal/            the write-ahead log, wal-<core>-<segment>.log
//! <data-dir>/table/          the tables, when no other store was given
//! <data-dir>/control.sock    a running `walhouse ingest` listens here
//! ```
//!
//! The record is written once, when the directory is first opened, before
//! anything is acknowledged: its identity (a UUID) is what the table's owner
//! object names, its store is where its checkpoints go, and its cores are
//! how keys are routed to logs. Opening it later with another store or
//! another core count is refused, naming both values.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::IngestError;

/// The lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The record of the data directory.
pub const RECORD_FILE: &str = "walhouse.json";
/// The WAL directory.
pub const WAL_DIR: &str = "wal";
/// The default table directory (a local store) when no store is given.
pub const DEFAULT_TABLE_DIR: &str = "table";
/// Format version of the record.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// What a data directory was created with (`<data-dir>/walhouse.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDirRecord {
    /// Format of the record (1).
    pub format_version: u32,
    /// The directory's identity (a UUID): the table's owner object names it.
    pub id: String,
    /// The store of its tables, as [`Store::name`](crate::store::Store::name)
    /// gives it (a URL without secrets, `file:///...` for a local folder).
    pub store: String,
    /// Cores (one WAL per core) its keys are routed over.
    pub cores: usize,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl DataDirRecord {
    /// A new record with a fresh identity.
    #[must_use]
    pub fn new(store: &str, cores: usize) -> Self {
        Self {
            format_version: RECORD_FORMAT_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            store: store.to_owned(),
            cores,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Reads the record of `data_dir` (`None`: there is none, a new
    /// directory or one written by a walhouse before records existed).
    pub fn read(data_dir: &Path) -> Result<Option<Self>, IngestError> {
        let path = data_dir.join(RECORD_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        let record: Self = serde_json::from_slice(&text).map_err(|e| IngestError::Io {
            op: "parse the data-directory record",
            path: path.clone(),
            source: Arc::new(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        })?;
        if record.format_version != RECORD_FORMAT_VERSION {
            return Err(IngestError::Io {
                op: "parse the data-directory record",
                path,
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "format {} (this build reads {RECORD_FORMAT_VERSION})",
                        record.format_version
                    ),
                )),
            });
        }
        Ok(Some(record))
    }

    /// Writes the record durably: a temporary file, fsync, rename, and an
    /// fsync of the directory.
    pub fn write(&self, data_dir: &Path) -> Result<(), IngestError> {
        let path = data_dir.join(RECORD_FILE);
        let tmp = data_dir.join(format!("{RECORD_FILE}.tmp"));
        let body = serde_json::to_vec_pretty(self).map_err(|e| IngestError::Io {
            op: "encode the data-directory record",
            path: path.clone(),
            source: Arc::new(std::io::Error::other(e)),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        file.write_all(&body)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", &tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", &path, e))?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync directory", data_dir, e))
    }

    /// Refuses a store or a core count other than the recorded ones, naming
    /// both values.
    pub fn check(&self, data_dir: &Path, store: &str, cores: usize) -> Result<(), IngestError> {
        if self.store != store {
            return Err(IngestError::Mismatch {
                data_dir: data_dir.to_path_buf(),
                field: "store",
                recorded: self.store.clone(),
                given: store.to_owned(),
            });
        }
        if self.cores != cores {
            return Err(IngestError::Mismatch {
                data_dir: data_dir.to_path_buf(),
                field: "cores",
                recorded: self.cores.to_string(),
                given: cores.to_string(),
            });
        }
        Ok(())
    }
}

/// The WAL directory of `data_dir`.
#[must_use]
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_DIR)
}

/// Whether `data_dir` holds a walhouse data directory (a record or a WAL).
#[must_use]
pub fn exists(data_dir: &Path) -> bool {
    data_dir.join(RECORD_FILE).is_file() || wal_dir(data_dir).is_dir()
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> IngestError {
    IngestError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// Takes `<data_dir>/LOCK` exclusively (released when the file closes,
/// also when the process is killed).
pub fn lock_data_dir(data_dir: &Path) -> Result<File, IngestError> {
    let io = |op, path: &Path, e| IngestError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(e),
    };
    std::fs::create_dir_all(data_dir).map_err(|e| io("create data directory", data_dir, e))?;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IngestError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io("lock", &path, e)),
    }
}

/// Cores of the WAL in `wal_dir`: one more than the highest core that has
/// a `wal-<core>-*.log` segment (0 when there is none).
pub fn wal_cores(wal_dir: &Path) -> Result<usize, IngestError> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(IngestError::Io {
                op: "list WAL directory",
                path: wal_dir.to_path_buf(),
                source: Arc::new(e),
            })
        }
    };
    let mut cores = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("wal-") else {
            continue;
        };
        if Path::new(name).extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        if let Some(core) = rest.split('-').next().and_then(|c| c.parse::<usize>().ok()) {
            cores = cores.max(core + 1);
        }
    }
    Ok(cores)
}
