//! The email channel (SPEC §5 "Notifications") against a real SMTP server (aiosmtpd, see
//! tests/common/smtp.rs): STARTTLS and implicit TLS with AUTH, the text and HTML parts and the
//! CSV attachment read back by a MIME parser we did not write, the attachment limit, and failures
//! that name no secret and are retried only when another try may help.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use assetgc::config::NotifyConfig;
use assetgc::notify::{self, Retry};
use assetgc::notify::{Item, Notice};
use common::notify::{API_USAGE, REPORT_PATH, orphan_key, sample_notice};
use common::smtp::{SinkOptions, SmtpSink, Tls, free_port, trust_test_ca};
use mail_parser::{MessageParser, MimeHeaders};

const USER: &str = "mailer";
const PASSWORD: &str = "Pa55-w0rd/secret";

/// `[notify] email` pointing at `smtp_url`, read through the product's own config parser (so
/// the URL's user and password are decoded as in real runs).
fn notify_config(dir: &Path, smtp_url: &str, attach_max: &str) -> NotifyConfig {
    let text = format!(
        r#"
[stores.media]
url = "./media"

[databases.app]
url = "sqlite://app.db"

[[references]]
name = "product images"
query = "SELECT id, image AS key FROM products"

[notify]
on = "always"
email = {{ smtp_url = "${{SMTP_URL}}", from = "assetgc <assetgc@example.com>", to = ["ops@example.com", "Ann Lee <ann@example.com>"], attach_max = "{attach_max}" }}
"#
    );
    let env = |k: &str| (k == "SMTP_URL").then(|| smtp_url.to_string());
    assetgc::config::parse(&text, "assetgc.toml", dir, &env)
        .expect("the test config parses")
        .notify
}

/// A CSV report of `size` bytes or a little more, shaped like ours.
fn write_report(dir: &Path, size: usize) -> std::path::PathBuf {
    let mut csv = String::from(
        "ORPHANED FILES\nstore,key,resource_type,size_bytes,size_mb,format,uploaded_at,url\n",
    );
    let mut i = 0;
    while csv.len() < size {
        i += 1;
        csv.push_str(&format!(
            "media,{},,2411520,2.30,jpg,2025-09-15T14:30:00Z,https://cdn.shop.example.com/{}\n",
            orphan_key(i),
            orphan_key(i)
        ));
    }
    let path = dir.join("shop-scan-12.csv");
    std::fs::write(&path, csv).expect("write the CSV report");
    path
}

fn fast_retry() -> Retry {
    Retry {
        attempts: 3,
        first_wait: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
    }
}

/// The key of missing row `i` in [`sample_notice`].
fn missing_key(i: usize) -> String {
    format!("media/p{i}.png")
}

/// Lists as long as their totals (up to 25): a notice holds the first 20 of each, and the email
/// must cut a longer list itself.
fn overfill(n: &mut Notice) {
    for l in &mut n.lists {
        let keys: fn(usize) -> String = if l.key == "orphans" {
            orphan_key
        } else {
            missing_key
        };
        while l.items.len() < l.total.min(25) as usize {
            let key = keys(l.items.len() + 1);
            l.items.push(Item {
                text: format!("{key}  (extra row)"),
                link: None,
                json: serde_json::json!({ "key": key }),
            });
        }
    }
}

/// Sends through `send_all` (email only) and answers the one delivery.
async fn send(cfg: &NotifyConfig, notice: &notify::Notice) -> notify::Delivery {
    let mut deliveries = notify::send_all(cfg, notice, fast_retry()).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let d = deliveries.remove(0);
    assert_eq!(d.channel, "email");
    d
}

fn content_types(msg: &mail_parser::Message<'_>) -> Vec<String> {
    msg.parts
        .iter()
        .filter_map(|p| p.content_type())
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
        .collect()
}

fn assert_no_secret(error: &str) {
    for secret in [PASSWORD, "Pa55", "smtp://", "smtps://"] {
        assert!(!error.contains(secret), "`{secret}` shows in: {error}");
    }
}

#[tokio::test]
async fn starttls_with_auth_delivers_both_parts_and_the_report() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTls,
        auth: Some((USER, PASSWORD)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = write_report(dir.path(), 4_000);
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "5MB",
    );
    let mut notice = sample_notice(25, 22, false, Some(report.clone()));
    overfill(&mut notice);

    let d = send(&cfg, &notice).await;
    assert_eq!(
        (d.error.as_deref(), d.attempts),
        (None, 1),
        "{}",
        sink.log()
    );

    let mails = sink.messages(1);
    assert_eq!(mails.len(), 1, "one message; sink log:\n{}", sink.log());
    let msg = MessageParser::default()
        .parse(&mails[0])
        .expect("a MIME message");
    let subject = msg.subject().expect("a subject");
    assert!(
        subject.contains("[shop]")
            && subject.contains("scan")
            && subject.contains(&notice.headline),
        "{subject}"
    );
    let to: Vec<&str> = msg
        .to()
        .expect("To")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["ops@example.com", "ann@example.com"]);

    let types = content_types(&msg);
    for t in [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/csv",
    ] {
        assert!(types.iter().any(|x| x == t), "no {t} part in {types:?}");
    }
    let text = msg.body_text(0).expect("a text part").into_owned();
    let html = msg.body_html(0).expect("an HTML part").into_owned();
    assert!(html.contains("<html"), "the HTML part is HTML:\n{html}");
    for body in [&text, &html] {
        for i in 1..=20 {
            assert!(body.contains(&orphan_key(i)), "orphan {i} missing:\n{body}");
            assert!(
                body.contains(&missing_key(i)),
                "missing row {i} missing:\n{body}"
            );
        }
        assert!(
            !body.contains(&orphan_key(21)),
            "21st orphan shown:\n{body}"
        );
        assert!(
            !body.contains(&missing_key(21)),
            "21st missing row shown:\n{body}"
        );
        assert!(body.contains("first 20 of 25"), "{body}");
        assert!(body.contains("first 20 of 22"), "{body}");
        assert!(body.contains("11 ACTIVE, 11 DELETED"), "{body}");
        assert!(body.contains("assetgc purge --from-report"), "{body}");
        assert!(body.contains(API_USAGE), "{body}");
        assert!(body.contains(REPORT_PATH), "{body}");
        assert!(body.contains("is attached"), "{body}");
    }
    for action in &notice.actions {
        assert!(text.contains(action.as_str()), "action `{action}`:\n{text}");
    }
    assert!(html.contains("href=\"https://cdn.example.com/shop/media/a1.jpg\""));

    let attachments: Vec<_> = msg.attachments().collect();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].attachment_name(), Some("shop-scan-12.csv"));
    assert_eq!(
        attachments[0].contents(),
        std::fs::read(&report).unwrap().as_slice()
    );
}

#[tokio::test]
async fn smtps_with_auth_delivers() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::Smtps,
        auth: Some((USER, PASSWORD)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "5MB",
    );
    assert!(
        cfg.email
            .as_ref()
            .unwrap()
            .smtp_url
            .expose()
            .starts_with("smtps://")
    );
    let notice = sample_notice(3, 1, false, None);

    let d = send(&cfg, &notice).await;
    assert_eq!(d.error, None, "{}", sink.log());
    let mails = sink.messages(1);
    assert_eq!(mails.len(), 1);
    let msg = MessageParser::default().parse(&mails[0]).unwrap();
    assert!(msg.subject().unwrap().contains(&notice.headline));
    assert_eq!(msg.attachments().count(), 0);
}

#[tokio::test]
async fn plain_relay_without_tls_or_auth_delivers() {
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::None,
        auth: None,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_config(dir.path(), &sink.smtp_url(None, None), "5MB");
    let d = send(&cfg, &sample_notice(1, 0, false, None)).await;
    assert_eq!(d.error, None, "{}", sink.log());
    assert_eq!(sink.messages(1).len(), 1);
}

#[tokio::test]
async fn report_over_attach_max_is_not_attached_and_the_body_says_why() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTls,
        auth: Some((USER, PASSWORD)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = write_report(dir.path(), 60_000);
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "50KB",
    );
    let d = send(&cfg, &sample_notice(25, 3, false, Some(report))).await;
    assert_eq!(d.error, None, "{}", sink.log());

    let mails = sink.messages(1);
    let msg = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(msg.attachments().count(), 0, "{:?}", content_types(&msg));
    let text = msg.body_text(0).unwrap().into_owned();
    let html = msg.body_html(0).unwrap().into_owned();
    for body in [&text, &html] {
        assert!(body.contains("not attached"), "{body}");
        assert!(body.contains("0.06 MB, over the 0.05 MB limit"), "{body}");
        assert!(body.contains(REPORT_PATH), "{body}");
    }
}

#[tokio::test]
async fn wrong_password_fails_once_without_showing_it() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTls,
        auth: Some((USER, "the-right-one")),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "5MB",
    );
    let d = send(&cfg, &sample_notice(2, 0, false, None)).await;
    let error = d.error.expect("a failed delivery");
    assert_eq!(d.attempts, 1, "a refused login is not tried again: {error}");
    assert!(error.contains("authentication failed"), "{error}");
    assert!(
        error.contains(&format!("127.0.0.1:{}", sink.port())),
        "{error}"
    );
    assert_no_secret(&error);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn untrusted_certificate_is_refused_once() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTlsUntrusted,
        auth: Some((USER, PASSWORD)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "5MB",
    );
    let d = send(&cfg, &sample_notice(2, 0, false, None)).await;
    let error = d.error.expect("a failed delivery");
    assert_eq!(d.attempts, 1, "{error}");
    assert!(error.contains("TLS handshake failed"), "{error}");
    assert_no_secret(&error);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("smtp://{USER}:{}@127.0.0.1:{port}", "Pa55-w0rd%2Fsecret");
    let cfg = notify_config(dir.path(), &url, "5MB");
    let started = Instant::now();
    let d = send(&cfg, &sample_notice(2, 0, false, None)).await;
    let took = started.elapsed();
    let error = d.error.expect("a failed delivery");
    assert_eq!(d.attempts, 3, "{error}");
    assert!(error.contains("connection refused"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert_no_secret(&error);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn spike_alert_leads_the_subject_and_the_text() {
    trust_test_ca();
    let Some(sink) = SmtpSink::start(SinkOptions {
        tls: Tls::StartTls,
        auth: Some((USER, PASSWORD)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_config(
        dir.path(),
        &sink.smtp_url(Some(USER), Some(PASSWORD)),
        "5MB",
    );
    let notice = sample_notice(40, 2, true, None);
    let d = send(&cfg, &notice).await;
    assert_eq!(d.error, None, "{}", sink.log());

    let mails = sink.messages(1);
    let msg = MessageParser::default().parse(&mails[0]).unwrap();
    assert!(
        msg.subject().unwrap().contains("SPIKE"),
        "{:?}",
        msg.subject()
    );
    let text = msg.body_text(0).unwrap().into_owned();
    let alert = text.find("SPIKE ALERT").expect("the alert");
    let line = text.find("Orphans grew by 37").expect("the alert's line");
    let headline = text.find(&notice.headline).expect("the headline");
    assert!(alert < headline && line < headline, "{text}");
    let html = msg.body_html(0).unwrap().into_owned();
    let page = &html[html.find("<body").unwrap()..];
    assert!(page.find("SPIKE ALERT").unwrap() < page.find(&notice.headline).unwrap());
}
