//! `assetgc.toml`: serde types, `${VAR}` expansion, validation with line numbers (SPEC §2).
//!
//! The file is read twice over: serde with `deny_unknown_fields` gives unknown keys and type errors
//! with their span, then every string is expanded and checked here, with the span of the value
//! kept (`toml::Spanned`) so that each error can name its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::key::{KeyContext, KeyFormat, ResourceType};

mod notify;
mod rules;
mod server;
pub use notify::{
    DEFAULT_ATTACH_MAX, EmailConfig, HookUrl, NotifyConfig, NotifyOn, SmtpTls, SpikeConfig,
    WebhookConfig, parse_size,
};
pub use rules::{ExpiryConfig, KeepQuery, PolicyConfig, Track, bind_parameters};
pub use server::{
    DEFAULT_JOB_TIMEOUT, DEFAULT_LISTEN, JobConfig, RateLimit, Scope, ServerConfig, TokenConfig,
    check_listen, parse_cron, parse_job_command,
};

type Text = Spanned<String>;

pub const DEFAULT_MIN_AGE: Duration = Duration::from_hours(24);
pub const DEFAULT_QUARANTINE_PREFIX: &str = ".assetgc-trash/";
pub const DEFAULT_QUARANTINE_KEEP: Duration = Duration::from_hours(7 * 24);
pub const DEFAULT_LIST_CONCURRENCY: usize = 8;
pub const DEFAULT_MAX_LOOKUPS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app_name: Option<Text>,
    state: Option<RawState>,
    reports: Option<RawReports>,
    #[serde(default)]
    stores: IndexMap<String, Spanned<RawStore>>,
    #[serde(default)]
    databases: IndexMap<String, Spanned<RawDatabase>>,
    #[serde(default)]
    references: Vec<Spanned<RawReference>>,
    #[serde(default)]
    policies: Vec<Spanned<rules::RawPolicy>>,
    #[serde(default)]
    expiry: Vec<Spanned<rules::RawExpiry>>,
    #[serde(default)]
    jobs: Vec<Spanned<server::RawJob>>,
    queue: Option<Spanned<RawQueue>>,
    notify: Option<Spanned<notify::RawNotify>>,
    safety: Option<Spanned<RawSafety>>,
    server: Option<Spanned<server::RawServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    url: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    batch_size: Option<Spanned<i64>>,
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Text>,
    backoff_max: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_orphan_share: Option<Spanned<f64>>,
    max_orphan_jump: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    dir: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Text,
    #[serde(default)]
    ignore: Vec<Text>,
    min_age: Option<Text>,
    public_url: Option<Text>,
    quarantine: Option<Spanned<RawQuarantine>>,
    list_concurrency: Option<Spanned<i64>>,
    max_lookups: Option<Spanned<i64>>,
    // Cloudinary stores only.
    resource_types: Option<Spanned<Vec<Text>>>,
    delivery_type: Option<Text>,
    api_budget: Option<Spanned<RawBudget>>,
    endpoint: Option<Text>,
    region: Option<Text>,
    access_key_id: Option<Text>,
    secret_access_key: Option<Text>,
    allow_http: Option<Spanned<bool>>,
    virtual_hosted_style: Option<Spanned<bool>>,
    overlaps: Option<Spanned<Vec<Text>>>,
}

impl RawStore {
    /// The first Cloudinary-only key present, for stores of other kinds.
    fn first_cloudinary_key(&self) -> Option<(&'static str, std::ops::Range<usize>)> {
        [
            (
                "resource_types",
                self.resource_types.as_ref().map(Spanned::span),
            ),
            (
                "delivery_type",
                self.delivery_type.as_ref().map(Spanned::span),
            ),
            ("api_budget", self.api_budget.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .find_map(|(key, span)| span.map(|s| (key, s)))
    }

    /// The first S3-only key present (with `endpoint` when `with_endpoint`), for stores of other kinds.
    fn first_s3_key(&self, with_endpoint: bool) -> Option<(&'static str, std::ops::Range<usize>)> {
        [
            (
                "endpoint",
                self.endpoint
                    .as_ref()
                    .filter(|_| with_endpoint)
                    .map(Spanned::span),
            ),
            ("region", self.region.as_ref().map(Spanned::span)),
            (
                "access_key_id",
                self.access_key_id.as_ref().map(Spanned::span),
            ),
            (
                "secret_access_key",
                self.secret_access_key.as_ref().map(Spanned::span),
            ),
            ("allow_http", self.allow_http.as_ref().map(Spanned::span)),
            (
                "virtual_hosted_style",
                self.virtual_hosted_style.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .find_map(|(key, span)| span.map(|s| (key, s)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    calls_per_hour: Option<Spanned<i64>>,
    warn_at: Option<Spanned<f64>>,
    stop_at: Option<Spanned<f64>>,
    min_interval: Option<Text>,
    max_wait: Option<Text>,
}

/// `quarantine = false | true | { prefix, keep }`. Not `#[serde(untagged)]`: its error would name
/// no key ("did not match any variant"); this one names the unknown key, or what is allowed.
#[derive(Debug)]
enum RawQuarantine {
    Switch(bool),
    Table(RawQuarantineTable),
}

impl<'de> Deserialize<'de> for RawQuarantine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(BoolOrTable {
            expecting: "quarantine = false, true or { prefix = \".assetgc-trash/\", keep = \"7d\" }",
            switch: RawQuarantine::Switch,
            table: RawQuarantine::Table,
        })
    }
}

/// A visitor for a value written either as a scalar or as a table with its own fields.
struct BoolOrTable<S, T, R> {
    expecting: &'static str,
    switch: fn(S) -> R,
    table: fn(T) -> R,
}

impl<'de, T: Deserialize<'de>, R> serde::de::Visitor<'de> for BoolOrTable<bool, T, R> {
    type Value = R;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<R, E> {
        Ok((self.switch)(v))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<R, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(self.table)
    }
}

impl<'de, T: Deserialize<'de>, R> serde::de::Visitor<'de> for BoolOrTable<String, T, R> {
    type Value = R;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<R, E> {
        Ok((self.switch)(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<R, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(self.table)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantineTable {
    // Plain strings: errors point at the `quarantine` value.
    prefix: Option<String>,
    keep: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    name: Option<Text>,
    database: Option<Text>,
    store: Option<Text>,
    query: Option<Text>,
    key_format: Option<Spanned<RawKeyFormat>>,
    key_prefix: Option<Text>,
    link: Option<Text>,
    track: Option<Spanned<rules::RawTrack>>,
}

/// `key_format = "path" | … | { regex = '...' }`, with errors that name what is allowed.
#[derive(Debug)]
enum RawKeyFormat {
    Name(String),
    Regex(RawRegex),
}

impl<'de> Deserialize<'de> for RawKeyFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(BoolOrTable {
            expecting: "key_format = \"path\", \"url\", \"cloudinary\" or { regex = '...' }",
            switch: RawKeyFormat::Name,
            table: RawKeyFormat::Regex,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegex {
    regex: String,
}

/// A value whose `Debug` never shows the secret it holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A URL keeps its shape with the password hidden; any other secret is hidden whole.
        if self.0.contains("://") {
            f.write_str(&redact_url(&self.0))
        } else {
            f.write_str("***")
        }
    }
}

/// A URL with its password (or Cloudinary API secret) replaced by `***`, for messages.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // A password may hold an unencoded `/` (S3 secrets do): the user name ends at the first
    // `:` of the authority, the password at the URL's last `@`.
    let (Some(colon), Some(at)) = (authority.find(':'), rest.rfind('@')) else {
        return s.to_string();
    };
    if at < colon || authority[..colon].contains('@') {
        return s.to_string();
    }
    format!(
        "{}://{}:***{}",
        &s[..scheme_end],
        &rest[..colon],
        &rest[at..]
    )
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` when no file was found.
    pub path: Option<PathBuf>,
    /// Relative paths in the config resolve against this folder.
    pub base_dir: PathBuf,
    pub app_name: String,
    pub state_url: StateUrl,
    pub reports_dir: PathBuf,
    pub stores: Vec<StoreConfig>,
    pub databases: Vec<DatabaseConfig>,
    pub references: Vec<ReferenceConfig>,
    /// `[[policies]]`: retention by age (`clean`).
    pub policies: Vec<PolicyConfig>,
    /// `[[expiry]]`: soft-deleted rows past their retention (`expire`).
    pub expiry: Vec<ExpiryConfig>,
    pub queue: QueueSettings,
    pub safety: Safety,
    /// `[server]`: what `serve` listens on and who may call it.
    pub server: ServerConfig,
    /// `[[jobs]]`: what `serve`'s scheduler runs.
    pub jobs: Vec<JobConfig>,
    /// `[notify]`: where runs given `--notify` send their summary.
    pub notify: NotifyConfig,
}

/// The largest batch a worker claims (SPEC §6).
pub const MAX_BATCH: usize = 1000;

/// `[queue]`: the worker's defaults; `queue run` flags override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub batch_size: usize,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            batch_size: 100,
            max_attempts: 3,
            backoff: Duration::from_mins(1),
            backoff_max: Duration::from_hours(1),
        }
    }
}

/// `[safety]`: the mass-deletion guard (SPEC §6 invariant 7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Safety {
    pub max_orphan_share: f64,
    pub max_orphan_jump: f64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_orphan_share: 0.5,
            max_orphan_jump: 10.0,
        }
    }
}

#[derive(Debug, Clone)]
pub enum StateUrl {
    Sqlite(PathBuf),
    /// `postgres://…`: the schema `assetgc` of that database.
    Postgres(Secret),
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    pub location: StoreLocation,
    pub ignore: Ignore,
    pub min_age: Duration,
    pub public_url: Option<String>,
    pub quarantine: Option<Quarantine>,
    pub list_concurrency: usize,
    pub max_lookups: usize,
    /// Stores declared to share objects with this one where the locations cannot tell
    /// (`overlaps = ["name"]`); the relation is symmetric (see `crate::overlap`).
    pub overlaps: Vec<String>,
}

impl StoreConfig {
    /// What parsing a reference's values needs from this store: its `public_url`, the
    /// reference's `key_prefix`, and the cloud name of a Cloudinary store.
    pub fn key_context(&self, key_prefix: &str) -> KeyContext {
        KeyContext {
            public_url: self.public_url.clone(),
            key_prefix: key_prefix.to_string(),
            cloud_name: self.location.cloudinary().map(|c| c.cloud.clone()),
            s3: match &self.location {
                StoreLocation::S3(s3) => Some(crate::key::S3Context {
                    bucket: s3.bucket.clone(),
                    endpoint: s3.endpoint.clone(),
                    prefix: s3.prefix.clone(),
                }),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    Local { root: PathBuf },
    S3(S3Location),
    Gcs(CloudLocation),
    Azure(CloudLocation),
    Cloudinary(CloudinaryLocation),
}

impl StoreLocation {
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Local { root } => root.display().to_string(),
            StoreLocation::S3(s3) => s3.describe(),
            StoreLocation::Gcs(c) => c.describe("gs"),
            StoreLocation::Azure(c) => c.describe("az"),
            StoreLocation::Cloudinary(c) => c.describe(),
        }
    }

    /// The Cloudinary account and settings, when this is a Cloudinary store.
    pub fn cloudinary(&self) -> Option<&CloudinaryLocation> {
        match self {
            StoreLocation::Cloudinary(c) => Some(c),
            _ => None,
        }
    }

    /// Where `other` lies inside this location, as a key prefix relative to it (`""` when they
    /// are the same place); `None` when it is not inside. Locations compare normalised (SPEC §6
    /// invariant 1): folder roots canonicalised; endpoints with scheme and host in lower case,
    /// default ports and trailing `/` dropped, an absent endpoint the provider's default; the
    /// same bucket on two endpoints counts as one unless the endpoints provably differ.
    pub fn contains(&self, other: &StoreLocation) -> Option<String> {
        match (self, other) {
            (StoreLocation::Local { root }, StoreLocation::Local { root: inner }) => {
                let (outer, inner) = (canonical_root(root), canonical_root(inner));
                let below = inner.strip_prefix(&outer).ok()?.to_str()?;
                Some(if below.is_empty() {
                    String::new()
                } else {
                    format!("{}/", below.trim_end_matches('/'))
                })
            }
            (StoreLocation::S3(a), StoreLocation::S3(b))
                if a.bucket == b.bucket
                    && !endpoints_differ(
                        &s3_endpoint(a.endpoint.as_deref()),
                        &s3_endpoint(b.endpoint.as_deref()),
                    ) =>
            {
                b.prefix
                    .strip_prefix(a.prefix.as_str())
                    .map(ToString::to_string)
            }
            (StoreLocation::Gcs(a), StoreLocation::Gcs(b))
            | (StoreLocation::Azure(a), StoreLocation::Azure(b))
                if a.bucket == b.bucket
                    && a.account == b.account
                    && !endpoints_differ(&cloud_endpoint(self), &cloud_endpoint(other)) =>
            {
                b.prefix
                    .strip_prefix(a.prefix.as_str())
                    .map(ToString::to_string)
            }
            // One cloud and delivery type hold one set of public_ids, whatever resource types
            // each store lists.
            (StoreLocation::Cloudinary(a), StoreLocation::Cloudinary(b))
                if a.cloud.eq_ignore_ascii_case(&b.cloud) && a.delivery_type == b.delivery_type =>
            {
                Some(String::new())
            }
            _ => None,
        }
    }

    /// The location as one comparable string: kind, normalised endpoint, bucket and prefix (no
    /// credentials). Store fingerprints are built from it.
    pub fn normalised(&self) -> String {
        match self {
            StoreLocation::Local { root } => format!("file://{}", canonical_root(root).display()),
            StoreLocation::S3(s) => format!(
                "s3://{}/{}/{}",
                s3_endpoint(s.endpoint.as_deref()),
                s.bucket,
                s.prefix
            ),
            StoreLocation::Gcs(c) | StoreLocation::Azure(c) => format!(
                "{}://{}/{}/{}/{}",
                if matches!(self, StoreLocation::Gcs(_)) {
                    "gs"
                } else {
                    "az"
                },
                cloud_endpoint(self),
                c.account.as_deref().unwrap_or_default(),
                c.bucket,
                c.prefix
            ),
            StoreLocation::Cloudinary(c) => format!(
                "cloudinary://{}/{}",
                c.cloud.to_ascii_lowercase(),
                c.delivery_type
            ),
        }
    }
}

/// A folder root as the filesystem resolves it: links and `..` would otherwise hide an
/// overlap. A root that does not exist yet resolves through its nearest existing ancestor.
fn canonical_root(root: &std::path::Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = root;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return root.to_path_buf(),
        }
    }
}

/// AWS's S3 endpoint in every spelling (none, global, regional, dual-stack, FIPS, VPC): bucket
/// names are global there, so they all name one place.
const AWS_S3: &str = "https://s3.amazonaws.com";

/// An S3 endpoint normalised, AWS's forms (and an absent endpoint) as [`AWS_S3`].
fn s3_endpoint(endpoint: Option<&str>) -> String {
    let Some(e) = endpoint else {
        return AWS_S3.to_string();
    };
    let n = normalise_endpoint(e);
    let host = n
        .split_once("://")
        .map_or(n.as_str(), |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if host == "amazonaws.com"
        || host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
    {
        AWS_S3.to_string()
    } else {
        n
    }
}

/// `scheme://host[:port][/path]` with scheme and host in lower case, the scheme's default port,
/// user info, query and trailing `/` dropped.
pub fn normalise_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint.trim()) {
        Ok(u) if u.host_str().is_some() => {
            let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
            // `port()` is `None` when the URL spells the scheme's default port.
            if let Some(p) = u.port() {
                s.push(':');
                s.push_str(&p.to_string());
            }
            s.push_str(u.path().trim_end_matches('/'));
            s
        }
        _ => endpoint.trim().trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// Two normalised endpoints provably name different services only when both are public names
/// (a dotted DNS name, not an address or a single-label host such as a container name) and
/// differ: `http://minio:9000` and `http://127.0.0.1:9000` may well be one server.
fn endpoints_differ(a: &str, b: &str) -> bool {
    fn public(e: &str) -> bool {
        let host = e.to_ascii_lowercase();
        let host = host
            .split_once("://")
            .map_or(e, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        host.contains('.')
            && host.parse::<std::net::Ipv4Addr>().is_err()
            && !host.starts_with('[')
            && ![".localhost", ".local", ".internal"]
                .iter()
                .any(|t| host.ends_with(t))
    }
    a != b && public(a) && public(b)
}

/// A GCS or Azure endpoint normalised; an absent one is the provider's own.
fn cloud_endpoint(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Gcs(c) => c.endpoint.as_deref().map_or_else(
            || "https://storage.googleapis.com".to_string(),
            normalise_endpoint,
        ),
        StoreLocation::Azure(c) => c.endpoint.as_deref().map_or_else(
            || {
                format!(
                    "https://{}.blob.core.windows.net",
                    c.account
                        .as_deref()
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                )
            },
            normalise_endpoint,
        ),
        _ => String::new(),
    }
}

/// An S3 (or S3-compatible) bucket and the prefix a store is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// `""` or ending in `/`: a hard boundary.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub allow_http: bool,
    pub virtual_hosted_style: bool,
    /// A Cloudcube URL: credentials come from `CLOUDCUBE_*`.
    pub cloudcube: bool,
}

impl S3Location {
    fn new(
        bucket: &str,
        prefix: &str,
        cloudcube: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!(
                "`{bucket}` is not an S3 bucket name (3–63 lower-case letters, digits, `-`, `.`)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !crate::key::is_representable(prefix) {
            return Err(format!("prefix `{prefix}` is not a usable key prefix"));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: cloudcube.unwrap_or("us-east-1").to_string(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            virtual_hosted_style: false,
            cloudcube: cloudcube.is_some(),
        })
    }

    pub fn describe(&self) -> String {
        let mut s = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(e) = &self.endpoint {
            s.push_str(" at ");
            s.push_str(&redact_url(e));
        }
        s
    }
}

/// A Google Cloud Storage bucket or an Azure Blob container, and the prefix a store is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudLocation {
    /// The GCS bucket or the Azure container.
    pub bucket: String,
    /// `""` or ending in `/`: a hard boundary.
    pub prefix: String,
    /// An emulator or private endpoint (GCS: `STORAGE_EMULATOR_HOST`; Azure: Azurite).
    pub endpoint: Option<String>,
    /// Azure: the storage account (`AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// Azure: the account key (`AZURE_STORAGE_ACCOUNT_KEY`); GCS: a service-account key file or
    /// JSON (`GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_APPLICATION_CREDENTIALS`).
    pub secret: Option<Secret>,
    /// Azure: talk to Azurite with its well-known account (`AZURE_STORAGE_USE_EMULATOR=true`).
    pub use_emulator: bool,
}

impl CloudLocation {
    fn new(container: &str, prefix: &str) -> std::result::Result<Self, String> {
        if container.is_empty() || container.contains(['?', '#', '@', ':']) {
            return Err(format!("`{container}` is not a bucket or container name"));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !crate::key::is_representable(prefix) {
            return Err(format!("prefix `{prefix}` is not a usable key prefix"));
        }
        Ok(CloudLocation {
            bucket: container.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            account: None,
            secret: None,
            use_emulator: false,
        })
    }

    pub fn describe(&self, scheme: &str) -> String {
        let mut s = format!("{scheme}://{}/{}", self.bucket, self.prefix);
        if let Some(e) = &self.endpoint {
            s.push_str(" at ");
            s.push_str(&redact_url(e));
        }
        s
    }
}

/// The Admin API of one Cloudinary account, and which of its resources a store covers.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudinaryLocation {
    pub cloud: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// `https://api.cloudinary.com`, or the URL's `upload_prefix` (as the official SDKs do).
    pub api_base: String,
    /// In the order listed; never empty, no repeats.
    pub resource_types: Vec<ResourceType>,
    /// `upload` (default), `private` or `authenticated`.
    pub delivery_type: String,
    pub budget: ApiBudget,
}

pub const CLOUDINARY_API: &str = "https://api.cloudinary.com";

impl CloudinaryLocation {
    /// Parses `cloudinary://KEY:SECRET@CLOUD[?upload_prefix=URL]`, the SDKs' `CLOUDINARY_URL`.
    fn parse(url: &str) -> std::result::Result<Self, String> {
        let form = "cloudinary://API_KEY:API_SECRET@CLOUD_NAME";
        let parsed = url::Url::parse(url).map_err(|e| {
            format!(
                "`{}` is not a Cloudinary URL ({e}): write {form}",
                redact_url(url)
            )
        })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_or_else(|_| s.to_string(), std::borrow::Cow::into_owned)
        };
        let api_key = decode(parsed.username());
        let api_secret = parsed.password().map(decode).unwrap_or_default();
        let cloud = parsed.host_str().unwrap_or_default().to_string();
        if api_key.is_empty() || api_secret.is_empty() || cloud.is_empty() {
            return Err(format!(
                "`{}` lacks its API key, secret or cloud name: write {form}",
                redact_url(url)
            ));
        }
        if !parsed.path().trim_matches('/').is_empty() {
            return Err(format!(
                "`{}`: a Cloudinary URL has no path; write {form}",
                redact_url(url)
            ));
        }
        let mut api_base = CLOUDINARY_API.to_string();
        for (k, v) in parsed.query_pairs() {
            // Other SDK settings (secure_distribution, cname, private_cdn…) shape delivery
            // URLs, which the Admin API already returns whole.
            if k == "upload_prefix" {
                let base = url::Url::parse(&v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        format!("upload_prefix `{v}` must be an http:// or https:// URL")
                    })?;
                api_base = base.as_str().trim_end_matches('/').to_string();
            }
        }
        Ok(CloudinaryLocation {
            cloud,
            api_key,
            api_secret: Secret(api_secret),
            api_base,
            resource_types: vec![ResourceType::Image, ResourceType::Video],
            delivery_type: "upload".into(),
            budget: ApiBudget::default(),
        })
    }

    /// The account a budget is kept for: cloud name and API key (never the secret).
    pub fn account(&self) -> String {
        format!("{}:{}", self.cloud, self.api_key)
    }

    pub fn describe(&self) -> String {
        let types: Vec<&str> = self.resource_types.iter().map(|t| t.as_str()).collect();
        let mut s = format!(
            "cloudinary://{}:***@{} ({}; {})",
            self.api_key,
            self.cloud,
            types.join(", "),
            self.delivery_type
        );
        if self.api_base != CLOUDINARY_API {
            s.push_str(" at ");
            s.push_str(&redact_url(&self.api_base));
        }
        s
    }
}

/// The Admin API budget of a Cloudinary account (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiBudget {
    pub calls_per_hour: u64,
    pub warn_at: f64,
    pub stop_at: f64,
    pub min_interval: Duration,
    pub max_wait: Duration,
}

impl Default for ApiBudget {
    fn default() -> Self {
        ApiBudget {
            calls_per_hour: 500,
            warn_at: 0.80,
            stop_at: 0.95,
            min_interval: Duration::ZERO,
            max_wait: Duration::from_mins(2),
        }
    }
}

/// Cloudcube's `https://cloud-cube-us2.s3.amazonaws.com/<cube>`: the bucket is the host's first
/// label and the cube is the store's prefix.
fn cloudcube(url: &str) -> Option<std::result::Result<S3Location, String>> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_ascii_lowercase();
    let bucket = host.strip_suffix(".s3.amazonaws.com")?;
    if !bucket.starts_with("cloud-cube") || !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let region = match bucket {
        b if b.starts_with("cloud-cube-eu") => "eu-west-1",
        b if b.starts_with("cloud-cube-jp") => "ap-northeast-1",
        _ => "us-east-1",
    };
    let cube = parsed.path().trim_matches('/');
    if cube.is_empty() {
        return Some(Err(format!(
            "`{}` names no cube: Cloudcube URLs look like https://{host}/<cube>",
            redact_url(url)
        )));
    }
    Some(S3Location::new(bucket, cube, Some(region)))
}

#[derive(Debug, Clone)]
pub struct Quarantine {
    pub prefix: String,
    pub keep: Duration,
}

/// `ignore` globs, gitignore-style: `*` stays within a segment, `**` crosses them, a pattern
/// without `/` matches a name at any depth, a trailing `/` means everything below.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    pub patterns: Vec<String>,
    set: GlobSet,
}

impl Ignore {
    pub fn new(patterns: &[String]) -> std::result::Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            for glob in gitignore_globs(p) {
                let g = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| format!("bad glob `{p}`: {}", e.kind()))?;
                builder.add(g);
            }
        }
        let set = builder.build().map_err(|e| format!("bad glob: {e}"))?;
        Ok(Ignore {
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, key: &str) -> bool {
        !self.patterns.is_empty() && self.set.is_match(key)
    }
}

fn gitignore_globs(pattern: &str) -> Vec<String> {
    let mut p = pattern.trim();
    let anchored = p.starts_with('/');
    p = p.trim_start_matches('/');
    let dir_only = p.ends_with('/');
    let p = p.trim_end_matches('/');
    let base = if !anchored && !p.contains('/') && !p.starts_with("**") {
        format!("**/{p}")
    } else {
        p.to_string()
    };
    if dir_only {
        vec![format!("{base}/**")]
    } else {
        // A pattern that names a folder also covers what is inside it, as in .gitignore.
        vec![base.clone(), format!("{base}/**")]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
    MySql,
}

impl DbKind {
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Sqlite => "SQLite",
            DbKind::Postgres => "PostgreSQL",
            DbKind::MySql => "MySQL/MariaDB",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub name: String,
    pub kind: DbKind,
    /// The connection URL; for SQLite the file path is already resolved.
    pub url: Secret,
    pub sqlite_path: Option<PathBuf>,
    pub sqlite_read_only: bool,
}

impl DatabaseConfig {
    pub fn display_url(&self) -> String {
        match &self.sqlite_path {
            Some(p) => format!("sqlite://{}", p.display()),
            None => redact_url(self.url.expose()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    pub name: String,
    pub database: usize,
    pub store: usize,
    pub query: String,
    pub key_format: KeyFormat,
    pub key_prefix: String,
    pub link: Option<LinkTemplate>,
    /// For `assetgc triggers`: the column whose old values are queued when it changes.
    pub track: Option<Track>,
}

/// `link = "https://example.com/prompt/{slug}/"`: literal text and column names; `{{`/`}}` are braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTemplate {
    pub parts: Vec<LinkPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPart {
    Text(String),
    Column(String),
}

impl LinkTemplate {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("link `{s}`: `{{` without `}}`")),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!("link `{s}`: empty `{{}}`"));
                    }
                    if !text.is_empty() {
                        parts.push(LinkPart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(LinkPart::Column(name));
                }
                '}' => return Err(format!("link `{s}`: `}}` without `{{` (write `}}}}`)")),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(LinkPart::Text(text));
        }
        Ok(LinkTemplate { parts })
    }

    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            LinkPart::Column(c) => Some(c.as_str()),
            LinkPart::Text(_) => None,
        })
    }
}

/// Where the config comes from: `--config`, else `$ASSETGC_CONFIG`, else `./assetgc.toml`.
pub fn locate(cli: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = cli {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os("ASSETGC_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let default = PathBuf::from("assetgc.toml");
    default.exists().then_some((default, false))
}

/// Loads the configuration: the file named by `cli` or the environment (which must exist), else
/// `./assetgc.toml` when present. `Ok(None)` when there is no file at all.
pub fn load(cli: Option<&Path>) -> Result<Option<Config>> {
    let Some((path, _explicit)) = locate(cli) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "config file {} not found: check the path, or run `assetgc init` to write one",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot read config file {}: {e}",
                path.display()
            )));
        }
    };
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    parse(&text, &path.display().to_string(), &base_dir, &|name| {
        std::env::var(name).ok()
    })
    .map(|mut c| {
        c.path = Some(path);
        Some(c)
    })
}

/// The configuration the environment alone gives when there is no file (SPEC §2): a database
/// named `default` from `DATABASE_URL`. References always need a file, so this serves `check`.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Config>> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let bad = |what: &str, msg: String| Error::Config {
        path: what.into(),
        line: None,
        msg,
    };
    let base_dir = std::path::absolute(".").unwrap_or_else(|_| PathBuf::from("."));
    let mut databases = Vec::new();
    if let Some(url) = var("DATABASE_URL") {
        databases
            .push(database_config("default", &url, &base_dir).map_err(|m| bad("DATABASE_URL", m))?);
    }
    let mut stores = Vec::new();
    if var("CLOUDCUBE_URL").is_some() && var("CLOUDINARY_URL").is_some() {
        return Err(bad(
            "the environment",
            "CLOUDCUBE_URL and CLOUDINARY_URL are both set and would both be the store `default`; write an assetgc.toml that names each store".into(),
        ));
    }
    if let Some(url) = var("CLOUDINARY_URL") {
        let c = CloudinaryLocation::parse(&url).map_err(|m| bad("CLOUDINARY_URL", m))?;
        stores.push(env_store(StoreLocation::Cloudinary(c)));
    }
    if let Some(url) = var("CLOUDCUBE_URL") {
        let mut s3 = cloudcube(&url)
            .unwrap_or_else(|| Err(format!("`{url}` is not a Cloudcube URL (https://cloud-cube-us2.s3.amazonaws.com/<cube>)")))
            .map_err(|m| bad("CLOUDCUBE_URL", m))?;
        s3.access_key_id = var("CLOUDCUBE_ACCESS_KEY_ID");
        s3.secret_access_key = var("CLOUDCUBE_SECRET_ACCESS_KEY").map(Secret);
        stores.push(env_store(StoreLocation::S3(s3)));
    }
    if databases.is_empty() && stores.is_empty() {
        return Ok(None);
    }
    Ok(Some(Config {
        path: None,
        app_name: "assetgc".into(),
        state_url: StateUrl::Sqlite(base_dir.join("assetgc.db")),
        reports_dir: base_dir.join("reports"),
        base_dir,
        stores,
        databases,
        references: Vec::new(),
        policies: Vec::new(),
        expiry: Vec::new(),
        queue: QueueSettings::default(),
        safety: Safety::default(),
        server: ServerConfig::default(),
        notify: NotifyConfig::default(),
        jobs: Vec::new(),
    }))
}

/// The store `default` an environment variable gives, with every default of SPEC §2.
fn env_store(location: StoreLocation) -> StoreConfig {
    StoreConfig {
        name: "default".into(),
        location,
        ignore: Ignore::default(),
        min_age: DEFAULT_MIN_AGE,
        public_url: None,
        quarantine: Some(Quarantine {
            prefix: DEFAULT_QUARANTINE_PREFIX.into(),
            keep: DEFAULT_QUARANTINE_KEEP,
        }),
        list_concurrency: DEFAULT_LIST_CONCURRENCY,
        max_lookups: DEFAULT_MAX_LOOKUPS,
        overlaps: Vec::new(),
    }
}

/// Parses and validates a configuration text. `env` looks variables up (the process environment
/// in real runs, a map in tests).
pub fn parse(
    text: &str,
    origin: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let cx = Cx {
        text,
        origin,
        base_dir,
        env,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| cx.line_of(s.start));
        let msg = e.message().trim().replace('\n', " ");
        let msg = if msg.starts_with("unknown field") {
            format!("{msg}; remove the key or fix its spelling")
        } else {
            msg
        };
        cx.err(line, msg)
    })?;
    cx.build(&raw)
}

struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn err(&self, line: Option<usize>, msg: impl Into<String>) -> Error {
        Error::Config {
            path: self.origin.to_string(),
            line,
            msg: msg.into(),
        }
    }

    fn err_at<T>(&self, spanned: &Spanned<T>, msg: impl Into<String>) -> Error {
        self.err(Some(self.line_of(spanned.span().start)), msg)
    }

    /// `${VAR}` and `${VAR:-default}` from the environment; `$${` is a literal `${`.
    fn expand(&self, value: &Text) -> Result<String> {
        expand_vars(value.get_ref(), self.env).map_err(|msg| self.err_at(value, msg))
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        resolve(self.base_dir, p)
    }

    fn duration(&self, value: &Text, what: &str) -> Result<Duration> {
        let s = self.expand(value)?;
        parse_duration(&s).map_err(|e| self.err_at(value, format!("{what}: {e}")))
    }

    fn build(&self, raw: &RawConfig) -> Result<Config> {
        let app_name = match &raw.app_name {
            Some(t) => self.expand(t)?,
            None => "assetgc".to_string(),
        };
        let state_url = match raw.state.as_ref().and_then(|s| s.url.as_ref()) {
            Some(t) => {
                let url = self.expand(t)?;
                self.state_url(&url).map_err(|m| self.err_at(t, m))?
            }
            None => StateUrl::Sqlite(self.base_dir.join("assetgc.db")),
        };
        let reports_dir = match raw.reports.as_ref().and_then(|r| r.dir.as_ref()) {
            Some(t) => self.resolve_path(&self.expand(t)?),
            None => self.base_dir.join("reports"),
        };

        let queue = self.queue(raw.queue.as_ref())?;
        let safety = self.safety(raw.safety.as_ref())?;
        let mut stores = Vec::new();
        for (name, store) in &raw.stores {
            let built = self.store(name, store)?;
            // One account, one budget (SPEC §2): the stores on it share its calls.
            if let Some(c) = built.location.cloudinary()
                && let Some(other) = stores.iter().find(|o: &&StoreConfig| {
                    o.location
                        .cloudinary()
                        .is_some_and(|oc| oc.account() == c.account() && oc.budget != c.budget)
                })
            {
                return Err(self.err_at(
                    store,
                    format!(
                        "[stores.{name}] and [stores.{}] are on the same Cloudinary account but their api_budget differs; give them equal api_budget settings",
                        other.name
                    ),
                ));
            }
            stores.push(built);
        }
        self.check_overlaps(raw, &stores)?;
        let mut databases = Vec::new();
        for (name, db) in &raw.databases {
            let url = self.expand(&db.get_ref().url)?;
            databases.push(
                database_config(name, &url, self.base_dir)
                    .map_err(|m| self.err_at(&db.get_ref().url, m))?,
            );
        }
        let mut references = Vec::new();
        for (i, r) in raw.references.iter().enumerate() {
            let reference = self.reference(i, r, &stores, &databases)?;
            if references
                .iter()
                .any(|o: &ReferenceConfig| o.name == reference.name)
            {
                return Err(self.err_at(
                    r,
                    format!(
                        "two references are named `{}`; give each its own name",
                        reference.name
                    ),
                ));
            }
            references.push(reference);
        }
        let policies = self.policies(&raw.policies, &stores, &databases, &references)?;
        let expiry = self.expiries(&raw.expiry, &stores, &databases, &references)?;
        let server = self.server(raw.server.as_ref())?;
        let jobs = self.jobs(&raw.jobs)?;
        let notify = self.notify(raw.notify.as_ref())?;
        Ok(Config {
            path: None,
            base_dir: self.base_dir.to_path_buf(),
            app_name,
            state_url,
            reports_dir,
            stores,
            databases,
            references,
            policies,
            expiry,
            queue,
            safety,
            server,
            jobs,
            notify,
        })
    }

    /// `overlaps` may name only configured stores, never the store itself.
    fn check_overlaps(&self, raw: &RawConfig, stores: &[StoreConfig]) -> Result<()> {
        for (name, store) in &raw.stores {
            let Some(list) = &store.get_ref().overlaps else {
                continue;
            };
            for t in list.get_ref() {
                let other = self.expand(t)?;
                if other == *name || !stores.iter().any(|s| s.name == other) {
                    return Err(self.err_at(
                        t,
                        format!(
                            "[stores.{name}] overlaps: `{other}` is not another configured store; name a [stores.*] section"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn queue(&self, raw: Option<&Spanned<RawQueue>>) -> Result<QueueSettings> {
        let mut q = QueueSettings::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok(q);
        };
        if let Some(n) = &raw.batch_size {
            q.batch_size = usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=MAX_BATCH).contains(n))
                .ok_or_else(|| {
                    self.err_at(n, format!("[queue] batch_size must be 1 to {MAX_BATCH}"))
                })?;
        }
        if let Some(n) = &raw.max_attempts {
            q.max_attempts = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| self.err_at(n, "[queue] max_attempts must be 1 or more"))?;
        }
        if let Some(t) = &raw.backoff {
            q.backoff = self.duration(t, "[queue] backoff")?;
        }
        if let Some(t) = &raw.backoff_max {
            q.backoff_max = self.duration(t, "[queue] backoff_max")?;
        }
        if let Some(t) = raw.backoff_max.as_ref().or(raw.backoff.as_ref())
            && q.backoff_max < q.backoff
        {
            return Err(self.err_at(t, "[queue] backoff_max must be at least backoff"));
        }
        Ok(q)
    }

    fn safety(&self, raw: Option<&Spanned<RawSafety>>) -> Result<Safety> {
        let mut s = Safety::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok(s);
        };
        if let Some(v) = &raw.max_orphan_share {
            let x = *v.get_ref();
            if !(x > 0.0 && x <= 1.0) {
                return Err(self.err_at(
                    v,
                    "[safety] max_orphan_share must be above 0 and at most 1 (0.5 = half the objects scanned)",
                ));
            }
            s.max_orphan_share = x;
        }
        if let Some(v) = &raw.max_orphan_jump {
            let x = *v.get_ref();
            if !(x >= 1.0 && x.is_finite()) {
                return Err(self.err_at(v, "[safety] max_orphan_jump must be 1 or more"));
            }
            s.max_orphan_jump = x;
        }
        Ok(s)
    }

    fn state_url(&self, url: &str) -> std::result::Result<StateUrl, String> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err("[state] url needs a file, e.g. sqlite://assetgc.db".into());
            }
            return Ok(StateUrl::Sqlite(self.resolve_path(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Checked here so that a malformed URL is a config error (exit 2), not an
            // unreachable state database.
            return match <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url) {
                Ok(_) => Ok(StateUrl::Postgres(Secret(url.to_string()))),
                Err(_) => Err(format!(
                    "[state] url `{}` is not a PostgreSQL URL; write postgres://user:password@host:5432/database",
                    redact_url(url)
                )),
            };
        }
        Err(format!(
            "[state] url `{}` is not a sqlite:// URL",
            redact_url(url)
        ))
    }

    fn store(&self, name: &str, spanned: &Spanned<RawStore>) -> Result<StoreConfig> {
        let raw = spanned.get_ref();
        if !valid_name(name) {
            return Err(self.err_at(
                spanned,
                format!("store name `{name}`: use letters, digits, `-` and `_`"),
            ));
        }
        let url = self.expand(&raw.url)?;
        let location = self
            .store_location(&url)
            .map_err(|m| self.err_at(&raw.url, format!("[stores.{name}] url: {m}")))?;
        if !matches!(location, StoreLocation::Cloudinary(_))
            && let Some((key, span)) = raw.first_cloudinary_key()
        {
            return Err(self.err(
                Some(self.line_of(span.start)),
                format!("[stores.{name}] {key} is for Cloudinary stores (url = \"cloudinary://KEY:SECRET@CLOUD\"); remove it"),
            ));
        }
        let location = match location {
            StoreLocation::Cloudinary(c) => {
                StoreLocation::Cloudinary(self.cloudinary_settings(name, raw, c)?)
            }
            StoreLocation::S3(s3) => StoreLocation::S3(self.s3_settings(name, raw, s3)?),
            StoreLocation::Gcs(c) => StoreLocation::Gcs(self.cloud_settings(name, raw, c, false)?),
            StoreLocation::Azure(c) => {
                StoreLocation::Azure(self.cloud_settings(name, raw, c, true)?)
            }
            local @ StoreLocation::Local { .. } => {
                if let Some((key, span)) = raw.first_s3_key(true) {
                    return Err(self.err(
                        Some(self.line_of(span.start)),
                        format!("[stores.{name}] {key} is for S3 stores (url = \"s3://bucket/prefix\"); remove it"),
                    ));
                }
                local
            }
        };
        let mut patterns = Vec::new();
        for g in &raw.ignore {
            patterns.push(self.expand(g)?);
        }
        for (g, p) in raw.ignore.iter().zip(&patterns) {
            Ignore::new(std::slice::from_ref(p))
                .map_err(|m| self.err_at(g, format!("[stores.{name}] ignore: {m}")))?;
        }
        let ignore = Ignore::new(&patterns).map_err(|m| self.err(None, m))?;
        let min_age = match &raw.min_age {
            Some(t) => self.duration(t, &format!("[stores.{name}] min_age"))?,
            None => DEFAULT_MIN_AGE,
        };
        let public_url = self.public_url(name, raw.public_url.as_ref())?;
        let quarantine = self.quarantine(name, raw.quarantine.as_ref())?;
        let positive = |v: &Option<Spanned<i64>>, what: &str, default: usize| -> Result<usize> {
            match v {
                None => Ok(default),
                Some(n) => usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        self.err_at(n, format!("[stores.{name}] {what} must be 1 or more"))
                    }),
            }
        };
        Ok(StoreConfig {
            name: name.to_string(),
            location,
            ignore,
            min_age,
            public_url,
            quarantine,
            list_concurrency: positive(
                &raw.list_concurrency,
                "list_concurrency",
                DEFAULT_LIST_CONCURRENCY,
            )?,
            max_lookups: positive(&raw.max_lookups, "max_lookups", DEFAULT_MAX_LOOKUPS)?,
            overlaps: match &raw.overlaps {
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|t| self.expand(t))
                    .collect::<Result<_>>()?,
                None => Vec::new(),
            },
        })
    }

    /// A store's `quarantine`: on with the defaults when absent, `false`, or `{ prefix, keep }`.
    fn quarantine(
        &self,
        name: &str,
        raw: Option<&Spanned<RawQuarantine>>,
    ) -> Result<Option<Quarantine>> {
        Ok(match raw {
            None => Some(Quarantine {
                prefix: DEFAULT_QUARANTINE_PREFIX.to_string(),
                keep: DEFAULT_QUARANTINE_KEEP,
            }),
            Some(q) => match q.get_ref() {
                RawQuarantine::Switch(false) => None,
                RawQuarantine::Switch(true) => Some(Quarantine {
                    prefix: DEFAULT_QUARANTINE_PREFIX.to_string(),
                    keep: DEFAULT_QUARANTINE_KEEP,
                }),
                RawQuarantine::Table(t) => {
                    let expand = |v: &str| expand_vars(v, self.env).map_err(|m| self.err_at(q, m));
                    let prefix = match &t.prefix {
                        Some(p) => expand(p)?,
                        None => DEFAULT_QUARANTINE_PREFIX.to_string(),
                    };
                    let bad = prefix.is_empty()
                        || !prefix.ends_with('/')
                        || !crate::key::is_representable(prefix.trim_end_matches('/'));
                    if bad {
                        return Err(self.err_at(
                            q,
                            format!(
                                "[stores.{name}] quarantine prefix `{prefix}` must be a folder like `.assetgc-trash/`"
                            ),
                        ));
                    }
                    let keep = match &t.keep {
                        Some(k) => parse_duration(&expand(k)?).map_err(|e| {
                            self.err_at(q, format!("[stores.{name}] quarantine keep: {e}"))
                        })?,
                        None => DEFAULT_QUARANTINE_KEEP,
                    };
                    Some(Quarantine { prefix, keep })
                }
            },
        })
    }

    /// A store's `public_url`: an http(s) URL.
    fn public_url(&self, name: &str, raw: Option<&Text>) -> Result<Option<String>> {
        Ok(match raw {
            Some(t) => {
                let u = self.expand(t)?;
                let parsed = url::Url::parse(&u).map_err(|e| {
                    self.err_at(
                        t,
                        format!("[stores.{name}] public_url `{}`: {e}", redact_url(&u)),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(self.err_at(
                        t,
                        format!("[stores.{name}] public_url must start with http:// or https://"),
                    ));
                }
                Some(u)
            }
            None => None,
        })
    }

    fn store_location(&self, url: &str) -> std::result::Result<StoreLocation, String> {
        if url.trim().is_empty() {
            return Err(
                "is empty: set it to the folder that holds the files, e.g. \"./media\"".into(),
            );
        }
        let lower = url.to_ascii_lowercase();
        if let Some(scheme) = ["s3://", "gs://", "az://"]
            .into_iter()
            .find(|s| lower.starts_with(s))
        {
            // `scheme://key:secret@bucket`: no bucket name holds `@` or `:`. The URL is not
            // repeated, a secret may be in it (and, when it holds a `/`, past the first `/`).
            let bucket = url[scheme.len()..].split('/').next().unwrap_or_default();
            if bucket.contains(['@', ':']) {
                return Err(format!(
                    "{scheme}… URLs take no credentials (`user:secret@`): name only the bucket, {}",
                    if scheme == "s3://" {
                        "and set access_key_id and secret_access_key in the table, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    } else if scheme == "gs://" {
                        "and set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT_KEY"
                    } else {
                        "and set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY"
                    }
                ));
            }
        }
        if let Some(rest) = lower.strip_prefix("s3://").map(|_| &url[5..]) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(StoreLocation::S3(S3Location::new(bucket, prefix, None)?));
        }
        if let Some(cube) = cloudcube(url) {
            return Ok(StoreLocation::S3(cube?));
        }
        for (scheme, azure) in [("gs://", false), ("az://", true)] {
            if lower.starts_with(scheme) {
                let rest = &url[scheme.len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let loc = CloudLocation::new(bucket, prefix)?;
                return Ok(if azure {
                    StoreLocation::Azure(loc)
                } else {
                    StoreLocation::Gcs(loc)
                });
            }
        }
        if lower.starts_with("cloudinary://") {
            return CloudinaryLocation::parse(url).map(StoreLocation::Cloudinary);
        }
        for scheme in ["http://", "https://"] {
            if lower.starts_with(scheme) {
                return Err(format!(
                    "`{}`: {} stores are not supported yet by this version; use a folder path",
                    redact_url(url),
                    scheme.trim_end_matches("://")
                ));
            }
        }
        if lower.starts_with("file:") {
            let rest = &url[5..];
            let path = if let Some(abs) = rest.strip_prefix("//") {
                // file:///abs/path, or file://relative (taken from the config's folder)
                abs.to_string()
            } else {
                rest.to_string()
            };
            let decoded = percent_encoding::percent_decode_str(&path)
                .decode_utf8()
                .map_err(|_| "the path is not UTF-8 once decoded".to_string())?;
            return Ok(StoreLocation::Local {
                root: self.resolve_path(&decoded),
            });
        }
        if url.contains("://") {
            return Err(format!(
                "`{}` is not a store URL this version knows; use a folder path or file://",
                redact_url(url)
            ));
        }
        Ok(StoreLocation::Local {
            root: self.resolve_path(url),
        })
    }

    /// Fills an S3 location from the store's table, then the usual environment variables:
    /// `AWS_*` for S3, `CLOUDCUBE_*` for a Cloudcube URL.
    fn s3_settings(&self, name: &str, raw: &RawStore, mut s3: S3Location) -> Result<S3Location> {
        let env = |k: &str| (self.env)(k).filter(|v| !v.is_empty());
        let text = |t: &Option<Text>| -> Result<Option<String>> {
            t.as_ref().map(|t| self.expand(t)).transpose()
        };
        let (key_var, secret_var) = if s3.cloudcube {
            ("CLOUDCUBE_ACCESS_KEY_ID", "CLOUDCUBE_SECRET_ACCESS_KEY")
        } else {
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        };
        s3.access_key_id = text(&raw.access_key_id)?.or_else(|| env(key_var));
        s3.secret_access_key = text(&raw.secret_access_key)?
            .or_else(|| env(secret_var))
            .map(Secret);
        if !s3.cloudcube {
            s3.session_token = env("AWS_SESSION_TOKEN").map(Secret);
        }
        if let Some(region) = text(&raw.region)?.or_else(|| {
            (!s3.cloudcube)
                .then(|| env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")))
                .flatten()
        }) {
            s3.region = region;
        }
        s3.endpoint = text(&raw.endpoint)?.or_else(|| {
            (!s3.cloudcube)
                .then(|| env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")))
                .flatten()
        });
        if let Some(e) = &s3.endpoint {
            let parsed = url::Url::parse(e)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            if parsed.is_none() {
                let at = raw.endpoint.as_ref().map_or(raw.url.span(), Spanned::span);
                return Err(self.err(
                    Some(self.line_of(at.start)),
                    format!(
                        "[stores.{name}] endpoint `{}` is not an http(s) URL",
                        redact_url(e)
                    ),
                ));
            }
        }
        let http_endpoint = s3
            .endpoint
            .as_deref()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        s3.allow_http = raw
            .allow_http
            .as_ref()
            .map_or(http_endpoint, |b| *b.get_ref());
        if http_endpoint && !s3.allow_http {
            return Err(self.err_at(
                raw.allow_http.as_ref().map_or(&raw.url, |_| &raw.url),
                format!("[stores.{name}] the endpoint is plain http:// but allow_http = false; use https:// or set allow_http = true"),
            ));
        }
        s3.virtual_hosted_style = raw
            .virtual_hosted_style
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        Ok(s3)
    }

    /// Fills a Cloudinary location from the store's `resource_types`, `delivery_type` and
    /// `api_budget`.
    fn cloudinary_settings(
        &self,
        name: &str,
        raw: &RawStore,
        mut loc: CloudinaryLocation,
    ) -> Result<CloudinaryLocation> {
        if let Some((key, span)) = raw.first_s3_key(true) {
            return Err(self.err(
                Some(self.line_of(span.start)),
                format!("[stores.{name}] {key} is for S3 stores; a Cloudinary store takes everything from its url (use ?upload_prefix=URL for another API address)"),
            ));
        }
        if let Some(types) = &raw.resource_types {
            let mut parsed = Vec::new();
            for t in types.get_ref() {
                let v = self.expand(t)?;
                let rt = ResourceType::parse_cloudinary(&v).ok_or_else(|| {
                    self.err_at(
                        t,
                        format!("[stores.{name}] resource_types: `{v}` is not image, video or raw"),
                    )
                })?;
                if !parsed.contains(&rt) {
                    parsed.push(rt);
                }
            }
            if parsed.is_empty() {
                return Err(self.err_at(
                    types,
                    format!("[stores.{name}] resource_types is empty; leave it out for image and video, or list e.g. [\"image\", \"video\", \"raw\"]"),
                ));
            }
            loc.resource_types = parsed;
        }
        if let Some(t) = &raw.delivery_type {
            let v = self.expand(t)?;
            if !matches!(v.as_str(), "upload" | "private" | "authenticated") {
                return Err(self.err_at(
                    t,
                    format!("[stores.{name}] delivery_type `{v}` is not upload, private or authenticated"),
                ));
            }
            loc.delivery_type = v;
        }
        if let Some(b) = &raw.api_budget {
            let rb = b.get_ref();
            let what = format!("[stores.{name}] api_budget");
            if let Some(n) = &rb.calls_per_hour {
                loc.budget.calls_per_hour = u64::try_from(*n.get_ref())
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        self.err_at(n, format!("{what}: calls_per_hour must be 1 or more"))
                    })?;
            }
            for (v, field, slot) in [
                (&rb.warn_at, "warn_at", &mut loc.budget.warn_at),
                (&rb.stop_at, "stop_at", &mut loc.budget.stop_at),
            ] {
                if let Some(v) = v {
                    let x = *v.get_ref();
                    if !(x > 0.0 && x <= 1.0) {
                        return Err(self.err_at(
                            v,
                            format!("{what}: {field} is a share of the budget, above 0 and at most 1 (e.g. 0.8)"),
                        ));
                    }
                    *slot = x;
                }
            }
            if loc.budget.warn_at > loc.budget.stop_at {
                return Err(self.err_at(
                    b,
                    format!(
                        "{what}: warn_at ({}) is above stop_at ({})",
                        loc.budget.warn_at, loc.budget.stop_at
                    ),
                ));
            }
            if let Some(t) = &rb.min_interval {
                loc.budget.min_interval = self.duration(t, &format!("{what} min_interval"))?;
            }
            if let Some(t) = &rb.max_wait {
                loc.budget.max_wait = self.duration(t, &format!("{what} max_wait"))?;
            }
        }
        Ok(loc)
    }

    /// Fills a GCS or Azure location from the store's `endpoint` and the usual variables.
    fn cloud_settings(
        &self,
        name: &str,
        raw: &RawStore,
        mut loc: CloudLocation,
        azure: bool,
    ) -> Result<CloudLocation> {
        let env = |k: &str| (self.env)(k).filter(|v| !v.is_empty());
        let kind = if azure { "Azure" } else { "GCS" };
        // `endpoint` serves emulators and private endpoints of every cloud store.
        if let Some((key, span)) = raw.first_s3_key(false) {
            return Err(self.err(
                Some(self.line_of(span.start)),
                format!(
                    "[stores.{name}] {key} is for S3 stores; {kind} stores take their credentials from the environment"
                ),
            ));
        }
        let endpoint = raw.endpoint.as_ref().map(|t| self.expand(t)).transpose()?;
        if azure {
            loc.account =
                env("AZURE_STORAGE_ACCOUNT_NAME").or_else(|| env("AZURE_STORAGE_ACCOUNT"));
            loc.secret = env("AZURE_STORAGE_ACCOUNT_KEY")
                .or_else(|| env("AZURE_STORAGE_KEY"))
                .or_else(|| env("AZURE_STORAGE_ACCESS_KEY"))
                .map(Secret);
            loc.use_emulator = env("AZURE_STORAGE_USE_EMULATOR")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            loc.endpoint =
                endpoint.or_else(|| env("AZURITE_BLOB_STORAGE_URL").filter(|_| loc.use_emulator));
            if loc.account.is_none() && !loc.use_emulator {
                return Err(self.err_at(
                    &raw.url,
                    format!(
                        "[stores.{name}] an az:// store needs AZURE_STORAGE_ACCOUNT_NAME (and AZURE_STORAGE_ACCOUNT_KEY), or AZURE_STORAGE_USE_EMULATOR=true"
                    ),
                ));
            }
        } else {
            loc.secret = env("GOOGLE_SERVICE_ACCOUNT_KEY")
                .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS"))
                .or_else(|| env("GOOGLE_SERVICE_ACCOUNT_PATH"))
                .or_else(|| env("GOOGLE_SERVICE_ACCOUNT"))
                .map(Secret);
            loc.endpoint = endpoint.or_else(|| {
                env("STORAGE_EMULATOR_HOST").map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                })
            });
        }
        Ok(loc)
    }

    /// The store or database a reference names, or the only one there is.
    fn pick<T>(
        &self,
        owner: &str,
        what: &str,
        value: Option<&Text>,
        names: &[&str],
        at: &Spanned<T>,
    ) -> Result<usize> {
        match value {
            Some(t) => {
                let wanted = self.expand(t)?;
                names.iter().position(|n| *n == wanted).ok_or_else(|| {
                    self.err_at(
                        t,
                        format!(
                            "{owner}: unknown {what} `{wanted}`; known {what}s: {}",
                            list_names(names.iter().copied())
                        ),
                    )
                })
            }
            None if names.len() == 1 => Ok(0),
            None => Err(self.err_at(
                at,
                format!(
                    "{owner} needs `{what} = \"...\"` (there are {} {what}s)",
                    names.len()
                ),
            )),
        }
    }

    /// A reference's `key_format`, checked against its store: `cloudinary` only on Cloudinary
    /// stores (and its default there), `url` only with a `public_url` to strip.
    fn key_format<T>(
        &self,
        name: &str,
        raw_format: Option<&Spanned<RawKeyFormat>>,
        spanned: &Spanned<T>,
        store: &StoreConfig,
    ) -> Result<KeyFormat> {
        let cloudinary = store.location.cloudinary().is_some();
        let key_format = match raw_format {
            None if cloudinary => KeyFormat::Cloudinary,
            None => KeyFormat::Path,
            Some(kf) => match kf.get_ref() {
                RawKeyFormat::Name(n) => match expand_vars(n, self.env)
                    .map_err(|m| self.err_at(kf, m))?
                    .as_str()
                {
                    "path" => KeyFormat::Path,
                    "url" => KeyFormat::Url,
                    "cloudinary" => KeyFormat::Cloudinary,
                    other => {
                        return Err(self.err_at(
                            kf,
                            format!(
                                "{name}: key_format `{other}` is not one of path, url, cloudinary, {{ regex = '...' }}"
                            ),
                        ));
                    }
                },
                RawKeyFormat::Regex(r) => {
                    let pattern =
                        expand_vars(&r.regex, self.env).map_err(|m| self.err_at(kf, m))?;
                    KeyFormat::regex(&pattern)
                        .map_err(|m| self.err_at(kf, format!("{name}: {m}")))?
                }
            },
        };
        let format_line = self.line_of(raw_format.map_or(spanned.span().start, |k| k.span().start));
        if matches!(key_format, KeyFormat::Cloudinary) && !cloudinary {
            return Err(self.err(
                Some(format_line),
                format!(
                    "{name}: key_format \"cloudinary\" reads Cloudinary public_ids, but store `{}` is not a Cloudinary store; use path or url",
                    store.name
                ),
            ));
        }
        if matches!(key_format, KeyFormat::Path | KeyFormat::Url) && cloudinary {
            return Err(self.err(
                Some(format_line),
                format!(
                    "{name}: store `{}` is a Cloudinary store, whose keys are public_ids; use key_format = \"cloudinary\" (it reads CloudinaryField values, delivery URLs and bare public_ids)",
                    store.name
                ),
            ));
        }
        // An S3 store knows its bucket's own addresses; other stores need a public_url.
        if matches!(key_format, KeyFormat::Url)
            && store.public_url.is_none()
            && !matches!(store.location, StoreLocation::S3(_))
        {
            let line = format_line;
            return Err(self.err(
                Some(line),
                format!(
                    "{name} reads URLs, but store `{}` has no public_url to strip; set [stores.{}] public_url",
                    store.name, store.name
                ),
            ));
        }
        Ok(key_format)
    }

    fn reference(
        &self,
        index: usize,
        spanned: &Spanned<RawReference>,
        stores: &[StoreConfig],
        databases: &[DatabaseConfig],
    ) -> Result<ReferenceConfig> {
        let raw = spanned.get_ref();
        let n = index + 1;
        let name = match &raw.name {
            Some(t) => {
                let s = self.expand(t)?;
                if s.trim().is_empty() {
                    return Err(self.err_at(t, "a reference's name must not be empty"));
                }
                s
            }
            None => {
                return Err(self.err_at(
                    spanned,
                    format!("[[references]] #{n} has no `name`; give it one, e.g. name = \"prompt images\""),
                ));
            }
        };
        let store_names: Vec<&str> = stores.iter().map(|s| s.name.as_str()).collect();
        let owner = format!("reference `{name}`");
        let store = self.pick(&owner, "store", raw.store.as_ref(), &store_names, spanned)?;
        let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let database = self.pick(
            &owner,
            "database",
            raw.database.as_ref(),
            &db_names,
            spanned,
        )?;
        let query = match &raw.query {
            Some(t) => {
                let q = self.expand(t)?;
                let q = q.trim().trim_end_matches(';').trim_end().to_string();
                if q.is_empty() {
                    return Err(self.err_at(t, format!("reference `{name}`: the query is empty")));
                }
                q
            }
            None => {
                return Err(self.err_at(
                    spanned,
                    format!("reference `{name}` has no `query`; it needs a SELECT that returns a `key` column"),
                ));
            }
        };
        let key_format = self.key_format(
            &format!("reference `{name}`"),
            raw.key_format.as_ref(),
            spanned,
            &stores[store],
        )?;
        let key_prefix = match &raw.key_prefix {
            Some(t) => self.expand(t)?,
            None => String::new(),
        };
        let link = match &raw.link {
            Some(t) => {
                let s = self.expand(t)?;
                Some(
                    LinkTemplate::parse(&s)
                        .map_err(|m| self.err_at(t, format!("reference `{name}`: {m}")))?,
                )
            }
            None => None,
        };
        let track = match &raw.track {
            Some(t) => Some(self.track(&name, t)?),
            None => None,
        };
        Ok(ReferenceConfig {
            name,
            database,
            store,
            query,
            key_format,
            key_prefix,
            link,
            track,
        })
    }
}

/// A config path: absolute as written, else from `base`; `.` segments dropped for display.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    full.components().collect()
}

pub(crate) fn list_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// A database section's URL, checked and, for SQLite, resolved against the config's folder.
pub fn database_config(
    name: &str,
    url: &str,
    base_dir: &Path,
) -> std::result::Result<DatabaseConfig, String> {
    let lower = url.to_ascii_lowercase();
    if url.trim().is_empty() {
        return Err(format!(
            "[databases.{name}] url is empty: set it to postgres://…, mysql://… or sqlite://…"
        ));
    }
    if let Some(rest) = lower.strip_prefix("sqlite:").map(|_| &url[7..]) {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(format!(
                "[databases.{name}] url `{url}` names no file, e.g. sqlite://app.db"
            ));
        }
        let mut read_only = false;
        for param in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match param {
                "mode=ro" => read_only = true,
                "mode=rw" => {}
                other => {
                    return Err(format!(
                        "[databases.{name}] url: SQLite parameter `{other}` is not supported (only mode=ro, mode=rw)"
                    ));
                }
            }
        }
        let p = resolve(base_dir, path);
        return Ok(DatabaseConfig {
            name: name.to_string(),
            kind: DbKind::Sqlite,
            url: Secret(url.to_string()),
            sqlite_path: Some(p),
            sqlite_read_only: read_only,
        });
    }
    let kind = if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        DbKind::Postgres
    } else if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        DbKind::MySql
    } else {
        return Err(format!(
            "[databases.{name}] url `{}` is not postgres://…, mysql://… or sqlite://…",
            redact_url(url)
        ));
    };
    let url = if lower.starts_with("mariadb://") {
        format!("mysql://{}", &url["mariadb://".len()..])
    } else {
        url.to_string()
    };
    url::Url::parse(&url).map_err(|e| {
        format!(
            "[databases.{name}] url `{}` is not a valid URL: {e}",
            redact_url(&url)
        )
    })?;
    Ok(DatabaseConfig {
        name: name.to_string(),
        kind,
        url: Secret(url),
        sqlite_path: None,
        sqlite_read_only: false,
    })
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` writes a literal `${`.
pub fn expand_vars(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body) = after.strip_prefix("${") {
            // The value is not repeated: it may hold a password (the line is named).
            let end = body.find('}').ok_or_else(|| {
                "`${` without a closing `}`; write `$${` for a literal `${`".to_string()
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let name_ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !name_ok {
                return Err(format!(
                    "`${{{}}}` is not a variable name (letters, digits and `_`); write `$${{` for a literal `${{`",
                    redact_url(inner)
                ));
            }
            match (
                env(name).filter(|v| !(v.is_empty() && default.is_some())),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (set it, or write `${{{name}:-default}}`)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The longest duration a setting or flag takes: a year count this high is a typo, and
/// `now + d` must stay a date (it is added to times before it is stored).
pub const MAX_DURATION: Duration = Duration::from_hours(100 * 8766);

/// Durations as humantime strings (`30m`, `24h`, `7d`, `0s`), at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("bad duration `{s}` (write e.g. 30m, 24h or 7d)"))?;
    if d > MAX_DURATION {
        return Err(format!("`{s}` is longer than 100 years"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB" => Some("postgres://u:hunter2@db/app".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse_text(t: &str) -> Result<Config> {
        parse(t, "assetgc.toml", Path::new("/base"), &env)
    }

    const BASE: &str = r#"
app_name = "Demo"
[stores.media]
url = "./media"
ignore = ["static/**"]
min_age = "1h"
[databases.app]
url = "sqlite://app.db"
[[references]]
name = "images"
query = "SELECT id, image AS key FROM posts;"
"#;

    #[test]
    fn state_url_takes_sqlite_or_postgres() {
        let pg = format!("{BASE}[state]\nurl = \"postgres://u:pw-secret@db.example:5432/app\"\n");
        let c = parse_text(&pg).unwrap();
        assert!(matches!(&c.state_url, StateUrl::Postgres(u) if u.expose().ends_with("/app")));
        let bad =
            format!("{BASE}[state]\nurl = \"postgres://u:pw-secret@db.example:notaport/app\"\n");
        let err = parse_text(&bad).unwrap_err().to_string();
        assert!(err.contains("is not a PostgreSQL URL"), "{err}");
        assert!(!err.contains("pw-secret"), "{err}");
        let other = format!("{BASE}[state]\nurl = \"mysql://root@db/app\"\n");
        assert!(
            parse_text(&other)
                .unwrap_err()
                .to_string()
                .contains("[state] url")
        );
    }

    #[test]
    fn quarantine_queue_and_safety_settings() {
        let text = BASE.replace(
            "min_age = \"1h\"",
            "min_age = \"1h\"\nquarantine = { prefix = \".trash/\", keep = \"2d\" }",
        );
        let text = format!(
            "{text}\n[queue]\nbatch_size = 500\nmax_attempts = 5\nbackoff = \"10s\"\nbackoff_max = \"5m\"\n[safety]\nmax_orphan_share = 0.25\nmax_orphan_jump = 4\n"
        );
        let c = parse_text(&text).unwrap();
        let q = c.stores[0].quarantine.as_ref().expect("quarantine");
        assert_eq!(q.prefix, ".trash/");
        assert_eq!(q.keep, Duration::from_hours(48));
        assert_eq!(c.queue.batch_size, 500);
        assert_eq!(c.queue.max_attempts, 5);
        assert_eq!(c.queue.backoff, Duration::from_secs(10));
        assert_eq!(c.queue.backoff_max, Duration::from_mins(5));
        assert!((c.safety.max_orphan_share - 0.25).abs() < f64::EPSILON);
        assert!((c.safety.max_orphan_jump - 4.0).abs() < f64::EPSILON);
        let off = parse_text(&BASE.replace("min_age = \"1h\"", "quarantine = false")).unwrap();
        assert!(off.stores[0].quarantine.is_none());
        for (bad, why) in [
            ("[queue]\nbatch_size = 5000\n", "batch_size"),
            ("[queue]\nmax_attempts = 0\n", "max_attempts"),
            (
                "[queue]\nbackoff = \"1h\"\nbackoff_max = \"1m\"\n",
                "backoff_max",
            ),
            ("[safety]\nmax_orphan_share = 1.5\n", "max_orphan_share"),
            ("[safety]\nmax_orphan_jump = 0.5\n", "max_orphan_jump"),
            ("[queue]\nbatch = 5\n", "batch"),
        ] {
            let err = parse_text(&format!("{BASE}\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err =
            parse_text(&BASE.replace("min_age = \"1h\"", "quarantine = { prefix = \"trash\" }"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("must be a folder"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = parse_text(BASE).unwrap();
        assert_eq!(
            c.stores[0].location,
            StoreLocation::Local {
                root: PathBuf::from("/base/media")
            }
        );
        assert_eq!(
            c.databases[0].sqlite_path.as_deref(),
            Some(Path::new("/base/app.db"))
        );
        assert_eq!(c.references[0].query, "SELECT id, image AS key FROM posts");
        assert_eq!(c.stores[0].min_age, Duration::from_hours(1));
        assert!(c.stores[0].quarantine.is_some());
        assert_eq!(c.reports_dir, PathBuf::from("/base/reports"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let t = BASE.replace("min_age = \"1h\"", "min_age = \"1h\"\nbogus = 1");
        let e = parse_text(&t).unwrap_err().to_string();
        assert!(e.contains("line 7"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn unset_variable_names_variable_and_line() {
        let t = BASE.replace("sqlite://app.db", "${NOPE}");
        let e = parse_text(&t).unwrap_err().to_string();
        assert!(e.contains("NOPE") && e.contains("line 8"), "{e}");
    }

    #[test]
    fn variables_expand_with_defaults_and_escapes() {
        assert_eq!(
            expand_vars("a${NOPE:-x}b$${LIT}", &env).unwrap(),
            "axb${LIT}"
        );
        assert_eq!(expand_vars("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand_vars("${EMPTY}", &env).unwrap(), "");
        assert!(expand_vars("${1BAD}", &env).is_err());
    }

    #[test]
    fn password_never_shows() {
        let t = BASE.replace("sqlite://app.db", "${DB}");
        let c = parse_text(&t).unwrap();
        assert_eq!(c.databases[0].display_url(), "postgres://u:***@db/app");
        assert!(!format!("{:?}", c.databases[0]).contains("hunter2"));
    }

    #[test]
    fn bad_values_are_errors_with_lines() {
        let bad_duration = BASE.replace("\"1h\"", "\"soon\"");
        assert!(
            parse_text(&bad_duration)
                .unwrap_err()
                .to_string()
                .contains("line 6")
        );
        let bad_glob = BASE.replace("static/**", "a[");
        assert!(
            parse_text(&bad_glob)
                .unwrap_err()
                .to_string()
                .contains("bad glob")
        );
        let bad_store = format!("{BASE}store = \"nope\"\n");
        let e = parse_text(&bad_store).unwrap_err().to_string();
        assert!(e.contains("unknown store `nope`"), "{e}");
        let notify = format!("{BASE}[notify]\non = \"sometimes\"\n");
        let e = parse_text(&notify).unwrap_err().to_string();
        assert!(e.contains("findings, always or never"), "{e}");
    }

    #[test]
    fn gitignore_style_globs() {
        let ig = Ignore::new(&["static/**".into(), "*.keep".into(), "/tmp".into()]).unwrap();
        assert!(ig.matches("static/a/b.png"));
        assert!(!ig.matches("x/y/.gitkeep"));
        assert!(ig.matches("x/y/a.keep"));
        assert!(ig.matches("tmp/a.jpg"));
        assert!(!ig.matches("x/tmp/a.jpg"));
        let star = Ignore::new(&["a/*.jpg".into()]).unwrap();
        assert!(star.matches("a/b.jpg"));
        assert!(!star.matches("a/b/c.jpg"));
    }

    #[test]
    fn database_url_alone_gives_a_default_database() {
        let env = |n: &str| (n == "DATABASE_URL").then(|| "postgres://u:pw@h/db".to_string());
        let c = from_env(&env).unwrap().unwrap();
        assert_eq!(c.databases[0].name, "default");
        assert!(from_env(&|_| None).unwrap().is_none());
    }

    #[test]
    fn cloudinary_url_alone_gives_a_default_store_and_never_beside_cloudcube() {
        let url = "cloudinary://k:s3cret@demo?upload_prefix=http://127.0.0.1:9/";
        let env = |n: &str| (n == "CLOUDINARY_URL").then(|| url.to_string());
        let c = from_env(&env).unwrap().unwrap();
        assert_eq!(c.stores[0].name, "default");
        let loc = c.stores[0].location.cloudinary().expect("cloudinary");
        assert_eq!(loc.api_base, "http://127.0.0.1:9");
        assert_eq!(
            loc.resource_types,
            [ResourceType::Image, ResourceType::Video]
        );
        assert!(!format!("{:?}", c.stores[0]).contains("s3cret"));
        let both = |n: &str| match n {
            "CLOUDINARY_URL" => Some(url.to_string()),
            "CLOUDCUBE_URL" => Some("https://cloud-cube-us2.s3.amazonaws.com/abc".to_string()),
            _ => None,
        };
        let err = from_env(&both).unwrap_err().to_string();
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn redact_url_hides_a_password_holding_a_slash() {
        assert_eq!(
            redact_url("s3x://AKIA:ab/cd+e@bucket/p"),
            "s3x://AKIA:***@bucket/p"
        );
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(redact_url("http://h:9000/a"), "http://h:9000/a");
    }

    fn s3_of(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Location> {
        let c = parse(text, "t.toml", Path::new("/base"), env)?;
        match &c.stores[0].location {
            StoreLocation::S3(s3) => Ok(s3.clone()),
            other => panic!("not S3: {other:?}"),
        }
    }

    #[test]
    fn s3_urls_take_the_table_then_the_aws_variables() {
        let env = |n: &str| match n {
            "AWS_ACCESS_KEY_ID" => Some("AKIA".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("shh".to_string()),
            "AWS_REGION" => Some("eu-west-3".to_string()),
            _ => None,
        };
        let s3 = s3_of("[stores.m]\nurl = \"s3://my-bucket/app/media/\"\n", &env).unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("my-bucket", "app/media/")
        );
        assert_eq!(s3.region, "eu-west-3");
        assert_eq!(s3.access_key_id.as_deref(), Some("AKIA"));
        assert!(!format!("{s3:?}").contains("shh"));
        let local = s3_of(
            "[stores.m]\nurl = \"s3://b-1\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"auto\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(local.prefix, "");
        assert_eq!(local.region, "auto");
        assert!(local.allow_http, "an http:// endpoint allows http");
        let refused = s3_of(
            "[stores.m]\nurl = \"s3://b-1\"\nendpoint = \"http://h:1\"\nallow_http = false\n",
            &env,
        );
        assert!(refused.unwrap_err().to_string().contains("allow_http"));
        assert!(s3_of("[stores.m]\nurl = \"s3://Bad_Bucket\"\n", &env).is_err());
        let on_folder = parse(
            "[stores.m]\nurl = \"./m\"\nregion = \"x\"\n",
            "t",
            Path::new("/"),
            &env,
        );
        assert!(on_folder.unwrap_err().to_string().contains("for S3 stores"));
    }

    #[test]
    fn cloudcube_urls_scope_the_store_to_the_cube() {
        let env = |n: &str| match n {
            "CLOUDCUBE_ACCESS_KEY_ID" => Some("CUBEKEY".to_string()),
            "CLOUDCUBE_SECRET_ACCESS_KEY" => Some("cubesecret".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("AWSKEY".to_string()),
            _ => None,
        };
        let s3 = s3_of(
            "[stores.cube]\nurl = \"https://cloud-cube-us2.s3.amazonaws.com/a1b2c3\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(s3.bucket, "cloud-cube-us2");
        assert_eq!(s3.prefix, "a1b2c3/");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.access_key_id.as_deref(), Some("CUBEKEY"));
        assert!(s3.cloudcube);
        let eu = s3_of(
            "[stores.c]\nurl = \"https://cloud-cube-eu2.s3.amazonaws.com/x\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(eu.region, "eu-west-1");
        assert!(
            s3_of(
                "[stores.c]\nurl = \"https://cloud-cube-us2.s3.amazonaws.com/\"\n",
                &env
            )
            .is_err()
        );
    }

    #[test]
    fn gs_and_az_urls_take_their_usual_variables() {
        let env = |n: &str| match n {
            "AZURE_STORAGE_ACCOUNT_NAME" => Some("acct".to_string()),
            "AZURE_STORAGE_ACCOUNT_KEY" => Some("azsecret".to_string()),
            "STORAGE_EMULATOR_HOST" => Some("127.0.0.1:9023".to_string()),
            _ => None,
        };
        let c = parse(
            "[stores.g]\nurl = \"gs://bkt/media/\"\n[stores.a]\nurl = \"az://cont/up\"\n",
            "t",
            Path::new("/"),
            &env,
        )
        .unwrap();
        let StoreLocation::Gcs(g) = &c.stores[0].location else {
            panic!("gs")
        };
        assert_eq!((g.bucket.as_str(), g.prefix.as_str()), ("bkt", "media/"));
        assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:9023"));
        let StoreLocation::Azure(a) = &c.stores[1].location else {
            panic!("az")
        };
        assert_eq!(a.account.as_deref(), Some("acct"));
        assert!(!format!("{a:?}").contains("azsecret"));
        let no_account = parse(
            "[stores.a]\nurl = \"az://c\"\n",
            "t",
            Path::new("/"),
            &|_| None,
        );
        assert!(
            no_account
                .unwrap_err()
                .to_string()
                .contains("AZURE_STORAGE_ACCOUNT_NAME")
        );
        let s3_key = parse(
            "[stores.g]\nurl = \"gs://b\"\nregion = \"x\"\n",
            "t",
            Path::new("/"),
            &env,
        );
        assert!(s3_key.unwrap_err().to_string().contains("for S3 stores"));
    }

    #[test]
    fn link_templates() {
        let t = LinkTemplate::parse("https://x/{slug}/{{raw}}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["slug"]);
        assert!(LinkTemplate::parse("https://x/{slug").is_err());
    }
}
