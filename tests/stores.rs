//! Stores: the conformance suite on the folder store, and what only a folder can hold — symbolic
//! links, names that are not UTF-8, control characters in names — against SPEC §2 and SPEC §6
//! invariant 6 (the folder store never touches a path outside its root).

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use assetgc::store::local::LocalStore;
use assetgc::store::{ListOptions, Store, StoreError};
use common::conformance::{self, Listing, Seeder, list_all};
use common::write_file;

/// Seeds the folder store the way an application fills it: files under the root.
struct Files<'a> {
    root: &'a Path,
}

impl Seeder for Files<'_> {
    fn put(&self, key: &str, body: &[u8]) {
        write_file(self.root, key, body, SystemTime::now());
    }
}

#[tokio::test]
async fn folder_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path().to_path_buf());
    conformance::run(&store, &Files { root: dir.path() }).await;
}

/// A temporary folder holding the store's root and, beside it, files the store must never reach.
struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    write_file(&outside, "secret.jpg", b"secret", SystemTime::now());
    write_file(&outside, "dir/inner.jpg", b"inner", SystemTime::now());
    write_file(&root, "real.jpg", b"real", SystemTime::now());
    Layout {
        _dir: dir,
        root,
        outside,
    }
}

/// The path of a file named by raw bytes (a name that may not be UTF-8) below `dir`.
fn raw_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn write_raw(dir: &Path, name: &[u8]) -> PathBuf {
    let path = raw_path(dir, name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, b"x").expect("write a file with an odd name");
    path
}

async fn list_both_ways(store: &LocalStore) -> [Listing; 2] {
    let mut listings = Vec::new();
    for with_meta in [false, true] {
        listings.push(
            list_all(
                store,
                ListOptions {
                    with_meta,
                    exclude_prefixes: Vec::new(),
                },
            )
            .await,
        );
    }
    listings.try_into().expect("two listings")
}

fn sorted_keys(listing: &Listing) -> Vec<&str> {
    let mut keys = listing.keys();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_never_listed_or_looked_up() {
    let l = layout();
    write_file(&l.root, "sub/ok.jpg", b"ok", SystemTime::now());
    symlink(&l.outside, l.root.join("out-dir")).expect("link to a folder");
    symlink(l.outside.join("secret.jpg"), l.root.join("out-file.jpg")).expect("link to a file");
    symlink(&l.outside, l.root.join("sub/deeper")).expect("link to a folder, one level down");
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg", "sub/ok.jpg"],
            "objects of a root holding links out: {listing:?}"
        );
        assert!(
            listing.unrepresentable.is_empty(),
            "a link is skipped, not unrepresentable: {listing:?}"
        );
    }

    let keys: Vec<String> = [
        "out-dir/secret.jpg",
        "out-dir/dir/inner.jpg",
        "out-file.jpg",
        "sub/deeper/secret.jpg",
        "sub/deeper/dir/inner.jpg",
        "real.jpg",
    ]
    .map(String::from)
    .into();
    let answers = store.head_many(&keys).await.expect("head_many");
    let found: Vec<&str> = keys
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(found, ["real.jpg"], "look-ups through links: {answers:?}");
}

#[tokio::test]
async fn head_many_never_leaves_the_root() {
    let l = layout();
    write_file(&l.root, "sub/inside.jpg", b"inside", SystemTime::now());
    let store = LocalStore::new(l.root.clone());
    let absolute = l.outside.join("secret.jpg");
    let keys: Vec<String> = vec![
        "../outside/secret.jpg".into(),
        "sub/../../outside/secret.jpg".into(),
        absolute.to_str().expect("UTF-8 temp path").into(),
        "sub/../real.jpg".into(),
        "./real.jpg".into(),
        "sub//inside.jpg".into(),
    ];
    let answers = store.head_many(&keys).await.expect("head_many");
    assert_eq!(answers.len(), keys.len());
    for (key, answer) in keys.iter().zip(&answers) {
        assert!(
            answer.is_none(),
            "{key:?} is not a representable key, yet a look-up found {answer:?}"
        );
    }
}

#[tokio::test]
async fn names_that_are_not_utf8_are_unrepresentable_never_objects() {
    let l = layout();
    write_raw(&l.root, b"bad\xff.jpg");
    write_raw(&l.root, b"sub/odd\xfe.png");
    write_raw(&l.root, b"dir\xfd/inner.jpg");
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg"],
            "objects of a root holding names that are not UTF-8: {listing:?}"
        );
        // Each name is reported (the folder alone may stand for the file inside it).
        for part in ["bad", "odd", "dir"] {
            assert!(
                listing.unrepresentable.iter().any(|n| n.contains(part)),
                "no unrepresentable entry names `{part}…`: {listing:?}"
            );
        }
    }

    // The lossy renderings are not keys of anything either.
    let keys: Vec<String> = [
        "bad\u{fffd}.jpg",
        "sub/odd\u{fffd}.png",
        "dir\u{fffd}/inner.jpg",
    ]
    .map(String::from)
    .into();
    let answers = store.head_many(&keys).await.expect("head_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
}

#[tokio::test]
async fn names_with_control_characters_are_unrepresentable() {
    let l = layout();
    let names = [
        "line\nbreak.jpg",
        "tab\there.jpg",
        "sub/cr\r.jpg",
        "del\u{7f}.jpg",
        "nel\u{85}.jpg",
    ];
    for name in names {
        write_raw(&l.root, name.as_bytes());
    }
    let store = LocalStore::new(l.root.clone());

    for listing in list_both_ways(&store).await {
        assert_eq!(
            sorted_keys(&listing),
            ["real.jpg"],
            "objects of a root holding names with control characters: {listing:?}"
        );
        assert_eq!(
            listing.unrepresentable.len(),
            names.len(),
            "one unrepresentable entry per name: {listing:?}"
        );
    }

    // The files exist under exactly these names; the keys are still never looked up.
    let keys: Vec<String> = names.map(String::from).into();
    let answers = store.head_many(&keys).await.expect("head_many");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
}

#[tokio::test]
async fn a_missing_root_fails_check_and_listing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::new(dir.path().join("missing"));
    match store.check().await {
        Err(StoreError::Unreachable(_)) => {}
        other => panic!("check() of a missing root: {other:?}"),
    }

    // Listing it is an error, never an empty store: every reference would read as missing.
    let mut pages = store.list(ListOptions::default());
    let mut failed = false;
    while let Some(page) = futures::StreamExt::next(&mut pages).await {
        match page {
            Err(_) => failed = true,
            Ok(items) => assert!(items.is_empty(), "a missing root listed {items:?}"),
        }
    }
    assert!(failed, "listing a missing root ended without an error");
}

#[tokio::test]
async fn a_root_that_is_a_file_fails_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_file(dir.path(), "not-a-folder", b"x", SystemTime::now());
    let store = LocalStore::new(file);
    match store.check().await {
        Err(StoreError::Unreachable(_)) => {}
        other => panic!("check() of a root that is a file: {other:?}"),
    }
}
