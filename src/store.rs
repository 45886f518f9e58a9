//! Object stores by URL: `file://`, `memory://`, `s3://`, `gs://`, `az://`,
//! or a plain local directory. Credentials and endpoints come from the
//! environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) through `object_store`'s
//! builders; they never appear in a name, an error or `{:?}`.
//!
//! The commit protocol needs one thing of a store: a create-only PUT
//! (`PutMode::Create`) that fails when the object exists. [`Store::probe`]
//! checks it at start and refuses a store that ignores it, unless
//! `WALHOUSE_UNSAFE_SKIP_STORE_PROBE=1` says otherwise.
//!
//! Reads that recovery and checkpoints depend on ([`Store::list_all`],
//! [`Store::get_all`], [`Store::head`]) and the probe retry transient errors
//! ([`is_transient`]) [`RETRY_ATTEMPTS`] times with exponential backoff from
//! [`RETRY_FIRST_BACKOFF`]: `object_store` retries requests, but not a
//! response body that fails while it streams.
//!
//! `object_store`'s local file system does not fsync; [`Store::make_durable`]
//! does, for a local store, before the WAL segments a checkpoint replaces are
//! removed.
//! Multipart uploads to a local store ([`Store::put_multipart`]) start the
//! disk's writeback while the parts land, so that fsync has little left to
//! write.

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload,
};

#[cfg(unix)]
mod local_upload;

/// Errors of opening a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL cannot be parsed or names an unsupported scheme.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials in it are not expected; none are kept).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store's builder refused its configuration.
    #[error("cannot configure store {store}: {source}")]
    Configure {
        /// The store's name.
        store: String,
        /// The builder's error.
        #[source]
        source: object_store::Error,
    },
    /// A local directory could not be created.
    #[error("cannot create local store directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A read-only command was given a local store whose directory does not
    /// exist; nothing was created.
    #[error("no table at {url}: the directory does not exist")]
    NoTable {
        /// The store as given.
        url: String,
    },
    /// The store does not honour a create-only PUT: a second
    /// `PutMode::Create` of the same object succeeded. Two checkpointers could
    /// both commit the same manifest number and one would silently lose.
    #[error(
        "store {store} ignores create-only PUTs: a second PUT with PutMode::Create of {object} \
         succeeded instead of failing with AlreadyExists, so two writers could both commit the \
         same manifest; use a store that honours If-None-Match (AWS S3, MinIO, LocalStack, \
         moto, GCS, Azure, a local directory), or set {SKIP_PROBE_ENV}=1 to run anyway \
         (unsafe with more than one writer)"
    )]
    CreateOnlyIgnored {
        /// The store's name.
        store: String,
        /// The probe object written twice.
        object: String,
    },
    /// The store refuses create-only PUTs (`NotImplemented`; for S3, when
    /// `AWS_CONDITIONAL_PUT=disabled`).
    #[error(
        "store {store} does not support create-only PUTs, which the checkpoint commit needs \
         (probe of {object}: {source}); use a store that honours If-None-Match (for S3, do not \
         set AWS_CONDITIONAL_PUT=disabled)"
    )]
    CreateOnlyUnsupported {
        /// The store's name.
        store: String,
        /// The probe object.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The probe could not write or delete its object: the store is not
    /// reachable or refuses the credentials. Transient errors were retried
    /// ([`RETRY_ATTEMPTS`] attempts, each with a new probe object) before
    /// this is returned; fix the cause and start again.
    #[error("store {store}: probe {op} of {object} failed after {attempts} attempt(s): {source}")]
    Probe {
        /// The store's name.
        store: String,
        /// The probe object (of the last attempt).
        object: String,
        /// The operation that failed (`"first create-only put"`, ...).
        op: &'static str,
        /// How many times the probe was tried.
        attempts: u32,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    /// What the caller should do.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::InvalidUrl { .. }
            | Self::Configure { .. }
            | Self::CreateOnlyIgnored { .. }
            | Self::CreateOnlyUnsupported { .. } => K::InvalidInput,
            Self::CreateDir { .. } => K::Io,
            Self::NoTable { .. } => K::NotFound,
            Self::Probe { .. } => K::Unavailable,
        }
    }
}

/// How many times a store read ([`Store::list_all`], [`Store::get_all`],
/// [`Store::head`]) and the probe are tried when they fail with a transient
/// error ([`is_transient`]).
///
/// `object_store` retries a request whose response did not arrive, but not
/// a response body that fails while it streams (a LIST page cut off by a
/// reset connection): these attempts cover that too. A LIST restarts from
/// the beginning.
pub const RETRY_ATTEMPTS: u32 = 5;

/// The wait before the second attempt; it doubles before each further one
/// (100, 200, 400, 800 ms: at most 1.5 s of waiting over
/// [`RETRY_ATTEMPTS`]).
pub const RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a store error may go away when the call is repeated: a
/// `Generic` error, which is how `object_store` reports connection and body
/// errors, timeouts and server errors (5xx), unless its cause is a local
/// file error that repeating cannot change (not found, permission denied,
/// invalid data). `NotFound`, `AlreadyExists`, `Precondition`,
/// `NotModified`, `PermissionDenied`, `Unauthenticated`, `NotSupported`,
/// `NotImplemented` and the other variants are permanent.
#[must_use]
pub fn is_transient(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::Generic { source, .. } => !permanent_cause(source.as_ref()),
        _ => false,
    }
}

fn permanent_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::NotFound
                    | K::PermissionDenied
                    | K::AlreadyExists
                    | K::InvalidInput
                    | K::InvalidData
                    | K::Unsupported
                    | K::StorageFull
                    | K::ReadOnlyFilesystem
            ) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// A store call that failed, and after how many attempts (1: a permanent
/// error, not retried).
#[derive(Debug, thiserror::Error)]
#[error("{source} (after {attempts} attempt(s))")]
pub struct Retried {
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    #[source]
    pub source: object_store::Error,
}

/// The environment variable that skips [`Store::probe`] when set to `1`
/// (or `true`): for a store known to be safe that the probe cannot write to,
/// or a single writer on a store without create-only PUTs. Unsafe otherwise.
pub const SKIP_PROBE_ENV: &str = "WALHOUSE_UNSAFE_SKIP_STORE_PROBE";

/// The object prefix (under the table root) the probe writes to.
pub const PROBE_PREFIX: &str = "_probe";

/// Whether [`Store::probe_with`] checks the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// Write the probe object and refuse a store that ignores create-only PUTs.
    Check,
    /// Do not touch the store (unsafe with more than one writer).
    Skip,
}

impl ProbeMode {
    /// [`ProbeMode::Skip`] if [`SKIP_PROBE_ENV`] is `1` or `true`, else
    /// [`ProbeMode::Check`].
    #[must_use]
    pub fn from_env() -> Self {
        match std::env::var(SKIP_PROBE_ENV) {
            Ok(v) if v == "1" || v.eq_ignore_ascii_case("true") => Self::Skip,
            _ => Self::Check,
        }
    }
}

/// What [`Store::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The store's name.
    pub store: String,
    /// The probe object (full path in the store); `None` when skipped.
    pub object: Option<String>,
    /// Whether the probe ran.
    pub mode: ProbeMode,
}

/// An object store and the table root inside it.
#[derive(Clone)]
pub struct Store {
    name: String,
    inner: Arc<dyn ObjectStore>,
    root: Path,
    local: Option<PathBuf>,
}

impl fmt::Debug for Store {
    // Never format the inner store: some builders print secrets in `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.name)
            .field("root", &self.root.as_ref())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a store by URL:
    ///
    /// - `file:///abs/dir` or a plain path: a local directory (created if
    ///   missing), made durable with fsync by [`Store::make_durable`];
    /// - `memory://`: in memory, for tests;
    /// - `s3://bucket/prefix`: S3 or an S3-compatible server, configured from
    ///   `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` for MinIO or
    ///   LocalStack, `AWS_REGION`, credentials);
    /// - `gs://bucket/prefix` (`GOOGLE_*`) and `az://container/prefix` (`AZURE_*`).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::local(FsPath::new(url));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid("file:// URLs need an absolute path".into()));
                }
                Self::local(FsPath::new(rest))
            }
            "memory" => Ok(Self::memory()),
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" => {
                // object_store's own URL parsing picks the bucket (and, for
                // Azure, the account) out of the URL; the rest of the
                // configuration comes from the environment.
                let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
                let bucket = parsed
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| invalid("no bucket or container".into()))?
                    .to_owned();
                let root = Path::parse(parsed.path().trim_matches('/'))
                    .map_err(|e| invalid(e.to_string()))?;
                let name = format!("{scheme}://{bucket}/{root}");
                let configure = |source| StoreError::Configure {
                    store: name.clone(),
                    source,
                };
                let inner: Arc<dyn ObjectStore> = match scheme {
                    "s3" | "s3a" => Arc::new(
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_url(url)
                            .build()
                            .map_err(configure)?,
                    ),
                    "gs" => Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_url(url)
                            .build()
                            .map_err(configure)?,
                    ),
                    _ => Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_url(url)
                            .build()
                            .map_err(configure)?,
                    ),
                };
                Ok(Self {
                    name,
                    inner,
                    root,
                    local: None,
                })
            }
            other => Err(invalid(format!(
                "unsupported scheme {other:?} (use file://, memory://, s3://, gs:// or az://)"
            ))),
        }
    }

    /// A local directory as the store (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let dir = dir.canonicalize().map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let fs =
            LocalFileSystem::new_with_prefix(&dir).map_err(|source| StoreError::Configure {
                store: format!("file://{}", dir.display()),
                source,
            })?;
        Ok(Self {
            name: format!("file://{}", dir.display()),
            inner: Arc::new(fs),
            root: Path::default(),
            local: Some(dir),
        })
    }

    /// [`Store::from_url`] for commands that only read: a local directory
    /// that does not exist is [`StoreError::NoTable`] instead of being
    /// created.
    pub fn from_url_read_only(url: &str) -> Result<Self, StoreError> {
        let local = match url.split_once("://") {
            None => Some(url),
            Some(("file", rest)) => Some(rest),
            Some(_) => None,
        };
        if let Some(dir) = local {
            if !FsPath::new(dir).is_dir() {
                return Err(StoreError::NoTable {
                    url: url.to_owned(),
                });
            }
        }
        Self::from_url(url)
    }

    /// An in-memory store (lost when dropped).
    #[must_use]
    pub fn memory() -> Self {
        Self {
            name: "memory://".to_owned(),
            inner: Arc::new(InMemory::new()),
            root: Path::default(),
            local: None,
        }
    }

    /// Wraps any object store (a test's fault injector, say), rooted at `root`.
    pub fn with_object_store(name: &str, inner: Arc<dyn ObjectStore>, root: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner,
            root: Path::from(root),
            local: None,
        }
    }

    /// The store's name for messages: scheme, bucket and prefix, no secret.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying object store.
    #[must_use]
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The table root inside the store.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local directory, for a local store.
    #[must_use]
    pub fn local_dir(&self) -> Option<&FsPath> {
        self.local.as_deref()
    }

    /// The full object path of `relative` (a path under the table root).
    #[must_use]
    pub fn path(&self, relative: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.root))
        }
    }

    /// The path under the table root of a full object path, if it is under it.
    #[must_use]
    pub fn relative<'a>(&self, path: &'a Path) -> Option<&'a str> {
        let full = path.as_ref();
        if self.root.as_ref().is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.root.as_ref())?.strip_prefix('/')
    }

    /// Starts a multipart upload of `relative` (a path under the table
    /// root). For a local store (on Unix) the parts go to a staging file
    /// whose writeback to disk starts as they land (an `fdatasync` every
    /// 16 MiB on another thread), so [`Store::make_durable`] after the upload
    /// has little left to write; the object appears when the upload
    /// completes. Other stores: the object store's own multipart upload.
    pub async fn put_multipart(
        &self,
        relative: &str,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        #[cfg(unix)]
        if let Some(dir) = &self.local {
            return local_upload::LocalMultipart::create(dir.join(relative))
                .map(|upload| Box::new(upload) as Box<dyn MultipartUpload>)
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                });
        }
        self.inner
            .put_multipart_opts(&self.path(relative), PutMultipartOptions::default())
            .await
    }

    /// The staging files of local multipart uploads under the folder
    /// `relative` (a path under the table root), with their modification
    /// times: files named `<object>#<digits>` (this crate's and
    /// `LocalFileSystem`'s), which listing the store never shows. An upload
    /// stopped by a crash leaves one behind. Empty for other stores (an
    /// abandoned S3 multipart upload is the bucket's lifecycle rule's to
    /// abort) and for a missing folder.
    ///
    /// # Errors
    ///
    /// Reading a directory or a file's metadata failed.
    pub async fn local_staging_files(
        &self,
        relative: &str,
    ) -> std::io::Result<Vec<(String, std::time::SystemTime)>> {
        let Some(root) = self.local.clone() else {
            return Ok(Vec::new());
        };
        let relative = relative.trim_matches('/').to_owned();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut dirs = vec![relative];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(root.join(&dir)) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let staging = is_staging_name(&name);
                    let rel = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    let kind = entry.file_type()?;
                    if kind.is_dir() {
                        dirs.push(rel);
                    } else if kind.is_file() && staging {
                        found.push((rel, entry.metadata()?.modified()?));
                    }
                }
            }
            found.sort();
            Ok(found)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Removes a file found by [`Store::local_staging_files`] (nothing for
    /// other stores; a file already gone is no error).
    ///
    /// # Errors
    ///
    /// The removal failed.
    pub async fn remove_local_staging_file(&self, relative: &str) -> std::io::Result<()> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        let under_root = FsPath::new(relative)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !under_root || !relative.rsplit('/').next().is_some_and(is_staging_name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{relative} is not a staging file's name under the store's root"),
            ));
        }
        let path = root.join(relative);
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Creates `relative` (a path under the table root) with `bytes` unless
    /// it exists: a create-only PUT whose object is durable on `Ok`. On a
    /// local store the bytes go to a staging file that is fsynced *before*
    /// the object's name appears (a hard link, which fails if the name
    /// exists), then the directories up to the root are fsynced: a crash at
    /// any point leaves no object or all of it. (`object_store`'s own
    /// create-only PUT links its staging file without an fsync, so a power
    /// loss after the link became durable, which on ext4 or XFS any later
    /// fsync on the same file system can do, left an empty object.) Other
    /// stores: a PUT with [`PutMode::Create`], durable when it returns.
    ///
    /// # Errors
    ///
    /// [`object_store::Error::AlreadyExists`] if the object exists; the
    /// store's or the file system's error otherwise.
    pub async fn put_create_durable(
        &self,
        relative: &str,
        bytes: PutPayload,
    ) -> object_store::Result<()> {
        let Some(root) = self.local.clone() else {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            return self
                .inner
                .put_opts(&self.path(relative), bytes, opts)
                .await
                .map(|_| ());
        };
        let dest = root.join(relative);
        let path = relative.to_owned();
        tokio::task::spawn_blocking(move || match create_durable(&root, &dest, &bytes) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(object_store::Error::AlreadyExists {
                    path,
                    source: Box::new(source),
                })
            }
            Err(source) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::new(
                    source.kind(),
                    format!("create-only put of {}: {source}", dest.display()),
                )),
            }),
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?
    }

    /// Makes objects durable. For a local store: fsync of each file and of
    /// every directory from it up to the store's root (`object_store` writes
    /// without fsync). Other stores are durable when a PUT returns.
    pub async fn make_durable(&self, relatives: &[String]) -> std::io::Result<()> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        let files: Vec<PathBuf> = relatives.iter().map(|r| root.join(r)).collect();
        tokio::task::spawn_blocking(move || sync_files_and_dirs(&root, &files))
            .await
            .map_err(std::io::Error::other)?
    }
}

impl Store {
    /// Runs `call` until it succeeds, fails with an error that is not
    /// transient ([`is_transient`]), or has been tried [`RETRY_ATTEMPTS`]
    /// times, waiting [`RETRY_FIRST_BACKOFF`] (doubling) between attempts.
    /// `op` and `what` name the call in the warning logged per retry.
    pub async fn retrying<T, F, Fut>(&self, op: &str, what: &str, mut call: F) -> Result<T, Retried>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !backoff.again(&self.name, op, what, &e).await {
                        return Err(Retried {
                            attempts: backoff.attempts,
                            source: e,
                        });
                    }
                }
            }
        }
    }

    /// Every object under `prefix`, listed whole: a listing that fails
    /// part-way (a page's body cut off) starts again, see
    /// [`Store::retrying`].
    pub async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, Retried> {
        self.retrying("list", prefix.as_ref(), || {
            self.inner.list(Some(prefix)).try_collect::<Vec<_>>()
        })
        .await
    }

    /// A small object (a manifest) read whole, request and body retried
    /// together, see [`Store::retrying`].
    pub async fn get_all(&self, location: &Path) -> Result<Bytes, Retried> {
        self.retrying("get", location.as_ref(), || async {
            self.inner.get(location).await?.bytes().await
        })
        .await
    }

    /// Bytes `range` of an object, see [`Store::retrying`].
    pub async fn get_range(&self, location: &Path, range: Range<u64>) -> Result<Bytes, Retried> {
        self.retrying("get", location.as_ref(), || {
            self.inner.get_range(location, range.clone())
        })
        .await
    }

    /// An object's metadata, see [`Store::retrying`].
    pub async fn head(&self, location: &Path) -> Result<ObjectMeta, Retried> {
        self.retrying("head", location.as_ref(), || self.inner.head(location))
            .await
    }

    /// Checks that the store honours what the commit protocol needs, with
    /// the mode from the environment ([`ProbeMode::from_env`]). See
    /// [`Store::probe_with`].
    pub async fn probe(&self) -> Result<ProbeReport, StoreError> {
        self.probe_with(ProbeMode::from_env()).await
    }

    /// Checks that a create-only PUT is honoured: writes a fresh object
    /// under `_probe/` with `PutMode::Create` twice; the second must fail
    /// with `AlreadyExists`. The object is deleted afterwards (also when the
    /// check fails). A store that ignores the mode is refused with
    /// [`StoreError::CreateOnlyIgnored`], which names [`SKIP_PROBE_ENV`].
    ///
    /// A transient error ([`is_transient`]: a reset connection, a timeout)
    /// starts the probe again with a new object, up to [`RETRY_ATTEMPTS`]
    /// times with backoff; then it is a [`StoreError::Probe`], which names
    /// the operation and the attempts (and not the unsafe override: a
    /// network error says nothing about create-only PUTs).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use walhouse::store::{ProbeMode, Store};
    /// let report = Store::memory().probe_with(ProbeMode::Check).await.unwrap();
    /// assert!(report.object.unwrap().starts_with("_probe/"));
    /// # });
    /// ```
    pub async fn probe_with(&self, mode: ProbeMode) -> Result<ProbeReport, StoreError> {
        if mode == ProbeMode::Skip {
            tracing::warn!(store = %self.name, "store probe skipped ({SKIP_PROBE_ENV})");
            return Ok(ProbeReport {
                store: self.name.clone(),
                object: None,
                mode,
            });
        }
        let mut backoff = Backoff::new();
        loop {
            // A new object per attempt: an attempt whose PUT landed although
            // its response was lost cannot be mistaken for the store
            // honouring (or ignoring) the create-only mode.
            let object = self.path(&format!("{PROBE_PREFIX}/{}", uuid::Uuid::new_v4()));
            let (op, source) = match self.probe_once(&object).await {
                Ok(ProbeStep::Done) => {
                    if let Some(dir) = &self.local {
                        // object_store leaves the emptied directory behind.
                        let _ = std::fs::remove_dir(dir.join(PROBE_PREFIX));
                    }
                    tracing::debug!(store = %self.name, object = %object, "store probe: create-only PUT honoured");
                    return Ok(ProbeReport {
                        store: self.name.clone(),
                        object: Some(object.to_string()),
                        mode,
                    });
                }
                Ok(ProbeStep::Refused(e)) => return Err(e),
                Err(failed) => failed,
            };
            if backoff
                .again(&self.name, op, object.as_ref(), &source)
                .await
            {
                // Best effort: the object may exist if a PUT landed.
                let _ = self.inner.delete(&object).await;
                continue;
            }
            return Err(StoreError::Probe {
                store: self.name.clone(),
                object: object.to_string(),
                op,
                attempts: backoff.attempts,
                source,
            });
        }
    }

    /// One probe with `object`: `Err` is a store call that failed (and
    /// which), to retry if transient.
    async fn probe_once(
        &self,
        object: &Path,
    ) -> Result<ProbeStep, (&'static str, object_store::Error)> {
        let create = || PutOptions::from(PutMode::Create);
        match self
            .inner
            .put_opts(object, PutPayload::from_static(b"probe 1"), create())
            .await
        {
            Ok(_) => {}
            Err(source @ object_store::Error::NotImplemented { .. }) => {
                return Ok(ProbeStep::Refused(StoreError::CreateOnlyUnsupported {
                    store: self.name.clone(),
                    object: object.to_string(),
                    source,
                }))
            }
            Err(e) => return Err(("first create-only put", e)),
        }
        let second = self
            .inner
            .put_opts(object, PutPayload::from_static(b"probe 2"), create())
            .await;
        let deleted = match self.inner.delete(object).await {
            // A retried DELETE whose first try landed.
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        };
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Ok(ProbeStep::Refused(StoreError::CreateOnlyIgnored {
                    store: self.name.clone(),
                    object: object.to_string(),
                }))
            }
            Err(e) => return Err(("second create-only put", e)),
        }
        deleted.map_err(|e| ("delete", e))?;
        Ok(ProbeStep::Done)
    }
}

/// The attempts of one retried store call ([`Store::retrying`], the probe).
struct Backoff {
    /// Attempts made so far (the first included).
    attempts: u32,
    /// The wait before the next attempt.
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            attempts: 1,
            delay: RETRY_FIRST_BACKOFF,
        }
    }

    /// Whether the call that failed with `e` is tried again: a transient
    /// error with attempts left. Then logs a warning, waits, and counts the
    /// next attempt.
    async fn again(&mut self, store: &str, op: &str, what: &str, e: &object_store::Error) -> bool {
        if self.attempts >= RETRY_ATTEMPTS || !is_transient(e) {
            return false;
        }
        tracing::warn!(
            store, op, object = what, attempt = self.attempts, error = %e,
            "transient store error; retrying in {:?}", self.delay
        );
        tokio::time::sleep(self.delay).await;
        self.delay *= 2;
        self.attempts += 1;
        true
    }
}

/// How one probe attempt ended, short of a store call failing.
enum ProbeStep {
    /// The create-only PUT was honoured and the object deleted.
    Done,
    /// The store cannot be used for commits (no retry helps).
    Refused(StoreError),
}

/// [`Store::put_create_durable`] on a local store: staging file, fsync,
/// hard link to `dest` (`AlreadyExists` if it exists), then the directories
/// up to `root` are fsynced. The staging file (`<name>#<digits>`, a name
/// listing never shows) is removed whatever happens.
fn create_durable(root: &FsPath, dest: &FsPath, bytes: &PutPayload) -> std::io::Result<()> {
    use std::io::Write as _;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let (staging, mut file) = loop {
        let digits = uuid::Uuid::new_v4().as_u64_pair().0;
        let staging = dest.with_file_name(format!("{name}#{digits}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(file) => break (staging, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    };
    let written = bytes
        .iter()
        .try_for_each(|chunk| file.write_all(chunk))
        .and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| std::fs::hard_link(&staging, dest));
    let _ = std::fs::remove_file(&staging);
    linked?;
    sync_files_and_dirs(root, &[dest.to_path_buf()])
}

fn sync_files_and_dirs(root: &FsPath, files: &[PathBuf]) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        std::fs::File::open(file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            dirs.insert(d.to_path_buf());
            if d == root {
                break;
            }
            dir = d.parent();
        }
    }
    for dir in dirs {
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = dir;
    }
    Ok(())
}

/// Whether a file name is a local multipart upload's staging file:
/// `<object>#<digits>`.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(object, digits)| {
        !object.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_names_without_secrets() {
        let s3 = Store::from_url("s3://bucket/some/prefix").unwrap();
        assert_eq!(s3.name(), "s3://bucket/some/prefix");
        assert_eq!(
            s3.path("manifests/1.json").as_ref(),
            "some/prefix/manifests/1.json"
        );
        let dbg = format!("{s3:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(Store::from_url("ftp://x").is_err());
        assert!(Store::from_url("file://relative").is_err());
        let tmp = tempfile::tempdir().unwrap();
        let local = Store::from_url(&format!("file://{}", tmp.path().display())).unwrap();
        assert!(local.local_dir().is_some());
        assert_eq!(local.path("a/b").as_ref(), "a/b");
    }

    /// An in-memory store that drops the put mode: every PUT overwrites.
    #[derive(Debug, Default)]
    struct IgnoresCreate(InMemory);

    impl fmt::Display for IgnoresCreate {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "IgnoresCreate")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for IgnoresCreate {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            _opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0
                .put_opts(location, payload, PutOptions::default())
                .await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    async fn objects(store: &Store) -> usize {
        use futures::TryStreamExt;
        let all: Vec<_> = store.object_store().list(None).try_collect().await.unwrap();
        all.len()
    }

    #[tokio::test]
    async fn probe_refuses_a_store_that_ignores_create_only_puts() {
        let store =
            Store::with_object_store("ignores-create://", Arc::new(IgnoresCreate::default()), "t");
        let err = store.probe_with(ProbeMode::Check).await.unwrap_err();
        println!("refused: {err}");
        assert!(matches!(err, StoreError::CreateOnlyIgnored { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("ignores create-only PUTs"), "{msg}");
        assert!(
            msg.contains(SKIP_PROBE_ENV),
            "the message names the override: {msg}"
        );
        assert!(
            msg.contains("t/_probe/"),
            "the message names the object: {msg}"
        );
        assert_eq!(objects(&store).await, 0, "the probe object is deleted");
        let skipped = store.probe_with(ProbeMode::Skip).await.unwrap();
        assert_eq!((skipped.mode, skipped.object), (ProbeMode::Skip, None));
    }

    #[tokio::test]
    async fn probe_accepts_memory_and_local_stores_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        for store in [Store::memory(), Store::local(tmp.path()).unwrap()] {
            let report = store.probe_with(ProbeMode::Check).await.unwrap();
            println!(
                "accepted: {} (probe object {:?})",
                report.store, report.object
            );
            assert_eq!(report.mode, ProbeMode::Check);
            assert!(report.object.unwrap().starts_with("_probe/"));
            assert_eq!(objects(&store).await, 0, "the probe object is deleted");
        }
    }

    #[tokio::test]
    async fn staging_files_stay_under_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("table");
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::write(root.join("top.parquet#1"), b"x").unwrap();
        std::fs::write(root.join("state/part.parquet#22"), b"x").unwrap();
        std::fs::write(tmp.path().join("outside#3"), b"x").unwrap();
        let store = Store::local(&root).unwrap();
        let found: Vec<String> = store
            .local_staging_files("")
            .await
            .unwrap()
            .into_iter()
            .map(|(rel, _)| rel)
            .collect();
        assert_eq!(found, ["state/part.parquet#22", "top.parquet#1"]);
        for escape in ["../outside#3", "/tmp/outside#3", "state/../../outside#3"] {
            let err = store.remove_local_staging_file(escape).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{escape}");
        }
        assert!(tmp.path().join("outside#3").exists());
        store
            .remove_local_staging_file("top.parquet#1")
            .await
            .unwrap();
        assert!(!root.join("top.parquet#1").exists());
    }
}
