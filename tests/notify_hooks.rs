//! Slack, Discord and the signed webhook, delivered over a real socket to a local receiver
//! through `notify::send_all`, as a run sends them.

mod common;

use std::time::{Duration, Instant};

use assetgc::config::NotifyConfig;
use assetgc::notify::{self, Delivery, Notice, Retry, webhook};
use chrono::{TimeDelta, Utc};
use common::notify::{API_USAGE, REPORT_PATH, sample_notice};
use common::receiver::{Receiver, Request};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "whsec-7f3a9c2e-do-not-log";
/// Slack's and Discord's URLs carry their credential in the path: it must never be shown.
const SLACK_PATH: &str = "/services/T000/B000/slack-token-XYZ";
const DISCORD_PATH: &str = "/api/webhooks/123/discord-token-XYZ";
const WEBHOOK_PATH: &str = "/assetgc/hook";

fn retry() -> Retry {
    Retry {
        attempts: 3,
        first_wait: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
    }
}

/// `[notify]` with the given channels, read as the product reads its config.
fn config(slack: Option<&str>, discord: Option<&str>, webhook: Option<&str>) -> NotifyConfig {
    let mut text = String::from("[stores.media]\nurl = \"file:///tmp\"\n\n[notify]\n");
    if let Some(u) = slack {
        text.push_str(&format!("slack = {{ webhook_url = \"{u}\" }}\n"));
    }
    if let Some(u) = discord {
        text.push_str(&format!("discord = {{ webhook_url = \"{u}\" }}\n"));
    }
    if let Some(u) = webhook {
        text.push_str(&format!(
            "webhook = {{ url = \"{u}\", secret = \"${{WEBHOOK_SECRET}}\" }}\n"
        ));
    }
    let env = |k: &str| (k == "WEBHOOK_SECRET").then(|| SECRET.to_string());
    assetgc::config::parse(&text, "assetgc.toml", std::path::Path::new("."), &env)
        .expect("config")
        .notify
}

fn one(deliveries: &[Delivery], channel: &str) -> Delivery {
    deliveries
        .iter()
        .find(|d| d.channel == channel)
        .unwrap_or_else(|| panic!("no {channel} delivery in {deliveries:?}"))
        .clone()
}

/// Sends `n` on one channel (`slack`, `discord` or `webhook`) to a receiver answering 200 and
/// returns the one request it got.
async fn receive(channel: &str, n: &Notice) -> Request {
    let rx = Receiver::start(&[]);
    let cfg = match channel {
        "slack" => config(Some(&rx.url(SLACK_PATH)), None, None),
        "discord" => config(None, Some(&rx.url(DISCORD_PATH)), None),
        _ => config(None, None, Some(&rx.url(WEBHOOK_PATH))),
    };
    let d = notify::send_all(&cfg, n, retry()).await;
    assert_eq!(d.len(), 1);
    assert_eq!(
        one(&d, channel),
        Delivery {
            channel: match channel {
                "slack" => "slack",
                "discord" => "discord",
                _ => "webhook",
            },
            attempts: 1,
            error: None
        }
    );
    let mut got = rx.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let r = got.remove(0);
    assert_eq!(r.method, "POST");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    r
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

#[tokio::test]
async fn slack_gets_blocks_with_the_first_five_items_and_the_report() {
    let n = sample_notice(15, 3, false, None);
    let r = receive("slack", &n).await;
    assert_eq!(r.path, SLACK_PATH);
    let p = r.json();
    assert_eq!(p["text"], n.subject());
    let blocks = p["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 50);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[0]["text"]["text"], "[shop] scan #42");
    assert!(chars(&blocks[0]["text"]["text"]) <= 150);
    // No alert: the headline comes right after the header.
    assert_eq!(blocks[1]["text"]["text"], n.headline.as_str());

    let fields = blocks
        .iter()
        .find_map(|b| b["fields"].as_array())
        .expect("a section of figure fields");
    assert!(fields.len() <= 10);
    assert_eq!(fields[1]["type"], "mrkdwn");
    assert_eq!(fields[1]["text"], "*Orphaned files*\n15, 34.50 MB");

    let orphans = blocks
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.starts_with("*Orphaned files*"))
        .expect("the orphans section");
    assert!(orphans.starts_with("*Orphaned files* — first 5 of 15\n"));
    for i in 1..=5 {
        assert!(
            orphans.contains(&format!(
                "<https://cdn.example.com/shop/media/a{i}.jpg|media/a{i}.jpg  2.30 MB>"
            )),
            "{orphans}"
        );
    }
    assert!(!p.to_string().contains("media/a6.jpg"), "a sixth orphan");
    let missing = blocks
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.starts_with("*Records with missing files*"))
        .expect("the missing section");
    assert!(missing.contains("first 3 of 3"));
    assert!(missing.contains("DELETED  products #3"));

    let context = blocks
        .iter()
        .find(|b| b["type"] == "context")
        .expect("a context block");
    let context = context.to_string();
    assert!(context.contains(REPORT_PATH));
    assert!(context.contains("API calls: 5/500 used (1%)"));
    assert!(!p.to_string().contains("Incomplete"));

    for b in blocks {
        assert!(chars(&b["text"]["text"]) <= 3000);
    }
}

#[tokio::test]
async fn slack_says_when_a_run_is_incomplete() {
    let mut n = sample_notice(2, 0, false, None);
    n.complete = false;
    n.warnings = vec!["listing of store media ended early".into()];
    let p = receive("slack", &n).await.json();
    let last = p["blocks"].as_array().unwrap().last().unwrap().to_string();
    assert!(last.contains("Incomplete run"), "{last}");
    assert!(last.contains("listing of store media ended early"));
    assert!(p["text"].as_str().unwrap().ends_with("(incomplete)"));
}

#[tokio::test]
async fn discord_gets_one_embed_within_limits_that_pings_nobody() {
    let mut n = sample_notice(15, 3, false, None);
    n.lists[0].items[0].text = "@everyone media/a1.jpg  2.30 MB".into();
    let r = receive("discord", &n).await;
    assert_eq!(r.path, DISCORD_PATH);
    let p = r.json();
    assert_eq!(p["allowed_mentions"], serde_json::json!({ "parse": [] }));
    assert!(chars(&p["content"]) <= 2000);
    let embeds = p["embeds"].as_array().expect("embeds");
    assert_eq!(embeds.len(), 1);
    let e = &embeds[0];
    assert_eq!(e["title"], n.subject());
    assert!(chars(&e["title"]) <= 256);
    assert!(e["description"].as_str().unwrap().starts_with("15 orphans"));
    assert_eq!(e["color"], 0x002E_B67D);
    assert_eq!(e["footer"]["text"], format!("Report: {REPORT_PATH}"));
    assert_eq!(e["timestamp"], "2026-12-04T10:00:07Z");
    let fields = e["fields"].as_array().unwrap();
    assert!(fields.len() <= 25);
    let mut total = chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
    for f in fields {
        assert!(chars(&f["name"]) <= 256 && chars(&f["value"]) <= 1024);
        total += chars(&f["name"]) + chars(&f["value"]);
    }
    assert!(total <= 6000);
    let orphans = fields
        .iter()
        .find(|f| f["name"] == "Orphaned files — first 5 of 15")
        .expect("the orphans field");
    let value = orphans["value"].as_str().unwrap();
    assert_eq!(value.lines().count(), 5, "{value}");
    assert!(value.contains("(<https://cdn.example.com/shop/media/a5.jpg>)"));
    assert!(!p.to_string().contains("media/a6.jpg"));
    assert!(value.contains("\\@everyone"));
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "API usage" && f["value"] == API_USAGE)
    );
}

#[tokio::test]
async fn discord_stays_within_limits_with_long_keys_and_many_figures() {
    let mut n = sample_notice(20, 20, true, None);
    for l in &mut n.lists {
        for (i, item) in l.items.iter_mut().enumerate() {
            item.text = format!("{}{i}.jpg", "k".repeat(1000));
            item.link = Some(format!("https://cdn.example.com/{}", "k".repeat(1000)));
        }
    }
    n.figures = (0..30)
        .map(|i| notify::Figure {
            label: format!("{i} {}", "l".repeat(1000)),
            value: "v".repeat(2000),
        })
        .collect();
    n.headline = "h".repeat(5000);
    let d = receive("discord", &n).await.json();
    let e = &d["embeds"][0];
    let fields = e["fields"].as_array().unwrap();
    assert!(fields.len() <= 25);
    let mut total = chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
    for f in fields {
        assert!(chars(&f["name"]) <= 256 && chars(&f["value"]) <= 1024);
        total += chars(&f["name"]) + chars(&f["value"]);
    }
    assert!(total <= 6000, "{total}");
    assert!(chars(&e["description"]) <= 4096);

    let s = receive("slack", &n).await.json();
    let blocks = s["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    assert!(chars(&blocks[0]["text"]["text"]) <= 150);
    for b in blocks {
        assert!(chars(&b["text"]["text"]) <= 3000);
        for f in b["fields"].as_array().into_iter().flatten() {
            assert!(chars(&f["text"]) <= 2000);
        }
        assert!(b["fields"].as_array().is_none_or(|f| f.len() <= 10));
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test]
async fn webhook_body_is_signed_and_stamped() {
    let n = sample_notice(25, 3, false, None);
    let before = Utc::now() - TimeDelta::seconds(1);
    let r = receive("webhook", &n).await;
    assert_eq!(r.path, WEBHOOK_PATH);
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["scan", "summary", "items", "sent_at"]);
    assert_eq!(body["scan"], n.scan_json);
    assert_eq!(body["summary"], n.summary_json);
    assert_eq!(body["items"]["orphans"].as_array().unwrap().len(), 20);
    assert_eq!(body["items"]["missing"].as_array().unwrap().len(), 3);
    assert_eq!(body["items"]["missing"][2]["status"], "DELETED");

    let sent_at = body["sent_at"].as_str().unwrap();
    assert_eq!(r.header("x-assetgc-timestamp"), Some(sent_at));
    let t = chrono::DateTime::parse_from_rfc3339(sent_at).expect("RFC 3339");
    assert!(sent_at.ends_with('Z') && sent_at.len() == 20, "{sent_at}");
    assert!(t >= before && t <= Utc::now());

    let sig = r.header("x-assetgc-signature").expect("a signature");
    assert_eq!(sig, format!("sha256={}", hmac_hex(SECRET, &r.body)));
    assert_ne!(
        sig,
        format!("sha256={}", hmac_hex("another secret", &r.body))
    );
    assert_eq!(webhook::verify(SECRET, &r.body, sig, Utc::now()), Ok(()));
    assert!(webhook::verify("another secret", &r.body, sig, Utc::now()).is_err());
}

/// Runs the README's verifier on a body and headers; its exit code.
fn readme_verifier(dir: &std::path::Path, secret: &str, body: &[u8], sig: &str, ts: &str) -> i32 {
    let script = dir.join("verify.py");
    std::fs::write(&script, common::readme_block("verify-webhook", "python")).unwrap();
    let body_path = dir.join(format!("body-{}.json", common::unique_name("b")));
    std::fs::write(&body_path, body).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&body_path)
        .arg(sig)
        .arg(ts)
        .env("SECRET", secret)
        .output()
        .expect("run python3");
    assert!(
        out.stderr.is_empty(),
        "the README's verifier wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().expect("an exit code")
}

#[tokio::test]
async fn readme_verifier_accepts_what_we_send_and_rejects_forgeries_and_replays() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        // As `common::require_service` decides for services: CI has python3, so a skip there
        // could only hide a failure.
        let in_ci = std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        assert!(!in_ci, "python3 is needed to run the README's verifier");
        eprintln!(
            "skipped: readme_verifier_accepts_what_we_send_and_rejects_forgeries_and_replays needs python3"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = sample_notice(7, 2, true, None);
    let r = receive("webhook", &n).await;
    let sig = r.header("x-assetgc-signature").unwrap().to_string();
    let ts = r.header("x-assetgc-timestamp").unwrap().to_string();
    assert_eq!(readme_verifier(dir.path(), SECRET, &r.body, &sig, &ts), 0);
    assert_eq!(readme_verifier(dir.path(), "wrong", &r.body, &sig, &ts), 1);
    // The timestamp header must be the signed one.
    assert_eq!(
        readme_verifier(dir.path(), SECRET, &r.body, &sig, "2026-01-01T00:00:00Z"),
        1
    );

    let (old, old_ts) = webhook::body(&n, Utc::now() - TimeDelta::minutes(10));
    let old_sig = webhook::signature(SECRET, &old);
    assert_eq!(old_sig, format!("sha256={}", hmac_hex(SECRET, &old)));
    assert_eq!(
        readme_verifier(dir.path(), SECRET, &old, &old_sig, &old_ts),
        1
    );
    assert!(webhook::verify(SECRET, &old, &old_sig, Utc::now()).is_err());
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let n = sample_notice(3, 1, false, None);
    let rx = Receiver::start(&[500, 500, 200]);
    let cfg = config(None, None, Some(&rx.url(WEBHOOK_PATH)));
    let d = notify::send_all(&cfg, &n, retry()).await;
    assert_eq!(
        one(&d, "webhook"),
        Delivery {
            channel: "webhook",
            attempts: 3,
            error: None
        }
    );
    let got = rx.wait_for(3, Duration::from_secs(5));
    assert_eq!(got.len(), 3);
    // Each attempt is signed afresh and still verifies.
    for r in &got {
        let sig = r.header("x-assetgc-signature").unwrap();
        assert_eq!(webhook::verify(SECRET, &r.body, sig, Utc::now()), Ok(()));
    }

    let rx = Receiver::start(&[400]);
    let cfg = config(Some(&rx.url(SLACK_PATH)), None, None);
    let d = one(&notify::send_all(&cfg, &n, retry()).await, "slack");
    assert_eq!(d.attempts, 1);
    assert_eq!(d.error.as_deref(), Some("answered HTTP 400"));
    assert_eq!(rx.requests().len(), 1);

    // A 429 is tried again, after the Retry-After it gave (1 s) rather than the 50 ms backoff.
    let rx = Receiver::start(&[429, 204]);
    let cfg = config(None, Some(&rx.url(DISCORD_PATH)), None);
    let d = one(&notify::send_all(&cfg, &n, retry()).await, "discord");
    assert_eq!((d.attempts, d.error), (2, None));
    let got = rx.requests();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "waited {gap:?}");
}

#[tokio::test]
async fn a_dead_port_fails_quickly_without_showing_the_url_or_the_secret() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let cfg = config(
        Some(&format!("{base}{SLACK_PATH}")),
        Some(&format!("{base}{DISCORD_PATH}")),
        Some(&format!("{base}{WEBHOOK_PATH}")),
    );
    let n = sample_notice(3, 1, false, None);
    let started = Instant::now();
    let deliveries = notify::send_all(&cfg, &n, retry()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        assert_eq!(d.attempts, 3, "{d:?}");
        let e = d.error.as_deref().expect("an error");
        for secret in [
            SLACK_PATH,
            DISCORD_PATH,
            WEBHOOK_PATH,
            SECRET,
            "token",
            "/assetgc",
        ] {
            assert!(
                !e.contains(secret),
                "{} error `{e}` shows {secret}",
                d.channel
            );
        }
    }
    let said = one(&deliveries, "webhook").error.unwrap_or_default();
    assert!(
        said.starts_with("cannot connect") && said.contains("refused"),
        "says why: {said}"
    );
}

#[tokio::test]
async fn an_alert_leads_every_channel() {
    let n = sample_notice(63, 2, true, None);
    let alert = n.alert.as_ref().unwrap().lines[0].clone();

    let s = receive("slack", &n).await.json();
    let first = &s["blocks"][1]["text"]["text"];
    assert!(
        first
            .as_str()
            .unwrap()
            .starts_with(":rotating_light: *Spike alert*"),
        "{first}"
    );
    assert!(first.as_str().unwrap().contains(&alert));
    assert!(s["text"].as_str().unwrap().contains("SPIKE ALERT"));

    let d = receive("discord", &n).await.json();
    let e = &d["embeds"][0];
    let description = e["description"].as_str().unwrap();
    assert!(description.starts_with(":rotating_light: **Spike alert** (compared with scan #41)"));
    assert!(description.contains(&alert));
    assert_eq!(e["color"], 0x00E0_1E5A);
    assert!(d["content"].as_str().unwrap().contains("Spike alert"));

    let w = receive("webhook", &n).await.json();
    assert_eq!(w["summary"]["alert"]["baseline_scan"], 41);
    assert_eq!(w["summary"]["alert"]["lines"][0], alert.as_str());
}
