//! SlateDB 0.18 on a local object store with fsync on.
//!
//! object_store's `LocalFileSystem` does not fsync by default, so a SlateDB
//! write acknowledged over it is not durable on a local disk. object_store
//! 0.14.2 (the one SlateDB 0.18 uses) has `LocalFileSystem::with_fsync(true)`:
//! `put_opts`, multipart completion, `copy_opts` and `rename_opts` write a
//! staged file, `sync_all` it, publish it (rename, or hard link for
//! `PutMode::Create`), then fsync the destination's parent directory (and
//! every directory the call created, and a rename's source directory)
//! before they return. That is stronger than a wrapper around the store
//! could be: a wrapper can only sync after the rename has published the
//! file, so a crash in between could leave a visible, torn object.
//!
//! SlateDB's API is async: the peer keeps its own tokio runtime (2 workers,
//! as walhouse's) for SlateDB's background tasks (WAL flusher, memtable
//! flusher, compactor, garbage collector), and every call of the `Peer`
//! trait drives its future with `Runtime::block_on` on the caller's thread,
//! so the sections' OS-thread producers (64 or 128 for single puts) are 64
//! or 128 concurrent SlateDB writers, as they are for the other peers.

use std::path::Path;
use std::sync::Arc;

use slatedb::config::{FlushOptions, FlushType, PutOptions, WriteOptions};
use slatedb::object_store::local::LocalFileSystem;
use slatedb::{Db, WriteBatch};
use tokio::runtime::Runtime;

use crate::peer::{Peer, Visit};
use crate::Result;

/// The database's path inside the object store (the store's root is the
/// peer's directory).
const DB_PATH: &str = "slatedb";

pub struct Slate {
    db: Db,
    rt: Runtime,
}

impl Slate {
    /// Opens (or reopens: WAL replay after the last memtable flush) the
    /// SlateDB in `dir`, at SlateDB's default settings.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Every object durable (file and directory fsync'd) before the put
        // returns; see the module's doc.
        let store = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let db = rt.block_on(Db::builder(DB_PATH, Arc::new(store)).build())?;
        Ok(Self { db, rt })
    }
}

impl Peer for Slate {
    fn write(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        self.rt.block_on(async {
            // The write returns once it is in the WAL buffer and the
            // memtable; `await_durable` waits for the WAL object holding it
            // to be written (and, with `with_fsync`, fsync'd): SlateDB's
            // WAL flush, every `flush_interval` (100 ms by default) or
            // sooner when the buffer is full.
            let handle = if let [(key, value)] = pairs {
                self.db
                    .put_with_options(key, value, &PutOptions::default(), &WriteOptions::default())
                    .await?
            } else {
                let mut batch = WriteBatch::new();
                for (key, value) in pairs {
                    batch.put(key, value);
                }
                self.db
                    .write_with_options(batch, &WriteOptions::default())
                    .await?
            };
            handle.await_durable().await?;
            Ok(())
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.rt.block_on(self.db.get(key))?.map(|v| v.to_vec()))
    }

    fn scan(&self, each: Visit<'_>) -> Result<()> {
        self.rt.block_on(async {
            let mut it = self.db.scan(..).await?;
            while let Some(kv) = it.next().await? {
                each(&kv.key, &kv.value)?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        // The memtable into an L0 SST (SlateDB's flush of its tables), so
        // a reopen reads SSTs, not a replayed WAL.
        self.rt.block_on(self.db.flush_with_options(FlushOptions {
            flush_type: FlushType::MemTable,
        }))?;
        Ok(())
    }
}

impl Drop for Slate {
    fn drop(&mut self) {
        // A clean close (WAL flushed, background tasks stopped) before the
        // runtime goes; the reopen section's child is SIGKILLed instead and
        // never gets here.
        if let Err(e) = self.rt.block_on(self.db.close()) {
            eprintln!("slatedb close: {e}");
        }
    }
}
