//! The store conformance suite (STYLE habit 2): one list of checks that every backend passes, the
//! folder store on a temporary folder and each cloud store against a real server.
//!
//! [`run`] needs an empty store. It fills the store through the backend's [`Seeder`] (files under
//! the root, objects put through the API) and then expects the listing to hold exactly what it
//! put there: a key listed twice, lost, or changed on the way is a failure, and so is one that
//! was never put.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use assetgc::key::{ResourceType, is_representable};
use assetgc::store::{
    Gone, KeyError, KeyFailure, ListOptions, Listed, MoveOptions, Moved, Object, Store, StoreError,
};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;

/// Puts one object into the store under test, the way the backend's own users would.
pub trait Seeder {
    fn put(&self, key: &str, body: &[u8]);
}

/// The backend under test, and what the suite needs to know of it.
pub struct Backend<'a> {
    pub store: &'a dyn Store,
    pub seed: &'a dyn Seeder,
    /// The resource type of every typed call: `Plain`, or `Image` on Cloudinary.
    pub resource_type: ResourceType,
    /// Characters the backend's names cannot hold by its own naming rules. Every key of the suite
    /// with one is left out of every check (those keys exactly, nothing else); the backend's
    /// own test says why.
    pub cannot_hold: &'a [char],
    /// Whether a delete tells a key that was not there ([`Gone::AlreadyGone`]) from one it
    /// deleted; S3 cannot (DeleteObjects answers "deleted" for both).
    pub tells_already_gone: bool,
}

impl<'a> Backend<'a> {
    /// A store of plain keys that can hold every key of the suite.
    pub fn plain(store: &'a dyn Store, seed: &'a dyn Seeder) -> Self {
        Backend {
            store,
            seed,
            resource_type: ResourceType::Plain,
            cannot_hold: &[],
            tells_already_gone: false,
        }
    }

    fn holds(&self, key: &str) -> bool {
        !key.contains(self.cannot_hold)
    }

    /// `keys` without those the backend cannot hold.
    fn held<'k>(&self, keys: impl IntoIterator<Item = &'k &'k str>) -> Vec<&'k str> {
        keys.into_iter()
            .copied()
            .filter(|k| self.holds(k))
            .collect()
    }

    async fn lookup(&self, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError> {
        self.store.lookup_many(self.resource_type, keys).await
    }

    async fn delete(&self, keys: &[String]) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        self.store.delete_many(self.resource_type, keys).await
    }

    async fn moves(
        &self,
        moves: &[(String, String)],
        replace: bool,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        self.store
            .move_many(self.resource_type, moves, MoveOptions { replace })
            .await
    }
}

/// More than two pages of every backend's usual page size (S3 and GCS 1000, Cloudinary 500,
/// the folder store 1000), so a lost continuation token or an off-by-one at a page edge shows.
const PAGED_OBJECTS: usize = 2_500;

/// Keys that break hand-built URLs, percent-decoding, path joining or prefix matching.
///
/// Backslashes are left out: Azure turns `\` into `/` in blob names, so no backend could be held
/// to it. Cloudinary refuses `?`, `&`, `#`, `%`, `<`, `>` and `\` in a `public_id`: its run
/// declares them in [`Backend::cannot_hold`], which leaves out exactly the keys holding one.
const ODD_KEYS: &[&str] = &[
    "with space.jpg",
    "folder with spaces/file name.png",
    "café/naïve résumé.jpg",
    // NFD, as macOS writes it: the store must hand back these bytes, not the NFC form.
    "nfd/cafe\u{301}.jpg",
    "日本語/写真.png",
    "emoji/😀.png",
    "50%.png",
    "100%25 sure.txt",
    "%E2%82%AC.txt",
    "a+b=c.jpg",
    "plus+/x+y.png",
    "#hash.jpg",
    "tag#1/x.jpg",
    "what?.jpg",
    "q&a/x.jpg",
    "quote's \"double\".jpg",
    "semi;colon,comma.jpg",
    "brackets [1] (2) {3} star*.jpg",
    "tilde~/at@sign time 12:00.jpg",
    ".hidden/x.png",
    ".dotfile",
    "a/b/c/d/e/f/g.jpg",
    // `img` is a prefix of `img2` and of `img.jpg`: neither may be mistaken for the other.
    "img/photo.jpg",
    "img2/photo.jpg",
    "img.jpg",
    "empty.txt",
    // Representable neighbours of the unrepresentable keys that `lookup_many` must never look up:
    // a look-up that normalised `dbl//b.jpg` or `/abs` would find these.
    "dbl/b.jpg",
    "abs",
    "x",
];

/// How long a listing may take before the test fails instead of hanging the run.
const PATIENCE: Duration = Duration::from_mins(10);

const QUARANTINE: &str = ".assetgc-trash/";
const NESTED_QUARANTINE: &str = "nested/.assetgc-trash/";

/// Under a quarantine prefix, and their near misses that are not.
const QUARANTINE_KEYS: &[&str] = &[
    ".assetgc-trash/20240101T000000Z/img/photo.jpg",
    ".assetgc-trash/x.jpg",
    ".assetgc-trash-not/x",
    "nested/.assetgc-trash/20240101T000000Z/z.jpg",
    "nested/.assetgc-trash-keep.jpg",
    "nested/keep.jpg",
];

/// Keys that are not representable (SPEC §2). `lookup_many` answers `None` for each without a look-up,
/// even where a look-up that normalised the key would find an object of [`ODD_KEYS`].
const UNREPRESENTABLE: &[&str] = &[
    "../x",
    "a/../x",
    "a//b",
    "a//b/c/d/e/f/g.jpg",
    "dbl//b.jpg",
    "dbl/./b.jpg",
    "./dbl/b.jpg",
    "dbl/b.jpg/",
    "/abs",
    "/x",
    "",
    "line\nbreak.jpg",
];

/// Keys that name no object: absent names, folders (a prefix is not an object), a path below a
/// file, a different case, and the NFC form of a key stored in NFD.
const ABSENT: &[&str] = &[
    "absent.jpg",
    "img",
    "img/",
    "a/b/c",
    "empty.txt/child",
    "IMG.JPG",
    "nfd/café.jpg",
    "100% sure.txt",
    "paging/00/9999.bin",
];

/// Every check, in order. Each check names the store in its failure message.
pub async fn run(b: &Backend<'_>) {
    let store = b.store;
    let started = Utc::now();
    let describe = store.describe();
    assert!(!describe.trim().is_empty(), "describe() names the store");

    check_succeeds(store).await;
    typed_calls_on_a_type_the_store_does_not_hold_are_refused_without_a_call(b).await;

    let fixture = Fixture::seed(b);

    listing_holds_every_key_exactly_once(store, &fixture, false).await;
    listing_holds_every_key_exactly_once(store, &fixture, true).await;
    listing_with_meta_gives_sizes_and_times(store, &fixture, started).await;
    listing_dropped_part_way_leaves_the_store_usable(store, &fixture).await;
    exclude_prefixes_leave_out_the_prefix_and_nothing_else(b, &fixture).await;
    lookup_many_finds_present_keys_and_nothing_else(b, &fixture, started).await;
    // Changes nothing when the backend refuses as it says it does.
    move_without_replace_refuses_an_existing_destination(b, &fixture).await;

    // Last: these change the store, and every check above expects the fixture as it was put.
    delete_many_deletes_the_keys_named_and_nothing_else(b, &fixture).await;
    move_many_moves_and_moves_back(b, &fixture).await;
}

/// A typed call names a resource type the store holds (`Plain` standing for the only one of a
/// store that holds one); any other is refused before anything is sent, for look-ups, deletes and
/// moves alike.
async fn typed_calls_on_a_type_the_store_does_not_hold_are_refused_without_a_call(b: &Backend<'_>) {
    let what = b.store.describe();
    let held = b.store.capabilities().resource_types;
    let takes =
        |t: ResourceType| held.contains(&t) || (t == ResourceType::Plain && held.len() == 1);
    assert!(
        takes(b.resource_type),
        "{what}: the suite's resource type {:?} is one the store holds ({held:?})",
        b.resource_type
    );
    let refused: Vec<ResourceType> = [
        ResourceType::Plain,
        ResourceType::Image,
        ResourceType::Video,
        ResourceType::Raw,
    ]
    .into_iter()
    .filter(|t| !takes(*t))
    .collect();
    assert!(!refused.is_empty(), "{what}: some type is not held");
    let keys = vec!["img.jpg".to_owned()];
    let moves = vec![("img.jpg".to_owned(), ".assetgc-trash/x/img.jpg".to_owned())];
    let calls = b.store.usage().api_calls;
    for rt in refused {
        let refusal = |e: &StoreError| matches!(e, StoreError::Permanent { message, .. } if message.contains("resource type"));
        let looked = b.store.lookup_many(rt, &keys).await;
        assert!(
            looked.as_ref().is_err_and(refusal),
            "{what}: a look-up of type {rt:?}: {looked:?}"
        );
        let deleted = b.store.delete_many(rt, &keys).await;
        assert!(
            deleted.as_ref().is_err_and(refusal),
            "{what}: a delete of type {rt:?}: {deleted:?}"
        );
        for replace in [true, false] {
            let moved = b.store.move_many(rt, &moves, MoveOptions { replace }).await;
            assert!(
                moved.as_ref().is_err_and(refusal),
                "{what}: a move of type {rt:?}: {moved:?}"
            );
        }
    }
    assert_eq!(
        b.store.usage().api_calls,
        calls,
        "{what}: a refused type costs no call"
    );
}

/// A move without replace (quarantine, move-back, `restore` without `--overwrite`) onto a key
/// that exists is refused with `AlreadyExists`, moves nothing and leaves both objects as they
/// were: on every backend, atomically or by a look-up just before the copy (see
/// `Capabilities::atomic_no_replace`).
async fn move_without_replace_refuses_an_existing_destination(b: &Backend<'_>, fixture: &Fixture) {
    let what = format!("{}: a move without replace", b.store.describe());
    let (from, to) = ("img2/photo.jpg", "img.jpg");
    let out = b
        .moves(&[(from.to_owned(), to.to_owned())], false)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    match out.as_slice() {
        [Err(e)] if e.kind == KeyFailure::AlreadyExists => {}
        other => panic!("{what} onto an existing key answered {other:?}"),
    }
    let keys = vec![from.to_owned(), to.to_owned()];
    let found = b.lookup(&keys).await.expect("look-ups");
    for (key, found) in keys.iter().zip(&found) {
        assert_eq!(
            found.as_ref().and_then(|o| o.size),
            Some(fixture.objects[key]),
            "{what}: {key:?} is as it was"
        );
    }
}

/// Quarantine and restore: odd keys move under a quarantine-like prefix (without replace: nothing
/// is there) and back (with replace, as `restore --overwrite` does), bytes kept; a move of an
/// absent key is `SourceGone`; an unrepresentable key is refused without a call, for good.
async fn move_many_moves_and_moves_back(b: &Backend<'_>, fixture: &Fixture) {
    let what = b.store.describe();
    let keys = b.held(&[
        "semi;colon,comma.jpg",
        "brackets [1] (2) {3} star*.jpg",
        "tilde~/at@sign time 12:00.jpg",
        "nfd/cafe\u{301}.jpg",
    ]);
    let moves: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            (
                (*k).to_string(),
                format!(".assetgc-trash/20260101T000000Z/{k}"),
            )
        })
        .chain([
            (
                "absent.jpg".to_string(),
                ".assetgc-trash/20260101T000000Z/absent.jpg".to_string(),
            ),
            (
                "a//b".to_string(),
                ".assetgc-trash/20260101T000000Z/a//b".to_string(),
            ),
        ])
        .collect();
    let out = b
        .moves(&moves, false)
        .await
        .unwrap_or_else(|e| panic!("{what}: move_many: {e}"));
    assert_eq!(out.len(), moves.len(), "{what}: one outcome per move");
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(out[i], Ok(Moved::Moved), "{what}: move of {k:?}");
    }
    assert_eq!(
        out[keys.len()],
        Ok(Moved::SourceGone),
        "{what}: move of an absent key"
    );
    assert!(
        out[keys.len() + 1]
            .as_ref()
            .is_err_and(|e| e.kind == KeyFailure::Permanent),
        "{what}: an unrepresentable key is refused for good: {:?}",
        out[keys.len() + 1]
    );
    let sources: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
    let targets: Vec<String> = moves[..keys.len()].iter().map(|(_, t)| t.clone()).collect();
    let gone = b.lookup(&sources).await.expect("head sources");
    assert!(
        gone.iter().all(Option::is_none),
        "{what}: moved keys are gone: {gone:?}"
    );
    let there = b.lookup(&targets).await.expect("head targets");
    for (k, found) in keys.iter().zip(&there) {
        let found = found
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {k:?} not at its new key"));
        assert_eq!(
            Some(fixture.objects[*k]),
            found.size,
            "{what}: {k:?} kept its bytes"
        );
    }
    // And back, as `restore` does.
    let back: Vec<(String, String)> = targets
        .iter()
        .cloned()
        .zip(sources.iter().cloned())
        .collect();
    let out = b.moves(&back, true).await.expect("move back");
    assert!(
        out.iter().all(|o| *o == Ok(Moved::Moved)),
        "{what}: {out:?}"
    );
    let restored = b.lookup(&sources).await.expect("head restored");
    assert!(
        restored.iter().all(Option::is_some),
        "{what}: restored: {restored:?}"
    );
    let left = b.lookup(&targets).await.expect("head targets");
    assert!(
        left.iter().all(Option::is_none),
        "{what}: copies left behind: {left:?}"
    );
}

/// Deleted by name in one `delete_many`: odd keys spelt as stored. Their neighbours — the NFC
/// form of the NFD key, `100%25 sure.txt` and its decoded `100% sure.txt`, `img2/photo.jpg` and
/// `img.jpg` beside `img/photo.jpg`, and the keys an unrepresentable key would normalise to —
/// are not named and must survive.
const DELETED_ODD_KEYS: &[&str] = &[
    "with space.jpg",
    "folder with spaces/file name.png",
    "café/naïve résumé.jpg",
    "日本語/写真.png",
    "emoji/😀.png",
    "50%.png",
    "%E2%82%AC.txt",
    "a+b=c.jpg",
    "plus+/x+y.png",
    "#hash.jpg",
    "tag#1/x.jpg",
    "what?.jpg",
    "q&a/x.jpg",
    "quote's \"double\".jpg",
    "img/photo.jpg",
    "a/b/c/d/e/f/g.jpg",
    "empty.txt",
];

/// Named in the same call, present nowhere: already gone is success.
const DELETED_ABSENT_KEYS: &[&str] = &[
    "absent.jpg",
    "nfd/café.jpg",
    "100% sure.txt",
    "€.txt",
    "IMG/PHOTO.JPG",
];

/// Paged objects deleted in one call: more than S3's 1000 keys a DeleteObjects call (and Azure's
/// 256 a batch), from the top level and from folders; the other paged objects must survive.
const BULK_DELETED: usize = 1_100;

/// What the suite put into the store: key → body length.
pub struct Fixture {
    objects: BTreeMap<String, u64>,
}

impl Fixture {
    /// Everything the suite puts, but the keys the backend cannot hold.
    fn seed(b: &Backend<'_>) -> Fixture {
        let mut objects = BTreeMap::new();
        let mut put = |key: String, body: Vec<u8>| {
            assert!(
                is_representable(&key),
                "fixture key {key:?} is representable"
            );
            if !b.holds(&key) {
                return;
            }
            b.seed.put(&key, &body);
            let size = u64::try_from(body.len()).expect("body fits u64");
            assert!(
                objects.insert(key, size).is_none(),
                "fixture keys are unique"
            );
        };
        for i in 0..PAGED_OBJECTS {
            // Sizes 0 to 16 bytes: zero-byte objects are objects (only `…/` markers are not).
            put(paged_key(i), vec![b'p'; i % 17]);
        }
        for key in ODD_KEYS.iter().chain(QUARANTINE_KEYS) {
            let body = if *key == "empty.txt" {
                Vec::new()
            } else {
                key.as_bytes().to_vec()
            };
            put((*key).to_owned(), body);
        }
        let long = format!("long/{}.jpg", "n".repeat(120));
        let body = long.as_bytes().to_vec();
        put(long, body);
        Fixture { objects }
    }

    fn without(&self, prefixes: &[&str]) -> BTreeMap<String, u64> {
        self.objects
            .iter()
            .filter(|(key, _)| !prefixes.iter().any(|p| key.starts_with(p)))
            .map(|(key, size)| (key.clone(), *size))
            .collect()
    }
}

/// A fifth at the top level (where the folder store shares entries out among threads), the rest
/// in 25 folders of 80.
fn paged_key(i: usize) -> String {
    if i.is_multiple_of(5) {
        format!("page-{i:04}.bin")
    } else {
        format!("paging/{:02}/{i:04}.bin", i % 25)
    }
}

/// A whole listing, read to its end.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<Object>,
    pub unrepresentable: Vec<String>,
    pub skipped: Vec<String>,
    pub pages: usize,
}

impl Listing {
    pub fn keys(&self) -> Vec<&str> {
        self.objects.iter().map(|o| o.key.as_str()).collect()
    }
}

/// Reads a listing to its end; a page that is an error fails the test, since a listing that ends
/// early is an incomplete scan, never a smaller store.
pub async fn list_all(store: &dyn Store, opts: ListOptions) -> Listing {
    let what = format!("{} (listing with {opts:?})", store.describe());
    let read = async {
        let mut listing = Listing::default();
        let mut pages = store.list(opts);
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("{what}: a page failed: {e}"));
            listing.pages += 1;
            for item in page {
                match item {
                    Listed::Object(o) => listing.objects.push(o),
                    Listed::Unrepresentable(name) => listing.unrepresentable.push(name),
                    Listed::Skipped(why) => listing.skipped.push(why),
                }
            }
        }
        listing
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not end within 10 minutes"))
}

/// The first few items of a list, for a failure message that stays readable.
fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    const SHOWN: usize = 20;
    let more = items.len().saturating_sub(SHOWN);
    let shown: Vec<&T> = items.iter().take(SHOWN).collect();
    if more == 0 {
        format!("{shown:?}")
    } else {
        format!("{shown:?} and {more} more")
    }
}

/// The listing holds each expected key exactly once, as an object, and nothing else.
fn assert_listing_is(listing: &Listing, expected: &BTreeMap<String, u64>, what: &str) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for key in listing.keys() {
        *seen.entry(key).or_default() += 1;
    }
    let mut twice: Vec<(&str, usize)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();
    twice.sort_unstable();
    let mut invented: Vec<&str> = seen
        .keys()
        .filter(|k| !expected.contains_key(**k))
        .copied()
        .collect();
    invented.sort_unstable();
    let lost: Vec<&str> = expected
        .keys()
        .map(String::as_str)
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        twice.is_empty() && invented.is_empty() && lost.is_empty(),
        "{what}: {} objects in {} pages, {} expected\n  listed more than once: {}\n  \
         lost (put, never listed): {}\n  invented (listed, never put): {}",
        listing.objects.len(),
        listing.pages,
        expected.len(),
        first(&twice),
        first(&lost),
        first(&invented),
    );
    assert!(
        listing.unrepresentable.is_empty() && listing.skipped.is_empty(),
        "{what}: only representable keys were put, yet the listing reported unrepresentable {} \
         and skipped {}",
        first(&listing.unrepresentable),
        first(&listing.skipped),
    );
}

fn assert_time_is_plausible(
    modified: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    what: &str,
    key: &str,
) {
    // A day either side absorbs a server clock that is off; a zero, epoch or far-future time
    // (a parse of the wrong field) still fails.
    let slack = TimeDelta::days(1);
    let modified = modified.unwrap_or_else(|| panic!("{what}: {key:?} has no modification time"));
    assert!(
        modified > started - slack && modified < Utc::now() + slack,
        "{what}: {key:?} was modified at {modified}, but was put at {started} or later"
    );
}

async fn check_succeeds(store: &dyn Store) {
    if let Err(e) = store.check().await {
        panic!(
            "{}: check() failed on a reachable store: {e}",
            store.describe()
        );
    }
}

async fn listing_holds_every_key_exactly_once(
    store: &dyn Store,
    fixture: &Fixture,
    with_meta: bool,
) {
    let what = format!("{}: listing with_meta = {with_meta}", store.describe());
    let listing = list_all(
        store,
        ListOptions {
            with_meta,
            exclude_prefixes: Vec::new(),
            since: None,
        },
    )
    .await;
    assert_listing_is(&listing, &fixture.objects, &what);
    // Without metadata a backend may still fill the size (S3 lists it for free); if so, right.
    for o in &listing.objects {
        if let Some(size) = o.size {
            assert_eq!(size, fixture.objects[&o.key], "{what}: size of {:?}", o.key);
        }
    }
}

async fn listing_with_meta_gives_sizes_and_times(
    store: &dyn Store,
    fixture: &Fixture,
    started: DateTime<Utc>,
) {
    let what = format!("{}: listing with_meta = true", store.describe());
    let listing = list_all(
        store,
        ListOptions {
            with_meta: true,
            exclude_prefixes: Vec::new(),
            since: None,
        },
    )
    .await;
    for o in &listing.objects {
        assert_eq!(
            o.size,
            Some(fixture.objects[&o.key]),
            "{what}: size of {:?}",
            o.key
        );
        assert_time_is_plausible(o.modified, started, &what, &o.key);
    }
}

/// A scan that stops early (an error elsewhere, a budget) drops its listing: the backend must
/// neither hang nor spoil the next listing.
async fn listing_dropped_part_way_leaves_the_store_usable(store: &dyn Store, fixture: &Fixture) {
    let what = format!("{}: a listing dropped after one page", store.describe());
    {
        let mut pages = store.list(ListOptions::default());
        let page = tokio::time::timeout(PATIENCE, pages.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no first page within 10 minutes"));
        match page {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{what}: the first page failed: {e}"),
            None => panic!(
                "{what}: a store of {} objects listed nothing",
                fixture.objects.len()
            ),
        }
    }
    let listing = list_all(store, ListOptions::default()).await;
    assert_listing_is(
        &listing,
        &fixture.objects,
        &format!("{what}, then a full one"),
    );
}

async fn exclude_prefixes_leave_out_the_prefix_and_nothing_else(
    b: &Backend<'_>,
    fixture: &Fixture,
) {
    let store = b.store;
    let excluded = [QUARANTINE, NESTED_QUARANTINE, "img/"];
    let expected = fixture.without(&excluded);
    for key in [
        ".assetgc-trash-not/x",
        "nested/.assetgc-trash-keep.jpg",
        "nested/keep.jpg",
        "img2/photo.jpg",
        "img.jpg",
    ] {
        assert!(expected.contains_key(key), "fixture keeps {key:?}");
    }
    for with_meta in [false, true] {
        let what = format!(
            "{}: listing with_meta = {with_meta}, exclude_prefixes = {excluded:?}",
            store.describe()
        );
        let listing = list_all(
            store,
            ListOptions {
                with_meta,
                exclude_prefixes: excluded.iter().map(|p| (*p).to_owned()).collect(),
                since: None,
            },
        )
        .await;
        assert_listing_is(&listing, &expected, &what);
    }
}

async fn lookup_many_finds_present_keys_and_nothing_else(
    b: &Backend<'_>,
    fixture: &Fixture,
    started: DateTime<Utc>,
) {
    let what = format!("{}: lookup_many", b.store.describe());

    let none = b
        .lookup(&[])
        .await
        .unwrap_or_else(|e| panic!("{what} of no keys failed: {e}"));
    assert!(none.is_empty(), "{what} of no keys answered {none:?}");

    // Odd keys, every seventh paged key (several hundred: past Cloudinary's 100 ids a call),
    // absent and unrepresentable keys woven in, and a key asked twice: answers come back one per
    // key, in order.
    let mut keys: Vec<String> = Vec::new();
    let absent = b.held(ABSENT.iter().chain(UNREPRESENTABLE));
    let mut woven = absent.iter().cycle();
    let present = b
        .held(ODD_KEYS)
        .into_iter()
        .map(str::to_owned)
        .chain((0..PAGED_OBJECTS).step_by(7).map(paged_key));
    for (i, key) in present.enumerate() {
        keys.push(key);
        if i.is_multiple_of(3) {
            keys.push((*woven.next().expect("cycle")).to_owned());
        }
    }
    keys.extend(absent.iter().map(|k| (*k).to_owned()));
    keys.push("café/naïve résumé.jpg".to_owned());

    let answers = b
        .lookup(&keys)
        .await
        .unwrap_or_else(|e| panic!("{what} of {} keys failed: {e}", keys.len()));
    assert_eq!(
        answers.len(),
        keys.len(),
        "{what}: one answer per key asked"
    );
    for (key, answer) in keys.iter().zip(&answers) {
        match (fixture.objects.get(key), answer) {
            (Some(size), Some(o)) => {
                assert_eq!(
                    &o.key, key,
                    "{what}: the answer for {key:?} names another key"
                );
                assert_eq!(o.size, Some(*size), "{what}: size of {key:?}");
                assert_time_is_plausible(o.modified, started, &what, key);
            }
            (Some(_), None) => panic!("{what}: {key:?} is in the store, the answer was None"),
            (None, Some(o)) if !is_representable(key) => panic!(
                "{what}: unrepresentable key {key:?} was looked up and found {o:?}; it must come \
                 back None without a look-up (SPEC §2)"
            ),
            (None, Some(o)) => panic!("{what}: {key:?} was never put, yet the answer was {o:?}"),
            (None, None) => {}
        }
    }
}

async fn delete_many_deletes_the_keys_named_and_nothing_else(b: &Backend<'_>, fixture: &Fixture) {
    let store = b.store;
    let what = format!("{}: delete_many", store.describe());
    let none = b
        .delete(&[])
        .await
        .unwrap_or_else(|e| panic!("{what} of no keys failed: {e}"));
    assert!(none.is_empty(), "{what} of no keys answered {none:?}");

    // Present, absent and unrepresentable keys woven together: outcomes come back one per key,
    // in order.
    let deleted = b.held(DELETED_ODD_KEYS);
    let mut keys: Vec<String> = Vec::new();
    let mut others = b
        .held(DELETED_ABSENT_KEYS.iter().chain(UNREPRESENTABLE))
        .into_iter();
    for key in &deleted {
        assert!(fixture.objects.contains_key(*key), "fixture holds {key:?}");
        keys.push((*key).to_owned());
        if let Some(other) = others.next() {
            keys.push(other.to_owned());
        }
    }
    keys.extend(others.map(str::to_owned));
    let outcomes = b
        .delete(&keys)
        .await
        .unwrap_or_else(|e| panic!("{what} of {} keys failed: {e}", keys.len()));
    assert_eq!(outcomes.len(), keys.len(), "{what}: one outcome per key");
    for (key, outcome) in keys.iter().zip(&outcomes) {
        if fixture.objects.contains_key(key) {
            assert_eq!(
                outcome,
                &Ok(Gone::Deleted),
                "{what}: {key:?} was there and is deleted"
            );
        } else if is_representable(key) {
            assert!(
                outcome.is_ok(),
                "{what}: {key:?} (already gone) answered {outcome:?}"
            );
            if b.tells_already_gone {
                assert_eq!(
                    outcome,
                    &Ok(Gone::AlreadyGone),
                    "{what}: {key:?} was never there"
                );
            }
        } else {
            match outcome {
                Err(e) => assert!(
                    e.message.contains("not a usable key") && e.kind == KeyFailure::Permanent,
                    "{what}: {key:?} was refused for another reason, or not for good: {e:?}"
                ),
                Ok(gone) => panic!(
                    "{what}: unrepresentable key {key:?} answered {gone:?}; it must be refused, \
                     never sent (SPEC §2)"
                ),
            }
        }
    }
    let gone = b
        .lookup(&keys)
        .await
        .unwrap_or_else(|e| panic!("{what}: lookup_many afterwards failed: {e}"));
    for (key, found) in keys.iter().zip(&gone) {
        assert!(found.is_none(), "{what}: {key:?} is still there: {found:?}");
    }
    let mut expected = fixture.without(&[]);
    for key in &deleted {
        expected.remove(*key);
    }
    let listing = list_all(store, ListOptions::default()).await;
    assert_listing_is(&listing, &expected, &format!("{what}, then a listing"));

    // Deleting them again: every one is already gone, which is success.
    let again = b
        .delete(&keys[..1])
        .await
        .unwrap_or_else(|e| panic!("{what} of a deleted key failed: {e}"));
    assert!(
        matches!(again.as_slice(), [Ok(_)]),
        "{what}: a key deleted twice: {again:?}"
    );
    if b.tells_already_gone {
        assert_eq!(
            again,
            [Ok(Gone::AlreadyGone)],
            "{what}: a key deleted twice"
        );
    }

    // More keys than any backend's bulk limit, in one call.
    let bulk: Vec<String> = (0..BULK_DELETED).map(paged_key).collect();
    let outcomes = b
        .delete(&bulk)
        .await
        .unwrap_or_else(|e| panic!("{what} of {} keys failed: {e}", bulk.len()));
    assert_eq!(outcomes.len(), bulk.len(), "{what}: one outcome per key");
    let failed: Vec<(&String, &Result<Gone, KeyError>)> = bulk
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_err())
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} keys failed: {}",
        failed.len(),
        bulk.len(),
        first(&failed)
    );
    for key in &bulk {
        expected.remove(key);
    }
    let listing = list_all(store, ListOptions::default()).await;
    assert_listing_is(
        &listing,
        &expected,
        &format!("{what} of {BULK_DELETED} keys, then a listing (the rest survive)"),
    );
}
