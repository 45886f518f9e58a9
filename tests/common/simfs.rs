//! `SimFs`: an in-memory [`WalFileSystem`] that forgets at a power loss what
//! a real disk may forget.
//!
//! Per file it keeps the bytes written so far (the cache) and the bytes the
//! last `sync_data` made durable; per directory, which entries (creations and
//! removals) the last `sync_dir` made durable. [`SimFs::crash`] replaces the
//! state with what a power loss may leave:
//!
//! - the directory entries as of the last `sync_dir` of their directory: a
//!   file created since vanishes (even if its data was synced), a file
//!   removed since reappears with its durable content. With
//!   [`DirOps::PrefixSurvives`], a random prefix (in order) of the directory
//!   operations not yet synced survives too, as a journaling file system may
//!   commit them on its own: a new file can then survive with no durable
//!   data;
//! - per file, its durable content plus, by [`CrashMode`], nothing of the
//!   unsynced bytes, a random prefix of them, or garbage in their place. A
//!   truncation (`set_len`) is unsynced until `sync_data`, like any write.
//!
//! Every mutating operation (`create_dir_all`, `create_new`, `append`,
//! `sync_data`, `sync_dir`, `remove_file`, `set_len`) is counted. With
//! [`SimFs::set_crash_at`]`(Some(n))` the n-th of them and every call after it
//! (reads included) fail with an I/O error, as if the process had died there;
//! the test then calls [`SimFs::crash`] and reopens. Handles opened before a
//! crash fail from then on.
//!
//! Simplification: directories are durable as soon as they are created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use walhouse::per_core_wal::{WalFile, WalFileSystem};

/// A tiny deterministic xorshift64* generator: same seed, same sequence.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + usize::try_from(self.below((hi - lo) as u64 + 1)).expect("fits")
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// What a power loss does to the bytes written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost: files keep exactly their durable content.
    DropUnsynced,
    /// A random prefix (possibly empty or whole) of the unsynced bytes survives.
    RandomPrefix,
    /// The unsynced region reads as garbage (random bytes, sometimes zeros),
    /// whole or a random part of it (a file never reads longer than what was
    /// written): the file size reached the disk, the data did not.
    GarbageTail,
}

impl CrashMode {
    /// Every mode.
    pub const ALL: [Self; 3] = [Self::DropUnsynced, Self::RandomPrefix, Self::GarbageTail];
}

/// Which directory operations (creations, removals) a power loss keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirOps {
    /// Only those a `sync_dir` of their directory made durable.
    SyncedOnly,
    /// Those, plus a random prefix (in order) of the unsynced ones.
    PrefixSurvives,
}

/// Mutating operations, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `create_dir_all`.
    CreateDir,
    /// `create_new`.
    Create,
    /// `WalFile::append`.
    Append,
    /// `WalFile::sync_data`.
    SyncData,
    /// `sync_dir`.
    SyncDir,
    /// `remove_file`.
    Remove,
    /// `WalFile::set_len`.
    SetLen,
}

/// One file's bytes.
#[derive(Debug, Clone, Default)]
struct Inode {
    /// Everything written so far (what reads see).
    cache: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
}

#[derive(Debug, Clone)]
struct State {
    dirs: BTreeSet<PathBuf>,
    /// Directory entries as the running process sees them.
    names: BTreeMap<PathBuf, u64>,
    /// Directory entries as of each directory's last `sync_dir`.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directory operations since their directory's last `sync_dir`, in
    /// order: (path, `Some(inode)` for a creation, `None` for a removal).
    pending_dir_ops: Vec<(PathBuf, Option<u64>)>,
    dir_ops: DirOps,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Bumped at every crash: handles of an older generation are dead.
    generation: u64,
    ops: u64,
    op_counts: BTreeMap<OpKind, u64>,
    crash_at: Option<u64>,
    /// The crash point was reached: every call fails.
    failing: bool,
    sync_data_noop: bool,
    crashes: u64,
    rng: XorShift,
}

impl State {
    /// Accounts for one call; `Some(kind)` for a counted (mutating) one.
    fn begin(&mut self, kind: Option<OpKind>) -> io::Result<()> {
        if self.failing {
            return Err(dead());
        }
        if let Some(kind) = kind {
            self.ops += 1;
            *self.op_counts.entry(kind).or_default() += 1;
            if self.crash_at.is_some_and(|n| self.ops >= n) {
                self.failing = true;
                return Err(dead());
            }
        }
        Ok(())
    }

    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        if self.dirs.contains(dir) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no directory {}", dir.display()),
            ))
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no file {}", path.display()),
            )
        })
    }

    /// The content a power loss leaves of one file.
    fn after_crash(&mut self, inode: &Inode, mode: CrashMode) -> Vec<u8> {
        let Inode { cache, durable } = inode;
        if cache == durable || mode == CrashMode::DropUnsynced {
            return durable.clone();
        }
        let extends = cache.len() > durable.len() && cache.starts_with(durable);
        let (base, tail): (&[u8], &[u8]) = if extends {
            (durable, &cache[durable.len()..])
        } else {
            // An unsynced truncation (maybe followed by writes): either the
            // old durable content survives, or the truncation did and the
            // writes after it are treated like an unsynced tail.
            if self.rng.chance(1, 2) {
                return durable.clone();
            }
            let common = cache
                .iter()
                .zip(durable.iter())
                .take_while(|(a, b)| a == b)
                .count();
            (&cache[..common], &cache[common..])
        };
        let mut out = base.to_vec();
        match mode {
            CrashMode::DropUnsynced => {}
            CrashMode::RandomPrefix => {
                let keep = self.rng.range(0, tail.len());
                out.extend_from_slice(&tail[..keep]);
            }
            CrashMode::GarbageTail => {
                if !tail.is_empty() {
                    // A file never reads longer than what was written to it.
                    let len = if self.rng.chance(1, 2) {
                        tail.len()
                    } else {
                        self.rng.range(1, tail.len())
                    };
                    if self.rng.chance(1, 4) {
                        out.resize(out.len() + len, 0);
                    } else {
                        out.extend((0..len).map(|_| self.rng.next_u64().to_le_bytes()[0]));
                    }
                }
            }
        }
        out
    }
}

fn dead() -> io::Error {
    io::Error::other("simfs: injected failure (the process died at this operation)")
}

/// The simulated file system. Clones share the same state.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimFs")
            .field("files", &s.names.len())
            .field("ops", &s.ops)
            .field("crash_at", &s.crash_at)
            .finish_non_exhaustive()
    }
}

impl SimFs {
    /// An empty file system whose crashes draw from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                dirs: BTreeSet::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending_dir_ops: Vec::new(),
                dir_ops: DirOps::SyncedOnly,
                inodes: HashMap::new(),
                next_inode: 1,
                generation: 0,
                ops: 0,
                op_counts: BTreeMap::new(),
                crash_at: None,
                failing: false,
                sync_data_noop: false,
                crashes: 0,
                rng: XorShift::new(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This file system as the WAL's seam (sharing the state).
    pub fn shared(&self) -> Arc<dyn WalFileSystem> {
        Arc::new(self.clone())
    }

    /// From the `n`-th counted operation on (1-based, counting from the
    /// operations already done), every call fails. `None`: never.
    pub fn set_crash_at(&self, n: Option<u64>) {
        self.lock().crash_at = n;
    }

    /// Sets which directory operations a power loss keeps.
    pub fn set_dir_ops(&self, dir_ops: DirOps) {
        self.lock().dir_ops = dir_ops;
    }

    /// Makes `sync_data` a no-op that still reports success (a disk that lies).
    pub fn set_sync_data_noop(&self, noop: bool) {
        self.lock().sync_data_noop = noop;
    }

    /// Counted operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Counted operations so far, per kind.
    pub fn op_counts(&self) -> BTreeMap<OpKind, u64> {
        self.lock().op_counts.clone()
    }

    /// True once the crash point was reached (calls are failing).
    pub fn failing(&self) -> bool {
        self.lock().failing
    }

    /// Number of crashes so far.
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// Power loss: keeps the durable directory entries and, per file, its
    /// durable content plus what `mode` leaves of the unsynced bytes. Clears
    /// the crash point; handles opened before fail from now on.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        if s.dir_ops == DirOps::PrefixSurvives {
            let pending = s.pending_dir_ops.len();
            let keep = s.rng.range(0, pending);
            let survivors: Vec<_> = s.pending_dir_ops.drain(..).take(keep).collect();
            for (path, op) in survivors {
                match op {
                    Some(inode) => s.durable_names.insert(path, inode),
                    None => s.durable_names.remove(&path),
                };
            }
        }
        s.pending_dir_ops.clear();
        let names = s.durable_names.clone();
        let mut inodes = HashMap::new();
        for &id in names.values() {
            let inode = s.inodes.get(&id).cloned().unwrap_or_default();
            let data = s.after_crash(&inode, mode);
            inodes.insert(
                id,
                Inode {
                    cache: data.clone(),
                    durable: data,
                },
            );
        }
        s.names = names;
        s.inodes = inodes;
        s.generation += 1;
        s.crashes += 1;
        s.crash_at = None;
        s.failing = false;
    }

    /// An independent copy of the whole state (files, durable snapshots,
    /// counters, random generator): to try several futures of one crash.
    pub fn fork(&self) -> Self {
        Self {
            state: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    /// Paths of the files that exist now, with (cache, durable) lengths.
    pub fn files(&self) -> Vec<(PathBuf, usize, usize)> {
        let s = self.lock();
        s.names
            .iter()
            .map(|(p, id)| {
                let i = &s.inodes[id];
                (p.clone(), i.cache.len(), i.durable.len())
            })
            .collect()
    }

    /// The bytes of a file as reads see them now.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let id = s.names.get(path)?;
        Some(s.inodes[id].cache.clone())
    }

    /// Replaces a file's content (cache and durable), for corruption tests.
    pub fn overwrite(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.lock();
        let id = s.names[path];
        s.inodes.insert(
            id,
            Inode {
                cache: data.clone(),
                durable: data,
            },
        );
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn WalFile>> {
        let mut s = self.lock();
        s.begin(None)?;
        let inode = s.lookup(path)?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            generation: s.generation,
            writable,
            path: path.to_path_buf(),
        }))
    }
}

impl WalFileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(Some(OpKind::CreateDir))?;
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.lock();
        s.begin(None)?;
        s.check_dir(dir)?;
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut s = self.lock();
        s.begin(Some(OpKind::Create))?;
        s.check_dir(path.parent().unwrap_or(Path::new("")))?;
        if s.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("simfs: {} exists", path.display()),
            ));
        }
        let id = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(id, Inode::default());
        s.names.insert(path.to_path_buf(), id);
        s.pending_dir_ops.push((path.to_path_buf(), Some(id)));
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
            generation: s.generation,
            writable: true,
            path: path.to_path_buf(),
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.open(path, false)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.open(path, true)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(Some(OpKind::Remove))?;
        s.lookup(path)?;
        s.names.remove(path);
        s.pending_dir_ops.push((path.to_path_buf(), None));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.begin(Some(OpKind::SyncDir))?;
        s.check_dir(dir)?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names.extend(now);
        s.pending_dir_ops.retain(|(p, _)| !in_dir(p));
        Ok(())
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    fs: SimFs,
    inode: u64,
    generation: u64,
    writable: bool,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .finish_non_exhaustive()
    }
}

impl SimFile {
    /// Runs `f` on this file's inode after accounting for the call.
    fn with<T>(
        &self,
        kind: Option<OpKind>,
        write: bool,
        f: impl FnOnce(&mut Inode, bool) -> T,
    ) -> io::Result<T> {
        let mut s = self.fs.lock();
        s.begin(kind)?;
        if s.generation != self.generation {
            return Err(io::Error::other(
                "simfs: handle opened before a crash (its process is gone)",
            ));
        }
        if write && !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("simfs: {} is open read-only", self.path.display()),
            ));
        }
        let noop = s.sync_data_noop;
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("simfs: inode vanished"))?;
        Ok(f(inode, noop))
    }
}

impl WalFile for SimFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.with(Some(OpKind::Append), true, |i, _| {
            i.cache.extend_from_slice(data);
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(None, false, |i, _| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            if start >= i.cache.len() {
                return 0;
            }
            let n = buf.len().min(i.cache.len() - start);
            buf[..n].copy_from_slice(&i.cache[start..start + n]);
            n
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(None, false, |i, _| i.cache.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(Some(OpKind::SetLen), true, |i, _| {
            i.cache
                .resize(usize::try_from(len).expect("test sizes fit"), 0);
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        // Like fdatasync on Linux, allowed on a read-only handle.
        self.with(Some(OpKind::SyncData), false, |i, noop| {
            if !noop {
                i.durable.clone_from(&i.cache);
            }
        })
    }
}
