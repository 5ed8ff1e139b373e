//! Key formats: how one column value of a reference row names objects of a store.
//!
//! Every parse has three outcomes, and the difference matters to the scan: a key (the row protects
//! that object and may report it missing), "not this store's" (another host, another cloud, no
//! `key_prefix`: the row says nothing about this store), or unparsed (a warning that counts
//! towards an incomplete scan). A value is never guessed into a key that is not representable, so
//! nothing unparsed is ever looked up or matched against a listing.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use regex::Regex;

/// Cloudinary resource types; `Plain` is the empty resource type of file/S3/GCS/Azure stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Plain,
    Image,
    Video,
    Raw,
}

impl ResourceType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "",
            Self::Image => "image",
            Self::Video => "video",
            Self::Raw => "raw",
        }
    }

    /// `image`, `video` or `raw`, case-insensitive; `Plain` is never a Cloudinary type.
    #[must_use]
    pub fn parse_cloudinary(s: &str) -> Option<Self> {
        [Self::Image, Self::Video, Self::Raw]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl serde::Serialize for ResourceType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ResourceType {
    /// `""` is `Plain`; otherwise a Cloudinary type.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(Self::Plain);
        }
        Self::parse_cloudinary(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a resource type (image, video, raw)"))
        })
    }
}

/// SPEC §2 representability: non-empty UTF-8, no empty, `.` or `..` segment, no leading or
/// trailing `/`, no control character.
#[must_use]
pub fn is_representable(key: &str) -> bool {
    unrepresentable_reason(key).is_none()
}

/// Why `key` is not representable, in the words a scan warning uses; `None` when it is.
#[must_use]
pub fn unrepresentable_reason(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("empty key");
    }
    if key.chars().any(char::is_control) {
        return Some("control character");
    }
    if key.starts_with('/') {
        return Some("leading `/`");
    }
    if key.ends_with('/') {
        return Some("trailing `/`");
    }
    key.split('/').find_map(|segment| match segment {
        "" => Some("empty segment"),
        "." => Some("`.` segment"),
        ".." => Some("`..` segment"),
        _ => None,
    })
}

#[derive(Debug, Clone, Default)]
pub enum KeyFormat {
    #[default]
    Path,
    Url,
    Cloudinary,
    Regex(Regex),
}

/// What parsing needs from the store and the reference.
#[derive(Debug, Clone, Default)]
pub struct KeyContext {
    /// the store's `public_url`, e.g. `https://cdn.example.com/media` (may have a path, may end with `/`)
    pub public_url: Option<String>,
    /// the reference's `key_prefix` ("" = none): removed from each key; values without it are not this store's
    pub key_prefix: String,
    /// Cloudinary cloud name, when the store is Cloudinary (delivery URLs of another cloud are not ours)
    pub cloud_name: Option<String>,
    /// An S3 store's bucket, endpoint and prefix: the `url` format also strips the bucket's own
    /// addresses (SPEC §2).
    pub s3: Option<S3Context>,
}

/// Where an S3 store's objects are addressed besides its `public_url`.
#[derive(Debug, Clone, Default)]
pub struct S3Context {
    pub bucket: String,
    /// The store's `endpoint` (`None`: AWS).
    pub endpoint: Option<String>,
    /// The store's key prefix inside the bucket, `""` or ending in `/`.
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// `Some(Plain)` for path/url/regex; for cloudinary the type from the value or the row's
    /// `media_type`; `None` = a bare `public_id` with no usable `media_type` (matches every type,
    /// never enough to delete).
    pub resource_type: Option<ResourceType>,
    /// The normalised store key (always `is_representable`). For Cloudinary: the `public_id`.
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Zero keys and zero unparsed means "not this store's" (another host, no `key_prefix`, no
    /// regex match).
    pub keys: Vec<ParsedKey>,
    /// One short reason per value or capture that could not be parsed.
    pub unparsed: Vec<String>,
}

/// One value or capture: a key, `Ok(None)` when it is not this store's, or why it is unparsed.
type Outcome = Result<Option<ParsedKey>, &'static str>;

impl Parsed {
    /// Sized exactly: `path` values run through here about a million times a scan.
    fn one(outcome: Outcome) -> Self {
        match outcome {
            Ok(Some(key)) => Self {
                keys: vec![key],
                unparsed: Vec::new(),
            },
            Ok(None) => Self::default(),
            Err(reason) => Self {
                keys: Vec::new(),
                unparsed: vec![reason.to_owned()],
            },
        }
    }

    fn push(&mut self, outcome: Outcome) {
        match outcome {
            // A rich-text body that embeds one image twice still references one object.
            Ok(Some(key)) if !self.keys.contains(&key) => self.keys.push(key),
            Ok(_) => {}
            Err(reason) => self.unparsed.push(reason.to_owned()),
        }
    }
}

impl KeyFormat {
    /// Compiles a `{ regex = '...' }` format.
    ///
    /// # Errors
    ///
    /// One short lower-case sentence when the pattern does not compile or has no named group `key`.
    pub fn regex(pattern: &str) -> Result<KeyFormat, String> {
        let re = Regex::new(pattern).map_err(|e| match e {
            // The syntax error's text is a multi-line drawing of the pattern; its last
            // `error:` line is the part that fits in a config error.
            regex::Error::Syntax(text) => {
                let detail = text
                    .lines()
                    .find_map(|line| line.strip_prefix("error: "))
                    .unwrap_or_else(|| text.lines().next().unwrap_or_default());
                format!("invalid regex: {detail}")
            }
            regex::Error::CompiledTooBig(_) => "the regex is too big".to_owned(),
            _ => "invalid regex".to_owned(),
        })?;
        if !re.capture_names().flatten().any(|name| name == "key") {
            return Err("the regex has no named group `key`".to_owned());
        }
        Ok(KeyFormat::Regex(re))
    }

    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            KeyFormat::Path => "path",
            KeyFormat::Url => "url",
            KeyFormat::Cloudinary => "cloudinary",
            KeyFormat::Regex(_) => "regex",
        }
    }

    /// Parses one column value of a reference row.
    #[must_use]
    pub fn parse(&self, value: &str, media_type: Option<&str>, ctx: &KeyContext) -> Parsed {
        match self {
            KeyFormat::Path => Parsed::one(plain(path_key(value, &ctx.key_prefix))),
            KeyFormat::Url => Parsed::one(url_outcome(value, ctx)),
            KeyFormat::Cloudinary => Parsed::one(cloudinary_key(value, media_type, ctx)),
            KeyFormat::Regex(re) => {
                let mut parsed = Parsed::default();
                for captures in re.captures_iter(value) {
                    let Some(capture) = captures.name("key").map(|m| m.as_str()) else {
                        continue;
                    };
                    if capture.is_empty() {
                        continue;
                    }
                    parsed.push(if scheme_len(capture).is_some() && !is_url_like(capture) {
                        // `data:` images and `mailto:` links in a body name nothing in any store.
                        Ok(None)
                    } else if ctx.cloud_name.is_some() {
                        // On a Cloudinary store a URL is a delivery URL and a path a public_id;
                        // read as `url`/`path` they would yield untyped keys that match nothing.
                        cloudinary_key(capture, media_type, ctx)
                    } else if is_url_like(capture) {
                        url_outcome(capture, ctx)
                    } else {
                        plain(path_key(capture, &ctx.key_prefix))
                    });
                }
                parsed
            }
        }
    }
}

fn plain<K: Into<String>>(key: Result<Option<K>, &'static str>) -> Outcome {
    key.map(|key| {
        key.map(|key| ParsedKey {
            resource_type: Some(ResourceType::Plain),
            key: key.into(),
        })
    })
}

fn url_outcome(value: &str, ctx: &KeyContext) -> Outcome {
    plain(url_key(value, ctx))
}

/// The `path` format without allocating: the key borrowed from `value`, `Ok(None)` when the value
/// is not under `key_prefix`, or why it cannot be a key.
///
/// # Errors
///
/// The reason the value cannot be a key (see [`unrepresentable_reason`]).
pub fn path_key<'a>(value: &'a str, key_prefix: &str) -> Result<Option<&'a str>, &'static str> {
    let Some(key) = strip_key_prefix(strip_leading(value), key_prefix) else {
        return Ok(None);
    };
    match unrepresentable_reason(key) {
        Some(reason) => Err(reason),
        None => Ok(Some(key)),
    }
}

/// Apps store keys relative to the store root (`a.jpg`), the site root (`/a.jpg`) or the current
/// folder (`./a.jpg`); the written forms with `/` or `./` are never representable themselves, so
/// the dropped form is the only key such a value can name.
fn strip_leading(value: &str) -> &str {
    value
        .strip_prefix("./")
        .or_else(|| value.strip_prefix('/'))
        .unwrap_or(value)
}

fn strip_key_prefix<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    // A prefix written like a path value (`/cube/`) means the same folder as `cube/`.
    let prefix = strip_leading(prefix);
    if prefix.is_empty() {
        return Some(key);
    }
    let rest = key.strip_prefix(prefix)?;
    // `cube` and `cube/` both name the folder; otherwise every key under `cube` would keep a
    // leading `/` and be unparsed.
    Some(if prefix.ends_with('/') {
        rest
    } else {
        rest.strip_prefix('/').unwrap_or(rest)
    })
}

/// Applies `key_prefix` and the representability check to a decoded key.
fn finish(key: &str, key_prefix: &str) -> Result<Option<String>, &'static str> {
    let Some(key) = strip_key_prefix(key, key_prefix) else {
        return Ok(None);
    };
    match unrepresentable_reason(key) {
        Some(reason) => Err(reason),
        None => Ok(Some(key.to_owned())),
    }
}

/// RFC 3986 percent-decoding: `+` stays `+` (that is form encoding, not URL encoding), and a `%`
/// not followed by two hex digits stays as written.
fn decode(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "not UTF-8 after percent-decoding")
}

// ---- URLs ----
//
// URLs are split by hand rather than with `url::Url`: the WHATWG parser resolves `..` and `%2e%2e`
// segments and turns `\` into `/`, so the key would no longer be what the value spells. Splitting
// by hand keeps every byte of the path, and a `..` in it ends up unparsed by the representability
// check. The `url` crate still normalises hosts (IDNA, IPv4 forms) when a plain comparison fails.

struct UrlParts<'a> {
    /// `None` for a protocol-relative `//host/path`.
    scheme: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    /// From the first `/` after the authority up to `?` or `#`; may be empty.
    path: &'a str,
}

/// Length of an RFC 3986 scheme at the start of `s` (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`
/// followed by `:`).
fn scheme_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let end = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    (bytes[end] == b':').then_some(end)
}

fn is_url_like(s: &str) -> bool {
    s.starts_with("//") || scheme_len(s).is_some_and(|n| s[n + 1..].starts_with("//"))
}

/// WHATWG parsers drop leading and trailing C0 controls and spaces, so a browser follows such a
/// value; a key cannot end in whitespace that a URL spells raw.
fn trim_url(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn split_url(s: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = match scheme_len(s) {
        Some(n) => (Some(&s[..n]), s[n + 1..].strip_prefix("//")?),
        None => (None, s.strip_prefix("//")?),
    };
    let (host, port, path) = split_authority(rest)?;
    Some(UrlParts {
        scheme,
        host,
        port,
        path,
    })
}

/// Splits `host[:port]/path?query#fragment` (userinfo dropped) into host, port and path.
fn split_authority(s: &str) -> Option<(&str, Option<&str>, &str)> {
    let end = s.find(['/', '?', '#']).unwrap_or(s.len());
    let (authority, after) = s.split_at(end);
    let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']')? + 1;
        let (host, port) = hostport.split_at(close);
        if port.is_empty() {
            (host, None)
        } else {
            (host, Some(port.strip_prefix(':')?))
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port, path))
}

fn default_port(scheme: &str) -> Option<u16> {
    [
        ("http", 80),
        ("https", 443),
        ("ws", 80),
        ("wss", 443),
        ("ftp", 21),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(scheme))
    .map(|(_, port)| port)
}

/// The port a URL names, `None` for its scheme's default; `Err` when it is not a port.
fn effective_port(scheme: &str, port: Option<&str>) -> Result<Option<u16>, &'static str> {
    let port = match port {
        None | Some("") => return Ok(None),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| "not a URL")?
        }
        Some(_) => return Err("not a URL"),
    };
    Ok((Some(port) != default_port(scheme)).then_some(port))
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// Sites move from `http` to `https` while old rows keep the old scheme; both reach one object.
fn same_scheme(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (is_http(a) && is_http(b))
}

/// `Err` when `value` is no valid host at all.
fn same_host(value: &str, base: &str) -> Result<bool, &'static str> {
    if value.eq_ignore_ascii_case(base) {
        return Ok(true);
    }
    let value = url::Host::parse(value).map_err(|_| "not a URL")?;
    Ok(url::Host::parse(base).is_ok_and(|base| base == value))
}

/// The store's `public_url`, split once per value: it is borrowed, so this costs no allocation.
struct Base<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
    path: &'a str,
}

fn parse_base(public_url: &str) -> Option<Base<'_>> {
    let parts = split_url(trim_url(public_url))?;
    let scheme = parts.scheme.unwrap_or("https");
    Some(Base {
        scheme,
        host: parts.host,
        port: effective_port(scheme, parts.port).ok()?,
        path: parts.path,
    })
}

/// The raw path under `base`, `Ok(None)` when the URL is not under it.
fn match_base<'a>(parts: &UrlParts<'a>, base: &Base) -> Result<Option<&'a str>, &'static str> {
    let scheme = parts.scheme.unwrap_or(base.scheme);
    let port = effective_port(scheme, parts.port)?;
    if !same_host(parts.host, base.host)? || !same_scheme(scheme, base.scheme) || port != base.port
    {
        return Ok(None);
    }
    Ok(strip_base_path(parts.path, base.path))
}

/// Strips the base path segment by segment, so `/media` is no prefix of `/media2/x`; segments
/// compare after decoding, so `my%20media` and `my media` are one folder.
fn strip_base_path<'a>(path: &'a str, base_path: &str) -> Option<&'a str> {
    let mut rest = path;
    for base_segment in base_path.split('/').filter(|s| !s.is_empty()) {
        rest = rest.strip_prefix('/')?;
        let end = rest.find('/').unwrap_or(rest.len());
        if !percent_decode_str(&rest[..end]).eq(percent_decode_str(base_segment)) {
            return None;
        }
        rest = &rest[end..];
    }
    Some(rest.strip_prefix('/').unwrap_or(rest))
}

fn url_key(value: &str, ctx: &KeyContext) -> Result<Option<String>, &'static str> {
    let parts = split_url(trim_url(value)).ok_or("not a URL")?;
    if ctx.public_url.is_none() && ctx.s3.is_none() {
        return Err("store has no public_url");
    }
    let mut rest = None;
    if let Some(public_url) = ctx.public_url.as_deref() {
        let base = parse_base(public_url).ok_or("store public_url is not a URL")?;
        rest = match_base(&parts, &base)?;
    }
    if rest.is_none()
        && let Some(s3) = &ctx.s3
    {
        rest = s3_rest(&parts, s3)?;
    }
    let Some(rest) = rest else {
        return Ok(None);
    };
    finish(&decode(rest)?, &ctx.key_prefix)
}

// ---- S3 addresses ----
//
// One S3 object answers at several URLs: virtual-hosted (`https://BUCKET.s3.amazonaws.com/KEY`,
// regional `BUCKET.s3.REGION.amazonaws.com`, legacy `BUCKET.s3-REGION.amazonaws.com`), path-style
// (`https://s3.REGION.amazonaws.com/BUCKET/KEY`), `s3://BUCKET/KEY`, and on a custom endpoint
// (MinIO, R2, Spaces, moto) `ENDPOINT/BUCKET/KEY` or `BUCKET.ENDPOINT-HOST/KEY`. Apps store any of
// them; every one names the same object.

/// An AWS S3 service host (`s3.amazonaws.com`, `s3.eu-west-3.amazonaws.com`,
/// `s3-eu-west-1.amazonaws.com`, `s3.dualstack.…`, website hosts, `.amazonaws.com.cn`).
fn is_aws_s3_host(host: &str) -> bool {
    let Some(service) = strip_suffix_ignore_case(host, ".amazonaws.com")
        .or_else(|| strip_suffix_ignore_case(host, ".amazonaws.com.cn"))
    else {
        return false;
    };
    let lower = service.to_ascii_lowercase();
    (lower == "s3" || lower.starts_with("s3.") || lower.starts_with("s3-"))
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// The path after `/BUCKET` (segment-wise, so `/bkt` is no prefix of `/bkt2/x`).
fn after_bucket<'a>(path: &'a str, bucket: &str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?;
    let end = rest.find('/').unwrap_or(rest.len());
    if !percent_decode_str(&rest[..end]).eq(bucket.bytes()) {
        return None;
    }
    Some(&rest[end..])
}

/// The raw path of an S3 URL relative to the store's prefix, `Ok(None)` when it is not an
/// address of this store's bucket (or lies outside its prefix).
fn s3_rest<'a>(parts: &UrlParts<'a>, s3: &S3Context) -> Result<Option<&'a str>, &'static str> {
    if !parts.scheme.is_none_or(is_http) {
        return Ok(None);
    }
    // SPEC §2 strips the AWS forms of the bucket whatever the endpoint: an app may keep AWS
    // URLs of a bucket it has since moved behind a proxy or a compatible server, and a URL
    // read as this store's only ever protects an object.
    let port = effective_port(parts.scheme.unwrap_or("https"), parts.port)?;
    let host = parts.host;
    let aws = if port.is_some() {
        None
    } else if strip_bucket_label(host, &s3.bucket).is_some_and(is_aws_s3_host) {
        Some(parts.path)
    } else if is_aws_s3_host(host) {
        after_bucket(parts.path, &s3.bucket)
    } else {
        None
    };
    let bucket_path = match (aws, s3.endpoint.as_deref()) {
        (Some(path), _) => Some(path),
        (None, Some(endpoint)) => {
            let base = parse_base(endpoint).ok_or("store endpoint is not a URL")?;
            endpoint_rest(parts, &base, &s3.bucket)?
        }
        (None, None) => None,
    };
    Ok(bucket_path.and_then(|path| strip_base_path(path, &s3.prefix)))
}

/// A custom endpoint: path-style under the endpoint's path, or virtual-hosted on its host.
fn endpoint_rest<'a>(
    parts: &UrlParts<'a>,
    base: &Base,
    bucket: &str,
) -> Result<Option<&'a str>, &'static str> {
    let scheme = parts.scheme.unwrap_or(base.scheme);
    if !same_scheme(scheme, base.scheme) || effective_port(scheme, parts.port)? != base.port {
        return Ok(None);
    }
    // A host the `url` crate rejects (`bkt.127.0.0.1`) is simply not the endpoint's.
    if same_host(parts.host, base.host).unwrap_or(false) {
        return Ok(strip_base_path(parts.path, base.path)
            .and_then(|rest| after_bucket_relative(rest, bucket)));
    }
    let virtual_host = strip_bucket_label(parts.host, bucket);
    match virtual_host {
        Some(host) if same_host(host, base.host).unwrap_or(false) => Ok(Some(parts.path)),
        _ => Ok(None),
    }
}

/// `BUCKET.rest` → `rest`, the bucket compared case-insensitively (hosts are).
fn strip_bucket_label<'a>(host: &'a str, bucket: &str) -> Option<&'a str> {
    host.get(..bucket.len())
        .filter(|label| label.eq_ignore_ascii_case(bucket))
        .and_then(|_| host.get(bucket.len()..))
        .and_then(|rest| rest.strip_prefix('.'))
}

/// `after_bucket` for a path whose leading `/` was already removed.
fn after_bucket_relative<'a>(rest: &'a str, bucket: &str) -> Option<&'a str> {
    let end = rest.find('/').unwrap_or(rest.len());
    if !percent_decode_str(&rest[..end]).eq(bucket.bytes()) {
        return None;
    }
    Some(&rest[end..])
}

// ---- Cloudinary ----

/// Delivery types of stored assets; a store lists one of them, and a reference to another still
/// names the same `public_id`.
const ASSET_DELIVERY_TYPES: [&str; 3] = ["upload", "private", "authenticated"];

/// Delivery types that render remote or generated content: such a URL names nothing stored.
const GENERATED_DELIVERY_TYPES: [&str; 18] = [
    "fetch",
    "facebook",
    "twitter",
    "twitter_name",
    "gravatar",
    "youtube",
    "hulu",
    "vimeo",
    "animoto",
    "worldstarhiphop",
    "dailymotion",
    "instagram_name",
    "multi",
    "text",
    "asset",
    "list",
    "sprite",
    "explode",
];

/// Transformation parameters of the Cloudinary URL API.
const TRANSFORMATION_PARAMETERS: &[&str] = &[
    "a", "ac", "af", "ar", "b", "bo", "br", "c", "co", "cs", "d", "dl", "dn", "dpr", "du", "e",
    "eo", "f", "fl", "fn", "fps", "g", "h", "if", "ki", "l", "o", "p", "pg", "q", "r", "so", "sp",
    "t", "u", "vc", "vs", "w", "x", "y", "z",
];

enum CloudinaryHost<'a> {
    /// `res.cloudinary.com` and its `res-N` shards: the cloud is the first path segment.
    Shared,
    /// A private CDN distribution, `<cloud>-res.cloudinary.com`.
    Private(&'a str),
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

fn cloudinary_host(host: &str) -> Option<CloudinaryHost<'_>> {
    let sub = strip_suffix_ignore_case(host, ".cloudinary.com")?;
    let shard = sub
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("res-"))
        .and_then(|_| sub.get(4..))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if sub.eq_ignore_ascii_case("res") || shard {
        return Some(CloudinaryHost::Shared);
    }
    strip_suffix_ignore_case(sub, "-res")
        .filter(|cloud| !cloud.is_empty() && !cloud.contains('.'))
        .map(CloudinaryHost::Private)
}

fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A segment made only of known `key_value` parameters (or `$variable_value` assignments).
fn is_transformation(segment: &str) -> bool {
    segment.split(',').all(|component| {
        component.split_once('_').is_some_and(|(key, _)| {
            TRANSFORMATION_PARAMETERS.contains(&key)
                || key
                    .strip_prefix('$')
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
    })
}

/// The shape of a transformation whatever its parameter names, so a parameter added to the URL
/// API after this list was written does not hide the version segment behind it.
fn looks_like_transformation(segment: &str) -> bool {
    segment.split(',').all(|component| {
        let key = component.strip_prefix('$').unwrap_or(component);
        key.split_once('_').is_some_and(|(key, _)| {
            key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    })
}

/// Index of the first `public_id` segment among those after the delivery type.
///
/// The version ends the transformations when there is one; SDKs add it whenever the `public_id` is
/// in a folder, exactly because a folder could otherwise read as a transformation. Without one,
/// only segments of known parameters are skipped: a folder like `my_photos` stays in the id.
/// The last segment is always the `public_id`'s, never a transformation.
fn public_id_start(segments: &[&str]) -> usize {
    let last = segments.len() - 1;
    let candidates = &segments[..last];
    if let Some(version) = candidates.iter().position(|s| is_version(s))
        && candidates[..version]
            .iter()
            .all(|s| looks_like_transformation(s))
    {
        return version + 1;
    }
    candidates
        .iter()
        .take_while(|s| is_transformation(s))
        .count()
}

/// For images and videos the extension is the delivery format, not part of the `public_id`; a
/// raw file's `public_id` keeps it. Formats are alphanumeric (`jpg`, `webp`, `mp4`), so a dot
/// followed by anything else (`a.final version`), or a name that is only an extension
/// (`.hidden`), stays in the id.
fn without_format(id: &str) -> &str {
    let last = id.rfind('/').map_or(0, |i| i + 1);
    let name = &id[last..];
    match name.rfind('.') {
        Some(dot)
            if dot > 0
                && dot + 1 < name.len()
                && name[dot + 1..].bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            &id[..last + dot]
        }
        _ => id,
    }
}

/// The delivery type a Cloudinary value names (`image/private/v1/a.jpg` and its delivery URL →
/// `private`); `None` for a bare public_id. A key of one delivery type never names an asset of
/// another, so typed keys of another type are refused (a `private` key on an `upload` store
/// would otherwise delete the public asset of the same public_id).
pub fn cloudinary_delivery_type(value: &str) -> Option<&str> {
    let path = match value.find("://") {
        Some(i) => value[i + 3..].split_once('/').map_or("", |(_, p)| p),
        None => value.trim_start_matches('/'),
    };
    let segments: Vec<&str> = path.splitn(4, '/').collect();
    // `type/delivery/…`, or `cloud/type/delivery/…` in a delivery URL's path.
    (0..2).find_map(|at| {
        let (t, d) = (segments.get(at)?, segments.get(at + 1)?);
        (matches!(*t, "image" | "video" | "raw")
            && (ASSET_DELIVERY_TYPES.contains(d) || GENERATED_DELIVERY_TYPES.contains(d))
            && segments.len() > at + 2)
            .then_some(*d)
    })
}

/// Parses `type/delivery/[transformations/][vN/]public_id[.ext]`; URL paths are percent-decoded,
/// stored field values are taken as written.
fn delivery_path(path: &str, url_encoded: bool, ctx: &KeyContext) -> Outcome {
    let mut parts = path.splitn(3, '/');
    let resource_type = match parts.next() {
        Some("image") => ResourceType::Image,
        Some("video") => ResourceType::Video,
        Some("raw") => ResourceType::Raw,
        _ => return Err("not a Cloudinary delivery URL"),
    };
    match parts.next() {
        Some(t) if ASSET_DELIVERY_TYPES.contains(&t) => {}
        Some(t) if GENERATED_DELIVERY_TYPES.contains(&t) => return Ok(None),
        _ => return Err("unknown Cloudinary delivery type"),
    }
    let tail = parts.next().ok_or("no public_id")?;
    let segments: Vec<&str> = tail.split('/').collect();
    let skipped: usize = segments[..public_id_start(&segments)]
        .iter()
        .map(|s| s.len() + 1)
        .sum();
    let raw_id = &tail[skipped..];
    let id = if url_encoded {
        decode(raw_id)?
    } else {
        Cow::Borrowed(raw_id)
    };
    let id = if resource_type == ResourceType::Raw {
        &id
    } else {
        without_format(&id)
    };
    Ok(finish(id, &ctx.key_prefix)?.map(|key| ParsedKey {
        resource_type: Some(resource_type),
        key,
    }))
}

fn delivery_url(parts: &UrlParts, ctx: &KeyContext) -> Outcome {
    let Some(host) = cloudinary_host(parts.host) else {
        // A custom delivery domain (CNAME) is known only through the store's public_url.
        let Some(base) = ctx.public_url.as_deref().and_then(parse_base) else {
            return Ok(None);
        };
        return match match_base(parts, &base)? {
            Some(rest) => delivery_path(rest, true, ctx),
            None => Ok(None),
        };
    };
    let path = parts.path.strip_prefix('/').unwrap_or(parts.path);
    let (cloud, rest) = match host {
        CloudinaryHost::Shared => path
            .split_once('/')
            .ok_or("not a Cloudinary delivery URL")?,
        CloudinaryHost::Private(cloud) => (cloud, path),
    };
    if ctx
        .cloud_name
        .as_deref()
        .is_some_and(|ours| !ours.eq_ignore_ascii_case(cloud))
    {
        return Ok(None);
    }
    delivery_path(rest, true, ctx)
}

fn cloudinary_key(value: &str, media_type: Option<&str>, ctx: &KeyContext) -> Outcome {
    let trimmed = trim_url(value);
    if let Some(parts) = split_url(trimmed) {
        return delivery_url(&parts, ctx);
    }
    // Delivery URLs are often stored without their scheme.
    if scheme_len(trimmed).is_none()
        && let Some((host, port, path)) = split_authority(trimmed)
        && cloudinary_host(host).is_some()
    {
        let parts = UrlParts {
            scheme: None,
            host,
            port,
            path,
        };
        return delivery_url(&parts, ctx);
    }
    // A scheme without `//` (`data:`, `mailto:`) names nothing in this cloud.
    if scheme_len(value).is_some() {
        return Ok(None);
    }
    let mut segments = value.splitn(3, '/');
    if segments
        .next()
        .is_some_and(|t| matches!(t, "image" | "video" | "raw"))
        && segments
            .next()
            .is_some_and(|t| ASSET_DELIVERY_TYPES.contains(&t))
        && segments.next().is_some()
    {
        return delivery_path(value, false, ctx);
    }
    // A bare public_id is the public_id as written: ids may contain dots, so no format is dropped.
    let resource_type = media_type
        .map(str::trim)
        .and_then(ResourceType::parse_cloudinary);
    Ok(finish(value, &ctx.key_prefix)?.map(|key| ParsedKey { resource_type, key }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    use proptest::prelude::*;

    fn ctx(public_url: &str) -> KeyContext {
        KeyContext {
            public_url: Some(public_url.to_owned()),
            ..KeyContext::default()
        }
    }

    fn cloud(name: &str) -> KeyContext {
        KeyContext {
            cloud_name: Some(name.to_owned()),
            ..KeyContext::default()
        }
    }

    fn with_prefix(mut ctx: KeyContext, prefix: &str) -> KeyContext {
        prefix.clone_into(&mut ctx.key_prefix);
        ctx
    }

    fn keys(parsed: &Parsed) -> Vec<(Option<ResourceType>, &str)> {
        parsed
            .keys
            .iter()
            .map(|k| (k.resource_type, k.key.as_str()))
            .collect()
    }

    /// The single plain key a value parses to; panics with the outcome otherwise.
    fn one(format: &KeyFormat, value: &str, ctx: &KeyContext) -> String {
        let parsed = format.parse(value, None, ctx);
        assert!(parsed.unparsed.is_empty(), "{value:?}: {parsed:?}");
        assert_eq!(parsed.keys.len(), 1, "{value:?}: {parsed:?}");
        assert_eq!(parsed.keys[0].resource_type, Some(ResourceType::Plain));
        parsed.keys[0].key.clone()
    }

    fn cloudinary(
        value: &str,
        media_type: Option<&str>,
        ctx: &KeyContext,
    ) -> (ResourceType, String) {
        let parsed = KeyFormat::Cloudinary.parse(value, media_type, ctx);
        assert!(parsed.unparsed.is_empty(), "{value:?}: {parsed:?}");
        assert_eq!(parsed.keys.len(), 1, "{value:?}: {parsed:?}");
        let key = parsed.keys[0].clone();
        (key.resource_type.expect("typed"), key.key)
    }

    fn unparsed(format: &KeyFormat, value: &str, ctx: &KeyContext) -> String {
        let parsed = format.parse(value, None, ctx);
        assert!(parsed.keys.is_empty(), "{value:?}: {parsed:?}");
        assert_eq!(parsed.unparsed.len(), 1, "{value:?}: {parsed:?}");
        parsed.unparsed[0].clone()
    }

    fn not_ours(format: &KeyFormat, value: &str, ctx: &KeyContext) {
        assert_eq!(
            format.parse(value, None, ctx),
            Parsed::default(),
            "{value:?}"
        );
    }

    // ---- representability ----

    #[test]
    fn representable_keys_follow_the_spec() {
        for key in [
            "a.jpg",
            "a/b/c.jpg",
            ".hidden/a",
            "a/.b",
            "a b",
            "é/ü",
            "%",
            "+",
            "..a",
            "a..",
        ] {
            assert!(is_representable(key), "{key:?}");
        }
        for (key, reason) in [
            ("", "empty key"),
            ("/a", "leading `/`"),
            ("a/", "trailing `/`"),
            ("a//b.jpg", "empty segment"),
            ("./a", "`.` segment"),
            ("a/./b", "`.` segment"),
            ("../x", "`..` segment"),
            ("a/..", "`..` segment"),
            ("a\nb", "control character"),
            ("a\u{7f}", "control character"),
            ("a\u{85}", "control character"),
        ] {
            assert_eq!(unrepresentable_reason(key), Some(reason), "{key:?}");
        }
    }

    #[test]
    fn resource_types_parse_case_insensitively() {
        assert_eq!(
            ResourceType::parse_cloudinary("IMAGE"),
            Some(ResourceType::Image)
        );
        assert_eq!(
            ResourceType::parse_cloudinary("Video"),
            Some(ResourceType::Video)
        );
        assert_eq!(
            ResourceType::parse_cloudinary("raw"),
            Some(ResourceType::Raw)
        );
        assert_eq!(ResourceType::parse_cloudinary(""), None);
        assert_eq!(ResourceType::parse_cloudinary("audio"), None);
        assert_eq!(ResourceType::Plain.as_str(), "");
        assert_eq!(ResourceType::Raw.as_str(), "raw");
    }

    // ---- path ----

    #[test]
    fn path_drops_exactly_one_leading_slash_or_dot_slash() {
        let ctx = KeyContext::default();
        assert_eq!(
            one(&KeyFormat::Path, "profile_pics/a.jpg", &ctx),
            "profile_pics/a.jpg"
        );
        assert_eq!(
            one(&KeyFormat::Path, "/profile_pics/a.jpg", &ctx),
            "profile_pics/a.jpg"
        );
        assert_eq!(
            one(&KeyFormat::Path, "./profile_pics/a.jpg", &ctx),
            "profile_pics/a.jpg"
        );
        assert_eq!(unparsed(&KeyFormat::Path, "//a.jpg", &ctx), "leading `/`");
        assert_eq!(unparsed(&KeyFormat::Path, "/./a.jpg", &ctx), "`.` segment");
    }

    #[test]
    fn path_never_yields_an_unrepresentable_key() {
        let ctx = KeyContext::default();
        assert_eq!(unparsed(&KeyFormat::Path, "../x", &ctx), "`..` segment");
        assert_eq!(unparsed(&KeyFormat::Path, "a//b", &ctx), "empty segment");
        assert_eq!(unparsed(&KeyFormat::Path, "", &ctx), "empty key");
        assert_eq!(unparsed(&KeyFormat::Path, "/", &ctx), "empty key");
        assert_eq!(unparsed(&KeyFormat::Path, "a/", &ctx), "trailing `/`");
        assert_eq!(
            unparsed(&KeyFormat::Path, "a\tb", &ctx),
            "control character"
        );
    }

    #[test]
    fn path_keeps_odd_names_as_written() {
        let ctx = KeyContext::default();
        for key in [
            "my photo (1).jpg",
            "ünïcödé/日本語.png",
            "100%.jpg",
            "a+b.jpg",
            "a%20b.jpg",
            "#1.jpg",
            ".hidden/a",
            "a/b/c/d/e/f/g/h/i/j.jpg",
            " leading space.jpg",
        ] {
            assert_eq!(one(&KeyFormat::Path, key, &ctx), key);
        }
    }

    #[test]
    fn path_key_prefix_is_removed_and_required() {
        let ctx = with_prefix(KeyContext::default(), "cube/");
        assert_eq!(one(&KeyFormat::Path, "cube/a.jpg", &ctx), "a.jpg");
        assert_eq!(one(&KeyFormat::Path, "/cube/a.jpg", &ctx), "a.jpg");
        assert_eq!(one(&KeyFormat::Path, "./cube/x/a.jpg", &ctx), "x/a.jpg");
        not_ours(&KeyFormat::Path, "other/a.jpg", &ctx);
        assert_eq!(unparsed(&KeyFormat::Path, "cube/", &ctx), "empty key");

        let without_slash = with_prefix(KeyContext::default(), "cube");
        assert_eq!(one(&KeyFormat::Path, "cube/a.jpg", &without_slash), "a.jpg");
        let written_as_path = with_prefix(KeyContext::default(), "/cube/");
        assert_eq!(
            one(&KeyFormat::Path, "cube/a.jpg", &written_as_path),
            "a.jpg"
        );
    }

    #[test]
    fn path_key_borrows_from_the_value() {
        let value = String::from("/media/a.jpg");
        let key = path_key(&value, "").unwrap().unwrap();
        assert_eq!(key, "media/a.jpg");
        assert!(std::ptr::eq(key.as_ptr(), value[1..].as_ptr()));
        assert_eq!(path_key("x/a.jpg", "media/"), Ok(None));
        assert_eq!(path_key("a//b", ""), Err("empty segment"));
    }

    // ---- url ----

    const CDN: &str = "https://cdn.example.com/media";

    #[test]
    fn url_strips_public_url_and_drops_query_and_fragment() {
        let ctx = ctx(CDN);
        for value in [
            "https://cdn.example.com/media/a/b.jpg",
            "https://cdn.example.com/media/a/b.jpg?w=300&h=200",
            "https://cdn.example.com/media/a/b.jpg#top",
            "https://cdn.example.com/media/a/b.jpg?x#y",
            "//cdn.example.com/media/a/b.jpg",
            "  https://cdn.example.com/media/a/b.jpg\n",
        ] {
            assert_eq!(one(&KeyFormat::Url, value, &ctx), "a/b.jpg", "{value}");
        }
    }

    #[test]
    fn url_scheme_host_and_default_port_compare_loosely() {
        let ctx = ctx(CDN);
        for value in [
            "HTTPS://CDN.Example.COM/media/a.jpg",
            "https://cdn.example.com:443/media/a.jpg",
            "https://cdn.example.com:/media/a.jpg",
            "http://cdn.example.com/media/a.jpg",
            "http://cdn.example.com:80/media/a.jpg",
            "https://user:secret@cdn.example.com/media/a.jpg",
        ] {
            assert_eq!(one(&KeyFormat::Url, value, &ctx), "a.jpg", "{value}");
        }
        not_ours(
            &KeyFormat::Url,
            "https://cdn.example.com:8443/media/a.jpg",
            &ctx,
        );
        not_ours(&KeyFormat::Url, "ftp://cdn.example.com/media/a.jpg", &ctx);
    }

    #[test]
    fn url_path_is_case_sensitive_and_segment_wise() {
        let ctx = ctx(CDN);
        not_ours(
            &KeyFormat::Url,
            "https://cdn.example.com/media2/x.jpg",
            &ctx,
        );
        not_ours(&KeyFormat::Url, "https://cdn.example.com/Media/x.jpg", &ctx);
        not_ours(
            &KeyFormat::Url,
            "https://cdn.example.com/static/app.css",
            &ctx,
        );
        not_ours(&KeyFormat::Url, "https://cdn.example.com/", &ctx);
        assert_eq!(
            unparsed(&KeyFormat::Url, "https://cdn.example.com/media", &ctx),
            "empty key"
        );
        assert_eq!(
            unparsed(&KeyFormat::Url, "https://cdn.example.com/media/", &ctx),
            "empty key"
        );
    }

    #[test]
    fn url_public_url_may_end_with_slash_or_be_the_root() {
        let trailing = ctx("https://cdn.example.com/media/");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://cdn.example.com/media/a.jpg",
                &trailing
            ),
            "a.jpg"
        );
        let root = ctx("https://cdn.example.com");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://cdn.example.com/media/a.jpg",
                &root
            ),
            "media/a.jpg"
        );
        let root_slash = ctx("https://cdn.example.com/");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://cdn.example.com/a.jpg",
                &root_slash
            ),
            "a.jpg"
        );
        let encoded = ctx("https://cdn.example.com/my%20media");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://cdn.example.com/my media/a.jpg",
                &encoded
            ),
            "a.jpg"
        );
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://cdn.example.com/my%20media/a.jpg",
                &encoded
            ),
            "a.jpg"
        );
    }

    #[test]
    fn url_is_percent_decoded_with_plus_kept() {
        let ctx = ctx(CDN);
        for (value, key) in [
            (
                "https://cdn.example.com/media/my%20photo.jpg",
                "my photo.jpg",
            ),
            ("https://cdn.example.com/media/a+b.jpg", "a+b.jpg"),
            ("https://cdn.example.com/media/a%2Bb.jpg", "a+b.jpg"),
            ("https://cdn.example.com/media/%231.jpg", "#1.jpg"),
            ("https://cdn.example.com/media/100%25.jpg", "100%.jpg"),
            ("https://cdn.example.com/media/what%3F.jpg", "what?.jpg"),
            ("https://cdn.example.com/media/%C3%A9t%C3%A9.jpg", "été.jpg"),
            ("https://cdn.example.com/media/été.jpg", "été.jpg"),
            ("https://cdn.example.com/media/a%2Fb.jpg", "a/b.jpg"),
            ("https://cdn.example.com/media/.hidden/a", ".hidden/a"),
            (
                "https://cdn.example.com/media/a/b/c/d/e/f.jpg",
                "a/b/c/d/e/f.jpg",
            ),
            ("https://cdn.example.com/media/100%.jpg", "100%.jpg"),
        ] {
            assert_eq!(one(&KeyFormat::Url, value, &ctx), key, "{value}");
        }
    }

    #[test]
    fn url_dot_segments_never_become_a_traversal() {
        let ctx = ctx(CDN);
        for value in [
            "https://cdn.example.com/media/%2e%2e/etc/passwd",
            "https://cdn.example.com/media/%2E%2E/etc/passwd",
            "https://cdn.example.com/media/a/%2e%2e/b.jpg",
            "https://cdn.example.com/media/../etc/passwd",
        ] {
            assert_eq!(
                unparsed(&KeyFormat::Url, value, &ctx),
                "`..` segment",
                "{value}"
            );
        }
        assert_eq!(
            unparsed(
                &KeyFormat::Url,
                "https://cdn.example.com/media/%2e/a.jpg",
                &ctx
            ),
            "`.` segment"
        );
        assert_eq!(
            unparsed(
                &KeyFormat::Url,
                "https://cdn.example.com/media/a%2F%2Fb",
                &ctx
            ),
            "empty segment"
        );
        assert_eq!(
            unparsed(&KeyFormat::Url, "https://cdn.example.com/media/a%00b", &ctx),
            "control character"
        );
        not_ours(&KeyFormat::Url, "https://cdn.example.com/etc/passwd", &ctx);
    }

    #[test]
    fn url_that_decodes_to_invalid_utf8_is_unparsed() {
        assert_eq!(
            unparsed(
                &KeyFormat::Url,
                "https://cdn.example.com/media/%FF.jpg",
                &ctx(CDN)
            ),
            "not UTF-8 after percent-decoding"
        );
    }

    #[test]
    fn url_of_another_host_is_not_ours() {
        let ctx = ctx(CDN);
        not_ours(
            &KeyFormat::Url,
            "https://other.example.com/media/a.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Url,
            "https://cdn.example.com.evil.test/media/a.jpg",
            &ctx,
        );
        not_ours(&KeyFormat::Url, "//images.example.net/media/a.jpg", &ctx);
    }

    #[test]
    fn url_hosts_compare_after_idna() {
        let ctx = ctx("https://bücher.example/media");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://xn--bcher-kva.example/media/a.jpg",
                &ctx
            ),
            "a.jpg"
        );
        let ip = KeyContext {
            public_url: Some("http://[::1]:9000/bucket".to_owned()),
            ..KeyContext::default()
        };
        assert_eq!(
            one(&KeyFormat::Url, "http://[0:0::1]:9000/bucket/a.jpg", &ip),
            "a.jpg"
        );
    }

    #[test]
    fn url_that_is_not_a_url_is_unparsed() {
        let ctx = ctx(CDN);
        for value in [
            "media/a.jpg",
            "/media/a.jpg",
            "mailto:x@example.com",
            "https:/cdn.example.com/a",
            "https://",
        ] {
            assert_eq!(
                unparsed(&KeyFormat::Url, value, &ctx),
                "not a URL",
                "{value}"
            );
        }
        assert_eq!(
            unparsed(
                &KeyFormat::Url,
                "https://cdn.example.com:http/media/a.jpg",
                &ctx
            ),
            "not a URL"
        );
        assert_eq!(
            unparsed(&KeyFormat::Url, "https://exa mple.com/media/a.jpg", &ctx),
            "not a URL"
        );
    }

    #[test]
    fn url_without_public_url_is_unparsed() {
        assert_eq!(
            unparsed(
                &KeyFormat::Url,
                "https://cdn.example.com/media/a.jpg",
                &KeyContext::default()
            ),
            "store has no public_url"
        );
    }

    fn s3(bucket: &str, endpoint: Option<&str>, prefix: &str) -> KeyContext {
        KeyContext {
            s3: Some(S3Context {
                bucket: bucket.to_owned(),
                endpoint: endpoint.map(str::to_owned),
                prefix: prefix.to_owned(),
            }),
            ..KeyContext::default()
        }
    }

    #[test]
    fn url_strips_every_aws_address_of_the_bucket() {
        let ctx = s3("bkt", None, "");
        for value in [
            "https://bkt.s3.amazonaws.com/uploads/ok.jpg",
            "HTTPS://BKT.S3.AMAZONAWS.COM/uploads/ok.jpg",
            "http://bkt.s3.eu-west-3.amazonaws.com/uploads/ok.jpg?X-Amz-Signature=x",
            "https://bkt.s3-eu-west-1.amazonaws.com/uploads/ok.jpg",
            "https://bkt.s3.dualstack.us-east-1.amazonaws.com/uploads/ok.jpg",
            "https://s3.amazonaws.com/bkt/uploads/ok.jpg",
            "https://s3.eu-west-3.amazonaws.com/bkt/uploads/ok.jpg#x",
            "https://s3-eu-west-1.amazonaws.com/bkt/uploads/ok.jpg",
            "https://bkt.s3.cn-north-1.amazonaws.com.cn/uploads/ok.jpg",
            "//bkt.s3.amazonaws.com/uploads/ok.jpg",
            "https://bkt.s3.amazonaws.com:443/uploads/ok.jpg",
        ] {
            assert_eq!(
                one(&KeyFormat::Url, value, &ctx),
                "uploads/ok.jpg",
                "{value}"
            );
        }
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://bkt.s3.amazonaws.com/a%20b+c.jpg",
                &ctx
            ),
            "a b+c.jpg"
        );
        for value in [
            "https://other.s3.amazonaws.com/uploads/ok.jpg",
            "https://bkt2.s3.amazonaws.com/uploads/ok.jpg",
            "https://s3.amazonaws.com/bkt2/uploads/ok.jpg",
            "https://bkt.s3.amazonaws.com.evil.test/uploads/ok.jpg",
            "https://bkt.example.com/uploads/ok.jpg",
            "https://bkt.s3.amazonaws.com:8443/uploads/ok.jpg",
            "ftp://bkt.s3.amazonaws.com/uploads/ok.jpg",
        ] {
            not_ours(&KeyFormat::Url, value, &ctx);
        }
    }

    #[test]
    fn url_strips_the_endpoint_forms_of_the_bucket() {
        let ctx = s3("bkt", Some("http://127.0.0.1:5055"), "");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "http://127.0.0.1:5055/bkt/uploads/ok.jpg",
                &ctx
            ),
            "uploads/ok.jpg"
        );
        not_ours(
            &KeyFormat::Url,
            "http://127.0.0.1:5056/bkt/uploads/ok.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Url,
            "http://127.0.0.1:5055/other/uploads/ok.jpg",
            &ctx,
        );
        // The AWS forms of the bucket are stripped whatever the endpoint (SPEC §2).
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://bkt.s3.amazonaws.com/uploads/ok.jpg",
                &ctx
            ),
            "uploads/ok.jpg"
        );
        let ctx = s3("bkt", Some("https://Minio.Example.com:9000/"), "");
        for value in [
            "https://minio.example.com:9000/bkt/uploads/ok.jpg",
            "http://MINIO.example.com:9000/bkt/uploads/ok.jpg",
            "https://bkt.minio.example.com:9000/uploads/ok.jpg",
        ] {
            assert_eq!(
                one(&KeyFormat::Url, value, &ctx),
                "uploads/ok.jpg",
                "{value}"
            );
        }
        // An AWS regional endpoint keeps every AWS form.
        let ctx = s3("bkt", Some("https://s3.eu-west-3.amazonaws.com"), "");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://bkt.s3.amazonaws.com/uploads/ok.jpg",
                &ctx
            ),
            "uploads/ok.jpg"
        );
    }

    #[test]
    fn url_of_the_bucket_outside_the_store_prefix_is_not_ours() {
        let ctx = s3("bkt", None, "media/");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://bkt.s3.amazonaws.com/media/a.jpg",
                &ctx
            ),
            "a.jpg"
        );
        not_ours(
            &KeyFormat::Url,
            "https://bkt.s3.amazonaws.com/other/a.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Url,
            "https://bkt.s3.amazonaws.com/media2/a.jpg",
            &ctx,
        );
    }

    #[test]
    fn regex_url_captures_on_an_s3_store_read_the_bucket_addresses() {
        let re = KeyFormat::regex(r#"src="(?P<key>[^"]+)""#).unwrap();
        let parsed = re.parse(
            r#"<img src="https://bkt.s3.amazonaws.com/a.jpg"><img src="/b.jpg">"#,
            None,
            &s3("bkt", None, ""),
        );
        assert!(parsed.unparsed.is_empty(), "{parsed:?}");
        let keys: Vec<&str> = parsed.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["a.jpg", "b.jpg"]);
    }

    #[test]
    fn url_tries_public_url_then_the_bucket() {
        let mut ctx = s3("bkt", None, "");
        ctx.public_url = Some(CDN.to_owned());
        assert_eq!(
            one(&KeyFormat::Url, "https://cdn.example.com/media/a.jpg", &ctx),
            "a.jpg"
        );
        assert_eq!(
            one(&KeyFormat::Url, "https://bkt.s3.amazonaws.com/a.jpg", &ctx),
            "a.jpg"
        );
        not_ours(&KeyFormat::Url, "https://other.example.com/a.jpg", &ctx);
    }

    #[test]
    fn url_key_prefix_applies_after_decoding() {
        let ctx = with_prefix(ctx("https://bucket.s3.amazonaws.com"), "cube/");
        assert_eq!(
            one(
                &KeyFormat::Url,
                "https://bucket.s3.amazonaws.com/cube/a%20b.jpg",
                &ctx
            ),
            "a b.jpg"
        );
        not_ours(
            &KeyFormat::Url,
            "https://bucket.s3.amazonaws.com/other/a.jpg",
            &ctx,
        );
    }

    // ---- cloudinary ----

    #[test]
    fn cloudinary_field_values_yield_type_and_public_id() {
        let ctx = cloud("demo");
        for (value, rt, key) in [
            (
                "image/upload/v1699999999/folder/id.jpg",
                ResourceType::Image,
                "folder/id",
            ),
            (
                "image/upload/folder/id.jpg",
                ResourceType::Image,
                "folder/id",
            ),
            ("image/upload/id", ResourceType::Image, "id"),
            (
                "video/upload/v1/clips/intro.mp4",
                ResourceType::Video,
                "clips/intro",
            ),
            (
                "raw/upload/v1/docs/terms.pdf",
                ResourceType::Raw,
                "docs/terms.pdf",
            ),
            ("image/private/v2/secret.png", ResourceType::Image, "secret"),
            (
                "image/authenticated/v3/a/b.webp",
                ResourceType::Image,
                "a/b",
            ),
            (
                "image/upload/v1/my photo.jpg",
                ResourceType::Image,
                "my photo",
            ),
            ("image/upload/v1/a%20b.jpg", ResourceType::Image, "a%20b"),
            (
                "image/upload/v1/.hidden/a.jpg",
                ResourceType::Image,
                ".hidden/a",
            ),
            (
                "image/upload/v1/archive.tar.gz",
                ResourceType::Image,
                "archive.tar",
            ),
            (
                "image/upload/v1/a.final version",
                ResourceType::Image,
                "a.final version",
            ),
            (
                "image/upload/v1/trailing.",
                ResourceType::Image,
                "trailing.",
            ),
        ] {
            assert_eq!(
                cloudinary(value, Some("video"), &ctx),
                (rt, key.to_owned()),
                "{value}"
            );
        }
    }

    #[test]
    fn cloudinary_delivery_urls_skip_transformations() {
        let ctx = cloud("demo");
        for value in [
            "https://res.cloudinary.com/demo/image/upload/v1/folder/id.jpg",
            "http://res.cloudinary.com/demo/image/upload/v1/folder/id.jpg",
            "//res.cloudinary.com/demo/image/upload/v1/folder/id.jpg",
            "res.cloudinary.com/demo/image/upload/v1/folder/id.jpg",
            "https://res-3.cloudinary.com/demo/image/upload/v1/folder/id.jpg",
            "https://demo-res.cloudinary.com/image/upload/v1/folder/id.jpg",
            "https://res.cloudinary.com/demo/image/upload/c_fill,w_300,h_200/v1/folder/id.jpg",
            "https://res.cloudinary.com/demo/image/upload/t_thumb/v1/folder/id.png",
            "https://res.cloudinary.com/demo/image/upload/c_fill,w_300/e_sepia/folder/id.jpg",
            "https://res.cloudinary.com/demo/image/upload/f_auto,q_auto/t_thumb/folder/id",
            "https://res.cloudinary.com/demo/image/upload/xz_future/v12/folder/id.jpg",
            "https://res.cloudinary.com/demo/image/upload/v1/folder/id.jpg?_a=BAVAfVDW0",
            "https://RES.Cloudinary.com/demo/image/upload/v1/folder/id.jpg#x",
        ] {
            assert_eq!(
                cloudinary(value, None, &ctx),
                (ResourceType::Image, "folder/id".to_owned()),
                "{value}"
            );
        }
    }

    #[test]
    fn cloudinary_folder_that_is_no_transformation_stays_in_the_public_id() {
        let ctx = cloud("demo");
        for (value, key) in [
            (
                "https://res.cloudinary.com/demo/image/upload/my_photos/cat.jpg",
                "my_photos/cat",
            ),
            (
                "https://res.cloudinary.com/demo/image/upload/2024/v2/cat.jpg",
                "2024/v2/cat",
            ),
            (
                "https://res.cloudinary.com/demo/image/upload/v7/v2/cat.jpg",
                "v2/cat",
            ),
            (
                "https://res.cloudinary.com/demo/image/upload/t_thumb",
                "t_thumb",
            ),
            ("https://res.cloudinary.com/demo/image/upload/v12", "v12"),
        ] {
            assert_eq!(cloudinary(value, None, &ctx).1, key, "{value}");
        }
    }

    #[test]
    fn cloudinary_urls_are_percent_decoded() {
        let ctx = cloud("demo");
        assert_eq!(
            cloudinary(
                "https://res.cloudinary.com/demo/image/upload/v1/my%20folder/caf%C3%A9%231.jpg",
                None,
                &ctx
            ),
            (ResourceType::Image, "my folder/café#1".to_owned())
        );
        assert_eq!(
            KeyFormat::Cloudinary
                .parse(
                    "https://res.cloudinary.com/demo/image/upload/v1/%2e%2e/x.jpg",
                    None,
                    &ctx
                )
                .unparsed,
            ["`..` segment"]
        );
    }

    #[test]
    fn cloudinary_raw_keeps_its_extension() {
        let ctx = cloud("demo");
        assert_eq!(
            cloudinary(
                "https://res.cloudinary.com/demo/raw/upload/v1/files/report.v2.pdf",
                None,
                &ctx
            ),
            (ResourceType::Raw, "files/report.v2.pdf".to_owned())
        );
        assert_eq!(
            cloudinary(
                "https://res.cloudinary.com/demo/image/upload/v1/files/report.v2.pdf",
                None,
                &ctx
            ),
            (ResourceType::Image, "files/report.v2".to_owned())
        );
    }

    #[test]
    fn cloudinary_image_and_video_may_share_a_public_id() {
        let ctx = cloud("demo");
        let image = cloudinary("image/upload/v1/promo/launch.jpg", None, &ctx);
        let video = cloudinary("video/upload/v1/promo/launch.mp4", None, &ctx);
        assert_eq!(image, (ResourceType::Image, "promo/launch".to_owned()));
        assert_eq!(video, (ResourceType::Video, "promo/launch".to_owned()));
        assert_ne!(image, video);
    }

    #[test]
    fn cloudinary_value_type_wins_over_media_type() {
        assert_eq!(
            cloudinary("video/upload/v1/a.mp4", Some("image"), &cloud("demo")).0,
            ResourceType::Video
        );
    }

    #[test]
    fn cloudinary_other_cloud_or_host_is_not_ours() {
        let ctx = cloud("demo");
        not_ours(
            &KeyFormat::Cloudinary,
            "https://res.cloudinary.com/other/image/upload/v1/a.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "https://other-res.cloudinary.com/image/upload/v1/a.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "https://images.example.com/image/upload/v1/a.jpg",
            &ctx,
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "data:image/png;base64,iVBORw0KGgo=",
            &ctx,
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "https://res.cloudinary.com/demo/image/fetch/https://x.test/a.jpg",
            &ctx,
        );
        let any_cloud = KeyContext::default();
        assert_eq!(
            cloudinary(
                "https://res.cloudinary.com/other/image/upload/v1/a.jpg",
                None,
                &any_cloud
            )
            .1,
            "a"
        );
    }

    #[test]
    fn cloudinary_custom_domain_comes_from_public_url() {
        let ctx = KeyContext {
            public_url: Some("https://images.example.com/".to_owned()),
            cloud_name: Some("demo".to_owned()),
            ..KeyContext::default()
        };
        assert_eq!(
            cloudinary(
                "https://images.example.com/video/upload/v5/a/b.mp4",
                None,
                &ctx
            ),
            (ResourceType::Video, "a/b".to_owned())
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "https://cdn.example.com/video/upload/v5/a/b.mp4",
            &ctx,
        );
    }

    #[test]
    fn cloudinary_malformed_delivery_urls_are_unparsed() {
        let ctx = cloud("demo");
        for (value, reason) in [
            (
                "https://res.cloudinary.com/demo",
                "not a Cloudinary delivery URL",
            ),
            (
                "https://res.cloudinary.com/demo/sample.jpg",
                "not a Cloudinary delivery URL",
            ),
            (
                "https://res.cloudinary.com/demo/image/bogus/a.jpg",
                "unknown Cloudinary delivery type",
            ),
            (
                "https://res.cloudinary.com/demo/image/upload",
                "no public_id",
            ),
            ("https://res.cloudinary.com/demo/image/upload/", "empty key"),
            (
                "https://res.cloudinary.com/demo/raw/upload/v1/%FF",
                "not UTF-8 after percent-decoding",
            ),
            ("image/upload/v1/a.jpg\n", "control character"),
        ] {
            assert_eq!(
                unparsed(&KeyFormat::Cloudinary, value, &ctx),
                reason,
                "{value}"
            );
        }
    }

    #[test]
    fn cloudinary_bare_public_id_takes_media_type() {
        let ctx = cloud("demo");
        let parse = |media_type| KeyFormat::Cloudinary.parse("folder/cat", media_type, &ctx);
        assert_eq!(
            keys(&parse(Some("image"))),
            [(Some(ResourceType::Image), "folder/cat")]
        );
        assert_eq!(
            keys(&parse(Some(" VIDEO "))),
            [(Some(ResourceType::Video), "folder/cat")]
        );
        assert_eq!(
            keys(&parse(Some("raw"))),
            [(Some(ResourceType::Raw), "folder/cat")]
        );
        assert_eq!(keys(&parse(Some("photo"))), [(None, "folder/cat")]);
        assert_eq!(keys(&parse(None)), [(None, "folder/cat")]);
        // A bare id is the id as written, dots and all.
        let dotted = KeyFormat::Cloudinary.parse("v1.2/release.notes", Some("image"), &ctx);
        assert_eq!(
            keys(&dotted),
            [(Some(ResourceType::Image), "v1.2/release.notes")]
        );
        // `image/cat.jpg` is a folder named image, not a field value.
        let folder = KeyFormat::Cloudinary.parse("image/cat.jpg", None, &ctx);
        assert_eq!(keys(&folder), [(None, "image/cat.jpg")]);
        assert_eq!(
            KeyFormat::Cloudinary
                .parse("/folder/cat", None, &ctx)
                .unparsed,
            ["leading `/`"]
        );
    }

    #[test]
    fn cloudinary_key_prefix_applies_to_the_public_id() {
        let ctx = with_prefix(cloud("demo"), "prod/");
        assert_eq!(
            cloudinary("image/upload/v1/prod/a/b.jpg", None, &ctx),
            (ResourceType::Image, "a/b".to_owned())
        );
        not_ours(
            &KeyFormat::Cloudinary,
            "image/upload/v1/staging/a.jpg",
            &ctx,
        );
        not_ours(&KeyFormat::Cloudinary, "staging/a", &ctx);
    }

    // ---- regex ----

    #[test]
    fn regex_requires_a_key_group_and_reports_short_errors() {
        assert_eq!(
            KeyFormat::regex(r"src=(\S+)").unwrap_err(),
            "the regex has no named group `key`"
        );
        assert_eq!(
            KeyFormat::regex("(?P<key>").unwrap_err(),
            "invalid regex: unclosed group"
        );
        assert!(KeyFormat::regex(r#"src="(?<key>[^"]+)""#).is_ok());
        assert_eq!(KeyFormat::regex("(?P<key>x)").unwrap().name(), "regex");
        assert_eq!(KeyFormat::Path.name(), "path");
        assert_eq!(KeyFormat::Url.name(), "url");
        assert_eq!(KeyFormat::Cloudinary.name(), "cloudinary");
    }

    #[test]
    fn regex_reads_each_capture_as_url_or_path() {
        let format = KeyFormat::regex(r#"src="(?P<key>[^"]*)""#).unwrap();
        let body = concat!(
            r#"<p><img src="https://cdn.example.com/media/a%20b.jpg"> "#,
            r#"<img src="//cdn.example.com/media/c.png"> <img src="/d/e.gif"> "#,
            r#"<img src="https://elsewhere.test/x.jpg"> <img src="../up.jpg"> "#,
            r#"<img src="mailto:x"> <img src=""> <img src="d/e.gif"></p>"#,
        );
        let parsed = format.parse(body, None, &ctx(CDN));
        let plain = Some(ResourceType::Plain);
        assert_eq!(
            keys(&parsed),
            [(plain, "a b.jpg"), (plain, "c.png"), (plain, "d/e.gif")]
        );
        assert_eq!(parsed.unparsed, ["`..` segment"]);
        assert_eq!(
            format.parse("mailto:x", None, &ctx(CDN)),
            Parsed::default(),
            "no match"
        );
    }

    #[test]
    fn regex_url_capture_without_public_url_is_unparsed() {
        let format = KeyFormat::regex(r"(?P<key>\S+)").unwrap();
        let parsed = format.parse(
            "https://cdn.example.com/a.jpg b.jpg",
            None,
            &KeyContext::default(),
        );
        assert_eq!(keys(&parsed), [(Some(ResourceType::Plain), "b.jpg")]);
        assert_eq!(parsed.unparsed, ["store has no public_url"]);
    }

    #[test]
    fn regex_on_a_cloudinary_store_reads_captures_as_cloudinary() {
        let format = KeyFormat::regex(r#"src="(?P<key>[^"]+)""#).unwrap();
        let body = r#"<img src="https://res.cloudinary.com/demo/image/upload/w_200/v1/a.jpg"><img src="https://res.cloudinary.com/other/image/upload/v1/b.jpg">"#;
        let parsed = format.parse(body, None, &cloud("demo"));
        assert_eq!(keys(&parsed), [(Some(ResourceType::Image), "a")]);
        assert!(parsed.unparsed.is_empty());
    }

    #[test]
    fn regex_group_that_did_not_take_part_is_skipped() {
        let format = KeyFormat::regex(r"img:(?P<key>\S+)|noise").unwrap();
        let parsed = format.parse("noise img:a.jpg", None, &KeyContext::default());
        assert_eq!(keys(&parsed), [(Some(ResourceType::Plain), "a.jpg")]);
    }

    // ---- round trips ----

    /// Encodes what a URL path segment cannot carry raw; non-ASCII is always encoded.
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'%')
        .add(b'#')
        .add(b'?')
        .add(b'"')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    const SEGMENT_AND_PLUS: &AsciiSet = &SEGMENT.add(b'+');

    fn encode(key: &str, plus: bool) -> String {
        let set = if plus { SEGMENT_AND_PLUS } else { SEGMENT };
        key.split('/')
            .map(|s| utf8_percent_encode(s, set).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn segment() -> impl Strategy<Value = String> {
        "[^/\\p{Cc}]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    fn representable_key() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..5).prop_map(|segments| segments.join("/"))
    }

    fn last_segment_has_no_dot(key: &str) -> bool {
        !key.rsplit('/').next().unwrap_or_default().contains('.')
    }

    proptest! {
        #[test]
        fn generated_keys_are_representable(k in representable_key()) {
            prop_assert!(is_representable(&k));
        }

        #[test]
        fn path_round_trips(k in representable_key()) {
            let ctx = KeyContext::default();
            for value in [k.clone(), format!("/{k}"), format!("./{k}")] {
                prop_assert_eq!(one(&KeyFormat::Path, &value, &ctx), k.clone());
            }
            let prefixed = with_prefix(KeyContext::default(), "cube/");
            prop_assert_eq!(one(&KeyFormat::Path, &format!("/cube/{k}"), &prefixed), k.clone());
        }

        #[test]
        fn url_round_trips(k in representable_key(), plus in any::<bool>(), slash in any::<bool>()) {
            let public_url = if slash { format!("{CDN}/") } else { CDN.to_owned() };
            let ctx = ctx(&public_url);
            let value = format!("{CDN}/{}", encode(&k, plus));
            prop_assert_eq!(one(&KeyFormat::Url, &value, &ctx), k.clone());
            let with_query = format!("{value}?v=1#frag");
            prop_assert_eq!(one(&KeyFormat::Url, &with_query, &ctx), k);
        }

        #[test]
        fn cloudinary_field_round_trips(k in representable_key()) {
            prop_assume!(last_segment_has_no_dot(&k));
            let value = format!("image/upload/v123/{k}.jpg");
            prop_assert_eq!(cloudinary(&value, None, &cloud("demo")), (ResourceType::Image, k));
        }

        #[test]
        fn cloudinary_delivery_url_round_trips(k in representable_key(), plus in any::<bool>()) {
            prop_assume!(last_segment_has_no_dot(&k));
            let value = format!("https://res.cloudinary.com/demo/video/upload/v1/{}.mp4", encode(&k, plus));
            prop_assert_eq!(cloudinary(&value, None, &cloud("demo")), (ResourceType::Video, k));
        }

        #[test]
        fn raw_delivery_url_round_trips(k in representable_key()) {
            let value = format!("https://res.cloudinary.com/demo/raw/upload/c_fill,w_1/v9/{}", encode(&k, false));
            prop_assert_eq!(cloudinary(&value, None, &cloud("demo")), (ResourceType::Raw, k));
        }

        #[test]
        fn any_value_parses_to_representable_keys_only(value in any::<String>(), media in any::<Option<String>>()) {
            let ctx = KeyContext {
                public_url: Some(CDN.to_owned()),
                key_prefix: String::new(),
                cloud_name: Some("demo".to_owned()),
                s3: Some(S3Context {
                    bucket: "bkt".to_owned(),
                    endpoint: None,
                    prefix: String::new(),
                }),
            };
            let formats = [
                KeyFormat::Path,
                KeyFormat::Url,
                KeyFormat::Cloudinary,
                KeyFormat::regex(r"(?P<key>\S+)").unwrap(),
            ];
            for format in &formats {
                let parsed = format.parse(&value, media.as_deref(), &ctx);
                for key in &parsed.keys {
                    prop_assert!(is_representable(&key.key), "{:?} -> {:?}", value, key);
                }
            }
        }

        #[test]
        fn any_url_like_value_parses_to_representable_keys_only(path in "[a-z0-9%./?#:@+ -]{0,30}") {
            let ctx = KeyContext {
                public_url: Some(CDN.to_owned()),
                key_prefix: String::new(),
                cloud_name: Some("demo".to_owned()),
                s3: Some(S3Context {
                    bucket: "bkt".to_owned(),
                    endpoint: None,
                    prefix: String::new(),
                }),
            };
            for value in [
                format!("{CDN}/{path}"),
                format!("https://res.cloudinary.com/demo/image/upload/{path}"),
                format!("https://bkt.s3.amazonaws.com/{path}"),
                format!("https://s3.amazonaws.com/bkt/{path}"),
            ] {
                for format in [KeyFormat::Url, KeyFormat::Cloudinary] {
                    for key in format.parse(&value, None, &ctx).keys {
                        prop_assert!(is_representable(&key.key), "{:?} -> {:?}", value, key);
                    }
                }
            }
        }
    }
}
