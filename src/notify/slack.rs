//! Slack incoming webhooks (Block Kit).
//!
//! Slack rejects a whole message that breaks one of its limits (`invalid_blocks`), so every text
//! is cut to fit instead: at most 50 blocks, a header of 150 characters, section texts of 3000,
//! ten fields of 2000 each, ten context elements.

use serde_json::{Value, json};

use super::webhook::{clip, deliver};
use super::{List, Notice, SendError};

const MAX_BLOCKS: usize = 50;
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELDS_MAX: usize = 10;
const FIELD_MAX: usize = 2000;
const CONTEXT_ELEMENTS_MAX: usize = 10;
/// Slack and Discord show the first five items of each list (SPEC §5).
pub(super) const SHOWN: usize = 5;
/// An item's text before escaping: keys can be long, and five of them share one section.
const ITEM_TEXT_MAX: usize = 300;

/// Slack's mrkdwn escaping: only `&`, `<` and `>` are control characters. Escaping `<` is also
/// what keeps user data from forming `<!channel>` or `<@U…>` mentions.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A link target for `<url|text>`: only http(s) URLs, with the characters that would end the
/// link percent-encoded.
fn link_target(url: &str) -> Option<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '|' => out.push_str("%7C"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn mrkdwn(text: &str) -> Value {
    json!({ "type": "mrkdwn", "text": clip(text, SECTION_MAX) })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": mrkdwn(text) })
}

/// `*Orphaned files* — first 5 of 15` and a bullet a line, adding items while they fit.
fn list_section(l: &List) -> Value {
    let shown = l.items.len().min(SHOWN);
    let mut text = if l.total == 0 && l.items.is_empty() {
        format!("*{}*: none", escape(&clip(&l.title, 200)))
    } else {
        format!(
            "*{}* — first {shown} of {}",
            escape(&clip(&l.title, 200)),
            l.total
        )
    };
    for item in l.items.iter().take(SHOWN) {
        let label = escape(&clip(&item.text, ITEM_TEXT_MAX));
        let line = match item.link.as_deref().and_then(link_target) {
            Some(url) if url.len() + label.len() + 6 <= SECTION_MAX / SHOWN => {
                format!("\n• <{url}|{label}>")
            }
            _ => format!("\n• {label}"),
        };
        if text.chars().count() + line.chars().count() > SECTION_MAX - 2 {
            text.push_str("\n…");
            break;
        }
        text.push_str(&line);
    }
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

pub fn payload(n: &Notice) -> Value {
    let run = n.run_id.map(|id| format!(" #{id}")).unwrap_or_default();
    let mut head = vec![json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": clip(&format!("[{}] {}{run}", n.app_name, n.kind.label()), HEADER_MAX),
            "emoji": true,
        },
    })];
    if let Some(a) = &n.alert {
        let mut text = format!(
            ":rotating_light: *Spike alert* (compared with scan #{})",
            a.baseline_scan
        );
        for line in &a.lines {
            text.push_str("\n• ");
            text.push_str(&escape(line));
        }
        head.push(section(&text));
    }
    head.push(section(&escape(&n.headline)));

    let mut middle = Vec::new();
    for chunk in n.figures.chunks(FIELDS_MAX) {
        let fields: Vec<Value> = chunk
            .iter()
            .map(|f| {
                json!({
                    "type": "mrkdwn",
                    "text": clip(
                        &format!("*{}*\n{}", escape(&clip(&f.label, 200)), escape(&f.value)),
                        FIELD_MAX
                    ),
                })
            })
            .collect();
        middle.push(json!({ "type": "section", "fields": fields }));
    }
    middle.extend(n.lists.iter().map(list_section));
    if !n.actions.is_empty() {
        let mut text = "*Recommended actions*".to_string();
        for a in &n.actions {
            text.push_str("\n• ");
            text.push_str(&escape(a));
        }
        middle.push(section(&text));
    }

    let mut tail = Vec::new();
    let mut context: Vec<Value> = Vec::new();
    if let Some(p) = &n.report_path {
        context.push(mrkdwn(&format!("Report: `{}`", escape(p))));
    }
    for line in &n.api_usage {
        context.push(mrkdwn(&escape(line)));
    }
    context.truncate(CONTEXT_ELEMENTS_MAX);
    if !context.is_empty() {
        tail.push(json!({ "type": "context", "elements": context }));
    }
    if !n.complete {
        let mut text =
            ":warning: *Incomplete run*: part of the storage or the database was not read, so these figures are not the whole picture.".to_string();
        for w in &n.warnings {
            text.push_str("\n• ");
            text.push_str(&escape(w));
        }
        tail.push(section(&text));
    }

    let room = MAX_BLOCKS - head.len() - tail.len();
    if middle.len() > room {
        let dropped = middle.len() - (room - 1);
        middle.truncate(room - 1);
        middle.push(section(&format!(
            "… {dropped} more sections not shown: see the report."
        )));
    }
    let mut blocks = head;
    blocks.extend(middle);
    blocks.extend(tail);
    json!({
        "text": clip(&escape(&n.subject()), SECTION_MAX),
        "blocks": blocks,
    })
}

pub async fn send(client: &reqwest::Client, url: &str, n: &Notice) -> Result<(), SendError> {
    deliver(client.post(url).json(&payload(n))).await
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::{Alert, Figure, Item, Kind};

    /// A notice for the channels' unit tests: `orphans` orphan items (their keys long when
    /// `long`), two missing rows, and as many figures as a busy run would have.
    pub(crate) fn notice(orphans: usize, long: bool) -> Notice {
        let key = |i: usize| {
            if long {
                format!("media/{}<&>{i}.jpg", "k".repeat(1000))
            } else {
                format!("media/a{i}.jpg")
            }
        };
        let figures = if long { 30 } else { 4 };
        Notice {
            kind: Kind::Scan,
            app_name: "shop".into(),
            run_id: Some(42),
            headline: format!("{orphans} orphans (2.30 MB), 2 missing (1 ACTIVE, 1 DELETED)"),
            complete: !long,
            noteworthy: true,
            alert: long.then(|| Alert {
                baseline_scan: 41,
                lines: vec!["Orphans grew by 60 (from 3 to 63)".into()],
            }),
            figures: (0..figures)
                .map(|i| Figure {
                    label: format!("Figure {i} {}", "l".repeat(if long { 1000 } else { 0 })),
                    value: format!("{i} {}", "v".repeat(if long { 3000 } else { 0 })),
                })
                .collect(),
            lists: vec![
                List {
                    title: "Orphaned files".into(),
                    key: "orphans",
                    total: orphans as u64,
                    items: (0..orphans.min(20))
                        .map(|i| Item {
                            text: format!("{}  2.30 MB", key(i)),
                            link: Some(format!("https://cdn.example.com/{}?a=1&b=2", key(i))),
                            json: json!({ "key": key(i), "size_bytes": 2_411_520 }),
                        })
                        .collect(),
                },
                List {
                    title: "Records with missing files".into(),
                    key: "missing",
                    total: 2,
                    items: vec![
                        Item {
                            text: "ACTIVE posts #7 <!channel> media/gone.jpg".into(),
                            link: Some("javascript:alert(1)".into()),
                            json: json!({ "record_id": "7", "status": "ACTIVE" }),
                        },
                        Item {
                            text: "DELETED posts #9 media/old.jpg".into(),
                            link: None,
                            json: json!({ "record_id": "9", "status": "DELETED" }),
                        },
                    ],
                },
            ],
            actions: vec!["Review the orphans, then run `assetgc purge --from-report`".into()],
            api_usage: vec![
                "API calls: 5/500 used (1%) — Rate limit remaining: 495/500 (99%)".into(),
            ],
            report_path: Some("reports/asset_detection_2026-12-04_100000.csv".into()),
            attachment: None,
            warnings: if long {
                vec!["listing of store media ended early".into()]
            } else {
                Vec::new()
            },
            scan_json: json!({ "id": 42, "kind": "scan", "app_name": "shop" }),
            summary_json: json!({ "orphans": orphans, "headline": "…" }),
        }
    }

    fn texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let (Some(Value::String(t)), Some(_)) = (m.get("text"), m.get("type")) {
                    out.push(t.clone());
                }
                m.values().for_each(|v| texts(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
            _ => {}
        }
    }

    fn assert_within_limits(p: &Value) {
        let blocks = p["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS, "{} blocks", blocks.len());
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= HEADER_MAX);
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= SECTION_MAX, "section of {}", t.len());
            }
            if let Some(f) = b["fields"].as_array() {
                assert!(f.len() <= FIELDS_MAX);
                for f in f {
                    assert!(f["text"].as_str().unwrap().chars().count() <= FIELD_MAX);
                }
            }
            if let Some(e) = b["elements"].as_array() {
                assert!(e.len() <= CONTEXT_ELEMENTS_MAX);
                for e in e {
                    assert!(e["text"].as_str().unwrap().chars().count() <= SECTION_MAX);
                }
            }
        }
    }

    #[test]
    fn blocks_lead_with_header_and_show_five_items() {
        let p = payload(&notice(7, false));
        assert_within_limits(&p);
        assert_eq!(
            p["text"],
            "[shop] scan: 7 orphans (2.30 MB), 2 missing (1 ACTIVE, 1 DELETED)"
        );
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "[shop] scan #42");
        let all = p.to_string();
        assert!(all.contains("first 5 of 7"));
        assert!(
            all.contains(
                "<https://cdn.example.com/media/a4.jpg?a=1&amp;b=2|media/a4.jpg  2.30 MB>"
            )
        );
        assert!(!all.contains("a5.jpg"), "a sixth item is shown");
        assert!(all.contains("reports/asset_detection_2026-12-04_100000.csv"));
        assert!(!all.contains("Incomplete"));
    }

    #[test]
    fn user_text_is_escaped_and_only_http_links_are_linked() {
        let p = payload(&notice(1, false));
        let mut all = Vec::new();
        texts(&p, &mut all);
        let all = all.join("\n");
        assert!(all.contains("&lt;!channel&gt;"));
        assert!(!all.contains("<!channel>"));
        assert!(!all.contains("javascript:"));
    }

    #[test]
    fn long_keys_and_many_figures_stay_within_limits() {
        let n = notice(20, true);
        let p = payload(&n);
        assert_within_limits(&p);
        let blocks = p["blocks"].as_array().unwrap();
        assert!(
            blocks[1]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with(":rotating_light: *Spike alert*")
        );
        let figure_fields: usize = blocks
            .iter()
            .filter_map(|b| b["fields"].as_array())
            .map(Vec::len)
            .sum();
        assert_eq!(figure_fields, 30);
        assert!(p.to_string().contains("Incomplete run"));

        let mut many = n.clone();
        many.lists = (0..80).map(|_| n.lists[0].clone()).collect();
        let p = payload(&many);
        assert_within_limits(&p);
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert!(
            blocks[MAX_BLOCKS - 1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("Incomplete")
        );
    }
}
