//! The folder store's walk and look-ups on Unix, through directory descriptors.
//!
//! Every folder is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, and every file
//! is stat'ed relative to its folder without following links. So a link — even one swapped in
//! while a scan runs — can never lead a listing or a look-up out of the root (SPEC §6 invariant
//! 6), and the kernel resolves one name per call instead of a whole path: at a million files a
//! windowed scan, which stats every file, spent a sixth of its time resolving paths.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat, openat, statat};
use rustix::io::Errno;

use super::{PAGE, Pages, has_control};
use crate::key::is_representable;
use crate::store::{ListOptions, Listed, Object, StoreError};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_root(root: &Path) -> Result<OwnedFd, Errno> {
    // The configured root itself may be a link; everything below it is opened without following.
    openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn modified(st: &Stat) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    DateTime::from_timestamp(st.st_mtime, nanos)
}

fn object(key: String, st: &Stat) -> Object {
    Object {
        key,
        size: u64::try_from(st.st_size).ok(),
        modified: modified(st),
    }
}

/// A folder waiting to be read: its parent stays open until every child has been opened, so open
/// descriptors are bounded by the depth of the tree, not its breadth.
struct Todo {
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    /// The folder's key prefix, with its trailing `/`.
    prefix: String,
}

struct Walker<'a> {
    opts: &'a ListOptions,
    tx: &'a Pages,
    page: Vec<Listed>,
}

impl Walker<'_> {
    /// Sends what is gathered, then `err` if any; false when the receiver is gone.
    fn send(&mut self, err: Option<StoreError>) -> bool {
        if !self.page.is_empty()
            && self
                .tx
                .blocking_send(Ok(std::mem::replace(
                    &mut self.page,
                    Vec::with_capacity(PAGE),
                )))
                .is_err()
        {
            return false;
        }
        err.is_none_or(|e| self.tx.blocking_send(Err(e)).is_ok())
    }

    fn push(&mut self, item: Listed) -> bool {
        self.page.push(item);
        self.page.len() < PAGE || self.send(None)
    }

    fn excluded_dir(&self, key: &str) -> bool {
        self.opts.exclude_prefixes.iter().any(|p| {
            let p = p.trim_end_matches('/');
            key == p || key.starts_with(p) && key.as_bytes().get(p.len()) == Some(&b'/')
        })
    }

    fn excluded_file(&self, key: &str) -> bool {
        self.opts
            .exclude_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }

    /// Reads one folder: files become entries, sub-folders go on `todo`. False when the
    /// receiver is gone.
    fn read(&mut self, fd: &Arc<OwnedFd>, prefix: &str, todo: &mut Vec<Todo>) -> bool {
        let failed = |e: Errno| {
            StoreError::Failed(format!(
                "cannot read `{}`: {e}",
                prefix.trim_end_matches('/')
            ))
        };
        let mut dir = match Dir::read_from(fd.as_fd()) {
            Ok(d) => d,
            Err(e) => return self.send(Some(failed(e))),
        };
        while let Some(entry) = dir.read() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return self.send(Some(failed(e))),
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                // Some filesystems leave the type out of directory entries.
                ft = match statat(fd.as_fd(), entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                };
            }
            let Ok(name_str) = std::str::from_utf8(name) else {
                let lossy = format!("{prefix}{}", String::from_utf8_lossy(name));
                let item = if ft == FileType::Directory {
                    Listed::Unrepresentable(format!(
                        "{lossy}/ (a folder: nothing below it is listed)"
                    ))
                } else {
                    Listed::Unrepresentable(lossy)
                };
                if !self.push(item) {
                    return false;
                }
                continue;
            };
            let key = format!("{prefix}{name_str}");
            let item = match ft {
                FileType::Directory => {
                    if !self.excluded_dir(&key) {
                        todo.push(Todo {
                            parent: fd.clone(),
                            name: name.to_vec(),
                            prefix: key + "/",
                        });
                    }
                    continue;
                }
                FileType::Symlink => {
                    Listed::Skipped(format!("symbolic link `{key}` is never followed"))
                }
                FileType::RegularFile if has_control(&key) => {
                    Listed::Unrepresentable(key.escape_debug().to_string())
                }
                FileType::RegularFile if self.excluded_file(&key) => continue,
                FileType::RegularFile if self.opts.with_meta => {
                    match statat(fd.as_fd(), entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                            Listed::Object(object(key, &st))
                        }
                        // Gone or replaced between the directory read and the stat.
                        _ => continue,
                    }
                }
                FileType::RegularFile => Listed::Object(Object {
                    key,
                    size: None,
                    modified: None,
                }),
                _ => continue,
            };
            if !self.push(item) {
                return false;
            }
        }
        true
    }

    /// Reads folders until `todo` is empty, depth first.
    fn drain(&mut self, mut todo: Vec<Todo>) -> bool {
        while let Some(t) = todo.pop() {
            let Ok(name) = std::ffi::CString::new(t.name) else {
                continue;
            };
            let fd = match openat(t.parent.as_fd(), name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Arc::new(fd),
                Err(e) => {
                    let err = StoreError::Failed(format!(
                        "cannot read `{}`: {e}",
                        t.prefix.trim_end_matches('/')
                    ));
                    if !self.send(Some(err)) {
                        return false;
                    }
                    continue;
                }
            };
            drop(t.parent);
            if !self.read(&fd, &t.prefix, &mut todo) {
                return false;
            }
        }
        true
    }
}

/// Walks the root: its own entries here, its folders shared out among a few threads (directory
/// reads and stats are system calls that run in parallel).
pub(super) fn walk(root: &Path, opts: &ListOptions, tx: &Pages) {
    let root_fd = match open_root(root) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            let _ = tx.blocking_send(Err(StoreError::Failed(format!(
                "cannot read {}: {e}",
                root.display()
            ))));
            return;
        }
    };
    let mut top = Walker {
        opts,
        tx,
        page: Vec::with_capacity(PAGE),
    };
    let mut folders = Vec::new();
    if !top.read(&root_fd, "", &mut folders) || !top.send(None) {
        return;
    }
    drop(root_fd);
    let threads = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, 4)
        .min(folders.len().max(1));
    let mut shares: Vec<Vec<Todo>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, t) in folders.into_iter().enumerate() {
        shares[i % threads].push(t);
    }
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || {
                let mut w = Walker {
                    opts,
                    tx,
                    page: Vec::with_capacity(PAGE),
                };
                if w.drain(share) {
                    w.send(None);
                }
            });
        }
    });
}

/// Point look-ups that open each folder on the way with `O_NOFOLLOW` (once per call) and stat the
/// file without following it. Absent keys and keys behind a link are `None`; any other failure
/// fails the call, since "cannot tell" must never read as "missing".
pub(super) fn lookup(root: &Path, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError> {
    let fail = |key: &str, e: Errno| StoreError::Failed(format!("cannot look up `{key}`: {e}"));
    let absent = |e: Errno| {
        matches!(
            e,
            Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NAMETOOLONG
        )
    };
    let root_fd = open_root(root)
        .map_err(|e| StoreError::Failed(format!("cannot read {}: {e}", root.display())))?;
    // Folder key → its descriptor, or None when it does not exist (or is a link).
    let mut dirs: HashMap<&str, Option<OwnedFd>> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    'keys: for key in keys {
        if !is_representable(key) {
            out.push(None);
            continue;
        }
        let mut parent: Option<&str> = None;
        let mut start = 0;
        while let Some(pos) = key[start..].find('/') {
            let dir = &key[..start + pos];
            if !dirs.contains_key(dir) {
                let base = match parent {
                    None => Some(root_fd.as_fd()),
                    Some(p) => dirs.get(p).and_then(|fd| fd.as_ref().map(AsFd::as_fd)),
                };
                let opened = match base {
                    None => None,
                    Some(base) => {
                        match openat(base, &key[start..start + pos], DIR_FLAGS, Mode::empty()) {
                            Ok(fd) => Some(fd),
                            Err(e) if absent(e) => None,
                            Err(e) => return Err(fail(key, e)),
                        }
                    }
                };
                dirs.insert(dir, opened);
            }
            if dirs.get(dir).is_none_or(Option::is_none) {
                out.push(None);
                continue 'keys;
            }
            parent = Some(dir);
            start += pos + 1;
        }
        let base = match parent {
            None => root_fd.as_fd(),
            Some(p) => match dirs.get(p).and_then(Option::as_ref) {
                Some(fd) => fd.as_fd(),
                None => {
                    out.push(None);
                    continue;
                }
            },
        };
        match statat(base, &key[start..], AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                out.push(Some(object(key.clone(), &st)));
            }
            Ok(_) => out.push(None),
            Err(e) if absent(e) => out.push(None),
            Err(e) => return Err(fail(key, e)),
        }
    }
    Ok(out)
}
