//! Settings: flags, then `WALHOUSE_*` variables (both through clap), then
//! the TOML file, then the defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use walhouse::checkpoint::{CheckpointSettings, Checkpointer};
use walhouse::runtime::{wal_cores, IngestSettings};
use walhouse::store::Store;

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
}

impl Place {
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Cores of the WAL on disk (0: none yet).
    pub fn cores_found(&self) -> usize {
        wal_cores(&self.wal_dir()).unwrap_or(0)
    }
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

    fn store_for(&self, location: &Location, data_dir: Option<&Path>) -> Result<Store, BoxError> {
        if let Some(url) = location.store.as_ref().or(self.store.as_ref()) {
            return Ok(Store::from_url(url)?);
        }
        let Some(dir) = data_dir else {
            return Err("no store: pass --store URL or --data-dir DIR (or set WALHOUSE_STORE / WALHOUSE_DATA_DIR)".into());
        };
        let table = dir.join("table");
        std::fs::create_dir_all(&table)
            .map_err(|e| format!("creating {}: {e}", table.display()))?;
        Ok(Store::local(&table)?)
    }

    pub fn place(&self, location: &Location) -> Result<Place, BoxError> {
        let data_dir = location
            .data_dir
            .clone()
            .or_else(|| self.data_dir.clone())
            .ok_or("no data directory: pass --data-dir DIR (or set WALHOUSE_DATA_DIR)")?;
        let store = self.store_for(location, Some(&data_dir))?;
        Ok(Place { data_dir, store })
    }

    pub fn checkpointer(
        &self,
        location: &Location,
        settings: CheckpointSettings,
    ) -> Result<Checkpointer, BoxError> {
        let data_dir = location.data_dir.clone().or_else(|| self.data_dir.clone());
        let store = self.store_for(location, data_dir.as_deref())?;
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
        if self.ingest.as_ref().is_none() {
            s.cores = s.cores.max(cores_found);
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
