//! The peers behind one trait: RocksDB (rust-rocksdb), fjall and SlateDB
//! (`src/slate.rs`), each opened at the durability walhouse acknowledges at
//! (every acknowledged write fdatasync'd, or fsync'd, before the call
//! returns).

use std::path::Path;
use std::sync::OnceLock;

use crate::Result;

/// Which peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// rust-rocksdb 0.20.1 over Debian's librocksdb 7.8.3, one WAL, group commit of
    /// concurrent synced writers.
    Rocksdb,
    /// fjall 3.1, one journal behind a mutex, `PersistMode::SyncData`.
    Fjall,
    /// SlateDB 0.18 on a fsyncing local object store, acknowledged at its
    /// WAL flush (`await_durable`).
    Slatedb,
    /// delta-rs (deltalake-core 1.1): not a key-value store, a peer of the
    /// `export` section only (`src/delta.rs`): the rows straight into a
    /// Delta table.
    Deltalake,
}

/// The peers chosen with `--peers` (all built-in peers when unset).
static CHOSEN: OnceLock<Vec<Kind>> = OnceLock::new();

impl Kind {
    /// Every peer this binary was built with.
    pub fn built() -> Vec<Kind> {
        let mut all = Vec::new();
        if cfg!(feature = "rocksdb") {
            all.push(Kind::Rocksdb);
        }
        all.push(Kind::Fjall);
        if cfg!(feature = "slatedb") {
            all.push(Kind::Slatedb);
        }
        if cfg!(feature = "deltalake") {
            all.push(Kind::Deltalake);
        }
        all
    }

    /// A key-value store (every section), or an export-only peer.
    pub fn is_kv(self) -> bool {
        self != Kind::Deltalake
    }

    /// The peers of this run: `--peers` if given, else every built one.
    pub fn all() -> Vec<Kind> {
        CHOSEN.get().cloned().unwrap_or_else(Kind::built)
    }

    /// `--peers a,b`: runs only these (each must be built in).
    pub fn choose(names: &str) -> Result<()> {
        let mut chosen = Vec::new();
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let kind = Kind::parse(name)?;
            if !Kind::built().contains(&kind) {
                return Err(format!("peer {name} is not built in (cargo feature)").into());
            }
            chosen.push(kind);
        }
        CHOSEN.set(chosen).map_err(|_| "--peers given twice".into())
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Rocksdb => "rocksdb",
            Kind::Fjall => "fjall",
            Kind::Slatedb => "slatedb",
            Kind::Deltalake => "deltalake",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "rocksdb" => Ok(Kind::Rocksdb),
            "fjall" => Ok(Kind::Fjall),
            "slatedb" => Ok(Kind::Slatedb),
            "deltalake" => Ok(Kind::Deltalake),
            other => {
                Err(format!("unknown peer {other:?} (rocksdb, fjall, slatedb, deltalake)").into())
            }
        }
    }

    pub fn open(self, dir: &Path) -> Result<Box<dyn Peer>> {
        Ok(match self {
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => Box::new(Rocks::open(dir)?),
            #[cfg(not(feature = "rocksdb"))]
            Kind::Rocksdb => return Err("built without the rocksdb feature".into()),
            Kind::Fjall => Box::new(Fjall::open(dir)?),
            #[cfg(feature = "slatedb")]
            Kind::Slatedb => Box::new(crate::slate::Slate::open(dir)?),
            #[cfg(not(feature = "slatedb"))]
            Kind::Slatedb => return Err("built without the slatedb feature".into()),
            Kind::Deltalake => return Err("deltalake is a peer of the export section only".into()),
        })
    }
}

/// A visitor of (key, value) pairs.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<()>;

/// What every section asks of a peer. `write` is durable on return.
pub trait Peer: Send + Sync {
    /// Writes `pairs` as one atomic batch, fdatasync'd before it returns.
    fn write(&self, pairs: &[(&[u8], &[u8])]) -> Result<()>;
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Every live pair in key order.
    fn scan(&self, each: Visit<'_>) -> Result<()>;
    /// Moves the memtable into table files (the peer's checkpoint), so a
    /// reopen reads from tables, not from a replayed log.
    fn flush(&self) -> Result<()>;
}

#[cfg(feature = "rocksdb")]
pub struct Rocks {
    db: rocksdb::DB,
    sync: rocksdb::WriteOptions,
}

#[cfg(feature = "rocksdb")]
impl Rocks {
    fn open(dir: &Path) -> Result<Self> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        // Values are incompressible; no codec work for any engine's log.
        options.set_compression_type(rocksdb::DBCompressionType::None);
        let db = rocksdb::DB::open(&options, dir)?;
        let mut sync = rocksdb::WriteOptions::default();
        // WAL on, fdatasync of the WAL before the write returns (RocksDB
        // uses fdatasync unless `use_fsync` is set).
        sync.set_sync(true);
        Ok(Self { db, sync })
    }
}

#[cfg(feature = "rocksdb")]
impl Peer for Rocks {
    fn write(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        if let [(key, value)] = pairs {
            self.db.put_opt(key, value, &self.sync)?;
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        for (key, value) in pairs {
            batch.put(key, value);
        }
        self.db.write_opt(batch, &self.sync)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_pinned(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, each: Visit<'_>) -> Result<()> {
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            each(key, value)?;
            it.next();
        }
        it.status()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

pub struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let keyspace = db.keyspace("kv", fjall::KeyspaceCreateOptions::default)?;
        Ok(Self { db, keyspace })
    }
}

impl Peer for Fjall {
    fn write(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        // One batch, journal fdatasync'd under the journal's lock before
        // `commit` returns.
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for (key, value) in pairs {
            batch.insert(&self.keyspace, *key, *value);
        }
        batch.commit()?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.keyspace.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, each: Visit<'_>) -> Result<()> {
        for guard in self.keyspace.iter() {
            let (key, value) = guard.into_inner()?;
            each(&key, &value)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.keyspace.rotate_memtable_and_wait()?;
        Ok(())
    }
}
