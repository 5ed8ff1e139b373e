//! The local folder store.
//!
//! `object_store::LocalFileSystem` follows symbolic links out of its root and lists in no
//! particular order with a stat per file, so this store walks the tree itself (walkdir, which
//! reads file types from the directory entries and stats nothing unless asked) and never follows
//! a link: SPEC §6 invariant 6.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use walkdir::WalkDir;

use super::{ListOptions, ListStream, Listed, Object, Store, StoreError};
use crate::key::is_representable;

const PAGE: usize = 1000;

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

fn modified(meta: &std::fs::Metadata) -> Option<DateTime<Utc>> {
    meta.modified().ok().map(DateTime::<Utc>::from)
}

fn object(key: String, meta: &std::fs::Metadata) -> Object {
    Object {
        key,
        size: Some(meta.len()),
        modified: modified(meta),
    }
}

/// Walks `root` and sends pages of entries; stops when the receiver is gone.
fn walk(root: &Path, opts: &ListOptions, tx: &mpsc::Sender<Result<Vec<Listed>, StoreError>>) {
    let excluded_dir = |rel: &str| {
        opts.exclude_prefixes.iter().any(|p| {
            let p = p.trim_end_matches('/');
            rel == p || rel.starts_with(p) && rel.as_bytes().get(p.len()) == Some(&b'/')
        })
    };
    let excluded_file = |key: &str| {
        opts.exclude_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    };
    let walker = WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            if !e.file_type().is_dir() || opts.exclude_prefixes.is_empty() {
                return true;
            }
            match e.path().strip_prefix(root).ok().and_then(Path::to_str) {
                Some(rel) => !excluded_dir(rel),
                None => true,
            }
        });
    let mut page = Vec::with_capacity(PAGE);
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let at = e
                    .path()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let cause = e
                    .io_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                if !page.is_empty() && tx.blocking_send(Ok(std::mem::take(&mut page))).is_err() {
                    return;
                }
                if tx
                    .blocking_send(Err(StoreError::Failed(format!(
                        "cannot read `{at}`: {cause}"
                    ))))
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let rel = relative(entry.path(), root);
        let item = match rel.to_str() {
            None => Listed::Unrepresentable(rel.to_string_lossy().into_owned()),
            Some(key) if ft.is_symlink() => {
                Listed::Skipped(format!("symbolic link `{key}` is never followed"))
            }
            Some(_) if !ft.is_file() => continue,
            // A walk yields no empty, `.` or `..` segment: only control characters can make a
            // name unusable as a key.
            Some(key) if has_control(key) => {
                Listed::Unrepresentable(key.escape_debug().to_string())
            }
            Some(key) if excluded_file(key) => continue,
            Some(key) => {
                if opts.with_meta {
                    match entry.metadata() {
                        Ok(meta) => Listed::Object(object(key.to_string(), &meta)),
                        // Gone between the directory read and the stat: not an object any more.
                        Err(_) => continue,
                    }
                } else {
                    Listed::Object(Object {
                        key: key.to_string(),
                        size: None,
                        modified: None,
                    })
                }
            }
        };
        page.push(item);
        if page.len() == PAGE
            && tx
                .blocking_send(Ok(std::mem::replace(&mut page, Vec::with_capacity(PAGE))))
                .is_err()
        {
            return;
        }
    }
    if !page.is_empty() {
        let _ = tx.blocking_send(Ok(page));
    }
}

fn has_control(key: &str) -> bool {
    key.bytes().any(|b| b < 0x20 || b == 0x7f)
        || (!key.is_ascii() && key.chars().any(char::is_control))
}

/// The part of a walked path below the root. Walk paths are `root.join(…)`, so on Unix this is a
/// byte slice, not a component-by-component comparison (measurable at a million files).
#[cfg(unix)]
fn relative<'a>(path: &'a Path, root: &Path) -> &'a Path {
    use std::os::unix::ffi::OsStrExt;
    let root = root.as_os_str().as_bytes();
    let skip = root.len() + usize::from(!root.ends_with(b"/"));
    match path.as_os_str().as_bytes().get(skip..) {
        Some(rest) if path.as_os_str().as_bytes().starts_with(root) => {
            Path::new(std::ffi::OsStr::from_bytes(rest))
        }
        _ => path.strip_prefix(root_path(root)).unwrap_or(path),
    }
}

#[cfg(unix)]
fn root_path(root: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(root))
}

#[cfg(not(unix))]
fn relative<'a>(path: &'a Path, root: &Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

/// Looks keys up without ever leaving the root: every folder on the way must be a real folder
/// (not a link), checked once per folder and call.
fn lookup(root: &Path, keys: &[String]) -> Vec<Option<Object>> {
    let mut good_dirs: HashSet<&str> = HashSet::new();
    keys.iter()
        .map(|key| {
            if !is_representable(key) {
                return None;
            }
            let mut end = 0;
            while let Some(pos) = key[end..].find('/') {
                let dir = &key[..end + pos];
                if !good_dirs.contains(dir) {
                    match std::fs::symlink_metadata(root.join(dir)) {
                        Ok(m) if m.file_type().is_dir() => {
                            good_dirs.insert(dir);
                        }
                        _ => return None,
                    }
                }
                end += pos + 1;
            }
            match std::fs::symlink_metadata(root.join(key)) {
                Ok(m) if m.file_type().is_file() => Some(object(key.clone(), &m)),
                _ => None,
            }
        })
        .collect()
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
            .map_err(|e| StoreError::Failed(e.to_string()))
    }
}
