//! Multipart uploads into a local store's directory that start the disk's
//! writeback while the parts land.
//!
//! `object_store`'s `LocalFileSystem` writes the parts of an upload into a
//! staging file and leaves every byte dirty in the page cache, so the fsync
//! that makes a checkpoint's files durable ([`Store::make_durable`]) writes
//! the whole file after the last part, after everything else of the
//! checkpoint is done. [`LocalMultipart`] writes
//! each part at its offset (parts may be written concurrently). On Linux,
//! where the file system takes `O_DIRECT`, a part's whole 4 KiB blocks go
//! straight to the disk through a reused aligned buffer: no copy into the
//! page cache (filling cold page-cache pages is a large share of a
//! checkpoint's CPU) and nothing left for the final fsync. What goes
//! through the page cache (a part's last partial block, or everything on a
//! file system without `O_DIRECT`, such as tmpfs) starts an `fdatasync` of
//! the staging file on another blocking thread every [`WRITEBACK_BYTES`],
//! so the final fsync finds little left to write.
//!
//! Direct writes and early syncs are only a head start: nothing is durable
//! until [`Store::make_durable`] returns (the early syncs' results are
//! ignored; the fsync there also flushes the disk's cache). The staging
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

/// Alignment of direct writes (offset, length and buffer address).
const DIRECT_ALIGN: usize = 4096;

/// Bytes of one direct write: a part is copied through a buffer this size.
const DIRECT_CHUNK: usize = 1 << 20;

/// The staging file of one upload, shared with its part writes.
#[derive(Debug)]
struct Staged {
    file: File,
    /// The same file opened with `O_DIRECT` (Linux), if the file system
    /// takes it: whole 4 KiB blocks of a part go to the disk without the
    /// page cache (copying into cold page-cache pages is costly). `None`:
    /// buffered writes.
    direct: Option<File>,
    /// Aligned buffers for direct writes, reused by the parts.
    chunks: std::sync::Mutex<Vec<Vec<u8>>>,
    staging: PathBuf,
    dest: PathBuf,
    /// Bytes written since the last early sync started.
    unsynced: AtomicU64,
    /// An early sync is running.
    syncing: AtomicBool,
    /// Early syncs started (for tests).
    syncs: AtomicU64,
    /// Bytes written directly (for tests).
    direct_bytes: AtomicU64,
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

    /// Writes `data` at `offset`: its whole 4 KiB blocks directly if the
    /// file takes direct writes, the rest through the page cache, then
    /// starts an early sync if [`WRITEBACK_BYTES`] went through the page
    /// cache since the last one.
    fn write(self: &Arc<Self>, data: &PutPayload, offset: u64) -> object_store::Result<()> {
        let direct = match &self.direct {
            Some(direct) => self
                .write_direct(direct, data, offset)
                .map_err(|e| self.error("write part of", &e))?,
            None => 0,
        };
        // The bytes from `buffered` on go through the page cache.
        let buffered = offset + direct as u64;
        let mut at = offset;
        for chunk in data {
            let end = at + chunk.len() as u64;
            if end > buffered {
                let from = buffered.max(at);
                let skip = usize::try_from(from - at).expect("within one chunk");
                self.file
                    .write_all_at(&chunk[skip..], from)
                    .map_err(|e| self.error("write part of", &e))?;
            }
            at = end;
        }
        let len = at - buffered;
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

impl Staged {
    /// Writes the longest prefix of `data` made of whole 4 KiB blocks with
    /// `direct` (through an aligned buffer); returns its length. Nothing if
    /// `offset` is not aligned; a file system that refuses the write
    /// (`EINVAL`) leaves it all to the page cache.
    fn write_direct(&self, direct: &File, data: &PutPayload, offset: u64) -> io::Result<usize> {
        let total = data.content_length();
        let aligned = total / DIRECT_ALIGN * DIRECT_ALIGN;
        if aligned == 0 || !offset.is_multiple_of(DIRECT_ALIGN as u64) {
            return Ok(0);
        }
        let mut buffer = self
            .chunks
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_else(|| vec![0; DIRECT_CHUNK + DIRECT_ALIGN]);
        let start = buffer.as_ptr().align_offset(DIRECT_ALIGN);
        let mut sources = data.iter().flat_map(|b| b.chunks(DIRECT_CHUNK));
        let mut pending: &[u8] = &[];
        let mut done = 0;
        let result = loop {
            let want = (aligned - done).min(DIRECT_CHUNK);
            if want == 0 {
                break Ok(done);
            }
            let window = &mut buffer[start..start + want];
            let mut filled = 0;
            while filled < want {
                if pending.is_empty() {
                    pending = sources.next().unwrap_or_default();
                }
                let n = pending.len().min(want - filled);
                window[filled..filled + n].copy_from_slice(&pending[..n]);
                pending = &pending[n..];
                filled += n;
            }
            match direct.write_all_at(window, offset + done as u64) {
                Ok(()) => done += want,
                Err(e) if e.kind() == io::ErrorKind::InvalidInput && done == 0 => break Ok(0),
                Err(e) => break Err(e),
            }
        };
        if let Ok(mut pool) = self.chunks.lock() {
            pool.push(buffer);
        }
        if let Ok(n) = result {
            self.direct_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
}

/// Opens `path` for direct writes, where the platform and file system have
/// them.
fn open_direct(path: &std::path::Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = i32::try_from(rustix::fs::OFlags::DIRECT.bits()).ok()?;
        OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
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
                            direct: open_direct(&staging),
                            chunks: std::sync::Mutex::new(Vec::new()),
                            staging,
                            dest,
                            unsynced: AtomicU64::new(0),
                            syncing: AtomicBool::new(false),
                            syncs: AtomicU64::new(0),
                            direct_bytes: AtomicU64::new(0),
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

    /// This upload without direct writes (the path of file systems that
    /// refuse `O_DIRECT`).
    #[cfg(test)]
    fn buffered(mut self) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.direct = None;
        }
        self
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
        for buffered in [false, true] {
            parts_land_at_their_offsets(buffered).await;
        }
    }

    /// Five concurrent parts of one upload (`buffered`: without direct
    /// writes) land at their offsets.
    async fn parts_land_at_their_offsets(buffered: bool) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("changelog/epoch=1/part.parquet");
        let mut upload = LocalMultipart::create(dest.clone()).unwrap();
        if buffered {
            upload = upload.buffered();
        }
        let staging = upload.staging().to_path_buf();
        assert!(staging.exists());
        // Parts are written concurrently, in any order; the last one ends
        // in the middle of a 4 KiB block.
        let len = 6 << 20;
        let tail = 1000;
        let parts: Vec<_> = (0..5_u8)
            .map(|i| upload.put_part(part(i, if i == 4 { len + tail } else { len })))
            .collect();
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
        let direct = upload.state.direct.is_some();
        let direct_bytes = upload.state.direct_bytes.load(Ordering::Relaxed);
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
        assert_eq!(bytes.len(), 5 * len + tail);
        for (i, chunk) in bytes.chunks(len).enumerate() {
            let part = i.min(4);
            assert!(chunk.iter().all(|&b| usize::from(b) == part), "part {i}");
        }
        if direct {
            // Every whole 4 KiB block went directly; the tail through the
            // page cache.
            assert_eq!(direct_bytes, 5 * len as u64);
        } else {
            // 30 MiB through the page cache: at least one early sync.
            assert_eq!(direct_bytes, 0);
            assert!(syncs >= 1, "{syncs} early syncs");
        }
        println!(
            "5 parts of about {len} bytes, concurrent: object of {} bytes; direct writes \
             {direct} ({direct_bytes} bytes), {syncs} early syncs; no staging file left",
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
