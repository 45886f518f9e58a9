//! Object stores by URL: `file://`, `memory://`, `s3://`, `gs://`, `az://`,
//! or a plain local directory. Credentials and endpoints come from the
//! environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) through `object_store`'s
//! builders; they never appear in a name, an error or `{:?}`.
//!
//! `object_store`'s local file system does not fsync; [`Store::make_durable`]
//! does, for a local store, before the WAL segments a checkpoint replaces are
//! removed.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

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
}
