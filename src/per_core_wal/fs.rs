//! The file-system seam: every file operation of the WAL goes through
//! [`WalFileSystem`] and [`WalFile`], so tests can run the WAL on a simulated
//! disk that loses unsynced data at a crash. [`StdFileSystem`] is the real one.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;

/// The directory operations the WAL needs.
pub trait WalFileSystem: Send + Sync + Debug {
    /// Creates a directory and its parents (like `mkdir -p`).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files only matter to the WAL).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file for appending; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for writing (truncation during repair).
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Removes a file. Durable only after [`WalFileSystem::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created and removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Moves a file to `to` on the same file system in one atomic step (the
    /// directory of `to` exists). Durable only after
    /// [`WalFileSystem::sync_dir`] of both directories.
    ///
    /// The WAL moves covered segments out of its directory with it and
    /// deletes them on a background thread: deleting a large file waits
    /// for the disk to free its blocks (on a `discard` mount), a rename does
    /// not. The default returns
    /// [`io::ErrorKind::Unsupported`], and the WAL then removes covered
    /// segments with [`WalFileSystem::remove_file`] in the call.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = (from, to);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this WalFileSystem does not rename",
        ))
    }

    /// The first `len` bytes of a file as one buffer, for recovery to read a
    /// whole segment and keep keys and values where they are. The default
    /// reads them into memory; [`StdFileSystem`] maps the file read-only
    /// instead (no copy), so the file must not be truncated below `len` or
    /// rewritten while the buffer lives (removing it is fine). The WAL only
    /// ever appends to its newest segment and truncates a torn tail, which
    /// lies past every valid record.
    fn read_whole(&self, path: &Path, len: u64) -> io::Result<Bytes> {
        let file = self.open_read(path)?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
        let mut buf = vec![0; len];
        let filled = super::segment::read_full_at(&*file, &mut buf, 0)?;
        if filled < len {
            return Err(shrank(len, filled));
        }
        Ok(Bytes::from(buf))
    }
}

fn shrank(len: usize, read: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file shrank while reading: {read} of {len} bytes"),
    )
}

/// One open file.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is an I/O call; callers compare it with offsets"
)]
pub trait WalFile: Send + Sync + Debug {
    /// Writes all of `data` at the end of the file (not durable until
    /// [`WalFile::sync_data`]).
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// `fdatasync`: makes the file's data and length durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Tells the OS that the file's cached pages will not be read again
    /// (they are dropped if clean; the data is untouched). A hint: the
    /// default does nothing.
    fn drop_cache(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFileSystem;

impl WalFileSystem for StdFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(StdFile {
            file: File::open(path)?,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn read_whole(&self, path: &Path, len: u64) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if size < len {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            return Err(shrank(len, usize::try_from(size).unwrap_or(usize::MAX)));
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
        // Mapping the page cache costs no copy and no freshly touched memory
        // (page faults were a fifth of a replay that copied keys and values).
        #[expect(
            unsafe_code,
            reason = "a mapped file changed by another process is undefined behaviour: WAL \
                      segments are never rewritten, only appended to, truncated past their \
                      valid records (a torn tail) or removed; the trait documents it"
        )]
        // SAFETY: see the reason above; `len` is within the file's length now.
        let map = unsafe { memmap2::MmapOptions::new().len(len).populate().map(&file)? };
        Ok(Bytes::from_owner(map))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Directory handles cannot be synced on this platform; entries are
            // made durable by the file system's own metadata journal.
            let _ = dir;
            Ok(())
        }
    }
}

/// A file of [`StdFileSystem`].
#[derive(Debug)]
struct StdFile {
    file: File,
}

impl WalFile for StdFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn drop_cache(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed)?;
        }
        Ok(())
    }
}
