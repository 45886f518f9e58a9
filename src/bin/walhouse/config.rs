//! Settings: flags, then `WALHOUSE_*` variables (both through clap), then
//! the TOML file, then the defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use walhouse::checkpoint::{CheckpointSettings, Checkpointer};
use walhouse::runtime::datadir::{self, DataDirRecord};
use walhouse::runtime::{wal_cores, IngestError, IngestSettings};
use walhouse::store::{Store, StoreError};

use crate::{Location, Tuning};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub ingest: Option<IngestSettings>,
}

/// A resolved data directory and store.
#[derive(Debug)]
pub(crate) struct Place {
    pub data_dir: PathBuf,
    pub store: Store,
    /// What the data directory was created with (`None`: a new directory,
    /// or one from before records existed).
    pub record: Option<DataDirRecord>,
}

impl Place {
    pub fn wal_dir(&self) -> PathBuf {
        datadir::wal_dir(&self.data_dir)
    }

    /// Cores of the data directory: its record's, else those of the WAL on
    /// disk (0: none yet).
    pub fn cores_found(&self) -> usize {
        self.record
            .as_ref()
            .map_or_else(|| wal_cores(&self.wal_dir()).unwrap_or(0), |r| r.cores)
    }
}

/// Whether a command may create what it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `ingest`, `checkpoint`: create the data directory and the store.
    Write,
    /// `recover`: the data directory must exist; nothing is created.
    Read,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, BoxError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()).into())
    }

    /// The store: the flag or the file's, else the data directory's record,
    /// else `<data-dir>/table`.
    fn store_for(
        &self,
        location: &Location,
        data_dir: Option<&Path>,
        record: Option<&DataDirRecord>,
        access: Access,
    ) -> Result<Store, BoxError> {
        let open = |url: &str| match access {
            Access::Write => Store::from_url(url),
            Access::Read => Store::from_url_read_only(url),
        };
        if let Some(url) = location.store.as_ref().or(self.store.as_ref()) {
            let mismatch = |given: &str| IngestError::Mismatch {
                data_dir: data_dir.map(Path::to_path_buf).unwrap_or_default(),
                field: "store",
                recorded: record.map(|r| r.store.clone()).unwrap_or_default(),
                given: given.to_owned(),
            };
            let store = match open(url) {
                Ok(store) => store,
                Err(StoreError::NoTable { .. }) if record.is_some_and(|r| r.store != *url) => {
                    return Err(mismatch(url).into())
                }
                Err(e) => return Err(e.into()),
            };
            if record.is_some_and(|r| r.store != store.name()) {
                return Err(mismatch(store.name()).into());
            }
            return Ok(store);
        }
        if let Some(r) = record {
            return Ok(open(&r.store)?);
        }
        let Some(dir) = data_dir else {
            return Err("no store: pass --store URL or --data-dir DIR (or set WALHOUSE_STORE / WALHOUSE_DATA_DIR)".into());
        };
        let table = dir.join(datadir::DEFAULT_TABLE_DIR);
        match access {
            Access::Write => {
                std::fs::create_dir_all(&table)
                    .map_err(|e| format!("creating {}: {e}", table.display()))?;
                Ok(Store::local(&table)?)
            }
            Access::Read => Ok(Store::from_url_read_only(&table.display().to_string())?),
        }
    }

    pub fn place(&self, location: &Location, access: Access) -> Result<Place, BoxError> {
        let data_dir = location
            .data_dir
            .clone()
            .or_else(|| self.data_dir.clone())
            .ok_or("no data directory: pass --data-dir DIR (or set WALHOUSE_DATA_DIR)")?;
        if access == Access::Read && !datadir::exists(&data_dir) {
            return Err(IngestError::NoDataDir { path: data_dir }.into());
        }
        let record = if data_dir.is_dir() {
            DataDirRecord::read(&data_dir)?
        } else {
            None
        };
        let store = match self.store_for(location, Some(&data_dir), record.as_ref(), access) {
            // A data directory with no table yet (nothing checkpointed):
            // recovery reads the WAL alone, from an empty store.
            Err(e) if access == Access::Read && is_no_table(&*e) => Store::memory(),
            other => other?,
        };
        Ok(Place {
            data_dir,
            store,
            record,
        })
    }

    /// A checkpointer of an existing table, for the commands that read one
    /// (`get`, `checkpoints`, `verify`, `gc`): nothing is created.
    pub fn checkpointer(
        &self,
        location: &Location,
        settings: CheckpointSettings,
    ) -> Result<Checkpointer, BoxError> {
        let data_dir = location.data_dir.clone().or_else(|| self.data_dir.clone());
        let record = match &data_dir {
            Some(dir) if dir.is_dir() => DataDirRecord::read(dir)?,
            _ => None,
        };
        let store = self.store_for(location, data_dir.as_deref(), record.as_ref(), Access::Read)?;
        Ok(Checkpointer::new(store, settings)?)
    }

    /// The file's `[ingest]` table with the flags applied; the cores default
    /// to at least what the WAL on disk holds.
    pub fn ingest_settings(
        &self,
        t: &Tuning,
        cores_found: usize,
    ) -> Result<IngestSettings, BoxError> {
        let mut s = self.ingest.clone().unwrap_or_default();
        if cores_found > 0
            && self
                .ingest
                .as_ref()
                .is_none_or(|i| i.cores == IngestSettings::default().cores)
        {
            // A data directory keeps its cores: they are the default here.
            s.cores = cores_found;
        }
        if let Some(v) = t.cores {
            s.cores = v;
        }
        if t.no_pin {
            s.pin_threads = false;
        }
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = t.$field { s.$field = v; } )* };
        }
        set!(
            channel_capacity,
            group_commit_entries,
            group_commit_bytes,
            group_commit_delay_us,
            checkpoint_interval_ms,
            checkpoint_wal_bytes
        );
        if let Some(v) = t.retain_checkpoints {
            s.checkpoint.retain_checkpoints = v;
        }
        s.validate()?;
        Ok(s)
    }
}

fn is_no_table(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::NoTable { .. })
    )
}
