//! The folder store's walk, look-ups and deletes on Unix, through directory descriptors.
//!
//! Every folder is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, and every file
//! is stat'ed (and removed) relative to its folder without following links. So a link — even one
//! swapped in while a scan runs — can never lead a listing, a look-up or a delete out of the root
//! (SPEC §6 invariant 6), and the kernel resolves one name per call instead of a whole path: at a million files a
//! windowed scan, which stats every file, spent a sixth of its time resolving paths.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat, openat, statat, unlinkat};
use rustix::io::Errno;

use super::{PAGE, Pages, has_control};
use crate::key::is_representable;
use crate::store::{
    Gone, KeyError, KeyFailure, ListOptions, Listed, Moved, Object, StoreError, unusable,
};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What a failed system call means for the key it was about: permission refused, a read-only
/// filesystem or a name too long fail the same way next time; anything else (a folder where a
/// file should be, an I/O error) may pass later.
fn kind_of(e: Errno) -> KeyFailure {
    match e {
        Errno::ACCESS | Errno::PERM | Errno::ROFS | Errno::NAMETOOLONG => KeyFailure::Permanent,
        _ => KeyFailure::Transient,
    }
}

fn key_error(e: Errno, message: String) -> KeyError {
    KeyError {
        kind: kind_of(e),
        message,
    }
}

/// A call that failed on `e`, the way [`kind_of`] reads it.
fn call_error(e: Errno, message: String) -> StoreError {
    let err = std::io::Error::from_raw_os_error(e.raw_os_error());
    match kind_of(e) {
        KeyFailure::Permanent => StoreError::permanent(message),
        _ => StoreError::transient(message),
    }
    .with_source(err)
}

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
    Object::plain(key, u64::try_from(st.st_size).ok(), modified(st))
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
            call_error(
                e,
                format!("cannot read `{}`: {e}", prefix.trim_end_matches('/')),
            )
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
                FileType::RegularFile => Listed::Object(Object::plain(key, None, None)),
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
                    let err = call_error(
                        e,
                        format!("cannot read `{}`: {e}", t.prefix.trim_end_matches('/')),
                    );
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
            let _ = tx.blocking_send(Err(call_error(
                e,
                format!("cannot read {}: {e}", root.display()),
            )));
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

/// What a folder on the way to a key turned out to be.
enum Folder {
    Open(OwnedFd),
    /// Missing, or a file where a folder would be: nothing below it exists.
    Absent,
    /// A symbolic link: never followed, so nothing below it is this store's.
    Link,
    Failed(Errno),
}

/// Where a key's file would be: its folder, or why there is none.
enum Parent<'a, 'k> {
    Dir(BorrowedFd<'a>),
    Absent,
    /// The folder key that is a link.
    Link(&'k str),
    Failed(&'k str, Errno),
}

/// The folders open on the way to one key, opened relative to the root with `O_NOFOLLOW`, and
/// kept for the next key while its path shares them. Keys taken in sorted order share every
/// folder they can (keys below one folder sort together), so a call opens each folder once and
/// holds at most the depth of the tree in descriptors, however many keys it is given.
struct Chain<'k> {
    root: OwnedFd,
    /// Each entry's folder is the parent of the next one's.
    open: Vec<(&'k str, Folder)>,
}

impl<'k> Chain<'k> {
    fn new(root: &Path) -> Result<Chain<'k>, StoreError> {
        let root = open_root(root).map_err(|e| unreachable_root(root, e))?;
        Ok(Chain {
            root,
            open: Vec::new(),
        })
    }

    /// The folder `key`'s last segment lives in, and that segment.
    fn parent(&mut self, key: &'k str) -> (Parent<'_, 'k>, &'k str) {
        let ends: Vec<usize> = key.match_indices('/').map(|(i, _)| i).collect();
        let name = &key[ends.last().map_or(0, |i| i + 1)..];
        let kept = self
            .open
            .iter()
            .zip(&ends)
            .take_while(|((dir, _), end)| *dir == &key[..**end])
            .count();
        self.open.truncate(kept);
        for &end in &ends[kept..] {
            let base = match self.open.last() {
                None => self.root.as_fd(),
                Some((_, Folder::Open(fd))) => fd.as_fd(),
                Some(_) => break,
            };
            let segment = &key[key[..end].rfind('/').map_or(0, |i| i + 1)..end];
            let folder = match openat(base, segment, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Folder::Open(fd),
                Err(Errno::NOENT | Errno::NAMETOOLONG) => Folder::Absent,
                // With `O_NOFOLLOW | O_DIRECTORY` a link fails with ELOOP (Linux) or ENOTDIR,
                // as does a file: only a stat of the name itself tells them apart.
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    match statat(base, segment, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            Folder::Link
                        }
                        _ => Folder::Absent,
                    }
                }
                Err(e) => Folder::Failed(e),
            };
            self.open.push((&key[..end], folder));
        }
        let parent = match self.open.last() {
            None => Parent::Dir(self.root.as_fd()),
            Some((_, Folder::Open(fd))) => Parent::Dir(fd.as_fd()),
            Some((_, Folder::Absent)) => Parent::Absent,
            Some((dir, Folder::Link)) => Parent::Link(dir),
            Some((dir, Folder::Failed(e))) => Parent::Failed(dir, *e),
        };
        (parent, name)
    }
}

fn unreachable_root(root: &Path, e: Errno) -> StoreError {
    StoreError::unreachable(format!("cannot read {}: {e}", root.display()))
        .with_source(std::io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Indices of `keys` in the order of their keys, so that a [`Chain`] shares folders.
fn sorted_order(keys: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|&i| keys[i].as_str());
    order
}

fn is_absent(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG)
}

/// Point look-ups that open each folder on the way with `O_NOFOLLOW` (once per call) and stat the
/// file without following it. Absent keys and keys behind a link are `None`; any other failure
/// fails the call, since "cannot tell" must never read as "missing".
pub(super) fn lookup(root: &Path, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError> {
    let fail = |key: &str, e: Errno| call_error(e, format!("cannot look up `{key}`: {e}"));
    // A root that cannot be opened fails the look-ups, as it always did, without calling the
    // store out of reach: only `check` and deletes decide that.
    let mut chain = Chain::new(root).map_err(|e| StoreError::transient(e.to_string()))?;
    let mut out = vec![None; keys.len()];
    for i in sorted_order(keys) {
        let key = keys[i].as_str();
        if !is_representable(key) {
            continue;
        }
        let (base, name) = match chain.parent(key) {
            (Parent::Dir(fd), name) => (fd, name),
            (Parent::Absent | Parent::Link(_), _) => continue,
            (Parent::Failed(_, e), _) => return Err(fail(key, e)),
        };
        match statat(base, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                out[i] = Some(object(key.to_owned(), &st));
            }
            Ok(_) => {}
            Err(e) if is_absent(e) || e == Errno::LOOP => {}
            Err(e) => return Err(fail(key, e)),
        }
    }
    Ok(out)
}

/// Removes the regular files `keys` name, each through its folder's descriptor (never a path),
/// one outcome per key. A key already absent is removed; a link, a folder or a key behind a link
/// is refused and left alone; folders are never removed. Only a root that cannot be opened fails
/// the call.
pub(super) fn remove(
    root: &Path,
    keys: &[String],
) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
    let mut chain = Chain::new(root)?;
    let mut out: Vec<Result<Gone, KeyError>> = vec![Ok(Gone::AlreadyGone); keys.len()];
    for i in sorted_order(keys) {
        let key = keys[i].as_str();
        if let Some(refused) = unusable(key) {
            out[i] = Err(refused);
            continue;
        }
        let (base, name) = match chain.parent(key) {
            (Parent::Dir(fd), name) => (fd, name),
            (Parent::Absent, _) => continue,
            (Parent::Link(dir), _) => {
                out[i] = Err(KeyError::transient(format!(
                    "`{key}` is behind a symbolic link (`{dir}`), which is never followed"
                )));
                continue;
            }
            (Parent::Failed(dir, e), _) => {
                out[i] = Err(key_error(e, format!("cannot open folder `{dir}`: {e}")));
                continue;
            }
        };
        out[i] = match statat(base, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                // Should the file be swapped for a link or a folder after the stat, unlinkat
                // removes the link itself (a name inside the root) or refuses the folder: it
                // never reaches outside the root or removes a folder.
                FileType::RegularFile => match unlinkat(base, name, AtFlags::empty()) {
                    Ok(()) => Ok(Gone::Deleted),
                    Err(e) if is_absent(e) => Ok(Gone::AlreadyGone),
                    Err(e) => Err(key_error(e, format!("cannot remove `{key}`: {e}"))),
                },
                // A link or a folder at the key is refused now; someone may put the file back,
                // so the queue tries again later.
                FileType::Symlink => Err(KeyError::transient(format!(
                    "`{key}` is a symbolic link, which is never followed or removed"
                ))),
                FileType::Directory => Err(KeyError::transient(format!(
                    "`{key}` is a folder, not a file"
                ))),
                _ => Err(KeyError::transient(format!(
                    "`{key}` is not a regular file"
                ))),
            },
            Err(e) if is_absent(e) => Ok(Gone::AlreadyGone),
            Err(e) => Err(key_error(e, format!("cannot stat `{key}`: {e}"))),
        };
    }
    Ok(out)
}

/// Opens folder `dir` (a key prefix without trailing `/`, "" for the root) below the root, one
/// segment at a time with `O_NOFOLLOW`, creating missing segments when `create`. `Ok(None)` when
/// a segment is absent and not created.
fn open_dir(root: BorrowedFd<'_>, dir: &str, create: bool) -> Result<Option<OwnedFd>, KeyError> {
    let mut fd =
        rustix::io::dup(root).map_err(|e| key_error(e, format!("cannot open the root: {e}")))?;
    if dir.is_empty() {
        return Ok(Some(fd));
    }
    for segment in dir.split('/') {
        let next = match openat(&fd, segment, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&fd, segment, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(key_error(e, format!("cannot create folder `{dir}`: {e}")));
                    }
                }
                openat(&fd, segment, DIR_FLAGS, Mode::empty())
                    .map_err(|e| key_error(e, format!("cannot open folder `{dir}`: {e}")))?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(KeyError::transient(format!(
                    "`{dir}` is behind a symbolic link or a file (`{segment}`), which is never followed"
                )));
            }
            Err(e) => return Err(key_error(e, format!("cannot open folder `{dir}`: {e}"))),
        };
        fd = next;
    }
    Ok(Some(fd))
}

fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// Renames within the root (quarantine and restore): both names are reached through folders
/// opened with `O_NOFOLLOW`, the source must be a regular file, and the destination's folders
/// are created inside the root as needed. `renameat` replaces a file at the destination; without
/// `replace`, `RENAME_NOREPLACE` refuses one atomically.
/// A rename that never replaces: `renameat2(RENAME_NOREPLACE)`, or where the file system or the
/// kernel does not offer it (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`), a hard link (which fails with
/// `EEXIST` on an existing name) then the removal of the old name. Both stay within the
/// directories opened under the root.
fn rename_noreplace(
    src: &OwnedFd,
    from_name: &str,
    dst: &OwnedFd,
    to_name: &str,
) -> Result<(), Errno> {
    match rustix::fs::renameat_with(
        src,
        from_name,
        dst,
        to_name,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
            link_then_unlink(src, from_name, dst, to_name)
        }
        other => other,
    }
}

fn link_then_unlink(
    src: &OwnedFd,
    from_name: &str,
    dst: &OwnedFd,
    to_name: &str,
) -> Result<(), Errno> {
    rustix::fs::linkat(src, from_name, dst, to_name, AtFlags::empty())?;
    unlinkat(src, from_name, AtFlags::empty())
}

pub(super) fn rename(
    root: &Path,
    moves: &[(String, String)],
    replace: bool,
) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
    let root_fd = open_root(root).map_err(|e| unreachable_root(root, e))?;
    let one = |from: &str, to: &str| -> Result<Moved, KeyError> {
        if let Some(refused) = unusable(from).or_else(|| unusable(to)) {
            return Err(refused);
        }
        let (from_dir, from_name) = split_key(from);
        let (to_dir, to_name) = split_key(to);
        let Some(src) = open_dir(root_fd.as_fd(), from_dir, false)? else {
            return Ok(Moved::SourceGone);
        };
        match statat(&src, from_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {}
                FileType::Symlink => {
                    return Err(KeyError::transient(format!(
                        "`{from}` is a symbolic link, which is never followed or moved"
                    )));
                }
                _ => {
                    return Err(KeyError::transient(format!(
                        "`{from}` is not a regular file"
                    )));
                }
            },
            Err(e) if is_absent(e) => return Ok(Moved::SourceGone),
            Err(e) => return Err(key_error(e, format!("cannot stat `{from}`: {e}"))),
        }
        let dst = open_dir(root_fd.as_fd(), to_dir, true)?
            .ok_or_else(|| KeyError::transient(format!("cannot create folder `{to_dir}`")))?;
        let renamed = if replace {
            rustix::fs::renameat(&src, from_name, &dst, to_name)
        } else {
            rename_noreplace(&src, from_name, &dst, to_name)
        };
        match renamed {
            Ok(()) => Ok(Moved::Moved),
            Err(Errno::EXIST) if !replace => Err(KeyError::already_exists(format!(
                "`{to}` exists; it is not replaced"
            ))),
            // ENAMETOOLONG here is the destination's name: the source was just found.
            Err(e) if is_absent(e) && e != Errno::NAMETOOLONG => Ok(Moved::SourceGone),
            Err(e) => Err(key_error(e, format!("cannot move `{from}` to `{to}`: {e}"))),
        }
    };
    Ok(moves.iter().map(|(from, to)| one(from, to)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for file systems without `RENAME_NOREPLACE` refuses an existing name and
    /// leaves both files as they were; onto a free name it moves.
    #[test]
    fn link_then_unlink_never_replaces() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a"), b"aaa").unwrap();
        std::fs::write(dir.path().join("b"), b"bb").unwrap();
        let fd = openat(CWD, dir.path(), DIR_FLAGS, Mode::empty()).expect("open");
        assert_eq!(link_then_unlink(&fd, "a", &fd, "b"), Err(Errno::EXIST));
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"aaa");
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"bb");
        assert_eq!(link_then_unlink(&fd, "a", &fd, "c"), Ok(()));
        assert!(!dir.path().join("a").exists());
        assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"aaa");
    }
}
