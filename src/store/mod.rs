//! The `Store` trait: what every storage backend offers the scan and the queue. Backends live in
//! `store/<name>.rs` (Cloudinary in `store/cloudinary/`); nothing outside this module knows which
//! one runs: callers see [`Capabilities`], typed keys, [`StoreError`] and [`KeyError`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::config::{StoreConfig, StoreLocation};
use crate::key::ResourceType;

pub mod azure;
mod cloud;
pub mod cloudinary;
mod error;
pub mod gcs;
pub mod local;
pub mod memory;
pub mod s3;

pub use cloudinary::budget::{self, Ledger};
pub use error::{Cause, KeyError, KeyFailure, StoreError};

/// One object of a listing or a look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    /// Filled when the listing was asked for metadata, or by a look-up.
    pub size: Option<u64>,
    pub modified: Option<DateTime<Utc>>,
    /// `Plain` except on Cloudinary, where the identity is (resource type, public_id).
    pub resource_type: ResourceType,
    /// What the backend says of the object's format and address (Cloudinary), when it does.
    pub format: Option<String>,
    pub url: Option<String>,
}

impl Object {
    /// An object of a store without resource types.
    pub fn plain(key: String, size: Option<u64>, modified: Option<DateTime<Utc>>) -> Self {
        Object {
            key,
            size,
            modified,
            resource_type: ResourceType::Plain,
            format: None,
            url: None,
        }
    }
}

/// One entry of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Object(Object),
    /// A name the store holds that is not a representable key (SPEC §2): counted and named in the
    /// scan's warnings, never an orphan, looked up or deleted. The text is a lossy rendering.
    Unrepresentable(String),
    /// Something skipped for a reason worth a warning (a symbolic link, an unreadable folder).
    Skipped(String),
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Fill `size` and `modified` (costs a stat per file on the folder store).
    pub with_meta: bool,
    /// Key prefixes left out of the listing (quarantine prefixes).
    pub exclude_prefixes: Vec<String>,
    /// A hint: only objects uploaded since then are wanted. A store may return more (the scan
    /// filters again); one that honours it says so in [`Capabilities::lists_since`].
    pub since: Option<DateTime<Utc>>,
}

/// What a store can do, for the choices its callers make (look-ups or a listing, a check call
/// or not, how far a restore can trust a move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The resource types the store holds: `[Plain]` for every store but Cloudinary.
    pub resource_types: Vec<ResourceType>,
    /// Whether [`ListOptions::since`] limits the listing; then referenced keys the listing did
    /// not return are confirmed by look-ups (or a full listing) before they are called missing.
    pub lists_since: bool,
    /// Keys one look-up call answers where look-ups are billed per call and weighed against a
    /// listing's calls (Cloudinary: 100). `None`: look-ups are bounded by `max_lookups` instead.
    pub lookup_batch: Option<usize>,
    /// Objects one listing call returns at most (Cloudinary 500, S3 and GCS 1000, Azure 5000),
    /// for estimates of what a listing costs.
    pub list_page: usize,
    /// Whether the run's first real call tells reachability, so that a run need not spend a
    /// call on [`Store::check`] (metered APIs). `assetgc check` calls it regardless.
    pub checked_by_first_call: bool,
    /// Whether a move with `replace: false` refuses an existing destination atomically: the
    /// folder store's `RENAME_NOREPLACE`, Cloudinary's `overwrite = false`, AWS's `If-None-Match:
    /// *`, GCS's `ifGenerationMatch=0`, Azure's `If-None-Match: *`. Every store refuses an
    /// existing destination; where this is `false` (emulators and S3-compatible services that
    /// ignore the condition) the refusal rests on the store's look-up just before the copy, so
    /// an object written in between can still be replaced.
    pub atomic_no_replace: bool,
}

impl Capabilities {
    /// A store of plain keys that lists everything, looks keys up one by one and moves without
    /// an atomic refusal; `list_page` is its listing call's ceiling.
    pub fn plain(list_page: usize) -> Self {
        Capabilities {
            resource_types: vec![ResourceType::Plain],
            lists_since: false,
            lookup_batch: None,
            list_page,
            checked_by_first_call: false,
            atomic_no_replace: false,
        }
    }
}

/// Calls a store made so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests sent to the backend's API, retries included (0 for the folder store).
    pub api_calls: u64,
    /// Calls spent on listings without `since`: what a full listing costs, for the choice
    /// between look-ups and a listing next time (counted where look-ups are billed per call).
    pub full_list_calls: u64,
}

/// How a move treats an object already at its destination. No default: every caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveOptions {
    /// Replace it (`restore --overwrite`); `false` refuses the move with
    /// [`KeyFailure::AlreadyExists`] and moves nothing (atomically where
    /// [`Capabilities::atomic_no_replace`] says so).
    pub replace: bool,
}

/// How one move (a quarantine, or a restore) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The object is at its new key and gone from the old one.
    Moved,
    /// There was nothing at the old key (moved or deleted already).
    SourceGone,
}

/// How a key that a delete reports gone went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    /// Nothing was there (deleted by someone else, or never there). Only backends that can tell
    /// say so (the folder store, Cloudinary, GCS and Azure); S3 answers `Deleted` either way.
    AlreadyGone,
}

pub type ListStream<'a> = BoxStream<'a, Result<Vec<Listed>, StoreError>>;

/// A storage backend. Typed calls name a resource type the store holds (see
/// [`Capabilities::resource_types`]; `Plain` also stands for the only type of a store that holds
/// one): any other is an error without a call. Keys that are not representable (SPEC §2) are never
/// sent to the backend: a look-up answers `None`, a delete or a move a permanent [`KeyError`].
#[async_trait]
pub trait Store: Send + Sync {
    /// Where the store points, for messages (no secrets).
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities;

    /// Calls made so far.
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// Confirms the store is reachable before a run uses it: a store that fails its check is
    /// left out of the run. The object stores answer a failure with one of the kinds that are
    /// not [`StoreError::reached`].
    async fn check(&self) -> Result<(), StoreError>;

    /// Streams the whole store in pages; order is unspecified. Memory is bounded by the page size.
    fn list(&self, opts: ListOptions) -> ListStream<'_>;

    /// Point look-ups: for each key, the object with its size and time, or `None` when absent.
    /// Any failure fails the call: "cannot tell" must never read as "missing".
    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError>;

    /// Bulk delete: one outcome per key, in order. A key is gone afterwards when it was deleted
    /// or was not there. `Err` only when the call could not be made at all.
    async fn delete_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError>;

    /// Moves each `(from, to)` within the store (quarantine and restore): a rename on the folder
    /// store and Cloudinary, a server-side copy then a delete elsewhere. One outcome per move, in
    /// order.
    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError>;
}

/// The pages a listing task sends, as the listing stream callers read.
pub(crate) fn pages(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Listed>, StoreError>>,
) -> ListStream<'static> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A typed call on a store without resource types: only `Plain` is one of its keys.
pub(crate) fn plain_only(who: &str, resource_type: ResourceType) -> Result<(), StoreError> {
    resolve_type(who, &[ResourceType::Plain], resource_type).map(|_| ())
}

/// The resource type a typed call goes to on a store holding `types`: `resource_type` itself
/// when the store holds it, or the only type of a store that holds one when `Plain` is asked for.
/// `who` names the store in the refusal.
pub(crate) fn resolve_type(
    who: &str,
    types: &[ResourceType],
    resource_type: ResourceType,
) -> Result<ResourceType, StoreError> {
    if types.contains(&resource_type) {
        return Ok(resource_type);
    }
    match (resource_type, types) {
        (ResourceType::Plain, [only]) => Ok(*only),
        (ResourceType::Plain, _) => Err(StoreError::permanent(format!(
            "{who}: a Cloudinary key needs its resource type (the store lists {})",
            types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(StoreError::permanent(format!(
            "{who} has no resource type `{}`",
            resource_type.as_str()
        ))),
    }
}

/// Why a key is refused by a delete or a move without reaching the backend; `None` when it is
/// usable.
pub(crate) fn unusable(key: &str) -> Option<KeyError> {
    crate::key::unrepresentable_reason(key)
        .map(|why| KeyError::permanent(format!("not a usable key ({why})")))
}

/// The store's quarantine prefix as its keys spell it; `None` when quarantine is off.
pub fn trash_prefix(cfg: &StoreConfig) -> Option<String> {
    let q = cfg.quarantine.as_ref()?;
    Some(match &cfg.location {
        StoreLocation::Cloudinary(_) => cloudinary::trash_prefix(&q.prefix),
        _ => q.prefix.clone(),
    })
}

/// Where `key` goes when it is quarantined at `at`: `<trash prefix><YYYYMMDDTHHMMSSZ>/<key>`;
/// `None` when quarantine is off.
pub fn quarantine_key(cfg: &StoreConfig, key: &str, at: DateTime<Utc>) -> Option<String> {
    trash_prefix(cfg).map(|prefix| format!("{prefix}{}/{key}", at.format("%Y%m%dT%H%M%SZ")))
}

/// A key typed on the command line (`queue add`, `restore`), with its resource type (SPEC §3):
/// `resource_type` is `--resource-type`. A store without resource types takes the key as written
/// when it is representable; a Cloudinary store reads it as its key format does.
pub fn typed_key(
    cfg: &StoreConfig,
    resource_type: Option<&str>,
    key: &str,
) -> crate::Result<(ResourceType, String)> {
    let explicit = match resource_type {
        None => None,
        Some(t) => Some(ResourceType::parse_cloudinary(t).ok_or_else(|| {
            crate::Error::Usage(format!("--resource-type `{t}`: use image, video or raw"))
        })?),
    };
    if let StoreLocation::Cloudinary(loc) = &cfg.location {
        return cloudinary::typed_key(cfg, loc, explicit, key).map_err(crate::Error::Usage);
    }
    if explicit.is_some() {
        return Err(crate::Error::Usage(format!(
            "--resource-type is for Cloudinary stores; store `{}` has no resource types",
            cfg.name
        )));
    }
    if let Some(why) = crate::key::unrepresentable_reason(key) {
        return Err(crate::Error::Usage(format!(
            "`{key}` is not a key of store `{}` ({why}); keys are relative to the store root, like `uploads/a.jpg`",
            cfg.name
        )));
    }
    Ok((ResourceType::Plain, key.to_string()))
}

/// Opens the backend a store's configuration names. Metered stores (Cloudinary) take their
/// account's budget from `ledger`.
pub fn open(cfg: &StoreConfig, ledger: &Ledger) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &cfg.location {
        StoreLocation::Cloudinary(loc) => Arc::new(cloudinary::CloudinaryStore::new(
            &cfg.name,
            loc,
            ledger.budget(&loc.account(), &loc.cloud, loc.budget),
        )?),
        StoreLocation::Local { root } => Arc::new(local::LocalStore::new(root.clone())),
        StoreLocation::S3(loc) => Arc::new(s3::S3Store::new(
            &cfg.name,
            s3::S3Settings {
                bucket: loc.bucket.clone(),
                prefix: loc.prefix.clone(),
                endpoint: loc.endpoint.clone(),
                region: loc.region.clone(),
                access_key_id: loc.access_key_id.clone(),
                secret_access_key: loc
                    .secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_string()),
                session_token: loc.session_token.as_ref().map(|s| s.expose().to_string()),
                allow_http: loc.allow_http,
                virtual_hosted_style: loc.virtual_hosted_style,
                list_concurrency: cfg.list_concurrency,
            },
        )?),
        StoreLocation::Gcs(loc) => Arc::new(gcs::GcsStore::new(
            &cfg.name,
            gcs::GcsSettings {
                bucket: loc.bucket.clone(),
                prefix: loc.prefix.clone(),
                endpoint: loc.endpoint.clone(),
                service_account_key: loc.secret.as_ref().map(|s| s.expose().to_string()),
                list_concurrency: cfg.list_concurrency,
            },
        )?),
        StoreLocation::Azure(loc) => Arc::new(azure::AzureStore::new(
            &cfg.name,
            azure::AzureSettings {
                account: loc.account.clone().unwrap_or_default(),
                container: loc.bucket.clone(),
                prefix: loc.prefix.clone(),
                access_key: loc.secret.as_ref().map(|s| s.expose().to_string()),
                endpoint: loc.endpoint.clone(),
                use_emulator: loc.use_emulator,
                list_concurrency: cfg.list_concurrency,
            },
        )?),
    })
}
