//! Multipart uploads into a local store's directory that start the disk's
//! writeback while the parts land.
//!
//! `object_store`'s `LocalFileSystem` writes the parts of an upload into a
//! staging file and leaves every byte dirty in the page cache, so the fsync
//! that makes a checkpoint's files durable ([`Store::make_durable`]) writes
//! the whole file after the last part (about 30 ms for a 117 MB changelog
//! file on the bench's disk, after the pipeline). [`LocalMultipart`] writes
//! each part at its offset (parts may be written concurrently) and, every
//! [`WRITEBACK_BYTES`], starts an `fdatasync` of the staging file on another
//! blocking thread, so the final fsync finds little left to write.
//!
//! Those early syncs are only a head start: their results are ignored, and
//! nothing is durable until [`Store::make_durable`] returns. The staging
//! file is named `<object>#<digits>`, a name `LocalFileSystem` never lists
//! (it uses the same form for its own staging files); the object appears,
//! by a rename, when the upload completes.
//!
//! [`Store::make_durable`]: super::Store::make_durable

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// Bytes written to a staging file between two early syncs.
pub(crate) const WRITEBACK_BYTES: u64 = 16 << 20;

/// The staging file of one upload, shared with its part writes.
#[derive(Debug)]
struct Staged {
    file: File,
    staging: PathBuf,
    dest: PathBuf,
    /// Bytes written since the last early sync started.
    unsynced: AtomicU64,
    /// An early sync is running.
    syncing: AtomicBool,
    /// Early syncs started (for tests).
    syncs: AtomicU64,
}

impl Staged {
    fn error(&self, op: &str, source: &io::Error) -> object_store::Error {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io::Error::new(
                source.kind(),
                format!("{op} {}: {source}", self.staging.display()),
            )),
        }
    }

    /// Writes `data` at `offset`, then starts an early sync if
    /// [`WRITEBACK_BYTES`] were written since the last one.
    fn write(self: &Arc<Self>, data: &PutPayload, offset: u64) -> object_store::Result<()> {
        let mut at = offset;
        for chunk in data {
            self.file
                .write_all_at(chunk, at)
                .map_err(|e| self.error("write part of", &e))?;
            at += chunk.len() as u64;
        }
        let len = at - offset;
        let unsynced = self.unsynced.fetch_add(len, Ordering::Relaxed) + len;
        if unsynced >= WRITEBACK_BYTES && !self.syncing.swap(true, Ordering::AcqRel) {
            self.unsynced.store(0, Ordering::Relaxed);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            let state = Arc::clone(self);
            let sync = move || {
                // A head start only: `Store::make_durable` is the sync
                // whose result counts.
                let _ = state.file.sync_data();
                state.syncing.store(false, Ordering::Release);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(sync)),
                Err(_) => sync(),
            }
        }
        Ok(())
    }
}

/// A multipart upload of one object of a local store (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct LocalMultipart {
    state: Arc<Staged>,
    /// Offset of the next part.
    offset: u64,
    /// Completed or aborted: the staging file is gone.
    done: bool,
}

impl LocalMultipart {
    /// Creates the staging file of `dest` (and its parent directories).
    pub(crate) fn create(dest: PathBuf) -> io::Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} names no file", dest.display()),
                )
            })?
            .to_string_lossy()
            .into_owned();
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("create directory {}: {e}", parent.display()),
                )
            })?;
        }
        loop {
            let digits = uuid::Uuid::new_v4().as_u64_pair().0;
            let staging = dest.with_file_name(format!("{name}#{digits}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
            {
                Ok(file) => {
                    return Ok(Self {
                        state: Arc::new(Staged {
                            file,
                            staging,
                            dest,
                            unsynced: AtomicU64::new(0),
                            syncing: AtomicBool::new(false),
                            syncs: AtomicU64::new(0),
                        }),
                        offset: 0,
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("create {}: {e}", staging.display()),
                    ))
                }
            }
        }
    }

    /// Early syncs started so far.
    #[cfg(test)]
    fn early_syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::Relaxed)
    }

    /// The staging file's path.
    #[cfg(test)]
    fn staging(&self) -> &std::path::Path {
        &self.state.staging
    }
}

/// Runs `work` on a blocking thread (inline without a tokio runtime).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> object_store::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle
                .spawn_blocking(work)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })?
        }
        Err(_) => work(),
    }
}

#[async_trait::async_trait]
impl MultipartUpload for LocalMultipart {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let state = Arc::clone(&self.state);
        blocking(move || state.write(&data, offset)).boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let state = Arc::clone(&self.state);
        blocking(move || {
            std::fs::rename(&state.staging, &state.dest)
                .map_err(|e| state.error("rename into place", &e))
        })
        .await?;
        self.done = true;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let state = Arc::clone(&self.state);
        blocking(move || {
            std::fs::remove_file(&state.staging).map_err(|e| state.error("remove", &e))
        })
        .await?;
        self.done = true;
        Ok(())
    }
}

impl Drop for LocalMultipart {
    // An upload dropped before it completed leaves no staging file.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.state.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::local::LocalFileSystem;
    use object_store::ObjectStoreExt;

    fn part(byte: u8, len: usize) -> PutPayload {
        PutPayload::from(vec![byte; len])
    }

    #[tokio::test]
    async fn parts_land_at_their_offsets_and_writeback_starts_early() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("changelog/epoch=1/part.parquet");
        let mut upload = LocalMultipart::create(dest.clone()).unwrap();
        let staging = upload.staging().to_path_buf();
        assert!(staging.exists());
        // Parts are written concurrently, in any order.
        let len = 6 << 20;
        let parts: Vec<_> = (0..5_u8).map(|i| upload.put_part(part(i, len))).collect();
        futures::future::try_join_all(parts).await.unwrap();
        // The staging file is not an object: a listing does not show it.
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
            object_store::ObjectStore::list(&fs, None),
        )
        .await
        .unwrap();
        assert!(listed.is_empty(), "{listed:?}");
        upload.complete().await.unwrap();
        let syncs = upload.early_syncs();
        drop(upload);
        assert!(!staging.exists());
        let bytes = fs
            .get(&object_store::path::Path::from(
                "changelog/epoch=1/part.parquet",
            ))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len(), 5 * len);
        for (i, chunk) in bytes.chunks(len).enumerate() {
            assert!(chunk.iter().all(|&b| usize::from(b) == i), "part {i}");
        }
        // 30 MiB written: at least one early sync (one at a time).
        assert!(syncs >= 1, "{syncs} early syncs");
        println!(
            "5 parts of {len} bytes, concurrent: object of {} bytes, {syncs} early syncs, \
             no staging file left",
            bytes.len()
        );
    }

    #[tokio::test]
    async fn abort_and_drop_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut aborted = LocalMultipart::create(dir.path().join("a/x.parquet")).unwrap();
        aborted.put_part(part(1, 1000)).await.unwrap();
        aborted.abort().await.unwrap();
        let dropped = LocalMultipart::create(dir.path().join("a/y.parquet")).unwrap();
        drop(dropped);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
