//! Covered segments leave the WAL directory by a rename into
//! `<base_dir>/.retired/`, made durable by the directory sync that follows,
//! and are deleted there by one background thread per manager: a checkpoint
//! does not wait for the disk to free their blocks (on a file system
//! mounted with `discard`, deleting a large file waits for the disk; a
//! rename does not).
//!
//! The name `.retired` never parses as a segment, so nothing in it is ever
//! read back as WAL. Files a crash left there are deleted when the WAL is
//! next opened; the manager's drop waits for the deletions it queued. A file
//! system that cannot rename ([`WalFileSystem::rename`]'s default) has its
//! covered segments removed in the call, as before.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::fs::WalFileSystem;

/// The directory under the WAL's base directory holding retired segments.
pub(crate) const RETIRED_DIR: &str = ".retired";

/// Retires covered segments and deletes them in the background.
#[derive(Debug)]
pub(crate) struct Reaper {
    fs: Arc<dyn WalFileSystem>,
    /// `<base_dir>/.retired`.
    dir: PathBuf,
    state: Mutex<ReaperState>,
}

#[derive(Debug, Default)]
struct ReaperState {
    /// `dir` exists (found at open or created since).
    dir_ready: bool,
    /// Queue of the deleting thread, once started.
    sender: Option<mpsc::Sender<PathBuf>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// The reaper of the WAL in `base_dir`. Queues for deletion whatever an
    /// earlier process left in `.retired/` (a missing or unreadable
    /// directory queues nothing).
    pub(crate) fn new(fs: Arc<dyn WalFileSystem>, base_dir: &Path) -> Self {
        let dir = base_dir.join(RETIRED_DIR);
        let reaper = Self {
            fs,
            dir,
            state: Mutex::new(ReaperState::default()),
        };
        if let Ok(names) = reaper.fs.list_dir(&reaper.dir) {
            let mut state = reaper.lock();
            state.dir_ready = true;
            for name in names {
                reaper.queue(&mut state, reaper.dir.join(name));
            }
        }
        reaper
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaperState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `path` out of the WAL directory: renamed into `.retired/`
    /// (returns the new path, for [`Reaper::delete`] once the caller has
    /// synced the WAL directory) or, where that fails (a file system that
    /// cannot rename), removed here (returns `None`).
    ///
    /// # Errors
    ///
    /// The error of [`WalFileSystem::remove_file`] when the rename failed
    /// too.
    pub(crate) fn retire(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        let Some(name) = path.file_name() else {
            return self.fs.remove_file(path).map(|()| None);
        };
        let target = self.dir.join(name);
        let mut state = self.lock();
        let mut renamed = self.fs.rename(path, &target);
        if let Err(e) = &renamed {
            if e.kind() != io::ErrorKind::Unsupported
                && !state.dir_ready
                && self.fs.create_dir_all(&self.dir).is_ok()
            {
                state.dir_ready = true;
                renamed = self.fs.rename(path, &target);
            }
        }
        drop(state);
        match renamed {
            Ok(()) => Ok(Some(target)),
            Err(_) => self.fs.remove_file(path).map(|()| None),
        }
    }

    /// Deletes retired files in the background. Called after the directory
    /// sync that made their renames durable: a deletion running during that
    /// sync made it wait for the disk to free the blocks.
    pub(crate) fn delete(&self, paths: Vec<PathBuf>) {
        let mut state = self.lock();
        for path in paths {
            self.queue(&mut state, path);
        }
    }

    /// Queues `path` for deletion, starting the thread on first use (or
    /// deleting it here if no thread can start).
    fn queue(&self, state: &mut ReaperState, path: PathBuf) {
        if state.sender.is_none() {
            let (sender, receiver) = mpsc::channel::<PathBuf>();
            let fs = Arc::clone(&self.fs);
            let spawned = std::thread::Builder::new()
                .name("wal-reaper".into())
                .spawn(move || {
                    for path in receiver {
                        delete_now(&*fs, &path);
                    }
                });
            if let Ok(thread) = spawned {
                state.sender = Some(sender);
                state.thread = Some(thread);
            }
        }
        match &state.sender {
            Some(sender) => {
                if let Err(mpsc::SendError(path)) = sender.send(path) {
                    delete_now(&*self.fs, &path);
                }
            }
            None => delete_now(&*self.fs, &path),
        }
    }
}

/// Deletes a retired segment; a failure is logged (the next open retries).
fn delete_now(fs: &dyn WalFileSystem, path: &Path) {
    if let Err(e) = fs.remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "could not delete a retired WAL segment; the next open of the WAL retries"
            );
        }
    }
}

impl Drop for Reaper {
    /// Waits for the queued deletions.
    fn drop(&mut self) {
        let mut state = self.lock();
        state.sender = None;
        let thread = state.thread.take();
        drop(state);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
