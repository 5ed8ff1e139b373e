//! The local folder store.
//!
//! `object_store::LocalFileSystem` follows symbolic links out of its root and lists in no
//! particular order with a stat per file, so this store walks the tree itself: through directory
//! descriptors, never following a link (SPEC §6 invariant 6), reading file types from directory
//! entries and stating files only when asked. It needs Unix (`openat` and friends); the README
//! says so.

#[cfg(not(unix))]
compile_error!("the folder store walks with openat(2): build assetgc on Linux or macOS");

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    Capabilities, Gone, KeyError, ListOptions, ListStream, Listed, MoveOptions, Moved, Object,
    Store, StoreError, plain_only,
};
use crate::key::ResourceType;

mod unix;

use unix::{lookup, remove, rename, walk};

const PAGE: usize = 1000;

type Pages = mpsc::Sender<Result<Vec<Listed>, StoreError>>;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn plain(&self, resource_type: ResourceType) -> Result<(), StoreError> {
        plain_only(&self.describe(), resource_type)
    }

    /// Runs `work` on the root in a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|e| {
                StoreError::transient(format!("a folder task failed: {e}")).with_source(e)
            })?
    }
}

/// A walk yields no empty, `.` or `..` segment: only control characters can make a name
/// unusable as a key (SPEC §2).
fn has_control(key: &str) -> bool {
    key.bytes().any(|b| b < 0x20 || b == 0x7f)
        || (!key.is_ascii() && key.chars().any(char::is_control))
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_no_replace: true,
            ..Capabilities::plain(PAGE)
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(|root| {
            let unreachable = |message: String, e: std::io::Error| {
                StoreError::unreachable(message).with_source(e)
            };
            match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => std::fs::read_dir(root).map(|_| ()).map_err(|e| {
                    unreachable(format!("cannot read folder {}: {e}", root.display()), e)
                }),
                Ok(_) => Err(StoreError::unreachable(format!(
                    "{} is not a folder",
                    root.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unreachable(
                    format!("folder {} does not exist", root.display()),
                    e,
                )),
                Err(e) => Err(unreachable(
                    format!("cannot reach folder {}: {e}", root.display()),
                    e,
                )),
            }
        })
        .await
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        let (tx, rx) = mpsc::channel(4);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, &opts, &tx));
        super::pages(rx)
    }

    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        self.plain(resource_type)?;
        let keys = keys.to_vec();
        self.blocking(move |root| lookup(root, &keys)).await
    }

    async fn delete_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        let keys = keys.to_vec();
        self.blocking(move |root| remove(root, &keys)).await
    }

    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        self.plain(resource_type)?;
        let moves = moves.to_vec();
        self.blocking(move |root| rename(root, &moves, opts.replace))
            .await
    }
}
