//! The generic webhook: the JSON summary, signed with HMAC-SHA256 (SPEC §5).
//!
//! The signature covers the raw body bytes exactly as sent, so the body is serialized once and
//! those bytes are both signed and posted. `sent_at` is inside the signed body: a receiver that
//! rejects old bodies cannot be fed a replay with a fresh timestamp header.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Notice, SendError};

type HmacSha256 = Hmac<Sha256>;

/// How old a body may be when it arrives; older ones are taken for replays.
pub const MAX_AGE: TimeDelta = TimeDelta::minutes(5);

pub const SIGNATURE_HEADER: &str = "X-Assetgc-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Assetgc-Timestamp";

/// The body's bytes and its `sent_at`, which the timestamp header repeats.
pub fn body(n: &Notice, now: DateTime<Utc>) -> (Vec<u8>, String) {
    let sent_at = super::sent_at(now);
    let value = json!({
        "scan": n.scan_json,
        "summary": n.summary_json,
        "items": n.items_json(),
        "sent_at": sent_at,
    });
    // Serializing a `Value` cannot fail: its keys are strings and it holds no non-finite float.
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    (bytes, sent_at)
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` only fails for fixed-size-key MACs.
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length")
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// What a receiver checks: the signature header matches the body (compared in constant time) and
/// the body's `sent_at` is at most [`MAX_AGE`] from `now`, either way (a clock running ahead is
/// as suspect as a replay).
pub fn verify(
    secret: &str,
    body: &[u8],
    header: &str,
    now: DateTime<Utc>,
) -> Result<(), &'static str> {
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or("the signature does not start with sha256=")?;
    let sig = hex::decode(hex_sig).map_err(|_| "the signature is not hexadecimal")?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig)
        .map_err(|_| "the signature does not match the body")?;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let sent_at = value
        .get("sent_at")
        .and_then(serde_json::Value::as_str)
        .and_then(crate::time::parse_rfc3339)
        .ok_or("the body has no sent_at time")?;
    if (now - sent_at).abs() > MAX_AGE {
        return Err("sent_at is more than 5 minutes from now (a replay?)");
    }
    Ok(())
}

pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    n: &Notice,
    now: DateTime<Utc>,
) -> Result<(), SendError> {
    let (bytes, sent_at) = body(n, now);
    let sig = signature(secret, &bytes);
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sig)
        .header(TIMESTAMP_HEADER, sent_at)
        .body(bytes);
    deliver(req).await
}

/// Sends a request for a webhook channel: any 2xx is delivered; the rest is said without the URL.
pub(super) async fn deliver(req: reqwest::RequestBuilder) -> Result<(), SendError> {
    let resp = req.send().await.map_err(SendError::http)?;
    if resp.status().is_success() {
        return Ok(());
    }
    let mut e = SendError::answer(&resp);
    // The first words of the answer say why (Slack: `invalid_blocks`, `no_service`), with the
    // URL's path and query, should the service echo them, cut out.
    let hidden: Vec<String> = [resp.url().path(), resp.url().query().unwrap_or_default()]
        .into_iter()
        .filter(|p| p.len() > 1)
        .map(str::to_string)
        .collect();
    if let Ok(body) = resp.text().await {
        let mut said: String = body
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for h in &hidden {
            said = said.replace(h.as_str(), "***");
        }
        let said = clip(&said, 100);
        if !said.is_empty() {
            e.message = format!("{}: {said}", e.message);
        }
    }
    Err(e)
}

/// `s` cut to at most `max` characters, the cut marked with `…` (which counts in `max`). Slack
/// and Discord count their limits in characters, not bytes.
pub(super) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_known_answer() {
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    fn now() -> DateTime<Utc> {
        crate::time::parse_rfc3339("2026-12-04T10:00:00Z").unwrap()
    }

    fn notice() -> Notice {
        crate::notify::slack::tests::notice(3, true)
    }

    #[test]
    fn body_has_exactly_the_four_keys_and_sent_at_to_the_second() {
        let t = now() + TimeDelta::milliseconds(750);
        let (bytes, sent_at) = body(&notice(), t);
        assert_eq!(sent_at, "2026-12-04T10:00:00Z");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["scan", "summary", "items", "sent_at"]);
        assert_eq!(v["sent_at"], sent_at.as_str());
        assert_eq!(v["items"]["orphans"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn verify_accepts_fresh_signed_bodies_only() {
        let (bytes, _) = body(&notice(), now());
        let sig = signature("s3cret", &bytes);
        assert_eq!(verify("s3cret", &bytes, &sig, now()), Ok(()));
        assert_eq!(
            verify("s3cret", &bytes, &sig, now() + TimeDelta::minutes(4)),
            Ok(())
        );
        assert!(verify("other", &bytes, &sig, now()).is_err());
        assert!(verify("s3cret", &bytes, &sig, now() + TimeDelta::minutes(6)).is_err());
        assert!(verify("s3cret", &bytes, &sig, now() - TimeDelta::minutes(6)).is_err());
        assert!(verify("s3cret", &bytes, &sig.to_uppercase(), now()).is_err());
        assert!(verify("s3cret", &bytes, &sig[7..], now()).is_err());
        let mut tampered = bytes.clone();
        tampered.push(b' ');
        assert!(verify("s3cret", &tampered, &sig, now()).is_err());
    }

    #[test]
    fn clip_counts_characters_and_marks_the_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("ééééé", 4).chars().count(), 4);
        assert_eq!(clip("abc", 0), "");
    }
}
