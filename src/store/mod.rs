//! The `Store` trait: what every storage backend offers the scan (and later the queue).
//! Backends live in `store/<name>.rs`; nothing outside this module knows which one runs.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::config::{StoreConfig, StoreLocation};
use crate::key::ResourceType;

pub mod azure;
mod cloud;
pub mod cloudinary;

pub use cloudinary::budget::{self, Ledger};
pub mod gcs;
pub mod local;
pub mod s3;

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
    /// filters again); one that honours it says so in [`Store::lists_since`].
    pub since: Option<DateTime<Utc>>,
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
    /// Nothing was there (deleted by someone else, or never there).
    AlreadyGone,
}

/// One delete's outcome, telling "already gone" apart where the backend does.
pub type GoneResult = Result<Gone, String>;

/// One move's outcome: `Err` names why that move failed; the others go on.
pub type MoveResult = Result<Moved, String>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached at all (missing folder, refused credentials).
    #[error("{0}")]
    Unreachable(String),
    /// A call failed; the operation stopped part way.
    #[error("{0}")]
    Failed(String),
}

pub type ListStream<'a> = BoxStream<'a, Result<Vec<Listed>, StoreError>>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Where the store points, for messages (no secrets).
    fn describe(&self) -> String;

    /// Confirms the store is reachable before a run uses it.
    async fn check(&self) -> Result<(), StoreError>;

    /// Streams the whole store in pages; order is unspecified. Memory is bounded by the page size.
    fn list(&self, opts: ListOptions) -> ListStream<'_>;

    /// Requests sent to the backend's API so far (0 for the folder store).
    fn api_calls(&self) -> u64 {
        0
    }

    /// Calls spent on listings without `since` so far: what a full listing costs, for the
    /// choice between look-ups and a listing next time.
    fn full_list_calls(&self) -> u64 {
        0
    }

    /// Whether [`ListOptions::since`] limits the listing; then referenced keys the listing did
    /// not return are confirmed by look-ups (or a full listing) before they are called missing.
    fn lists_since(&self) -> bool {
        false
    }

    /// Keys one look-up call answers, where look-ups are billed per call and weighed against a
    /// listing's calls (Cloudinary: 100). `None`: look-ups are bounded by `max_lookups` instead.
    fn lookup_batch(&self) -> Option<usize> {
        None
    }

    /// Whether the run's first call tells reachability, so that `check` need not spend one
    /// (metered APIs). `assetgc check` calls [`Store::check`] regardless.
    fn checked_by_first_call(&self) -> bool {
        false
    }

    /// The resource types the store holds: `[Plain]` for every store but Cloudinary.
    fn resource_types(&self) -> Vec<ResourceType> {
        vec![ResourceType::Plain]
    }

    /// [`Store::head_many`] for one resource type; `Plain` on stores without types.
    async fn head_many_of(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        if resource_type == ResourceType::Plain {
            self.head_many(keys).await
        } else {
            Err(no_such_type(self, resource_type))
        }
    }

    /// [`Store::delete_many`] for one resource type; `Plain` on stores without types.
    async fn delete_many_of(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<(), String>>, StoreError> {
        if resource_type == ResourceType::Plain {
            self.delete_many(keys).await
        } else {
            Err(no_such_type(self, resource_type))
        }
    }

    /// [`Store::delete_many_of`], telling "already gone" apart where the backend does (the
    /// folder store, Cloudinary); elsewhere every key gone is [`Gone::Deleted`].
    async fn delete_many_gone(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<GoneResult>, StoreError> {
        Ok(self
            .delete_many_of(resource_type, keys)
            .await?
            .into_iter()
            .map(|r| r.map(|()| Gone::Deleted))
            .collect())
    }

    /// [`Store::move_many`] for one resource type; `Plain` on stores without types.
    async fn move_many_of(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
    ) -> Result<Vec<MoveResult>, StoreError> {
        if resource_type == ResourceType::Plain {
            self.move_many(moves).await
        } else {
            Err(no_such_type(self, resource_type))
        }
    }

    /// [`Store::move_many_of`] that refuses a move whose destination exists (`restore` without
    /// `--overwrite`), atomically where the backend can: the folder store (`RENAME_NOREPLACE`) and
    /// Cloudinary (`overwrite = false`). Elsewhere it moves as [`Store::move_many_of`] does, and
    /// the caller's look-up just before is the only check.
    async fn move_many_no_replace_of(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
    ) -> Result<Vec<MoveResult>, StoreError> {
        self.move_many_of(resource_type, moves).await
    }

    /// Moves each `(from, to)` within the store (quarantine and restore), replacing what is at
    /// `to`: a rename on the folder store, a server-side copy then a delete elsewhere. One outcome
    /// per move, in order; keys that are not representable are refused without a call.
    async fn move_many(&self, moves: &[(String, String)]) -> Result<Vec<MoveResult>, StoreError>;

    /// Point look-ups: for each key, the object with its size and time, or `None` when absent.
    /// Keys that are not representable are never looked up and come back `None`.
    async fn head_many(&self, keys: &[String]) -> Result<Vec<Option<Object>>, StoreError>;

    /// Bulk delete: one outcome per key, in order. `Ok` when the object is gone afterwards
    /// (deleted now, or already absent); `Err(reason)` fails that key alone. Keys that are not
    /// representable are never sent to the backend. `Err(StoreError)` only when the call could not
    /// be made at all.
    async fn delete_many(&self, keys: &[String]) -> Result<Vec<Result<(), String>>, StoreError>;
}

/// A typed call on a store that has no such resource type.
pub(crate) fn no_such_type<S: Store + ?Sized>(
    store: &S,
    resource_type: ResourceType,
) -> StoreError {
    StoreError::Failed(format!(
        "{} has no resource type `{}`",
        store.describe(),
        resource_type.as_str()
    ))
}

/// Why a key is refused by `delete_many` without reaching the backend; `None` when it is usable.
pub(crate) fn unusable(key: &str) -> Option<String> {
    crate::key::unrepresentable_reason(key).map(|why| format!("not a usable key ({why})"))
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
