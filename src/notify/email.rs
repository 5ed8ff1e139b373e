//! Email over SMTP with lettre: a text part, an HTML part, the CSV report attached.
//!
//! Both bodies carry the same content in the same order: the spike alert first (the reason the
//! message matters), then the headline, the figures, each list's first items, the recommended
//! actions, API usage, warnings and where the report is.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notice, SendError};
use crate::config::{EmailConfig, SmtpTls};

/// How many rows of each list the email shows (SPEC §5: the first 20 orphans and 20 missing).
pub const LIST_MAX: usize = 20;

/// The CSV report, or why it is not attached.
enum Report {
    Attached {
        name: String,
        bytes: Vec<u8>,
    },
    NotAttached(String),
    /// The run wrote no CSV report: nothing to say.
    Absent,
}

/// Bytes in the product's MB (1,048,576 bytes, as `attach_max` counts them),
/// plain bytes for small sizes so a tiny limit does not read as `0.00 MB`.
#[allow(clippy::cast_precision_loss)]
fn size_text(bytes: u64) -> String {
    if bytes < 10_000 {
        format!("{bytes} bytes")
    } else {
        format!("{} MB", crate::report::size_mb(bytes))
    }
}

fn load_report(cfg: &EmailConfig, n: &Notice) -> Report {
    let Some(path) = &n.attachment else {
        return Report::Absent;
    };
    let name = path.file_name().map_or_else(
        || "report.csv".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    read_report(path, name, cfg.attach_max)
}

fn read_report(path: &Path, name: String, max: u64) -> Report {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Report::NotAttached(format!(
                "the CSV report is not attached: {} was not found",
                path.display()
            ));
        }
        Err(e) => {
            return Report::NotAttached(format!(
                "the CSV report is not attached: it could not be read ({e})"
            ));
        }
    };
    if meta.len() > max {
        return Report::NotAttached(format!(
            "the CSV report is not attached: it is {}, over the {} limit (attach_max)",
            size_text(meta.len()),
            size_text(max)
        ));
    }
    match std::fs::read(path) {
        // The file may have grown since it was measured.
        Ok(bytes) if bytes.len() as u64 > max => Report::NotAttached(format!(
            "the CSV report is not attached: it is {}, over the {} limit (attach_max)",
            size_text(bytes.len() as u64),
            size_text(max)
        )),
        Ok(bytes) => Report::Attached { name, bytes },
        Err(e) => Report::NotAttached(format!(
            "the CSV report is not attached: it could not be read ({e})"
        )),
    }
}

fn mailbox(s: &str, what: &str) -> Result<Mailbox, SendError> {
    s.parse::<Mailbox>()
        .map_err(|e| SendError::fatal(format!("email {what} `{s}` is not an address ({e})")))
}

/// The message as it is sent: multipart/mixed holding multipart/alternative (text, HTML) and,
/// when it exists and is at most `attach_max`, the CSV report.
pub fn message(cfg: &EmailConfig, n: &Notice) -> Result<Message, SendError> {
    let report = load_report(cfg, n);
    let note = match &report {
        Report::Attached { name, bytes } => Some(format!(
            "The CSV report is attached ({name}, {}).",
            size_text(bytes.len() as u64)
        )),
        Report::NotAttached(why) => Some(capitalise(why)),
        Report::Absent => None,
    };
    let mut b = Message::builder()
        .from(mailbox(&cfg.from, "from")?)
        .subject(n.subject())
        .message_id(None);
    for to in &cfg.to {
        b = b.to(mailbox(to, "to")?);
    }
    let text = render_text(n, note.as_deref());
    let html = render_html(n, note.as_deref());
    let mut body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(text, html));
    if let Report::Attached { name, bytes } = report {
        let csv = ContentType::parse("text/csv; charset=utf-8")
            .map_err(|e| SendError::fatal(format!("email: {e}")))?;
        body = body.singlepart(Attachment::new(name).body(bytes, csv));
    }
    b.multipart(body)
        .map_err(|e| SendError::fatal(format!("email: cannot build the message ({e})")))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "first 20 of 25", "all 3", "none".
fn count_text(shown: usize, total: u64) -> String {
    if total == 0 && shown == 0 {
        "none".to_string()
    } else if (shown as u64) < total {
        format!("first {shown} of {total}")
    } else {
        format!("all {total}")
    }
}

const INCOMPLETE: &str =
    "This run could not read everything, so the figures and lists below are partial.";

/// The text part (also what `message` puts in the text/plain alternative).
pub fn text_body(n: &Notice) -> String {
    render_text(n, None)
}

fn render_text(n: &Notice, attachment_note: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(a) = &n.alert {
        let _ = writeln!(
            s,
            "*** SPIKE ALERT *** (compared with scan #{})",
            a.baseline_scan
        );
        for l in &a.lines {
            let _ = writeln!(s, "SPIKE ALERT: {l}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "assetgc {} of {}", n.kind.label(), n.app_name);
    if let Some(id) = n.run_id {
        let _ = writeln!(s, "Run #{id}");
    }
    let _ = writeln!(s, "{}", n.headline);
    if !n.complete {
        let _ = writeln!(s, "\nINCOMPLETE: {INCOMPLETE}");
    }
    if !n.figures.is_empty() {
        s.push('\n');
        let width = n
            .figures
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(0);
        for f in &n.figures {
            let pad = width - f.label.chars().count();
            let _ = writeln!(s, "  {}:{} {}", f.label, " ".repeat(pad), f.value);
        }
    }
    for l in &n.lists {
        let shown = l.items.len().min(LIST_MAX);
        let _ = writeln!(s, "\n{} ({})", l.title, count_text(shown, l.total));
        for i in l.items.iter().take(LIST_MAX) {
            let _ = writeln!(s, "  - {}", i.text);
        }
    }
    section_text(&mut s, "Recommended actions", &n.actions);
    section_text(&mut s, "API usage", &n.api_usage);
    section_text(&mut s, "Warnings", &n.warnings);
    if n.report_path.is_some() || attachment_note.is_some() {
        s.push('\n');
    }
    if let Some(p) = &n.report_path {
        let _ = writeln!(s, "Report: {p}");
    }
    if let Some(note) = attachment_note {
        let _ = writeln!(s, "{note}");
    }
    s
}

fn section_text(s: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title}");
    for l in lines {
        let _ = writeln!(s, "  - {l}");
    }
}

/// Text safe inside HTML elements and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link only for web addresses: a key or title is users' data, and `javascript:` in an href
/// would run in some mail clients.
fn safe_href(link: &str) -> Option<&str> {
    let l = link.trim();
    let lower = l.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(l)
}

const FONT: &str = "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;line-height:1.45;color:#1f2328";
const H2: &str = "font-size:15px;margin:20px 0 6px 0";

/// The HTML part: one page, inline styles only, nothing fetched from elsewhere.
pub fn html_body(n: &Notice) -> String {
    render_html(n, None)
}

fn render_html(n: &Notice, attachment_note: Option<&str>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"margin:0;padding:16px;background:#ffffff\">\n<div style=\"{FONT};max-width:760px\">\n",
        escape(&n.subject())
    );
    if let Some(a) = &n.alert {
        let _ = write!(
            s,
            "<div style=\"border:2px solid #b42318;background:#fef3f2;color:#7a271a;padding:10px 14px;margin:0 0 16px 0;border-radius:4px\">\n<div style=\"font-weight:bold;font-size:16px\">SPIKE ALERT</div>\n<div>Compared with scan #{}:</div>\n<ul style=\"margin:6px 0 0 0;padding-left:20px\">\n",
            a.baseline_scan
        );
        for l in &a.lines {
            let _ = writeln!(s, "<li>{}</li>", escape(l));
        }
        s.push_str("</ul>\n</div>\n");
    }
    let _ = write!(
        s,
        "<div style=\"color:#59636e\">assetgc {} of <b>{}</b>{}</div>\n<h1 style=\"font-size:18px;margin:4px 0 12px 0\">{}</h1>\n",
        escape(n.kind.label()),
        escape(&n.app_name),
        n.run_id
            .map(|id| format!(" — run #{id}"))
            .unwrap_or_default(),
        escape(&n.headline)
    );
    if !n.complete {
        let _ = writeln!(
            s,
            "<div style=\"border:1px solid #bf8700;background:#fff8c5;padding:8px 12px;margin:0 0 12px 0\"><b>Incomplete.</b> {}</div>",
            escape(INCOMPLETE)
        );
    }
    if !n.figures.is_empty() {
        s.push_str("<table style=\"border-collapse:collapse;margin:0 0 8px 0\">\n");
        for f in &n.figures {
            let _ = writeln!(
                s,
                "<tr><td style=\"padding:3px 16px 3px 0;color:#59636e;vertical-align:top\">{}</td><td style=\"padding:3px 0\">{}</td></tr>",
                escape(&f.label),
                escape(&f.value)
            );
        }
        s.push_str("</table>\n");
    }
    for l in &n.lists {
        let shown = l.items.len().min(LIST_MAX);
        let _ = writeln!(
            s,
            "<h2 style=\"{H2}\">{} <span style=\"font-weight:normal;color:#59636e\">({})</span></h2>",
            escape(&l.title),
            count_text(shown, l.total)
        );
        if shown == 0 {
            continue;
        }
        s.push_str("<ul style=\"margin:0;padding-left:20px;font-family:Menlo,Consolas,monospace;font-size:12px\">\n");
        for i in l.items.iter().take(LIST_MAX) {
            match i.link.as_deref().and_then(safe_href) {
                Some(href) => {
                    let _ = writeln!(
                        s,
                        "<li><a href=\"{}\" style=\"color:#0969da\">{}</a></li>",
                        escape(href),
                        escape(&i.text)
                    );
                }
                None => {
                    let _ = writeln!(s, "<li>{}</li>", escape(&i.text));
                }
            }
        }
        s.push_str("</ul>\n");
    }
    section_html(&mut s, "Recommended actions", &n.actions);
    section_html(&mut s, "API usage", &n.api_usage);
    section_html(&mut s, "Warnings", &n.warnings);
    if n.report_path.is_some() || attachment_note.is_some() {
        let _ = writeln!(s, "<h2 style=\"{H2}\">Report</h2>");
    }
    if let Some(p) = &n.report_path {
        let _ = writeln!(
            s,
            "<p style=\"margin:0 0 4px 0\"><code>{}</code></p>",
            escape(p)
        );
    }
    if let Some(note) = attachment_note {
        let _ = writeln!(s, "<p style=\"margin:0\">{}</p>", escape(note));
    }
    s.push_str("</div>\n</body></html>\n");
    s
}

fn section_html(s: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "<h2 style=\"{H2}\">{}</h2>\n<ul style=\"margin:0;padding-left:20px\">",
        escape(title)
    );
    for l in lines {
        let _ = writeln!(s, "<li>{}</li>", escape(l));
    }
    s.push_str("</ul>\n");
}

/// Sends the notice to every `to` address. The error names the server (`host:port`) and what went
/// wrong, never the password or the URL it came in.
pub async fn send(cfg: &EmailConfig, n: &Notice, timeout: Duration) -> Result<(), SendError> {
    let msg = message(cfg, n)?;
    let transport = transport(cfg, timeout)?;
    transport
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| smtp_error(cfg, &e))
}

fn transport(
    cfg: &EmailConfig,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let server = format!("SMTP {}:{}", cfg.host, cfg.port);
    let tls = |host: &str| {
        TlsParameters::new(host.to_string())
            .map_err(|e| SendError::fatal(format!("{server}: TLS setup failed ({e})")))
    };
    let tls = match cfg.tls {
        SmtpTls::StartTls => Tls::Required(tls(&cfg.host)?),
        SmtpTls::Wrapper => Tls::Wrapper(tls(&cfg.host)?),
        SmtpTls::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
        .port(cfg.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(user) = &cfg.user {
        let password = cfg
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    Ok(b.build())
}

/// lettre's error in words that hold no secret, and whether trying again may help.
///
/// Its `Display` is not used as is: a server's reply text is free-form and some servers echo
/// what the client sent (an AUTH PLAIN blob is the password, base64-encoded), so only the reply
/// code is kept. I/O and TLS causes are ours or the OS's and carry no credentials.
fn smtp_error(cfg: &EmailConfig, e: &lettre::transport::smtp::Error) -> SendError {
    let server = format!("SMTP {}:{}", cfg.host, cfg.port);
    // lettre nests its own errors; the innermost cause is the one that says what happened.
    let cause = root_cause(e).map(|c| scrub(cfg, &c.to_string()));
    let with_cause = |what: &str| match &cause {
        Some(c) if !c.is_empty() => format!("{server}: {what} ({c})"),
        _ => format!("{server}: {what}"),
    };
    if let Some(code) = e.status() {
        let code = code.to_string();
        let what = match code.as_str() {
            "535" | "534" | "530" | "454" if cfg.user.is_some() => "authentication failed",
            "530" => "the server requires authentication (give user:password in smtp_url)",
            "550" | "551" | "553" | "501" => "a recipient or the sender was rejected",
            "552" => "the message is too large for the server",
            _ if e.is_transient() => "the server refused for now",
            _ => "the server refused the message",
        };
        let message = format!("{server}: {what} (reply {code})");
        return if e.is_transient() {
            SendError::retry(message)
        } else {
            SendError::fatal(message)
        };
    }
    if e.is_timeout() {
        return SendError::retry(format!("{server}: timed out"));
    }
    if e.is_tls() {
        // A certificate the system does not trust or a server without TLS: trying again
        // will not change it.
        return SendError::fatal(with_cause("TLS handshake failed"));
    }
    if e.is_client() || e.is_response() {
        let lower = cause.as_deref().unwrap_or_default().to_ascii_lowercase();
        if lower.contains("starttls") || lower.contains("tls") {
            return SendError::fatal(with_cause("the server does not offer STARTTLS"));
        }
        if lower.contains("mechanism") || lower.contains("auth") {
            return SendError::fatal(with_cause("authentication failed"));
        }
        return SendError::fatal(with_cause("SMTP conversation failed"));
    }
    let io = io_kind(e);
    if io == Some(std::io::ErrorKind::InvalidData) && cfg.tls != SmtpTls::None {
        // tokio-rustls reports a refused certificate or a failed handshake as InvalidData.
        return SendError::fatal(with_cause("TLS handshake failed"));
    }
    if let Some(io) = io {
        let what = match io {
            std::io::ErrorKind::ConnectionRefused => "connection refused",
            std::io::ErrorKind::TimedOut => "timed out",
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                "connection reset"
            }
            std::io::ErrorKind::UnexpectedEof => "connection closed by the server",
            _ => "",
        };
        if !what.is_empty() {
            return SendError::retry(format!("{server}: {what}"));
        }
    }
    SendError::retry(with_cause("cannot connect or send"))
}

fn root_cause(e: &lettre::transport::smtp::Error) -> Option<&(dyn std::error::Error + 'static)> {
    let mut cause = std::error::Error::source(e)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause)
}

fn io_kind(e: &lettre::transport::smtp::Error) -> Option<std::io::ErrorKind> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        src = s.source();
    }
    None
}

/// The password, should a cause ever quote it, replaced by `***`.
fn scrub(cfg: &EmailConfig, s: &str) -> String {
    match cfg.password.as_ref().map(crate::config::Secret::expose) {
        Some(p) if !p.is_empty() => s.replace(p, "***"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Alert, Figure, Item, Kind, List};

    fn items(prefix: &str, n: usize) -> Vec<Item> {
        (1..=n)
            .map(|i| Item {
                text: format!("{prefix}{i}.jpg  2.30 MB"),
                link: Some(format!("https://cdn.example.com/{prefix}{i}.jpg")),
                json: serde_json::json!({ "key": format!("{prefix}{i}.jpg") }),
            })
            .collect()
    }

    fn notice(alert: bool) -> Notice {
        Notice {
            kind: Kind::Scan,
            app_name: "shop".into(),
            run_id: Some(7),
            headline: "25 orphans (57.50 MB), 22 missing (20 ACTIVE, 2 DELETED)".into(),
            complete: true,
            noteworthy: true,
            alert: alert.then(|| Alert {
                baseline_scan: 6,
                lines: vec!["orphans grew by 20 (5 → 25)".into()],
            }),
            figures: vec![
                Figure {
                    label: "Orphaned files".into(),
                    value: "25 (12.5%), 57.50 MB".into(),
                },
                Figure {
                    label: "Missing <files>".into(),
                    value: "22".into(),
                },
            ],
            lists: vec![
                List {
                    title: "Orphaned files".into(),
                    key: "orphans",
                    total: 25,
                    items: items("media/o", 25),
                },
                List {
                    title: "Records with missing files".into(),
                    key: "missing",
                    total: 3,
                    items: items("media/m", 3),
                },
            ],
            actions: vec!["Run `assetgc purge --dry-run` to review".into()],
            api_usage: vec!["API calls: 5/500 used (1%)".into()],
            report_path: Some("/var/lib/assetgc/reports/shop.csv".into()),
            attachment: None,
            warnings: vec!["store `cdn` listing was slow".into()],
            scan_json: serde_json::Value::Null,
            summary_json: serde_json::Value::Null,
        }
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("media/é ü.jpg"), "media/é ü.jpg");
    }

    #[test]
    fn bodies_show_the_first_twenty_items_only() {
        let n = notice(false);
        for body in [text_body(&n), html_body(&n)] {
            assert!(body.contains("media/o20.jpg"), "{body}");
            assert!(!body.contains("media/o21.jpg"), "{body}");
            assert!(body.contains("first 20 of 25"), "{body}");
            assert!(body.contains("all 3"), "{body}");
            assert!(body.contains("media/m3.jpg"));
            assert!(body.contains("purge --dry-run"));
            assert!(body.contains("API calls: 5/500 used (1%)"));
            assert!(body.contains("/var/lib/assetgc/reports/shop.csv"));
            assert!(body.contains("listing was slow"));
            assert!(!body.contains("SPIKE"));
        }
    }

    #[test]
    fn html_escapes_users_data_and_links_items() {
        let mut n = notice(false);
        n.app_name = "<script>alert(1)</script>".into();
        n.lists[0].items[0].text = "a<b>.jpg".into();
        n.lists[0].items[1].link = Some("javascript:alert(1)".into());
        let html = html_body(&n);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a&lt;b&gt;.jpg"));
        assert!(html.contains("Missing &lt;files&gt;"));
        assert!(html.contains("<a href=\"https://cdn.example.com/media/o3.jpg\""));
        assert!(!html.contains("javascript:"));
        assert!(!html.contains("src="), "no external resources");
    }

    #[test]
    fn alert_comes_before_the_headline() {
        let n = notice(true);
        let html = html_body(&n);
        // The HTML's <title> repeats the subject; what counts is the order on the page.
        let page = &html[html.find("<body").expect("a body")..];
        for body in [text_body(&n).as_str(), page] {
            let alert = body.find("SPIKE ALERT").expect("alert shown");
            let line = body.find("orphans grew by 20").expect("alert line");
            let headline = body.find("25 orphans (57.50 MB)").expect("headline");
            assert!(alert < headline && line < headline, "{body}");
        }
    }

    #[test]
    fn incomplete_runs_say_so() {
        let mut n = notice(false);
        n.complete = false;
        assert!(text_body(&n).contains("INCOMPLETE"));
        assert!(html_body(&n).contains("Incomplete."));
        assert!(!text_body(&notice(false)).contains("ncomplete"));
    }

    #[test]
    fn report_too_large_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, vec![b'x'; 20_000]).unwrap();
        match read_report(&path, "r.csv".into(), 5_000) {
            Report::NotAttached(why) => {
                assert!(why.contains("0.02 MB, over the 5000 bytes limit"), "{why}");
            }
            _ => panic!("attached a file over the limit"),
        }
        match read_report(&path, "r.csv".into(), 20_000) {
            Report::Attached { name, bytes } => {
                assert_eq!((name.as_str(), bytes.len()), ("r.csv", 20_000));
            }
            _ => panic!("not attached at the limit"),
        }
        assert!(matches!(
            read_report(&dir.path().join("gone.csv"), "gone.csv".into(), 10),
            Report::NotAttached(why) if why.contains("not found")
        ));
    }
}
