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

use super::{ListOptions, ListStream, Listed, Object, Store, StoreError};

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

    async fn check(&self) -> Result<(), StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => std::fs::read_dir(&root).map(|_| ()).map_err(|e| {
                StoreError::Unreachable(format!("cannot read folder {}: {e}", root.display()))
            }),
            Ok(_) => Err(StoreError::Unreachable(format!(
                "{} is not a folder",
                root.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Unreachable(
                format!("folder {} does not exist", root.display()),
            )),
            Err(e) => Err(StoreError::Unreachable(format!(
                "cannot reach folder {}: {e}",
                root.display()
            ))),
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        let (tx, rx) = mpsc::channel(4);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk(&root, &opts, &tx));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn head_many(&self, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError> {
        let root = self.root.clone();
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || lookup(&root, &keys))
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    async fn delete_many(&self, keys: &[String]) -> Result<Vec<Result<(), String>>, StoreError> {
        Ok(self
            .delete_many_gone(crate::key::ResourceType::Plain, keys)
            .await?
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    async fn delete_many_gone(
        &self,
        resource_type: crate::key::ResourceType,
        keys: &[String],
    ) -> Result<Vec<super::GoneResult>, StoreError> {
        if resource_type != crate::key::ResourceType::Plain {
            return Err(super::no_such_type(self, resource_type));
        }
        let root = self.root.clone();
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(move || remove(&root, &keys))
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    async fn move_many(
        &self,
        moves: &[(String, String)],
    ) -> Result<Vec<super::MoveResult>, StoreError> {
        let root = self.root.clone();
        let moves = moves.to_vec();
        tokio::task::spawn_blocking(move || rename(&root, &moves, true))
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    async fn move_many_no_replace_of(
        &self,
        resource_type: crate::key::ResourceType,
        moves: &[(String, String)],
    ) -> Result<Vec<super::MoveResult>, StoreError> {
        if resource_type != crate::key::ResourceType::Plain {
            return Err(super::no_such_type(self, resource_type));
        }
        let root = self.root.clone();
        let moves = moves.to_vec();
        tokio::task::spawn_blocking(move || rename(&root, &moves, false))
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
    }
}
